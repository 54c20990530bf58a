"""The outcome of a run, computed once from its record: what every surface says about it.

The run page, the history's row, the terminal, Slack, the email, the step summary and the pull request's
comment each draw this one object (their renderers live beside it), so that they cannot disagree: the same
state, with the same word and colour; the same key metric in its declared format; the same reason; the same
quarantined files and broken rules; the same changes since the champion.

    state           word                                colour  when
    promoted        Promoted                            green   the new model is the champion
    promoted_worse  Promoted, worse within the margin   amber   promoted, though worse than the champion
    held            Held                                amber   registered or evaluated; the champion stays
    evaluated       Evaluated                           green   a pull request's run: it would be promoted
    unchanged       Unchanged                           grey    the same model is already registered
    succeeded       Succeeded                           green   every stage passed (no model section)
    refused_data    Refused: the data                   red     the data stage's gates refused the drops
    refused_model   Refused: the model                  red     a model's gate refused it
    failed          Failed                              red     a stage, the registry or a smoke check failed
    cancelled       Cancelled                           grey    Ctrl-C or SIGTERM (a cancelled workflow)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from runner.records import RunRecord, StageRecord
from runner.report.numbers import Numbers

State = Literal[
    "promoted",
    "promoted_worse",
    "held",
    "evaluated",
    "unchanged",
    "succeeded",
    "refused_data",
    "refused_model",
    "failed",
    "cancelled",
    "running",
]
Colour = Literal["green", "amber", "red", "grey"]
WORDS: dict[str, tuple[str, Colour, str]] = {  # state -> (word, colour, icon)
    "promoted": ("Promoted", "green", "✅"),
    "promoted_worse": ("Promoted, worse within the margin", "amber", "⚠️"),
    "held": ("Held", "amber", "⏸️"),
    "evaluated": ("Evaluated", "green", "🔎"),
    "unchanged": ("Unchanged", "grey", "♻️"),
    "succeeded": ("Succeeded", "green", "✅"),
    "refused_data": ("Refused: the data", "red", "🚫"),
    "refused_model": ("Refused: the model", "red", "🚧"),
    "failed": ("Failed", "red", "❌"),
    "cancelled": ("Cancelled", "grey", "⏹️"),
    "running": ("Running", "grey", "⏳"),
}
PROBLEMS_SHOWN = 5
PREDICTION_SCRAPS = (  # (scrap, (this run's column, the champion's)); the second is an older notebook's
    ("predictions", ("prediction", "champion")),
    ("forecast_by_week", ("forecast", "champion_forecast")),
)
NOT_RUN = "\u2013"  # an en dash: the duration of a stage that did not run


@dataclass(frozen=True)
class MetricLine:
    """One metric of this run's model beside the champion's, in people's numbers."""

    name: str
    title: str  # "WAPE"; another metric's own name
    value: float | None
    champion: float | None
    shown: str  # "6.2%"
    champion_shown: str  # "6.5%" ("" without a champion)
    change: str  # "-0.3 pp" against the champion ("" without one)
    relative: str  # "-4.6%"
    better: bool | None  # is this run's model better (None: equal, or unknown)
    key: bool = False


@dataclass(frozen=True)
class ProblemLine:
    """A broken rule of the data: what, where, how often, examples."""

    rule: str
    meaning: str
    column: str
    file: str
    count: int
    examples: str

    @property
    def text(self) -> str:
        where = ", ".join(part for part in (self.file, self.column) if part)
        said = f"{self.rule} ({self.meaning})" if self.meaning and self.meaning != self.rule else self.rule
        examples = f": {self.examples}" if self.examples else ""
        return f"{where}: {said}, {self.count} time{'s' if self.count != 1 else ''}{examples}"


@dataclass(frozen=True)
class Quarantine:
    folder: str  # where the refused drops went
    files: list[str]  # the drops, as they were named in data/new
    problems: list[ProblemLine]
    more: int = 0  # problems beyond those listed


@dataclass(frozen=True)
class ParamChange:
    name: str
    before: str  # "" when the champion's run did not set it
    after: str


@dataclass(frozen=True)
class StageLine:
    name: str
    status: str  # its record's status
    word: str  # "succeeded", "reused from cache", "skipped"...
    duration: str  # "3.7 s"; NOT_RUN when it did not run
    gates: str  # "2/3 passed"; "" without gates
    note: str  # why it was skipped, where its results came from
    output: list[str]  # what its kernel wrote outside its cells (warnings, a library's messages)


@dataclass(frozen=True)
class GateLine:
    stage: str
    expr: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class FailureLine:
    stage: str
    message: str  # one line a person can act on, the failing cell included
    evalue: str  # the error's own words, when the message does not say them


@dataclass(frozen=True)
class Predictions:
    """Per period, the actual values beside this run's predictions and the champion's (`predictions`)."""

    periods: list[str]
    actual: list[float | None]
    prediction: list[float | None]
    champion: list[float | None] | None


@dataclass(frozen=True)
class Outcome:
    pipeline: str
    run_id: str
    status: str
    mode: str
    trigger: str
    state: State
    word: str
    colour: Colour
    icon: str
    headline: str  # the outcome in one line, the model and its key metric first
    reason: str  # why, in one sentence
    numbers: Numbers
    key: MetricLine | None  # the key metric against the champion
    metrics: list[MetricLine]  # the metrics worth showing, key first
    decision: str  # the promotion policy's sentence (interval and all), "" without one
    version: str | None  # the version this run registered (or found registered)
    champion_before: str | None
    champion_after: str | None
    serving: str  # who serves production now, in words
    smoke_check: str  # "" when none ran
    data_action: str  # accepted | quarantined | kept | none
    data_detail: str
    quarantine: Quarantine | None
    changes: list[ParamChange]
    actor: str
    commit: str  # the short sha
    commit_url: str
    commit_message: str
    pr: str  # "#12 Tune the learning rate", "" without one
    pr_url: str
    run_url: str
    stages: list[StageLine]
    failed_gates: list[GateLine]
    gates_passed: int
    gates_total: int
    failure: FailureLine | None
    duration: str
    predictions: Predictions | None = None
    other_output: tuple[str, ...] = ()  # what the kernel server and its workers wrote (MLflow's log lines)
    recheck: str = ""  # the champion's smoke check done again (a stopped run had left it unchecked)
    warnings: tuple[str, ...] = ()  # what went wrong without changing the outcome


def outcome_of(record: RunRecord) -> Outcome:
    """Everything the surfaces say about a run, from its record alone (a later `retrain report` or
    `retrain notify` computes the same)."""
    numbers = Numbers(record.key_metric)
    metrics = metric_lines(record, numbers)
    key = next((line for line in metrics if line.key), None)
    state = _state(record, key)
    word, colour, icon = WORDS[state]
    gates = [(stage.name, gate) for stage in record.stages.values() for gate in stage.gates]
    failed = [GateLine(name, gate.expr, gate.passed, gate.detail) for name, gate in gates if not gate.passed]
    model = record.model
    outcome = Outcome(
        pipeline=record.pipeline,
        run_id=record.run_id,
        status=record.status,
        mode=record.mode,
        trigger=record.trigger,
        state=state,
        word=word,
        colour=colour,
        icon=icon,
        headline="",
        reason="",
        numbers=numbers,
        key=key,
        metrics=metrics,
        decision=model.decision.sentence if model and model.decision else "",
        version=model.version if model else None,
        champion_before=model.champion_before if model else None,
        champion_after=model.champion_after if model else None,
        serving=_serving(record),
        smoke_check=(
            f"{'passed' if model.smoke_check.passed else 'failed'}: {model.smoke_check.detail}"
            if model and model.smoke_check
            else ""
        ),
        data_action=record.data.action if record.data else "none",
        data_detail=record.data.detail if record.data else "",
        quarantine=_quarantine(record),
        changes=_param_changes(record),
        actor=record.context.actor,
        commit=(record.git_sha or "")[:7],
        commit_url=record.context.commit_url,
        commit_message=record.context.commit_message,
        pr=_pr(record),
        pr_url=record.context.pr_url,
        run_url=record.context.run_url,
        stages=[_stage_line(stage) for stage in record.stages.values()],
        failed_gates=failed,
        gates_passed=sum(gate.passed for _, gate in gates),
        gates_total=len(gates),
        failure=_failure(record),
        duration=duration_text(record.duration_s),
        predictions=_predictions(record),
        other_output=tuple(record.output),
        recheck=_recheck(record),
        warnings=tuple(record.warnings),
    )
    return _with_words(outcome, record)


def _recheck(record: RunRecord) -> str:
    found = record.champion_recheck
    if found is None:
        return ""
    verdict = "passed" if found.passed else "failed"
    return f"v{found.version}, left unchecked by a stopped run, checked again: {verdict}: {found.detail}"


def metric_lines(record: RunRecord, numbers: Numbers) -> list[MetricLine]:
    """The metrics worth showing (the key metric and `show_metrics`), this run's model beside the champion's;
    every numeric metric when the pipeline declares no key metric."""
    model = record.model
    mine = dict(model.metrics) if model and model.metrics else _measured(record)
    theirs = dict(model.champion_metrics) if model else _champion_measured(record)
    names = numbers.shown or sorted(mine)
    lines = []
    for name in names:
        if name not in mine:
            continue
        value, before = mine[name], theirs.get(name)
        lines.append(
            MetricLine(
                name=name,
                title=numbers.title_of(name),
                value=value,
                champion=before,
                shown=numbers.value(value, name),
                champion_shown=numbers.value(before, name) if before is not None else "",
                change=numbers.change(value, before, name),
                relative=numbers.relative(value, before),
                better=numbers.better(value, before) if name == numbers.name else None,
                key=name == numbers.name,
            )
        )
    return lines


def duration_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


# --- how each part is found ---------------------------------------------------------------------------------
def _state(record: RunRecord, key: MetricLine | None) -> State:
    model, problem = record.model, record.first_problem
    if record.status == "cancelled":
        return "cancelled"
    if record.status == "running":
        return "running"
    if record.status == "gate_failed" and problem is not None:
        data_stage = record.data is not None and record.data.action == "quarantined"
        return "refused_data" if data_stage else "refused_model"
    if record.status == "gate_failed" and _refused_by_policy(record):
        return "refused_model"
    if record.status != "succeeded" or (model is not None and model.error):
        return "failed"
    if model is None:
        return "succeeded"
    decision = model.decision
    if record.mode != "full":
        return "held" if decision is not None and decision.verdict != "promote" else "evaluated"
    if model.promoted:
        worse = (decision is not None and decision.worse) or (key is not None and key.better is False)
        return "promoted_worse" if worse else "promoted"
    if model.action == "unchanged" and model.champion_after == model.version:
        return "unchanged"
    return "held"


def _refused_by_policy(record: RunRecord) -> bool:
    model = record.model
    return model is not None and model.decision is not None and model.decision.verdict == "refuse"


def _with_words(outcome: Outcome, record: RunRecord) -> Outcome:
    from dataclasses import replace

    return replace(outcome, headline=_headline(outcome, record), reason=_reason(outcome, record))


def _headline(outcome: Outcome, record: RunRecord) -> str:
    """ "demand-forecast v13 retrained and deployed, WAPE 7.9% (was 8.4%)" and its kin, one per state."""
    model = record.model
    who = f"{model.name} v{model.version}" if model and model.version else outcome.pipeline
    key = outcome.key
    measured = ""
    if key is not None:
        was = (
            f" (was {key.champion_shown})"
            if outcome.state.startswith("promoted")
            else (f" (champion {key.champion_shown})")
        )
        measured = f", {key.title} {key.shown}" + (was if key.champion_shown else "")
    state = outcome.state
    if state == "promoted":
        return f"{who} retrained and deployed{measured}"
    if state == "promoted_worse":
        return f"{who} retrained and deployed, worse than the champion within the margin{measured}"
    if state == "held":
        after = outcome.champion_after
        champion = f"v{after} stays the champion" if after else "no champion"
        return f"{who} held: {champion}{measured}"
    if state == "evaluated":
        return f"{outcome.pipeline}: the challenger would be promoted{measured}"
    if state == "unchanged":
        return f"{who} unchanged: same data, code and parameters as the champion{measured}"
    if state == "succeeded":
        return f"{outcome.pipeline}: succeeded"
    if state == "refused_data":
        files = outcome.quarantine.files if outcome.quarantine else []
        named = f"{len(files)} file{'s' if len(files) != 1 else ''} quarantined" if files else "data refused"
        return f"{outcome.pipeline}: new data refused, {named}; {outcome.serving}"
    if state == "refused_model":
        gate = outcome.failed_gates[0] if outcome.failed_gates else None
        by = f" by `{gate.expr}`" if gate else ""
        if gate is None and model is not None and model.decision is not None:
            by = f" by the promotion policy ({model.decision.policy.replace('_', '-')})"
        return f"{outcome.pipeline}: new model refused{by}{measured}; {outcome.serving}"
    if state == "failed":
        where = f" at {outcome.failure.stage}" if outcome.failure else ""
        return f"{outcome.pipeline}: failed{where}; {outcome.serving}"
    if state == "cancelled":
        return f"{outcome.pipeline}: cancelled; {outcome.serving}"
    return f"{outcome.pipeline}: {outcome.word.lower()}"


def _reason(outcome: Outcome, record: RunRecord) -> str:
    """Why, in one sentence."""
    model, state = record.model, outcome.state
    if outcome.decision and state in ("promoted", "promoted_worse", "held", "evaluated"):
        return outcome.decision
    if outcome.decision and state == "refused_model" and _refused_by_policy(record):
        return outcome.decision
    if state == "refused_data" and outcome.quarantine is not None and outcome.quarantine.problems:
        # the broken rule and where it is, which is what someone fixing the file needs; not the gate's sum
        quarantine = outcome.quarantine
        more = len(quarantine.problems) - 1 + quarantine.more
        extra = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        return f"{quarantine.problems[0].text}{extra}."
    if state in ("refused_data", "refused_model") and outcome.failed_gates:
        gate = outcome.failed_gates[0]
        more = len(outcome.failed_gates) - 1
        extra = f" (and {more} more gate{'s' if more > 1 else ''})" if more else ""
        return f"Gate `{gate.expr}` in stage {gate.stage}: {gate.detail}{extra}."
    if state == "failed" and outcome.failure is not None:
        return f"Stage {outcome.failure.stage} failed: {outcome.failure.message}."
    if state == "failed" and model is not None and model.error:
        return f"{model.error}."
    if state == "failed" and record.error:
        return f"{record.error[:1].upper()}{record.error[1:]}."
    if state == "running":
        finished = sum(line.status not in ("pending", "running") for line in outcome.stages)
        return f"Running: {finished} of {len(outcome.stages)} stages done."
    if state == "cancelled":
        if outcome.failure is not None:
            return f"Cancelled during stage {outcome.failure.stage}: {outcome.failure.message}."
        running = [line.name for line in outcome.stages if line.status in ("running", "failed")]
        return f"Cancelled during stage {running[0]}." if running else "Cancelled before any stage ran."
    if state == "promoted":
        key = outcome.key
        if key is not None and key.better:
            change = f"{key.title} {key.change} against the champion"
            return f"Every gate passed and the new model is better: {change}."
        return "Every gate passed." if outcome.champion_before else "Every gate passed: the first champion."
    if state == "promoted_worse":
        key = outcome.key
        change = f" ({key.title} {key.change})" if key is not None and key.change else ""
        return f"Every gate passed, but the new model is worse than the champion{change}, within the margin."
    if state == "held" and model is not None:
        return model.detail[:1].upper() + model.detail[1:] + "." if model.detail else "The champion stays."
    if state == "evaluated":
        return f"Mode {record.mode}: every gate passed; the registry is left as it is."
    if state == "unchanged" and model is not None:
        return f"Version {model.version} already holds this model: nothing was registered or deployed."
    cached = sum(line.status == "cached" for line in outcome.stages)
    if cached == len(outcome.stages) and cached:
        # a rerun with nothing changed: say so, or the page reads like a fresh success
        return f"Nothing changed: all {cached} stages reused from cache, every gate as it was."
    if cached:
        return f"Every stage passed its gates ({cached} reused from cache)."
    return "Every stage passed its gates."


def _serving(record: RunRecord) -> str:
    model = record.model
    if model is None:
        return "no model is registered by this pipeline"
    champion = model.champion_after
    if champion is None:
        return "no model serves production yet"
    if model.promoted and champion == model.version:
        return f"v{champion} now serves production"
    return f"v{champion} still serves production"


def _measured(record: RunRecord) -> dict[str, float]:
    """The numbers the model's stage recorded, when the run did not reach the registry (a refused model)."""
    for stage in reversed(record.stages.values()):
        if isinstance(stage.scraps.get("champion"), dict) or (
            record.key_metric is not None and record.key_metric.name in stage.scraps
        ):
            return _numbers(stage.scraps)
    return {}


def _champion_measured(record: RunRecord) -> dict[str, float]:
    for stage in reversed(record.stages.values()):
        found = stage.scraps.get("champion")
        if isinstance(found, dict) and "error" not in found:
            return _numbers(found)
    return {}


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    import math

    return {
        key: float(value)
        for key, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def _quarantine(record: RunRecord) -> Quarantine | None:
    data = record.data
    if data is None or data.action != "quarantined":
        return None
    rows = _problem_rows(record)
    problems = [
        ProblemLine(
            rule=str(row.get("rule", "")),
            meaning=str(row.get("meaning", "") or ""),
            column=str(row.get("column", "") or ""),
            file=str(row.get("file", "") or ""),
            count=int(row.get("count") or 1),
            examples=str(row.get("examples", "") or ""),
        )
        for row in rows
    ]
    files = [drop.rsplit("/", 1)[-1] for drop in data.drops]
    more = max(0, len(problems) - PROBLEMS_SHOWN)
    return Quarantine(data.folder or "", files, problems[:PROBLEMS_SHOWN], more)


def _problem_rows(record: RunRecord) -> list[dict[str, Any]]:
    for stage in record.stages.values():
        table = stage.scraps.get("problems")
        if isinstance(table, dict) and isinstance(table.get("columns"), list):
            columns = [str(name) for name in table["columns"]]
            rows = [row for row in table.get("rows", []) if isinstance(row, list)]
            return [dict(zip(columns, row, strict=False)) for row in rows]
    return []


def _predictions(record: RunRecord) -> Predictions | None:
    """The `predictions` scrap (`forecast_by_week`, an older notebook's name), as series."""
    for name, columns in PREDICTION_SCRAPS:
        for stage in record.stages.values():
            table = stage.scraps.get(name)
            if not (isinstance(table, dict) and isinstance(table.get("columns"), list)):
                continue
            heads = [str(column) for column in table["columns"]]
            found = [row for row in table.get("rows", []) if isinstance(row, list)]
            rows = [dict(zip(heads, row, strict=False)) for row in found]
            if not rows or "actual" not in heads or columns[0] not in heads:
                return None
            first = heads[0]
            return Predictions(
                periods=[str(row.get(first, "")) for row in rows],
                actual=[_number(row.get("actual")) for row in rows],
                prediction=[_number(row.get(columns[0])) for row in rows],
                champion=[_number(row.get(columns[1])) for row in rows] if columns[1] in heads else None,
            )
    return None


def _number(value: Any) -> float | None:
    import math

    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _param_changes(record: RunRecord) -> list[ParamChange]:
    """The pipeline-wide parameters this run had that differ from the champion's run."""
    model = record.model
    if model is None or not model.champion_params:
        return []
    before, after = model.champion_params, record.params
    changed = sorted(name for name in {*before, *after} if before.get(name) != after.get(name))
    return [ParamChange(name, _shown(before.get(name)), _shown(after.get(name))) for name in changed]


def _shown(value: Any) -> str:
    return "" if value is None else str(value)


def _pr(record: RunRecord) -> str:
    context = record.context
    if context.pr_number is None:
        return ""
    return f"#{context.pr_number}" + (f" {context.pr_title}" if context.pr_title else "")


def _stage_line(stage: StageRecord) -> StageLine:
    ran = stage.status not in ("skipped", "pending")
    if stage.status == "failed" and stage.failure is not None and stage.failure.kind == "cancelled":
        word = "cancelled"
    else:
        word = {"cached": "reused from cache", "gate_failed": "refused by a gate"}.get(
            stage.status, stage.status.replace("_", " ")
        )
    gates = f"{len(stage.gates) - len(stage.failed_gates)}/{len(stage.gates)} passed" if stage.gates else ""
    note = stage.skip_reason or (f"from run {stage.cached_from}" if stage.cached_from else "")
    took = duration_text(stage.duration_s) if ran else NOT_RUN
    return StageLine(stage.name, stage.status, word, took, gates, note, list(stage.output))


def _failure(record: RunRecord) -> FailureLine | None:
    problem = record.first_problem
    if problem is None or problem.status != "failed":
        return None
    failure = problem.failure
    if failure is None:
        return FailureLine(problem.name, problem.error or "no error recorded", "")
    evalue = failure.evalue or ""
    extra = evalue if failure.kind != "error" and evalue and evalue not in failure.message else ""
    return FailureLine(problem.name, failure.message, extra)


@dataclass(frozen=True)
class Fact:
    label: str
    text: str
    url: str = ""  # a link for the channels that have them


def _against(line: MetricLine) -> str:
    """ "7.9% (champion 8.4%, -0.5 pp)", or the value alone without a champion."""
    if not line.champion_shown:
        return line.shown
    return f"{line.shown} (champion {line.champion_shown}, {line.change})"


def facts(outcome: Outcome) -> list[Fact]:
    """What every channel states about the run beyond its headline and reason, in this order: the same
    labels and the same words on every surface (the channel tests compare them)."""
    found = [Fact("Outcome", f"{outcome.word}: {outcome.serving}")]
    key = outcome.key
    if key is not None:
        found.append(Fact(key.title, _against(key)))
    others = [line for line in outcome.metrics if not line.key]
    if others:
        found.append(Fact("Other metrics", "; ".join(f"{line.title} {_against(line)}" for line in others)))
    if outcome.decision:
        found.append(Fact("Decision", outcome.decision))
    if outcome.recheck:
        found.append(Fact("Champion checked again", outcome.recheck))
    if outcome.smoke_check:
        found.append(Fact("Smoke check", outcome.smoke_check))
    if outcome.quarantine is not None:
        q = outcome.quarantine
        found.append(Fact("Quarantined", f"{', '.join(q.files) or 'the new data'} → {q.folder}"))
    elif outcome.data_action in ("accepted", "kept"):
        found.append(Fact("New data", f"{outcome.data_action}: {outcome.data_detail}"))
    if outcome.changes:
        changed = ", ".join(f"{c.name} {c.before or 'unset'} → {c.after or 'unset'}" for c in outcome.changes)
        found.append(Fact("Changed since the champion", changed))
    if outcome.commit:
        message = f" {outcome.commit_message}" if outcome.commit_message else ""
        found.append(Fact("Commit", f"{outcome.commit}{message}", outcome.commit_url))
    if outcome.pr:
        found.append(Fact("Pull request", outcome.pr, outcome.pr_url))
    started = f"{outcome.trigger}" + (f" by {outcome.actor}" if outcome.actor else "")
    found.append(Fact("Started", started))
    if outcome.gates_total:
        found.append(Fact("Gates", f"{outcome.gates_passed}/{outcome.gates_total} passed"))
    if outcome.warnings:
        found.append(Fact("Warnings", "; ".join(outcome.warnings)))
    return found
