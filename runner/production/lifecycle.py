"""The model's way to production: judge, refit, register, promote, smoke check, roll back.

    gates passed -> judge: fingerprint (data files + notebooks' code + parameters): already registered? reuse
    it; the promotion policy's decision on the paired rows of the backtests (promotion.py): promote, hold or
    refuse -> the refit stage, when the pipeline has one and the decision promotes (the evaluated settings
    trained on all the data) -> register (lineage tags, `challenger`; the evaluated model and its refit,
    linked) -> refuse: nothing is registered; hold: the champion stays; manual: stops here; auto: `champion`
    moves to the refit, or to the evaluated model (compare-and-set against the champion the run started
    with; the old one becomes `previous`) -> smoke check: load models:/<name>@champion fresh, predict the
    evaluate stage's sample, compare (a refit: within `refit_tolerance` of the evaluated model's
    predictions, and finite) -> failed: roll `champion` back, tag the version with why, fail the run.

The smoke check's state is a tag of the version (`retrain.smoke_check`), so that it survives a kill: `pending`
is set before the alias moves, `passed: ...` or `smoke check failed: ...` once the check has spoken. A run
killed in between leaves a champion whose check is pending (or failed without its rollback): the next run
checks it again before its stages (`recheck_champion`), and `retrain models` shows it. Ctrl-C or SIGTERM in
between puts the champion the run started with back at once. Whatever the alias is moved to is loaded from
the registry first or right after: a rollback only to a version that loads.

Every function takes what it needs and returns a record; the pipeline decides what to run next.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import asdict
from pathlib import Path
from typing import Any

from runner.engine.config import Pipeline, SmokeCheckSpec
from runner.engine.kernels import IN_THIS_PROCESS, WorkerError, WorkerLost, Workers
from runner.engine.notebook_json import code_cells
from runner.errors import RetrainError, UsageError
from runner.interrupts import shielded
from runner.mlflow_http import bounded_http
from runner.production import promotion, smoke, store, store_template
from runner.production.registry import (
    CHAMPION,
    LINEAGE,
    METRIC,
    PREVIOUS,
    Registry,
    RegistryConflict,
    RegistryError,
    Version,
    check_reachable,
    describe,
)
from runner.project import MLFLOW_DIR, PRODUCTS_DIR, REPORTS_DIR, tracking_uri
from runner.records import ChampionRecheck, Decision, ModelRecord, RunRecord, SmokeCheck

SMOKE_CHECK = f"{LINEAGE}smoke_check"  # where the check stands: pending, passed: ..., smoke check failed: ...
PENDING, PASSED, FAILED = "pending", "passed", "smoke check failed"
Say = Callable[[str], None]  # a step of the release, told as it happens (the CLI prints it)


def _quiet(text: str) -> None:
    return None


def check_state(version: Version) -> str | None:
    """Where the version's smoke check stands: PENDING (promoted, not checked yet), PASSED, FAILED, or None
    (never promoted by a run since the tag exists, or promoted by hand without a sample to check)."""
    value = version.lineage("smoke_check") or ""
    return next((state for state in (PENDING, PASSED, FAILED) if value.startswith(state)), None)


def fingerprints(pipeline: Pipeline) -> dict[str, str]:
    """Content hashes: `data` (the contents of the model section's data files, whatever their names),
    `code` (every stage's code cells and parameters, and the Python modules beside the notebooks) and
    `fingerprint` (both): the same code on the same data gives the same fingerprint."""
    model = pipeline.model
    files = {path for pattern in (model.data if model else ()) for path in pipeline.root.glob(pattern)}
    # contents only, in the order of their own hashes: an accepted drop moves from data/new/ to the history
    # folder, and the same rows under another name are the same data
    data = hashlib.sha256()
    for digest in sorted(_file_digest(path) for path in files if path.is_file()):
        data.update(digest.encode())
    code = hashlib.sha256()
    for stage in pipeline.stages.values():
        cells = code_cells(stage.notebook)
        code.update(json.dumps([stage.name, cells, dict(stage.params)], sort_keys=True, default=str).encode())
    # modules beside the notebooks (shared feature code, say) are code too
    folders = {stage.notebook.parent for stage in pipeline.stages.values()}
    for module in sorted(path for folder in folders for path in folder.glob("*.py")):
        code.update(module.name.encode() + b"\0" + module.read_bytes())
    both = hashlib.sha256(data.hexdigest().encode() + code.hexdigest().encode())
    return {
        "data": data.hexdigest()[:16],
        "code": code.hexdigest()[:16],
        "fingerprint": both.hexdigest()[:16],
    }


def _file_digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def judge(
    pipeline: Pipeline,
    record: RunRecord,
    registry: Registry,
    champion: Version | None,
    workers: Workers = IN_THIS_PROCESS,
) -> ModelRecord:
    """What the run's model is before anything is registered: its metrics beside the champion's, whether a
    version already holds it (same data, code and parameters), and the promotion policy's decision."""
    model = pipeline.model
    assert model is not None
    result = ModelRecord(name=model.name, champion_before=champion.version if champion else None)
    result.champion_after = result.champion_before
    result.metrics = numeric_scraps(record.stages[model.metrics].scraps)
    scraps = {name: stage.scraps for name, stage in record.stages.items()}
    result.champion_metrics = numeric_scraps(champion_scope(champion, scraps) or {})
    result.champion_params = champion_params(champion)
    if record.mode == "full":
        started = time.monotonic()
        existing = registry.find_by_fingerprint(fingerprints(pipeline)["fingerprint"])
        result.seconds["fingerprint"] = round(time.monotonic() - started, 3)
        if existing is not None:
            result.action, result.version = "unchanged", existing.version
            result.detail = (
                f"version {existing.version} already holds this model (same data, code and parameters):"
                " not registered again"
            )
            if champion is not None and existing.version == champion.version:
                return result  # the champion itself: there is nothing to decide
    result.decision = decision(pipeline, record, champion, result, workers)
    if result.decision is not None and result.version is not None:
        result.decision = promotion.named(result.decision, result.version)
    return result


def decision(
    pipeline: Pipeline, record: RunRecord, champion: Version | None, result: ModelRecord, workers: Workers
) -> Decision | None:
    """The promotion policy's verdict (None: the pipeline has none, and the gates alone decide)."""
    model, key = pipeline.model, pipeline.key_metric
    assert model is not None
    if model.promotion_policy is None or key is None:
        return None
    policy = model.promotion_policy.policy()
    if champion is None:
        return promotion.decide(policy, None, key)
    paired = record.stages[model.metrics].scraps.get(promotion.PAIRED)
    comparison = None
    if isinstance(paired, dict):
        started = time.monotonic()
        score = model.smoke_check.score or key.name
        try:
            comparison = compared(paired, score, policy, pipeline.root, workers)
        except (promotion.PairedError, ValueError, TypeError, WorkerError, WorkerLost) as error:
            why = f"the paired rows of stage {model.metrics} could not be compared ({error})"[:400]
            return Decision(policy.rule, "hold", f"Held: {why}, so the champion stays")
        result.seconds["compare"] = round(time.monotonic() - started, 3)
    challenger, theirs = result.metrics.get(key.name), result.champion_metrics.get(key.name)
    return promotion.decide(policy, comparison, key, challenger=challenger, champion=theirs)


COMPARE_TIMEOUT_S = 300


def compared(
    paired: dict[str, Any], score: str, policy: promotion.Policy, root: Path, workers: Workers
) -> promotion.Comparison:
    """The paired comparison, in one of the run's workers when it has them: the score may be the project's
    own function, whose module imports what the runner itself never does (pandas, say)."""
    job: dict[str, Any] = {"paired": paired, "score": score, "policy": asdict(policy), "root": str(root)}
    if workers.elsewhere(None):
        found = workers.call(compare_in_worker, needs=None, timeout_s=COMPARE_TIMEOUT_S, cwd=root, **job)
    else:
        found = compare_in_worker(**job)
    return promotion.Comparison(**found)


def compare_in_worker(
    paired: dict[str, Any], score: str, policy: dict[str, Any], root: str
) -> dict[str, Any]:
    """In a worker (or here): the comparison of the paired rows, as a plain dict."""
    from runner.production import scores

    found = promotion.compare(paired, scores.resolve(score, Path(root)), promotion.Policy(**policy))
    return found.to_json()


def refit_reason(record: RunRecord) -> str | None:
    """Why the refit stage does not run (None: it runs): it refits only a model on its way to production."""
    model = record.model
    if record.mode != "full":
        return f"not run: mode {record.mode} refits nothing"
    if model is None:
        return None
    if model.action == "unchanged":
        return f"not run: {model.detail}"
    if model.decision is not None and model.decision.verdict != "promote":
        return f"not run: {model.decision.sentence}"
    return None


def refit_expected(pipeline: Pipeline, registry: Registry, mode: str) -> bool:
    """A guess, to start the refit stage's kernel ahead of it: whether `refit_reason` will let it run. It will
    not in a mode other than full, nor when a version already holds this model (the judgement then finds it
    unchanged), which the embedded store tells without MLflow; when only MLflow could tell, it probably runs.
    """
    if mode != "full":
        return False
    return registry.holds_fast(fingerprints(pipeline)["fingerprint"]) is not True


def release(
    pipeline: Pipeline,
    record: RunRecord,
    run_dir: Path,
    registry: Registry,
    champion: Version | None,
    workers: Workers = IN_THIS_PROCESS,
    say: Say = _quiet,
) -> ModelRecord:
    """Register the judged model (and its refit) and, as the decision and the promotion setting say, make
    the one that ships the champion (or roll back). Judges the model first unless `record.model` holds it.

    The record is `record.model` from the start, so that what was done is on record even when a failure or
    an interrupt stops the release halfway."""
    model = pipeline.model
    assert model is not None
    result = record.model or judge(pipeline, record, registry, champion, workers)
    record.model = result
    scraps = {name: stage.scraps for name, stage in record.stages.items()}
    unscored = champion_trouble(champion, scraps)
    compared_with = f"; {unscored}: compared with its registered metrics" if unscored else ""
    if record.mode != "full":
        result.detail = f"mode {record.mode}: the registry is left as it is{compared_with}"
        return result
    verdict = result.decision.verdict if result.decision is not None else "promote"
    if verdict == "refuse":
        result.detail = f"refused by the promotion policy: nothing was registered{compared_with}"
        say(f"model: {result.detail}")
        return result
    if champion is not None and result.action == "unchanged" and result.version == champion.version:
        candidate: Version | None = champion  # known already: a rerun served by the cache imports no MLflow
    else:
        candidate = _existing_or_registered(pipeline, record, registry, result)
    if candidate is None:
        return result
    say(f"model: {result.detail}")
    result.detail += compared_with
    if verdict == "hold":
        result.detail += "; held by the promotion policy: the champion stays"
        return result
    rolled_back = candidate.lineage("rolled_back")
    if rolled_back and (champion is None or candidate.version != champion.version):
        # a person (or a smoke check) took it out of production: a rerun on the same data must not undo that
        result.detail += (
            f"; it was rolled back ({rolled_back}): not promoted again (`retrain promote {candidate.version}`"
            " does it)"
        )
        return result
    if model.promotion == "manual" or (champion is not None and candidate.version == champion.version):
        if model.promotion == "manual":
            result.detail += (
                f"; promotion is manual: `retrain promote {candidate.version}` makes it the champion"
            )
        return result
    started = time.monotonic()
    try:
        promote(registry, candidate, expected=champion, reason=f"run {record.run_id}")
    except RegistryConflict as conflict:
        result.error = f"version {candidate.version} was not promoted: {conflict}"
        return result
    except KeyboardInterrupt:
        _undo_interrupted(registry, candidate, champion, result)
        raise
    result.seconds["promote"] = round(time.monotonic() - started, 3)
    result.promoted, result.champion_after = True, candidate.version
    say(f"model: version {candidate.version} is the champion; smoke check: loading it from the registry")
    sample = run_dir / PRODUCTS_DIR / model.smoke_check.sample
    refit = candidate.lineage("refit_of") is not None
    spec, metric = smoke_spec(pipeline, refit)
    try:
        checked = smoke.check(
            registry, spec, sample, metric, result.metrics, pipeline.root, workers, refit=refit
        )
        result.smoke_check = checked
    except KeyboardInterrupt:
        _undo_interrupted(registry, candidate, champion, result)
        raise
    result.seconds["smoke_check"] = result.smoke_check.seconds
    if result.smoke_check.passed:
        registry.tag(candidate.version, {SMOKE_CHECK: f"{PASSED}: {result.smoke_check.detail}"})
        was = result.champion_before or "none"
        if unscored and champion is not None:
            was += ", which could not be scored on this run's data"
        result.detail += f"; promoted to champion (was {was})"
        say(f"model: smoke check passed: {result.smoke_check.detail}")
        return result
    _roll_back_failed(registry, candidate, champion, result, model.smoke_check, workers)
    return result


def _existing_or_registered(
    pipeline: Pipeline, record: RunRecord, registry: Registry, result: ModelRecord
) -> Version | None:
    """The version that would ship: the one that already holds this model, or the one registered now (the
    refit, when there is one); None when the stages did not record what to register (`result.error`)."""
    model = pipeline.model
    assert model is not None
    if result.action == "unchanged" and result.version is not None:
        return registry.get(result.version)
    uri = record.stages[model.candidate_stage].scraps.get(model.candidate_scrap)
    refit = refit_model_uri(pipeline, record)
    # the candidate must be there; the refit only when its stage ran (None: it did not)
    for stage, scrap, found in (
        (model.candidate_stage, model.candidate_scrap, uri or ""),
        (model.refit_stage, model.refit_scrap, refit),
    ):
        if found is not None and (not isinstance(found, str) or not found):
            result.error = f"stage '{stage}' did not record the model URI '{scrap}'"
            return None
    assert isinstance(uri, str)
    version = _register(pipeline, record, registry, uri, refit, result)
    if result.decision is not None:
        result.decision = promotion.named(result.decision, version.version)
    return version


def smoke_spec(pipeline: Pipeline, refit: bool) -> tuple[SmokeCheckSpec, str | None]:
    """The smoke check's settings and the metric it recomputes: a refit learned from more data, so its
    predictions may differ from the evaluated model's by `refit_tolerance`, and its metric is not compared."""
    assert pipeline.model is not None
    spec = pipeline.model.smoke_check
    if refit and spec.refit_tolerance is not None:
        return spec.model_copy(update={"tolerance": spec.refit_tolerance}), None
    return spec, key_metric_name(pipeline)


UNDO_BUDGET_S = 2.0  # a cancelled run ends in seconds: a longer rollback is left to the next run


def _undo_interrupted(
    registry: Registry, candidate: Version, champion: Version | None, result: ModelRecord
) -> None:
    """Ctrl-C or SIGTERM between the alias move and the smoke check's verdict: the champion the run started
    with goes back (unchecked: it was the champion a minute ago), if that takes at most UNDO_BUDGET_S. What is
    not put back by then stays `pending`, for the next run to check: the cancelled run does not wait for it.
    """
    result.detail += f"; interrupted before version {candidate.version}'s smoke check ended"
    outcome: list[str | None] = []  # the champion after the undo, or nothing when it did not finish

    def undo() -> None:
        now = registry.by_alias(CHAMPION)
        if now is None or now.version != candidate.version:
            outcome.append(now.version if now else None)  # the move had not happened: nothing to put back
            return
        why = "the run was interrupted before its smoke check ended"
        if champion is not None:
            roll_back(registry, champion, candidate, why, verdict=False)
        else:
            registry.move_champion(None, expected=candidate.version, previous=None)
        registry.tag(candidate.version, {SMOKE_CHECK: f"not checked: {why}"})
        outcome.append(champion.version if champion else None)

    def guarded() -> None:
        with suppress(RetrainError):  # not undone: the `pending` tag says what is left to do
            undo()

    worker = threading.Thread(target=guarded, name="undo-promotion", daemon=True)
    worker.start()
    with shielded():  # a second signal waits for the budget, no longer
        worker.join(UNDO_BUDGET_S)
    if outcome and outcome[0] != candidate.version:
        result.rolled_back = result.champion_after != outcome[0]
        result.champion_after = outcome[0]
        said = "put back to" if result.rolled_back else "still"
        result.detail += f"; champion {said} {outcome[0] or 'none'}"
        return
    result.error = (
        f"interrupted: version {candidate.version} may be the champion, unchecked; the next run checks it"
        " again before its stages (`retrain models` shows it pending)"
    )


def as_deployed(name: str, champion: Version | None) -> ModelRecord:
    """A run that deploys the champion as it is (`retrain deploy`, after an approval or a rollback)."""
    number = champion.version if champion else None
    result = ModelRecord(name=name, champion_before=number, champion_after=number, version=number)
    result.action = "unchanged"
    result.detail = f"deploying the champion v{number} as it is" if number else "no champion to deploy"
    return result


def _register(
    pipeline: Pipeline,
    record: RunRecord,
    registry: Registry,
    uri: str,
    refit: str | None,
    result: ModelRecord,
) -> Version:
    """Register the evaluated model and, with a refit, the refit too, each tagged with the other. The version
    returned is the one that would ship: the refit when there is one."""
    started = time.monotonic()
    prints = fingerprints(pipeline)
    tags = {
        f"{LINEAGE}run_id": record.run_id,
        f"{LINEAGE}git_sha": record.git_sha or "unknown",
        f"{LINEAGE}trigger": record.trigger,
        f"{LINEAGE}pipeline": record.pipeline,
        f"{LINEAGE}params": json.dumps(record.params, sort_keys=True, default=str),
        **{f"{LINEAGE}{key}": value for key, value in prints.items()},
        **{f"{METRIC}{key}": repr(value) for key, value in result.metrics.items()},
    }
    # the fingerprint goes on the version that ships: an identical later run finds it (the refit)
    first = {key: value for key, value in tags.items() if not refit or key != f"{LINEAGE}fingerprint"}
    version = registry.register(uri, first)
    result.action, result.version = "registered", version.version
    result.detail = f"registered as version {version.version}"
    if refit:
        evaluated = version
        version = registry.register(refit, {**tags, f"{LINEAGE}refit_of": evaluated.version})
        registry.tag(evaluated.version, {f"{LINEAGE}refit": version.version})
        result.evaluated, result.version = evaluated.version, version.version
        result.detail = (
            f"registered as version {evaluated.version} (evaluated) and {version.version} (its settings"
            " refit on all the data)"
        )
    result.seconds["register"] = round(time.monotonic() - started, 3)
    return version


def refit_model_uri(pipeline: Pipeline, record: RunRecord) -> str | None:
    """The refit's model URI: None when the pipeline has no refit stage or it did not run, "" when it ran
    and recorded none."""
    model = pipeline.model
    stage = model.refit_stage if model is not None else None
    if model is None or stage is None or record.stages[stage].status not in ("succeeded", "cached"):
        return None
    uri = record.stages[stage].scraps.get(model.refit_scrap)
    return uri if isinstance(uri, str) else ""


def promote(registry: Registry, version: Version, expected: Version | None, reason: str) -> None:
    """Make `version` the champion if the champion is still `expected`; the old one becomes `previous`.

    Its smoke check is `pending` before the alias moves: a run killed from here on leaves the mark that
    makes the next run check it."""
    registry.tag(version.version, {SMOKE_CHECK: f"{PENDING}: promoted {_now()} by {reason}, not checked yet"})
    registry.move_champion(
        version.version,
        expected=expected.version if expected else None,
        previous=expected.version if expected else None,
    )
    registry.tag(
        version.version,
        {
            f"{LINEAGE}replaced": expected.version if expected else "",
            f"{LINEAGE}promoted": f"{_now()} by {reason}",
        },
    )


def roll_back(
    registry: Registry, to: Version, current: Version, reason: str, *, verdict: bool = True
) -> None:
    """Make `to` the champion again; `previous` becomes what `to` itself had replaced. A `verdict` (a person's
    or a failed smoke check's) marks `current` rolled back, which keeps a rerun on the same data from
    promoting it again; an interrupted promotion is no verdict on the model."""
    earlier = to.lineage("replaced") or None
    registry.move_champion(
        to.version, expected=current.version, previous=earlier if earlier != to.version else None
    )
    if verdict:
        registry.tag(current.version, {f"{LINEAGE}rolled_back": f"{_now()}: {reason}"})


def _roll_back_failed(
    registry: Registry,
    failed: Version,
    champion: Version | None,
    result: ModelRecord,
    spec: SmokeCheckSpec,
    workers: Workers,
) -> None:
    assert result.smoke_check is not None
    why = f"{FAILED}: {result.smoke_check.detail}"
    registry.tag(failed.version, {SMOKE_CHECK: why})
    back_to, note = _loadable_target(registry, champion, spec, workers)
    _point_back(registry, failed, back_to, why)
    result.rolled_back, result.champion_after = True, back_to.version if back_to else None
    result.error = (
        f"version {failed.version} failed its smoke check and was rolled back "
        f"(champion: {result.champion_after or 'none'}{note}): {result.smoke_check.detail}"
    )


def _loadable_target(
    registry: Registry, target: Version | None, spec: SmokeCheckSpec, workers: Workers
) -> tuple[Version | None, str]:
    """The version to roll back to when it loads from the registry; (None, why) when it does not: production
    then has no champion rather than one that cannot be loaded."""
    if target is None:
        return None, ""
    trouble = load_check(registry, target, spec, workers)
    if trouble is None:
        return target, ""
    return None, f"; version {target.version} was not restored: it cannot be loaded ({trouble})"


def _point_back(registry: Registry, failed: Version, to: Version | None, why: str) -> None:
    """`champion` from the failed version to `to` (None: no champion), with the failed version tagged."""
    if to is not None:
        roll_back(registry, to, failed, why)
    else:  # nothing loadable to go back to: production goes back to having no model
        registry.move_champion(None, expected=failed.version, previous=None)
        registry.tag(failed.version, {f"{LINEAGE}rolled_back": f"{_now()}: {why}"})


def load_check(registry: Registry, version: Version, spec: SmokeCheckSpec, workers: Workers) -> str | None:
    """Load the version from the registry (pinned, not by alias), as its users would; None when it loads,
    else why not. In a worker when the run has them, like the smoke check."""
    job = {"tracking_uri": registry.tracking_uri, "model_uri": version.uri}
    try:
        if workers.elsewhere(None):
            folder = registry.lock_dir if registry.lock_dir.is_dir() else Path.cwd()
            workers.call(load_model, needs=None, timeout_s=spec.max_seconds + 60, cwd=folder, **job)
        else:
            with registry.as_default():
                load_model(**job)
    except (WorkerError, WorkerLost) as error:
        return str(error)[:300]
    except Exception as error:  # whatever breaks loading is the answer
        return describe(error)
    return None


def load_model(tracking_uri: str, model_uri: str) -> str:
    """Load `model_uri` with MLflow's pyfunc loader (MLflow's HTTP retries bounded); returns its flavours.
    Runs in a worker (or in the runner)."""
    import mlflow
    import mlflow.pyfunc

    with bounded_http():
        mlflow.set_tracking_uri(tracking_uri)
        model = mlflow.pyfunc.load_model(model_uri)
    return ", ".join(sorted(model.metadata.flavors))


def champion_trouble(champion: Version | None, scraps: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Why the champion could not be scored on this run's data, as a stage recorded it (a `champion` scrap
    with an `error`), or None. Gates then compare with its registered metrics: the run says so."""
    if champion is None:
        return None
    for stage_scraps in scraps.values():
        measured = stage_scraps.get("champion")
        if isinstance(measured, dict) and measured.get("error"):
            return f"the champion (version {champion.version}) could not be scored ({measured['error']})"
    return None


def recheck_champion(
    pipeline: Pipeline, registry: Registry, champion: Version | None, workers: Workers, say: Say = _quiet
) -> ChampionRecheck | None:
    """The champion's smoke check again, when a run was stopped between promoting it and its verdict (pending)
    or between a failed verdict and the rollback (failed): passed, the mark says so; failed, the champion
    goes back to the one it replaced (if that loads). None when the champion needs no check."""
    model = pipeline.model
    assert model is not None
    if champion is None or check_state(champion) not in (PENDING, FAILED):
        return None
    say(f"model: version {champion.version} is the champion but its smoke check never ended: checking it")
    sample = sample_of(pipeline, champion)
    if sample.is_file():
        refit = champion.lineage("refit_of") is not None  # checked as its release checked it
        spec, metric = smoke_spec(pipeline, refit)
        root = pipeline.root
        check = smoke.check(registry, spec, sample, metric, champion.metrics, root, workers, refit=refit)
    else:  # the run that promoted it is not on this machine: it must load, at least
        started = time.monotonic()
        trouble = load_check(registry, champion, model.smoke_check, workers)
        seconds = round(time.monotonic() - started, 3)
        detail = trouble or f"loaded from the registry; no sample to predict ({sample} is not here)"
        check = SmokeCheck(trouble is None, detail, seconds)
    found = ChampionRecheck(champion.version, check.passed, check.detail, champion.version)
    if check.passed:
        registry.tag(champion.version, {SMOKE_CHECK: f"{PASSED}: {check.detail} (checked again)"})
        return found
    why = f"{FAILED}: {check.detail}"
    registry.tag(champion.version, {SMOKE_CHECK: why})
    earlier = registry.by_alias(PREVIOUS) or _replaced(registry, champion)
    back_to, note = _loadable_target(registry, earlier, model.smoke_check, workers)
    _point_back(registry, champion, back_to, why)
    found.champion_after = back_to.version if back_to else None
    found.detail += f"; rolled back to {found.champion_after or 'no champion'}{note}"
    return found


def _replaced(registry: Registry, version: Version) -> Version | None:
    earlier = version.lineage("replaced")
    return registry.get(earlier) if earlier and earlier != version.version else None


def sample_of(pipeline: Pipeline, version: Version) -> Path:
    """Where the smoke check's sample of the run that registered `version` is, when that run is here."""
    assert pipeline.model is not None
    run = version.lineage("run_id") or "-"
    return pipeline.root / REPORTS_DIR / run / PRODUCTS_DIR / pipeline.model.smoke_check.sample


def champion_params(champion: Version | None) -> dict[str, Any]:
    """The parameters the champion's run had (its lineage tag), for "what changed" beside this run's."""
    if champion is None:
        return {}
    try:
        found = json.loads(champion.lineage("params") or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def numeric_scraps(scraps: Mapping[str, Any]) -> dict[str, float]:
    """The scalar numbers a stage recorded: what a model version carries as its metrics."""
    return {
        key: float(value)
        for key, value in scraps.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def champion_scope(
    registered: Version | None, scraps: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any] | None:
    """What `champion.*` means in gates: the champion's registered metrics, overlaid by what a stage measured
    for it on this run's data (a `champion` scrap such as {"version": "3", "wape": 0.066})."""
    if registered is None:
        return None
    scope: dict[str, Any] = {"version": registered.version, **registered.metrics}
    for stage_scraps in scraps.values():
        measured = stage_scraps.get("champion")
        if isinstance(measured, dict) and "error" not in measured:
            scope.update(measured)
    return scope


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


# --- commands: retrain models / promote / rollback -------------------------------------------------------
def key_metric_name(pipeline: Pipeline) -> str | None:
    """The name of the model's key metric, when pipeline.yaml declares one."""
    key = pipeline.model.key_metric if pipeline.model else None
    return key.name if key else None


def open_registry(pipeline: Pipeline) -> Registry:
    """The pipeline's registered model, or a UsageError when pipeline.yaml has no `model` section."""
    if pipeline.model is None:
        raise UsageError(
            f"{pipeline.path.name} has no `model` section: there is no registered model to manage"
        )
    uri = tracking_uri(pipeline.root)
    check_reachable(uri)
    if uri == tracking_uri(pipeline.root, environ={}):  # the embedded store: its paths follow the project
        # a new store as a copy of an empty one when there is one to copy; else MLflow makes it
        store_template.seed(pipeline.root / MLFLOW_DIR)
        try:
            store.rebase(pipeline.root / MLFLOW_DIR)
        except store.StoreError as error:  # a corrupt database, say: the registry failing, not a bug
            raise RegistryError(f"the registry at {uri} cannot be opened: {error}") from None
    return Registry(uri, pipeline.model.name, lock_dir=pipeline.root / MLFLOW_DIR)


def keep_new_store(registry: Registry) -> None:
    """The store MLflow has just made for `registry`: kept, empty, as the copy the next new store of this
    machine starts from (store_template.py)."""
    uri = registry.tracking_uri
    if uri.startswith("sqlite:///"):
        store_template.keep(Path(uri.removeprefix("sqlite:///")).parent)


def promote_version(pipeline: Pipeline, registry: Registry, number: str) -> str:
    """`retrain promote VERSION`: make it the champion if it loads from the registry (else nothing moves),
    then smoke-check it when its run's sample is here."""
    assert pipeline.model is not None
    spec = pipeline.model.smoke_check
    target = _existing(registry, number)
    current = registry.by_alias(CHAMPION)
    if current is not None and current.version == target.version:
        return f"version {number} is already the champion of {registry.name}"
    sample = sample_of(pipeline, target)
    trouble = load_check(registry, target, spec, IN_THIS_PROCESS)  # production never gets what cannot load
    if trouble is not None:
        raise RegistryError(
            f"version {number} cannot be loaded from the registry ({trouble}): it was not made the"
            f" champion (the champion is still {current.version if current else 'none'})"
        )
    promote(registry, target, expected=current, reason="retrain promote")
    was = current.version if current else "none"
    said = f"version {number} is now the champion of {registry.name} (was {was})"
    if not sample.is_file():
        unchecked = f"not checked: loaded from the registry; the sample of run {target.lineage('run_id')} is"
        registry.tag(target.version, {SMOKE_CHECK: f"{unchecked} not here"})
        return f"{said}; it loads, but no smoke check: the sample of its run is not here ({sample})"
    refit = target.lineage("refit_of") is not None
    check_spec, metric = smoke_spec(pipeline, refit)
    check = smoke.check(registry, check_spec, sample, metric, target.metrics, pipeline.root, refit=refit)
    if check.passed:
        registry.tag(target.version, {SMOKE_CHECK: f"{PASSED}: {check.detail}"})
        return f"{said}; smoke check passed: {check.detail}"
    why = f"{FAILED}: {check.detail}"
    registry.tag(target.version, {SMOKE_CHECK: why})
    back_to, note = _loadable_target(registry, current, spec, IN_THIS_PROCESS)
    _point_back(registry, target, back_to, why)
    raise RegistryError(
        f"version {number} {why}; rolled back to {back_to.version if back_to else 'no champion'}{note}"
    )


def rollback_to(pipeline: Pipeline, registry: Registry, number: str | None) -> str:
    """`retrain rollback [--to VERSION]`: the previous champion (or VERSION) becomes the champion again, if it
    loads from the registry (a version whose files are gone is refused, and nothing moves)."""
    assert pipeline.model is not None
    current = registry.by_alias(CHAMPION)
    if current is None:
        raise UsageError(f"{registry.name} has no champion: there is nothing to roll back")
    if number is None:
        target = registry.by_alias(PREVIOUS)
        if target is None:
            raise UsageError(
                f"{registry.name} has no previous champion to go back to; name one with --to VERSION"
            )
    else:
        target = _existing(registry, number)
    if target.version == current.version:
        raise UsageError(f"version {target.version} is already the champion of {registry.name}")
    trouble = load_check(registry, target, pipeline.model.smoke_check, IN_THIS_PROCESS)
    if trouble is not None:
        raise RegistryError(
            f"version {target.version} cannot be loaded from the registry ({trouble}): not rolled back, the"
            f" champion is still {current.version}"
        )
    roll_back(registry, target, current, "retrain rollback")
    return f"version {target.version} is the champion of {registry.name} again (was {current.version})"


def _existing(registry: Registry, number: str) -> Version:
    found = registry.get(number)
    if found is None:
        known = ", ".join(version.version for version in registry.versions()) or "none"
        raise UsageError(f"{registry.name} has no version {number} (versions: {known})")
    return found
