"""pipeline.yaml and -p validation: every problem reported at once, each naming file, key path and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.commands import main
from runner.engine.config import load_pipeline
from runner.engine.params import injected, parse_overrides
from runner.errors import ConfigError
from runner.secrets import names_in_file

pytestmark = pytest.mark.unit

GOOD = """\
version: 1
name: toy
params:
  x: 2
  threshold: 5
stages:
  first:
    notebook: notebooks/ok.ipynb
    params: {label: hello}
    timeout: 60
    gates: ["y >= params.threshold", "label == 'hello'"]
  second:
    notebook: notebooks/downstream.ipynb
    needs: [first]
    gates: ["z > first.y"]
"""


def problems_for(make_project, text: str, overrides=None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_pipeline(make_project(text), overrides)
    return [str(problem) for problem in caught.value.problems]


def test_good_pipeline_resolves_parameters(make_project):
    pipeline = load_pipeline(make_project(GOOD))
    assert list(pipeline.stages) == ["first", "second"]
    first = pipeline.stages["first"]
    assert first.params == {"x": 2, "label": "hello"}  # only what the notebook declares
    assert first.gate_params["threshold"] == 5
    assert pipeline.stages["second"].params == {}
    assert first.timeout == 60


def test_overrides_win_and_are_coerced(make_project):
    overrides = parse_overrides(["x=7", "label=2024"])
    pipeline = load_pipeline(make_project(GOOD), overrides)
    assert pipeline.stages["first"].params == {"x": 7, "label": "2024"}
    assert pipeline.params["x"] == 7


BAD = [
    (
        "unknown top key",
        GOOD.replace("params:\n  x: 2", "parms:\n  x: 2"),
        ["pipeline.yaml: parms: unknown key 'parms' (did you mean 'params'?)"],
    ),
    (
        "unknown stage key",
        GOOD.replace("    timeout: 60", "    timout: 60"),
        ["stages.first.timout: unknown key 'timout' (did you mean 'timeout'?)"],
    ),
    (
        "empty notebook path (it named the project folder: a bug, exit 70, found by the fuzz test)",
        GOOD.replace("notebooks/ok.ipynb", "''"),
        ["stages.first.notebook: String should have at least 1 character (got '')"],
    ),
    (
        "missing notebook",
        GOOD.replace("notebooks/ok.ipynb", "notebooks/okk.ipynb"),
        [
            "stages.first.notebook: notebook not found: notebooks/okk.ipynb "
            "(did you mean 'notebooks/ok.ipynb'?)"
        ],
    ),
    (
        "unknown needs",
        GOOD.replace("needs: [first]", "needs: [frist]"),
        ["stages.second.needs[0]: unknown stage 'frist' (did you mean 'first'?)"],
    ),
    (
        "cycle",
        GOOD.replace("    timeout: 60", "    timeout: 60\n    needs: [second]"),
        ["stages: stages need each other in a loop"],
    ),
    (
        "undeclared stage param",
        GOOD.replace("{label: hello}", "{lable: hello}"),
        [
            "stages.first.params.lable: notebooks/ok.ipynb does not declare 'lable' in its parameters cell "
            "(did you mean 'label'?)"
        ],
    ),
    (
        "wrong type",
        GOOD.replace("  x: 2", "  x: many"),
        ["params.x: 'x' expects int (default 1), got 'many'"],
    ),
    (
        "injected param",
        GOOD.replace("{label: hello}", "{run_dir: /tmp}"),
        ["stages.first.params.run_dir: 'run_dir' is set by the runner"],
    ),
    ("gate syntax", GOOD.replace('"z > first.y"', '"len(z) > 1"'), ["stages.second.gates[0]: `len(z) > 1`"]),
    (
        "gate unknown stage",
        GOOD.replace('"z > first.y"', '"z > frist.y"'),
        ["stages.second.gates[0]: 'frist.y' names no stage 'frist' (did you mean 'first'?)"],
    ),
    (
        "gate unknown param",
        GOOD.replace("params.threshold", "params.treshold"),
        ["stages.first.gates[0]: unknown parameter 'params.treshold' (did you mean 'threshold'?)"],
    ),
    (
        "gate reads a later stage",
        GOOD.replace("\"label == 'hello'\"", '"second.z > 1"'),
        ["reads 'second.z' but 'second' does not run before it (add 'second' to stages.first.needs)"],
    ),
    (
        "unused pipeline param",
        GOOD.replace("  threshold: 5", "  threshold: 5\n  horizon: 3"),
        ["params.horizon: no stage's notebook declares it and no gate reads it"],
    ),
    ("bad version", GOOD.replace("version: 1", "version: 2"), ["version: Input should be 1"]),
    (
        "bad timeout",
        GOOD.replace("timeout: 60", "timeout: -1"),
        ["stages.first.timeout: Input should be greater"],
    ),
    ("not a mapping", "- a\n- b\n", ["pipeline.yaml: expected a mapping at the top level"]),
    ("yaml syntax", "version: 1\nstages: {a: [}\n", ["pipeline.yaml: not valid YAML"]),
    ("no stages", "version: 1\nname: toy\nstages: {}\n", ["stages: Dictionary should have at least 1 item"]),
    ("bad stage name", GOOD.replace("  second:", "  'sec ond':"), ["'sec ond' is not a valid name"]),
]


@pytest.mark.parametrize(("case", "text", "expected"), BAD, ids=[case for case, _, _ in BAD])
def test_bad_pipeline_is_explained(make_project, case, text, expected):
    found = problems_for(make_project, text)
    for fragment in expected:
        assert any(fragment in line for line in found), f"{fragment!r} not in {found}"


def test_all_problems_are_reported_together(make_project):
    text = (
        GOOD.replace("    timeout: 60", "    timout: 60")
        .replace("needs: [first]", "needs: [frist]")
        .replace("{label: hello}", "{lable: hello}")
    )
    found = problems_for(make_project, text, parse_overrides(["thresold=1"]))
    assert len(found) == 4, found
    assert any(
        "-p thresold=1: unknown parameter 'thresold' (did you mean 'threshold'?)" in line for line in found
    )


OVERRIDES = [
    (["nope=1"], "command line: -p nope=1: unknown parameter 'nope'"),
    (["x"], "command line: -p x: expected KEY=VALUE"),
    (["x=[1, 2]"], "expected a single value"),
    (["x=abc"], "'x' expects int (default 1), got 'abc' (stage first)"),
    (["run_id=abc"], "'run_id' cannot be overridden"),
    (["mode=evaluate"], "'mode' cannot be overridden (use --mode)"),
]


@pytest.mark.parametrize(("pairs", "expected"), OVERRIDES)
def test_bad_overrides_are_explained(make_project, pairs, expected):
    found = problems_for(make_project, GOOD, parse_overrides(pairs))
    assert any(expected in line for line in found), found


def test_params_file(make_project, tmp_path: Path):
    good = tmp_path / "good.yaml"
    good.write_text("x: 5\nlabel: from-file\n")
    pipeline = load_pipeline(make_project(GOOD), parse_overrides(["x=6"], good))
    assert pipeline.stages["first"].params == {"x": 6, "label": "from-file"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n")
    found = problems_for(make_project, GOOD, parse_overrides([], bad))
    assert any("expected a mapping of parameter names to values" in line for line in found)
    missing = problems_for(make_project, GOOD, parse_overrides([], tmp_path / "absent.yaml"))
    assert any("params file not found" in line for line in missing)


def test_check_command_exit_codes_and_no_traceback(make_project, capsys):
    path = make_project(GOOD)
    assert main(["check", str(path)]) == 0
    assert "valid. 2 stages (first -> second), 3 gates." in capsys.readouterr().out
    path.write_text(GOOD.replace("needs: [first]", "needs: [frist]"))
    assert main(["check", str(path), "-p", "x=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown stage 'frist'" in err and "Traceback" not in err
    assert main(["check", str(path.parent / "missing.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_a_bug_exits_70_with_its_traceback_not_1_like_a_failed_stage(make_project, capsys, monkeypatch):
    pipeline = make_project(GOOD)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the loader")

    monkeypatch.setattr("runner.engine.config.load_pipeline", broken)
    assert main(["check", str(pipeline)]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug in the loader" in err
    assert "this is a bug in retrain" in err


BOMB = """\
  a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
  i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_a_yaml_alias_bomb_as_a_value_is_refused_without_expanding_it(make_project, capsys):
    """387 million strings written as nine lines: refused at once, and the message does not print them."""
    bomb = "".join(f"    {line}\n" for line in BOMB.splitlines())
    pipeline = make_project(GOOD.replace("params:\n  x: 2\n", "params:\n  x: 2\n  bomb:\n" + bomb))
    assert main(["check", str(pipeline)]) == 2
    err = capsys.readouterr().err
    assert "params.bomb: the value holds more than 10000 items once its YAML aliases are expanded" in err
    assert len(err) < 2000


@pytest.mark.parametrize("where", ["pipeline", "-p", "params file"])
def test_a_number_of_5000_digits_is_a_configuration_error_not_a_traceback(
    make_project, capsys, tmp_path, where
):
    pipeline = make_project(GOOD)
    digits = "9" * 5000
    args = ["check", str(pipeline)]
    if where == "pipeline":
        pipeline.write_text(GOOD.replace("  x: 2\n", f"  x: {digits}\n"))
    elif where == "-p":
        args += ["-p", f"x={digits}"]
    else:
        (tmp_path / "params.yaml").write_text(f"x: {digits}\n")
        args += ["--params-file", str(tmp_path / "params.yaml")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err) < 2000
    assert "x" in err


def test_the_compute_section_is_checked_and_given_whole_to_the_notebooks_that_declare_it(make_project):
    pipeline = load_pipeline(make_project(GOOD + "compute:\n  above_rows: 1000000\n  workers: 3\n"))
    assert pipeline.compute == {
        "engine": "dask",
        "above_rows": 1000000,
        "scheduler_env": "DASK_SCHEDULER_ADDRESS",  # the variable's name: its value never becomes a parameter
        "workers": 3,
        "threads_per_worker": 1,
        "memory_limit": "auto",
    }
    assert "DASK_SCHEDULER_ADDRESS" in pipeline.secrets  # its value is redacted from all the runner writes
    assert "DASK_SCHEDULER_ADDRESS" in names_in_file(pipeline.path)
    assert load_pipeline(make_project(GOOD)).compute == {}
    declared = load_pipeline(make_project(GOOD)).stages["first"].declared
    given = injected(
        {**declared, "compute": declared["x"]}, products=Path("p"), run_id="r", mode="full", champion_uri="",
        compute=pipeline.compute,
    )  # fmt: skip
    assert given["compute"] == pipeline.compute and "champion_uri" not in given  # only what it declares

    found = problems_for(make_project, GOOD + "compute:\n  above_rows: -1\n  worker: 2\n")
    assert any("compute.above_rows" in line and "greater than or equal to 0" in line for line in found), found
    assert any("compute.worker: unknown key 'worker' (did you mean 'workers'?)" in line for line in found)
    found = problems_for(make_project, GOOD + "compute:\n  above_rows: 10\n  memory_limit: 4 gigs\n")
    assert len(found) == 1 and found[0].endswith(
        "pipeline.yaml: compute.memory_limit: '4 gigs' is not an amount of memory "
        '(e.g. "4GiB", "500MB", or "auto")'
    )
    found = problems_for(make_project, GOOD.replace("  threshold: 5\n", "  threshold: 5\n  compute: {}\n"))
    assert any("params.compute: 'compute' is set by the runner" in line for line in found), found
