"""What every run leaves however it ends: its outcome on disk even when the disk is full, the record of a run
killed before it could write its own, no product written on a full disk.

- `write_final_record`: run.json with the run's final status. On a full disk, the room a `SpaceReserve`
  kept since the run started is given back first, then the record is written again (without its stages'
  scraps if it still does not fit): a run.json is never left saying `running` by a run that ended itself.
- `close_abandoned_runs`: a run killed outright (SIGKILL, out of memory, power loss) leaves its run.json
  saying `running`; the next run, holding the project's lock (so no other run is at work), records it as
  `failed`, saying so, so that the history does not show it running forever.
- `discard_products`: a run that filled the disk removes its `products/`: a notebook's library may have cut a
  model file short without raising, and nothing may reuse it.
"""

from __future__ import annotations

import errno
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from runner.errors import WriteError
from runner.files import SpaceReserve
from runner.project import PRODUCTS_DIR
from runner.records import RunRecord, StageFailure
from runner.report import pages
from runner.secrets import Redactor

if TYPE_CHECKING:
    from runner.pipeline import RunState

__all__ = ["SpaceReserve", "close_abandoned_runs", "discard_products", "write_final_record"]

ABANDONED = (
    "the run ended without recording its outcome: it was killed (SIGKILL, out of memory, a lost machine)"
    " before it could; recorded as failed by the next run in this project"
)


def write_final_record(run_dir: Path, record: RunRecord, redact: Redactor, reserve: SpaceReserve) -> None:
    """run.json with the run's outcome; on a full disk, with the reserved room given back (WriteError when
    even that is not enough)."""
    try:
        pages.write_run_json(run_dir, record, redact=redact)
        return
    except WriteError as error:
        if error.errno != errno.ENOSPC or not reserve.release():
            raise
    try:
        pages.write_run_json(run_dir, record, redact=redact)
    except WriteError as error:
        if error.errno != errno.ENOSPC:
            raise
        pages.write_run_json(run_dir, _without_scraps(record), redact=redact)


def _without_scraps(record: RunRecord) -> RunRecord:
    """The record with its stages' scraps left out (the executed notebooks still hold them)."""
    stages = {name: replace(stage, scraps={}) for name, stage in record.stages.items()}
    errors = [*record.warnings, "the disk was full: the stages' scraps were left out of run.json"]
    return replace(record, stages=stages, warnings=errors)


def close_abandoned_runs(reports: Path, redact: Redactor) -> list[str]:
    """Record as failed every run.json still `running` under `reports` (call it holding the project's lock,
    before this run creates its own); returns their run ids."""
    closed = []
    for run_json in sorted(reports.glob("*/run.json")) if reports.is_dir() else []:
        try:
            text = run_json.read_text(encoding="utf-8")
            if '"running"' not in text:  # a finished run has no stage and no status `running`
                continue
            record = RunRecord.from_json(json.loads(text))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # not a record the history can show either: left as it is
        if record.status != "running":
            continue
        record.status = "failed"
        record.error = ABANDONED
        for stage in record.stages.values():
            if stage.status == "running":
                stage.status = "failed"
                stage.failure = stage.failure or StageFailure("runner", "the run was killed")
                stage.error = f"stage '{stage.name}' was stopped: the run was killed"
            elif stage.status == "pending":
                stage.status, stage.skip_reason = "skipped", "not run: the run was killed"
        try:
            pages.write_run_json(run_json.parent, record, redact=redact)
        except WriteError:
            continue
        closed.append(record.run_id)
    return closed


def discard_products(run: RunState) -> None:
    """Remove the products of a run that filled the disk (they may be cut short), saying so."""
    products = run.run_dir / PRODUCTS_DIR
    if products.is_dir():
        shutil.rmtree(products, ignore_errors=True)
        run.record.warnings.append(
            f"{PRODUCTS_DIR}/ was removed: written on a full disk, any product may be cut short"
        )
