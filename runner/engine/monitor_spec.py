"""The optional `monitor` section of pipeline.yaml: how `retrain monitor` checks the champion for decay.

    monitor:
      notebook: notebooks/06_monitor.ipynb   # scores the champion on the labeled weeks it has not seen
      metric: wape                           # a scrap of that notebook and a metric the champion registered
      max_decay: 0.5                         # decay: live metric worse than registered by more than 50%
      min_weeks: 2                           # fewer unseen weeks than this: too few to judge
      log: monitoring/checks.jsonl           # one JSON line per check, appended
      timeout: 300                           # seconds, the whole notebook

Kept apart from config.py, which calls `check_monitor` and `resolve_monitor`: the section is validated like a
stage (notebook on disk, declared parameters, values that fit), and its errors name the key path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

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

ParamName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
# The section's own settings, also given to the notebook when it declares them, so that its page states the
# threshold the runner applies (the runner's verdict is the one that counts).
SETTINGS = ("metric", "max_decay", "min_weeks")


class MonitorSpec(BaseModel):
    """The `monitor` section as written in pipeline.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    notebook: str
    metric: ParamName = "wape"
    # the direction of the metric: wape, mae, rmse are errors (lower is better); an accuracy would be False
    lower_is_better: bool = True
    max_decay: float = Field(gt=0, description="relative: 0.5 = live metric 50% worse than registered")
    min_weeks: int = Field(default=1, ge=1, description="fewer unseen weeks than this are not judged")
    log: str = "monitoring/checks.jsonl"  # relative to the project root
    timeout: float = Field(default=600, gt=0, description="seconds for the whole notebook")
    params: dict[ParamName, Any] = Field(default_factory=dict)


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
    max_decay: float
    min_weeks: int
    log: Path  # absolute
    log_source: str  # as written
    timeout: float

    def decay(self, live: float, registered: float) -> float:
        """How much worse the live metric is than the registered one, relative; negative when better."""
        worse = live - registered if self.lower_is_better else registered - live
        if registered == 0:  # a perfect registered score: any worsening is infinitely worse
            return math.inf if worse > 0 else 0.0
        return worse / abs(registered)


def check_monitor(
    file: str,
    root: Path,
    spec: MonitorSpec,
    pipeline_params: Mapping[str, Any],
    has_model: bool,
    declared_parameters: Callable[[Path], dict[str, NotebookParameter]],
) -> tuple[list[Problem], frozenset[str]]:
    """The section's problems, and the parameters its notebook declares (pipeline-wide ones may be for it)."""
    problems = []
    if not has_model:
        fix = "add a `model` section: monitoring scores the registered champion"
        problems.append(Problem(file, "monitor", "there is no registered model to monitor", fix))
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
    problems.extend(_check_params(file, spec, declared))
    for key, value in pipeline_params.items():
        if key in declared and key not in spec.params and key not in SETTINGS:
            trouble = check_value(declared[key], value)
            if trouble is not None:
                problems.append(Problem(file, f"params.{key}", f"{trouble} (for the monitor notebook)"))
    return problems, frozenset(declared)


def _check_log(file: str, log: str) -> list[Problem]:
    if outside_project(log) or log.endswith("/"):
        fix = 'a file relative to the project root, e.g. "monitoring/checks.jsonl"'
        return [Problem(file, "monitor.log", f"'{log}' is not a file inside the project", fix)]
    return []


def _check_params(file: str, spec: MonitorSpec, declared: Mapping[str, NotebookParameter]) -> list[Problem]:
    settings = {key: (f"'{key}' is a monitor setting", f"set monitor.{key}") for key in SETTINGS}
    problems = parameter_problems(file, "monitor.params", spec.notebook, spec.params, declared, settings)
    for key in SETTINGS:
        if key in declared and (trouble := check_value(declared[key], getattr(spec, key))) is not None:
            problems.append(Problem(file, f"monitor.{key}", f"{trouble} (the notebook's parameter)"))
    return problems


def resolve_monitor(
    root: Path,
    spec: MonitorSpec,
    pipeline_params: Mapping[str, Any],
    declared_parameters: Callable[[Path], dict[str, NotebookParameter]],
) -> Monitor:
    """The section with its notebook's parameter values: pipeline-wide, then the settings, then its own."""
    notebook = root / spec.notebook
    declared = declared_parameters(notebook)
    settings = {key: getattr(spec, key) for key in SETTINGS}
    layers = [(PIPELINE, pipeline_params), (MONITOR_SETTING, settings), (MONITOR, spec.params)]
    resolved = resolve(declared, layers)
    return Monitor(
        source=spec.notebook,
        notebook=notebook,
        declared=declared,
        params=resolved.values,
        param_sources=resolved.sources,
        metric=spec.metric,
        lower_is_better=spec.lower_is_better,
        max_decay=spec.max_decay,
        min_weeks=spec.min_weeks,
        log=root / spec.log,
        log_source=spec.log,
        timeout=spec.timeout,
    )
