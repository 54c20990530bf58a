"""How a run ends: its status decided in one place (runner/pipeline.py `finish_run`) and written whatever
happens, the exit code that status's, new data accepted only with a model registered; then the faults that
broke that: a full disk while writing, Ctrl-C in a command's first second when SIGINT is inherited ignored,
a signal that lands where Python ignores exceptions, rich markup in what a run prints.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import psutil
import pytest

from runner.commands import main
from runner.engine import intake
from runner.engine.config import load_pipeline
from runner.errors import exit_code_for_status
from runner.interrupts import cancellable
from runner.pipeline import finish_run
from runner.records import Decision, ModelRecord, RunRecord, StageRecord
from tests.conftest import assert_reports_readable, eventually, kernels_in, temp_files

MODEL_PIPELINE = """\
version: 1
name: toy
stages:
  train:
    notebook: notebooks/ok.ipynb
  deploy:
    notebook: notebooks/downstream.ipynb
    needs: [train]
model:
  name: toy
  candidate: train.label
  metrics: train
  deploy: [deploy]
"""


REFUSED = Decision("non_inferior", "refuse", "Refused: worse by more than the margin")
HELD = Decision("non_inferior", "hold", "Held: it may be worse by more than the margin")


def run_record(pipeline, mode: str = "full") -> RunRecord:
    """A new run's record as `new_run_record` makes it, without asking git for the commit (a unit test starts
    no process)."""
    stages = {name: StageRecord(name=name, source=stage.source) for name, stage in pipeline.stages.items()}
    started = "2026-12-07T08:00:00+00:00"
    return RunRecord("20261207T080000Z-000", pipeline.name, "manual", mode, None, started, {}, stages)


def settled(pipeline, mode: str = "full", statuses: tuple[str, str] = ("succeeded", "succeeded"), **model):
    """A run record of `pipeline` whose stages ended so, with `model` as its ModelRecord's fields (none
    given: no model record), its status decided by finish_run."""
    record = run_record(pipeline, mode)
    for stage, status in zip(record.stages.values(), statuses, strict=True):
        stage.status = status
    if model:
        record.model = ModelRecord(name="toy", **model)
    finish_run(pipeline, record, time.monotonic())
    return record


@pytest.mark.unit
def test_the_outcome_rule(make_project) -> None:
    with_model = load_pipeline(make_project(MODEL_PIPELINE))
    without = load_pipeline(make_project(MODEL_PIPELINE.split("model:")[0]))
    cases = [
        # (pipeline, record, status, accepts new data)
        (with_model, settled(with_model, version="3"), "succeeded", True),
        (with_model, settled(with_model, action="unchanged", version="2"), "succeeded", True),
        (with_model, settled(with_model), "failed", False),  # a full run that registered nothing
        (with_model, settled(with_model, version=None, detail="no URI"), "failed", False),
        (with_model, settled(with_model, version="3", error="the registry failed"), "failed", False),
        (with_model, settled(with_model, statuses=("gate_failed", "skipped")), "gate_failed", False),
        (with_model, settled(with_model, statuses=("succeeded", "pending"), version="3"), "failed", False),
        (with_model, settled(with_model, mode="evaluate", version=None), "succeeded", False),
        # the promotion policy: a refusal registers nothing on purpose and ends as a refused gate does; a
        # held model is registered beside the champion, which stays
        (with_model, settled(with_model, decision=REFUSED), "gate_failed", False),
        (with_model, settled(with_model, version="3", decision=HELD), "succeeded", True),
        (with_model, settled(with_model, decision=HELD), "succeeded", False),
        (with_model, settled(with_model, version="3", decision=REFUSED, error="x"), "failed", False),
        (without, settled(without), "succeeded", True),
        (without, settled(without, statuses=("failed", "skipped")), "failed", False),
    ]
    for pipeline, record, status, accepted in cases:
        assert record.status == status, (record.model, record.error)
        assert intake.accepts(record, model_declared=pipeline.model is not None) is accepted, record.model
        if status == "failed" and record.first_problem is None and not (record.model and record.model.error):
            assert record.error, "a failed run without a failed stage says why"
    bug = run_record(with_model)
    bug.error = "a bug in retrain: KeyError: 'x'"
    finish_run(with_model, bug, time.monotonic())
    assert bug.status == "failed"
    statuses = ("succeeded", "failed", "gate_failed", "cancelled")
    assert [exit_code_for_status(status) for status in statuses] == [0, 1, 3, 130]


# --- a full disk --------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_a_disk_that_fills_up_still_gets_the_final_record_and_no_product_written_on_it(small_reports, capsys):
    pipeline = small_reports
    code = main(["run", str(pipeline), "-p", "kilobytes=2000", "--no-notify"])  # 2 MB of output on 1 MB
    captured = capsys.readouterr()
    assert code == 1, captured.out + captured.err
    assert "No space left on device" in captured.err and "Traceback" not in captured.err
    reports = pipeline.parent / "reports"
    [run_json] = reports.glob("*/run.json")
    record = json.loads(run_json.read_text())
    assert record["status"] == "failed", record["status"]  # never left `running`
    assert "chatty.ipynb" in record["error"] and record["stages"]["first"]["status"] == "succeeded"
    assert not (run_json.parent / "products").exists()  # what was written on the full disk is gone
    assert any("products/ was removed" in warning for warning in record["warnings"])
    assert temp_files(reports) == [] and not kernels_in(pipeline.parent)
    assert_reports_readable(reports)


# --- signals in a command's first second ----------------------------------------------------------------
def started_ignoring_sigint(pipeline: Path, *args: str) -> subprocess.Popen[str]:
    """`python -m runner run` started as a shell starts a background job: with SIGINT ignored."""
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(pipeline), *args],
        cwd=pipeline.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )


@pytest.mark.e2e
@pytest.mark.parametrize("moment", ["while it starts", "while a stage runs"])
def test_sigint_is_heard_at_any_moment_even_when_inherited_ignored(make_project, moment):
    pipeline = make_project("""\
        version: 1
        name: toy
        stages:
          only:
            notebook: notebooks/sleeps.ipynb
        """)
    process = started_ignoring_sigint(pipeline, "--no-notify")
    if moment == "while it starts":  # its interpreter is up, its imports and the pipeline's loading are not
        assert eventually(lambda: "runner" in " ".join(psutil.Process(process.pid).cmdline()), 30)
        time.sleep(0.3)
    else:
        reports = pipeline.parent / "reports"
        assert eventually(lambda: any(reports.glob("*/only.ipynb")), 300), "the stage never started"
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 130, out
    for record in assert_reports_readable(pipeline.parent / "reports") if moment != "while it starts" else []:
        assert record["status"] == "cancelled"
    assert eventually(lambda: not kernels_in(pipeline.parent), 30)


# --- what a run prints quotes the user: never read as markup ----------------------------------------------
@pytest.mark.unit
def test_a_signal_that_lands_in_a_weakref_callback_is_delivered_again_once_it_returns() -> None:
    """Python ignores what a weakref callback raises ("Exception ignored in ..."): a KeyboardInterrupt raised
    there by the handler was lost, and a run went on waiting for its stage (seen once in six suites)."""
    landed: list[str] = []

    class Thing:
        pass

    def callback(_: object) -> None:
        signal.raise_signal(signal.SIGINT)  # the handler runs at the callback's next instruction
        landed.append("in the callback")

    with cancellable():
        thing = Thing()
        ref = weakref.ref(thing, callback)
        with pytest.raises(KeyboardInterrupt):
            del thing
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # the signal, delivered again, interrupts this loop
                pass
        assert ref() is None and landed == []  # it did land in the callback, which stopped there


@pytest.mark.e2e
def test_rich_markup_and_emoji_codes_in_user_text_are_printed_as_written(make_project, capsys):
    pipeline = make_project("""\
        version: 1
        name: toy
        stages:
          only:
            notebook: notebooks/ok.ipynb
            gates: ["label == '[bold red]no[/] :x:'"]
        """)
    code = main(["run", str(pipeline), "--trigger", ":thumbs_up: [blink]ci[/blink]", "--no-notify"])
    out = capsys.readouterr().out
    assert code == 3, out
    assert "trigger :thumbs_up: [blink]ci[/blink]" in out
    assert "[bold red]no[/] :x:" in out and "❌" not in out and "👍" not in out
