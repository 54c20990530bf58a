"""How long `retrain run` takes when nothing changed: every stage comes from the cache, no kernel starts.

    .venv/bin/python bench/rerun_bench.py                 # a temporary copy of the demo, run cold once first
    .venv/bin/python bench/rerun_bench.py --project DIR   # a project that has already run once
    .venv/bin/python bench/rerun_bench.py --profile       # and where the CPU time of one rerun goes
    .venv/bin/python bench/rerun_bench.py --baseline ../main/.venv/bin   # another install's rerun beside it

Each rerun is a new `retrain run` process, as a user or a workflow step starts it. Printed per repetition and
as medians: wall time, CPU time (user + sys of the process, from getrusage(RUSAGE_CHILDREN)), and, measured
side by side in the same loop, the floor no Python command can go under (`python -c pass`) and the cost of
importing what a rerun needs before it does anything (`import runner.commands, runner.pipeline`). With
--baseline, the `retrain` of another install (another checkout's .venv/bin: the code before a change) reruns
the same project in the same loop, so that before and after meet the same moments of a busy machine. On a busy
machine wall times stretch and CPU times much less: compare the CPU columns, and ratios within one run.

With --profile, one more rerun runs in this process under cProfile with a CPU clock (time.process_time, so
waiting for a busy machine does not count) and the 25 functions with the most cumulative CPU time are printed.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SOURCE = PROJECT / "data" / "source" / "walmart_sales_weekly.csv"


def timed(command: list[str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one child process; a failure stops the benchmark with its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        said = done.stdout[-2000:] + done.stderr[-2000:]
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{said}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def demo_copy(workdir: Path) -> Path:
    """The demo project (pipeline, notebooks, data) in a temporary folder, run once cold."""
    if not SOURCE.exists():
        raise SystemExit("the demo's source file is missing: run `python data/walmart.py fetch` first")
    project = workdir / "demo"
    project.mkdir()
    for name in ("pipeline.yaml", "notebooks", "data"):
        source = PROJECT / name
        if source.is_dir():
            shutil.copytree(source, project / name, ignore=shutil.ignore_patterns("__pycache__", "replay"))
        else:
            shutil.copy2(source, project / name)
    print("cold run of the demo in a temporary copy (a few minutes)...", flush=True)
    wall, _ = timed([str(BIN / "retrain"), "run", "pipeline.yaml"], project)
    print(f"  cold run: {wall:.1f} s")
    # the first rerun scores the new champion again (production changed): not what is measured here
    timed([str(BIN / "retrain"), "run", "pipeline.yaml"], project)
    return project


def profile_one(project: Path) -> str:
    """The top of a CPU profile of one rerun in this process (imports included: none is loaded yet)."""
    profiler = cProfile.Profile(time.process_time)
    os.chdir(project)
    saved = sys.stdout
    sys.stdout = io.StringIO()
    try:
        profiler.enable()
        from runner.commands import main

        main(["run", "pipeline.yaml"])
        profiler.disable()
    finally:
        sys.stdout = saved
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, help="a project that has already run (default: a demo copy)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="print where one rerun's CPU time goes")
    parser.add_argument("--baseline", type=Path, help="the bin folder of another install to compare with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rerun-bench-") as tmp:
        project = args.project.resolve() if args.project else demo_copy(Path(tmp))
        python, retrain = str(BIN / "python"), str(BIN / "retrain")
        rows: dict[str, list[tuple[float, float]]] = {"python -c pass": [], "imports": [], "retrain run": []}
        if args.baseline:
            rows["baseline run"] = []
        for _ in range(args.repeat):  # interleaved, so that a busy moment weighs on all of them alike
            rows["python -c pass"].append(timed([python, "-c", "pass"], project))
            rows["imports"].append(timed([python, "-c", "import runner.commands, runner.pipeline"], project))
            rows["retrain run"].append(timed([retrain, "run", "pipeline.yaml"], project))
            if args.baseline:
                baseline = str(args.baseline.resolve() / "retrain")
                rows["baseline run"].append(timed([baseline, "run", "pipeline.yaml"], project))
        print(f"\n{args.repeat} repetitions, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        print(f"{'':18}{'wall median':>12}{'wall min':>10}{'CPU median':>12}{'CPU min':>9}")
        for name, found in rows.items():
            walls, cpus = [w for w, _ in found], [c for _, c in found]
            print(
                f"{name:18}{statistics.median(walls):>10.3f} s{min(walls):>8.3f} s"
                f"{statistics.median(cpus):>10.3f} s{min(cpus):>7.3f} s"
            )
        run_cpu = statistics.median(c for _, c in rows["retrain run"])
        import_cpu = statistics.median(c for _, c in rows["imports"])
        print(f"imports are {import_cpu / run_cpu:.0%} of a rerun's CPU time")
        if args.profile:
            print("\none rerun under cProfile (CPU clock), by cumulative time:")
            print(profile_one(project))
    return 0


if __name__ == "__main__":
    sys.exit(main())
