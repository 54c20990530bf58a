"""The model's way to production: register, promote, smoke check, roll back.

    gates passed -> fingerprint (data files + notebooks' code + parameters) -> already registered? reuse it
    -> register (lineage tags, `challenger`) -> promotion policy: manual stops here, auto moves `champion`
    (compare-and-set against the champion the run started with; the old one becomes `previous`)
    -> smoke check: load models:/<name>@champion fresh, predict the evaluate stage's sample, compare
    -> failed: roll `champion` back to where it was, tag the version with why, fail the run.

Every function takes what it needs and returns a record; the pipeline decides what to run next.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.engine.config import Pipeline
from runner.engine.kernels import IN_THIS_PROCESS, Workers
from runner.engine.notebook_json import code_cells
from runner.errors import UsageError
from runner.production import smoke, store
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
)
from runner.project import MLFLOW_DIR, PRODUCTS_DIR, REPORTS_DIR, tracking_uri
from runner.records import ModelRecord, RunRecord


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


def release(
    pipeline: Pipeline,
    record: RunRecord,
    run_dir: Path,
    registry: Registry,
    champion: Version | None,
    workers: Workers = IN_THIS_PROCESS,
) -> ModelRecord:
    """Register the run's candidate and, with automatic promotion, make it the champion (or roll back)."""
    model = pipeline.model
    assert model is not None
    result = ModelRecord(name=model.name, champion_before=champion.version if champion else None)
    result.champion_after = result.champion_before
    result.metrics = numeric_scraps(record.stages[model.metrics].scraps)
    scraps = {name: stage.scraps for name, stage in record.stages.items()}
    result.champion_metrics = numeric_scraps(champion_scope(champion, scraps) or {})
    result.champion_params = champion_params(champion)
    if record.mode != "full":
        result.detail = f"mode {record.mode}: the registry is left as it is"
        return result
    uri = record.stages[model.candidate_stage].scraps.get(model.candidate_scrap)
    if not isinstance(uri, str) or not uri:
        result.error = (
            f"stage '{model.candidate_stage}' did not record the model URI '{model.candidate_scrap}'"
        )
        return result
    candidate = _register(pipeline, record, registry, uri, result)
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
    result.seconds["promote"] = round(time.monotonic() - started, 3)
    result.promoted, result.champion_after = True, candidate.version
    sample = run_dir / PRODUCTS_DIR / model.smoke_check.sample
    result.smoke_check = smoke.check(
        registry, model.smoke_check, sample, key_metric_name(pipeline), result.metrics, pipeline.root, workers
    )
    result.seconds["smoke_check"] = result.smoke_check.seconds
    if result.smoke_check.passed:
        result.detail += f"; promoted to champion (was {result.champion_before or 'none'})"
        return result
    _roll_back_failed(registry, candidate, champion, result)
    return result


def as_deployed(name: str, champion: Version | None) -> ModelRecord:
    """A run that deploys the champion as it is (`retrain deploy`, after an approval or a rollback)."""
    number = champion.version if champion else None
    result = ModelRecord(name=name, champion_before=number, champion_after=number, version=number)
    result.action = "unchanged"
    result.detail = f"deploying the champion v{number} as it is" if number else "no champion to deploy"
    return result


def _register(
    pipeline: Pipeline, record: RunRecord, registry: Registry, uri: str, result: ModelRecord
) -> Version:
    started = time.monotonic()
    prints = fingerprints(pipeline)
    existing = registry.find_by_fingerprint(prints["fingerprint"])
    if existing is not None:
        result.action, result.version = "unchanged", existing.version
        result.detail = (
            f"version {existing.version} already holds this model (same data, code and parameters):"
            " not registered again"
        )
        result.seconds["register"] = round(time.monotonic() - started, 3)
        return existing
    tags = {
        f"{LINEAGE}run_id": record.run_id,
        f"{LINEAGE}git_sha": record.git_sha or "unknown",
        f"{LINEAGE}trigger": record.trigger,
        f"{LINEAGE}pipeline": record.pipeline,
        f"{LINEAGE}params": json.dumps(record.params, sort_keys=True, default=str),
        **{f"{LINEAGE}{key}": value for key, value in prints.items()},
        **{f"{METRIC}{key}": repr(value) for key, value in result.metrics.items()},
    }
    version = registry.register(uri, tags)
    result.action, result.version = "registered", version.version
    result.detail = f"registered as version {version.version}"
    result.seconds["register"] = round(time.monotonic() - started, 3)
    return version


def promote(registry: Registry, version: Version, expected: Version | None, reason: str) -> None:
    """Make `version` the champion if the champion is still `expected`; the old one becomes `previous`."""
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


def roll_back(registry: Registry, to: Version, current: Version, reason: str) -> None:
    """Make `to` the champion again; `previous` becomes what `to` itself had replaced."""
    earlier = to.lineage("replaced") or None
    registry.move_champion(
        to.version, expected=current.version, previous=earlier if earlier != to.version else None
    )
    registry.tag(current.version, {f"{LINEAGE}rolled_back": f"{_now()}: {reason}"})


def _roll_back_failed(
    registry: Registry, failed: Version, champion: Version | None, result: ModelRecord
) -> None:
    assert result.smoke_check is not None
    why = f"smoke check failed: {result.smoke_check.detail}"
    registry.tag(failed.version, {f"{LINEAGE}smoke_check": why})
    if champion is not None:
        roll_back(registry, champion, failed, why)
    else:  # the first model ever failed: production goes back to having no model
        registry.move_champion(None, expected=failed.version, previous=None)
        registry.tag(failed.version, {f"{LINEAGE}rolled_back": f"{_now()}: {why}"})
    result.rolled_back, result.champion_after = True, champion.version if champion else None
    result.error = (
        f"version {failed.version} failed its smoke check and was rolled back "
        f"(champion: {result.champion_after or 'none'}): {result.smoke_check.detail}"
    )


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
        store.rebase(pipeline.root / MLFLOW_DIR)
    return Registry(uri, pipeline.model.name, lock_dir=pipeline.root / MLFLOW_DIR)


def promote_version(pipeline: Pipeline, registry: Registry, number: str) -> str:
    """`retrain promote VERSION`: make it the champion, smoke-check it when its run's sample is here."""
    target = _existing(registry, number)
    current = registry.by_alias(CHAMPION)
    if current is not None and current.version == target.version:
        return f"version {number} is already the champion of {registry.name}"
    promote(registry, target, expected=current, reason="retrain promote")
    was = current.version if current else "none"
    said = f"version {number} is now the champion of {registry.name} (was {was})"
    assert pipeline.model is not None
    sample = (
        pipeline.root
        / REPORTS_DIR
        / (target.lineage("run_id") or "-")
        / PRODUCTS_DIR
        / pipeline.model.smoke_check.sample
    )
    if not sample.is_file():
        return f"{said}; no smoke check: the sample of run {target.lineage('run_id')} is not here ({sample})"
    metric = key_metric_name(pipeline)
    check = smoke.check(registry, pipeline.model.smoke_check, sample, metric, target.metrics, pipeline.root)
    if check.passed:
        return f"{said}; smoke check passed: {check.detail}"
    why = f"smoke check failed: {check.detail}"
    registry.tag(target.version, {f"{LINEAGE}smoke_check": why})
    if current is not None:
        roll_back(registry, current, target, why)
    else:
        registry.move_champion(None, expected=target.version, previous=None)
    raise RegistryError(
        f"version {number} {why}; rolled back to {current.version if current else 'no champion'}"
    )


def rollback_to(registry: Registry, number: str | None) -> str:
    """`retrain rollback [--to VERSION]`: the previous champion (or VERSION) becomes the champion again."""
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
    roll_back(registry, target, current, "retrain rollback")
    return f"version {target.version} is the champion of {registry.name} again (was {current.version})"


def _existing(registry: Registry, number: str) -> Version:
    found = registry.get(number)
    if found is None:
        known = ", ".join(version.version for version in registry.versions()) or "none"
        raise UsageError(f"{registry.name} has no version {number} (versions: {known})")
    return found
