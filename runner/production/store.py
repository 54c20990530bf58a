"""The embedded MLflow store (`mlruns/`) as files: portable to any folder, and merged with another copy.

- `rebase`: MLflow records absolute paths (artifact locations, a version's storage location). A store
  restored under another folder (another runner, a `container:` job, a renamed repository, a copied project)
  would point at a folder that does not exist and loading a model fails. `store.json` remembers where the
  store was last opened; when it moved, every recorded path under the old folder is rewritten to the new one,
  before MLflow opens it.
- `merge`: two runs that started from the same saved state (`base`) each added to their copy. The registry's
  rows and artifacts are append-only, so their union is the merged state: `ours`' new rows and files go into
  `theirs` (tracking runs, logged models and everything else keyed by MLflow's own unique ids keep their
  ids; model versions get the next free numbers, and a version that holds the same fingerprint as one of
  theirs is that version: never a duplicate). An alias that ours moved is moved on theirs only where theirs
  left it where the base had it (compare-and-set); otherwise theirs is kept and the conflict is reported.

Plain sqlite3, no MLflow import: both run in milliseconds, before a job's MLflow is even imported.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from runner import files
from runner.errors import RetrainError

DB_FILE = "mlflow.db"
RUN_LOG = "run-log"  # <run_id>.json: the record of every full run, kept with the store (the history page)
STORE_FILE = "store.json"  # {"root": where the store was last opened}: what `rebase` compares with
NOT_COPIED = frozenset({DB_FILE, STORE_FILE, "registry.lock", f"{DB_FILE}-journal", f"{DB_FILE}-wal"})
FINGERPRINT_TAG = "retrain.fingerprint"
CHAMPION = "champion"
# rows a merge handles itself, and MLflow's derived or machine-local tables, which it leaves alone
_OWN = frozenset(
    {
        "alembic_version",
        "experiments",
        "registered_models",
        "registered_model_tags",
        "model_versions",
        "model_version_tags",
        "registered_model_aliases",
        "workspaces",
        "jobs",
        "job_locks",
        "scheduler_leases",
    }
)
_PROMOTION_TAGS = ("retrain.promoted", "retrain.replaced", "retrain.rolled_back")


class StoreError(RetrainError):
    """The store cannot be rebased or merged (another MLflow schema, an unreadable database): exit 1."""


# --- portable: paths follow the store --------------------------------------------------------------------
def rebase(store: Path, at: Path | None = None) -> str | None:
    """Rewrite the store's recorded paths when it was last opened in another folder; remember this one
    (or `at`, where the store is about to be moved). Returns what was done, or None when there was nothing
    to do (no store yet, or it has not moved)."""
    database = store / DB_FILE
    if not database.is_file():
        return None
    here = str((at or store).resolve())
    before = recorded_root(store)
    if before == here:
        return None
    with _connect(database) as connection:
        if before is None:
            before = _guess_root(connection)
        if before is not None and before != here:
            _replace_root(connection, before, here)
    _remember_root(store, here)
    return f"the store's paths now point to {here} (were {before})" if before and before != here else None


def recorded_root(store: Path) -> str | None:
    try:
        root = json.loads((store / STORE_FILE).read_text(encoding="utf-8")).get("root")
    except (OSError, ValueError, AttributeError):
        return None
    return root if isinstance(root, str) and root else None


def _remember_root(store: Path, root: str) -> None:
    from runner.files import atomic_write_text
    from runner.secrets import Redactor

    atomic_write_text(store / STORE_FILE, json.dumps({"root": root}) + "\n", redact=Redactor())


def _guess_root(connection: sqlite3.Connection) -> str | None:
    """A store saved before `store.json` existed: its root is what the project's experiments were created
    under (`<root>/artifacts`, runner/project.py `use_mlflow`)."""
    for (location,) in connection.execute("SELECT artifact_location FROM experiments"):
        text = str(location or "")
        path = text.removeprefix("file://")
        if path.startswith("/") and path.rstrip("/").endswith("/artifacts"):
            from urllib.parse import unquote

            return unquote(path.rstrip("/").removesuffix("/artifacts"))
    return None


def _replace_root(connection: sqlite3.Connection, old: str, new: str) -> None:
    """Every text value that names `old` or a path under it names `new` instead (plain paths and file URIs,
    percent-encoded or not), in every table: MLflow keeps paths in several, and more with each release."""
    pairs = [(old + "/", new + "/")]
    encoded_old, encoded_new = Path(old).as_uri(), Path(new).as_uri()
    if encoded_old != "file://" + old or encoded_new != "file://" + new:
        pairs.insert(0, (encoded_old + "/", encoded_new + "/"))
    for table, columns in _text_columns(connection):
        for column in columns:
            for before, after in pairs:
                connection.execute(
                    f'UPDATE "{table}" SET "{column}" = REPLACE("{column}", ?, ?)'
                    f' WHERE instr("{column}", ?) > 0',
                    (before, after, before),
                )
            for before, after in ((old, new), ("file://" + old, "file://" + new)):
                connection.execute(
                    f'UPDATE "{table}" SET "{column}" = ? WHERE "{column}" = ?', (after, before)
                )


def _text_columns(connection: sqlite3.Connection) -> Iterator[tuple[str, list[str]]]:
    for table in _tables(connection, "main"):
        rows = connection.execute(f'PRAGMA main.table_xinfo("{table}")').fetchall()
        texts = [
            str(row[1])
            for row in rows
            if row[6] == 0 and any(word in str(row[2]).upper() for word in ("CHAR", "TEXT", "CLOB"))
        ]
        if texts:
            yield table, texts


def _tables(connection: sqlite3.Connection, schema: str) -> list[str]:
    rows = connection.execute(f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'").fetchall()
    return [str(name) for (name,) in rows if not str(name).startswith("sqlite_")]


@contextmanager
def _connect(database: Path) -> Iterator[sqlite3.Connection]:
    try:
        connection = sqlite3.connect(database, timeout=30, isolation_level=None)
    except sqlite3.Error as error:
        raise StoreError(f"cannot open {database}: {error}") from None
    try:
        connection.execute("BEGIN IMMEDIATE")
        yield connection
        connection.execute("COMMIT")
    except sqlite3.Error as error:
        with suppress(sqlite3.Error):  # no transaction when BEGIN itself failed (not a database)
            connection.execute("ROLLBACK")
        raise StoreError(f"{database}: {error}") from None
    except BaseException:
        with suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
        raise
    finally:
        connection.close()


# --- merged: two runs' additions to the same state --------------------------------------------------------
@dataclass
class MergeResult:
    """What a merge of ours into theirs did."""

    versions: dict[str, str] = field(default_factory=dict)  # "<model>/<our number>" -> their number
    reused: list[str] = field(default_factory=list)  # ours that theirs already held (same fingerprint)
    runs: int = 0  # tracking runs added
    files: int = 0  # artifact files added
    moved: list[str] = field(default_factory=list)  # aliases moved on theirs as ours did
    conflicts: list[str] = field(default_factory=list)  # aliases ours moved that theirs had moved too

    champion_conflict: str | None = None  # the conflict on `champion`: this run's promotion lost

    def summary(self) -> str:
        added = ", ".join(f"v{ours.split('/')[-1]} as v{theirs}" for ours, theirs in self.versions.items())
        parts = [f"{self.runs} tracking run(s), {self.files} file(s)"]
        parts.append(f"versions {added}" if added else "no new version")
        parts += [f"v{item} was already there" for item in self.reused]
        parts += [f"moved {item}" for item in self.moved]
        parts += [f"kept theirs: {item}" for item in self.conflicts]
        return "; ".join(parts)


def merge(ours: Path, base: Path | None, theirs: Path) -> MergeResult:
    """Add what `ours` holds beyond `base` (the state both started from; None: they started empty) to
    `theirs`, in place. `theirs` must be rebased to where it is (its paths point into it)."""
    result = MergeResult()
    our_root, their_root = str(ours.resolve()), str(theirs.resolve())
    if not (ours / DB_FILE).is_file():
        result.files = _copy_files(ours, theirs)
        return result
    if not (theirs / DB_FILE).is_file():  # theirs has no database yet: ours is the merge
        result.files = _copy_files(ours, theirs)
        files.atomic_copy(ours / DB_FILE, theirs / DB_FILE)
        with _connect(theirs / DB_FILE) as connection:
            _replace_root(connection, recorded_root(ours) or our_root, their_root)
        return result
    with _connect(theirs / DB_FILE) as connection:
        connection.execute("ATTACH DATABASE ? AS ours", (f"{(ours / DB_FILE).resolve().as_uri()}?mode=ro",))
        has_base = base is not None and (base / DB_FILE).is_file()
        if has_base:
            assert base is not None
            connection.execute(
                "ATTACH DATABASE ? AS base", (f"{(base / DB_FILE).resolve().as_uri()}?mode=ro",)
            )
        _same_schema(connection, has_base)
        experiments = _merge_experiments(connection)
        result.runs = _count_new(connection, "runs", "run_uuid")
        for table in _tables(connection, "ours"):
            if table not in _OWN and not table.startswith("sql_") and table in _tables(connection, "main"):
                _add_rows(connection, table, experiments)
        _merge_registry(connection, has_base, result)
        _replace_root(connection, recorded_root(ours) or our_root, their_root)
    result.files = _copy_files(ours, theirs)
    return result


def _same_schema(connection: sqlite3.Connection, has_base: bool) -> None:
    versions = {
        schema: connection.execute(f"SELECT version_num FROM {schema}.alembic_version").fetchall()
        for schema in ("main", "ours", *(("base",) if has_base else ()))
    }
    if len({tuple(rows) for rows in versions.values()}) != 1:
        raise StoreError(
            f"the two stores have different MLflow schemas ({versions}): saved by different MLflow versions"
        )


def _merge_experiments(connection: sqlite3.Connection) -> dict[int, int]:
    """Our experiment ids -> theirs (by name); ours that theirs lacks are added, under a free id if needed."""
    theirs = {
        str(name): int(ident)
        for ident, name in connection.execute("SELECT experiment_id, name FROM main.experiments")
    }
    mapping: dict[int, int] = {}
    columns = _columns(connection, "ours", "experiments")
    for row in connection.execute(f"SELECT {_list(columns)} FROM ours.experiments").fetchall():
        values = dict(zip(columns, row, strict=True))
        ours_id, name = int(values["experiment_id"]), str(values["name"])
        if name in theirs:
            mapping[ours_id] = theirs[name]
            continue
        taken = connection.execute(
            "SELECT 1 FROM main.experiments WHERE experiment_id = ?", (ours_id,)
        ).fetchone()
        new_id = ours_id
        if taken:
            new_id = (
                int(connection.execute("SELECT MAX(experiment_id) FROM main.experiments").fetchone()[0]) + 1
            )
        values["experiment_id"] = new_id
        connection.execute(
            f"INSERT INTO main.experiments ({_list(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [values[column] for column in columns],
        )
        mapping[ours_id], theirs[name] = new_id, new_id
    connection.execute("CREATE TEMP TABLE experiment_map (ours INTEGER PRIMARY KEY, theirs INTEGER)")
    connection.executemany("INSERT INTO temp.experiment_map VALUES (?, ?)", mapping.items())
    return mapping


def _count_new(connection: sqlite3.Connection, table: str, key: str) -> int:
    row = connection.execute(
        f"SELECT COUNT(*) FROM ours.{table} WHERE {key} NOT IN (SELECT {key} FROM main.{table})"
    ).fetchone()
    return int(row[0])


def _add_rows(connection: sqlite3.Connection, table: str, experiments: dict[int, int]) -> None:
    """Our rows that theirs lacks (a row both hold, or one theirs changed, stays as theirs has it)."""
    columns = [
        name for name in _columns(connection, "ours", table) if name in _columns(connection, "main", table)
    ]
    if not columns:
        return
    selected = [
        "COALESCE((SELECT theirs FROM temp.experiment_map WHERE ours = o.experiment_id), o.experiment_id)"
        if name == "experiment_id"
        else f'o."{name}"'
        for name in columns
    ]
    connection.execute(
        f'INSERT OR IGNORE INTO main."{table}" ({_list(columns)})'
        f' SELECT {", ".join(selected)} FROM ours."{table}" o'
        f' EXCEPT SELECT {_list(columns)} FROM main."{table}"'
    )


def _merge_registry(connection: sqlite3.Connection, has_base: bool, result: MergeResult) -> None:
    base = "base" if has_base else None
    for (name,) in connection.execute("SELECT DISTINCT name FROM ours.registered_models").fetchall():
        _add_registered_model(connection, str(name))
        numbers = _new_versions(connection, str(name), base, result)
        _merge_aliases(connection, str(name), base, numbers, result)
        lost = result.champion_conflict is not None
        _merge_version_tags(connection, str(name), base, numbers, skip=_PROMOTION_TAGS if lost else ())
        if lost:
            _mark_not_promoted(connection, str(name), numbers, result)


def _add_registered_model(connection: sqlite3.Connection, name: str) -> None:
    if connection.execute("SELECT 1 FROM main.registered_models WHERE name = ?", (name,)).fetchone():
        return
    for table in ("registered_models", "registered_model_tags"):
        columns = _list(_columns(connection, "ours", table))
        connection.execute(
            f"INSERT OR IGNORE INTO main.{table} ({columns})"
            f" SELECT {columns} FROM ours.{table} WHERE name = ?",
            (name,),
        )


def _new_versions(
    connection: sqlite3.Connection, name: str, base: str | None, result: MergeResult
) -> dict[int, int]:
    """Each of our versions -> its number in theirs: base versions keep theirs, new ones are added after
    theirs, and one with a fingerprint theirs already holds is that version."""
    in_base = (
        set()
        if base is None
        else {
            int(v)
            for (v,) in connection.execute(
                f"SELECT version FROM {base}.model_versions WHERE name = ?", (name,)
            )
        }
    )
    ours = [
        int(v)
        for (v,) in connection.execute(
            "SELECT version FROM ours.model_versions WHERE name = ? ORDER BY version", (name,)
        )
    ]
    numbers = {number: number for number in ours if number in in_base}
    columns = _columns(connection, "ours", "model_versions")
    for number in (n for n in ours if n not in in_base):
        fingerprint = connection.execute(
            "SELECT value FROM ours.model_version_tags WHERE name = ? AND version = ? AND key = ?",
            (name, number, FINGERPRINT_TAG),
        ).fetchone()
        same = (
            fingerprint
            and connection.execute(
                "SELECT MIN(t.version) FROM main.model_version_tags t JOIN main.model_versions v"
                " ON v.name = t.name AND v.version = t.version AND v.workspace = t.workspace"
                " WHERE t.name = ? AND t.key = ? AND t.value = ? AND v.current_stage != 'Deleted_Internal'",
                (name, FINGERPRINT_TAG, fingerprint[0]),
            ).fetchone()[0]
        )
        if same is not None:
            numbers[number] = int(same)
            result.reused.append(f"{number} (theirs v{same}, same fingerprint)")
            continue
        latest = connection.execute("SELECT MAX(version) FROM main.model_versions WHERE name = ?", (name,))
        new = int(latest.fetchone()[0] or 0) + 1
        values = [new if column == "version" else f'"{column}"' for column in columns]
        connection.execute(
            f"INSERT INTO main.model_versions ({_list(columns)}) SELECT {', '.join(map(str, values))}"
            " FROM ours.model_versions WHERE name = ? AND version = ?",
            (name, number),
        )
        tag_columns = _columns(connection, "ours", "model_version_tags")
        values = [new if column == "version" else f'"{column}"' for column in tag_columns]
        connection.execute(
            f"INSERT INTO main.model_version_tags ({_list(tag_columns)}) SELECT {', '.join(map(str, values))}"
            " FROM ours.model_version_tags WHERE name = ? AND version = ?",
            (name, number),
        )
        numbers[number] = new
        result.versions[f"{name}/{number}"] = str(new)
    return numbers


def _merge_version_tags(
    connection: sqlite3.Connection,
    name: str,
    base: str | None,
    numbers: dict[int, int],
    skip: tuple[str, ...] = (),
) -> None:
    """Tags ours set on versions of the base (promoted, replaced, rolled back): set on theirs, unless
    theirs changed the same tag too (or ours' promotion lost: `skip`)."""
    if base is None:
        return
    changed = connection.execute(
        "SELECT o.version, o.key, o.value FROM ours.model_version_tags o"
        f" JOIN {base}.model_versions b ON b.name = o.name AND b.version = o.version"
        f" WHERE o.name = ? AND o.value IS NOT (SELECT value FROM {base}.model_version_tags t"
        "  WHERE t.name = o.name AND t.version = o.version AND t.key = o.key)",
        (name,),
    ).fetchall()
    for version, key, value in changed:
        if key in skip:
            continue
        theirs = connection.execute(
            "SELECT value FROM main.model_version_tags WHERE name = ? AND version = ? AND key = ?",
            (name, numbers[int(version)], key),
        ).fetchone()
        was = connection.execute(
            f"SELECT value FROM {base}.model_version_tags WHERE name = ? AND version = ? AND key = ?",
            (name, version, key),
        ).fetchone()
        if theirs is None or theirs == was:
            connection.execute(
                "INSERT OR REPLACE INTO main.model_version_tags (key, value, name, version, workspace)"
                " VALUES (?, ?, ?, ?, 'default')",
                (key, value, name, numbers[int(version)]),
            )


def _merge_aliases(
    connection: sqlite3.Connection, name: str, base: str | None, numbers: dict[int, int], result: MergeResult
) -> None:
    def aliases(schema: str | None) -> dict[str, int]:
        if schema is None:
            return {}
        rows = connection.execute(
            f"SELECT alias, version FROM {schema}.registered_model_aliases WHERE name = ?", (name,)
        )
        return {str(alias): int(version) for alias, version in rows}

    before, ours, theirs = aliases(base), aliases("ours"), aliases("main")
    for alias in sorted(set(before) | set(ours)):
        if ours.get(alias) == before.get(alias):
            continue  # ours left it alone
        wanted = numbers.get(ours[alias]) if alias in ours else None
        if theirs.get(alias) == wanted:
            continue
        if theirs.get(alias) != before.get(alias):
            conflict = (
                f"{name} {alias}: this run moved it to v{wanted} (from v{before.get(alias)}), another run"
                f" moved it to v{theirs.get(alias)} first"
            )
            result.conflicts.append(conflict)
            if alias == CHAMPION:
                result.champion_conflict = conflict
            continue
        connection.execute(
            "DELETE FROM main.registered_model_aliases WHERE name = ? AND alias = ?", (name, alias)
        )
        if wanted is not None:
            connection.execute(
                "INSERT INTO main.registered_model_aliases (alias, version, name, workspace)"
                " VALUES (?, ?, ?, 'default')",
                (alias, wanted, name),
            )
        result.moved.append(
            f"{name} {alias} -> v{wanted}" if wanted is not None else f"{name} {alias} removed"
        )


def _mark_not_promoted(
    connection: sqlite3.Connection, name: str, numbers: dict[int, int], result: MergeResult
) -> None:
    """Our promotion lost: the version ours promoted keeps its rows but not the promotion's tags, and says
    why; ours' promotion tags on base versions are not applied."""
    conflict = result.champion_conflict or ""
    for ours_number, theirs_number in numbers.items():
        if f"{name}/{ours_number}" not in result.versions:
            continue
        promoted = connection.execute(
            "SELECT 1 FROM main.model_version_tags"
            " WHERE name = ? AND version = ? AND key = 'retrain.promoted'",
            (name, theirs_number),
        ).fetchone()
        if promoted:
            connection.execute(
                f"DELETE FROM main.model_version_tags WHERE name = ? AND version = ? AND key IN"
                f" ({', '.join('?' * len(_PROMOTION_TAGS))})",
                (name, theirs_number, *_PROMOTION_TAGS),
            )
            connection.execute(
                "INSERT OR REPLACE INTO main.model_version_tags (key, value, name, version, workspace)"
                " VALUES ('retrain.not_promoted', ?, ?, ?, 'default')",
                (f"{conflict}; `retrain promote {theirs_number}` makes it the champion", name, theirs_number),
            )


def _columns(connection: sqlite3.Connection, schema: str, table: str) -> list[str]:
    rows = connection.execute(f'PRAGMA {schema}.table_xinfo("{table}")').fetchall()
    return [str(row[1]) for row in rows if row[6] == 0]  # hidden (generated) columns cannot be inserted


def _list(columns: list[str]) -> str:
    return ", ".join(f'"{column}"' for column in columns)


def _copy_files(ours: Path, theirs: Path) -> int:
    """Our files that theirs lacks (artifacts live in folders named by unique ids: never both)."""
    copied = 0
    for folder, _, names in os.walk(ours):
        for name in names:
            source = Path(folder, name)
            relative = source.relative_to(ours)
            if relative.as_posix() in NOT_COPIED:
                continue
            target = theirs / relative
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                files.atomic_copy(source, target)
                copied += 1
    return copied


class RegistryMerge:
    """The registry's Merge for the state branch (runner/github/actions.py `push_state`): theirs made
    portable where it was checked out, ours added to it, its paths pointed to where ours is (it takes ours'
    place). Remembers what each merge did: a champion that another run moved first is the caller's to
    report."""

    def __init__(self) -> None:
        self.results: list[MergeResult] = []

    def __call__(self, base: Path | None, theirs: Path, ours: Path) -> str:
        if base is not None:
            rebase(base)
        rebase(theirs)
        result = merge(ours, base, theirs)
        rebase(theirs, at=ours)
        self.results.append(result)
        return result.summary()

    @property
    def champion_conflict(self) -> str | None:
        return next((r.champion_conflict for r in self.results if r.champion_conflict), None)


def log_run(store: Path, run_json: Path, run_id: str) -> Path:
    """Keep a finished run's record with the store (`run-log/<run_id>.json`): in CI the run's folder is gone
    after the job, and a run that registered nothing leaves no other trace for the history page."""
    from runner.files import atomic_copy

    target = store / RUN_LOG / f"{run_id}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_copy(run_json, target)
    return target
