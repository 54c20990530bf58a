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

import hashlib
import random
import re
import signal
import time
from pathlib import Path

import nbformat

from runner.cli import main
from tests.conftest import assert_reports_readable, kernels_in, temp_files
from tests.test_faults import eventually, retrain
from tests.test_lifecycle import make_model_project

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
    """The champion and every registered version (aliases() lists versions with an alias only)."""
    from runner.project import tracking_uri
    from runner.registry import CHAMPION, Registry

    registry = Registry(tracking_uri(pipeline.parent), name, lock_dir=pipeline.parent / "mlruns")
    champion = registry.by_alias(CHAMPION)
    return (champion.version if champion else None), {version.version for version in registry.versions()}


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


def test_killing_the_runner_at_random_points_leaves_old_or_new_state(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    pipeline, name = make_model_project(tmp_path)
    root = pipeline.parent
    started = time.monotonic()
    assert main(["run", str(pipeline)]) == 0
    whole_run_s = time.monotonic() - started + 1.5  # and the start of a fresh interpreter
    capsys.readouterr()
    data, notebooks = digest(root / "data"), digest(root / "notebooks")
    rng = random.Random(SEED)
    killed, in_flight = 0, 0
    for attempt in range(KILLS):
        champion_before, known_before = versions(pipeline, name)
        process = retrain(pipeline, "-p", f"factor={2 + (attempt + 1) / 1000}", "--wait", "60")
        time.sleep(rng.uniform(0.2, whole_run_s))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        process.communicate(timeout=120)

        assert eventually(lambda: not kernels_in(root), 30), f"kill {attempt}: kernels outlived the runner"
        in_flight += check_invariants(pipeline)
        champion, known = versions(pipeline, name)
        assert champion in {champion_before, *(known - known_before)}, (attempt, champion_before, champion)
        assert digest(root / "data") == data and digest(root / "notebooks") == notebooks

    assert killed >= KILLS // 2, f"only {killed} of {KILLS} runs were still running when killed"
    assert main(["run", str(pipeline), "-p", "factor=2.5"]) in (0, 3)  # a complete run after all that
    capsys.readouterr()
    assert check_invariants(pipeline) == 0  # it swept what the killed writers left
    print(f"{killed} kills; {in_flight} in-flight temporary files seen after them, swept by the next run")
