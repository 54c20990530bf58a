"""Replay a folder of data drops: each file in turn goes into the pipeline's `data.new` folder, and the
pipeline runs after each, as if a week (a day, a month) of labeled data had just been committed.

It answers "what would this pipeline have done over these drops?": which versions it registered, which it
promoted, which it refused and why, what became of each drop (accepted, quarantined, kept). Drops are fed in
the order of their names; a leading `NN-` orders them and is dropped from the name they get in `data/new`
(so that a drop and its corrected re-send can sit in one folder). Nothing is printed here: `on_drop` hears
of each drop as it goes, and the command draws the table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from runner import files
from runner.engine.config import Pipeline, load_pipeline
from runner.engine.kernels import kept_servers
from runner.errors import UsageError, exit_code_for_status
from runner.pipeline import Observer, RunOptions, run_pipeline
from runner.production import lifecycle
from runner.records import KeyMetric, RunRecord, StageRecord

ORDER_PREFIX = re.compile(r"^\d+-")


@dataclass(frozen=True)
class ReplayRow:
    drop: str  # the drop's file name, as it went into data/new
    run_id: str
    status: str
    exit_code: int
    version: str | None
    champion: str | None
    metric: float | None  # the key metric of this run's model
    champion_metric: float | None  # the champion's, on the same data
    what: str  # what happened to the model, or why the run stopped
    data: str  # what became of the drop: accepted, quarantined, kept


class Quiet:
    """An Observer that watches nothing: the replay reports per drop, not per stage."""

    def run_started(self, record: RunRecord, run_dir: Path) -> None:
        return None

    def stage_started(self, stage: StageRecord) -> None:
        return None

    def stage_finished(self, stage: StageRecord) -> None:
        return None

    def step(self, text: str) -> None:
        return None


def drops_in(folder: Path) -> list[Path]:
    """The drop files of `folder`, in the order they are fed (hidden files left out)."""
    if not folder.is_dir():
        raise UsageError(f"no folder {folder}: --drops names a folder of data files")
    found = sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith("."))
    if not found:
        raise UsageError(f"{folder} holds no file to replay")
    return found


def new_folder(pipeline: Pipeline) -> Path:
    """Where a drop lands: the folder of the pipeline's first `data.new` glob."""
    if pipeline.data is None:
        why = "has no `data` section: there is no data.new folder to drop into"
        raise UsageError(f"{pipeline.path.name} {why}")
    return pipeline.root / PurePosixPath(pipeline.data.new[0]).parent


def replay(
    pipeline_path: Path,
    drops: list[Path],
    *,
    trigger: str = "replay",
    observer: Observer | None = None,
    on_drop: Callable[[int, str, ReplayRow | None], None] = lambda index, name, row: None,
) -> list[ReplayRow]:
    """Feed each drop and run the pipeline after it; one row per drop. `on_drop(index, name, row)` is called
    before each run (row None) and after it."""
    rows = []
    with kept_servers():  # the runs share one kernel server: the warm-up is paid once, not once a week
        for index, drop in enumerate(drops, start=1):
            pipeline = load_pipeline(pipeline_path)
            name = ORDER_PREFIX.sub("", drop.name)
            target = new_folder(pipeline) / name
            if target.exists():
                raise UsageError(f"{target} already exists: the drop {drop.name} would replace it")
            target.parent.mkdir(parents=True, exist_ok=True)
            files.atomic_copy(drop, target)  # whole or not at all: a run never reads half a drop
            on_drop(index, name, None)
            record, _ = run_pipeline(pipeline, RunOptions(trigger=trigger), observer or Quiet())
            row = _row(name, record, pipeline.key_metric)
            if row.champion is None and pipeline.model is not None:  # stopped before evaluate saw one
                champion = lifecycle.open_registry(pipeline).champion_fast()
                row = _with_champion(row, champion.version if champion else None)
            rows.append(row)
            on_drop(index, name, row)
    return rows


def _row(drop: str, record: RunRecord, key: KeyMetric | None) -> ReplayRow:
    model = record.model
    metric = key.name if key else None
    scraps = next((stage.scraps for stage in record.stages.values() if metric and metric in stage.scraps), {})
    value = scraps.get(metric) if metric else None
    # a refused drop never reaches the registry: the champion it was judged against is in the scraps
    found = scraps.get("champion")
    measured: dict[str, Any] = found if isinstance(found, dict) else {}
    theirs = (model.champion_metrics.get(metric) if model else measured.get(metric)) if metric else None
    return ReplayRow(
        drop=drop,
        run_id=record.run_id,
        status=record.status,
        exit_code=exit_code_for_status(record.status),
        version=model.version if model else None,
        champion=model.champion_after if model else measured.get("version"),
        metric=float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None,
        champion_metric=float(theirs) if isinstance(theirs, int | float) else None,
        what=_what(record),
        data=record.data.action if record.data is not None else "",
    )


def _with_champion(row: ReplayRow, champion: str | None) -> ReplayRow:
    from dataclasses import replace

    return replace(row, champion=champion)


def _what(record: RunRecord) -> str:
    problem = record.first_problem
    if problem is not None and problem.failed_gates:
        gate = problem.failed_gates[0]
        return f"refused by gate `{gate.expr}`: {gate.detail}"
    if problem is not None:
        return problem.error or f"stage {problem.name} failed"
    if record.model is not None:
        return record.model.error or record.model.detail
    return record.status
