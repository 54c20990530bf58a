"""`retrain monitor`: the champion scored on data it has not seen, against its registered metric.

Real notebooks, a real registry: the toy model of tests/assets/model (y = factor * x, registered by a real
`retrain run`) with its monitor notebook reading `data/live/*.csv`, on the embedded store and on a real
`mlflow server`; then the demo's own 06_monitor.ipynb on the two real Walmart weeks after the history, which
the champion of the session's first run of the demo never saw.
"""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path

import pandas as pd
import pytest

from runner.commands import main
from runner.secrets import NO_SECRETS
from tests.conftest import (
    ASSETS,
    ON_THE_DEMO,
    ON_THE_SERVER,
    TOY_MODEL_PIPELINE,
    clone,
    copy_project,
    git,
)

MONITOR = """
monitor:
  notebook: notebooks/monitor.ipynb
  metric: wape
  max_decay: {max_decay}
  min_weeks: {min_weeks}
  log: monitoring/checks.jsonl
  timeout: 120
"""


def toy_project(root: Path, name: str = "toy", max_decay: float = 0.5, min_weeks: int = 1) -> Path:
    """The toy model's project with a monitor section; nothing run yet."""
    shutil.copytree(ASSETS / "model", root / "notebooks")
    (root / "data").mkdir(parents=True)
    rows = "\n".join(f"{x},{2 * x + (1 if x % 2 else -1) * 0.5}" for x in range(1, 41))
    (root / "data" / "points.csv").write_text("x,y\n" + rows + "\n")
    text = TOY_MODEL_PIPELINE.format(name=name, promotion="auto") + MONITOR.format(
        max_decay=max_decay, min_weeks=min_weeks
    )
    (root / "pipeline.yaml").write_text(text)
    return root / "pipeline.yaml"


def live_week(root: Path, week: str, factor: float) -> None:
    """A week of labeled data the champion has not seen: y = factor * x for x = 41..50."""
    folder = root / "data" / "live"
    folder.mkdir(exist_ok=True)
    rows = "\n".join(f"{x},{factor * x}" for x in range(41, 51))
    (folder / f"{week}.csv").write_text("x,y\n" + rows + "\n")


def monitor(capsys: pytest.CaptureFixture[str], pipeline: Path, *extra: str) -> tuple[int, str]:
    code = main(["monitor", str(pipeline), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def log_lines(pipeline: Path) -> list[dict]:
    text = (pipeline.parent / "monitoring" / "checks.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


@pytest.fixture
def champion(champion_project: tuple[Path, str]) -> Path:
    """A copy of the toy project whose version 1 is the champion (embedded store), with a monitor section."""
    pipeline, _ = champion_project
    pipeline.write_text(pipeline.read_text() + MONITOR.format(max_decay=0.5, min_weeks=1))
    return pipeline


@pytest.fixture
def github_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """$GITHUB_OUTPUT and $GITHUB_STEP_SUMMARY, as in a workflow's step."""
    github_output, summary = tmp_path / "output.txt", tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_OUTPUT", str(github_output))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    return github_output, summary


def no_champion_yet(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    """A project whose model was never registered (on the store the environment names): nothing to check."""
    pipeline = toy_project(root, name=f"toy-{secrets.token_hex(3)}")  # the server is shared by the session
    code, out = monitor(capsys, pipeline)
    assert code == 0 and "no_champion" in out and "has no champion yet" in out, out
    assert [check["status"] for check in log_lines(pipeline)] == ["no_champion"]


def decayed_on_two_weeks(
    capsys: pytest.CaptureFixture[str], pipeline: Path, github_outputs: tuple[Path, Path]
) -> dict:
    """The champion (version 1, y = 2x) on a week of the same law and a week whose sales tripled: decay."""
    github_output, summary = github_outputs
    live_week(pipeline.parent, "2026-01-09", factor=6.0)  # sales tripled: the model now misses by far
    github_output.write_text("")
    code, out = monitor(capsys, pipeline)
    assert code == 4, out
    said = outputs(github_output)
    assert said["decay"] == "true" and said["status"] == "decay"
    assert float(said["live"]) > 0.3 > float(said["registered"]) * 1.5
    decayed = log_lines(pipeline)[-1]
    registered = decayed["registered"]
    assert registered == pytest.approx(20 / 1640)  # evaluate's wape: 40 misses of 0.5 over sales of 1640
    assert decayed["periods"] == ["2026-01-02", "2026-01-09"] and decayed["n_rows"] == 20
    # on both weeks: forecasts 2x against sales of 2x and 6x, i.e. misses of 4x over sales of 8x
    assert decayed["live"] == pytest.approx(0.5)
    assert decayed["decay"] == pytest.approx(0.5 / registered - 1)
    assert decayed["champion_version"] == "1" and decayed["max_decay"] == 0.5
    folder = pipeline.parent / decayed["report_dir"]
    for produced in ("monitor.ipynb", "monitor.html", "check.json"):
        assert (folder / produced).is_file(), produced
    assert json.loads((folder / "check.json").read_text()) == decayed
    assert "retrain" in decayed["detail"] and "more than the 50% allowed" in decayed["detail"]
    assert "monitoring version 1: decay" in summary.read_text()
    assert not (pipeline.parent / "reports" / decayed["check_id"]).exists()  # not listed among the runs
    return decayed


@pytest.mark.e2e
def test_no_champion_no_data_healthy_then_decayed(champion, github_outputs, tmp_path, capsys):
    """On the embedded store; the champion is the session's toy champion (tests/conftest.py), trained by a
    real `retrain run` (whether its registry calls ran in workers changes nothing here: the monitor makes
    them in its own process, and runs its notebook in a kernel of its own)."""
    no_champion_yet(capsys, tmp_path / "never-run")
    shutil.rmtree(champion.parent / "data" / "live", ignore_errors=True)
    github_output, _ = github_outputs
    code, out = monitor(capsys, champion)
    assert code == 0 and out.splitlines()[-1].startswith("no_data: no labeled period"), out

    live_week(champion.parent, "2026-01-02", factor=2.0)  # the same law as the training data
    github_output.write_text("")
    code, out = monitor(capsys, champion)
    assert code == 0, out
    assert outputs(github_output)["decay"] == "false" and outputs(github_output)["status"] == "ok"
    healthy = log_lines(champion)[-1]
    assert healthy["registered"] == pytest.approx(20 / 1640)
    assert healthy["live"] == pytest.approx(0.0) and healthy["decay"] == pytest.approx(-1.0)

    decayed_on_two_weeks(capsys, champion, github_outputs)
    assert [check["status"] for check in log_lines(champion)] == ["no_data", "ok", "decay"]


@pytest.mark.e2e
@ON_THE_SERVER
def test_on_a_tracking_server_no_champion_then_decayed(
    champion, mlflow_server, github_outputs, tmp_path, capsys, monkeypatch
):
    """The same champion on the session's `mlflow server` (copied there by `retrain registry migrate`, which
    tests/test_registry_server.py checks): the monitor reads the champion and its registered metric from the
    server, and its notebook loads the model through it."""
    migrated = main(["registry", "migrate", str(champion), "--to", mlflow_server])
    assert migrated == 0, capsys.readouterr()
    capsys.readouterr()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    no_champion_yet(capsys, tmp_path / "never-run")
    shutil.rmtree(champion.parent / "data" / "live", ignore_errors=True)
    live_week(champion.parent, "2026-01-02", factor=2.0)
    decayed_on_two_weeks(capsys, champion, github_outputs)
    assert [check["status"] for check in log_lines(champion)] == ["decay"]


def with_monitor(pipeline: Path, **settings: object) -> Path:
    """The champion project's pipeline with its monitor section changed (same project, same registry)."""
    text = pipeline.read_text().split("\nmonitor:")[0]
    body = {
        "notebook": "notebooks/monitor.ipynb",
        "max_decay": 0.5,
        "log": "monitoring/checks.jsonl",
        **settings,
    }
    lines = "".join(f"  {key}: {json.dumps(value)}\n" for key, value in body.items())
    variant = pipeline.with_name(f"variant-{len(list(pipeline.parent.glob('variant-*')))}.yaml")
    variant.write_text(text + "\nmonitor:\n" + lines)
    return variant


@pytest.mark.e2e
def test_too_few_weeks_are_measured_but_not_judged_and_the_section_settings_reach_the_notebook(
    champion, capsys
):
    shutil.rmtree(champion.parent / "data" / "live", ignore_errors=True)
    live_week(champion.parent, "2026-02-06", factor=6.0)
    code, out = monitor(capsys, with_monitor(champion, min_weeks=3, max_decay=0.75))
    assert code == 0, out
    check = log_lines(champion)[-1]
    assert check["status"] == "too_few_periods" and check["live"] == pytest.approx(2 / 3)
    assert "not judged before 3 new periods" in check["detail"]
    executed = champion.parent / check["report_dir"] / "monitor.ipynb"
    assert "max_decay = 0.75" in executed.read_text()


@pytest.mark.e2e
def test_a_failing_monitor_notebook_exits_1_and_is_logged(champion, capsys):
    shutil.rmtree(champion.parent / "data" / "live", ignore_errors=True)
    (champion.parent / "data" / "live").mkdir()
    (champion.parent / "data" / "live" / "2026-02-13.csv").write_text("x,sales\n41,82\n")  # no column y
    code, out = monitor(capsys, champion)
    assert code == 1, out
    check = log_lines(champion)[-1]
    assert check["status"] == "failed" and "the monitor notebook failed: AttributeError" in check["detail"]
    assert (champion.parent / check["report_dir"] / "monitor.html").is_file()  # the evidence


@pytest.mark.e2e
def test_a_metric_the_champion_was_not_registered_with_fails(champion, capsys):
    shutil.rmtree(champion.parent / "data" / "live", ignore_errors=True)
    live_week(champion.parent, "2026-02-20", factor=2.0)
    code, out = monitor(capsys, with_monitor(champion, metric="accuracy", lower_is_better=False))
    assert code == 1, out
    assert "version 1 has no registered accuracy (tag metric.accuracy)" in log_lines(champion)[-1]["detail"]


@pytest.mark.unit
def test_appending_keeps_every_line_whole(tmp_path):
    from runner.production.monitor import append_line

    log = tmp_path / "monitoring" / "checks.jsonl"
    for number in range(3):
        append_line(log, {"check": number, "detail": "x" * 5000}, NO_SECRETS)
    assert [json.loads(line)["check"] for line in log.read_text().splitlines()] == [0, 1, 2]


# --- configuration errors: exit 2, one line per problem naming the key path ------------------------------
BAD_SECTIONS = [
    (
        "  notebook: notebooks/monitor.ipynb\n  max_dekay: 0.5\n",
        "monitor.max_dekay: unknown key 'max_dekay' (did you mean 'max_decay'?)",
    ),
    (
        "  notebook: notebooks/monitr.ipynb\n  max_decay: 0.5\n",
        "monitor.notebook: notebook not found: notebooks/monitr.ipynb"
        " (did you mean 'notebooks/monitor.ipynb'?)",
    ),
    ("  notebook: notebooks/monitor.ipynb\n", "monitor: no rule to judge decay by (max_decay"),
    (
        "  notebook: notebooks/monitor.ipynb\n  max_decay: 0\n",
        "monitor.max_decay: Input should be greater than 0",
    ),
    (
        "  notebook: notebooks/train.ipynb\n  max_decay: 0.5\n",
        "monitor.notebook: notebooks/train.ipynb does not declare 'champion_uri'",
    ),
    (
        "  notebook: notebooks/monitor.ipynb\n  max_decay: 0.5\n  params: {scale: 2}\n",
        "monitor.params.scale: notebooks/monitor.ipynb does not declare 'scale' in its parameters cell",
    ),
    (
        "  notebook: notebooks/monitor.ipynb\n  max_decay: 0.5\n  params: {max_decay: 0.1}\n",
        "monitor.params.max_decay: 'max_decay' is a monitor setting (set monitor.max_decay)",
    ),
    (
        "  notebook: notebooks/monitor.ipynb\n  max_decay: 0.5\n  log: ../checks.jsonl\n",
        "monitor.log: '../checks.jsonl' is not a file inside the project",
    ),
]


@pytest.mark.unit
@pytest.mark.parametrize(("section", "expected"), BAD_SECTIONS)
def test_a_bad_monitor_section_is_a_configuration_error(tmp_path, capsys, section, expected):
    pipeline = toy_project(tmp_path / "project")
    pipeline.write_text(pipeline.read_text().split("\nmonitor:")[0] + "\nmonitor:\n" + section)
    for command in ("check", "monitor"):
        code = main([command, str(pipeline)])
        err = capsys.readouterr().err
        assert code == 2 and expected in " ".join(err.split()), err
    assert not (tmp_path / "project" / "monitoring").exists()  # nothing ran, nothing logged


@pytest.mark.unit
def test_monitoring_needs_a_model_section_and_a_monitor_section(tmp_path, capsys):
    pipeline = toy_project(tmp_path / "project")
    text = pipeline.read_text()
    pipeline.write_text(text.split("model:")[0] + "monitor:" + text.split("\nmonitor:")[1])
    assert main(["check", str(pipeline)]) == 2
    assert "monitor: there is no registered model to monitor" in capsys.readouterr().err
    pipeline.write_text(text.split("\nmonitor:")[0])
    assert main(["monitor", str(pipeline)]) == 2
    assert "has no `monitor` section" in capsys.readouterr().err


# --- the demo's own monitor notebook, on real weeks ---------------------------------------------------------
@pytest.fixture(scope="module")
def demo_champion(demo_first_run: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo after the session's first run (its champion trained on the whole history, to 2012-03-30), with
    the two real weeks that follow the history as new drops (tests/assets/drops: good.csv and gap.csv)."""
    root, result = demo_first_run
    assert result["code"] == 0, result["output"][-3000:]
    root = copy_project(root, tmp_path_factory.mktemp("demo-monitor") / "project")
    for asset, week in (("good.csv", "2012-04-06"), ("gap.csv", "2012-04-13")):
        shutil.copy(ASSETS / "drops" / asset, root / "data" / "new" / f"sales-{week}.csv")
    return root / "pipeline.yaml"


@pytest.mark.e2e
@ON_THE_DEMO
def test_the_demo_champion_on_two_real_weeks_it_never_saw(demo_champion, capsys):
    code, out = monitor(capsys, demo_champion)
    check = log_lines(demo_champion)[-1]
    assert check["periods"] == ["2012-04-06", "2012-04-13"] and check["n_rows"] == 2 * 7, out
    assert check["data_until"] == "2012-03-30"  # recorded by the refit stage with the model
    assert check["registered"] == pytest.approx(demo_registered(demo_champion))
    assert code == 0 and check["status"] == "ok", out
    # training is deterministic: these two weeks are forecast 12% worse than the evaluation weeks, within 50%
    assert check["registered"] < check["live"] < check["registered"] * (1 + check["max_decay"])
    assert check["decay"] == pytest.approx(check["live"] / check["registered"] - 1)


@pytest.mark.e2e
@ON_THE_DEMO
def test_the_demo_champion_on_sales_that_tripled_has_decayed(demo_champion, capsys):
    drop = demo_champion.parent / "data" / "new" / "sales-2012-04-13.csv"
    sales = pd.read_csv(drop)
    sales["Weekly_Sales"] = sales["Weekly_Sales"] * 3
    sales.to_csv(drop, index=False)
    code, out = monitor(capsys, demo_champion)
    check = log_lines(demo_champion)[-1]
    assert code == 4 and check["status"] == "decay", out
    assert check["live"] > 0.3 and check["decay"] > check["max_decay"]


def demo_registered(pipeline: Path) -> float:
    """The champion's wape as its run's evaluate stage measured it (what the registry holds)."""
    run_dir = max(path for path in (pipeline.parent / "reports").iterdir() if (path / "run.json").is_file())
    return float(json.loads((run_dir / "run.json").read_text())["stages"]["evaluate"]["scraps"]["wape"])


@pytest.mark.e2e
def test_the_log_travels_on_its_own_branch(tmp_path, capsys, monkeypatch):
    from runner.production.monitor import append_line

    bare = tmp_path / "origin.git"
    seed = tmp_path / "seed"
    toy_project(seed)
    (seed / ".gitignore").write_text("mlruns/\nmonitoring/\nreports/\n")
    git(seed, "init", "--quiet")
    git(seed, "add", ".")
    git(seed, "commit", "--quiet", "-m", "project")
    git(tmp_path, "init", "--quiet", "--bare", str(bare))
    git(seed, "push", "--quiet", str(bare), "HEAD:refs/heads/main")
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)

    first = clone(bare, "first")
    state = ["github", "state"]
    assert main([*state, "pull", "--monitoring", str(first / "pipeline.yaml")]) == 0
    assert "origin has no branch retrain-monitoring yet: the log starts empty" in capsys.readouterr().out
    append_line(first / "monitoring" / "checks.jsonl", {"status": "ok"}, NO_SECRETS)
    assert main([*state, "push", "--monitoring", str(first / "pipeline.yaml")]) == 0
    assert "saved monitoring/ to retrain-monitoring" in capsys.readouterr().out
    assert git(bare, "ls-tree", "--name-only", "retrain-monitoring") == "checks.jsonl"
    assert git(bare, "branch", "--list", "retrain-state") == ""  # the registry's branch is not touched

    second = clone(bare, "second")
    assert main([*state, "pull", "--monitoring", str(second / "pipeline.yaml")]) == 0
    append_line(second / "monitoring" / "checks.jsonl", {"status": "decay"}, NO_SECRETS)
    assert main([*state, "push", "--monitoring", str(second / "pipeline.yaml")]) == 0
    out = capsys.readouterr().out
    assert "had moved" not in out, out  # what this clone restored is still the tip: no race to report
    kept = git(bare, "show", "retrain-monitoring:checks.jsonl").splitlines()
    assert [json.loads(line)["status"] for line in kept] == ["ok", "decay"]
