"""Content-hash caching and warm kernels, on purpose-built notebooks.

A stage is reused (status `cached`) when its code cells, parameters, declared inputs and upstream stages are
unchanged and the run it comes from still holds its outputs; a kernel started ahead for a stage that does not
run is shut down.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from runner.commands import main
from tests.conftest import ASSETS, aliases, kernels_alive

PIPELINE = """\
version: 1
name: toy
params: {x: 21}
stages:
  first:
    notebook: notebooks/ok.ipynb
    inputs: ["data/*.csv"]
    outputs: ["products/ok.txt"]
    gates: ["y == 42"]
  second:
    notebook: notebooks/downstream.ipynb
    needs: [first]
    inputs: []
  apart:
    notebook: notebooks/no_scrap.ipynb
    inputs: ["other/*.txt"]
"""


def run(capsys: pytest.CaptureFixture[str], pipeline: Path, *args: str) -> tuple[int, dict]:
    code = main(["run", str(pipeline), "--no-notify", *args])
    out = capsys.readouterr().out
    assert not kernels_alive(), "a kernel outlived the run"
    run_dir = max(path for path in (pipeline.parent / "reports").iterdir() if path.is_dir())
    record = json.loads((run_dir / "run.json").read_text())
    assert code in (0, 3), out
    return code, record


def statuses(record: dict) -> dict[str, str]:
    return {name: stage["status"] for name, stage in record["stages"].items()}


@pytest.fixture(scope="module")
def _ran_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The project after a first run (every stage executed): run once, copied per test."""
    root = tmp_path_factory.mktemp("cache") / "project"
    shutil.copytree(ASSETS / "notebooks", root / "notebooks")
    (root / "pipeline.yaml").write_text(PIPELINE)
    for folder, name, text in (("data", "in.csv", "a,b\n1,2\n"), ("other", "note.txt", "one\n")):
        (root / folder).mkdir()
        (root / folder / name).write_text(text)
    assert main(["run", str(root / "pipeline.yaml"), "--no-notify"]) == 0
    assert not kernels_alive(), "a kernel outlived the run"
    return root, json.loads(next((root / "reports").glob("*/run.json")).read_text())


@pytest.fixture
def project(_ran_once: tuple[Path, dict], tmp_path: Path) -> Path:
    """A copy of the project after its first run, for this test alone."""
    shutil.copytree(_ran_once[0], tmp_path / "project")
    return tmp_path / "project" / "pipeline.yaml"


@pytest.fixture
def first(_ran_once: tuple[Path, dict]) -> dict:
    """The run record of the project's first run."""
    return _ran_once[1]


def edit_code(notebook: Path, source: str) -> None:
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(source))
    nbformat.write(nb, notebook)


@pytest.mark.e2e
def test_a_rerun_with_nothing_changed_reuses_every_stage_and_starts_no_kernel(project, first):
    assert statuses(first) == {"first": "succeeded", "second": "succeeded", "apart": "succeeded"}
    assert all(stage["fingerprint"] for stage in first["stages"].values())
    # in a fresh process: a cached run imports neither papermill nor jupyter_client, so it starts no kernel
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "runner", "run", str(project), "--no-notify"],
        cwd=project.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert not {"papermill", "jupyter_client", "scrapbook", "nbconvert", "mlflow"} & imported
    again = json.loads(sorted((project.parent / "reports").glob("*/run.json"))[-1].read_text())
    assert again["run_id"] != first["run_id"] and again["status"] == "succeeded"
    assert set(statuses(again).values()) == {"cached"}
    for name, stage in again["stages"].items():
        assert stage["cached_from"] == first["run_id"]
        assert stage["scraps"] == first["stages"][name]["scraps"]
        assert stage["gates"] == first["stages"][name]["gates"]
        assert stage["fingerprint"] == first["stages"][name]["fingerprint"]
    run_dir = project.parent / "reports" / again["run_id"]
    assert (run_dir / "products" / "ok.txt").read_text() == f"{first['run_id']} full"  # copied, not re-run
    for name in again["stages"]:
        assert (run_dir / f"{name}.ipynb").is_file() and (run_dir / f"{name}.html").is_file()
    assert "all 3 stages reused from cache" in (run_dir / "index.html").read_text()


@pytest.mark.e2e
def test_changing_a_notebook_reruns_it_and_what_needs_it_only(project, capsys):
    edit_code(project.parent / "notebooks" / "downstream.ipynb", "z2 = 1")
    _, record = run(capsys, project)
    assert statuses(record) == {"first": "cached", "second": "succeeded", "apart": "cached"}
    edit_code(project.parent / "notebooks" / "ok.ipynb", "y2 = y")
    _, record = run(capsys, project)
    assert statuses(record) == {"first": "succeeded", "second": "succeeded", "apart": "cached"}
    _, record = run(capsys, project)
    assert set(statuses(record).values()) == {"cached"}


@pytest.mark.e2e
def test_outputs_and_metadata_of_a_notebook_do_not_change_its_fingerprint(project, capsys):
    notebook = project.parent / "notebooks" / "ok.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    nb.metadata["authors"] = [{"name": "someone"}]
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="left over\n")]
    nbformat.write(nb, notebook)
    _, record = run(capsys, project)
    assert set(statuses(record).values()) == {"cached"}


@pytest.mark.e2e
def test_changing_an_input_file_or_a_parameter_reruns(project, capsys):
    (project.parent / "data" / "in.csv").write_text("a,b\n1,3\n")
    _, record = run(capsys, project)
    assert statuses(record) == {"first": "succeeded", "second": "succeeded", "apart": "cached"}
    (project.parent / "data" / "more.csv").write_text("a,b\n")  # a new file matching the glob
    _, record = run(capsys, project)
    assert statuses(record)["first"] == "succeeded"
    _, record = run(capsys, project, "-p", "x=5", "--max-parallel", "2")  # ok and no_scrap declare x
    # apart needs nothing: it ran beside first, and a stage running when another fails finishes
    assert statuses(record) == {"first": "gate_failed", "second": "skipped", "apart": "succeeded"}
    _, record = run(capsys, project)  # back to x=21: the earlier run's results are still there
    assert set(statuses(record).values()) == {"cached"}


@pytest.mark.e2e
def test_a_parameter_read_only_by_a_gate_is_part_of_the_fingerprint(make_project, capsys):
    pipeline = make_project(
        PIPELINE.replace('gates: ["y == 42"]', 'gates: ["y >= params.low"]').replace(
            "params: {x: 21}", "params: {x: 21, low: 1}"
        )
    )
    (pipeline.parent / "data").mkdir()
    (pipeline.parent / "data" / "in.csv").write_text("a\n")
    run(capsys, pipeline)
    code, record = run(capsys, pipeline, "-p", "low=100")
    assert code == 3 and record["stages"]["first"]["status"] == "gate_failed"  # judged again, not reused


@pytest.mark.e2e
def test_a_missing_or_altered_output_or_notebook_forces_a_rerun(project, first, capsys):
    output = project.parent / "reports" / first["run_id"] / "products" / "ok.txt"
    output.unlink()
    _, record = run(capsys, project)
    assert statuses(record) == {"first": "succeeded", "second": "cached", "apart": "cached"}
    latest = project.parent / "reports" / record["run_id"]
    (latest / "products" / "ok.txt").write_text("tampered")
    (project.parent / "reports" / first["run_id"] / "second.ipynb").unlink()
    _, record = run(capsys, project)
    assert statuses(record) == {"first": "succeeded", "second": "succeeded", "apart": "cached"}


@pytest.mark.e2e
def test_a_stage_without_inputs_is_never_cached_nor_is_what_needs_it(make_project, capsys):
    pipeline = make_project(PIPELINE.replace('    inputs: ["data/*.csv"]\n', ""))
    (pipeline.parent / "other").mkdir()
    run(capsys, pipeline)
    _, record = run(capsys, pipeline)
    assert statuses(record) == {"first": "succeeded", "second": "succeeded", "apart": "cached"}
    assert record["stages"]["first"]["fingerprint"] is None


@pytest.mark.e2e
def test_force_reruns_everything_and_force_stage_that_stage_and_what_needs_it(project, capsys):
    # a bare --force before the pipeline, as it was written before --force took a stage: everything reruns
    assert main(["run", "--force", str(project), "--no-notify"]) == 0
    capsys.readouterr()
    assert not kernels_alive(), "a kernel outlived the run"
    record = json.loads(sorted((project.parent / "reports").glob("*/run.json"))[-1].read_text())
    assert set(statuses(record).values()) == {"succeeded"}
    assert record["options"]["force"] is True
    _, record = run(capsys, project, "--force", "second")
    assert statuses(record) == {"first": "cached", "second": "succeeded", "apart": "cached"}
    _, record = run(capsys, project, "--force", "first", "--force", "apart")
    assert set(statuses(record).values()) == {"succeeded"}
    assert record["options"]["force_stages"] == ["apart", "first", "second"]
    assert main(["run", str(project), "--force", "secnd"]) == 2
    assert "did you mean 'second'?" in capsys.readouterr().err


@pytest.mark.e2e
def test_warm_kernels_are_used_and_never_outlive_the_run(make_project, capsys):
    pipeline = make_project(PIPELINE.replace("params: {x: 21}", 'params: {x: 21}\nwarmup: "import json"'))
    (pipeline.parent / "data").mkdir()
    (pipeline.parent / "data" / "in.csv").write_text("a\n")
    (pipeline.parent / "other").mkdir()
    _, record = run(capsys, pipeline, "--force")
    assert record["stages"]["second"]["timings"]["warm_kernel"] is True
    assert record["stages"]["apart"]["timings"]["warm_kernel"] is True
    # the first stage stops the run: the kernel started for the next one is shut down unused
    code, record = run(capsys, pipeline, "--force", "-p", "x=5")
    assert code == 3 and record["stages"]["second"]["status"] == "skipped"


@pytest.mark.e2e
def test_a_failing_warmup_or_a_stage_that_raises_leaves_no_kernel(make_project, capsys):
    pipeline = make_project("""\
        version: 1
        name: toy
        warmup: "import a_module_that_does_not_exist"
        stages:
          first:
            notebook: notebooks/ok.ipynb
          second:
            notebook: notebooks/downstream.ipynb
            needs: [first]
          boom:
            notebook: notebooks/raises.ipynb
            needs: [second]
          after:
            notebook: notebooks/downstream.ipynb
            needs: [boom]
        """)
    code = main(["run", str(pipeline), "--no-notify"])
    capsys.readouterr()
    assert code == 1 and not kernels_alive()
    record = json.loads(sorted((pipeline.parent / "reports").glob("*/run.json"))[-1].read_text())
    expected = {"first": "succeeded", "second": "succeeded", "boom": "failed", "after": "skipped"}
    assert statuses(record) == expected


@pytest.mark.unit
@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("inputs", '["../outside/*.csv"]', "is not a path inside the project"),
        ("outputs", '["/tmp/x"]', "is not a path inside the project"),
        ("warmup", '"import ("', "not valid Python"),
    ],
)
def test_bad_inputs_outputs_or_warmup_are_configuration_errors(make_project, capsys, key, value, message):
    pipeline = make_project(f"""\
        version: 1
        name: toy
        stages:
          first:
            notebook: notebooks/ok.ipynb
            {key}: {value}
        """)
    assert main(["check", str(pipeline)]) == 2
    err = capsys.readouterr().err
    assert f"stages.first.{key}" in err and message in err


MODEL_PIPELINE = """\
version: 1
name: toy
stages:
  train:
    notebook: notebooks/train.ipynb
    inputs: ["data/*.csv"]
    outputs: ["products/model.json"]
  evaluate:
    notebook: notebooks/evaluate.ipynb
    needs: [train]
    inputs: ["data/*.csv"]
    outputs: ["products/holdout.parquet"]
    gates: ["wape <= 0.5", "wape <= champion.wape * 1.5"]
  deploy:
    notebook: notebooks/deploy.ipynb
    needs: [evaluate]
model:
  name: {name}
  candidate: train.model_uri
  metrics: evaluate
  deploy: [deploy]
  data: ["data/*.csv"]
  smoke_check: {max_seconds: 600}  # a toy model loads in a second, but a shared test machine may be slow
"""


@pytest.mark.e2e
def test_cached_training_keeps_the_model_lifecycle_right(tmp_path, capsys, monkeypatch):
    """Cached train and evaluate hand over the same model URI: the registry says it already holds it, and
    with production unchanged the deployment is not repeated, without importing MLflow at all."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "project"
    shutil.copytree(ASSETS / "model", root / "notebooks")
    (root / "data").mkdir()
    (root / "data" / "points.csv").write_text("x,y\n" + "".join(f"{x},{2 * x + 0.5}\n" for x in range(1, 30)))
    name = "toy-cached"
    pipeline = root / "pipeline.yaml"
    pipeline.write_text(MODEL_PIPELINE.replace("{name}", name))

    _, first = run(capsys, pipeline)
    assert first["model"]["version"] == "1" and first["model"]["promoted"]
    assert first["stages"]["deploy"]["status"] == "succeeded"
    _, second = run(capsys, pipeline)  # production changed (v1 is the champion): evaluate judges again
    assert statuses(second) == {"train": "cached", "evaluate": "succeeded", "deploy": "skipped"}
    assert second["model"]["action"] == "unchanged"
    assert "already holds this model" in second["model"]["detail"]
    assert "already the champion" in second["stages"]["deploy"]["skip_reason"]
    assert second["stages"]["train"]["scraps"]["model_uri"] == first["stages"]["train"]["scraps"]["model_uri"]

    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "runner", "run", str(pipeline), "--no-notify"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert not {"mlflow", "papermill", "jupyter_client"} & imported  # no kernel, not even for the deploy
    third = json.loads(sorted((root / "reports").glob("*/run.json"))[-1].read_text())
    assert statuses(third) == {"train": "cached", "evaluate": "cached", "deploy": "skipped"}
    assert third["model"]["version"] == "1" and third["model"]["action"] == "unchanged"
    assert aliases(pipeline, name) == {"champion": "1", "challenger": "1"}

    _, forced = run(capsys, pipeline, "--force", "deploy")
    assert statuses(forced) == {"train": "cached", "evaluate": "cached", "deploy": "succeeded"}
    assert forced["stages"]["deploy"]["scraps"]["deployed_version"] == "1"
