"""Replay the demo's story week by week: drop the next real week into data/new, run the pipeline, repeat.

It answers "what would this pipeline have done over the last N weeks?": which versions it registered,
which it promoted, which it refused and why, and what became of each week's data. `corrupt` weeks (counted
from 1) are damaged on purpose before their run, as a broken export would be: the data stage must refuse
them and move them to quarantine, and the following week re-sends the same week, clean, as a shop would after
fixing its export. Nothing is printed here; the CLI draws the table.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from runner.demo import walmart as demo
from runner.engine.config import load_pipeline
from runner.errors import exit_code_for_status
from runner.pipeline import Observer, RunOptions, run_pipeline
from runner.production import lifecycle
from runner.records import RunRecord, StageRecord


@dataclass(frozen=True)
class ReplayWeek:
    week: str  # the week that was dropped, ISO date
    run_id: str
    status: str
    exit_code: int
    version: str | None
    champion: str | None
    wape: float | None
    champion_wape: float | None
    what: str  # what happened to the model, or why the run stopped
    data: str  # what became of the week's data: accepted, quarantined, kept


class Quiet:
    """An Observer that watches nothing: the replay reports per week, not per stage."""

    def run_started(self, record: RunRecord, run_dir: Path) -> None:
        return None

    def stage_started(self, stage: StageRecord) -> None:
        return None

    def stage_finished(self, stage: StageRecord) -> None:
        return None

    def step(self, text: str) -> None:
        return None


def replay(
    pipeline_path: Path,
    weeks: int,
    *,
    source: Path | None = None,
    corrupt: Collection[int] = (),
    observer: Observer | None = None,
) -> list[ReplayWeek]:
    """Drop `weeks` real weeks one at a time, running the pipeline after each; one row per week.

    The weeks come from the demo's fetched source file, or from `source` (a file in the same format).
    """
    rows = []
    root = pipeline_path.resolve().parent
    for number in range(1, weeks + 1):
        drop = demo.next_week(root, source=source)
        if number in corrupt:
            demo.damage(drop)
        pipeline = load_pipeline(pipeline_path)
        record, _ = run_pipeline(pipeline, RunOptions(trigger="replay"), observer or Quiet())
        label = drop.stem.removeprefix("sales-") + (" (corrupted)" if number in corrupt else "")
        row = _row(label, record)
        if row.champion is None and pipeline.model is not None:  # stopped before evaluate saw the champion
            champion = lifecycle.open_registry(pipeline).champion_fast()
            row = replace(row, champion=champion.version if champion else None)
        rows.append(row)
    return rows


def _row(week: str, record: RunRecord) -> ReplayWeek:
    model = record.model
    scraps = next((stage.scraps for stage in record.stages.values() if "wape" in stage.scraps), {})
    wape = scraps.get("wape")
    # a refused week never reaches the registry: the champion it was judged against is in the scraps
    found = scraps.get("champion")
    measured: dict[str, Any] = found if isinstance(found, dict) else {}
    champion_wape = model.champion_metrics.get("wape") if model else measured.get("wape")
    return ReplayWeek(
        week=week,
        run_id=record.run_id,
        status=record.status,
        exit_code=exit_code_for_status(record.status),
        version=model.version if model else None,
        champion=model.champion_after if model else measured.get("version"),
        wape=float(wape) if isinstance(wape, int | float) else None,
        champion_wape=float(champion_wape) if isinstance(champion_wape, int | float) else None,
        what=_what(record),
        data=record.data.action if record.data is not None else "",
    )


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
