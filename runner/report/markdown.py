"""The outcome as GitHub-flavoured markdown: the job's step summary, and the pull request's comment a
reviewer reads (challenger against champion, the decision the run would take, what changed, a chart).

GitHub renders Mermaid diagrams in markdown, comments included: the chart needs no image host.
"""

from __future__ import annotations

from runner.report.outcome import NOT_RUN, Outcome, Predictions, facts

MAX_COMMENT = 60_000  # GitHub refuses a comment over 65,536 characters
MAX_CHART_POINTS = 26


def step_summary(outcome: Outcome) -> str:
    """For $GITHUB_STEP_SUMMARY: the headline, the reason, the facts, the metrics, stages, what broke."""
    lines = [f"### {outcome.icon} {cell(outcome.headline)}", "", cell(outcome.reason), ""]
    lines += fact_table(outcome)
    lines += metric_table(outcome)
    lines += ["| stage | status | duration | gates |", "| --- | --- | ---: | ---: |"]
    lines += [f"| {cell(s.name)} | {s.word} | {s.duration} | {s.gates or NOT_RUN} |" for s in outcome.stages]
    lines += _problems(outcome)
    # the run's folder is uploaded as `reports-<run id>`: the id finds it among the job's artifacts
    lines += ["", f"Run `{outcome.run_id}`, mode `{outcome.mode}`, trigger `{outcome.trigger}`"]
    return "\n".join(lines) + "\n"


def pr_comment(outcome: Outcome, marker: str, *, run_url: str = "", artifact_url: str = "") -> str:
    """One comment per pull request, found again by `marker` and edited in place on each push."""
    lines = [marker, f"### {outcome.icon} {cell(outcome.pipeline)}: {cell(outcome.word)}", ""]
    lines += [cell(outcome.headline), "", cell(outcome.reason), ""]
    lines += fact_table(outcome)
    lines += metric_table(outcome, ours="challenger")
    chart = mermaid_chart(outcome.predictions, outcome)
    if chart:
        lines += [
            "<details open><summary>Actual against predicted</summary>",
            "",
            *chart,
            "",
            "</details>",
            "",
        ]
    gates = [(s.name, s.gates) for s in outcome.stages if s.gates]
    if gates:
        lines += [f"**Gates: {outcome.gates_passed} of {outcome.gates_total} passed**", ""]
    lines += _problems(outcome)
    links = [
        f"[{text}]({url})"
        for text, url in (("workflow run", run_url or outcome.run_url), ("reports", artifact_url))
        if url
    ]
    registry = ": nothing was registered or deployed" if outcome.mode == "evaluate" else ""
    lines += ["", " · ".join([f"Run `{outcome.run_id}`, mode `{outcome.mode}`{registry}", *links])]
    body = "\n".join(lines) + "\n"
    return body if len(body) <= MAX_COMMENT else body[:MAX_COMMENT] + "\n\n… (cut: see the reports)\n"


def fact_table(outcome: Outcome) -> list[str]:
    rows = [f"| {cell(fact.label)} | {_linked(fact.text, fact.url)} |" for fact in facts(outcome)]
    return ["| | |", "| --- | --- |", *rows, ""]


def metric_table(outcome: Outcome, ours: str = "this run") -> list[str]:
    """This run's model (`ours`: a pull request's is the challenger) against the champion: the metrics worth
    showing, in people's numbers."""
    if not outcome.metrics:
        return []
    champion = f"champion v{outcome.champion_before}" if outcome.champion_before else "champion"
    lines = [f"| metric | {ours} | {cell(champion)} | change |", "| --- | ---: | ---: | ---: |"]
    for line in outcome.metrics:
        mark = "" if line.better is None or not line.key else (" ✅" if line.better else " 🔻")
        change = f"{line.change} ({line.relative})" if line.change and line.relative else line.change
        theirs = line.champion_shown or NOT_RUN
        lines.append(f"| {cell(line.title)} | {line.shown} | {theirs} | {change or NOT_RUN}{mark} |")
    return [*lines, ""]


def mermaid_chart(predictions: Predictions | None, outcome: Outcome) -> list[str]:
    """A Mermaid line chart (GitHub renders it): actual, this run's predictions, the champion's."""
    if predictions is None or not predictions.periods:
        return []
    take = slice(-MAX_CHART_POINTS, None)
    series = [("actual", predictions.actual[take]), ("this run", predictions.prediction[take])]
    if predictions.champion is not None:
        series.append(("champion", predictions.champion[take]))
    values = [value for _, points in series for value in points if value is not None]
    if not values:
        return []
    periods = ", ".join(f'"{period[:10]}"' for period in predictions.periods[take])
    names = ", ".join(name for name, _ in series)
    lines = ["```mermaid", "xychart-beta", f'    title "{names}"', f"    x-axis [{periods}]"]
    lines.append(
        f'    y-axis "{cell(outcome.numbers.title or "value")}" {min(values):.6g} --> {max(values):.6g}'
    )
    for _, points in series:
        lines.append(
            "    line [" + ", ".join(f"{value:.6g}" if value is not None else "0" for value in points) + "]"
        )
    return [*lines, "```"]


def cell(text: str) -> str:
    """Safe in a table cell and on one line."""
    return text.replace("|", "\\|").replace("\n", " ")


def _linked(text: str, url: str) -> str:
    return f"[{cell(text)}]({url})" if url.startswith(("http://", "https://")) else cell(text)


def _problems(outcome: Outcome) -> list[str]:
    lines: list[str] = []
    if outcome.failed_gates:
        lines += ["", "**Failed gates**", ""]
        lines += [f"- {cell(g.stage)}: `{g.expr}`: {cell(g.detail)}" for g in outcome.failed_gates]
    if outcome.quarantine is not None and outcome.quarantine.problems:
        lines += ["", f"**Quarantined in `{outcome.quarantine.folder}`: broken rules**", ""]
        lines += [f"- {cell(problem.text)}" for problem in outcome.quarantine.problems]
        if outcome.quarantine.more:
            lines.append(f"- … and {outcome.quarantine.more} more in the report")
    if outcome.failure is not None:
        said = outcome.failure.message + (f"\n{outcome.failure.evalue}" if outcome.failure.evalue else "")
        lines += ["", f"**Error in stage {cell(outcome.failure.stage)}**", "", "```text", said, "```"]
    return lines
