"""Secrets that notebooks wrote into the MLflow tracking store: taken out after each stage, where MLflow lets.

The runner redacts every file it writes (runner/secrets.py), but a notebook that calls `mlflow.log_param`,
`mlflow.set_tag` or names its run with a secret's value writes it into the tracking store itself, beyond
the runner's files. After each stage, the tracking runs started since the run began are searched for the
secrets' values (every form the redactor knows), and:

- the embedded store (sqlite): params, tags and run names are rewritten in place, in its own tables (the
  same tables registry.EmbeddedStore reads; MLflow itself is not needed);
- a tracking server: tags and run names are rewritten through MLflow's client (in a worker when the run has
  them). A param cannot be changed through MLflow's API once logged: each one holding a secret is reported
  (a warning of the run), for someone to delete that run or param on the server.

Not searched: metrics (numbers), artifacts (files a notebook logged: the model, its input example),
dataset inputs, experiment names and the registry's own tags, which the runner writes from values that cannot
be secrets (a secret is refused as a parameter).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path

from runner.engine.kernels import WorkerError, WorkerLost, Workers
from runner.mlflow_http import bounded_http
from runner.production.registry import describe
from runner.secrets import Redactor

SQLITE = "sqlite:///"
WORKER_TIMEOUT_S = 120
_TABLES = ("params", "tags")  # (key, value, run_uuid) in MLflow's schema


def redact_store(
    tracking_uri: str, since_ms: int, redact: Redactor, secrets: Mapping[str, str], workers: Workers
) -> list[str]:
    """Take the secrets out of what tracking runs started since `since_ms` logged; returns a warning for
    each value that could not be taken out (or for a store that could not be searched)."""
    if not redact.active:
        return []
    try:
        if tracking_uri.startswith(SQLITE):
            path = Path(tracking_uri.removeprefix(SQLITE))
            return redact_sqlite(path, since_ms, redact) if path.is_file() else []
        return list(
            workers.call(
                redact_through_client,
                needs="mlflow",
                timeout_s=WORKER_TIMEOUT_S,
                cwd=Path.cwd(),
                tracking_uri=tracking_uri,
                since_ms=since_ms,
                secrets=dict(secrets),
            )
        )
    except (sqlite3.Error, WorkerError, WorkerLost) as error:
        return [f"the tracking store could not be searched for secrets: {describe(error)}"]


def redact_sqlite(path: Path, since_ms: int, redact: Redactor) -> list[str]:
    """Rewrite, in the embedded store's tables, the params, tags and run names that hold a secret."""
    connection = sqlite3.connect(path, timeout=30)
    try:
        connection.execute("PRAGMA secure_delete = ON")  # what is replaced is overwritten, not left free
        with connection:  # one transaction: all of it or none of it
            found = connection.execute("SELECT run_uuid, name FROM runs WHERE start_time >= ?", (since_ms,))
            for run, name in found.fetchall():
                for table in _TABLES:
                    rows = connection.execute(f"SELECT key, value FROM {table} WHERE run_uuid = ?", (run,))
                    for key, value in rows.fetchall():
                        clean = redact.redact(value or "")
                        if clean != (value or ""):
                            update = f"UPDATE {table} SET value = ? WHERE run_uuid = ? AND key = ?"
                            connection.execute(update, (clean, run, key))
                if name and redact.redact(name) != name:
                    update = "UPDATE runs SET name = ? WHERE run_uuid = ?"
                    connection.execute(update, (redact.redact(name), run))
    finally:
        connection.close()
    return []


def redact_through_client(tracking_uri: str, since_ms: int, secrets: dict[str, str]) -> list[str]:
    """Through MLflow's client (a tracking server): tags and run names rewritten, params reported. Runs in a
    worker (or in the runner)."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    redact = Redactor.from_environ(list(secrets), secrets)
    left = []
    with bounded_http():
        client = MlflowClient(tracking_uri=tracking_uri)
        experiments = [item.experiment_id for item in client.search_experiments(view_type=ViewType.ALL)]
        found = client.search_runs(experiments, f"attributes.start_time >= {since_ms}") if experiments else []
        for run in found:
            run_id = run.info.run_id
            for key, value in run.data.tags.items():
                if redact.redact(value) != value:
                    client.set_tag(run_id, key, redact.redact(value))
            if run.info.run_name and redact.redact(run.info.run_name) != run.info.run_name:
                client.update_run(run_id, name=redact.redact(run.info.run_name))
            for key, value in run.data.params.items():
                if redact.redact(value) != value:
                    left.append(
                        f"MLflow run {run_id} holds a secret in its param '{key}': a tracking server cannot"
                        " change a logged param; delete that run (or the param in the server's database)"
                    )
    return left
