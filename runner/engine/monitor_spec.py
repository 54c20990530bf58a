"""The optional `monitor` section of pipeline.yaml: how `retrain monitor` checks the champion for decay.

    monitor:
      notebook: notebooks/06_monitor.ipynb   # scores the champion on the labeled periods it has not seen
      max_decay: 0.5                         # decay: live metric worse than registered by more than 50%
      limit: 0.12                            # and/or: worse than this value, whatever was registered
      min_periods: 2                         # fewer unseen periods than this: too few to judge
      log: monitoring/checks.jsonl           # one JSON line per check, appended
      timeout: 300                           # seconds, the whole notebook

The metric and its direction are the model's key metric (`model.key_metric`), unless `metric` and
`lower_is_better` say otherwise; periods are the data's own (`data.period`: hour, day, week, month...).
Kept apart from config.py, which calls `check_monitor` and `resolve_monitor`: the section is validated like a
stage (notebook on disk, declared parameters, values that fit), and its errors name the key path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from runner.engine.params import (
    MONITOR,
    MONITOR_SETTING,
    PIPELINE,
    NotebookParameter,
    check_value,
    parameter_problems,
    resolve,
)
from runner.errors import Problem, did_you_mean
from runner.project import outside_project
from runner.records import KeyMetric

ParamName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
# The section's own settings, also given to the notebook when it declares them, so that its page states the
# rule the runner applies (the runner's verdict is the one that counts); min_weeks: an older notebook's name
SETTINGS = ("metric", "max_decay", "limit", "min_periods", "min_weeks", "period")


class MonitorSpec(BaseModel):
    """The `monitor` section as written in pipeline.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    notebook: str
    metric: ParamName | None = None  # default: the model's key metric
    lower_is_better: bool | None = None  # default: the key metric's direction
    max_decay: float | None = Field(default=None, gt=0, description="relative: 0.5 = 50% worse than before")
    limit: float | None = None  # absolute: the worst acceptable live value (a floor or a ceiling)
    min_periods: int = Field(default=1, ge=1, description="fewer unseen periods than this are not judged")
    log: str = "monitoring/checks.jsonl"  # relative to the project root
    timeout: float = Field(default=600, gt=0, description="seconds for the whole notebook")
    params: dict[ParamName, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _older_names(cls, data: Any) -> Any:
        """`min_weeks`, the older name of `min_periods`, is still read."""
        if isinstance(data, dict) and "min_weeks" in data:
            data = dict(data)
            data.setdefault("min_periods", data.pop("min_weeks"))
        return data


@dataclass(frozen=True)
class Monitor:
    """The validated `monitor` section, ready to run."""

    source: str  # notebook path as written
    notebook: Path  # absolute
    declared: Mapping[str, NotebookParameter]
    params: Mapping[str, Any]  # values to inject (the runner adds champion_uri, products_dir, run_id, mode)
    param_sources: Mapping[str, str]  # where each value came from
    metric: str
    lower_is_better: bool
    max_decay: float | None
    limit: float | None
    min_periods: int
    period: str  # what one period of the data is: "week", "day"...
    log: Path  # absolute
    log_source: str  # as written
    timeout: float

    def decay(self, live: float, registered: float) -> float:
        """How much worse the live metric is than the registered one, relative; negative when better."""
        worse = live - registered if self.lower_is_better else registered - live
        if registered == 0:  # a perfect registered score: any worsening is infinitely worse
            return math.inf if worse > 0 else 0.0
        return worse / abs(registered)

    def past_limit(self, live: float) -> bool:
        """Whether the live metric is worse than the absolute limit, when there is one."""
        if self.limit is None:
            return False
        return live > self.limit if self.lower_is_better else live < self.limit


def monitored_metric(spec: MonitorSpec, key: KeyMetric | None) -> tuple[str | None, bool | None]:
    """The metric a check judges and whether lower is better: the section's, else the key metric's."""
    metric = spec.metric or (key.name if key else None)
    if spec.lower_is_better is not None:
        return metric, spec.lower_is_better
    if key is not None and metric == key.name:
        return metric, key.better == "lower"
    return metric, None


def check_monitor(
    file: str,
    root: Path,
    spec: MonitorSpec,
    pipeline_params: Mapping[str, Any],
    has_model: bool,
    declared_parameters: Callable[[Path], dict[str, NotebookParameter]],
    key: KeyMetric | None = None,
    period: str = "period",
) -> tuple[list[Problem], frozenset[str]]:
    """The section's problems, and the parameters its notebook declares (pipeline-wide ones may be for it)."""
    problems = []
    if not has_model:
        fix = "add a `model` section: monitoring scores the registered champion"
        problems.append(Problem(file, "monitor", "there is no registered model to monitor", fix))
    metric, lower_is_better = monitored_metric(spec, key)
    if metric is None:
        fix = "declare model.key_metric (name, better, format), or set monitor.metric"
        problems.append(Problem(file, "monitor.metric", "no metric to monitor", fix))
    elif lower_is_better is None:
        fix = "set monitor.lower_is_better: true for an error, false for a score"
        problems.append(Problem(file, "monitor.lower_is_better", f"which way is better for '{metric}'?", fix))
    if spec.max_decay is None and spec.limit is None:
        fix = "max_decay: 0.5 (50% worse than registered), limit: the worst acceptable value, or both"
        problems.append(Problem(file, "monitor", "no rule to judge decay by", fix))
    problems.extend(_check_log(file, spec.log))
    notebook = root / spec.notebook
    if outside_project(spec.notebook):  # never opened: a message must not quote a file outside
        fix = 'a path relative to the project root, without "..": "notebooks/06_monitor.ipynb"'
        message = f"'{spec.notebook}' is not a path inside the project"
        return [*problems, Problem(file, "monitor.notebook", message, fix)], frozenset()
    if not notebook.is_file():
        found = root.glob("**/*.ipynb")
        candidates = [path.relative_to(root).as_posix() for path in found if ".venv" not in path.parts]
        fix = did_you_mean(spec.notebook, candidates) or "create it or fix the path"
        problems.append(Problem(file, "monitor.notebook", f"notebook not found: {spec.notebook}", fix))
        return problems, frozenset()
    try:
        declared = declared_parameters(notebook)
    except ValueError as error:
        return [*problems, Problem(file, "monitor.notebook", str(error))], frozenset()
    if "champion_uri" not in declared:
        message = f"{spec.notebook} does not declare 'champion_uri': it cannot receive the model to score"
        fix = 'add `champion_uri = ""` to its parameters cell'
        problems.append(Problem(file, "monitor.notebook", message, fix))
    problems.extend(_check_params(file, spec, declared, _settings(spec, metric, period)))
    for name, value in pipeline_params.items():
        if name in declared and name not in spec.params and name not in SETTINGS:
            trouble = check_value(declared[name], value)
            if trouble is not None:
                problems.append(Problem(file, f"params.{name}", f"{trouble} (for the monitor notebook)"))
    return problems, frozenset(declared)


def _check_log(file: str, log: str) -> list[Problem]:
    if outside_project(log) or log.endswith("/"):
        fix = 'a file relative to the project root, e.g. "monitoring/checks.jsonl"'
        return [Problem(file, "monitor.log", f"'{log}' is not a file inside the project", fix)]
    return []


def _check_params(
    file: str, spec: MonitorSpec, declared: Mapping[str, NotebookParameter], values: Mapping[str, Any]
) -> list[Problem]:
    reserved = {key: (f"'{key}' is a monitor setting", f"set monitor.{key}") for key in SETTINGS}
    problems = parameter_problems(file, "monitor.params", spec.notebook, spec.params, declared, reserved)
    for key, value in values.items():
        if key in declared and (trouble := check_value(declared[key], value)) is not None:
            problems.append(Problem(file, f"monitor.{key}", f"{trouble} (the notebook's parameter)"))
    return problems


def _settings(spec: MonitorSpec, metric: str | None, period: str) -> dict[str, Any]:
    """What the notebook receives of the section, when it declares it."""
    return {
        "metric": metric,
        "max_decay": spec.max_decay,
        "limit": spec.limit,
        "min_periods": spec.min_periods,
        "min_weeks": spec.min_periods,
        "period": period,
    }


def resolve_monitor(
    root: Path,
    spec: MonitorSpec,
    pipeline_params: Mapping[str, Any],
    declared_parameters: Callable[[Path], dict[str, NotebookParameter]],
    key: KeyMetric | None = None,
    period: str = "period",
) -> Monitor:
    """The section with its notebook's parameter values: pipeline-wide, then the settings, then its own."""
    notebook = root / spec.notebook
    declared = declared_parameters(notebook)
    metric, lower_is_better = monitored_metric(spec, key)
    assert metric is not None and lower_is_better is not None  # check_monitor refused it otherwise
    settings = _settings(spec, metric, period)
    layers = [(PIPELINE, pipeline_params), (MONITOR_SETTING, settings), (MONITOR, spec.params)]
    resolved = resolve(declared, layers)
    return Monitor(
        source=spec.notebook,
        notebook=notebook,
        declared=declared,
        params=resolved.values,
        param_sources=resolved.sources,
        metric=metric,
        lower_is_better=lower_is_better,
        max_decay=spec.max_decay,
        limit=spec.limit,
        min_periods=spec.min_periods,
        period=period,
        log=root / spec.log,
        log_source=spec.log,
        timeout=spec.timeout,
    )
