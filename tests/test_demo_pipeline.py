"""The demo end to end on the bundled real data, as `make demo` runs it; nbval over the stage notebooks.

The demo's first run is made once for the session (`demo_first_run` in tests/conftest.py, in a process of its
own that also reports what it imported); tests/test_data_intake.py starts from a copy of it too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner.commands import main
from runner.github.pages import build_site
from runner.report.history import Remembered
from runner.scrub import MachinePaths
from runner.secrets import NO_SECRETS
from tests.conftest import ON_THE_DEMO, PROJECT_ROOT, copy_project, demo_copy, load_walmart


@pytest.fixture(scope="module")
def demo_project(demo_first_run: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo after its first run, for this module's runs."""
    return copy_project(demo_first_run[0], tmp_path_factory.mktemp("demo") / "project")


def latest_run(root: Path) -> dict:
    run_dir = max(path for path in (root / "reports").iterdir() if path.is_dir())
    return json.loads((run_dir / "run.json").read_text())


@pytest.mark.e2e
@ON_THE_DEMO
def test_demo_pipeline_trains_a_real_forecast(demo_first_run: tuple[Path, dict]):
    demo_project, result = demo_first_run
    assert result["code"] == 0, result["output"][-3000:]
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


@pytest.mark.e2e
@ON_THE_DEMO
def test_the_runner_process_leaves_mlflow_and_pandas_to_workers(demo_first_run: tuple[Path, dict]):
    """A first run (a new store, a release, a smoke check): MLflow's calls, the scraps (tables decoded with
    pandas) and the smoke check run in workers forked from the kernel server, where they are imported
    already; the runner process imports none of them (about 180 MB less at the run's peak)."""
    root, result = demo_first_run
    assert result["code"] == 0, result["output"][-3000:]
    assert result["heavy"] == [], f"the runner imported {result['heavy']}"
    record = latest_run(root)
    assert (record["model"]["promoted"], record["model"]["smoke_check"]["passed"]) == (True, True)
    assert record["stages"]["validate"]["scraps"]["n_errors"] == 0  # read by a worker


@pytest.mark.e2e
def test_papermill_comes_without_pyarrow_which_can_still_be_imported_after():
    check = (
        "import sys; from runner.engine import imports; imports.papermill(); "
        "assert 'pyarrow' not in sys.modules, 'papermill brought pyarrow'; "
        "import pyarrow.fs; print(pyarrow.fs.LocalFileSystem.__name__)"
    )
    found = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert found.returncode == 0 and found.stdout.strip() == "LocalFileSystem", found.stderr[-2000:]


@pytest.mark.e2e
@ON_THE_DEMO
def test_a_refit_champion_left_pending_is_checked_again_as_a_refit(demo_project: Path, capsys):
    """A run killed between moving the alias to the refit (version 2) and its smoke check's verdict leaves the
    check `pending`; the next run checks it again as its release did: the refit's forecasts against the
    evaluated model's (version 1), within `refit_tolerance`, not the evaluated model's own score."""
    from runner.production.lifecycle import PENDING, SMOKE_CHECK
    from runner.production.registry import Registry
    from runner.project import tracking_uri

    pipeline = demo_project / "pipeline.yaml"
    registry = Registry(tracking_uri(demo_project), "demand-forecast", lock_dir=demo_project / "mlruns")
    registry.tag("2", {SMOKE_CHECK: PENDING})
    code = main(["run", str(pipeline), "--no-notify"])
    out = capsys.readouterr().out
    assert code == 0, out
    recheck = latest_run(demo_project)["champion_recheck"]
    assert (recheck["version"], recheck["passed"]) == ("2", True), recheck
    assert "of the refit within" in recheck["detail"]
    assert registry.get("2").tags[SMOKE_CHECK].startswith("passed")
    assert registry.by_alias("champion").version == "2"


@pytest.mark.e2e
@ON_THE_DEMO
def test_drift_is_weighed_by_the_champion_and_published_pages_hold_no_machine_path(
    demo_project: Path, tmp_path: Path
):
    """The two runs of the module's copy: the first had no champion, the second (the test above) was judged
    against version 2 (the first's refit, the champion). Drift is weighed equally, then by version 2's
    importance; every page in reports/ and every file `retrain github pages` would publish is free of the
    machine's paths."""
    runs = [json.loads(path.read_text()) for path in sorted((demo_project / "reports").glob("*/run.json"))]
    assert len(runs) >= 2, "runs after test_a_refit_champion_left_pending_is_checked_again_as_a_refit"
    first, second = (record["stages"]["validate"]["scraps"] for record in runs[:2])
    assert first["drift_weighing"].startswith("Features weighed equally: there is no champion yet")
    assert "by the champion's feature importance (version 2," in second["drift_weighing"]
    logged = runs[0]["stages"]["refit"]["scraps"]["feature_importance"]  # what version 2's refit logged
    assert sum(logged.values()) == pytest.approx(1.0)
    rows = [dict(zip(second["drift"]["columns"], row, strict=True)) for row in second["drift"]["rows"]]
    by_feature = {row["feature"]: row for row in rows}
    trending = {"CPI", "Unemployment", "Fuel_Price"}  # pipeline.yaml's validate parameter
    assert {name for name, row in by_feature.items() if row["trending"]} == trending
    assert all(by_feature[name]["verdict"] in {"ok", "trend"} for name in trending)
    # a column weighs what the model's features built from it weigh: sales through its lags and rolling means
    from_sales = sum(share for name, share in logged.items() if name.startswith(("lag_", "rolling_")))
    assert by_feature["Weekly_Sales"]["weight"] == pytest.approx(from_sales)
    assert by_feature["Dept"]["weight"] == pytest.approx(logged["Dept"])
    assert by_feature["IsHoliday"]["weight"] == pytest.approx(logged["is_holiday"])
    assert all(row["pvalue"] == row["pvalue"] for row in rows)  # no NaN: categories have a chi-square test

    site = tmp_path / "site"
    build_site(demo_project / "reports", site, 10, Remembered(), NO_SECRETS)
    published = [path for path in site.rglob("*") if path.is_file()]
    pages = [*published, *(demo_project / "reports").glob("**/*.html")]
    assert {path.suffix for path in published} == {".json", ".html", ".ipynb"}
    root, machine = str(demo_project), MachinePaths.of(demo_project)
    leaks = {}
    for path in pages:
        text = path.read_text(encoding="utf-8", errors="replace")
        held = [*machine.found_in(text), *([root] if root in text else [])]
        if held:
            leaks[str(path)] = held
    assert leaks == {}
    # the run made in this copy (the first was made where the session's demo ran, another folder)
    notebook = json.loads((site / runs[1]["run_id"] / "validate.ipynb").read_text())
    assert notebook["metadata"]["papermill"]["input_path"] == "<project>/notebooks/01_validate.ipynb"
    kept = (demo_project / "reports" / runs[1]["run_id"] / "validate.ipynb").read_text()
    assert root in kept  # the executed notebook the runner reads back keeps its paths


@pytest.mark.e2e
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


@pytest.mark.kernel
def test_stage_notebooks_run_standalone_under_nbval(tmp_path: Path):
    """Each notebook also runs on its own defaults, as a data scientist opens it in Jupyter."""
    copy = demo_copy(tmp_path / "nbval")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider", "notebooks"],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
