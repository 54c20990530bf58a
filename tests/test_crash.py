"""Crash safety: `retrain run` killed (SIGKILL, no chance to clean up) in every phase of a run.

After each kill the project must hold either the old state or the new one, never a mix:
- every run.json is a whole run record, every page a whole HTML document, every executed notebook whole;
- a temporary file may remain only as a killed writer's in-flight write (`.<name>.<random>.tmp`, next to a
  file that is itself whole or absent); the next run removes them once it holds the project's lock, which
  the final complete run shows;
- the champion alias is the one before the run or the version this run registered;
- the data and the notebooks are untouched;
- the killed run's kernels do not outlive it (ipykernel watches its parent and exits when it dies).

Each kill is aimed at one phase: start-up (a seeded moment before the run's first line), each stage,
registering, promotion, the smoke check, the outcome and the pages, each when the run prints the line that
starts that phase (with a seeded fraction of a second more for the phases that print nothing after their
first line); then a few kills at seeded random moments of a whole run. A kill that came after the run
ended is drawn again (bounded). RETRAIN_CRASH_KILLS=N adds N random kills (a long run); the campaign of
hundreds of kills, child kills and signals is bench/fault_campaign.py.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import time
from pathlib import Path

import nbformat
import pytest

from runner.commands import main
from tests.conftest import (
    TEMPORARY,
    assert_reports_readable,
    eventually,
    kernels_in,
    read_until,
    spawn_run,
    temp_files,
    versions,
)

pytestmark = pytest.mark.e2e

# (phase, the line of the run's output that starts it or None for start-up, seconds after that line)
PHASES = [
    ("start-up", None, (0.05, 1.0)),  # the interpreter, imports, the lock, the pipeline's loading
    ("train", "train: running", (0.0, 0.0)),
    ("evaluate", "evaluate: running", (0.0, 0.0)),
    ("deploy", "deploy: running", (0.0, 0.0)),
    ("registering", "deploy: succeeded", (0.0, 0.0)),  # the registry's calls come after the stages
    ("promotion", "model: registered as version", (0.0, 0.0)),
    ("smoke check", "smoke check: loading it", (0.0, 0.3)),
    ("outcome and pages", "smoke check passed", (0.0, 0.5)),
]
RANDOM_KILLS = 2 + int(os.environ.get("RETRAIN_CRASH_KILLS", "0"))
SEED = 20261126


def digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


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


@pytest.mark.timeout(1800)  # ~1 min on an idle 2-core machine; far longer when it is shared and loaded
def test_killing_the_runner_in_every_phase_leaves_old_or_new_state(champion_project, capsys):
    pipeline, name = champion_project
    root = pipeline.parent
    data, notebooks = digest(root / "data"), digest(root / "notebooks")
    rng = random.Random(SEED)
    run_s = 0.0  # how long a run takes up to its last chosen phase
    trials = [*PHASES, *[("random", None, None)] * RANDOM_KILLS]
    killed: list[str] = []
    in_flight, attempt = 0, 0
    for phase, line, after in trials:
        for _ in range(5):  # a run that ends before its kill does not count: drawn again, bounded
            attempt += 1
            champion_before, known_before = versions(pipeline, name)
            factor = f"factor={2 + attempt / 1000}"  # new settings: every run has a version to register
            process = spawn_run(pipeline, "-p", factor, "--wait", "60", env={"PYTHONUNBUFFERED": "1"})
            launched = time.monotonic()
            if line is not None:
                read_until(process, line)
                run_s = time.monotonic() - launched  # the last chosen phase's is the random kills' range
            delay = rng.uniform(0.2, run_s) if after is None else rng.uniform(*after)
            time.sleep(delay)
            landed = process.poll() is None
            if landed:
                process.send_signal(signal.SIGKILL)
            elif after is None:  # the machine got faster: kill sooner from now on, to land inside runs again
                run_s = min(run_s, 0.8 * (time.monotonic() - launched))
            process.communicate(timeout=120)

            assert eventually(lambda: not kernels_in(root), 30), f"{phase}: kernels outlived the runner"
            in_flight += check_invariants(pipeline)
            champion, known = versions(pipeline, name)
            assert champion in {champion_before, *(known - known_before)}, (phase, champion_before, champion)
            assert digest(root / "data") == data and digest(root / "notebooks") == notebooks, phase
            if landed:
                killed.append(phase)
                break
        else:
            pytest.fail(f"five runs ended before their kill in the phase {phase!r}")

    assert len(killed) == len(trials)
    assert main(["run", str(pipeline), "-p", "factor=2.5"]) in (0, 3)  # a complete run after all that
    capsys.readouterr()
    assert check_invariants(pipeline) == 0  # it swept what the killed writers left
    print(f"kills in {killed}; {in_flight} in-flight temporary files seen after them, swept by the next run")
