"""What a workflow job keeps and decides without MLflow: the nothing-new check before any install, the stage
cache carried between jobs, and the embedded store's paths following it to another folder."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from runner.engine import intake
from runner.engine.config import DataSpec
from runner.github import precheck, stage_cache
from runner.production import store
from runner.secrets import Redactor

pytestmark = pytest.mark.unit

DATA = """\
version: 1
name: demo
stages: {}
data:
  new: ["data/new/*.csv"]
  history: data/history
  stage: validate
"""


def project(tmp_path: Path, pipeline: str = DATA, drops: dict[str, str] | None = None) -> Path:
    (tmp_path / "data" / "new").mkdir(parents=True)
    (tmp_path / "data" / "history").mkdir(parents=True)
    (tmp_path / "data" / "history" / "week-1.csv").write_text("week,sales\n1,100\n")
    for name, text in (drops or {}).items():
        (tmp_path / "data" / "new" / name).write_text(text)
    (tmp_path / "pipeline.yaml").write_text(pipeline)
    return tmp_path / "pipeline.yaml"


@pytest.mark.parametrize(
    ("event_name", "event", "drops", "runs", "fragment"),
    [
        ("schedule", {}, {}, False, "nothing new: no file matches data/new/*.csv, so a schedule run"),
        ("push", {}, {}, False, "nothing new"),
        ("schedule", {}, {"week-2.csv": "week,sales\n2,110\n"}, True, "1 new drop(s): week-2.csv"),
        ("workflow_dispatch", {"inputs": {"force": False}}, {}, True, "retrains whether or not data is new"),
        ("workflow_dispatch", {"inputs": {"force": "true"}}, {}, True, "asked to force the run"),
        ("repository_dispatch", {"client_payload": {"trigger": "monitoring"}}, {}, True, "a monitoring run"),
        ("repository_dispatch", {"client_payload": {"trigger": "push", "force": 1}}, {}, False, "nothing"),
        ("repository_dispatch", {"client_payload": {"trigger": "push", "force": True}}, {}, True, "force"),
    ],
)
def test_anything_new_agrees_with_the_run(
    tmp_path: Path, event_name: str, event: dict, drops: dict[str, str], runs: bool, fragment: str
) -> None:
    pipeline = project(tmp_path, drops=drops)
    decided, why = precheck.decide(event_name, event, pipeline)
    assert decided is runs and fragment in why
    trigger, force = precheck._trigger(event_name, event)
    spec = DataSpec(new=["data/new/*.csv"], history="data/history", stage="validate")
    assert (intake.nothing_new(spec, tmp_path, trigger, force) is None) is runs  # what `retrain run` does


def test_a_drop_whose_acceptance_was_interrupted_is_not_new(tmp_path: Path) -> None:
    text = "week,sales\n2,110\n"
    pipeline = project(tmp_path, drops={"week-2.csv": text})
    (tmp_path / "data" / "history" / "week-2.csv").write_text(text)  # moved, but not removed from new/
    (tmp_path / "data" / "accepted" / "run-1").mkdir(parents=True)
    (tmp_path / "data" / "accepted" / "run-1" / "week-2.csv").write_text(text)
    assert precheck.decide("schedule", {}, pipeline)[0] is False


def test_an_acceptance_stopped_before_the_history_copy_is_finished_not_taken_again(tmp_path: Path) -> None:
    text = "week,sales\n2,110\n"
    project(tmp_path, drops={"week-2.csv": text})
    (tmp_path / "data" / "accepted" / "run-1").mkdir(parents=True)
    (tmp_path / "data" / "accepted" / "run-1" / "week-2.csv").write_text(text)  # killed before the history
    spec = DataSpec(new=["data/new/*.csv"], history="data/history", stage="validate")
    assert intake.waiting(spec, tmp_path, finish_interrupted=False) == []  # only looking: nothing moves
    assert (tmp_path / "data" / "new" / "week-2.csv").is_file()
    assert intake.waiting(spec, tmp_path) == []
    assert (tmp_path / "data" / "history" / "week-2.csv").read_text() == text
    assert not (tmp_path / "data" / "new" / "week-2.csv").exists()
    assert [path.name for path in (tmp_path / "data" / "accepted").rglob("*.csv")] == ["week-2.csv"]


@pytest.mark.parametrize(
    "pipeline",
    [
        "version: 1\nname: demo\nstages: {}\n",  # no data section: every run retrains
        "version: 1\nname: [unclosed\n",  # not YAML: the run reports it properly
        DATA.replace('new: ["data/new/*.csv"]', "new: data/new/*.csv"),  # not a list: the run says so
        DATA.replace("data/new/*.csv", "/elsewhere/*.csv"),  # an absolute glob: `retrain check` refuses it
    ],
)
def test_anything_new_fails_open(tmp_path: Path, pipeline: str) -> None:
    assert precheck.decide("schedule", {}, project(tmp_path, pipeline))[0] is True


def test_the_check_writes_the_step_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = project(tmp_path)
    output = tmp_path / "output"
    environ = {"GITHUB_EVENT_NAME": "schedule", "GITHUB_OUTPUT": str(output)}
    environ["RETRAIN_PIPELINE"] = str(pipeline)
    assert precheck.main(environ) == 0
    assert output.read_text().startswith("run=false\nreason=nothing new")
    assert capsys.readouterr().out.startswith("skip: nothing new")


# --- the stage cache between jobs ---------------------------------------------------------------------------
def reports_with_cache(root: Path) -> Path:
    reports = root / "reports"
    for run in ("run-1", "run-2", "run-3"):
        (reports / run / "products").mkdir(parents=True)
        (reports / run / "run.json").write_text("{}")
        (reports / run / "products" / "model.json").write_text(run)
    index = {
        "version": 1,
        "stages": {"f-train": {"run_id": "run-1", "stage": "train", "outputs": {}}},
        "effects": {"deploy": {"key": "k", "run_id": "run-2"}},
    }
    (reports / ".cache.json").write_text(json.dumps(index))
    return reports


def test_the_stage_cache_packs_what_its_index_names_and_unpacks_into_another_checkout(tmp_path: Path) -> None:
    reports = reports_with_cache(tmp_path / "job-1")
    key, runs = stage_cache.pack(reports, tmp_path / "saved")
    assert key.startswith("stages-") and runs == ["run-1", "run-2"]  # run-3 is named by no entry
    assert sorted(path.name for path in (tmp_path / "saved").iterdir()) == [".cache.json", "run-1", "run-2"]
    again, _ = stage_cache.pack(reports, tmp_path / "saved-again")
    assert again == key  # the same entries: the same key, saved once

    other = tmp_path / "job-2" / "reports"
    (other / "run-9").mkdir(parents=True)
    (other / ".cache.json").write_text(
        json.dumps({"version": 1, "stages": {"f-eval": {"run_id": "run-9", "stage": "e"}}, "effects": {}})
    )
    assert stage_cache.unpack(tmp_path / "saved", other, Redactor()) == ["run-1", "run-2"]
    merged = json.loads((other / ".cache.json").read_text())
    assert set(merged["stages"]) == {"f-train", "f-eval"} and merged["effects"]["deploy"]["run_id"] == "run-2"
    assert (other / "run-1" / "products" / "model.json").read_text() == "run-1"


def test_no_index_packs_nothing_and_unpacks_nothing(tmp_path: Path) -> None:
    assert stage_cache.pack(tmp_path / "reports", tmp_path / "saved") == ("", [])
    assert stage_cache.unpack(tmp_path / "missing", tmp_path / "reports", Redactor()) == []


# --- the store's paths follow it ----------------------------------------------------------------------------
def small_store(folder: Path) -> Path:
    """A database with the columns MLflow keeps paths in (the rebase reads every text column)."""
    folder.mkdir(parents=True)
    here = folder.resolve()
    with sqlite3.connect(folder / store.DB_FILE) as connection:
        connection.execute("CREATE TABLE experiments (experiment_id INTEGER, artifact_location VARCHAR(256))")
        connection.execute("CREATE TABLE runs (run_uuid VARCHAR(32), artifact_uri VARCHAR(200), status TEXT)")
        connection.execute("INSERT INTO experiments VALUES (0, ?)", (str(here / "0"),))
        connection.execute("INSERT INTO experiments VALUES (1, ?)", ((here / "artifacts").as_uri(),))
        connection.execute(
            "INSERT INTO runs VALUES ('abc', ?, 'FINISHED')", ((here / "artifacts" / "abc").as_uri(),)
        )
    return folder


def test_a_store_moved_to_another_folder_points_there(tmp_path: Path) -> None:
    before = small_store(tmp_path / "first place" / "mlruns")  # a space: file URIs are percent-encoded
    assert store.rebase(before) is None  # never moved: only remembers where it is
    assert store.recorded_root(before) == str(before.resolve())
    moved = tmp_path / "elsewhere" / "mlruns"
    moved.parent.mkdir()
    before.rename(moved)
    said = store.rebase(moved)
    assert said is not None and str(moved.resolve()) in said
    with sqlite3.connect(moved / store.DB_FILE) as connection:
        rows = [value for (value,) in connection.execute("SELECT artifact_location FROM experiments")]
        rows += [value for (value,) in connection.execute("SELECT artifact_uri FROM runs")]
        status = connection.execute("SELECT status FROM runs").fetchone()[0]
    assert rows == [
        str(moved.resolve() / "0"),
        (moved.resolve() / "artifacts").as_uri(),
        (moved.resolve() / "artifacts" / "abc").as_uri(),
    ]
    assert status == "FINISHED" and "first place" not in json.dumps(rows)
    assert store.rebase(moved) is None  # once is enough


def test_a_store_saved_before_store_json_is_rebased_from_its_experiments(tmp_path: Path) -> None:
    old = small_store(tmp_path / "old" / "mlruns")
    new = tmp_path / "new" / "mlruns"
    new.parent.mkdir()
    old.rename(new)  # no store.json: the root is read from the project's experiment
    assert store.rebase(new) is not None
    with sqlite3.connect(new / store.DB_FILE) as connection:
        (uri,) = connection.execute("SELECT artifact_uri FROM runs").fetchone()
    assert uri == (new.resolve() / "artifacts" / "abc").as_uri()
