"""The registry's state between jobs that run at the same time, each on a fresh clone against a bare origin.

Two jobs start from the same saved state, each registers and promotes its own version, and both save at
once: the save is a compare-and-set against the state each job restored, so the later one merges its rows
and files into what the first saved. Both versions remain, numbered without a gap or a duplicate; the
champion is the one the first save promoted, and the job whose promotion lost fails loudly (exit 1, an
::error annotation) with its version registered and tagged `retrain.not_promoted`. Each clone lives in
another folder: the restored store's paths follow it (`store.json`), and a champion loads from any folder.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ToyOrigin, clone_toy, retrain, start_retrain

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]  # a loaded 2-core machine: minutes


def versions(store: Path) -> dict[int, dict[str, str]]:
    """version -> its tags, read from the store's database."""
    with sqlite3.connect(store / "mlflow.db") as connection:
        rows = connection.execute("SELECT version, key, value FROM model_version_tags WHERE name = 'toy'")
        found: dict[int, dict[str, str]] = {}
        for version, key, value in rows:
            found.setdefault(int(version), {})[key] = value
    return found


def aliases(store: Path) -> dict[str, int]:
    with sqlite3.connect(store / "mlflow.db") as connection:
        rows = connection.execute("SELECT alias, version FROM registered_model_aliases WHERE name = 'toy'")
        return {str(alias): int(version) for alias, version in rows}


def test_two_jobs_saving_at_once_keep_both_versions_and_the_first_champion(toy_origin: ToyOrigin) -> None:
    seed = clone_toy(toy_origin, "seed")
    assert retrain(seed, "github", "state", "pull").returncode == 0
    first = retrain(seed, "run", "toy.yaml", "--trigger", "push")
    assert first.returncode == 0, first.stdout[-3000:]
    run_id = first.outputs["run_id"]
    assert retrain(seed, "github", "state", "push", "toy.yaml", "--run-id", run_id).returncode == 0

    jobs = {name: clone_toy(toy_origin, name) for name in ("job-a", "job-b")}
    for clone in jobs.values():
        pulled = retrain(clone, "github", "state", "pull")
        assert "restored mlruns/ from retrain-state" in pulled.stdout
        assert "the store's paths now point to" in pulled.stdout  # saved from seed/, restored elsewhere
    factors = {"job-a": "2.01", "job-b": "1.99"}
    running = {
        name: start_retrain(clone, "run", "toy.yaml", "-p", f"factor={factors[name]}")
        for name, clone in jobs.items()
    }
    run_ids = {}
    for name, process in running.items():
        clone, done = jobs[name], process.finish()
        assert done.returncode == 0, done.stdout[-3000:]
        run_ids[name] = done.outputs["run_id"]
        model = json.loads((clone / "reports" / run_ids[name] / "run.json").read_text())["model"]
        assert model["promoted"] and model["version"] == "2"  # each promoted its own v2 in its own store
    saving = {
        name: start_retrain(clone, "github", "state", "push", "toy.yaml", "--run-id", run_ids[name])
        for name, clone in jobs.items()
    }
    saved = {name: process.finish() for name, process in saving.items()}
    codes = sorted(done.returncode for done in saved.values())
    assert codes == [0, 1], {name: done.stdout + done.stderr for name, done in saved.items()}
    winner = next(name for name, done in saved.items() if done.returncode == 0)
    loser = next(name for name in saved if name != winner)
    lost = saved[loser].stdout + saved[loser].stderr
    assert "merged with what another run saved meanwhile" in lost
    assert "::error title=Promotion lost to another run::" in lost

    final = clone_toy(toy_origin, "after")
    assert retrain(final, "github", "state", "pull").returncode == 0
    store = final / "mlruns"
    tags = versions(store)
    assert sorted(tags) == [1, 2, 3]  # the seed's, and one for each job: none lost, none twice
    by_run = {version["retrain.run_id"]: number for number, version in tags.items()}
    assert set(by_run) == {run_id, *run_ids.values()}
    fingerprints = [version["retrain.fingerprint"] for version in tags.values()]
    assert len(set(fingerprints)) == 3
    champion = by_run[run_ids[winner]]
    assert aliases(store)["champion"] == champion and aliases(store)["previous"] == 1
    assert "retrain.not_promoted" in tags[by_run[run_ids[loser]]]
    assert "retrain.promoted" not in tags[by_run[run_ids[loser]]]
    # the run log keeps all three runs, and the champion loads from this folder (another path again)
    assert sorted(path.stem for path in (store / "run-log").glob("*.json")) == sorted(by_run)
    load = (
        "import mlflow.pyfunc, pandas; from runner.project import tracking_uri; from pathlib import Path;"
        "mlflow.set_tracking_uri(tracking_uri(Path.cwd()));"
        "print(mlflow.pyfunc.load_model('models:/toy@champion').predict(pandas.DataFrame({'x': [10]}))[0])"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", load], cwd=final, capture_output=True, text=True, check=False, timeout=300
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert float(loaded.stdout.split()[-1]) == pytest.approx(10 * float(factors[winner]))
