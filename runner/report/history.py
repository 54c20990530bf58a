"""The history of runs: one row per run, from the run folders on disk and from what MLflow remembers.

In GitHub Actions every job starts with an empty `reports/`: only the MLflow store persists between runs
(restored from the state branch, or a tracking server). So the history merges two sources:
- a run folder with a readable run.json gives the full row (status, trigger, mode, metric, its page);
- a run known only to MLflow gets a row with what MLflow knows: the version it registered (tags
  `retrain.run_id`, `retrain.trigger`, `retrain.git_sha`, `metric.*`, whether it was promoted or rolled
  back) and the tracking runs tagged with its run id (a training run that registered nothing).
Rows are then put in time order to compute each metric's change and the champion's periods.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from markupsafe import Markup

from runner.production.registry import CHAMPION, Registry, TrackedRun, Version
from runner.records import RunRecord
from runner.report.charts import BAND_COLOURS, Band, Series, line_chart

NO_REPORT = "no_report"  # the status of a run known only from MLflow whose outcome MLflow does not say


@dataclass(frozen=True)
class Remembered:
    """What the MLflow store knows about past runs: every registered version and the tagged tracking runs."""

    versions: Sequence[Version] = ()
    tracked: Sequence[TrackedRun] = ()
    problem: str | None = None  # why MLflow could not be read, shown on the page
    logged: Sequence[RunRecord] = ()  # the run log kept with the store: every full run, refused ones too


@dataclass(frozen=True)
class HistoryRow:
    run_id: str
    started_at: str
    status: str
    trigger: str = "unknown"
    mode: str = "unknown"
    duration_s: float | None = None
    version: str | None = None  # the version this run registered (or found already registered)
    metric: float | None = None  # the key metric of this run's model
    champion_metric: float | None = None  # the champion's, as this run compared them
    champion: str | None = None  # the champion after this run
    has_page: bool = False
    source: str = "report"  # report | mlflow
    word: str = ""  # the outcome in a few words ("Promoted", "Refused: the data"...)
    colour: str = "grey"
    headline: str = ""  # the outcome in one sentence (on hover, and as the row's second line)
    notes: list[str] = field(default_factory=list)

    @property
    def css_status(self) -> str:
        return _ident(self.status)

    @property
    def css_trigger(self) -> str:
        return _ident(self.trigger)


def remembered(registry: Registry | None, log: Path | None = None) -> Remembered:
    """Read the registry's versions and tagged tracking runs, and the run log kept with the store (`log`, a
    folder of run.json copies); a store that cannot be read is a note on the page, never a failed run."""
    logged = [record for record, _ in read_run_folders(log, flat=True)[0]] if log is not None else []
    if registry is None:
        return Remembered(logged=logged)
    try:
        return Remembered(registry.versions_fast(), registry.tagged_runs(), logged=logged)
    except Exception as error:  # the history is a report: MLflow being unreadable must not fail the run
        return Remembered(problem=f"{type(error).__name__}: {str(error).strip()[:200]}", logged=logged)


def read_run_folders(
    reports_dir: Path, flat: bool = False
) -> tuple[list[tuple[RunRecord, bool]], list[tuple[str, str]]]:
    """(record, has index.html) for every run folder with a readable run.json, and the unreadable ones;
    `flat`: a folder of `<run_id>.json` records instead (the store's run log: no pages)."""
    found: list[tuple[RunRecord, bool]] = []
    unreadable: list[tuple[str, str]] = []
    if not reports_dir.is_dir():
        return found, unreadable
    for entry in sorted(reports_dir.iterdir()):
        run_json = entry if flat else entry / "run.json"
        if run_json.suffix != ".json" or not run_json.is_file():
            continue  # not a run folder, or a run that has not written its record yet
        try:
            record = RunRecord.from_json(json.loads(run_json.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            unreadable.append((entry.name, f"{type(exc).__name__}: {exc}"[:200]))
            continue
        found.append((record, not flat and (entry / "index.html").is_file()))
    return found, unreadable


def build_rows(
    records: Iterable[tuple[RunRecord, bool]], known: Remembered, metric: str | None
) -> list[HistoryRow]:
    """One row per run, oldest first, with the metric's change and the champion after each run."""
    by_version_run = {version.lineage("run_id"): version for version in known.versions}
    rows = {record.run_id: _row_from_record(record, has_page, metric) for record, has_page in records}
    for record in known.logged:  # a run whose folder is gone (CI), from the run log kept with the store
        rows.setdefault(record.run_id, _row_from_record(record, False, metric))
    for run_id, version in by_version_run.items():
        if run_id and run_id not in rows:
            rows[run_id] = _row_from_version(run_id, version, metric)
    for tracked in known.tracked:
        if tracked.run_id not in rows:
            said = f"trained (MLflow run {tracked.mlflow_run_id[:8]}), registered nothing"
            rows[tracked.run_id] = HistoryRow(
                run_id=tracked.run_id,
                started_at=tracked.started_at,
                status=NO_REPORT,
                mode=tracked.tags.get("mode", "unknown"),
                source="mlflow",
                word="Trained",
                headline=f"From MLflow: {said}",
                notes=[said],
            )
    ordered = sorted(rows.values(), key=lambda row: (row.started_at, row.run_id))
    return _with_changes_and_champions(ordered)


def _row_from_record(record: RunRecord, has_page: bool, metric: str | None) -> HistoryRow:
    from runner.report.outcome import outcome_of

    model = record.model
    outcome = outcome_of(record)
    key = next((line for line in outcome.metrics if line.name == metric), None) if metric else None
    return HistoryRow(
        run_id=record.run_id,
        started_at=record.started_at,
        status=record.status,
        trigger=record.trigger,
        mode=record.mode,
        duration_s=record.duration_s,
        version=model.version if model else None,
        metric=key.value if key else None,
        champion_metric=key.champion if key else None,
        champion=(model.champion_after if model else None) or "",  # "" = known: no change recorded
        has_page=has_page,
        word=outcome.word,
        colour=outcome.colour,
        headline=f"{outcome.headline}. {outcome.reason}",
    )


def _row_from_version(run_id: str, version: Version, metric: str | None) -> HistoryRow:
    promoted = version.lineage("promoted") or ""
    rolled_back = version.lineage("rolled_back")
    by_this_run = promoted.endswith(f"by run {run_id}")
    notes = [f"registered v{version.version}"]
    if by_this_run:
        notes.append("promoted to champion")
    if rolled_back:
        notes.append(f"rolled back: {rolled_back}")
    status = "failed" if rolled_back and by_this_run else ("succeeded" if by_this_run else NO_REPORT)
    word = "Rolled back" if rolled_back and by_this_run else ("Promoted" if by_this_run else "Registered")
    return HistoryRow(
        run_id=run_id,
        started_at=version.created_at,
        status=status,
        trigger=version.lineage("trigger") or "unknown",
        mode="full",  # only a full run writes to the registry
        version=version.version,
        metric=version.metrics.get(metric) if metric else None,
        champion=version.version if by_this_run and not rolled_back else None,
        source="mlflow",
        word=word,
        colour="red" if rolled_back and by_this_run else ("green" if by_this_run else "grey"),
        headline=f"From MLflow: {'; '.join(notes)}",
        notes=notes,
    )


def _with_changes_and_champions(rows: list[HistoryRow]) -> list[HistoryRow]:
    """The champion after each run, carried forward where a run (one known only from MLflow) did not say."""
    result: list[HistoryRow] = []
    champion: str | None = None
    for row in rows:
        if row.champion:  # this run left a known champion
            champion = row.champion
        result.append(replace(row, champion=champion))
    return result


# --- charts -------------------------------------------------------------------------------------------------
def runs_chart(rows: Sequence[HistoryRow], metric: str, title: str = "") -> Markup:
    """The key metric of each run's model and of the champion it was compared with, oldest first, over bands
    showing which version was champion."""
    measured = [row for row in rows if row.metric is not None]
    if not measured:
        return Markup("")
    name = title or metric
    labels = [row.started_at[5:16].replace("T", " ") for row in measured]
    bands = _periods([row.champion for row in measured])
    series = [
        Series(f"{name} of the run's model", [row.metric for row in measured], "#0969da"),
        Series("the champion's", [row.champion_metric for row in measured], "#2da44e", True),
    ]
    return line_chart(labels, series, title=f"{name} across runs", bands=bands, y_title=name)


def versions_chart(versions: Sequence[Version], metric: str, title: str = "") -> Markup:
    """The metric of each registered version; each version that served production is shaded, its band
    saying when it served (from its promotion to the next one's), the one serving now marked so."""
    ordered = sorted(versions, key=lambda version: int(version.version))
    if not any(metric in version.metrics for version in ordered):
        return Markup("")
    labels = [f"v{version.version}" for version in ordered]
    served = served_periods(ordered)
    bands = [
        Band(i, i, served[version.version], BAND_COLOURS[0 if CHAMPION in version.aliases else 1])
        for i, version in enumerate(ordered)
        if version.version in served
    ]
    values = [version.metrics.get(metric) for version in ordered]
    series = [Series(f"{title or metric} of the version", values, "#8250df")]
    name = title or metric
    return line_chart(labels, series, title=f"{name} across registered versions", bands=bands, y_title=name)


def served_periods(versions: Sequence[Version]) -> dict[str, str]:
    """When each promoted version served: "served 2026-03-02 to 2026-03-09" ("to now" for the champion)."""
    promoted = sorted(
        ((stamp[:10], version) for version in versions if (stamp := version.lineage("promoted") or "")),
        key=lambda item: (item[0], int(item[1].version)),
    )
    promoted = [(start, version) for start, version in promoted if not _rolled(version)]
    found: dict[str, str] = {}
    for index, (start, version) in enumerate(promoted):
        following = promoted[index + 1][0] if index + 1 < len(promoted) else "?"
        end = "now" if CHAMPION in version.aliases else following
        found[version.version] = f"served {start} to {end}"
    for version in versions:
        if CHAMPION in version.aliases and version.version not in found:
            found[version.version] = "serving now"
    return found


def _rolled(version: Version) -> bool:
    return bool(version.lineage("rolled_back"))


def _periods(champions: Sequence[str | None]) -> list[Band]:
    """Consecutive positions with the same champion, as labelled bands (none where it is unknown)."""
    bands: list[Band] = []
    start = 0
    for index in range(1, len(champions) + 1):
        if index == len(champions) or champions[index] != champions[start]:
            if champions[start]:
                colour = BAND_COLOURS[len(bands) % len(BAND_COLOURS)]
                bands.append(Band(start, index - 1, f"v{champions[start]} champion", colour))
            start = index
    return bands


def _ident(text: str) -> str:
    """A CSS class name for a status or trigger (what the filters select on)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", text) or "none"


def filter_values(rows: Sequence[HistoryRow], attribute: str) -> list[tuple[str, str, int]]:
    """(value, its CSS name, number of rows) for a filter, most frequent first."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[getattr(row, attribute)] = counts.get(getattr(row, attribute), 0) + 1
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [(value, _ident(value), n) for value, n in ordered]
