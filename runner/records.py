"""The record of a run: what `run.json` holds, as plain dataclasses.

The pipeline fills these in; the report module writes them; the CLI reads them to choose the exit code.
Field names follow the run-folder contract in DESIGN.md, so `to_json()` is the file format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal

RunStatus = Literal["running", "succeeded", "failed", "gate_failed", "cancelled"]
FailureKind = Literal["error", "timeout", "dead_kernel", "cancelled", "runner"]
StageStatus = Literal["pending", "running", "succeeded", "failed", "gate_failed", "skipped", "cached"]


Format = Literal["percent", "number", "currency", "integer"]


@dataclass
class MetricFormat:
    """How one metric reads: its format, digits after the point, unit (a currency's symbol) and label."""

    name: str
    format: Format = "number"
    digits: int = 3
    unit: str = ""
    label: str = ""  # how people call it; "" means the name as given

    @property
    def title(self) -> str:
        return self.label or (self.name.upper() if len(self.name) <= 5 else self.name.replace("_", " "))


@dataclass
class KeyMetric(MetricFormat):
    """How a pipeline's key metric reads (pipeline.yaml `model.key_metric`), kept in run.json so that every
    page, message and history row drawn from the record shows it the same way; with the metrics shown beside
    it (`model.show_metrics`)."""

    better: Literal["lower", "higher"] = "lower"
    others: list[MetricFormat] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeyMetric:
        others = [
            MetricFormat(name=item) if isinstance(item, str) else MetricFormat(**item)
            for item in data.get("others", [])
        ]
        return cls(**{**data, "others": others})


@dataclass
class GateResult:
    """One gate's verdict and the values it saw (scrap and parameter names -> values)."""

    expr: str
    passed: bool
    detail: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageFailure:
    """Why a stage failed: where (cell) and what (error name and value), ANSI codes already stripped."""

    kind: FailureKind
    message: str
    cell_index: int | None = None
    ename: str | None = None
    evalue: str | None = None
    line: str | None = None  # the failing line of the cell, as the traceback shows it ("----> 3 x = 1 / 0")


@dataclass
class StageTimings:
    """Where a stage's time went, in seconds."""

    kernel_start_s: float = 0.0  # waiting for the kernel: ~0 when it was started ahead (warm)
    execute_s: float = 0.0
    render_s: float = 0.0
    warm_kernel: bool = False  # the kernel was started (and warmed up) while the previous stage ran
    warmup_s: float = 0.0  # how long its warm-up took, in the background
    forked: bool = False  # forked by the run's kernel server (runner/engine/kernels/): imports done once


@dataclass
class StageRecord:
    name: str
    source: str  # the stage's notebook as committed, relative to the project root
    status: StageStatus = "pending"
    duration_s: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    # where each parameter's value came from: pipeline, stage, params file, -p, injected (engine/params.py)
    param_sources: dict[str, str] = field(default_factory=dict)
    scraps: dict[str, Any] = field(default_factory=dict)
    gates: list[GateResult] = field(default_factory=list)
    notebook: str | None = None  # the executed notebook, relative to the run folder
    html: str | None = None  # its HTML page, relative to the run folder
    error: str | None = None  # one line a person can act on
    failure: StageFailure | None = None
    skip_reason: str | None = None
    timings: StageTimings = field(default_factory=StageTimings)
    fingerprint: str | None = None  # content hash of what decides its results; None: never cached
    cached_from: str | None = None  # status `cached`: the run whose results (scraps, gates, pages) it reuses
    output: list[str] = field(default_factory=list)  # what its kernel wrote outside its cells (last lines)

    @property
    def failed_gates(self) -> list[GateResult]:
        return [gate for gate in self.gates if not gate.passed]


@dataclass
class SmokeCheck:
    """The new champion, loaded fresh from the registry, predicting the evaluate stage's sample."""

    passed: bool
    detail: str
    seconds: float = 0.0
    max_relative_diff: float | None = None
    metric: float | None = None  # recomputed from the sample with the loaded model


@dataclass
class ChampionRecheck:
    """The champion's smoke check done again before a run's stages: the run that promoted it was stopped
    before the check's verdict (or between a failed verdict and the rollback)."""

    version: str
    passed: bool
    detail: str
    champion_after: str | None  # the champion once this check was done (another one when it failed)


@dataclass
class Decision:
    """Whether the challenger may replace the champion, and how sure the evidence is (the promotion policy).

    `difference` is the challenger's key metric minus the champion's on the same rows (its sign as the
    metric's: for an error, negative is better), `low`..`high` its interval at `confidence`."""

    policy: str  # threshold | non_inferior | superior | ...
    verdict: Literal["promote", "hold", "refuse"]
    sentence: str  # the decision in words a manager reads
    difference: float | None = None
    low: float | None = None
    high: float | None = None
    confidence: float | None = None
    margin: float | None = None  # how much worse a challenger may be and still be promoted (non_inferior)
    worse: bool = False  # promoted while worse than the champion on the point estimate (within the margin)


@dataclass
class ModelRecord:
    """What the run did to the registered model."""

    name: str
    action: Literal["registered", "unchanged", "not_registered"] = "not_registered"
    version: str | None = None  # the version that ships: the refit, when the pipeline refits
    evaluated: str | None = None  # with a refit: the evaluated model's version, registered beside it
    champion_before: str | None = None
    champion_after: str | None = None
    promoted: bool = False
    rolled_back: bool = False
    detail: str = ""  # one sentence: what happened to the model and why
    error: str | None = None  # set when the model's lifecycle failed the run
    smoke_check: SmokeCheck | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # this run's model, from the metrics stage
    champion_metrics: dict[str, float] = field(default_factory=dict)  # the champion it was compared with
    champion_params: dict[str, Any] = field(default_factory=dict)  # the parameters the champion's run had
    seconds: dict[str, float] = field(default_factory=dict)  # time in registry operations, by step
    decision: Decision | None = None  # the promotion policy's verdict, when the pipeline has one


@dataclass
class NotificationRecord:
    """One message about the run: where it went and whether it arrived (never the secret target itself)."""

    channel: str
    delivered: bool
    detail: str
    attempts: int = 0


@dataclass
class DataRecord:
    """The new data of a run (the drops waiting when it started) and what became of them."""

    drops: list[str] = field(default_factory=list)  # relative to the project root
    action: Literal["pending", "none", "accepted", "quarantined", "kept"] = "pending"
    folder: str | None = None  # data/accepted/<run_id> or data/quarantine/<run_id>
    files: list[str] = field(default_factory=list)  # where the drops went: history files or quarantine
    detail: str = ""


@dataclass
class RunContext:
    """Who and what started the run, beyond its trigger: for "what changed" on every surface."""

    actor: str = ""  # who pushed, merged or asked (GITHUB_ACTOR; locally, the user)
    commit_message: str = ""  # the first line of the commit's message
    commit_url: str = ""  # the commit on GitHub, when the run is in GitHub Actions
    pr_number: int | None = None
    pr_title: str = ""
    pr_url: str = ""
    run_url: str = ""  # the workflow run


@dataclass
class RunRecord:
    run_id: str
    pipeline: str
    trigger: str
    mode: str
    git_sha: str | None
    started_at: str
    params: dict[str, Any]
    stages: dict[str, StageRecord]
    status: RunStatus = "running"
    finished_at: str | None = None
    duration_s: float = 0.0
    runner_version: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    model: ModelRecord | None = None
    notifications: list[NotificationRecord] = field(default_factory=list)
    data: DataRecord | None = None  # with a `data` section in pipeline.yaml
    key_metric: KeyMetric | None = None  # with `model.key_metric` in pipeline.yaml
    context: RunContext = field(default_factory=RunContext)
    output: list[str] = field(default_factory=list)  # what the kernel server and workers wrote (last lines)
    champion_recheck: ChampionRecheck | None = None  # a champion left unchecked by a stopped run, checked
    # what failed the run outside its stages and model: a file that could not be written, a bug in retrain,
    # a full run that registered no model; or, for a run killed before it could say, that it was killed
    error: str | None = None
    # what went wrong without changing the outcome: pages cut short or not written, secrets MLflow still holds
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The `run.json` document; NaN and infinities become strings, as scrapbook stores them."""
        document: dict[str, Any] = _json_safe(self)
        return document

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        """Rebuild a record from its `run.json` document (the inverse of `to_json`).

        Non-finite floats stay the strings `to_json` wrote. Raises KeyError, TypeError or AttributeError
        when the document does not have the record's shape.
        """
        nested = ("stages", "model", "notifications", "data", "key_metric", "context", "champion_recheck")
        fields = {key: value for key, value in data.items() if key not in nested}
        stages = {str(name): _stage_from_json(item) for name, item in data["stages"].items()}
        model = _model_from_json(data["model"]) if data.get("model") else None
        sent = [NotificationRecord(**item) for item in data.get("notifications", [])]
        data_record = DataRecord(**data["data"]) if data.get("data") else None
        key_metric = KeyMetric.from_json(data["key_metric"]) if data.get("key_metric") else None
        context = RunContext(**data.get("context") or {})
        recheck = ChampionRecheck(**data["champion_recheck"]) if data.get("champion_recheck") else None
        return cls(
            stages=stages,
            model=model,
            notifications=sent,
            data=data_record,
            key_metric=key_metric,
            context=context,
            champion_recheck=recheck,
            **fields,
        )

    @property
    def first_problem(self) -> StageRecord | None:
        """The stage that decided the run's outcome when it did not succeed."""
        for stage in self.stages.values():
            if stage.status in ("failed", "gate_failed"):
                return stage
        return None


def _stage_from_json(data: dict[str, Any]) -> StageRecord:
    fields = dict(data)
    fields["gates"] = [GateResult(**gate) for gate in fields.get("gates", [])]
    if fields.get("failure") is not None:
        fields["failure"] = StageFailure(**fields["failure"])
    fields["timings"] = StageTimings(**fields.get("timings", {}))
    return StageRecord(**fields)


def _model_from_json(data: dict[str, Any]) -> ModelRecord:
    fields = dict(data)
    if fields.get("smoke_check") is not None:
        fields["smoke_check"] = SmokeCheck(**fields["smoke_check"])
    if fields.get("decision") is not None:
        fields["decision"] = Decision(**fields["decision"])
    return ModelRecord(**fields)


def _json_safe(value: Any) -> Any:
    """`value` as JSON values: a record as a dict of its fields, in their order (what `dataclasses.asdict`
    gives), tuples as lists, keys as strings, NaN and infinities as strings. One pass that builds only the
    document: asdict deep-copies every scrap first, and run.json is written after every stage."""
    if isinstance(value, str | int | None):  # bool is an int
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if hasattr(type(value), "__dataclass_fields__"):
        return {item.name: _json_safe(getattr(value, item.name)) for item in fields(value)}
    return value
