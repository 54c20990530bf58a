"""Crash safety: `retrain run` killed (SIGKILL, no chance to clean up) at random points, 30 times.

After each kill the project must hold either the old state or the new one, never a mix:
- every run.json is a whole run record, every page a whole HTML document, every executed notebook whole;
- a temporary file may remain only as a killed writer's in-flight write (`.<name>.<random>.tmp`, next to a
  file that is itself whole or absent); the next run removes them once it holds the project's lock, which
  the final complete run shows;
- the champion alias is the one before the run or the version this run registered;
- the data and the notebooks are untouched;
- the killed run's kernels do not outlive it (ipykernel watches its parent and exits when it dies).

The delays are drawn from a seeded generator over the length of a whole run, so that kills land in every
phase: start-up, stages, registering, promotion, reports. Bounded: 30 kills of a run of a few seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import re
import signal
import sqlite3
import time
from pathlib import Path

import nbformat
import pytest

from runner.commands import main
from tests.conftest import (
    assert_reports_readable,
    eventually,
    kernels_in,
    make_model_project,
    spawn_run,
    temp_files,
)

pytestmark = pytest.mark.e2e

KILLS = 30
SEED = 20261126
TEMPORARY = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]{8}\.tmp$")  # runner/files.py's mkstemp names


def digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def versions(pipeline: Path, name: str) -> tuple[str | None, set[str]]:
    """The champion and every registered version, read straight from the embedded store's sqlite file
    (milliseconds, where MLflow's client takes a second or more on a loaded machine)."""
    database = f"file:{pipeline.parent / 'mlruns' / 'mlflow.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(database, uri=True, timeout=30)) as store:
        champion = store.execute(
            "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = 'champion'", (name,)
        ).fetchone()
        known = store.execute("SELECT version FROM model_versions WHERE name = ?", (name,)).fetchall()
    return (str(champion[0]) if champion else None), {str(row[0]) for row in known}


def check_invariants(pipeline: Path) -> int:
    """Everything a kill may leave is whole; returns how many in-flight temporary files it left."""
    reports = pipeline.parent / "reports"
    assert_reports_readable(reports)
    for notebook in reports.glob("*/*.ipynb"):
        nbformat.read(notebook, as_version=4)  # whole JSON, a notebook's shape
    leftovers = temp_files(reports)
    for leftover in leftovers:
        assert TEMPORARY.match(leftover.name), f"not a temporary file of runner/files.py: {leftover}"
    return len(leftovers)


@pytest.mark.timeout(1800)  # ~2-3 min on an idle 2-core machine; far longer when it is shared and loaded
def test_killing_the_runner_at_random_points_leaves_old_or_new_state(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    pipeline, name = make_model_project(tmp_path)
    root = pipeline.parent
    started = time.monotonic()
    assert main(["run", str(pipeline)]) == 0
    run_s = time.monotonic() - started + 1.5  # a whole run, and the start of a fresh interpreter
    capsys.readouterr()
    data, notebooks = digest(root / "data"), digest(root / "notebooks")
    rng = random.Random(SEED)
    killed, in_flight = 0, 0
    for attempt in range(2 * KILLS):  # a run that ends before its kill does not count: bounded retries
        if killed == KILLS:
            break
        champion_before, known_before = versions(pipeline, name)
        process = spawn_run(pipeline, "-p", f"factor={2 + (attempt + 1) / 1000}", "--wait", "60")
        launched = time.monotonic()
        time.sleep(rng.uniform(0.2, run_s))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        else:  # the machine got faster: kill sooner from now on, to land inside runs again
            run_s = min(run_s, time.monotonic() - launched)
        process.communicate(timeout=120)

        assert eventually(lambda: not kernels_in(root), 30), f"kill {attempt}: kernels outlived the runner"
        in_flight += check_invariants(pipeline)
        champion, known = versions(pipeline, name)
        assert champion in {champion_before, *(known - known_before)}, (attempt, champion_before, champion)
        assert digest(root / "data") == data and digest(root / "notebooks") == notebooks

    assert killed == KILLS
    assert main(["run", str(pipeline), "-p", "factor=2.5"]) in (0, 3)  # a complete run after all that
    capsys.readouterr()
    assert check_invariants(pipeline) == 0  # it swept what the killed writers left
    print(f"{killed} kills; {in_flight} in-flight temporary files seen after them, swept by the next run")
