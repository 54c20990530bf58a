"""What the CLI shows while a run goes and when it ends (rich). Only the CLI uses this module.

On a terminal: a live table, one line per stage with its status and elapsed time. Elsewhere (CI logs): one
plain line per stage event, since a log cannot redraw.

Everything shown here may quote a user's text (a trigger, an error message, a gate): it is always a rich
`Text`, never a string rich would read as markup (`[bold]`, `:x:`).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from runner.records import RunRecord, StageRecord
from runner.report.outcome import Outcome, facts

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
    """An Observer of the pipeline that draws its progress. The warnings the runner's own libraries raise
    meanwhile are held (`warnings`) and shown after the table, instead of breaking into it."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.record: RunRecord | None = None
        self.started: dict[str, float] = {}
        self.live: Live | None = None
        self.warnings: list[str] = []
        self._held = warnings.catch_warnings(record=True)

    def __enter__(self) -> RunProgress:
        caught = self._held.__enter__()
        warnings.simplefilter("default")
        self._caught = caught
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.live is not None:
            self.live.stop()
        found = self._caught or []
        self._held.__exit__(kind, error, tb)
        self.warnings = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in found))

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
        if self.live is None:  # a log: one line per stage; a terminal's table says it at the end
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


def summary(outcome: Outcome) -> Table:
    """The table printed when the run ends: stage, status, duration, gates or why it did not run."""
    table = Table(title=Text(f"{outcome.pipeline} · {outcome.run_id}"), title_justify="left")
    for column in ("stage", "status", "duration", "gates"):
        table.add_column(column, justify="right" if column == "duration" else "left")
    for line in outcome.stages:
        status = "cancelled" if line.word == "cancelled" else line.status
        word = Text(line.word, style=STYLE[status])
        table.add_row(Text(line.name), word, Text(line.duration), Text(line.gates or line.note))  # no markup
    return table


def final_lines(outcome: Outcome, run_dir: Path, exit_code: int) -> list[Text]:
    """After the table, each fact once, the most important last: what the stages wrote outside their cells,
    the facts (metrics against the champion, decision, smoke check, data, what changed, commit), what broke
    (failed gates, the data's broken rules, the error), then the headline and the reason; the last line says
    where the report is. A log reader greps for them: none is wrapped."""
    colour = {"green": "green", "amber": "yellow", "red": "bold red", "grey": "dim"}[outcome.colour]
    lines = output_lines(outcome)
    skip = {"Outcome", "Gates", "Started"}
    skip |= {"Decision"} if outcome.decision == outcome.reason else set()
    shown = [fact for fact in facts(outcome) if fact.label not in skip]
    lines += [Text(f"  {fact.label}: {fact.text}") for fact in shown]
    for gate in outcome.failed_gates[1:]:  # the first is the reason
        lines.append(Text(f"  gate failed in {gate.stage}: {gate.expr}  ->  {gate.detail}", style="yellow"))
    if outcome.quarantine is not None:
        problems = outcome.quarantine.problems
        if problems and outcome.reason.startswith(problems[0].text):  # the first is the reason
            problems = problems[1:]
        lines += [Text(f"    {problem.text}", style="yellow") for problem in problems]
        if outcome.quarantine.more:
            lines.append(Text(f"    ... and {outcome.quarantine.more} more in the report", style="yellow"))
    if outcome.failure is not None and outcome.failure.evalue:
        lines.append(Text(f"  {outcome.failure.evalue}", style="red"))
    lines += [Text(f"{outcome.icon} {outcome.headline}", style=colour), Text(f"  {outcome.reason}")]
    lines.append(outcome_line(outcome, run_dir, exit_code))
    return lines


OUTPUT_SHOWN = 3  # lines of a stage's output outside its cells shown under the table (the page has them all)


def output_lines(outcome: Outcome) -> list[Text]:
    """What the stages' kernels wrote outside their cells, under their names: a few lines each, dimmed (all
    of them are on the run page), instead of lines breaking into the live table."""
    found: list[Text] = []
    for line in outcome.stages:
        if not line.output:
            continue
        more = f", the last {OUTPUT_SHOWN} here" if len(line.output) > OUTPUT_SHOWN else ""
        said = f"  {line.name} wrote {len(line.output)} lines outside its cells{more}:"
        found.append(Text(said, style="dim"))
        found += [Text(f"    {text}", style="dim") for text in line.output[-OUTPUT_SHOWN:]]
    return found


def outcome_line(outcome: Outcome, run_dir: Path, exit_code: int) -> Text:
    """The last line of a run: what happened and where the report is."""
    index = run_dir / "index.html"
    text = Text(f"{outcome.status} in {outcome.duration} (exit {exit_code}); report: ")
    text.append(_shown_path(index), style="bold")
    text.stylize(STYLE.get(outcome.status, ""), 0, len(outcome.status))
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
