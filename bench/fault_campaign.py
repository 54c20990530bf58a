"""A fault campaign: `retrain run` killed at chosen points and at random ones, then the invariants checked.

    .venv/bin/python bench/fault_campaign.py                      # 8 kills per chosen point + random ones
    .venv/bin/python bench/fault_campaign.py --per-point 2 --random 4 --children 2 --signals 4

A project of the toy model (tests/assets/model, y = factor * x, an MLflow pyfunc model in the embedded store,
the registry's calls and the smoke check in workers of the run's kernel server) receives a new data drop
before every trial, so that every run has a new version to register, promote and smoke-check, and a drop to
accept. Each trial starts `python -m runner run` and, at its moment, does one of:

    register->promote   SIGKILL when the run says it registered the version (before the alias moves)
    promote->smoke      SIGKILL when it says the version is the champion (the smoke check begins)
    during smoke        SIGKILL 0.1-1.5 s into the smoke check
    data settling       SIGKILL when it says it settles the new data (after its outcome is written)
    random              SIGKILL at a random moment of the run
    child               SIGKILL of a random process of the run (kernel server, a kernel, a worker)
    SIGTERM, SIGINT     the signal at a random moment (SIGINT inherited ignored, as by a background job);
                        the time from the signal to the process's end is measured (the promise: 5 s)

Right after each fault, before any run sweeps, the project must hold the old state or the new one
(tests/test_crash.py's checks, there for one kill in each phase): every run.json, page and executed notebook
whole; a temporary file only as a killed writer's in-flight write; the champion the one before the run or a
version it registered; the notebooks untouched.
Then the next run (no new drop) must be green, and after it the invariants must hold: the champion loads
(MLflow's pyfunc loader, by alias) and its smoke check passed (tag `retrain.smoke_check`); every drop is
in the history exactly once and its original in data/accepted/ exactly once; every accepted drop was
accepted by a run that succeeded and registered a model; every run that ended itself recorded the status of
its exit code, and no run.json says `running`; no process of the project is left; no temporary file.
A kill that came after the run ended does not count (the trial is drawn again, up to a bound).

Prints one line per trial and the tallies: kills per point, violations, cancellation times. A script that
prints figures, not a test (the machine's load changes the times; the invariants are what must hold).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import psutil

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from tests.conftest import (  # noqa: E402
    TEMPORARY,
    add_drop,
    assert_reports_readable,
    kernels_in,
    make_drops_project,
    versions,
)

CHOSEN = {
    # point -> the line of the run's output that marks it (runner/pipeline.py, production/lifecycle.py)
    "register->promote": "model: registered as version",
    "promote->smoke": "smoke check: loading it from the registry",
    "during smoke": "smoke check: loading it from the registry",
    "data settling": "data: settling",
}
EXIT_FOR = {"succeeded": 0, "failed": 1, "gate_failed": 3, "cancelled": 130}
CANCEL_PROMISE_S = 5.0


class Watched:
    """A `retrain run` process whose output lines are read as they come, with the time each came."""

    def __init__(self, pipeline: Path, *, ignore_sigint: bool = False) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runner", "run", str(pipeline), "--no-notify"],
            cwd=pipeline.parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None,
        )
        self.lines: list[tuple[float, str]] = []
        self._new_line = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._new_line:
                self.lines.append((time.monotonic(), line))
                self._new_line.notify_all()
        with self._new_line:
            self._new_line.notify_all()

    def wait_for(self, text: str, timeout_s: float) -> bool:
        """Until a line containing `text` came (True), or the process ended or time ran out (False)."""
        deadline = time.monotonic() + timeout_s
        with self._new_line:
            while not any(text in line for _, line in self.lines):
                if not self._reader.is_alive() or time.monotonic() > deadline:
                    return False
                self._new_line.wait(timeout=0.2)
        return True

    def finish(self, timeout_s: float = 1800) -> int:
        code = self.process.wait(timeout=timeout_s)
        self._reader.join(timeout=30)
        return code

    @property
    def output(self) -> str:
        return "".join(line for _, line in self.lines)

    @property
    def run_id(self) -> str | None:
        for _, line in self.lines:
            if " run " in line and "(trigger" in line:
                return line.split(" run ", 1)[1].split()[0]
        return None


@dataclass
class Tally:
    kills: Counter[str] = field(default_factory=Counter)
    missed: Counter[str] = field(default_factory=Counter)  # the run ended before the kill: drawn again
    violations: list[str] = field(default_factory=list)
    cancel_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    run_s: list[float] = field(default_factory=list)
    exits: Counter[str] = field(default_factory=Counter)  # point: exit code of the killed run (signals)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(folder: Path) -> str:
    """One digest of every file under `folder`, with its path."""
    whole = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            whole.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return whole.hexdigest()


def project_processes(root: Path) -> list[psutil.Process]:
    """Processes working in the project: kernels, the kernel server and its workers, runs."""
    found = set(kernels_in(root))
    for process in psutil.process_iter(["cwd", "status", "cmdline"]):
        try:
            cwd = process.info["cwd"] or ""
            inside = cwd == str(root) or cwd.startswith(f"{root}/")
            if inside and process.pid != os.getpid() and process.info["status"] != psutil.STATUS_ZOMBIE:
                found.add(process)
        except psutil.Error:
            continue
    return sorted(found, key=lambda process: process.pid)


def no_orphans(root: Path, within_s: float = 30) -> list[str]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        left = project_processes(root)
        if not left:
            return []
        time.sleep(0.2)
    return [f"orphan process {p.pid} {' '.join(p.cmdline())[:100]}" for p in project_processes(root)]


class Invariants:
    """What must hold after the green run that follows each kill."""

    def __init__(self, pipeline: Path, name: str) -> None:
        self.pipeline, self.name, self.root = pipeline, name, pipeline.parent
        self.drops: dict[str, str] = {}  # drop name -> sha256
        self.exited: dict[str, int] = {}  # run id -> exit code, for the runs that ended themselves
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(f"sqlite:///{self.root / 'mlruns' / 'mlflow.db'}")

    def versions(self) -> tuple[str | None, set[str]]:
        """The champion and every registered version, read straight from the store's sqlite file."""
        return versions(self.pipeline, self.name)

    def after_kill(self, before: tuple[str | None, set[str]], notebooks: str) -> list[str]:
        """What must hold right after a kill, before the next run sweeps: every record, page and executed
        notebook whole; a temporary file only as a killed writer's in-flight write; the champion the one
        before the run or a version it registered; the notebooks untouched (tests/test_crash.py's checks)."""
        problems = []
        reports = self.root / "reports"
        try:
            assert_reports_readable(reports)
        except (AssertionError, ValueError, KeyError, TypeError) as error:
            problems.append(f"a report is not whole: {error}")
        for notebook in reports.glob("*/*.ipynb"):
            try:
                nbformat.read(notebook, as_version=4)
            except Exception as error:  # any failure is the finding
                problems.append(f"{notebook.relative_to(self.root)} is not a whole notebook: {error}")
        for leftover in reports.rglob(".*.tmp"):
            if not TEMPORARY.match(leftover.name):
                problems.append(f"not a temporary file of runner/files.py: {leftover.relative_to(self.root)}")
        (champion_before, known_before), (champion, known) = before, self.versions()
        if champion not in {champion_before, *(known - known_before)}:
            problems.append(f"champion v{champion}: neither v{champion_before} nor one this run registered")
        if tree_digest(self.root / "notebooks") != notebooks:
            problems.append("the notebooks changed")
        return problems

    def check(self) -> list[str]:
        return [*self._champion(), *self._drops(), *self._records(), *self._temporaries()]

    def _champion(self) -> list[str]:
        from mlflow import MlflowClient

        client = MlflowClient()
        try:
            champion = client.get_model_version_by_alias(self.name, "champion")
        except Exception as error:  # any failure is the finding
            return [f"no champion: {error}"]
        problems = []
        check = (champion.tags or {}).get("retrain.smoke_check", "")
        if not check.startswith("passed"):
            problems.append(f"champion v{champion.version} not smoke-checked: {check!r}")
        try:
            self.mlflow.pyfunc.load_model(f"models:/{self.name}@champion")
        except Exception as error:  # any failure is the finding
            problems.append(f"champion v{champion.version} does not load: {error}")
        return problems

    def _drops(self) -> list[str]:
        data = self.root / "data"
        problems = []
        waiting = sorted(path.name for path in (data / "new").glob("*.csv"))
        if waiting:
            problems.append(f"drops still waiting after a green run: {waiting}")
        history = Counter(digest(path) for path in data.glob("*.csv"))
        originals = Counter(digest(path) for path in (data / "accepted").glob("*/*.csv"))
        for drop, sha in self.drops.items():
            if history[sha] != 1:
                problems.append(f"drop {drop} is {history[sha]} times in the history")
            if originals[sha] != 1:
                problems.append(f"drop {drop} has {originals[sha]} originals in data/accepted")
        for folder in (data / "accepted").iterdir() if (data / "accepted").is_dir() else []:
            record = self._record(folder.name)
            if record is None:
                problems.append(f"drops accepted by {folder.name}, which has no run.json")
            elif record["status"] != "succeeded" or not (record.get("model") or {}).get("version"):
                model = record.get("model")
                problems.append(f"drops accepted by {folder.name}: {record['status']}, model {model}")
        return problems

    def _records(self) -> list[str]:
        problems = []
        for run_json in sorted((self.root / "reports").glob("*/run.json")):
            record = json.loads(run_json.read_text())
            if record["status"] == "running":
                problems.append(f"run {record['run_id']} still says running")
            code = self.exited.get(record["run_id"])
            if code == 70:
                problems.append(f"run {record['run_id']}: a bug in retrain (exit 70): {record.get('error')}")
            elif code is not None and EXIT_FOR.get(record["status"]) != code:
                problems.append(f"run {record['run_id']} exited {code} but recorded {record['status']}")
        return problems

    def _temporaries(self) -> list[str]:
        return [f"temporary file {path.relative_to(self.root)}" for path in self.root.rglob(".*.tmp")]

    def _record(self, run_id: str) -> dict | None:
        path = self.root / "reports" / run_id / "run.json"
        return json.loads(path.read_text()) if path.is_file() else None


def kill_at(run: Watched, point: str, run_s: float, rng: random.Random) -> tuple[bool, float | None]:
    """Do the trial's fault; (whether it landed while the run still ran, seconds from a signal to the end)."""
    process = run.process
    if point in CHOSEN:
        if not run.wait_for(CHOSEN[point], timeout_s=max(600.0, 6 * run_s)):
            return False, None
        if point == "during smoke":
            time.sleep(rng.uniform(0.1, 1.5))
            if "smoke check passed" in run.output:  # too late for this point: killed, drawn again
                process.kill()
                return False, None
    elif point in ("SIGTERM", "SIGINT"):
        # from 0.3 s: before its first line runs, an interpreter that inherited SIGINT ignored cannot hear it
        time.sleep(rng.uniform(0.3, run_s))
    else:
        time.sleep(rng.uniform(0.05, run_s))
    if process.poll() is not None:
        return False, None
    if point == "child":
        children = [p for p in psutil.Process(process.pid).children(recursive=True) if p.is_running()]
        if not children:
            return False, None
        victim = rng.choice(children)
        try:
            victim.kill()
        except psutil.NoSuchProcess:
            return False, None
        return True, None
    if point in ("SIGTERM", "SIGINT"):
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM if point == "SIGTERM" else signal.SIGINT)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            return True, 999.0
        return True, time.monotonic() - sent
    process.kill()
    return True, None


def campaign(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fault-campaign-"))
    pipeline, name = make_drops_project(workdir)  # no warm-up: the registry runs in workers
    root = pipeline.parent
    env_note = f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    print(f"fault campaign in {root} (seed {args.seed}; {env_note})", flush=True)
    started = time.monotonic()
    first = Watched(pipeline)
    assert first.finish() == 0, first.output
    run_s = time.monotonic() - started
    invariants = Invariants(pipeline, name)
    tally = Tally()
    tally.run_s.append(run_s)
    plan = [point for point in CHOSEN for _ in range(args.per_point)]
    plan += ["random"] * args.random + ["child"] * args.children
    plan += ["SIGTERM", "SIGINT"] * (args.signals // 2)
    rng.shuffle(plan)
    try:
        run_trials(args, plan, pipeline, invariants, tally, rng, run_s)
    except KeyboardInterrupt:  # a campaign cut short still says what it found
        print("interrupted: the tallies of the trials done so far", flush=True)
    report(tally, time.monotonic() - started)
    return 1 if tally.violations else 0


def run_trials(
    args: argparse.Namespace,
    plan: list[str],
    pipeline: Path,
    invariants: Invariants,
    tally: Tally,
    rng: random.Random,
    run_s: float,
) -> None:
    root = pipeline.parent
    notebooks = tree_digest(root / "notebooks")
    drop_number = 0
    seen: set[str] = set()  # violations already counted (a record stays as it is from one check to the next)
    for trial, point in enumerate(plan, 1):
        for _attempt in range(args.retries + 1):
            drop_number += 1
            drop = add_drop(pipeline, drop_number)
            invariants.drops[drop.name] = digest(drop)
            before = invariants.versions()
            run = Watched(pipeline, ignore_sigint=point == "SIGINT")
            landed, cancel_s = kill_at(run, point, run_s, rng)
            code = run.finish()
            if point in ("child", "SIGTERM", "SIGINT") and run.run_id:
                invariants.exited[run.run_id] = code  # it ended itself: its status must be its exit code
            if landed:
                break
            tally.missed[point] += 1
            if point not in ("child", "SIGTERM", "SIGINT") and run.run_id:
                invariants.exited[run.run_id] = code
            run_s = min(run_s, time.monotonic() - run.started)  # kill sooner: runs got faster
        if not landed:
            print(f"{trial:3d} {point:18s} never landed in {args.retries + 1} runs", flush=True)
            continue
        tally.kills[point] += 1
        tally.exits[f"{point} exit {code}"] += 1
        if cancel_s is not None:
            tally.cancel_s[point].append(cancel_s)
        problems = no_orphans(root)
        problems += invariants.after_kill(before, notebooks)
        green_started = time.monotonic()
        green = Watched(pipeline)
        green_code = green.finish()
        tally.run_s.append(time.monotonic() - green_started)
        if green.run_id:
            invariants.exited[green.run_id] = green_code
        if green_code != 0:
            last = green.output.strip().splitlines()[-1][:200]
            problems.append(f"the next run exited {green_code}: {last}")
        problems += no_orphans(root)
        problems += [problem for problem in invariants.check() if problem not in seen]  # new ones only
        seen.update(problems)
        tally.violations += [f"trial {trial} ({point}): {problem}" for problem in problems]
        timing = f" cancelled in {cancel_s:.2f} s" if cancel_s is not None else ""
        verdict = "ok" if not problems else f"{len(problems)} VIOLATIONS: {problems[:3]}"
        said = f"{trial:3d} {point:18s} exit {code:4d}{timing}; next run exit {green_code}: {verdict}"
        print(said, flush=True)


def report(tally: Tally, elapsed_s: float) -> None:
    total = sum(tally.kills.values())
    print()
    print(f"{total} kills in {elapsed_s / 60:.1f} min; violations: {len(tally.violations)}")
    print(f"{'point':20s} {'kills':>5s} {'missed':>6s}")
    for point in [*CHOSEN, "random", "child", "SIGTERM", "SIGINT"]:
        print(f"{point:20s} {tally.kills[point]:5d} {tally.missed[point]:6d}")
    for point, times in tally.cancel_s.items():
        late = sum(1 for seconds in times if seconds > CANCEL_PROMISE_S)
        median, longest = statistics.median(times), max(times)
        print(
            f"{point}: ended {len(times)} runs in median {median:.2f} s, max {longest:.2f} s;"
            f" {late} over {CANCEL_PROMISE_S:g} s"
        )
    print("exit codes of the killed runs:", dict(sorted(tally.exits.items())))
    runs = tally.run_s
    print(f"green runs: {len(runs)}, median {statistics.median(runs):.1f} s, max {max(runs):.1f} s")
    for violation in tally.violations:
        print("VIOLATION", violation)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-point", type=int, default=8, help="kills at each chosen point")
    parser.add_argument("--random", type=int, default=12, help="SIGKILLs of the runner at random moments")
    parser.add_argument("--children", type=int, default=6, help="SIGKILLs of a random process of a run")
    parser.add_argument("--signals", type=int, default=10, help="SIGTERMs and SIGINTs at random moments")
    parser.add_argument("--retries", type=int, default=3, help="runs drawn again when a kill came too late")
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--workdir", default=None, help="where the project goes (default: a new temp folder)")
    return campaign(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
