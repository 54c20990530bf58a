"""A new embedded store as a copy of an empty one, instead of MLflow's schema migrations.

MLflow makes a new sqlite store by running every migration of its schema since the first, one after the other
(about fifty, many of them copying a table on sqlite): seconds of CPU after MLflow's own import, during which
no stage may start (a kernel opening the store at the same time would run the same migrations and fail). The
store it makes is the same every time for one MLflow version: the schema, and the Default experiment, whose
artifact location names the folder it was made in.

So the first new store of a machine is kept, empty, in the user's cache (one per MLflow version), and the next
new store is a copy of it: a file copy, then `store.rebase` rewrites the folder it names to the new project's
(the runner's usual step for a store that moved). Best effort: a cache that cannot be read or written leaves
MLflow to make the store as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from runner import files
from runner.production.store import DB_FILE, STORE_FILE, recorded_root
from runner.secrets import Redactor

# the runner's cache folder: RETRAIN_CACHE_DIR, else notebook-retrain/ under $XDG_CACHE_HOME or ~/.cache
CACHE_ENV, CACHE_DIR = "RETRAIN_CACHE_DIR", "notebook-retrain"
# the tables an empty store of MLflow 3 holds rows in: the Default experiment only
_EMPTY = {"experiments": 1, "runs": 0, "registered_models": 0, "model_versions": 0, "logged_models": 0}


def templates() -> Path | None:
    """The folder keeping the empty store of the installed MLflow version; None without MLflow."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        mlflow = version("mlflow")
    except PackageNotFoundError:
        return None
    if os.environ.get(CACHE_ENV):
        cache = Path(os.environ[CACHE_ENV])
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / CACHE_DIR
    return cache / "stores" / f"mlflow-{mlflow}"


def seed(store: Path) -> bool:
    """Make the new store `store` (a project's mlruns/) a copy of the kept empty one, still naming the folder
    it was made in (`store.rebase` then rewrites it). False, with no database written, when `store` holds one
    already or no whole empty copy is kept."""
    if (store / DB_FILE).exists():  # every run but a project's first: nothing else to look at
        return False
    template = templates()
    if template is None or not _empty(template / DB_FILE):
        return False
    made_in = recorded_root(template)
    if made_in is None:
        return False
    nothing = Redactor()  # the copy of a database that holds no value of anyone's
    try:
        files.atomic_write_text(store / STORE_FILE, json.dumps({"root": made_in}) + "\n", redact=nothing)
        # never over a store another process made meanwhile (FileExistsError); the kept copy is never
        # written again once kept, so reading it whole is reading a consistent database
        files.create_new_bytes(store / DB_FILE, (template / DB_FILE).read_bytes(), redact=nothing)
    except OSError:
        return False
    return True


def keep(store: Path) -> None:
    """Keep a copy of the store MLflow has just made at `store` when it is empty, names no folder but its
    own, and none is kept yet. The copy and the folder it names appear together or not at all."""
    template = templates()
    here = str(store.resolve())
    if template is None or template.exists() or not _empty(store / DB_FILE, under=here):
        return
    with contextlib.suppress(OSError, sqlite3.Error):
        template.parent.mkdir(parents=True, exist_ok=True)
        making = Path(tempfile.mkdtemp(prefix=f".{template.name}.", dir=template.parent))
        try:
            with (  # sqlite's backup: a consistent copy even of a database that is open elsewhere
                contextlib.closing(sqlite3.connect(f"file:{store / DB_FILE}?mode=ro", uri=True)) as source,
                contextlib.closing(sqlite3.connect(making / DB_FILE)) as copy,
            ):
                source.backup(copy)
            files.atomic_write_text(making / STORE_FILE, json.dumps({"root": here}) + "\n", redact=Redactor())
            making.rename(template)  # a folder's rename: whole; another process's kept first wins
        finally:
            shutil.rmtree(making, ignore_errors=True)


def _empty(database: Path, under: str | None = None) -> bool:
    """A whole sqlite database of MLflow's schema holding the rows of an empty store and nothing more (and,
    given `under`, whose Default experiment is inside that folder)."""
    if not database.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)) as db:
            if db.execute("PRAGMA quick_check").fetchone() != ("ok",):
                return False
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "alembic_version" not in tables or not set(_EMPTY) <= tables:
                return False
            counts = {table: db.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0] for table in _EMPTY}
            location = db.execute("SELECT artifact_location FROM experiments").fetchone()
    except sqlite3.Error:
        return False
    inside = under is None or str(location[0] or "").removeprefix("file://").startswith(under + "/")
    return counts == _EMPTY and inside
