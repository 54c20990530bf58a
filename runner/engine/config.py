"""Load and validate pipeline.yaml (version 1) together with the command line's parameter overrides.

Everything wrong is collected into one ConfigError (exit 2): each problem names the file, the key path and
the fix. The schema is declared with pydantic (`extra="forbid"`); the checks that need more than one key
(notebooks on disk, declared parameters, `needs`, cycles, gate references) follow it.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from runner import yamltext
from runner.engine import graph
from runner.engine.gates import Gate, GateSyntaxError, parse_gate
from runner.engine.glued import scrap_name_problems
from runner.engine.monitor_spec import Monitor, MonitorSpec, check_monitor, resolve_monitor
from runner.engine.params import (
    INJECTED,
    PIPELINE,
    STAGE,
    DeclaredParameters,
    NotebookParameter,
    Overrides,
    check_value,
    merged,
    parameter_problems,
    resolve,
)
from runner.errors import ConfigError, Problem, did_you_mean
from runner.paired import Policy
from runner.project import REPORTS_DIR, outside_project
from runner.records import KeyMetric, MetricFormat
from runner.secrets import Redactor, secret_names

StageName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")]
ParamName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
GATE_NAMESPACES = ("params", "champion")


class StageSpec(BaseModel):
    """One stage as written in pipeline.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    notebook: Annotated[str, StringConstraints(min_length=1)]  # "" would name the project folder itself
    params: dict[ParamName, Any] = Field(default_factory=dict)
    timeout: float = Field(default=1800, gt=0, description="seconds for the whole stage")
    gates: list[str] = Field(default_factory=list)
    needs: list[str] = Field(default_factory=list)
    show_code: bool = False
    # Content-hash caching (runner/engine/cache.py). inputs: the files the stage reads besides its upstream
    # stages' products, as globs relative to the project root; `[]` declares that it reads nothing else;
    # without the key the stage is never cached. outputs: "products/..." is in the run's products folder (the
    # notebook's run_dir), any other glob is relative to the project root.
    inputs: list[str] | None = None
    outputs: list[str] = Field(default_factory=list)
    warmup: str | None = None  # code run in the stage's kernel before the stage starts; None: the pipeline's


class MetricFormatSpec(BaseModel):
    """How a metric reads: `model.show_metrics` items (a name alone reads plainly)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ParamName  # a numeric scrap of the `model.metrics` stage
    format: Literal["percent", "number", "currency", "integer"] = "number"
    digits: int = Field(default=3, ge=0, le=8, description="digits after the point (percent: of the percent)")
    unit: str = Field(default="", max_length=12)  # after a number ("units", "°C"); a currency's symbol ("$")
    label: str = Field(default="", max_length=40)


class KeyMetricSpec(BaseModel):
    """`model.key_metric`: the one number that says how good a model is, declared once. Every surface (pages,
    history, messages, `retrain models`) and every decision (smoke check, monitor) reads it from here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ParamName  # a numeric scrap of the `model.metrics` stage
    better: Literal["lower", "higher"]  # an error (WAPE, RMSE, log loss) is lower; a score (AUC) higher
    format: Literal["percent", "number", "currency", "integer"] = "number"
    digits: int = Field(default=3, ge=0, le=8, description="digits after the point (percent: of the percent)")
    unit: str = Field(default="", max_length=12)  # after a number ("units", "°C"); a currency's symbol ("$")
    label: str = Field(default="", max_length=40)  # what people call it: "WAPE", "ROC AUC" (default: name)


class SmokeCheckSpec(BaseModel):
    """How the new champion is checked right after promotion (see runner/production/lifecycle.py): loaded
    fresh from the registry, it predicts the sample the evaluation saved, and must give the same predictions
    and the same key metric."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sample: str = "holdout.parquet"  # in the run's products: model inputs, actuals and the predictions made
    prediction_columns: list[str] = Field(default_factory=lambda: ["prediction"], min_length=1)
    actual_column: str = "actual"
    # how the key metric is scored from the sample: a built-in (runner/production/scores.py) or
    # "module:function" of the project, function(actual, predicted) -> float; default: the key metric's name
    score: str | None = None
    tolerance: float = Field(default=1e-6, ge=0, description="relative difference allowed")
    max_seconds: float = Field(default=30, gt=0, description="loading and predicting the sample")
    # with `model.refit`: how far the refit's predictions on the sample may be from the evaluated model's
    # (relative difference, largest over the rows): it learned from more data, so it differs, but not wildly
    refit_tolerance: float | None = Field(default=None, gt=0, description="relative difference allowed")

    @model_validator(mode="before")
    @classmethod
    def _older_names(cls, data: Any) -> Any:
        """Older names, still read: `forecast_column` (one prediction column) and `metric` (the score)."""
        if isinstance(data, dict):
            data = dict(data)
            if "forecast_column" in data:
                data.setdefault("prediction_columns", [data.pop("forecast_column")])
            if "metric" in data:
                data.setdefault("score", data.pop("metric"))
        return data


class PromotionPolicySpec(BaseModel):
    """`model.promotion_policy`: when the challenger may replace the champion, judged on paired rows of
    backtests with a bootstrap interval (runner/paired.py; the decision: runner/production/promotion.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: Literal["superior", "non_inferior", "threshold"] = "non_inferior"
    margin: float | None = Field(default=None, ge=0, description="in the key metric's units")
    relative_margin: float | None = Field(default=None, ge=0, description="a share of the champion's value")
    confidence: float = Field(default=0.9, gt=0.5, lt=1)
    block: int = Field(default=1, ge=1, description="consecutive periods resampled together")
    resamples: int = Field(default=2000, ge=100, le=100_000)

    def policy(self) -> Policy:
        return Policy(
            self.rule, self.margin, self.relative_margin, self.confidence, self.block, self.resamples
        )


class ModelSpec(BaseModel):
    """The `model` section: what to register in the MLflow registry and how it reaches production."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    candidate: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*\.[A-Za-z_][A-Za-z0-9_]*$")]
    metrics: StageName  # the stage whose numeric scraps become the version's metrics
    key_metric: KeyMetricSpec | None = None  # the number that says how good the model is (see above)
    # shown beside the key metric: names, or how each reads ({name, format, digits, unit, label})
    show_metrics: list[ParamName | MetricFormatSpec] = Field(default_factory=list)

    @property
    def shown(self) -> list[MetricFormatSpec]:
        return [MetricFormatSpec(name=item) if isinstance(item, str) else item for item in self.show_metrics]

    promotion: Literal["auto", "manual"] = "auto"
    # how sure the evidence must be before the champion is replaced; None: the gates alone decide
    promotion_policy: PromotionPolicySpec | None = None
    # <stage>.<scrap>: once the gates pass and the policy promotes, this stage refits the evaluated settings
    # on all the data; its model is the one registered as the champion, smoke-checked and deployed
    refit: (
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*\.[A-Za-z_][A-Za-z0-9_]*$")] | None
    ) = None
    deploy: list[StageName] = Field(default_factory=list)  # stages run after promotion, with the new champion
    data: list[str] = Field(default_factory=list)  # globs: the files whose contents fingerprint the data
    smoke_check: SmokeCheckSpec = Field(default_factory=SmokeCheckSpec)

    @property
    def candidate_stage(self) -> str:
        return self.candidate.partition(".")[0]

    @property
    def candidate_scrap(self) -> str:
        return self.candidate.partition(".")[2]

    @property
    def refit_stage(self) -> str | None:
        return self.refit.partition(".")[0] if self.refit else None

    @property
    def refit_scrap(self) -> str:
        return self.refit.partition(".")[2] if self.refit else ""


class SlackSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    webhook_env: str = "SLACK_WEBHOOK_URL"  # the NAME of the variable holding the webhook: it is a secret


class EmailSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    port: int = 587
    sender: str
    to: list[str] = Field(min_length=1)
    starttls: bool = True
    username: str | None = None
    password_env: str | None = None  # the NAME of the variable holding the password


class NotifySpec(BaseModel):
    """The `notify` section: who hears how a run ended."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str | None = None  # the metric the message leads with; None: the model's key metric
    slack: SlackSpec | None = Field(default_factory=SlackSpec)
    email: EmailSpec | None = None
    timeout_s: float = Field(default=10, gt=0)
    retries: int = Field(default=3, ge=0)


class DataSpec(BaseModel):
    """The `data` section: where new labeled data arrives and where it goes once a run has judged it
    (see runner/engine/intake.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    new: list[str] = Field(min_length=1)  # globs, relative to the project root: the drops waiting
    history: str  # the folder accepted drops are added to (append-only)
    stage: StageName  # the stage that judges the data: when its gates fail, the drops are quarantined
    accepted: str = "data/accepted"  # <accepted>/<run_id>/: the originals of the drops a run accepted
    quarantine: str = "data/quarantine"  # <quarantine>/<run_id>/: refused drops, with REASON.md
    # triggers that retrain nothing when no drop is waiting (a manual run or a code change still does)
    skip_when_nothing_new: list[str] = Field(default_factory=lambda: ["schedule", "push"])
    # what one period of the data is: monitoring counts the periods a champion has not seen in these
    period: Literal["hour", "day", "week", "month", "quarter", "year", "batch"] = "week"


class ComputeSpec(BaseModel):
    """The `compute` section: where the heavy stages compute when the data is large. The runner starts
    nothing: a notebook that declares `compute` receives these settings, and the notebook library
    (runner/nb/compute.py) gives it a Dask client: the cluster at the address the `scheduler_env` variable
    holds, or a LocalCluster of its own for the stage's duration when the variable is unset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: Literal["dask"] = "dask"
    above_rows: int = Field(ge=0, description="from this many rows of data on, the notebooks use the cluster")
    scheduler_env: EnvName = "DASK_SCHEDULER_ADDRESS"  # the NAME of the variable: a workflow's secret
    workers: int = Field(default=2, ge=1, le=512)  # worker processes of a local cluster
    threads_per_worker: int = Field(default=1, ge=1, le=512)
    memory_limit: str = "auto"  # per worker of a local cluster: "4GiB", "500MB"; auto: the machine's share

    def settings(self) -> dict[str, Any]:
        """What a notebook declaring `compute` receives."""
        return self.model_dump()


class PipelineSpec(BaseModel):
    """pipeline.yaml, version 1."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    params: dict[ParamName, Any] = Field(default_factory=dict)
    stages: dict[StageName, StageSpec] = Field(min_length=1)
    model: ModelSpec | None = None
    data: DataSpec | None = None
    notify: NotifySpec = Field(default_factory=NotifySpec)
    warmup: str = ""  # code run in each stage's kernel while the previous stage runs, e.g. "import pandas"
    # stages whose `needs` are done run at the same time, this many at most (runner/engine/schedule.py);
    # None: as many as the machine has cores
    max_parallel: int | None = Field(default=None, ge=1)
    monitor: MonitorSpec | None = None  # `retrain monitor`: the champion checked for decay (monitor_spec.py)
    compute: ComputeSpec | None = None  # a Dask cluster for large data (ComputeSpec)
    # environment variables holding secrets: notebooks read them from os.environ, never as parameters, and
    # their values are redacted from everything the runner writes (runner/secrets.py)
    secrets: list[EnvName] = Field(default_factory=list)

    @property
    def secret_names(self) -> tuple[str, ...]:
        """The declared secrets, the variables `notify` and `compute` name, and those always secret."""
        slack = self.notify.slack.webhook_env if self.notify.slack else None
        password = self.notify.email.password_env if self.notify.email else None
        scheduler = self.compute.scheduler_env if self.compute else None  # a cluster's address is not public
        return secret_names(self.secrets, (slack, password, scheduler))


@dataclass(frozen=True)
class Stage:
    """A validated stage, ready to run."""

    name: str
    source: str  # notebook path as written, relative to the project root
    notebook: Path  # absolute
    declared: Mapping[str, NotebookParameter]
    params: Mapping[str, Any]  # values to inject: only what the notebook declares
    param_sources: Mapping[str, str]  # where each of them came from (engine/params.py: resolve)
    gate_params: Mapping[str, Any]  # what `params.*` means in this stage's gates
    gates: tuple[Gate, ...]
    needs: tuple[str, ...]
    timeout: float
    show_code: bool
    inputs: tuple[str, ...] | None = None  # globs relative to the project root; None: never cached
    outputs: tuple[str, ...] = ()  # globs: "products/..." in the run's products folder, else the project root
    warmup: str = ""  # code run in its kernel before the stage starts


@dataclass(frozen=True)
class Pipeline:
    name: str
    path: Path
    root: Path
    params: Mapping[str, Any]  # pipeline-wide, after overrides
    stages: Mapping[str, Stage]  # in execution order
    model: ModelSpec | None = None
    data: DataSpec | None = None
    notify: NotifySpec = field(default_factory=NotifySpec)
    # what the notebooks declare, to remember in reports/ once a run has created it (see params.py)
    declared: DeclaredParameters | None = field(default=None, compare=False, repr=False)
    monitor: Monitor | None = None  # the `monitor` section, for `retrain monitor`
    secrets: tuple[str, ...] = ()  # names of the environment variables whose values are redacted
    max_parallel: int = 1  # stages executed at the same time, at most
    warmup: str = ""  # the pipeline-wide warm-up: what the run's kernel server imports once for every kernel
    key_metric: KeyMetric | None = None  # `model.key_metric`, with the metrics shown beside it
    compute: Mapping[str, Any] = field(default_factory=dict)  # the `compute` section, injected as `compute`

    @property
    def needs(self) -> dict[str, tuple[str, ...]]:
        return {name: stage.needs for name, stage in self.stages.items()}


def load_pipeline(
    path: Path,
    overrides: Overrides | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    scrap_names: bool = False,
) -> Pipeline:
    """Read, validate and resolve a pipeline; raise ConfigError listing every problem found.

    `environ` (default: this process's) gives the secrets' values: a parameter holding one is refused.
    `scrap_names` (`retrain check`): also read the notebooks' code for the names of what they record, and
    report a gate or a model setting that names a scrap no notebook records.
    """
    overrides = overrides or Overrides()
    environ = os.environ if environ is None else environ
    path = path.resolve()
    raw = _read_yaml(path)
    file = _display_path(path)
    problems: list[Problem] = []
    spec: PipelineSpec | None
    declared = DeclaredParameters(path.parent / REPORTS_DIR)  # remembered: no papermill import when unchanged
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as error:
        problems.extend(_schema_problems(file, error))
        spec = _salvage(raw)
    if spec is not None:
        problems.extend(_check_semantics(file, path.parent, spec, overrides, declared))
        problems.extend(_check_secrets(file, spec, overrides, environ))
        if scrap_names and not problems:
            problems.extend(scrap_name_problems(file, path.parent, spec))
    problems.extend(overrides.problems)
    if problems:
        raise ConfigError(problems)
    assert spec is not None
    pipeline = _resolve(path, spec, overrides, declared)
    declared.save(Redactor.from_environ(pipeline.secrets, environ))
    return pipeline


def _read_yaml(path: Path) -> Any:
    file = _display_path(path)
    if not path.is_file():
        fix = "run from the project folder or pass the path: retrain run path/to/pipeline.yaml"
        raise ConfigError([Problem(file, "", "file not found", fix)])
    try:
        raw = yamltext.load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yamltext.YamlError) as error:
        raise ConfigError([Problem(file, "", f"not valid YAML: {_one_line(str(error))}")]) from None
    if not isinstance(raw, dict):
        fix = "start from the example in README.md (version, name, params, stages)"
        raise ConfigError([Problem(file, "", "expected a mapping at the top level", fix)])
    return raw


def _schema_problems(file: str, error: ValidationError) -> list[Problem]:
    problems = []
    for item in error.errors():
        loc = [part for part in item["loc"] if part not in ("[key]",)]
        where = _key_path(loc)
        if item["type"] == "extra_forbidden":
            valid = list(_section_model(loc).model_fields)
            name = str(loc[-1])
            problems.append(Problem(file, where, f"unknown key '{name}'", did_you_mean(name, valid)))
        elif item["type"] == "missing":
            problems.append(Problem(file, where, "required key is missing"))
        elif item["type"] == "string_pattern_mismatch":
            message = f"'{item['input']}' is not a valid name"
            problems.append(Problem(file, where, message, "use letters, digits and _ (stage names also -)"))
        else:
            got = yamltext.bounded_repr(item["input"])
            problems.append(Problem(file, where, f"{item['msg']} (got {got})"))
    return problems


def _section_model(loc: list[int | str]) -> type[BaseModel]:
    """The schema a key path points into, for "did you mean" among its valid keys."""
    if len(loc) == 1:
        return PipelineSpec
    sections: dict[int | str, type[BaseModel]] = {
        "model": ModelSpec,
        "data": DataSpec,
        "notify": NotifySpec,
        "monitor": MonitorSpec,
        "compute": ComputeSpec,
    }
    if loc[0] == "model" and len(loc) > 2 and loc[1] == "smoke_check":
        return SmokeCheckSpec
    if loc[0] == "model" and len(loc) > 2 and loc[1] == "promotion_policy":
        return PromotionPolicySpec
    return sections.get(loc[0], StageSpec)


def _salvage(raw: dict[str, Any]) -> PipelineSpec | None:
    """The pipeline with its invalid keys left out, so the deeper checks still run on what is valid.

    A stage whose keys are invalid keeps its valid ones; a stage that cannot be read at all keeps its name
    (for `needs` and gates) with no notebook, and its own deeper checks are skipped.
    """
    stages = raw.get("stages")
    if not isinstance(stages, dict) or not stages:
        return None
    salvaged = {str(name): _salvage_stage(body) for name, body in stages.items()}
    params = raw.get("params") if isinstance(raw.get("params"), dict) else {}
    listed = raw.get("secrets")
    secrets = [name for name in listed if isinstance(name, str)] if isinstance(listed, list) else []
    salvaged_spec = PipelineSpec.model_construct(
        version=1, name=str(raw.get("name")), params=params, stages=salvaged, secrets=secrets
    )
    try:  # a valid monitor section still gets its deeper checks
        monitor = MonitorSpec.model_validate(raw["monitor"]) if raw.get("monitor") is not None else None
    except ValidationError:
        monitor = None
    return salvaged_spec.model_copy(update={"monitor": monitor, "model": _salvage_model(raw)})


def _salvage_model(raw: dict[str, Any]) -> ModelSpec | None:
    """The model section when it is valid (the monitor section needs to know there is one)."""
    try:
        return ModelSpec.model_validate(raw["model"]) if isinstance(raw.get("model"), dict) else None
    except ValidationError:
        return None


def _salvage_stage(body: Any) -> StageSpec:
    if not isinstance(body, dict):
        return StageSpec.model_construct(notebook="")
    fields = {key: value for key, value in body.items() if key in StageSpec.model_fields}
    while True:
        try:
            return StageSpec.model_validate(fields)
        except ValidationError as error:
            broken = {item["loc"][0] for item in error.errors() if item["loc"]}
            if not broken & set(fields) or "notebook" in broken:
                return StageSpec.model_construct(notebook="")
            fields = {key: value for key, value in fields.items() if key not in broken}


def _check_semantics(
    file: str, root: Path, spec: PipelineSpec, overrides: Overrides, declared_parameters: DeclaredParameters
) -> list[Problem]:
    problems: list[Problem] = []
    declared: dict[str, Mapping[str, NotebookParameter]] = {}
    for name, stage in spec.stages.items():
        if not stage.notebook:
            continue  # unreadable stage: its schema problems are already reported
        notebook = root / stage.notebook
        where = f"stages.{name}.notebook"
        if outside_project(stage.notebook):  # never opened: a message must not quote a file outside
            problems.append(_outside(file, where, stage.notebook, '"notebooks/train.ipynb"'))
            continue
        if not notebook.is_file():
            candidates = [
                p.relative_to(root).as_posix() for p in root.glob("**/*.ipynb") if ".venv" not in p.parts
            ]
            fix = did_you_mean(stage.notebook, candidates) or "create it or fix the path"
            problems.append(Problem(file, where, f"notebook not found: {stage.notebook}", fix))
            continue
        try:
            declared[name] = declared_parameters(notebook)
        except ValueError as error:
            problems.append(Problem(file, where, str(error)))
            continue
        problems.extend(_check_stage_params(file, name, stage, declared[name]))
        problems.extend(_check_needs(file, name, stage, list(spec.stages)))
    problems.extend(_check_cycles(file, spec))
    problems.extend(_check_data_paths(file, spec))
    problems.extend(_check_sizes(file, spec, overrides))
    problems.extend(_check_files_and_warmup(file, spec))
    problems.extend(_check_compute(file, spec.compute))
    problems.extend(_check_gates(file, spec, overrides))
    monitor_declared: frozenset[str] = frozenset()
    if spec.monitor is not None:
        key, period = _key_metric(spec.model), _period(spec.data)
        found, monitor_declared = check_monitor(
            file, root, spec.monitor, spec.params, spec.model is not None, declared_parameters, key, period
        )
        problems.extend(found)
    problems.extend(_check_pipeline_params(file, spec, declared, monitor_declared))
    if spec.model is not None:
        problems.extend(_check_model(file, spec.model, spec))
    if spec.data is not None and spec.data.stage not in spec.stages:
        message = f"data.stage '{spec.data.stage}' is not a stage"
        fix = did_you_mean(spec.data.stage, list(spec.stages))
        problems.append(Problem(file, "data.stage", message, fix))
    problems.extend(overrides.check_against(spec.params, declared))
    return problems


def _check_stage_params(
    file: str, name: str, stage: StageSpec, declared: Mapping[str, NotebookParameter]
) -> list[Problem]:
    return parameter_problems(file, f"stages.{name}.params", stage.notebook, stage.params, declared)


def _check_needs(file: str, name: str, stage: StageSpec, stage_names: list[str]) -> list[Problem]:
    problems = []
    for index, needed in enumerate(stage.needs):
        where = f"stages.{name}.needs[{index}]"
        if needed == name:
            problems.append(Problem(file, where, "a stage cannot need itself"))
        elif needed not in stage_names:
            fix = did_you_mean(needed, stage_names) or f"stages are: {', '.join(stage_names)}"
            problems.append(Problem(file, where, f"unknown stage '{needed}'", fix))
    return problems


def _check_secrets(
    file: str, spec: PipelineSpec, overrides: Overrides, environ: Mapping[str, str]
) -> list[Problem]:
    """A secret is never a parameter: papermill writes parameters into the notebook and every page made
    from it. Refused: a parameter named like a secret variable, and a parameter whose value is a secret's."""
    names = spec.secret_names
    redactor = Redactor.from_environ(names, environ)
    lowered = {name.lower(): name for name in names}
    found: list[tuple[str, str, str]] = []  # (file, where, secret's name)
    for key, value in overrides.values.items():
        source, where = overrides.sources[key]
        name = lowered.get(key.lower()) or redactor.secret_named(value)
        if name is not None:
            found.append((source, where.partition("=")[0] + "=***" if "=" in where else where, name))
    given = [(f"params.{key}", value) for key, value in spec.params.items()]
    given += [
        (f"stages.{stage}.params.{key}", value)
        for stage, body in spec.stages.items()
        for key, value in body.params.items()
    ]
    for where, value in given:
        name = lowered.get(where.rpartition(".")[2].lower()) or redactor.secret_named(value)
        if name is not None:
            found.append((file, where, name))
    fix = (
        "secrets reach notebooks only through the environment: set {0} in the environment of `retrain run`"
        " (a GitHub Actions secret in the step's env:) and read os.environ[{0!r}] in the notebook"
    )
    return [
        Problem(source, where, f"a secret ({name}) cannot be passed as a parameter", fix.format(name))
        for source, where, name in found
    ]


def _check_sizes(file: str, spec: PipelineSpec, overrides: Overrides) -> list[Problem]:
    """A parameter's value is written into the executed notebook and run.json: a few lines of YAML aliases can
    stand for billions of values, which would take forever to write and fill the disk."""
    given = [(file, f"params.{key}", value) for key, value in spec.params.items()]
    given += [
        (file, f"stages.{stage}.params.{key}", value)
        for stage, body in spec.stages.items()
        for key, value in body.params.items()
    ]
    given += [(*overrides.sources[key], value) for key, value in overrides.values.items()]
    fix = "pass a smaller value, or a file path the notebook reads"
    message = f"the value holds more than {yamltext.MAX_NODES} items once its YAML aliases are expanded"
    found = [(source, where) for source, where, value in given if yamltext.too_large(value)]
    return [Problem(source, where, message, fix) for source, where in found]


def _outside(file: str, where: str, path: str, example: str) -> Problem:
    fix = f"a path relative to the project root, without '..': {example}"
    return Problem(file, where, f"'{path}' is not a path inside the project", fix)


def _check_data_paths(file: str, spec: PipelineSpec) -> list[Problem]:
    """Drops are read, moved and copied by the runner: only inside the project (a run must never move a file
    from elsewhere on the machine, nor into another folder of it)."""
    given: list[tuple[str, str, str]] = []
    if spec.data is not None:
        data = spec.data
        given += [(f"data.new[{i}]", pattern, '"data/new/*.csv"') for i, pattern in enumerate(data.new)]
        given += [
            ("data.history", data.history, '"data/history"'),
            ("data.accepted", data.accepted, '"data/accepted"'),
            ("data.quarantine", data.quarantine, '"data/quarantine"'),
        ]
    if spec.model is not None:
        given += [(f"model.data[{i}]", pattern, '"data/*.csv"') for i, pattern in enumerate(spec.model.data)]
    return [_outside(file, where, path, example) for where, path, example in given if outside_project(path)]


def _check_cycles(file: str, spec: PipelineSpec) -> list[Problem]:
    try:
        graph.stage_order({name: stage.needs for name, stage in spec.stages.items()})
    except graph.StageCycleError as error:
        loop = " needs ".join(error.cycle)
        return [Problem(file, "stages", f"stages need each other in a loop: {loop}", "break the loop")]
    return []


def _check_files_and_warmup(file: str, spec: PipelineSpec) -> list[Problem]:
    """Inputs and outputs are globs inside the project; a warm-up is Python that parses."""
    problems = []
    for name, stage in spec.stages.items():
        for key in ("inputs", "outputs"):
            for index, pattern in enumerate(getattr(stage, key, None) or []):
                where = f"stages.{name}.{key}[{index}]"
                path = PurePosixPath(pattern)
                if not pattern.strip() or path.is_absolute() or ".." in path.parts:
                    fix = 'a glob relative to the project root: "data/*.csv", "products/features.parquet"'
                    message = f"'{pattern}' is not a path inside the project"
                    problems.append(Problem(file, where, message, fix))
    warmups = [("warmup", spec.warmup)] + [
        (f"stages.{name}.warmup", stage.warmup) for name, stage in spec.stages.items()
    ]
    for where, code in warmups:
        try:
            ast.parse(code or "")
        except SyntaxError as error:
            message = f"not valid Python: {error.msg}"
            problems.append(Problem(file, where, message, 'e.g. "import pandas, numpy"'))
    return problems


_MEMORY = re.compile(r"^(auto|\d+(\.\d+)?\s*(B|[kMGT]B|[KMGT]iB)?)$")  # as dask.utils.parse_bytes reads it


def _check_compute(file: str, compute: ComputeSpec | None) -> list[Problem]:
    """Dask reads `memory_limit` itself, in each worker: a typo must be refused here, not there."""
    if compute is None or _MEMORY.match(compute.memory_limit.strip()):
        return []
    message = f"'{compute.memory_limit}' is not an amount of memory"
    return [Problem(file, "compute.memory_limit", message, 'e.g. "4GiB", "500MB", or "auto"')]


def _check_gates(file: str, spec: PipelineSpec, overrides: Overrides) -> list[Problem]:
    problems = []
    needs = {name: stage.needs for name, stage in spec.stages.items()}
    for name, stage in spec.stages.items():
        known_params = {**spec.params, **stage.params, **overrides.values}
        for index, expr in enumerate(stage.gates):
            where = f"stages.{name}.gates[{index}]"
            try:
                gate = parse_gate(expr)
            except GateSyntaxError as error:
                problems.append(Problem(file, where, f"`{expr}`: {error}"))
                continue
            problems.extend(_check_gate_names(file, where, name, gate, spec, needs, known_params))
    return problems


def _check_gate_names(
    file: str,
    where: str,
    stage: str,
    gate: Gate,
    spec: PipelineSpec,
    needs: graph.Needs,
    known_params: Mapping[str, Any],
) -> list[Problem]:
    problems = []
    upstream = graph.upstream_of(stage, needs)
    for dotted in sorted(gate.names):
        head, _, rest = dotted.partition(".")
        if not rest or head == "champion":
            continue
        if head == "params":
            if rest not in known_params:
                fix = did_you_mean(rest, list(known_params)) or "add it to params in pipeline.yaml"
                problems.append(Problem(file, where, f"unknown parameter 'params.{rest}'", fix))
        elif head not in spec.stages:
            fix = did_you_mean(head, [*spec.stages, *GATE_NAMESPACES]) or "use <stage>.<scrap>"
            problems.append(Problem(file, where, f"'{dotted}' names no stage '{head}'", fix))
        elif head != stage and head not in upstream and set(needs[stage]) <= set(spec.stages):
            fix = f"add '{head}' to stages.{stage}.needs"
            problems.append(
                Problem(file, where, f"reads '{dotted}' but '{head}' does not run before it", fix)
            )
    return problems


def _check_pipeline_params(
    file: str,
    spec: PipelineSpec,
    declared: Mapping[str, Mapping[str, NotebookParameter]],
    monitor_declared: frozenset[str] = frozenset(),
) -> list[Problem]:
    """A pipeline-wide parameter that no notebook declares and no gate reads is a typo waiting to bite."""
    gate_params = {
        name.partition(".")[2]
        for stage in spec.stages.values()
        for expr in stage.gates
        for name in _safe_names(expr)
        if name.startswith("params.")
    }
    problems = []
    every_declared = {key for params in declared.values() for key in params} | monitor_declared
    for key, value in spec.params.items():
        where = f"params.{key}"
        if key in INJECTED:
            problems.append(Problem(file, where, f"'{key}' is set by the runner", "remove it from params"))
        elif key not in every_declared and key not in gate_params and len(declared) == len(spec.stages):
            fix = did_you_mean(key, sorted(every_declared)) or "declare it in a notebook's parameters cell"
            problems.append(Problem(file, where, "no stage's notebook declares it and no gate reads it", fix))
        for stage, params in declared.items():
            if key in params and key not in spec.stages[stage].params:
                trouble = check_value(params[key], value)
                if trouble is not None:
                    problems.append(Problem(file, where, f"{trouble} (for stage {stage})"))
    return problems


def _check_model(file: str, model: ModelSpec, spec: PipelineSpec) -> list[Problem]:
    stages = list(spec.stages)
    named = [("model.candidate", model.candidate_stage), ("model.metrics", model.metrics)]
    named += [(f"model.deploy[{index}]", stage) for index, stage in enumerate(model.deploy)]
    problems = [
        Problem(
            file,
            where,
            f"unknown stage '{stage}'",
            did_you_mean(stage, stages) or f"stages: {', '.join(stages)}",
        )
        for where, stage in named
        if stage not in spec.stages
    ]
    needs = {name: stage.needs for name, stage in spec.stages.items()}
    for index, stage in enumerate(model.deploy):
        needed_by = sorted(name for name in graph.downstream_of(stage, needs) if name not in model.deploy)
        if stage in (model.candidate_stage, model.metrics) or needed_by:
            users = ", ".join(needed_by) or stage
            message = f"deploy stage '{stage}' runs after promotion, but {users} needs it before"
            problems.append(Problem(file, f"model.deploy[{index}]", message, "deploy only the last stages"))
    problems.extend(_check_refit(file, model, spec))
    problems.extend(_check_policy(file, model))
    return problems


def _check_refit(file: str, model: ModelSpec, spec: PipelineSpec) -> list[Problem]:
    """The refit stage runs once the model is judged and before it is registered: after the stages that
    judge it, before the deploy stages, and with a declared tolerance for its smoke check."""
    stage = model.refit_stage
    if stage is None:
        return []
    if stage not in spec.stages:
        fix = did_you_mean(stage, list(spec.stages)) or f"stages: {', '.join(spec.stages)}"
        return [Problem(file, "model.refit", f"unknown stage '{stage}'", fix)]
    needs = {name: item.needs for name, item in spec.stages.items()}
    problems = []
    before = graph.upstream_of(stage, needs)
    judged = [name for name in (model.candidate_stage, model.metrics) if name not in before]
    if judged:
        message = f"refit stage '{stage}' runs once the model is judged, but it does not need {judged[0]}"
        problems.append(Problem(file, "model.refit", message, f"add {judged[0]} to stages.{stage}.needs"))
    if stage in model.deploy:
        problems.append(
            Problem(file, "model.refit", f"'{stage}' is a deploy stage", "refit before deploying")
        )
    after = sorted(name for name in graph.downstream_of(stage, needs) if name not in model.deploy)
    if after:
        message = f"refit stage '{stage}' runs after the model is judged, but {', '.join(after)} needs it"
        problems.append(Problem(file, "model.refit", message, "only deploy stages may come after the refit"))
    for index, deploy in enumerate(model.deploy):
        if deploy in spec.stages and stage not in graph.upstream_of(deploy, needs):
            message = f"deploy stage '{deploy}' deploys the refit, so it must run after '{stage}'"
            problems.append(Problem(file, f"model.deploy[{index}]", message, f"add {stage} to its needs"))
    if model.smoke_check.refit_tolerance is None:
        message = "a refit model is smoke-checked against the evaluated one: declare how far it may differ"
        fix = "e.g. refit_tolerance: 0.5 (the largest relative difference of a prediction)"
        problems.append(
            Problem(file, "model.smoke_check.refit_tolerance", "required with model.refit: " + message, fix)
        )
    return problems


def _check_policy(file: str, model: ModelSpec) -> list[Problem]:
    policy = model.promotion_policy
    if policy is None:
        return []
    where, problems = "model.promotion_policy", []
    if model.key_metric is None:
        message = "a promotion policy compares the key metric: declare model.key_metric (name, better)"
        problems.append(Problem(file, where, message))
    given = [name for name in ("margin", "relative_margin") if getattr(policy, name) is not None]
    if policy.rule == "superior" and given:
        message = f"the superior rule takes no {given[0]}: it promotes only a model better beyond doubt"
        problems.append(Problem(file, f"{where}.{given[0]}", message, "use rule: non_inferior for a margin"))
    elif policy.rule != "superior" and len(given) != 1:
        said = "both margin and relative_margin" if given else "no margin"
        message = f"the {policy.rule} rule needs one margin, got {said}"
        fix = "margin: 0.005 (in the key metric's units) or relative_margin: 0.02 (2% of the champion's)"
        problems.append(Problem(file, where, message, fix))
    return problems


def _safe_names(expr: str) -> frozenset[str]:
    try:
        return parse_gate(expr).names
    except GateSyntaxError:
        return frozenset()


def _resolve(
    path: Path, spec: PipelineSpec, overrides: Overrides, declared_parameters: DeclaredParameters
) -> Pipeline:
    root = path.parent
    wide = {**spec.params, **{k: v for k, v in overrides.values.items() if k in spec.params}}
    order = graph.stage_order({name: stage.needs for name, stage in spec.stages.items()})
    stages = {}
    for name in order:
        stage = spec.stages[name]
        notebook = root / stage.notebook
        declared = declared_parameters(notebook)
        layers = [(PIPELINE, spec.params), (STAGE, stage.params), *overrides.layers()]
        resolved = resolve(declared, layers)
        stages[name] = Stage(
            name=name,
            source=stage.notebook,
            notebook=notebook,
            declared=declared,
            params=resolved.values,
            param_sources=resolved.sources,
            gate_params=merged(layers),
            gates=tuple(parse_gate(expr) for expr in stage.gates),
            needs=tuple(stage.needs),
            timeout=stage.timeout,
            show_code=stage.show_code,
            inputs=tuple(stage.inputs) if stage.inputs is not None else None,
            outputs=tuple(stage.outputs),
            warmup=spec.warmup if stage.warmup is None else stage.warmup,
        )
    return Pipeline(
        name=spec.name,
        path=path,
        root=root,
        params=wide,
        stages=stages,
        model=spec.model,
        data=spec.data,
        notify=spec.notify,
        declared=declared_parameters,
        monitor=(
            resolve_monitor(
                root, spec.monitor, wide, declared_parameters, _key_metric(spec.model), _period(spec.data)
            )
            if spec.monitor
            else None
        ),
        secrets=spec.secret_names,
        max_parallel=spec.max_parallel or os.cpu_count() or 1,
        warmup=spec.warmup,
        key_metric=_key_metric(spec.model),
        compute=spec.compute.settings() if spec.compute else {},
    )


def _period(data: DataSpec | None) -> str:
    return data.period if data is not None else "period"


def _key_metric(model: ModelSpec | None) -> KeyMetric | None:
    if model is None or model.key_metric is None:
        return None
    key = model.key_metric
    others = [
        MetricFormat(item.name, item.format, item.digits, item.unit, item.label)
        for item in model.shown
        if item.name != key.name
    ]
    return KeyMetric(key.name, key.format, key.digits, key.unit, key.label, better=key.better, others=others)


def _key_path(loc: list[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _display_path(path: Path) -> str:
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(path)


def _one_line(text: str) -> str:
    return " ".join(text.split())
