"""A new embedded store is a copy of an empty one kept in the user's cache (production/store_template.py),
never of a half-made or a used one, and it names its own folder once rebased."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from runner.production import store, store_template

TABLES = ("runs", "registered_models", "model_versions", "logged_models")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RETRAIN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def empty_store(folder: Path) -> Path:
    """What MLflow makes for a new sqlite store, in the parts the template looks at."""
    folder.mkdir(parents=True)
    with sqlite3.connect(folder / store.DB_FILE) as db:
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
        db.execute("INSERT INTO alembic_version VALUES ('abc123')")
        db.execute("CREATE TABLE experiments (experiment_id INTEGER, name TEXT, artifact_location TEXT)")
        db.execute("INSERT INTO experiments VALUES (0, 'Default', ?)", (str(folder.resolve() / "0"),))
        for table in TABLES:
            db.execute(f"CREATE TABLE {table} (id TEXT)")
    return folder


def default_location(folder: Path) -> str:
    with sqlite3.connect(folder / store.DB_FILE) as db:
        return str(db.execute("SELECT artifact_location FROM experiments").fetchone()[0])


@pytest.mark.unit
def test_a_new_store_is_a_copy_of_the_first_empty_one_rebased_to_its_folder(tmp_path: Path) -> None:
    first = empty_store(tmp_path / "first" / "mlruns")
    store_template.keep(first)
    kept = store_template.templates()
    assert kept is not None and sorted(path.name for path in kept.iterdir()) == [
        store.DB_FILE,
        store.STORE_FILE,
    ]

    new = tmp_path / "new project" / "mlruns"
    assert store_template.seed(new)
    assert store.rebase(new) is not None
    assert default_location(new) == str(new.resolve() / "0")
    assert default_location(first) == str(first.resolve() / "0")  # the original is left as it was
    assert not list(new.glob(".*.tmp"))


@pytest.mark.unit
def test_only_an_empty_store_naming_its_own_folder_is_kept_and_only_once(tmp_path: Path) -> None:
    used = empty_store(tmp_path / "used" / "mlruns")
    with sqlite3.connect(used / store.DB_FILE) as db:
        db.execute("INSERT INTO model_versions VALUES ('1')")
    store_template.keep(used)
    elsewhere = empty_store(tmp_path / "elsewhere" / "mlruns")
    with sqlite3.connect(elsewhere / store.DB_FILE) as db:  # MLflow put the Default experiment in the cwd
        db.execute("UPDATE experiments SET artifact_location = '/somewhere/else/mlruns/0'")
    store_template.keep(elsewhere)
    assert store_template.templates() is not None and not store_template.templates().exists()

    first = empty_store(tmp_path / "first" / "mlruns")
    store_template.keep(first)
    store_template.keep(empty_store(tmp_path / "second" / "mlruns"))  # one is kept: the first
    assert store.recorded_root(store_template.templates()) == str(first.resolve())


@pytest.mark.unit
def test_a_store_is_never_seeded_over_nor_from_a_torn_copy(tmp_path: Path) -> None:
    assert not store_template.seed(tmp_path / "nothing kept" / "mlruns")
    store_template.keep(empty_store(tmp_path / "first" / "mlruns"))

    existing = empty_store(tmp_path / "existing" / "mlruns")
    before = (existing / store.DB_FILE).read_bytes()
    assert not store_template.seed(existing)
    assert (existing / store.DB_FILE).read_bytes() == before and not (existing / store.STORE_FILE).exists()

    kept = store_template.templates()
    assert kept is not None
    (kept / store.DB_FILE).write_bytes((kept / store.DB_FILE).read_bytes()[:1000])  # a disk that filled up
    torn = tmp_path / "torn" / "mlruns"
    assert not store_template.seed(torn)
    assert not (torn / store.DB_FILE).exists()


@pytest.mark.e2e
def test_mlflow_opens_a_copied_store_as_one_it_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real thing: MLflow makes a store (its migrations), it is kept, a new project's is copied from it;
    MLflow then reads and writes that copy, with the same schema and its Default experiment in its folder."""
    from mlflow import MlflowClient

    from runner.production.registry import Registry

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    made = tmp_path / "made" / "mlruns"
    made.mkdir(parents=True)
    monkeypatch.chdir(made.parent)
    uri = f"sqlite:///{made / store.DB_FILE}"
    assert Registry(uri, "toy", lock_dir=made).by_alias("champion") is None  # MLflow made the store
    store_template.keep(made)

    copied = tmp_path / "copied" / "mlruns"
    assert store_template.seed(copied) and store.rebase(copied) is not None
    client = MlflowClient(f"sqlite:///{copied / store.DB_FILE}")
    assert client.get_experiment("0").artifact_location == str(copied.resolve() / "0")
    client.create_registered_model("toy")
    assert [model.name for model in client.search_registered_models()] == ["toy"]

    def schema(folder: Path) -> list[tuple[str, str]]:
        with sqlite3.connect(folder / store.DB_FILE) as db:
            rows = db.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
            return [*rows, *db.execute("SELECT version_num FROM alembic_version").fetchall()]

    assert schema(copied) == schema(made)
