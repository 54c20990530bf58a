"""What the CLI shows while a run goes and when it ends (rich). Only the CLI uses this module.

On a terminal: a live table, one line per stage with its status and elapsed time. Elsewhere (CI logs): one
plain line per stage event, since a log cannot redraw.

Everything shown here may quote a user's text (a trigger, an error message, a gate): it is always a rich
`Text`, never a string rich would read as markup (`[bold]`, `:x:`).
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from runner.records import RunRecord, StageRecord

STYLE = {
    "pending": "dim",
    "running": "bold cyan",
    "succeeded": "green",
    "cached": "blue",
    "failed": "bold red",
    "gate_failed": "bold yellow",
    "skipped": "dim",
    "cancelled": "bold red",
}


class RunProgress:
    """An Observer of the pipeline that draws its progress."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.record: RunRecord | None = None
        self.started: dict[str, float] = {}
        self.live: Live | None = None

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.live is not None:
            self.live.stop()

    def run_started(self, record: RunRecord, run_dir: Path) -> None:
        self.record = record
        said = f" (trigger {record.trigger}, mode {record.mode})"
        title = Text.assemble((record.pipeline, "bold"), " run ", (record.run_id, "cyan"), said)
        self.console.print(title, soft_wrap=True)
        if self.console.is_terminal:
            self.live = Live(self, console=self.console, refresh_per_second=4, transient=True)
            self.live.start()

    def stage_started(self, stage: StageRecord) -> None:
        self.started[stage.name] = time.monotonic()
        if self.live is None:
            self.console.print(Text(f"  {stage.name}: running ..."))

    def stage_finished(self, stage: StageRecord) -> None:
        if self.live is None or stage.status != "skipped":
            line = Text(f"  {stage.name}: ")
            line.append(stage.status, style=STYLE[stage.status])
            line.append(f"  {_duration(stage)}  {_gates_cell(stage)}")
            self.console.print(line)

    def step(self, text: str) -> None:
        """A step outside the stages (the model's release, the new data): a plain line, markup off."""
        self.console.print(Text(f"  {text}"), soft_wrap=True)

    def __rich__(self) -> Table:
        table = Table(show_header=False, box=None, padding=(0, 2))
        if self.record is not None:
            for stage in self.record.stages.values():
                if stage.status in ("pending", "running"):
                    elapsed = (
                        time.monotonic() - self.started[stage.name] if stage.name in self.started else 0.0
                    )
                    shown = f"{elapsed:5.1f}s" if stage.status == "running" else ""
                    table.add_row(Text(stage.name), Text(stage.status, style=STYLE[stage.status]), shown)
        return table


def summary(record: RunRecord) -> Table:
    """The table printed when the run ends: stage, status, duration, gates."""
    table = Table(title=Text(f"{record.pipeline} · {record.run_id}"), title_justify="left")
    for column in ("stage", "status", "duration", "gates"):
        table.add_column(column)
    for stage in record.stages.values():
        status = Text(stage.status, style=STYLE[stage.status])
        table.add_row(Text(stage.name), status, Text(_duration(stage)), Text(_gates_cell(stage)))
    return table


PROBLEMS_SHOWN = 5


def problems(record: RunRecord) -> list[Text]:
    """What happened to the model, then one line per failed gate and failed stage, each whole (a log
    reader greps for them)."""
    lines = []
    recheck = record.champion_recheck
    if recheck is not None:
        verdict = "passed" if recheck.passed else "failed"
        said = f"champion v{recheck.version} checked again (a stopped run left it unchecked): {verdict}"
        lines.append(Text(f"{said}: {recheck.detail}", style="" if recheck.passed else "red"))
    if record.model is not None:
        from runner.report.pages import model_sentence

        lines.append(Text(model_sentence(record.model), style="red" if record.model.error else ""))
    if record.error:
        lines.append(Text(record.error, style="red"))
    lines.extend(Text(problem, style="yellow") for problem in record.warnings)
    for stage in record.stages.values():
        for gate in stage.failed_gates:
            lines.append(Text(f"gate failed in {stage.name}: {gate.expr}  ->  {gate.detail}", style="yellow"))
        if stage.failed_gates:
            lines.extend(Text(f"  {line}", style="yellow") for line in listed_problems(stage))
        if stage.error:
            lines.append(Text(stage.error, style="red"))
    return lines


def listed_problems(stage: StageRecord, limit: int = PROBLEMS_SHOWN) -> list[str]:
    """The first rows of a stage's `problems` table scrap (a data check's findings: file, rule, column,
    count, examples), one line each, so that the log names what to fix without opening the report."""
    table = stage.scraps.get("problems")
    if not isinstance(table, dict) or table.get("type") != "table":
        return []
    columns = [str(column) for column in table.get("columns", [])]
    rows = [dict(zip(columns, row, strict=False)) for row in table.get("rows", [])]
    lines = []
    for row in rows[:limit]:
        where = ", ".join(str(row[key]) for key in ("file", "column") if row.get(key))
        rest = {key: value for key, value in row.items() if key not in ("file", "column")}
        lines.append(f"{where}: " + "; ".join(f"{key} {value}" for key, value in rest.items() if value != ""))
    if len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more in the report")
    return lines


def data_line(record: RunRecord) -> Text | None:
    """What became of the run's new data (accepted, quarantined, kept), when the pipeline declares it."""
    data = record.data
    if data is None or data.action in ("none", "pending"):
        return None
    text = Text(f"new data {data.action}: ")
    text.stylize({"accepted": "green", "quarantined": "bold red"}.get(data.action, "yellow"), 0, len(text))
    text.append(data.detail)
    return text


def outcome_line(record: RunRecord, run_dir: Path, exit_code: int) -> Text:
    """The last line of a run: what happened and where the report is."""
    index = run_dir / "index.html"
    text = Text(f"{record.status} in {record.duration_s:.1f}s (exit {exit_code}); report: ")
    text.append(_shown_path(index), style="bold")
    text.stylize(STYLE.get(record.status, ""), 0, len(record.status))
    return text


def _duration(stage: StageRecord) -> str:
    return f"{stage.duration_s:.1f}s" if stage.status not in ("skipped", "pending") else "-"


def _gates_cell(stage: StageRecord) -> str:
    reused = f"from run {stage.cached_from}" if stage.cached_from else ""
    if not stage.gates:
        return stage.skip_reason or reused
    passed = sum(gate.passed for gate in stage.gates)
    return f"{passed}/{len(stage.gates)} gates passed" + (f", {reused}" if reused else "")


def _shown_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
