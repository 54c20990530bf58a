"""Faults of the registry, each reproduced for real: the tracking server killed mid-run, a run killed between
promoting its model and smoke-checking it, a champion whose files are gone, a corrupt registry database.

What each must end in: a run whose recorded status is its exit code, a drop accepted only with a model
registered, no traceback, and a champion that loads and was smoke-checked (or none).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from runner.commands import main
from tests.conftest import (
    add_drop,
    aliases,
    assert_reports_readable,
    eventually,
    kernels_in,
    make_drops_project,
    newest_record,
    read_until,
    spawn_run,
    temp_files,
)

pytestmark = pytest.mark.e2e

EXIT_FOR = {"succeeded": 0, "failed": 1, "gate_failed": 3, "cancelled": 130}


def version_tags(pipeline: Path, name: str, version: str) -> dict[str, str]:
    from runner.production.registry import Registry
    from runner.project import tracking_uri

    registry = Registry(tracking_uri(pipeline.parent), name, lock_dir=pipeline.parent / "mlruns")
    found = registry.get(version)
    assert found is not None
    return dict(found.tags)


def test_the_tracking_server_dying_mid_run_or_after_evaluate_fails_the_run_keeps_the_drop_and_never_hangs(
    tmp_path, capsys, monkeypatch, own_mlflow_server
):
    """The server killed twice, restarted each time: as soon as a run is under way (past its reachability
    check, the client on a short leash), then after the stages (MLflow's own retries)."""
    url, start = own_mlflow_server
    server = start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    for variable in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(variable, raising=False)  # MLflow's defaults: retries for minutes
    pipeline, name = make_drops_project(tmp_path)
    assert main(["run", str(pipeline), "--no-notify"]) == 0
    capsys.readouterr()
    reports = pipeline.parent / "reports"

    # mid-run: the client retries a dead server for minutes by default, a short leash keeps this part short
    patience = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    patience["PYTHONUNBUFFERED"] = "1"  # and its lines as they are printed
    process = spawn_run(pipeline, "--no-notify", "-p", "factor=2.01", env=patience)
    read_until(process, "train: running")  # past its reachability check, the first stage begins
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=30)
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 1, out
    assert "Traceback" not in out
    record = newest_record(pipeline)
    assert record["status"] == "failed"
    assert record["stages"]["train"]["status"] == "failed" or (record["model"] or {}).get("error")
    assert eventually(lambda: not kernels_in(pipeline.parent)) and temp_files(reports) == []
    assert_reports_readable(reports)
    server = start()
    assert aliases(pipeline, name)["champion"] == "1"

    # after evaluate, MLflow's defaults: the run ends, in time, and its recorded outcome is its exit code
    drop = add_drop(pipeline, 1)
    process = spawn_run(pipeline, "--no-notify", env={"PYTHONUNBUFFERED": "1"})
    read_until(process, "evaluate: succeeded")  # the stages are done: the release is next
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=30)
    killed = time.monotonic()
    out, _ = process.communicate(timeout=600)
    ended_s = time.monotonic() - killed
    record = newest_record(pipeline)
    assert record["status"] != "running" and process.returncode == EXIT_FOR[record["status"]], out
    assert "Traceback" not in out
    if record["status"] == "succeeded":  # the release was done before the server died
        assert record["model"]["version"] and record["model"]["smoke_check"]["passed"]
        assert not drop.exists()
    else:
        assert record["status"] == "failed" and record["model"]["error"], record["model"]
        assert drop.is_file() and record["data"]["action"] == "kept"  # no model, no acceptance
    assert ended_s < 300, f"the run took {ended_s:.0f} s to end once the server was gone"
    assert eventually(lambda: not kernels_in(pipeline.parent)) and temp_files(pipeline.parent) == []
    assert_reports_readable(reports)
    start()
    assert aliases(pipeline, name)["champion"] == "1"


def test_a_run_killed_between_promotion_and_smoke_check_leaves_the_check_to_the_next_run(
    drops_champion_project, capsys
):
    pipeline, name = drops_champion_project
    drop = add_drop(pipeline, 1)
    process = spawn_run(pipeline, "--no-notify", env={"PYTHONUNBUFFERED": "1"})
    read_until(process, "smoke check: loading it")  # the alias has moved; the check begins
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    killed = newest_record(pipeline)
    assert aliases(pipeline, name)["champion"] == "2"
    assert version_tags(pipeline, name, "2")["retrain.smoke_check"].startswith("pending")
    capsys.readouterr()
    assert main(["models", str(pipeline)]) == 0
    assert "smoke_check: pending" in capsys.readouterr().out  # `retrain models` shows it

    code = main(["run", str(pipeline), "--no-notify"])  # nothing changed: version 2 holds this model
    out = capsys.readouterr().out
    record = newest_record(pipeline)
    assert code == 0, out
    assert record["champion_recheck"]["version"] == "2" and record["champion_recheck"]["passed"]
    assert version_tags(pipeline, name, "2")["retrain.smoke_check"].startswith("passed")
    assert aliases(pipeline, name)["champion"] == "2"
    assert not drop.exists() and record["data"]["action"] == "accepted"
    records = {found["run_id"]: found for found in assert_reports_readable(pipeline.parent / "reports")}
    abandoned = records[killed["run_id"]]  # the killed run's record, closed by the next run
    assert abandoned["status"] == "failed" and "killed" in abandoned["error"]
    assert temp_files(pipeline.parent) == []


def test_a_champion_whose_files_are_gone_is_said_to_be_so_and_is_never_rolled_back_to(
    drops_champion_project, capsys
):
    pipeline, name = drops_champion_project
    shutil.rmtree(pipeline.parent / "mlruns" / "artifacts" / "models")  # version 1's model files
    capsys.readouterr()

    code = main(["run", str(pipeline), "--no-notify", "-p", "factor=2.01"])
    out = capsys.readouterr().out
    record = newest_record(pipeline)
    assert code == 0, out
    model = record["model"]
    assert model["version"] == "2" and model["promoted"] and model["smoke_check"]["passed"]
    assert "could not be scored" in model["detail"] and "registered metrics" in model["detail"]
    champion_gate = record["stages"]["evaluate"]["gates"][1]
    assert "registered metrics" in champion_gate["detail"], champion_gate
    assert aliases(pipeline, name)["champion"] == "2"

    code = main(["rollback", str(pipeline)])  # back to version 1, whose files are gone: refused
    said = capsys.readouterr()
    assert code == 1 and "cannot be loaded" in said.err, said
    assert aliases(pipeline, name)["champion"] == "2"
    code = main(["promote", "1", str(pipeline)])  # loaded before the alias moves: refused too
    said = capsys.readouterr()
    assert code == 1 and "cannot be loaded" in said.err, said
    assert aliases(pipeline, name)["champion"] == "2"


def test_a_corrupt_registry_database_fails_commands_and_runs_cleanly_with_a_report(
    drops_champion_project, capsys
):
    pipeline, _ = drops_champion_project
    database = pipeline.parent / "mlruns" / "mlflow.db"
    database.write_bytes(b"this is not a database, it was overwritten " * 200)
    drop = add_drop(pipeline, 1)
    capsys.readouterr()

    assert main(["models", str(pipeline)]) == 1
    said = capsys.readouterr()
    assert "the registry at sqlite:///" in said.err and "Traceback" not in said.out + said.err

    code = main(["run", str(pipeline), "--no-notify"])
    said = capsys.readouterr()
    record = newest_record(pipeline)
    assert code == 1 and "Traceback" not in said.out + said.err, said
    assert record["status"] == "failed" and "registry" in record["model"]["error"]
    assert all(stage["status"] == "skipped" for stage in record["stages"].values())
    assert drop.is_file() and record["data"]["action"] == "kept"
    assert (pipeline.parent / "reports" / record["run_id"] / "index.html").is_file()
    assert not kernels_in(pipeline.parent)
