"""Faults, and the end state each one promises: the run's status and exit code, its report written and
readable, the champion alias unchanged, no kernel process left, no temporary file left.

Faults in a cell (raise, timeout, dead kernel) and Ctrl-C/SIGTERM on notebooks without a model are in
tests/test_pipeline.py; here they hit the model pipeline of tests/assets/model, whose train notebook takes
a `fault` parameter, so that the champion can be checked too. Servers (MLflow, the Slack webhook) run on
127.0.0.1; a full or read-only disk is a small tmpfs mounted on reports/ (root only: skipped elsewhere).
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from runner.commands import main
from tests.conftest import (
    Reply,
    Webhook,
    aliases,
    assert_reports_readable,
    eventually,
    kernels_in,
    spawn_run,
    temp_files,
)

pytestmark = pytest.mark.e2e

FAULTS = {
    # the train notebook's `fault` parameter -> the failure kind the stage must record
    "raise": "error",
    "hang": "timeout",
    "exit": "dead_kernel",
    "sigkill": "dead_kernel",
}
TRAIN_TIMEOUT_S = 300  # a bound on a hanging cell a signal failed to stop; loaded, training can take 30 s
HANG_TIMEOUT_S = 4  # the train stage's limit in the hang case: its first cells (parameters, fault) take ms


@pytest.fixture
def model_project(champion_project: tuple[Path, str]) -> tuple[Path, str]:
    """A copy of the toy project whose version 1 is the champion, its train stage limited (a hanging cell
    ends, even if a signal fails to stop it; the hang case sets a short limit of its own)."""
    pipeline, name = champion_project
    text = pipeline.read_text().replace(
        "notebook: notebooks/train.ipynb", f"notebook: notebooks/train.ipynb\n    timeout: {TRAIN_TIMEOUT_S}"
    )
    pipeline.write_text(text)
    return pipeline, name


def newest_run(pipeline: Path) -> dict:
    run_dir = max(path for path in (pipeline.parent / "reports").iterdir() if path.is_dir())
    return json.loads((run_dir / "run.json").read_text())


def assert_clean_end(pipeline: Path) -> list[dict]:
    """No kernel and no temporary file left; every report readable. Returns the run records."""
    reports = pipeline.parent / "reports"
    assert eventually(lambda: not kernels_in(pipeline.parent)), "a kernel outlived the run"
    assert temp_files(reports) == []
    return assert_reports_readable(reports)


# --- faults in the training stage ---------------------------------------------------------------------------
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_faulty_training_stage_fails_the_run_and_leaves_the_champion(model_project, capsys, fault) -> None:
    pipeline, name = model_project
    if fault == "hang":  # the stage's clock starts once its kernel is ready: the hanging cell is its second
        text = pipeline.read_text().replace(f"timeout: {TRAIN_TIMEOUT_S}", f"timeout: {HANG_TIMEOUT_S}")
        pipeline.write_text(text)
    code = main(["run", str(pipeline), "-p", f"fault={fault}", "-p", "factor=2.01"])
    out = capsys.readouterr().out
    record = newest_run(pipeline)
    assert code == 1, out
    assert record["status"] == "failed"
    train = record["stages"]["train"]
    assert train["status"] == "failed" and train["failure"]["kind"] == FAULTS[fault]
    assert [record["stages"][s]["status"] for s in ("evaluate", "deploy")] == ["skipped", "skipped"]
    assert record["model"] is None  # nothing was registered
    assert aliases(pipeline, name)["champion"] == "1"
    assert "failed" in out.strip().splitlines()[-1]
    assert_clean_end(pipeline)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_cancelled_model_run_keeps_the_champion(model_project, signum) -> None:
    pipeline, name = model_project
    process = spawn_run(pipeline, "-p", "fault=hang", "-p", "factor=2.01")
    reports = pipeline.parent / "reports"
    runs_before = {path.name for path in reports.iterdir()}

    def training() -> bool:  # the new run's train notebook is being saved: its cells are running
        return any(
            (reports / run / "train.ipynb").is_file()
            for run in {p.name for p in reports.iterdir()} - runs_before
        )

    assert eventually(training), "the run never started training"
    process.send_signal(signum)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 130, out
    record = newest_run(pipeline)
    assert record["status"] == "cancelled" and record["stages"]["train"]["failure"]["kind"] == "cancelled"
    assert aliases(pipeline, name)["champion"] == "1"
    assert "cancelled" in out.strip().splitlines()[-1]
    assert_clean_end(pipeline)


# --- Slack answers 500, or never answers --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reply", "said"),
    [(Reply(status=500, body="oops"), "HTTP 500"), (Reply(hang_s=60), "no answer within 1 s")],
)
def test_slack_failing_never_changes_the_run(
    make_project,
    capsys,
    monkeypatch,
    webhook: Webhook,
    reply,
    said,
) -> None:
    webhook.script = [reply]
    monkeypatch.setenv("SLACK_WEBHOOK_URL", webhook.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    pipeline = make_project("""\
        version: 1
        name: toy
        stages:
          only:
            notebook: notebooks/ok.ipynb
        notify: {timeout_s: 1, retries: 1}
        """)
    code = main(["run", str(pipeline)])
    out = capsys.readouterr().out
    assert code == 0, out
    record = newest_run(pipeline)
    [sent] = record["notifications"]
    assert record["status"] == "succeeded" and not sent["delivered"] and said in sent["detail"]
    assert sent["attempts"] == 2 and len(webhook.requests) == 2
    assert "slack: not sent" in out and out.strip().splitlines()[-1].startswith("succeeded")
    assert_clean_end(pipeline)


# --- two runs at once in one project ------------------------------------------------------------------------
def holder_pid(pipeline: Path) -> str:
    lock = pipeline.parent / "reports" / ".run.lock"
    return lock.read_text() if lock.is_file() else ""


def test_a_second_run_exits_75_naming_the_run_that_holds_the_project(model_project, capsys) -> None:
    pipeline, name = model_project
    first = spawn_run(pipeline, "-p", "fault=hang", "-p", "factor=2.01")
    assert eventually(lambda: holder_pid(pipeline).startswith(f"pid {first.pid} ")), "no lock taken"
    code = main(["run", str(pipeline), "-p", "factor=2.02"])
    err = capsys.readouterr().err
    assert code == 75
    assert f"another retrain run is running in this project: pid {first.pid} on" in err
    assert "--wait SECONDS" in err
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    records = assert_clean_end(pipeline)
    assert len(records) == 2  # the first run's and the cancelled one's: the refused run left nothing
    assert aliases(pipeline, name)["champion"] == "1"


def test_a_second_run_with_wait_queues_behind_the_first(model_project, capsys) -> None:
    pipeline, name = model_project
    first = spawn_run(pipeline, "-p", "factor=2.01")
    assert eventually(lambda: holder_pid(pipeline).startswith(f"pid {first.pid} ")), "no lock taken"
    code = main(["run", str(pipeline), "--wait", "300", "-p", "factor=2.02"])
    out = capsys.readouterr().out
    first_out, _ = first.communicate(timeout=300)
    assert (first.returncode, code) == (0, 0), first_out + out
    assert f"waiting up to 300 s for the run that holds this project: pid {first.pid}" in out
    records = sorted(assert_clean_end(pipeline), key=lambda record: record["run_id"])
    one, two = records[-2:]
    assert one["finished_at"] <= two["started_at"]  # one after the other
    assert (one["model"]["version"], two["model"]["version"]) == ("2", "3")
    assert two["model"]["champion_before"] == "2"
    assert {"champion": "3", "previous": "2"}.items() <= aliases(pipeline, name).items()


# --- a full disk, a read-only reports/ ----------------------------------------------------------------------
def test_a_full_disk_fails_the_run_with_a_message_and_no_partial_file(small_reports, capsys) -> None:
    pipeline = small_reports
    code = main(["run", str(pipeline), "-p", "kilobytes=2000"])  # the chatty stage prints 2 MB
    captured = capsys.readouterr()
    assert code == 1, captured.out + captured.err
    assert "No space left on device" in captured.err and "Traceback" not in captured.err
    assert "chatty.ipynb" in captured.err  # the file that could not be written
    reports = pipeline.parent / "reports"
    assert temp_files(reports) == [] and not kernels_in(pipeline.parent)
    for run_json in reports.glob("*/run.json"):  # whatever was written is whole
        record = json.loads(run_json.read_text())
        assert record["stages"]["first"]["status"] == "succeeded"
    assert_reports_readable(reports)


def test_a_read_only_reports_folder_fails_before_anything_runs(small_reports, capsys) -> None:
    pipeline = small_reports
    reports = pipeline.parent / "reports"
    assert main(["run", str(pipeline)]) == 0
    capsys.readouterr()
    before = {path: path.read_bytes() for path in reports.rglob("*") if path.is_file()}
    subprocess.run(["mount", "-o", "remount,ro", str(reports)], check=True)
    code = main(["run", str(pipeline)])
    captured = capsys.readouterr()
    assert code == 1
    assert "Read-only file system" in captured.err and "Traceback" not in captured.err
    assert {path: path.read_bytes() for path in reports.rglob("*") if path.is_file()} == before
    assert not kernels_in(pipeline.parent)
