"""Copy a project's embedded MLflow store to a tracking server, and check the copy.

The step up from the embedded store (a team, several pipelines, models that not everyone who reads the
code may read) is a tracking server; `retrain registry migrate --to URI` moves the history there:

    experiments (by name) -> tracking runs (params, every metric's history, tags, status, times, artifacts)
    -> logged models (params, tags, artifacts) -> registered models -> versions, in order, with their tags
    and the same numbers -> aliases -> the check: every version, tag, alias and run metric compared, and
    every version's files listed on both sides

Through MLflow's client on both sides, so the server's artifact store (S3, say) receives the files the usual
way. Each copied run, model and version carries the id it was copied from (`retrain.migrated_from`): a
migration that stopped half-way is run again and goes on where it stopped, never copying twice.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.errors import RetrainError

FROM_TAG = "retrain.migrated_from"  # on a copied run, logged model or version: the source's id


class MigrationError(RetrainError):
    """The copy cannot be made, or differs from the source (exit 1)."""


@dataclass
class Migration:
    """What a migration copied and what its check found."""

    source: str
    target: str
    experiments: int = 0
    runs: int = 0
    models: int = 0
    versions: int = 0
    aliases: int = 0
    skipped: int = 0  # already copied by an earlier migration
    differences: list[str] = field(default_factory=list)

    def summary(self) -> str:
        copied = (
            f"{self.runs} run(s), {self.models} logged model(s), {self.versions} version(s), "
            f"{self.aliases} alias(es) in {self.experiments} experiment(s)"
        )
        again = f" ({self.skipped} already there)" if self.skipped else ""
        return f"copied {copied}{again} from {self.source} to {self.target}"


def migrate(source_uri: str, target_uri: str) -> Migration:
    """Copy everything from the store at `source_uri` to the one at `target_uri`, then check the copy."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a log, not a terminal
    from mlflow import MlflowClient

    source = MlflowClient(tracking_uri=source_uri, registry_uri=source_uri)
    target = MlflowClient(tracking_uri=target_uri, registry_uri=target_uri)
    done = Migration(source_uri, target_uri)
    runs: dict[str, str] = {}
    models: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="retrain-migrate-") as scratch:
        for experiment in _experiments(source):
            target_id = _experiment(target, experiment.name)
            done.experiments += 1
            for run in _runs(source, experiment.experiment_id):
                runs[run.info.run_id] = _copy_run(source, target, run, target_id, Path(scratch), done)
            for model in _logged_models(source, experiment.experiment_id):
                models[model.model_id] = _copy_logged_model(
                    target, model, target_id, runs, Path(scratch), done
                )
        for registered in source.search_registered_models():
            _copy_registered_model(source, target, registered, runs, models, done)
    done.differences = check(source, target, runs)
    return done


def _experiments(client: Any) -> list[Any]:
    """Experiments that hold something: MLflow's empty `Default` is not worth a copy."""
    found = client.search_experiments()
    return [item for item in found if item.name != "Default" or client.search_runs([item.experiment_id])]


def _experiment(target: Any, name: str) -> str:
    found = target.get_experiment_by_name(name)
    return str(found.experiment_id) if found is not None else str(target.create_experiment(name))


def _runs(client: Any, experiment_id: str) -> Iterator[Any]:
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=500, page_token=token, order_by=["start_time"])
        yield from page
        token = page.token
        if not token:
            return


def _copied(target: Any, experiment_id: str, source_id: str) -> Any | None:
    found = target.search_runs([experiment_id], filter_string=f"tags.`{FROM_TAG}` = '{source_id}'")
    return found[0] if found else None


def _copy_run(source: Any, target: Any, run: Any, experiment_id: str, scratch: Path, done: Migration) -> str:
    from mlflow.entities import Metric, Param, RunTag

    existing = _copied(target, experiment_id, run.info.run_id)
    if existing is not None:
        done.skipped += 1
        return str(existing.info.run_id)
    tags = {**run.data.tags, FROM_TAG: run.info.run_id}
    created = target.create_run(
        experiment_id, start_time=run.info.start_time, tags=tags, run_name=run.info.run_name
    )
    new_id = created.info.run_id
    metrics = [
        Metric(item.key, item.value, item.timestamp, item.step)
        for key in run.data.metrics
        for item in source.get_metric_history(run.info.run_id, key)
    ]
    params = [Param(key, value) for key, value in run.data.params.items()]
    for start in range(0, max(len(metrics), len(params), 1), 500):  # log_batch takes at most 1000 items
        batch_tags: list[RunTag] = []
        target.log_batch(
            new_id, metrics=metrics[start : start + 500], params=params[start : start + 100], tags=batch_tags
        )
    folder = scratch / "runs" / run.info.run_id
    folder.mkdir(parents=True)
    if source.list_artifacts(run.info.run_id):
        local = source.download_artifacts(run.info.run_id, "", str(folder))  # the run's root, in `folder`
        target.log_artifacts(new_id, local)
    target.set_terminated(new_id, status=run.info.status, end_time=run.info.end_time)
    done.runs += 1
    return str(new_id)


def _logged_models(client: Any, experiment_id: str) -> Iterator[Any]:
    token = None
    while True:
        page = client.search_logged_models([experiment_id], page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _copy_logged_model(
    target: Any, model: Any, experiment_id: str, runs: dict[str, str], scratch: Path, done: Migration
) -> str:
    import mlflow.artifacts

    found = target.search_logged_models(
        [experiment_id], filter_string=f"tags.`{FROM_TAG}` = '{model.model_id}'"
    )
    if found:
        done.skipped += 1
        return str(found[0].model_id)
    created = target.create_logged_model(
        experiment_id,
        name=model.name,
        source_run_id=runs.get(model.source_run_id or ""),
        tags={**model.tags, FROM_TAG: model.model_id},
        params=dict(model.params),
        model_type=model.model_type,
    )
    folder = scratch / "models" / model.model_id
    folder.mkdir(parents=True)
    # a folder's download lands in a subfolder of its own name: the returned path is the model's root
    local = mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location, dst_path=str(folder))
    target.log_model_artifacts(created.model_id, local)
    target.finalize_logged_model(created.model_id, "READY")
    done.models += 1
    return str(created.model_id)


def _copy_registered_model(
    source: Any, target: Any, registered: Any, runs: dict[str, str], models: dict[str, str], done: Migration
) -> None:
    from mlflow.exceptions import MlflowException

    name = registered.name
    try:
        target.get_registered_model(name)
    except MlflowException:
        target.create_registered_model(
            name, tags=dict(registered.tags or {}), description=registered.description
        )
    versions = sorted(source.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    there = {
        v.tags.get(FROM_TAG): v
        for v in target.search_model_versions(f"name = '{name}'")
        if v.tags.get(FROM_TAG)
    }
    others = [v for v in target.search_model_versions(f"name = '{name}'") if not v.tags.get(FROM_TAG)]
    if others:
        raise MigrationError(
            f"the target already has {len(others)} version(s) of {name} that were not migrated: versions"
            " keep their numbers (aliases and lineage name them), so migrate into a model"
            " that has none, or under another name"
        )
    for version in versions:
        if str(version.version) in there:
            done.skipped += 1
            continue
        model_id = models.get(_model_id(version) or "")
        source_uri = f"models:/{model_id}" if model_id else _mapped_source(version.source, runs)
        created = target.create_model_version(
            name,
            source=source_uri,
            run_id=runs.get(version.run_id or ""),
            tags={**version.tags, FROM_TAG: str(version.version)},
            description=version.description,
            model_id=model_id,
        )
        if str(created.version) != str(version.version):
            raise MigrationError(
                f"{name} version {version.version} became version {created.version} on the server (a deleted"
                " version left a gap): aliases and lineage would name the wrong versions; nothing more copied"
            )
        done.versions += 1
    for alias, number in (registered.aliases or {}).items():
        target.set_registered_model_alias(name, alias, str(number))
        done.aliases += 1


def _mapped_source(source: str, runs: dict[str, str]) -> str:
    """A version registered from `runs:/<id>/path` (MLflow 2 style) points at the copied run."""
    if source.startswith("runs:/"):
        run_id, _, path = source.removeprefix("runs:/").partition("/")
        if run_id in runs:
            return f"runs:/{runs[run_id]}/{path}"
    raise MigrationError(f"cannot copy a version whose source is {source}: register it from a logged model")


def check(source: Any, target: Any, runs: dict[str, str]) -> list[str]:
    """Every difference between the source and the copy: versions, their tags and aliases, the runs'
    params and metrics, each version's files (names and sizes). Empty: the copy is whole."""
    differences: list[str] = []
    for registered in source.search_registered_models():
        name = registered.name
        theirs = {str(v.version): v for v in target.search_model_versions(f"name = '{name}'")}
        for version in source.search_model_versions(f"name = '{name}'"):
            copy = theirs.get(str(version.version))
            if copy is None:
                differences.append(f"{name} v{version.version}: missing")
                continue
            tags = {k: v for k, v in copy.tags.items() if k != FROM_TAG}
            if tags != dict(version.tags):
                differences.append(f"{name} v{version.version}: tags differ")
            if _files(source, version) != _files(target, copy):
                differences.append(f"{name} v{version.version}: files differ")
        copied = target.get_registered_model(name).aliases or {}
        wanted = {alias: str(number) for alias, number in (registered.aliases or {}).items()}
        if {alias: str(number) for alias, number in copied.items()} != wanted:
            differences.append(f"{name}: aliases {copied} instead of {wanted}")
    for source_id, target_id in runs.items():
        ours, copy = source.get_run(source_id).data, target.get_run(target_id).data
        if ours.metrics != copy.metrics or ours.params != copy.params:
            differences.append(f"run {source_id}: params or metrics differ")
    return differences


def _model_id(version: Any) -> str | None:
    """The logged model a version was registered from (MLflow 3: its source is `models:/m-...`)."""
    found = getattr(version, "model_id", None)
    if found:
        return str(found)
    source = str(version.source or "")
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None


def _files(client: Any, version: Any) -> list[tuple[str, int | None]]:
    """The files of a version's logged model, with their sizes."""
    model_id = _model_id(version)
    if not model_id:
        return []
    listed: list[tuple[str, int | None]] = []
    pending = [""]
    while pending:
        path = pending.pop()
        for item in client.list_logged_model_artifacts(model_id, path or None):
            if item.is_dir:
                pending.append(item.path)
            else:
                listed.append((item.path, item.file_size))
    return sorted(listed)
