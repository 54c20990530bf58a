"""The MLflow model registry: which version is in production, registering, moving aliases.

The registry is the single truth about production. Aliases, not the deprecated stages, carry it:
`champion` (in production), `previous` (where a rollback goes), `challenger` (the latest registered
candidate). Lineage and metrics are model-version tags, prefixed so they never clash with a team's own:
`retrain.*` for lineage, `metric.*` for metrics.

Alias moves are guarded twice: a file lock serialises promotions from processes on this machine, and every
move re-reads the alias it replaces (compare-and-set) so that two runs never both promote, even through a
shared tracking server.
"""

from __future__ import annotations

import fcntl
import functools
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from runner.engine.kernels import IN_THIS_PROCESS, WorkerError, WorkerLost, Workers
from runner.errors import RetrainError
from runner.mlflow_http import bounded_http

_DEFAULT_STORE = threading.Lock()  # held while MLflow's process-wide default store is set (as_default)
# what MLflow answers for a model, version or alias that does not exist: "none", not a failure
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
Params = ParamSpec("Params")
Result = TypeVar("Result")

CHAMPION, PREVIOUS, CHALLENGER = "champion", "previous", "challenger"
LINEAGE, METRIC = "retrain.", "metric."


class RegistryError(RetrainError):
    """The registry cannot be reached or refuses an operation (exit 1)."""


class RegistryConflict(RegistryError):
    """An alias moved under us: another run promoted or rolled back meanwhile."""


@dataclass(frozen=True)
class Version:
    """One registered model version, as the commands and reports show it."""

    name: str
    version: str
    aliases: tuple[str, ...]
    tags: Mapping[str, str]
    created_at: str
    source: str

    @property
    def metrics(self) -> dict[str, float]:
        found = {}
        for key, value in self.tags.items():
            if key.startswith(METRIC):
                try:
                    found[key.removeprefix(METRIC)] = float(value)
                except ValueError:
                    continue
        return found

    def lineage(self, key: str) -> str | None:
        return self.tags.get(LINEAGE + key)

    @property
    def uri(self) -> str:
        """A URI pinned to this version: loading it later gives this model even if aliases move."""
        return f"models:/{self.name}/{self.version}"


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, naming the URI, when a tracking server does not answer (MLflow would retry for minutes)."""
    if not uri.startswith(("http://", "https://")):
        return
    import http.client  # only for a tracking server: the embedded store's runs need no HTTP client
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as answer:
            answer.read()
    # OSError: refused, reset, timed out, URLError; HTTPException: a server that dies while it answers
    # (IncompleteRead) or something else on its port (BadStatusLine)
    except (OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise RegistryError(
            f"MLflow tracking server {uri} is unreachable ({reason}); nothing was run or registered. "
            "Start it, or unset MLFLOW_TRACKING_URI to use the embedded store."
        ) from None


def _store_errors(method: Callable[Params, Result]) -> Callable[Params, Result]:
    """A Registry method whose failures (MLflow's, its database's, the network's) become RegistryError naming
    the store and what was asked of it, with MLflow's HTTP retries bounded while it runs."""

    @functools.wraps(method)
    def guarded(*args: Params.args, **kwargs: Params.kwargs) -> Result:
        registry = args[0]
        assert isinstance(registry, Registry)
        try:
            with bounded_http():
                return method(*args, **kwargs)
        except RetrainError:
            raise
        except Exception as error:  # whatever the store raised is the registry failing, not a bug of ours
            raise RegistryError(
                f"the registry at {registry.tracking_uri} failed ({method.__name__}): {describe(error)}"
            ) from None

    return guarded


def describe(error: BaseException) -> str:
    """'Type: first line of the message', bounded: what a person needs, not a driver's whole SQL."""
    text = next(iter(str(error).strip().splitlines()), "")
    return f"{type(error).__name__}: {text}"[:300]


def _not_found(error: Exception) -> bool:
    return getattr(error, "error_code", None) in _NOT_FOUND


class Registry:
    """One registered model in one tracking store.

    What goes through MLflow (reads the embedded store cannot answer, and every write) runs in a worker of the
    run (`work_in`) when its kernel server imports MLflow (it does in every run of a pipeline with a model,
    `worker_imports`): MLflow and its database layer (~100 MB) are imported there already, and the runner
    process never imports them.
    """

    def __init__(self, tracking_uri: str, model_name: str, lock_dir: Path) -> None:
        self.name = model_name
        self.tracking_uri = tracking_uri
        self.lock_dir = lock_dir
        self.lock_path = lock_dir / "registry.lock"
        self._client: Any = None
        self._client_lock = threading.Lock()
        self.store = EmbeddedStore.at(tracking_uri, model_name)  # reads without MLflow, when it can
        self._workers = IN_THIS_PROCESS

    def work_in(self, workers: Workers) -> None:
        """Run MLflow's calls in the run's workers, when they have MLflow imported (otherwise each worker
        would import it again: it is imported once, here)."""
        self._workers = workers

    @property
    def workers(self) -> Workers:
        """Where the run's heavy calls go (set by `work_in`; this process otherwise)."""
        return self._workers

    @property
    def elsewhere(self) -> bool:
        """Whether MLflow's calls run in a worker (this process then does not import MLflow)."""
        return self._workers.elsewhere("mlflow")

    def _in_worker(self, method: str, **arguments: Any) -> Any:
        """`method`(**arguments) of this registry, run in a worker; RegistryConflict comes back as itself."""
        try:
            return self._workers.call(
                call_in_worker,
                needs="mlflow",
                timeout_s=WORKER_TIMEOUT_S,
                cwd=Path.cwd(),
                tracking_uri=self.tracking_uri,
                model_name=self.name,
                lock_dir=str(self.lock_dir),
                method=method,
                arguments=arguments,
            )
        except WorkerError as error:
            raise RegistryError(str(error)) from None
        except WorkerLost as error:  # gone or silent: whether the write happened is not known
            raise RegistryError(f"the registry's {method} got no answer: {error}") from None

    @property
    def client(self) -> Any:
        """MLflow's client, created on first use (importing MLflow takes over a second)."""
        with self._client_lock:
            if self._client is None:
                from mlflow import MlflowClient

                self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
            return self._client

    # --- reading ----------------------------------------------------------------------------------------
    def champion_fast(self) -> Version | None:
        """The champion, read straight from the embedded store when there is one (no MLflow import)."""
        if self.store is not None:
            with suppress(StoreUnreadable):
                return self.store.by_alias(CHAMPION)
        return self.by_alias(CHAMPION)

    def versions_fast(self) -> list[Version]:
        """Every version, newest first, from the embedded store when there is one (the history page)."""
        if self.store is not None:
            with suppress(StoreUnreadable):
                return self.store.versions()
        return self.versions()

    @_store_errors
    def tagged_runs(self, tag: str = "run_id") -> list[TrackedRun]:
        """The MLflow tracking runs that carry `tag` (a notebook tags its run with the retrain run id), oldest
        first; from the embedded store when there is one."""
        if self.store is not None:
            with suppress(StoreUnreadable):
                return self.store.tagged_runs(tag)
        from mlflow.entities import ViewType

        experiments = [item.experiment_id for item in self.client.search_experiments(view_type=ViewType.ALL)]
        query = f"tags.`{tag}` != ''"
        found = self.client.search_runs(experiments, filter_string=query) if experiments else []
        runs = [
            TrackedRun(
                run_id=item.data.tags[tag],
                mlflow_run_id=item.info.run_id,
                started_at=_iso(item.info.start_time),
                tags=dict(item.data.tags),
            )
            for item in found
        ]
        return sorted(runs, key=lambda run: run.started_at)

    def holds_fast(self, fingerprint: str) -> bool | None:
        """Whether a version holds the model with this fingerprint, as the embedded store says without MLflow;
        None when only MLflow could say (a tracking server, a store it cannot read)."""
        if self.store is None:
            return None
        try:
            return self.store.by_tag(f"{LINEAGE}fingerprint", fingerprint) is not None
        except StoreUnreadable:
            return None

    @_store_errors
    def find_by_fingerprint(self, fingerprint: str) -> Version | None:
        if self.store is not None:
            with suppress(StoreUnreadable):
                return self.store.by_tag(f"{LINEAGE}fingerprint", fingerprint)
        query = f"name = '{self.name}' and tags.`{LINEAGE}fingerprint` = '{fingerprint}'"
        versions = [self._version(item) for item in self.client.search_model_versions(query)]
        return max(versions, key=lambda v: int(v.version)) if versions else None

    @_store_errors
    def by_alias(self, alias: str) -> Version | None:
        if self.elsewhere:
            found: Version | None = self._in_worker("by_alias", alias=alias)
            return found
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException as error:
            if _not_found(error):  # no such model, or no such alias: the same for us
                return None
            raise
        return self._version(found)

    @_store_errors
    def get(self, version: str) -> Version | None:
        if self.elsewhere:
            found: Version | None = self._in_worker("get", version=version)
            return found
        from mlflow.exceptions import MlflowException

        try:
            return self._version(self.client.get_model_version(self.name, version))
        except MlflowException as error:
            if _not_found(error):
                return None
            raise

    @_store_errors
    def versions(self) -> list[Version]:
        """Every version, newest first, with its aliases (which a search does not return)."""
        from mlflow.exceptions import MlflowException

        try:
            aliases = dict(self.client.get_registered_model(self.name).aliases or {})
        except MlflowException as error:
            if _not_found(error):
                return []  # nothing registered yet
            raise
        found = [self._version(item) for item in self.client.search_model_versions(f"name = '{self.name}'")]
        found = [
            replace(v, aliases=tuple(sorted(a for a, number in aliases.items() if str(number) == v.version)))
            for v in found
        ]
        return sorted(found, key=lambda v: int(v.version), reverse=True)

    def _version(self, item: Any) -> Version:
        created = datetime.fromtimestamp(item.creation_timestamp / 1000, UTC).isoformat(timespec="seconds")
        return Version(
            name=item.name,
            version=str(item.version),
            aliases=tuple(sorted(item.aliases or ())),
            tags=dict(item.tags or {}),
            created_at=created,
            source=item.source or "",
        )

    # --- writing ----------------------------------------------------------------------------------------
    @_store_errors
    def register(self, model_uri: str, tags: Mapping[str, str]) -> Version:
        """A new version of the model from `model_uri`, tagged, with the `challenger` alias."""
        if self.elsewhere:
            registered: Version = self._in_worker("register", model_uri=model_uri, tags=dict(tags))
            return registered
        import mlflow

        with self.as_default():  # register_model resolves a logged model's URI through the default store
            created = mlflow.register_model(model_uri, self.name, tags=dict(tags))
        self.client.set_registered_model_alias(self.name, CHALLENGER, created.version)
        found = self.get(str(created.version))
        assert found is not None
        return found

    @_store_errors
    def tag(self, version: str, tags: Mapping[str, str]) -> None:
        if self.elsewhere:
            self._in_worker("tag", version=version, tags=dict(tags))
            return
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, version, key, value)

    @_store_errors
    def move_champion(self, to: str | None, expected: str | None, previous: str | None) -> None:
        """Point `champion` at version `to` (None: no champion) and `previous` at `previous`.

        Refuses with RegistryConflict unless the champion is still `expected` (None: there was none).
        The file lock serialises runs on this machine; runs on other machines that share a tracking server
        can only be caught by what the server says: a move it refuses while another run moves the aliases
        (a unique-key error on its database), or a champion that is not `to` once the move is done.
        """
        if self.elsewhere:
            self._in_worker("move_champion", to=to, expected=expected, previous=previous)
            return
        with self.locked():
            current = self.by_alias(CHAMPION)
            if (current.version if current else None) != expected:
                now = current.version if current else "none"
                raise RegistryConflict(
                    f"the champion of {self.name} changed during this run (expected {expected or 'none'}, "
                    f"found {now}); nothing was moved"
                )
            try:
                self._set_alias(PREVIOUS, previous)
                self._set_alias(CHAMPION, to)
            except Exception as error:  # the other run is mid-move: give it a moment to finish it
                why = f"the registry refused the move: {error}"
                for _ in range(12):
                    self._raise_if_moved_by_another(expected, to, why)
                    time.sleep(0.25)
                raise
            self._raise_if_moved_by_another(expected, to, "another run moved it at the same time")

    def _raise_if_moved_by_another(self, expected: str | None, to: str | None, why: str) -> None:
        now = self.by_alias(CHAMPION)
        found = now.version if now else None
        if found not in (to, expected):
            raise RegistryConflict(
                f"the champion of {self.name} changed during this run (expected {expected or 'none'}, found "
                f"{found or 'none'}; {why.splitlines()[0][:200]}); this run's version is not the champion"
            )

    def _set_alias(self, alias: str, version: str | None) -> None:
        if version is None:
            if self.by_alias(alias) is not None:
                self.client.delete_registered_model_alias(self.name, alias)
        else:
            self.client.set_registered_model_alias(self.name, alias, version)

    @contextmanager
    def as_default(self) -> Iterator[None]:
        """Make this store MLflow's default for the calls that only use the default, then put it back.

        mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI to this process's environment (for child
        processes); left there, it would point every later run in this process (and its kernels) here.
        One thread at a time: a thread putting the old value back must not pull it from under another.
        """
        import mlflow

        with _DEFAULT_STORE, bounded_http():  # the runner's own calls: MLflow's HTTP retries bounded
            before = os.environ.get("MLFLOW_TRACKING_URI")
            mlflow.set_tracking_uri(self.tracking_uri)
            try:
                yield
            finally:
                mlflow.set_tracking_uri(before)  # type: ignore[arg-type]  # None removes the variable again

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise alias moves between processes on this machine (blocking)."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.seek(0)
                handle.truncate()
                handle.write(f"{os.getpid()}\n")
                handle.flush()
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


# MLflow's SQLAlchemy stores, each caching one engine per database URI for the life of the process
_STORE_MODULES = (
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow.store.jobs.sqlalchemy_store",
)


def release_connections() -> None:
    """Close the database connections MLflow pooled in this process (what a run's registry calls opened).

    MLflow keeps one SQLAlchemy engine per database URI for the life of the process, each with a pool of up
    to five open connections, and has no public way to close them (mlflow#2650): a process that runs many
    pipelines (the tests, `retrain demo replay`) would keep descriptors on every store it touched. Disposing
    an engine closes its idle connections only; the stores MLflow cached stay usable and reconnect when next
    asked. A process that never imported MLflow's stores has nothing to release (none is imported here)."""
    for name in _STORE_MODULES:
        module = sys.modules.get(name)
        store = getattr(module, "SqlAlchemyStore", None)
        engines = getattr(store, "_engine_map", None)  # MLflow's own cache, pinned with MLflow
        if not isinstance(engines, dict):
            continue
        for engine in list(engines.values()):
            with suppress(Exception):  # a connection that fails to close is the database's, not the run's
                engine.dispose()


WORKER_TIMEOUT_S = 120  # one registry call in a worker: its requests, each with HTTP_BOUNDS, fit in it


def worker_imports(tracking_uri: str) -> str:
    """What MLflow's calls in a run import, as code for its kernel server to preload: the pyfunc flavour
    (stages log and load models with it) and, for a database store, its SQL layer and what checks its schema.

    Preloaded, MLflow is imported once a run, in the server: the registry's calls go to its workers and the
    stages' kernels are forked with it, where otherwise the runner and each stage that uses MLflow imported
    it again (~3 s of CPU each; a toy model's run went from 15.3 s to 10.5 s of CPU, docs/speed.md)."""
    imports = ["import mlflow.pyfunc"]
    dialect = tracking_uri.partition(":")[0].partition("+")[0]  # "postgresql" for postgresql+psycopg2://
    if dialect in ("sqlite", "postgresql", "mysql", "mssql"):  # the databases MLflow's SQL stores serve
        imports += [
            "import mlflow.store.tracking.sqlalchemy_store, mlflow.store.model_registry.sqlalchemy_store",
            "import alembic.command",  # opening a store checks its schema
        ]
    if dialect == "sqlite":
        imports.append("import sqlalchemy.dialects.sqlite")
    return "\n".join(imports)


def call_in_worker(
    tracking_uri: str, model_name: str, lock_dir: str, method: str, arguments: dict[str, Any]
) -> Any:
    """In a worker: one method of the registry, in that process."""
    return getattr(Registry(tracking_uri, model_name, Path(lock_dir)), method)(**arguments)


@dataclass(frozen=True)
class TrackedRun:
    """An MLflow tracking run that names the retrain run it belongs to (its `run_id` tag)."""

    run_id: str
    mlflow_run_id: str
    started_at: str
    tags: Mapping[str, str]


def _iso(milliseconds: int | None) -> str:
    return datetime.fromtimestamp((milliseconds or 0) / 1000, UTC).isoformat(timespec="seconds")


_Query = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]  # SQL and its parameters -> rows


class StoreUnreadable(Exception):
    """The embedded store cannot answer a read (missing, locked, another schema): ask MLflow instead."""


class EmbeddedStore:
    """Read-only answers from the embedded sqlite store, in milliseconds and without importing MLflow.

    A run whose stages were all cached still needs the champion (part of the evaluate stage's fingerprint)
    and whether a version already holds the candidate; importing MLflow for that would cost more than the
    whole run. The tables read here (model_versions, model_version_tags, registered_model_aliases) are
    MLflow's own, pinned with MLflow; anything unexpected raises StoreUnreadable and the caller asks MLflow.
    Writes always go through MLflow.
    """

    def __init__(self, path: Path, model_name: str) -> None:
        self.path = path
        self.name = model_name

    @classmethod
    def at(cls, tracking_uri: str, model_name: str) -> EmbeddedStore | None:
        if not tracking_uri.startswith("sqlite:///") or os.environ.get("MLFLOW_WORKSPACE"):
            return None
        return cls(Path(tracking_uri.removeprefix("sqlite:///")), model_name)

    def by_alias(self, alias: str) -> Version | None:
        with self._reading() as query:
            rows = query(
                "SELECT version FROM registered_model_aliases"
                " WHERE workspace = 'default' AND name = ? AND alias = ?",
                (self.name, alias),
            )
            return self._version(query, int(rows[0][0])) if rows else None

    def by_tag(self, key: str, value: str) -> Version | None:
        """The newest live version carrying the tag `key` = `value`."""
        with self._reading() as query:
            rows = query(
                "SELECT MAX(t.version) FROM model_version_tags t JOIN model_versions v"
                " ON v.workspace = t.workspace AND v.name = t.name AND v.version = t.version"
                " WHERE t.workspace = 'default' AND t.name = ? AND t.key = ? AND t.value = ?"
                " AND v.current_stage != 'Deleted_Internal'",
                (self.name, key, value),
            )
            return self._version(query, int(rows[0][0])) if rows and rows[0][0] is not None else None

    def versions(self) -> list[Version]:
        """Every live version, newest first."""
        with self._reading() as query:
            rows = query(
                "SELECT version FROM model_versions WHERE workspace = 'default' AND name = ?"
                " AND current_stage != 'Deleted_Internal' ORDER BY version DESC",
                (self.name,),
            )
            found = [self._version(query, int(number)) for (number,) in rows]
        return [version for version in found if version is not None]

    def tagged_runs(self, tag: str) -> list[TrackedRun]:
        """Active tracking runs carrying `tag`, oldest first."""
        found = []
        with self._reading() as query:
            rows = query(
                "SELECT t.value, r.run_uuid, r.start_time FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid"
                " WHERE t.key = ? AND r.lifecycle_stage = 'active' ORDER BY r.start_time",
                (tag,),
            )
            for value, uuid, start in rows:
                tags = query("SELECT key, value FROM tags WHERE run_uuid = ?", (uuid,))
                started = _iso(start)
                found.append(TrackedRun(str(value), str(uuid), started, {str(k): str(v) for k, v in tags}))
        return found

    def _version(self, query: _Query, number: int) -> Version | None:
        where = " WHERE workspace = 'default' AND name = ? AND version = ?"
        live = " AND current_stage != 'Deleted_Internal'"
        columns = "SELECT creation_time, source FROM model_versions"
        found = query(columns + where + live, (self.name, number))
        if not found:
            return None
        tags = query("SELECT key, value FROM model_version_tags" + where, (self.name, number))
        aliases = query("SELECT alias FROM registered_model_aliases" + where, (self.name, number))
        created_ms, source = found[0]
        return Version(
            name=self.name,
            version=str(number),
            aliases=tuple(sorted(str(alias) for (alias,) in aliases)),
            tags={str(key): str(value) for key, value in tags},
            created_at=_iso(created_ms),
            source=source or "",
        )

    @contextmanager
    def _reading(self) -> Iterator[_Query]:
        """One read-only connection for the queries of one answer: opening one reads MLflow's whole schema
        (~1 ms of CPU), and the history page asks for every version, three queries each."""
        if not self.path.is_file():
            raise StoreUnreadable(f"{self.path} does not exist yet")  # MLflow creates it
        try:
            connection = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=5)
        except sqlite3.Error as error:
            raise StoreUnreadable(str(error)) from None

        def query(sql: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
            try:
                return connection.execute(sql, parameters).fetchall()
            except sqlite3.Error as error:
                raise StoreUnreadable(str(error)) from None

        try:
            yield query
        finally:
            connection.close()
