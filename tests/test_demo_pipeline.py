"""The demo end to end on the bundled real data, as `make demo` runs it; nbval over the stage notebooks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner.commands import main
from tests.conftest import PROJECT_ROOT, load_walmart


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's pipeline, notebooks and data, so runs never touch the working tree."""
    root = tmp_path_factory.mktemp("demo")
    shutil.copy(PROJECT_ROOT / "pipeline.yaml", root)
    shutil.copytree(PROJECT_ROOT / "notebooks", root / "notebooks")
    shutil.copytree(PROJECT_ROOT / "data" / "history", root / "data" / "history")
    (root / "data" / "new").mkdir()
    return root


def latest_run(root: Path) -> dict:
    run_dir = max(path for path in (root / "reports").iterdir() if path.is_dir())
    return json.loads((run_dir / "run.json").read_text())


def test_demo_pipeline_trains_a_real_forecast(demo_project: Path, capsys):
    assert main(["run", str(demo_project / "pipeline.yaml")]) == 0, capsys.readouterr().out
    record = latest_run(demo_project)
    assert [stage["status"] for stage in record["stages"].values()] == ["succeeded"] * 6
    validate, train, evaluate = (
        record["stages"][name]["scraps"] for name in ("validate", "train", "evaluate")
    )
    assert validate["n_errors"] == 0 and validate["n_history_rows"] == 113 * 7
    assert train["model_uri"].startswith("models:/")
    assert 0 < evaluate["wape"] < evaluate["baseline_wape"] < 0.15
    assert evaluate["n_holdout_rows"] == 8 * 7
    run_dir = demo_project / "reports" / record["run_id"]
    for name in record["stages"]:
        page = (run_dir / f"{name}.html").read_text()
        assert "<script src=" not in page and "https://" not in page.split("<body", 1)[-1].split("<a ", 1)[0]
    assert (demo_project / "mlruns" / "mlflow.db").is_file()  # the embedded tracking store, no server
    model = record["model"]  # version 1 was evaluated, version 2 is its refit on every week: it ships
    assert (model["evaluated"], model["version"], model["promoted"]) == ("1", "2", True)
    assert model["smoke_check"]["passed"] and "of the refit within" in model["smoke_check"]["detail"]
    assert record["stages"]["refit"]["scraps"]["data_until"] == "2012-03-30"  # the newest week of the history
    deploy = record["stages"]["deploy"]["scraps"]
    assert deploy["deployed_version"] == "2" and deploy["bundle_loads"] is True
    bundle = demo_project / deploy["serving_path"]
    assert (bundle / "model" / "MLmodel").is_file() and (bundle / "metadata.json").is_file()
    assert len((bundle / "forecast.csv").read_text().splitlines()) == 1 + 4 * 7


HEAVY = ("mlflow", "sqlalchemy", "pandas", "numpy", "pyarrow", "scrapbook")
RUN_AND_LIST_IMPORTS = f"""
import json, sys
from runner.commands import main
code = main(["run", sys.argv[1], "--no-notify"])
heavy = {{name.split(".")[0] for name in sys.modules}} & set({HEAVY!r})
print(json.dumps({{"code": code, "heavy": sorted(heavy)}}))
"""


def test_the_runner_process_leaves_mlflow_and_pandas_to_workers(tmp_path: Path):
    """A first run (a new store, a release, a smoke check): MLflow's calls, the scraps (tables decoded with
    pandas) and the smoke check run in workers forked from the kernel server, where they are imported
    already; the runner process imports none of them (about 180 MB less at the run's peak)."""
    root = tmp_path / "demo"
    shutil.copytree(PROJECT_ROOT / "notebooks", root / "notebooks")
    shutil.copytree(PROJECT_ROOT / "data" / "history", root / "data" / "history")
    shutil.copy(PROJECT_ROOT / "pipeline.yaml", root)
    found = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_IMPORTS, str(root / "pipeline.yaml")],
        cwd=root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    result = json.loads(found.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, found.stdout[-3000:]
    assert result["heavy"] == [], f"the runner imported {result['heavy']}"
    record = latest_run(root)
    assert (record["model"]["promoted"], record["model"]["smoke_check"]["passed"]) == (True, True)
    assert record["stages"]["validate"]["scraps"]["n_errors"] == 0  # read by a worker


def test_papermill_comes_without_pyarrow_which_can_still_be_imported_after():
    check = (
        "import sys; from runner.engine import imports; imports.papermill(); "
        "assert 'pyarrow' not in sys.modules, 'papermill brought pyarrow'; "
        "import pyarrow.fs; print(pyarrow.fs.LocalFileSystem.__name__)"
    )
    found = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert found.returncode == 0 and found.stdout.strip() == "LocalFileSystem", found.stderr[-2000:]


def test_demo_gate_failing_on_purpose_exits_3(demo_project: Path, capsys):
    code = main(["run", str(demo_project / "pipeline.yaml"), "-p", "wape_threshold=0.0001"])
    out = capsys.readouterr().out
    assert code == 3, out
    last = out.strip().splitlines()
    assert any("wape <= params.wape_threshold" in line and "0.0001" in line for line in last[-3:]), last[-3:]
    record = latest_run(demo_project)
    assert record["status"] == "gate_failed"
    gate = record["stages"]["evaluate"]["gates"][0]
    assert gate["passed"] is False and gate["values"]["params.wape_threshold"] == 0.0001
    index = (demo_project / "reports" / record["run_id"] / "index.html").read_text()
    assert "Gate `wape &lt;= params.wape_threshold` in stage evaluate" in index


def test_replay_registers_a_version_a_week_and_compares_with_the_champion(tmp_path: Path, capsys):
    """Two real weeks replayed: the first run creates the champion, the next weeks are judged against it."""
    root = tmp_path / "replay"
    root.mkdir()
    shutil.copy(PROJECT_ROOT / "pipeline.yaml", root)
    shutil.copytree(PROJECT_ROOT / "notebooks", root / "notebooks")
    history = (PROJECT_ROOT / "data" / "history" / "sales.csv").read_text().splitlines(keepends=True)
    for folder in ("history", "new", "source"):
        (root / "data" / folder).mkdir(parents=True)
    early = [line for line in history[1:] if line.split(",")[3] <= "2012-03-09"]  # 110 of the 113 weeks
    (root / "data" / "history" / "sales.csv").write_text(history[0] + "".join(early))
    source = root / "data" / "source" / "weeks.csv"
    source.write_text("".join(history))  # 3 weeks to replay, no download
    drops = load_walmart().write_drops(root, 2, tmp_path / "drops", source=source)
    assert [path.name for path in drops] == ["01-sales-2012-03-16.csv", "02-sales-2012-03-23.csv"]
    pipeline = str(root / "pipeline.yaml")
    assert main(["replay", "--drops", str(tmp_path / "drops"), pipeline]) == 0
    out = capsys.readouterr().out
    assert "[1/2] sales-2012-03-16.csv: running" in out and "[2/2] sales-2012-03-23.csv: " in out
    first, second = (json.loads(path.read_text()) for path in sorted((root / "reports").glob("*/run.json")))
    assert first["trigger"] == second["trigger"] == "replay"
    for record in (first, second):  # each week is either refused by a gate or registered
        if record["status"] == "gate_failed":
            assert record["model"] is None and "refused by gate" in out
        else:
            assert record["status"] == "succeeded" and record["model"]["version"] is not None
    champion = first["model"]["champion_after"] if first["model"] else None
    measured = second["stages"]["evaluate"]["scraps"].get("champion")
    assert (measured or {}).get("version") == champion  # judged against whatever production held
    # a week a run succeeded on joins the history (its original kept in data/accepted/<run_id>/); a refused
    # week stays in data/new/ for the next run: every week is in exactly one of the two, none is lost
    accepted = {name for record in (first, second) for name in record["data"]["files"]}
    for record in (first, second):
        action = record["data"]["action"]
        assert action == ("accepted" if record["status"] == "succeeded" else "kept"), record["data"]
        for drop in record["data"]["drops"] if action == "accepted" else []:
            assert (root / "data" / "accepted" / record["run_id"] / Path(drop).name).is_file()
    waiting = {f"data/new/{path.name}" for path in (root / "data" / "new").iterdir()}
    in_history = {name for name in accepted if (root / name).is_file()}
    weeks = {Path(name).name for name in waiting | in_history}
    assert weeks == {"sales-2012-03-16.csv", "sales-2012-03-23.csv"}
    assert not waiting & {f"data/new/{Path(name).name}" for name in in_history}


def test_stage_notebooks_run_standalone_under_nbval(demo_project: Path):
    """Each notebook also runs on its own defaults, as a data scientist opens it in Jupyter."""
    copy = demo_project.parent / "nbval"
    shutil.copytree(demo_project, copy, ignore=shutil.ignore_patterns("reports", "mlruns"))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider", "notebooks"],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
