"""One run of a pipeline, top to bottom.

    validated pipeline -> the project's lock -> for each stage once the stages it needs are done (up to
    `max_parallel` at once, engine/schedule.py): fingerprint -> reuse an earlier identical run's results
    (cache) or execute the notebook (papermill, in a kernel started while the previous stage ran), read its
    scraps (scrapbook), evaluate its gates, render its page in the background -> stop at the first failure,
    later stages skipped -> model lifecycle -> new data accepted, quarantined or kept (intake) -> reports
    (stage HTML, run.json, run index, history, step summary) -> notifications

Every step is a function call with its data passed in and returned. Progress is told to an `Observer`
(the CLI draws it); nothing here prints. Everything written goes through runner/files.py with the run's
`Redactor` (runner/secrets.py): the values of the pipeline's secrets never reach a file.
"""

from __future__ import annotations

import errno
import os
import secrets
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from runner import __version__
from runner.endings import SpaceReserve, close_abandoned_runs, discard_products, write_final_record
from runner.engine import cache, intake, params, schedule
from runner.engine.cache import StageCache
from runner.engine.config import Pipeline, Stage
from runner.engine.execute import Stopper, execute_notebook, strip_ansi
from runner.engine.gates import GateScope, evaluate_gate
from runner.engine.kernels import Kernel, KernelPool, Workers
from runner.engine.lock import project_lock
from runner.engine.scraps import read_scraps
from runner.errors import WriteError
from runner.files import remove_stale_temporaries
from runner.interrupts import shielded
from runner.production import lifecycle, store_secrets
from runner.production.registry import (
    CHAMPION,
    Registry,
    RegistryError,
    Version,
    check_reachable,
    release_connections,
    worker_imports,
)
from runner.production.store import RUN_LOG
from runner.project import MLFLOW_DIR, PRODUCTS_DIR, REPORTS_DIR, git_commit, tracking_uri
from runner.records import (
    ChampionRecheck,
    ModelRecord,
    NotificationRecord,
    RunContext,
    RunRecord,
    StageFailure,
    StageRecord,
)
from runner.report import history, notify
from runner.report import pages as report
from runner.report.notify import Links
from runner.report.renders import BackgroundRenders, PageJob
from runner.secrets import Redactor


@dataclass(frozen=True)
class RunOptions:
    trigger: str = "manual"
    mode: str = "full"
    only: tuple[str, ...] = ()  # stages to run, with what they need; () = all
    selected: frozenset[str] | None = None  # resolved from `only` by the caller; None = all
    force: bool = False  # execute every stage, whatever the cache holds
    force_stages: frozenset[str] = frozenset()  # execute these (a --force STAGE and what needs it)
    deploy_only: bool = False  # `retrain deploy`: only the model's deploy stages, with the champion as it is
    warm_kernels: bool = True  # start a stage's kernel while the stage before it runs
    fork_kernels: bool = True  # ... forked from a kernel server that did the pipeline's warm-up once
    max_parallel: int | None = None  # stages executed at once, at most; None: the pipeline's `max_parallel`
    show_code: bool = False
    step_summary: Path | None = None  # $GITHUB_STEP_SUMMARY in GitHub Actions
    notify: bool = True  # False: a later `retrain notify` sends it (once the artifact's URL is known)
    links: Links = field(default_factory=Links)
    environ: Mapping[str, str] = field(default_factory=dict)  # where the notify section's secrets are read
    lock_wait_s: float = 0.0  # how long to wait for another run in the project to finish
    context: RunContext = field(default_factory=RunContext)  # who and what started it (commands fill it)
    on_lock_wait: Callable[[str], None] | None = None  # told who holds the lock, when this run waits


class Observer(Protocol):
    def run_started(self, record: RunRecord, run_dir: Path) -> None: ...
    def stage_started(self, stage: StageRecord) -> None: ...
    def stage_finished(self, stage: StageRecord) -> None: ...
    def step(self, text: str) -> None:
        """A step of the run outside its stages, as it begins or ends: the model's release, the new data."""


class Production:
    """The registry and the champion the run started with (what `champion.*` and `champion_uri` mean).

    With the embedded store the champion is read straight from its sqlite file, in milliseconds. Otherwise
    MLflow (over a second to import) reads it in the background while the first stages run. MLflow's calls
    run in the run's workers (`use_workers`, `prepare`) when they have MLflow imported already. Otherwise
    `prepare()` imports MLflow in the background as soon as a stage is executed, so that registering does not
    wait for it. A run whose stages all come from the cache, and that leaves production as it is, never
    imports it.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.registry = lifecycle.open_registry(pipeline)
        uri = self.registry.tracking_uri
        self._new_store = uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists()
        self._champion: Future[Version | None] = Future()
        if self.registry.store is not None and not self._new_store:
            self._champion.set_result(self.registry.champion_fast())
        elif not self._new_store:
            self._champion = _in_background(lambda: self.registry.by_alias(CHAMPION))
        self._prepared = False
        self._creating = threading.Lock()

    def use_workers(self, workers: Workers) -> None:
        """Run MLflow's calls in the run's workers, and create a new embedded store.

        A new embedded store is created by whoever opens it first: a kernel creating it at the same time
        would run the same schema migration and fail, so no stage starts before it exists. It is created
        (by reading the champion, in a worker when the run has them) while the first kernel starts."""
        self.registry.work_in(workers)
        self._create_store()

    def _create_store(self) -> None:
        with self._creating:
            if self._new_store and not self._champion.done():
                self._champion.set_result(self.registry.by_alias(CHAMPION))
                lifecycle.keep_new_store(self.registry)  # the next new store of this machine is a copy

    def prepare(self) -> None:
        """A stage runs, so registering will probably follow: unless MLflow's calls go to workers, MLflow is
        imported here in the background now."""
        if not self._prepared and not self.registry.elsewhere:
            self._prepared = True
            _in_background(lambda: self.registry.client)

    def recheck(self, pipeline: Pipeline, say: lifecycle.Say) -> ChampionRecheck | None:
        """Check the champion again when a stopped run left its smoke check unfinished (lifecycle.py); the
        champion the run works with is the one after that check."""
        found = lifecycle.recheck_champion(pipeline, self.registry, self.champion, self.registry.workers, say)
        if found is not None and found.champion_after != found.version:
            after = found.champion_after
            self._champion = Future()
            self._champion.set_result(self.registry.get(after) if after else None)
        return found

    @property
    def champion(self) -> Version | None:
        self._create_store()  # done by use_workers() before any stage; here only if the run stopped before
        return self._champion.result()

    @property
    def champion_known(self) -> bool:
        return self._champion.done()


def _in_background(work: Callable[[], Any]) -> Future[Any]:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="registry")
    future = pool.submit(work)
    pool.shutdown(wait=False)
    return future


@dataclass
class RunState:
    """What the stages of a run share: its record and folder, production, the cache, kernels started ahead."""

    pipeline: Pipeline
    options: RunOptions
    record: RunRecord
    run_dir: Path
    production: Production | None  # opened first thing by execute_run (it may fail: the run records why)
    cache: StageCache
    kernels: KernelPool
    deploy: frozenset[str]  # the model's deploy stages: they run after promotion
    refit: str | None  # the model's refit stage: it runs once the model is judged, before it is registered
    redact: Redactor  # every file this run writes goes through it
    observer: Observer
    renders: BackgroundRenders  # stage pages, rendered while the next stages execute
    stopper: Stopper  # stops the stages executing in worker threads when the run is interrupted
    released: bool = False  # the model went through the registry (release_model runs once)


def run_pipeline(pipeline: Pipeline, options: RunOptions, observer: Observer) -> tuple[RunRecord, Path]:
    """Run every selected stage in order, one run at a time in the project; return the run's record and
    its folder under reports/."""
    check_reachable(tracking_uri(pipeline.root))  # an unreachable server fails the run before any training
    # the kernels inherit this process's environment: its secret values are what must not be written
    redact = Redactor.from_environ(pipeline.secrets, {**os.environ, **options.environ})
    reports = pipeline.root / REPORTS_DIR
    try:
        with project_lock(reports, redact=redact, wait_s=options.lock_wait_s, on_wait=options.on_lock_wait):
            # what a run killed mid-write left; no writer is at work now
            for folder in (reports, *intake.folders(pipeline.data, pipeline.root)):
                remove_stale_temporaries(folder)
            close_abandoned_runs(reports, redact)
            return run_locked(pipeline, options, observer, redact)
    finally:  # a process that runs many pipelines (replay, the tests) keeps no connection of this one
        release_connections()


def run_locked(
    pipeline: Pipeline, options: RunOptions, observer: Observer, redact: Redactor
) -> tuple[RunRecord, Path]:
    """The run itself, with the project's lock held: its stages and model (`execute_run`), then its end
    (`end_run`), which decides its status from what happened, whatever happened."""
    drops = intake.waiting(pipeline.data, pipeline.root) if pipeline.data is not None else []
    record = new_run_record(pipeline, options)
    if pipeline.data is not None:
        record.data = intake.record_drops(drops, pipeline.root)
    run_dir = pipeline.root / REPORTS_DIR / record.run_id
    (run_dir / PRODUCTS_DIR).mkdir(parents=True)
    reserve = SpaceReserve(run_dir)  # room for the final run.json should the disk fill up meanwhile
    if pipeline.declared is not None:
        pipeline.declared.save(redact)  # the next load of these notebooks needs no papermill
    observer.run_started(record, run_dir)
    deploy = frozenset(pipeline.model.deploy if pipeline.model else ())
    kernels = KernelPool(
        pipeline.root,
        warm=options.warm_kernels,
        fork=options.fork_kernels,
        preload=pipeline.warmup,
        for_workers=mlflow_imports(pipeline),
    )
    stage_cache = StageCache(pipeline.root, run_dir.parent, redact)
    renders, stopper = BackgroundRenders(redact), Stopper()
    refit = pipeline.model.refit_stage if pipeline.model else None
    run = RunState(
        pipeline, options, record, run_dir, None, stage_cache, kernels, deploy, refit, redact, observer,
        renders, stopper,
    )  # fmt: skip
    started = time.monotonic()
    stopped: BaseException | None = None
    try:
        execute_run(run)
    except BaseException as error:  # whatever stopped the run decides its status: end_run
        stopped = error
    return end_run(run, drops, reserve, started, stopped)


def mlflow_imports(pipeline: Pipeline) -> str:
    """What MLflow's calls need, for the run's kernel server to import after the warm-up when the pipeline
    registers a model: imported once there, not again by the runner and by each stage that uses MLflow."""
    return worker_imports(tracking_uri(pipeline.root)) if pipeline.model is not None else ""


def execute_run(run: RunState) -> None:
    """Production opened (its champion checked again if a stopped run left it unchecked), the stages in
    order (cache or execute, gates), the model's release, the stage pages collected."""
    pipeline, record = run.pipeline, run.record
    if pipeline.model is not None:
        run.production = Production(pipeline)  # a registry that cannot be read: RegistryError, the run fails
    start_next_kernel(run, after=None)
    if run.production is not None:
        run.production.use_workers(run.kernels.workers)
        record.champion_recheck = run.production.recheck(pipeline, say=run.observer.step)
    schedule.run_stages(
        list(pipeline.stages),
        pipeline.needs,
        run.options.max_parallel or pipeline.max_parallel,
        start=lambda name: start_stage(run, pipeline.stages[name]),
        finish=lambda name: finish_stage(run, pipeline.stages[name]),
        barriers=run.deploy,  # deploy stages wait for the model's release, which waits for every stage
        on_interrupt=run.stopper.stop,
    )
    if run.production is not None:
        release_model(run)
    run.renders.collect(wait_all=True)  # the run index links every page: they must all be there


def end_run(
    run: RunState,
    drops: list[intake.Drop],
    reserve: SpaceReserve,
    started: float,
    stopped: BaseException | None,
) -> tuple[RunRecord, Path]:
    """The end of every run, however it went. First, held against Ctrl-C and SIGTERM (milliseconds to a
    second): the kernels stopped, the status decided (`finish_run`) and written, the new data settled and
    written (`settle_outcome`). Then the pages and messages, which a signal cuts short: the status and the
    exit code stay the run's.

    Raises, after the reports, the WriteError or bug that stopped the run (the CLI says what happened)."""
    record, run_dir, redact = run.record, run.run_dir, run.redact
    reraise = note_what_stopped(run, stopped)
    interrupted = False
    try:
        with shielded():  # a signal that comes meanwhile is raised when the block ends
            reraise = settle_outcome(run, drops, reserve, started, reraise)
    except KeyboardInterrupt:
        interrupted = True
    try:
        if interrupted:
            raise KeyboardInterrupt
        # a cancelled run has seconds left: its own page, not the history (the next run draws it)
        history = record.status != "cancelled"
        write_pages(run.pipeline, record, run_dir, run.options, redact, history=history)
        if run.options.notify:
            record.notifications = announce(run, cancelled=record.status == "cancelled")
            report.write_run_json(run_dir, record, redact=redact)
    except KeyboardInterrupt:  # the outcome is written: a signal now only cuts the pages and messages short
        record.warnings.append("interrupted: the run's pages and messages were cut short")
        with suppress(WriteError):
            report.write_run_json(run_dir, record, redact=redact)
    except WriteError as error:
        record.warnings.append(f"the run's pages are incomplete: {error}")
    if reraise is not None:
        raise reraise
    return record, run_dir


def settle_outcome(
    run: RunState,
    drops: list[intake.Drop],
    reserve: SpaceReserve,
    started: float,
    reraise: BaseException | None,
) -> BaseException | None:
    """Kernels stopped, status decided and written, new data settled and written; returns what the CLI
    must still hear about (the WriteError of a record that could not be written, when nothing else was)."""
    record, run_dir, redact = run.record, run.run_dir, run.redact
    run.kernels.close()  # the kernels started for stages that did not run
    record.output = kept_output(run.kernels.output(None), redact)
    run.kernels.discard_outputs()
    run.renders.close(wait=record.status != "cancelled")
    finish_run(run.pipeline, record, started)
    if isinstance(reraise, WriteError) and reraise.errno == errno.ENOSPC:
        discard_products(run)  # written on a full disk, any of them may be cut short
    try:
        write_final_record(run_dir, record, redact, reserve)  # the outcome first, then the data moves
    except WriteError as error:  # not even the outcome can be written: nothing moves
        record.status, record.error = "failed", f"the run's record could not be written: {error}"
        reserve.release()
        return reraise or error
    if run.pipeline.data is not None:
        if drops:
            run.observer.step(f"data: settling {len(drops)} new file(s) after a run that {record.status}")
        settle_data(run.pipeline, record, drops, redact)
        try:
            write_final_record(run_dir, record, redact, reserve)
        except WriteError as error:  # the outcome is on disk; only where the data went is not
            record.warnings.append(f"run.json does not say where the new data went: {error}")
    reserve.release()
    return reraise


def note_what_stopped(run: RunState, stopped: BaseException | None) -> BaseException | None:
    """Put in the record what stopped the run before its end; returns what the CLI must still hear about
    (a file that could not be written, a bug), else None."""
    record = run.record
    if stopped is None:
        return None
    if isinstance(stopped, KeyboardInterrupt):
        cancel_running_stages(record)
        record.status = "cancelled"
        return None
    if isinstance(stopped, RegistryError):  # the registry failed while opening or releasing
        name = run.pipeline.model.name if run.pipeline.model else ""
        record.model = record.model or ModelRecord(name=name)
        record.model.error = str(stopped)
        stop_running_stages(record, StageFailure("runner", str(stopped)), "the registry failed")
        return None
    if isinstance(stopped, WriteError):  # a full disk, a read-only reports/: the run cannot keep its evidence
        record.error = str(stopped)
        stop_running_stages(record, StageFailure("runner", str(stopped)), "the runner could not write a file")
        return stopped
    record.error = f"a bug in retrain {__version__}: {type(stopped).__name__}: {stopped}"[:500]
    stop_running_stages(record, StageFailure("runner", record.error), "the runner failed")
    return stopped


def start_stage(run: RunState, stage: Stage) -> schedule.Work | None:
    """Decide a stage whose needs are done: skip it, reuse it from the cache (None: it is settled), or
    return the work that executes it (in a worker thread when stages run in parallel)."""
    if run.production is not None and stage.name == run.refit:
        judge_model(run)  # the policy decides before the refit: a held model is not refit
    if run.production is not None and stage.name in run.deploy:
        if run.record.mode == "full" and run.record.first_problem is None and executed_any(run.record):
            run.kernels.start(stage.name, stage.warmup, notebook=stage.notebook, now=True)  # boots meanwhile
        release_model(run)
    current = run.record.stages[stage.name]
    reason = skip_reason(stage, run.record, run.options, run.deploy) or already_deployed(run, stage)
    if not reason and stage.name == run.refit:
        reason = lifecycle.refit_reason(run.record)
    if reason:
        run.kernels.discard(stage.name)
        current.status, current.skip_reason = "skipped", reason
        run.observer.stage_finished(current)
        return None
    if reuse_cached(run, stage, current):  # an earlier run's results, when nothing changed
        run.observer.stage_finished(current)
        report.write_run_json(run.run_dir, run.record, redact=run.redact)
        return None
    run.observer.stage_started(current)
    return execute_stage(run, stage, current)


def finish_stage(run: RunState, stage: Stage) -> None:
    """After a stage executed: remember it when it succeeded, tell the observer, keep the evidence."""
    current = run.record.stages[stage.name]
    if current.status == "succeeded":
        run.cache.remember(stage, current.fingerprint, run.run_dir, current)
        if stage.name in run.deploy:
            run.cache.remember_effect(stage.name, deploy_key(run, stage), run.record.run_id)
    run.renders.collect(wait_all=False)
    if run.redact.active:
        redact_tracking_store(run)
    run.observer.stage_finished(current)
    report.write_run_json(run.run_dir, run.record, redact=run.redact)  # evidence on disk after every stage
    if current.failure is not None and current.failure.kind == "cancelled":
        raise KeyboardInterrupt


def redact_tracking_store(run: RunState) -> None:
    """Take the secrets out of what the stage's notebook logged to MLflow (production/store_secrets.py)."""
    environ = {**os.environ, **run.options.environ}
    values = {name: environ[name] for name in run.pipeline.secrets if environ.get(name)}
    since_ms = int(datetime.fromisoformat(run.record.started_at).timestamp() * 1000) - 1000
    uri = tracking_uri(run.pipeline.root)
    for warning in store_secrets.redact_store(uri, since_ms, run.redact, values, run.kernels.workers):
        if warning not in run.record.warnings:
            run.record.warnings.append(warning)


def reuse_cached(run: RunState, stage: Stage, current: StageRecord) -> bool:
    """Take the stage's products, scraps, gates and pages from an earlier run with the same fingerprint."""
    started = time.monotonic()
    current.fingerprint = stage_fingerprint(run, stage)
    if forced(run.options, stage.name) or stage.name == run.refit:  # a refit is never reused
        return False
    hit = run.cache.lookup(stage.name, current.fingerprint)
    if hit is None:
        return False
    run.kernels.discard(stage.name)
    run.cache.reuse(hit, run.run_dir, current)
    current.duration_s = round(time.monotonic() - started, 3)
    return True


def execute_stage(run: RunState, stage: Stage, current: StageRecord) -> schedule.Work:
    """The work that runs the stage's notebook, in the kernel started for it, if any."""
    current.status = "running"  # before guessing the next kernel: this stage's is taken
    start_next_kernel(run, after=stage)
    if run.production is not None:
        run.production.prepare()  # registering will follow: make MLflow ready meanwhile
    needed = run.production if run.production is not None and needs_champion(stage) else None
    kernel = run.kernels.take(stage.name)  # from here on execute_notebook shuts it down
    return lambda: run_stage(stage, current, run, needed, kernel)


def stage_fingerprint(
    run: RunState, stage: Stage, upstream: Mapping[str, str | None] | None = None
) -> str | None:
    """The stage's content hash (see runner/engine/cache.py); None when it cannot be cached."""
    if stage.inputs is None:
        return None
    known = upstream if upstream is not None else {n: s.fingerprint for n, s in run.record.stages.items()}
    champion = current_champion(run.production, run.record) if needs_champion(stage) else None
    return cache.stage_fingerprint(
        stage,
        run.pipeline.root,
        injected=injected_parameters(run, stage, champion),
        champion=champion.version if champion else None,
        upstream={name: known.get(name) for name in stage.needs},
        hashes=run.cache.hashes,
    )


def executed_any(record: RunRecord) -> bool:
    """Whether a stage of this run was executed (not reused from the cache): only then may a deploy follow
    (a run whose stages all come from the cache starts no kernel at all)."""
    return any(stage.status == "succeeded" for stage in record.stages.values())


def start_next_kernel(run: RunState, after: Stage | None) -> None:
    """Start the kernel of the next stage that will probably execute, so that it is ready when its turn comes.

    A guess: the next selected stage that the cache cannot serve, or the model's refit unless a version
    already holds the model (`lifecycle.refit_expected`: so a rerun with nothing changed starts no kernel).
    A wrong guess costs one kernel start; the kernel is shut down unused. Before the first stage (`after`
    None) nothing runs: the kernel is needed at once, not after the warm-up. A deploy stage's kernel is
    started when the model's release begins (`start_stage`): the release takes about as long as a forked
    kernel's start, and an idle kernel beside the stage that judges the model would add its memory (~60 MB
    on the demo) to the run's peak.
    """
    if not run.kernels.warm:
        return
    now = after is None
    stages = list(run.pipeline.stages.values())
    later = stages[stages.index(after) + 1 :] if after is not None else stages
    guessed = {name: record.fingerprint for name, record in run.record.stages.items()}
    for stage in later:
        if run.options.selected is not None and stage.name not in run.options.selected:
            continue
        if run.record.stages[stage.name].status != "pending":
            continue  # already started (stages run in parallel) or settled
        if stage.name in run.deploy:
            return
        if run.production is not None and stage.name == run.refit:  # never reused: it runs unless judged out
            if lifecycle.refit_expected(run.pipeline, run.production.registry, run.record.mode):
                run.kernels.start(stage.name, stage.warmup, notebook=stage.notebook, now=now)
                return
            continue
        if run.production is not None and needs_champion(stage) and not run.production.champion_known:
            run.kernels.start(stage.name, stage.warmup, notebook=stage.notebook, now=now)  # no registry wait
            return
        guessed[stage.name] = stage_fingerprint(run, stage, guessed)
        if forced(run.options, stage.name) or run.cache.lookup(stage.name, guessed[stage.name]) is None:
            run.kernels.start(stage.name, stage.warmup, notebook=stage.notebook, now=now)
            return


def forced(options: RunOptions, stage: str) -> bool:
    return options.force or stage in options.force_stages


def deploy_key(run: RunState, stage: Stage) -> str:
    """What a deploy stage deploys with: its code and parameters, and the champion it receives."""
    champion = current_champion(run.production, run.record)
    injected = injected_parameters(run, stage, champion)
    return cache.effect_key(stage, injected=injected, champion=champion.version if champion else None)


def already_deployed(run: RunState, stage: Stage) -> str | None:
    """Why a deploy stage need not run: this run left production as it was, and the same deployment of the
    same champion (code, parameters) succeeded in an earlier run that is still in reports/."""
    model = run.record.model
    if stage.name not in run.deploy or model is None or forced(run.options, stage.name):
        return None
    if model.action != "unchanged" or model.promoted or model.champion_after != model.version:
        return None
    done_by = run.cache.effect_run(stage.name, deploy_key(run, stage))
    if done_by is None:
        return None
    return (
        f"not run: version {model.version} is already the champion and run {done_by} deployed it with this"
        f" code and these parameters (--force {stage.name} deploys it again)"
    )


def needs_champion(stage: Stage) -> bool:
    """Whether a stage reads the champion: it declares `champion_uri` or a gate names `champion.*`."""
    named = (name for gate in stage.gates for name in gate.names)
    return "champion_uri" in stage.declared or any(name.startswith("champion.") for name in named)


def judge_model(run: RunState) -> None:
    """Judge the candidate once, when the stages that judge it succeeded: already registered? what does the
    promotion policy decide? (lifecycle.judge; the comparison runs in one of the run's workers)."""
    model, record, production = run.pipeline.model, run.record, run.production
    assert model is not None and production is not None
    judged = (record.stages[model.candidate_stage], record.stages[model.metrics])
    if record.model is not None or record.first_problem is not None:
        return
    if any(stage.status not in ("succeeded", "cached") for stage in judged):
        if record.options.get("deploy_only"):  # `retrain deploy`: the champion as it is, nothing judged
            record.model = lifecycle.as_deployed(model.name, production.champion)
        return  # otherwise not selected by --only: there is no candidate to judge
    registry, champion = production.registry, production.champion
    record.model = lifecycle.judge(run.pipeline, record, registry, champion, run.kernels.workers)


def release_model(run: RunState) -> None:
    """Register and promote the judged candidate once (and its refit), as the policy decided. The smoke check
    runs in one of the run's workers, when it has them. `lifecycle.release` keeps `record.model` as the
    record from its start, so an interrupt or a registry failure halfway leaves what was done on record."""
    judge_model(run)
    record, production = run.record, run.production
    assert production is not None
    if record.model is None or run.released or record.first_problem is not None:
        return
    if record.options.get("deploy_only"):  # the champion as it is: nothing to register
        return
    run.released = True
    registry, champion, workers = production.registry, production.champion, run.kernels.workers
    lifecycle.release(run.pipeline, record, run.run_dir, registry, champion, workers, say=run.observer.step)


def settle_data(pipeline: Pipeline, record: RunRecord, drops: list[intake.Drop], redact: Redactor) -> None:
    """Accept the new data after a successful run, quarantine it when its checks refused it, else keep it."""
    if pipeline.data is None:
        return
    try:
        model = pipeline.model is not None
        record.data = intake.settle(pipeline.data, record, drops, pipeline.root, redact, model_declared=model)
    except OSError as error:  # each move is atomic: what moved is where it went, the rest is where it was
        record.data = intake.record_drops(drops, pipeline.root)
        record.data.action, record.data.detail = "kept", f"moving the new data failed: {error}"


def new_run_record(pipeline: Pipeline, options: RunOptions) -> RunRecord:
    now = datetime.now(UTC)
    sha, subject = git_commit(pipeline.root)
    context = replace(options.context, commit_message=options.context.commit_message or subject)
    if sha and context.commit_url.endswith("/commit/"):
        context = replace(context, commit_url=context.commit_url + sha)
    stages = {
        name: StageRecord(
            name=name, source=stage.source, params=dict(stage.params), param_sources=dict(stage.param_sources)
        )
        for name, stage in pipeline.stages.items()
    }
    return RunRecord(
        # the short part starts with the milliseconds: cached runs take less than a second, and run ids
        # must still sort by time
        run_id=f"{now:%Y%m%dT%H%M%SZ}-{now.microsecond // 1000:03d}{secrets.token_hex(2)[:3]}",
        pipeline=pipeline.name,
        trigger=options.trigger,
        mode=options.mode,
        git_sha=sha,
        started_at=now.isoformat(timespec="seconds"),
        params=dict(pipeline.params),
        stages=stages,
        runner_version=__version__,
        key_metric=pipeline.key_metric,
        context=context,
        options={
            "only": list(options.only),
            "force": options.force,
            "force_stages": sorted(options.force_stages),
            **({"deploy_only": True} if options.deploy_only else {}),
        },
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
    run: RunState,
    production: Production | None,
    kernel: Kernel | None = None,
) -> None:
    """Execute one stage, read its scraps, judge its gates, queue its page; the outcome goes in `current`.

    `production` is given when the stage reads the champion. `kernel` is the kernel started ahead for this
    stage, if any (execute_notebook shuts it down). May run in a worker thread: it changes `current` only."""
    record, root, run_dir, options = run.record, run.pipeline.root, run.run_dir, run.options
    current.status = "running"
    started = time.monotonic()
    champion = current_champion(production, record)
    given = injected_parameters(run, stage, champion)
    parameters = {**stage.params, **given}
    current.param_sources = {**stage.param_sources, **dict.fromkeys(given, params.RUNNER)}
    executed = run_dir / f"{stage.name}.ipynb"
    result = execute_notebook(
        stage.notebook,
        executed,
        parameters,
        cwd=root,
        timeout_s=stage.timeout,
        redact=run.redact,
        kernel=kernel,
        kernels=run.kernels,
        stopper=run.stopper,
        stage=stage.name,
    )
    current.output = kept_output(run.kernels.output(stage.name), run.redact)
    current.timings = result.timings
    current.notebook = executed.name if executed.is_file() else None
    if result.interrupted and result.failure is not None:  # seconds left: the notebook keeps the evidence
        current.status, current.failure = "failed", result.failure
        current.error = f"stage '{stage.name}' was interrupted: {result.failure.message}"
        current.duration_s = round(time.monotonic() - started, 3)
        return
    current.scraps = read_scraps(executed, run.kernels.workers)
    if result.failure is not None:
        current.status, current.failure = "failed", result.failure
        current.error = f"stage '{stage.name}' failed: {result.failure.message}"
    else:
        scraps = {name: stage_record.scraps for name, stage_record in record.stages.items()}
        measured = lifecycle.champion_scope(champion, scraps)
        scope = GateScope(stage=stage.name, scraps=scraps, params=stage.gate_params, champion=measured)
        current.gates = [evaluate_gate(gate, scope) for gate in stage.gates]
        unscored = lifecycle.champion_trouble(champion, scraps)
        for gate, verdict in zip(stage.gates, current.gates, strict=True):
            if unscored and any(name.startswith("champion.") for name in gate.names):
                verdict.detail += f" (champion.* are its registered metrics: {unscored})"
        current.status = "gate_failed" if current.failed_gates else "succeeded"
    current.duration_s = round(time.monotonic() - started, 3)  # the page is rendered off the critical path
    if current.notebook is not None:
        title = f"{record.pipeline} · {stage.name}"
        show_code = options.show_code or stage.show_code
        run.renders.submit(current, PageJob(executed, run_dir / f"{stage.name}.html", title, show_code))


OUTPUT_KEPT = 50  # lines of what a process wrote outside the cells, kept in run.json


def kept_output(lines: list[str], redact: Redactor) -> list[str]:
    """The last lines a kernel or worker wrote outside the cells, redacted and without terminal colours."""
    return [redact.redact(strip_ansi(line))[:500] for line in lines[-OUTPUT_KEPT:]]


def current_champion(production: Production | None, record: RunRecord) -> Version | None:
    """The champion at the start of the run; after this run's promotion (or rollback), the one now."""
    if production is None:
        return None
    if record.model is None or record.model.champion_after == record.model.champion_before:
        return production.champion
    after = record.model.champion_after
    return production.registry.get(after) if after else None


def injected_parameters(run: RunState, stage: Stage, champion: Version | None) -> dict[str, Any]:
    """The products folder, run id, mode, champion URI and compute settings, for the notebooks that
    declare them."""
    return params.injected(
        stage.declared,
        products=run.run_dir / PRODUCTS_DIR,
        run_id=run.record.run_id,
        mode=run.record.mode,
        champion_uri=champion.uri if champion else "",
        compute=run.pipeline.compute,
    )


def rerender_run(
    pipeline: Pipeline, record: RunRecord, run_dir: Path, redact: Redactor, show_code: bool = False
) -> list[str]:
    """Draw a finished run's pages again (after a template change, say) from its run.json and executed
    notebooks, then the history; nothing is executed. Returns the stage pages rendered."""
    rendered = []
    for stage in record.stages.values():
        executed = run_dir / stage.notebook if stage.notebook else None
        if executed is None or not executed.is_file():
            continue  # skipped, or failed before papermill wrote anything: there is no page to draw
        configured = pipeline.stages.get(stage.name)
        html = run_dir / f"{stage.name}.html"
        title = f"{record.pipeline} · {stage.name}"
        shown = show_code or bool(configured and configured.show_code)
        report.render_stage_html(executed, html, title=title, show_code=shown, redact=redact)
        stage.html = html.name
        rendered.append(stage.name)
    report.write_run_json(run_dir, record, redact=redact)
    write_pages(pipeline, record, run_dir, RunOptions(), redact)
    return rendered


def remembered_runs(pipeline: Pipeline) -> history.Remembered:
    """What the MLflow store knows of past runs, for the history page (in CI, older run folders are gone)."""
    if pipeline.model is None:
        return history.Remembered()
    uri = tracking_uri(pipeline.root)
    log = pipeline.root / MLFLOW_DIR / RUN_LOG  # the state branch keeps it: runs whose folders are gone
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return history.Remembered(logged=history.remembered(None, log).logged)  # no store: none created
    return history.remembered(Registry(uri, pipeline.model.name, lock_dir=pipeline.root / MLFLOW_DIR), log)


def cancel_running_stages(record: RunRecord) -> None:
    stopped = StageFailure("cancelled", "interrupted (Ctrl-C or SIGTERM)")
    stop_running_stages(record, stopped, "the run was interrupted", error="was interrupted")


def stop_running_stages(record: RunRecord, failure: StageFailure, why: str, error: str = "") -> None:
    """The running stage failed with `failure` (unless it already knows how), the pending ones are skipped."""
    for stage in record.stages.values():
        if stage.status == "running":
            stage.status = "failed"
            stage.failure = stage.failure or failure
            stage.error = f"stage '{stage.name}' {error or 'failed: ' + failure.message}"
        elif stage.status == "pending":
            stage.status, stage.skip_reason = "skipped", f"not run: {why}"


def finish_run(pipeline: Pipeline, record: RunRecord, started: float) -> None:
    """The run's status, decided here and nowhere else (README, "How a run ends"):

        cancelled     Ctrl-C or SIGTERM arrived before the outcome was decided (set when it came)
        gate_failed   the first stage that did not succeed was stopped by its gates; or the promotion
                      policy refused the model (`model.decision`)
        failed        a stage failed; or the registry, a write or the runner itself failed (`error`); or a
                      full run of a pipeline with a model registered none; or a stage never finished
        succeeded     none of the above

    The exit code is the status's (runner/errors.py); new data is accepted only by a run that succeeded, in
    full, and registered a model when the pipeline declares one (runner/engine/intake.py)."""
    record.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    record.duration_s = round(time.monotonic() - started, 3)
    if record.status != "running":
        return
    problem = record.first_problem
    unfinished = [stage.name for stage in record.stages.values() if stage.status in ("pending", "running")]
    if problem is not None:
        record.status = "gate_failed" if problem.status == "gate_failed" else "failed"
    elif record.error or (record.model is not None and record.model.error):
        record.status = "failed"
    elif unfinished:
        record.status, record.error = "failed", f"stages {', '.join(unfinished)} never finished"
    elif verdict(record) == "refuse":  # the promotion policy refused it: ends as a refused gate does
        record.status = "gate_failed"
    elif (missing := no_model_registered(pipeline, record)) is not None:
        record.status, record.error = "failed", missing
    else:
        record.status = "succeeded"


def verdict(record: RunRecord) -> str | None:
    """The promotion policy's verdict on the run's model (promote, hold, refuse), or None without one."""
    model = record.model
    return model.decision.verdict if model is not None and model.decision is not None else None


def no_model_registered(pipeline: Pipeline, record: RunRecord) -> str | None:
    """Why a full run of a pipeline that declares a model has no model to show for itself, or None."""
    if pipeline.model is None or record.mode != "full" or record.options.get("only"):
        return None
    if record.model is not None and record.model.version is not None:
        return None
    if verdict(record) in ("refuse", "hold"):  # registers nothing on purpose, or keeps the champion
        return None
    said = f" ({record.model.detail})" if record.model is not None and record.model.detail else ""
    return f"the run registered no model{said}: its new data is kept for the next run"


def write_pages(
    pipeline: Pipeline,
    record: RunRecord,
    run_dir: Path,
    options: RunOptions,
    redact: Redactor,
    history: bool = True,
) -> None:
    """The run's page, the history, the step summary (run.json is written before: `write_final_record`)."""
    report.render_run_index(run_dir, record, tracking_uri=tracking_uri(pipeline.root), redact=redact)
    if history:
        known = remembered_runs(pipeline)
        report.render_history_index(run_dir.parent, known=known, key=pipeline.key_metric, redact=redact)
    if options.step_summary is not None:
        report.write_step_summary(record, options.step_summary, redact=redact)


def announce(run: RunState, *, cancelled: bool) -> list[NotificationRecord]:
    """The run's message. A cancelled run has seconds left (a cancelled workflow is killed soon after its
    SIGTERM): one attempt each, two seconds at most."""
    spec = run.pipeline.notify
    if cancelled:
        spec = spec.model_copy(update={"timeout_s": min(spec.timeout_s, 2.0), "retries": 0})
    return notify.announce(run.record, spec, run.options.links, run.options.environ, run.redact)
