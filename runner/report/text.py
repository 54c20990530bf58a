"""The outcome as plain text: the console when no webhook is configured, the email's text part, the step
summary's copy of the message. Same facts, same words as every other channel (outcome.py)."""

from __future__ import annotations

from runner.report.outcome import Outcome, facts


def text_message(outcome: Outcome, *, run_url: str = "", artifact_url: str = "", report: str = "") -> str:
    lines = [f"{outcome.icon} {outcome.headline}", "", outcome.reason, ""]
    for fact in facts(outcome):
        lines.append(f"{fact.label}: {fact.text}" + (f" ({fact.url})" if fact.url else ""))
    lines += ["", *stage_table(outcome)]
    if outcome.failed_gates:
        lines += ["", "Failed gates:"]
        lines += [f"  - {gate.stage}: `{gate.expr}`: {gate.detail}" for gate in outcome.failed_gates]
    if outcome.quarantine is not None and outcome.quarantine.problems:
        lines += ["", "Broken rules of the new data:"]
        lines += [f"  - {problem.text}" for problem in outcome.quarantine.problems]
        if outcome.quarantine.more:
            lines.append(f"  ... and {outcome.quarantine.more} more in the report")
    if outcome.failure is not None:
        lines += ["", f"Error in stage {outcome.failure.stage}: {outcome.failure.message}"]
        lines += [f"  {outcome.failure.evalue}"] if outcome.failure.evalue else []
    named = [("Workflow run", run_url or outcome.run_url), ("Artifact", artifact_url), ("Report", report)]
    lines += ["", *(f"{name}: {where}" for name, where in named if where)]
    lines.append(f"Run {outcome.run_id} (trigger {outcome.trigger}, mode {outcome.mode}, {outcome.duration})")
    return "\n".join(lines) + "\n"


def stage_table(outcome: Outcome) -> list[str]:
    """stage, status, duration, gates: aligned columns."""
    rows = [("stage", "status", "duration", "gates")]
    rows += [(line.name, line.word, line.duration, line.gates) for line in outcome.stages]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
