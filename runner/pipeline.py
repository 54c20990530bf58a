"""One run of a pipeline, top to bottom.

    validated pipeline -> for each stage in order: execute the notebook (papermill), read its scraps
    (scrapbook), evaluate its gates -> stop at the first failure, later stages skipped -> reports
    (stage HTML, run.json, run index, history, step summary)

Every step is a function call with its data passed in and returned. Progress is told to an `Observer`
(the CLI draws it); nothing here prints.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from runner import __version__, lifecycle, notify, report
from runner.config import Pipeline, Stage
from runner.execute import execute_notebook
from runner.gates import GateScope, evaluate_gate
from runner.notify import Links
from runner.project import PRODUCTS_DIR, REPORTS_DIR, git_sha, tracking_uri
from runner.records import ModelRecord, RunRecord, StageFailure, StageRecord
from runner.registry import CHAMPION, Registry, RegistryError, Version, check_reachable
from runner.scraps import read_scraps


@dataclass(frozen=True)
class RunOptions:
    trigger: str = "manual"
    mode: str = "full"
    only: tuple[str, ...] = ()  # stages to run, with what they need; () = all
    selected: frozenset[str] | None = None  # resolved from `only` by the caller; None = all
    force: bool = False
    show_code: bool = False
    step_summary: Path | None = None  # $GITHUB_STEP_SUMMARY in GitHub Actions
    notify: bool = True  # False: a later `retrain notify` sends it (once the artifact's URL is known)
    links: Links = field(default_factory=Links)
    environ: Mapping[str, str] = field(default_factory=dict)  # where the notify section's secrets are read
    extra: dict[str, Any] = field(default_factory=dict)


class Observer(Protocol):
    def run_started(self, record: RunRecord, run_dir: Path) -> None: ...
    def stage_started(self, stage: StageRecord) -> None: ...
    def stage_finished(self, stage: StageRecord) -> None: ...


class Production:
    """The registry and the champion the run started with (what `champion.*` and `champion_uri` mean).

    It is opened in the background (importing MLflow takes over a second) while the first stages run, and
    waited for by the first stage that needs the champion.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="registry")
        self._opening = self._pool.submit(self._open, pipeline)
        self._pool.shutdown(wait=False)
        uri = tracking_uri(pipeline.root)
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
            # a new embedded store is created by whoever opens it first: a kernel creating it at the same
            # time would run the same schema migration and fail, so the first run waits for it here
            self._opening.result()

    @staticmethod
    def _open(pipeline: Pipeline) -> tuple[Registry, Version | None]:
        registry = lifecycle.open_registry(pipeline)
        return registry, registry.by_alias(CHAMPION)

    @property
    def registry(self) -> Registry:
        return self._opening.result()[0]

    @property
    def champion(self) -> Version | None:
        return self._opening.result()[1]


def run_pipeline(pipeline: Pipeline, options: RunOptions, observer: Observer) -> tuple[RunRecord, Path]:
    """Run every selected stage in order; return the run's record and its folder under reports/."""
    check_reachable(tracking_uri(pipeline.root))  # an unreachable server fails the run before any training
    production = Production(pipeline) if pipeline.model is not None else None
    record = new_run_record(pipeline, options)
    run_dir = pipeline.root / REPORTS_DIR / record.run_id
    (run_dir / PRODUCTS_DIR).mkdir(parents=True)
    observer.run_started(record, run_dir)
    deploy = set(pipeline.model.deploy) if pipeline.model else set()
    started = time.monotonic()
    try:
        for stage in pipeline.stages.values():
            if production is not None and stage.name in deploy:
                release_model(pipeline, record, run_dir, production)
            current = record.stages[stage.name]
            reason = skip_reason(stage, record, options, deploy)
            if reason:
                current.status, current.skip_reason = "skipped", reason
                observer.stage_finished(current)
                continue
            observer.stage_started(current)
            needed = production if production is not None and needs_champion(stage) else None
            run_stage(stage, current, record, pipeline.root, run_dir, needed, options)
            observer.stage_finished(current)
            report.write_run_json(run_dir, record)  # evidence on disk after every stage
            if current.failure is not None and current.failure.kind == "cancelled":
                raise KeyboardInterrupt
        if production is not None:
            release_model(pipeline, record, run_dir, production)
    except KeyboardInterrupt:
        cancel_running_stages(record)
        record.status = "cancelled"
    except RegistryError as error:  # the registry failed while opening or releasing: the model did not move
        record.model = ModelRecord(name=pipeline.model.name if pipeline.model else "", error=str(error))
    finally:
        finish_run(record, started)
        write_reports(pipeline, record, run_dir, options)
        if options.notify:
            record.notifications = notify.announce(record, pipeline.notify, options.links, options.environ)
            report.write_run_json(run_dir, record)
    return record, run_dir


def needs_champion(stage: Stage) -> bool:
    """Whether a stage reads the champion: it declares `champion_uri` or a gate names `champion.*`."""
    named = (name for gate in stage.gates for name in gate.names)
    return "champion_uri" in stage.declared or any(name.startswith("champion.") for name in named)


def release_model(pipeline: Pipeline, record: RunRecord, run_dir: Path, production: Production) -> None:
    """Register and promote the candidate once, when the stages that judge it succeeded."""
    model = pipeline.model
    assert model is not None
    judged = (record.stages[model.candidate_stage], record.stages[model.metrics])
    if record.model is not None or record.first_problem is not None:
        return
    if any(stage.status != "succeeded" for stage in judged):
        return  # not selected by --only: there is no candidate to judge
    record.model = lifecycle.release(pipeline, record, run_dir, production.registry, production.champion)


def new_run_record(pipeline: Pipeline, options: RunOptions) -> RunRecord:
    now = datetime.now(UTC)
    stages = {
        name: StageRecord(name=name, source=stage.source, params=dict(stage.params))
        for name, stage in pipeline.stages.items()
    }
    return RunRecord(
        run_id=f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}",
        pipeline=pipeline.name,
        trigger=options.trigger,
        mode=options.mode,
        git_sha=git_sha(pipeline.root),
        started_at=now.isoformat(timespec="seconds"),
        params=dict(pipeline.params),
        stages=stages,
        runner_version=__version__,
        options={"only": list(options.only), "force": options.force, **options.extra},
    )


def skip_reason(stage: Stage, record: RunRecord, options: RunOptions, deploy: Collection[str]) -> str | None:
    if options.selected is not None and stage.name not in options.selected:
        return "not selected by --only"
    stopped = record.first_problem
    if stopped is not None:
        return f"not run: stage '{stopped.name}' {stopped.status.replace('_', ' ')}"
    model = record.model
    if model is not None and model.error:
        return f"not run: {model.error}"
    if stage.name in deploy:
        if record.mode != "full":
            return f"not run: mode {record.mode} deploys nothing"
        if model is None or model.version is None or model.champion_after != model.version:
            return f"not run: this run's model is not the champion ({model.detail if model else 'no model'})"
    return None


def run_stage(
    stage: Stage,
    current: StageRecord,
    record: RunRecord,
    root: Path,
    run_dir: Path,
    production: Production | None,
    options: RunOptions,
) -> None:
    """Execute one stage, read its scraps, judge its gates, render its page; the outcome goes in `current`."""
    current.status = "running"
    started = time.monotonic()
    champion = current_champion(production, record)
    parameters = {**stage.params, **injected_parameters(stage, record, run_dir, champion)}
    executed = run_dir / f"{stage.name}.ipynb"
    result = execute_notebook(stage.notebook, executed, parameters, cwd=root, timeout_s=stage.timeout)
    current.timings = result.timings
    current.notebook = executed.name if executed.is_file() else None
    current.scraps = read_scraps(executed)
    if result.failure is not None:
        current.status, current.failure = "failed", result.failure
        current.error = f"stage '{stage.name}' failed: {result.failure.message}"
    else:
        scraps = {name: stage_record.scraps for name, stage_record in record.stages.items()}
        measured = lifecycle.champion_scope(champion, scraps)
        scope = GateScope(stage=stage.name, scraps=scraps, params=stage.gate_params, champion=measured)
        current.gates = [evaluate_gate(gate, scope) for gate in stage.gates]
        current.status = "gate_failed" if current.failed_gates else "succeeded"
    if current.notebook is not None:
        render_started = time.monotonic()
        html = run_dir / f"{stage.name}.html"
        title = f"{record.pipeline} · {stage.name}"
        report.render_stage_html(executed, html, title=title, show_code=options.show_code or stage.show_code)
        current.html = html.name
        current.timings.render_s = time.monotonic() - render_started
    current.duration_s = round(time.monotonic() - started, 3)


def current_champion(production: Production | None, record: RunRecord) -> Version | None:
    """The champion at the start of the run; after this run's promotion (or rollback), the one now."""
    if production is None:
        return None
    if record.model is None or record.model.champion_after == record.model.champion_before:
        return production.champion
    after = record.model.champion_after
    return production.registry.get(after) if after else None


def injected_parameters(
    stage: Stage, record: RunRecord, run_dir: Path, champion: Version | None
) -> dict[str, Any]:
    """run_dir, run_id, mode and champion_uri, for the notebooks that declare them."""
    available = {
        "run_dir": str(run_dir / PRODUCTS_DIR),
        "run_id": record.run_id,
        "mode": record.mode,
        "champion_uri": champion.uri if champion else "",
    }
    return {key: value for key, value in available.items() if key in stage.declared}


def cancel_running_stages(record: RunRecord) -> None:
    for stage in record.stages.values():
        if stage.status in ("running", "pending"):
            was_running = stage.status == "running"
            stage.status = "failed" if was_running else "skipped"
            if was_running and stage.failure is None:
                stage.failure = StageFailure("cancelled", "interrupted (Ctrl-C or SIGTERM)")
            if was_running:
                stage.error = f"stage '{stage.name}' was interrupted"
            else:
                stage.skip_reason = "not run: the run was interrupted"


def finish_run(record: RunRecord, started: float) -> None:
    record.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    record.duration_s = round(time.monotonic() - started, 3)
    if record.status == "running":
        problem = record.first_problem
        if problem is not None:
            record.status = "gate_failed" if problem.status == "gate_failed" else "failed"
        else:
            record.status = "failed" if record.model is not None and record.model.error else "succeeded"


def write_reports(pipeline: Pipeline, record: RunRecord, run_dir: Path, options: RunOptions) -> None:
    report.write_run_json(run_dir, record)
    report.render_run_index(run_dir, record)
    report.render_history_index(run_dir.parent)
    if options.step_summary is not None:
        report.write_step_summary(record, options.step_summary)
