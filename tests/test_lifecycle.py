"""The model's lifecycle against a real registry: the embedded sqlite store and a real `mlflow server`.

A tiny pipeline (tests/assets/model) trains y = factor * x as an MLflow pyfunc model; `broken=true` logs a
model that predicts zeros while the evaluate stage measured the good one: a corrupted deployment.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner.commands import main
from tests.conftest import (
    ON_THE_SERVER,
    TOY_MODEL_PIPELINE,
    aliases,
    free_port,
    make_model_project,
    run_listing_imports,
    spawn_run,
)


def points(weeks: int) -> str:
    """The toy's data with a week column: 8 points a week, y = 2x give or take 0.5."""
    rows = [f"{x},{2 * x + (1 if x % 2 else -1) * 0.5},{(x - 1) // 8 + 1}" for x in range(1, 8 * weeks + 1)]
    return "x,y,week\n" + "\n".join(rows) + "\n"


def run(capsys: pytest.CaptureFixture[str], pipeline: Path, *args: str) -> tuple[int, dict, str]:
    code = main(["run", str(pipeline), *args])
    out = capsys.readouterr().out
    run_dir = max(path for path in (pipeline.parent / "reports").iterdir() if path.is_dir())
    return code, json.loads((run_dir / "run.json").read_text()), out


def assert_first_champion(first: dict) -> None:
    """A first run's record: version 1 registered, promoted (no champion to beat) and smoke-checked."""
    model = first["model"]
    assert (model["action"], model["version"], model["promoted"], model["champion_after"]) == (
        "registered", "1", True, "1",
    )  # fmt: skip
    assert model["smoke_check"]["passed"] is True
    assert "no champion yet" in first["stages"]["evaluate"]["gates"][1]["detail"]


def command(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def rolled_back_to_1_then_refused(
    capsys: pytest.CaptureFixture[str], pipeline: Path, name: str, versions: str
) -> None:
    """`retrain rollback` puts version 1 back (no `previous` left); a second rollback, a rollback or a
    promotion to a version that does not exist are usage errors naming what exists (`versions`)."""
    code, said = command(capsys, "rollback", str(pipeline))
    assert code == 0 and "version 1 is the champion" in said
    assert aliases(pipeline, name)["champion"] == "1" and "previous" not in aliases(pipeline, name)
    code, said = command(capsys, "rollback", str(pipeline))
    assert code == 2 and "no previous champion" in said
    code, said = command(capsys, "rollback", "--to", "99", str(pipeline))
    assert code == 2 and "has no version 99" in said
    code, said = command(capsys, "promote", "99", str(pipeline))
    assert code == 2 and f"has no version 99 (versions: {versions})" in said


@pytest.mark.unit
def test_the_kernel_server_preloads_the_sql_stores_only_for_a_database():
    from runner.production.registry import worker_imports

    sql = "mlflow.store.tracking.sqlalchemy_store"
    assert sql in worker_imports("sqlite:////project/mlruns/mlflow.db")
    assert "sqlalchemy.dialects.sqlite" in worker_imports("sqlite:////project/mlruns/mlflow.db")
    assert sql in worker_imports("postgresql+psycopg2://user@host/mlflow")
    assert "sqlite" not in worker_imports("postgresql+psycopg2://user@host/mlflow")
    for server in ("http://127.0.0.1:5000", "https://mlflow.example.com", "databricks", "file:///tmp/mlruns"):
        assert worker_imports(server) == "import mlflow.pyfunc", server


@pytest.mark.e2e
def test_register_promote_dedupe_smoke_check_and_roll_back(tmp_path, capsys, monkeypatch):
    """The whole story once, on the embedded store with the registry's calls in workers forked from the
    kernel server, which imports MLflow once for them and for the stages' kernels although the pipeline
    has no warm-up. The same calls in the runner's own process are made by the commands below (`promote`
    and `rollback` never use workers) and by test_leaks' runs without a kernel server; on a tracking
    server, by `test_on_a_tracking_server_...`."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    pipeline, name = make_model_project(tmp_path)

    # the first run in a process of its own, which says what it imported: none of MLflow, pandas, ...
    said = run_listing_imports(pipeline)
    assert said["code"] == 0 and said["heavy"] == [], said["output"][-3000:]
    first = json.loads(next((pipeline.parent / "reports").glob("*/run.json")).read_text())
    assert_first_champion(first)
    assert first["stages"]["deploy"]["scraps"]["deployed_version"] == "1"
    assert aliases(pipeline, name) == {"champion": "1", "challenger": "1"}

    code, again, out = run(capsys, pipeline)
    assert code == 0, out
    assert again["model"]["action"] == "unchanged" and again["model"]["version"] == "1"
    assert "already holds this model" in again["model"]["detail"]

    code, better, out = run(capsys, pipeline, "-p", "factor=2.01")
    assert code == 0, out
    assert better["model"]["version"] == "2" and better["model"]["champion_before"] == "1"
    champion_gate = better["stages"]["evaluate"]["gates"][1]
    assert champion_gate["passed"] and "champion.wape" in champion_gate["values"]
    assert better["stages"]["evaluate"]["scraps"]["champion"]["version"] == "1"  # scored on the same data
    assert aliases(pipeline, name) == {"champion": "2", "previous": "1", "challenger": "2"}

    code, broken, out = run(capsys, pipeline, "-p", "broken=true")
    assert code == 1, out
    model = broken["model"]
    assert model["version"] == "3" and model["promoted"] and model["rolled_back"]
    assert model["champion_after"] == "2" and broken["status"] == "failed"
    assert "predictions differ" in model["smoke_check"]["detail"] and "rolled back" in model["error"]
    assert broken["stages"]["deploy"]["status"] == "skipped"
    assert aliases(pipeline, name)["champion"] == "2"  # the champion from before the run
    assert "failed its smoke check" in out

    code, listing = command(capsys, "models", str(pipeline))
    assert code == 0 and "smoke check failed" in listing and "champion" in listing

    code, evaluated, out = run(capsys, pipeline, "--mode", "evaluate", "-p", "factor=2.02")
    assert code == 0, out
    assert (
        evaluated["model"]["version"] is None and "registry is left as it is" in evaluated["model"]["detail"]
    )
    assert evaluated["stages"]["deploy"]["status"] == "skipped"
    code, listing = command(capsys, "models", str(pipeline))
    assert "\n│ 4 " not in listing  # evaluate mode registered nothing

    rolled_back_to_1_then_refused(capsys, pipeline, name, "3, 2, 1")
    code, said = command(capsys, "promote", "2", str(pipeline))
    assert code == 0 and "smoke check passed" in said
    code, said = command(capsys, "promote", "3", str(pipeline))
    assert code == 1 and "smoke check failed" in said
    assert aliases(pipeline, name)["champion"] == "2"


# The toy with a promotion policy and a refit: the evaluate stage records paired rows (each week an origin),
# the refit stage trains the same factor on every week; deploy comes after the refit. Train and evaluate
# declare what they read and write, so that a rerun with nothing changed reuses them from the cache.
WITH_POLICY = (
    TOY_MODEL_PIPELINE.replace(
        "    notebook: notebooks/train.ipynb\n",
        '    notebook: notebooks/train.ipynb\n    inputs: ["data/*.csv"]\n'
        '    outputs: ["products/model.json"]\n',
    )
    .replace(
        "    notebook: notebooks/evaluate.ipynb\n",
        '    notebook: notebooks/evaluate.ipynb\n    inputs: ["data/*.csv"]\n'
        '    outputs: ["products/holdout.parquet"]\n',
    )
    .replace(
        "  deploy:\n    notebook: notebooks/deploy.ipynb\n    needs: [evaluate]\n",
        "  refit:\n    notebook: notebooks/refit.ipynb\n    needs: [evaluate]\n"
        "  deploy:\n    notebook: notebooks/deploy.ipynb\n    needs: [refit]\n",
    )
    .replace('      - "wape <= champion.wape * 1.5"\n', "")
    .replace(
        '  smoke_check: {{score: "notebooks.toy_scores:wape"}}\n',
        '  smoke_check: {{score: "notebooks.toy_scores:wape", refit_tolerance: 0.01,'
        " max_seconds: 600}}\n"
        "  promotion_policy: {{rule: non_inferior, margin: 0.01}}\n"
        "  refit: refit.model_uri\n",
    )
)


@pytest.mark.e2e
def test_the_policy_ships_a_refit_that_saw_the_latest_week_and_refuses_worse(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    pipeline, name = make_model_project(tmp_path)
    pipeline.write_text(WITH_POLICY.format(name=name, promotion="auto"))
    (pipeline.parent / "data" / "points.csv").write_text(points(5))  # 5 weeks: each an origin of a backtest

    code, first, out = run(capsys, pipeline)
    assert code == 0, out
    model = first["model"]
    assert (model["evaluated"], model["version"], model["champion_after"]) == ("1", "2", "2")
    assert model["decision"]["sentence"] == "v2 promoted: the first champion"
    assert "predictions of the refit within 0.01 of the evaluated model's" in model["smoke_check"]["detail"]
    assert first["stages"]["refit"]["scraps"]["data_until"] == 5
    assert first["stages"]["deploy"]["scraps"]["deployed_version"] == "2"  # what serving holds: the refit
    assert aliases(pipeline, name) == {"champion": "2", "challenger": "2"}

    code, again, out = run(capsys, pipeline)  # nothing changed: v2 already holds the model, no refit
    assert code == 0 and again["model"]["action"] == "unchanged", out
    assert again["stages"]["refit"]["status"] == "skipped"
    # ... and once every stage comes from the cache, not even a kernel for the refit is started ahead of it
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "runner", "run", str(pipeline), "--no-notify"],
        cwd=pipeline.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert not {"jupyter_client", "mlflow"} & imported
    latest = max(path for path in (pipeline.parent / "reports").iterdir() if path.is_dir())
    cached = json.loads((latest / "run.json").read_text())
    assert cached["run_id"] != again["run_id"] and cached["status"] == "succeeded"
    assert {name: stage["status"] for name, stage in cached["stages"].items()} == {
        "train": "cached", "evaluate": "cached", "refit": "skipped", "deploy": "skipped"
    }  # fmt: skip
    (pipeline.parent / "data" / "points.csv").write_text(points(6))  # a new week arrives
    code, second, out = run(capsys, pipeline)
    assert code == 0, out
    model = second["model"]
    assert (model["evaluated"], model["version"], model["champion_after"]) == ("3", "4", "4")
    assert model["promoted"] and model["decision"]["verdict"] == "promote"
    assert "scores as the champion" in model["decision"]["sentence"]  # the same factor on the same weeks
    assert second["stages"]["refit"]["scraps"]["data_until"] == 6  # the production model saw the latest week
    assert second["stages"]["deploy"]["scraps"]["deployed_version"] == "4"
    from runner.production.registry import Registry
    from runner.project import tracking_uri

    registry = Registry(tracking_uri(pipeline.parent), name, lock_dir=pipeline.parent / "mlruns")
    refit, evaluated = registry.get("4"), registry.get("3")
    assert refit is not None and evaluated is not None
    assert refit.lineage("refit_of") == "3" and evaluated.lineage("refit") == "4"  # linked both ways
    assert refit.metrics["wape"] == evaluated.metrics["wape"]  # judged by the evaluation's numbers

    code, worse, out = run(capsys, pipeline, "-p", "factor=2.5")
    assert code == 3, out
    model = worse["model"]
    assert worse["status"] == "gate_failed" and model["decision"]["verdict"] == "refuse"
    assert model["version"] is None and model["champion_after"] == "4"
    assert [worse["stages"][stage]["status"] for stage in ("refit", "deploy")] == ["skipped", "skipped"]
    assert "Refused: the new model is" in out and "wholly beyond the margin" in out
    assert aliases(pipeline, name) == {"champion": "4", "previous": "2", "challenger": "4"}


@pytest.mark.e2e
def test_manual_promotion_stops_after_registration(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    pipeline, name = make_model_project(tmp_path, promotion="manual")
    code, record, out = run(capsys, pipeline)
    assert code == 0, out
    assert record["model"]["version"] == "1" and not record["model"]["promoted"]
    assert "retrain promote 1" in record["model"]["detail"]
    assert record["stages"]["deploy"]["status"] == "skipped"
    assert aliases(pipeline, name) == {"challenger": "1"}
    code, said = command(capsys, "promote", "1", str(pipeline))
    assert code == 0 and "version 1 is now the champion" in said and "smoke check passed" in said


@pytest.mark.e2e
@ON_THE_SERVER
def test_on_a_tracking_server_runs_register_promote_and_roll_back_and_two_at_once_never_both_promote(
    mlflow_server, tmp_path, capsys, monkeypatch
):
    """The lifecycle's registry calls over HTTP, on the session's `mlflow server`: a run registers, promotes
    and smoke-checks the first champion; the server finds the version that holds a model by its fingerprint
    (what makes a rerun on the same data `unchanged`); two clones of the project (two CI machines, say) run
    at once, which the project lock cannot serialise (tests/test_faults.py covers two runs in one project)
    but compare-and-set does; a corrupted model is rolled back; `models`, `rollback` and `promote` work on
    the server. What does not depend on where the registry is (the decision, evaluate mode) is the story
    above, on the embedded store."""
    from runner.engine.config import load_pipeline
    from runner.production.lifecycle import fingerprints, open_registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    pipeline, name = make_model_project(tmp_path)
    code, first, out = run(capsys, pipeline)  # version 1 is the champion both runs below start from
    assert code == 0, out
    assert_first_champion(first)
    assert aliases(pipeline, name) == {"champion": "1", "challenger": "1"}
    loaded = load_pipeline(pipeline)
    found = open_registry(loaded).find_by_fingerprint(fingerprints(loaded)["fingerprint"])
    assert found is not None and found.version == "1"  # a rerun on the same data would find it: unchanged

    clone = tmp_path / "clone"
    shutil.copytree(pipeline.parent, clone, ignore=shutil.ignore_patterns("reports"))
    projects = (pipeline.parent, clone)
    runs = [
        spawn_run(project / "pipeline.yaml", "-p", f"factor={factor}")
        for project, factor in zip(projects, ("2.01", "2.02"), strict=True)
    ]
    outputs = [process.communicate(timeout=300)[0] for process in runs]
    codes = [process.returncode for process in runs]
    assert sorted(codes) == [0, 1], outputs
    assert "changed during this run" in outputs[codes.index(1)]
    final = aliases(pipeline, name)
    assert final["champion"] in ("2", "3") and final["previous"] == "1"
    winner, won_in = final["champion"], projects[codes.index(0)] / "pipeline.yaml"

    code, broken, out = run(capsys, pipeline, "-p", "broken=true")
    assert code == 1, out
    model = broken["model"]
    assert model["version"] == "4" and model["promoted"] and model["rolled_back"]
    assert model["champion_after"] == winner and broken["status"] == "failed"
    assert "predictions differ" in model["smoke_check"]["detail"] and "rolled back" in model["error"]
    assert aliases(pipeline, name)["champion"] == winner  # the champion from before the run

    code, listing = command(capsys, "models", str(pipeline))
    assert code == 0 and "smoke check failed" in listing and "champion" in listing
    rolled_back_to_1_then_refused(capsys, pipeline, name, "4, 3, 2, 1")
    code, said = command(capsys, "promote", winner, str(won_in))  # the project that holds its run's sample
    assert code == 0 and "smoke check passed" in said
    code, said = command(capsys, "promote", "4", str(pipeline))
    assert code == 1 and "smoke check failed" in said
    assert aliases(pipeline, name)["champion"] == winner


@pytest.mark.e2e
def test_unreachable_tracking_server_fails_before_anything_runs(tmp_path, capsys, monkeypatch):
    pipeline, _ = make_model_project(tmp_path)
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    code, said = command(capsys, "run", str(pipeline))
    assert code == 1 and f"MLflow tracking server {uri} is unreachable" in said
    assert not (pipeline.parent / "reports").exists()


@pytest.mark.kernel
def test_a_conflict_found_in_a_worker_reaches_the_runner_as_a_conflict(tmp_path):
    from runner.engine.kernels import Workers
    from runner.engine.kernels.forked import KernelServer
    from runner.production.registry import Registry, RegistryConflict

    server = KernelServer(tmp_path, "import mlflow")
    registry = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", "toy", lock_dir=tmp_path / "mlruns")
    registry.work_in(Workers(lambda: server))
    try:
        assert registry.elsewhere
        with pytest.raises(RegistryConflict, match=r"expected 5, found none"):
            registry.move_champion("1", expected="5", previous=None)
        assert registry.by_alias("champion") is None
    finally:
        server.close()
    assert not registry.elsewhere  # the server is gone: MLflow's calls run in this process again
