"""How fast `retrain run` is on the demo, side by side with the loop a user would write and with the limit.

    .venv/bin/python bench/run_bench.py               # the demo's real data (data/source must be fetched)
    .venv/bin/python bench/run_bench.py --rows 1000000   # a seeded synthetic multi-store data set instead

Every scenario runs in its own temporary copy of the project (pipeline.yaml, notebooks, data), so the
working tree is never touched. Scenarios:

- retrain cold: the first `retrain run` (creates the MLflow store, registers and deploys version 1);
- retrain rerun 1: nothing changed, but production did (version 1 is now the champion), so evaluate scores
  the champion again; retrain rerun 2: nothing changed at all (everything cached, no kernel);
- retrain new drop: `python data/walmart.py --source F next-week` wrote the next week into data/new, then
  `retrain run`;
- retrain cold, kernels not forked: the cold run again with RETRAIN_FORK_KERNELS=0: each kernel is a new
  interpreter that runs the warm-up itself, started while the stage before it runs;
- retrain cold, no warm kernels: the cold run again with RETRAIN_WARM_KERNELS=0: each kernel is started when
  its stage begins, without warm-up (per-stage savings below);
- naive loop: per stage notebook, the papermill CLI then `python -m nbconvert --to html` (no gates, no
  cache);
- limit: the notebooks exported with `nbconvert --to script` (parameters injected) run one after another in
  one Python process: no kernel, no rendering.

The baselines do the work of the runner's cold run: before the deploy stage they register the trained model
(version 1, made the champion, as a workflow step would with `mlflow.register_model`) and give the deploy
notebook `champion_uri=models:/<name>/1`, so that it deploys as it does in `retrain run`. Without that, their
deploy notebook finds no model and does nothing (on 1M rows: the deploy stage's 4.7 s they would skip).

Wall time, CPU time (user + sys of every child process, from getrusage(RUSAGE_CHILDREN)) and peak memory of
the process tree, sampled every 50 ms with psutil, are printed for each, with ratios. Memory is measured two
ways: the sum of PSS (proportional set size: a page shared by N processes counts 1/N in each, so the sum is
what the tree holds) and the sum of RSS (a shared page counts in full in every process that maps it). The
two differ when processes share memory, as kernels forked from one kernel server do; for one process they
are close. This is a script that prints a table, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import yaml

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SOURCE = PROJECT / "data" / "source" / "walmart_sales_weekly.csv"
PSS_EVERY_S = 0.5
HISTORY_WEEKS = 113  # as the demo: the first 113 weeks are history, the rest can be dropped one by one


@dataclass
class Measure:
    name: str
    wall_s: float
    cpu_s: float
    peak_rss_mb: float  # sum over the process tree
    peak_pss_mb: float  # sum over the process tree
    what: str = ""
    stages: dict[str, dict] = field(default_factory=dict)  # from run.json, for retrain scenarios


# --- running and measuring ---------------------------------------------------------------------------------
def measure(
    name: str, commands: Sequence[Sequence[str]], cwd: Path, env: dict[str, str], log: Path
) -> Measure:
    """Run the commands one after another; wall time, CPU of the children, peak RSS of the process tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    peak, peak_pss = 0, 0
    with log.open("a") as out:
        for command in commands:
            out.write(f"\n$ {' '.join(map(str, command))}\n")
            out.flush()
            process = psutil.Popen(
                list(map(str, command)), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
            )
            sampled = 0.0
            while process.poll() is None:
                # PSS comes from smaps_rollup, whose reading walks the process's page tables under its memory
                # lock: read every 50 ms from 4-5 processes, it made the train stage's LightGBM fit take 25 s
                # instead of 16 s on 1M rows. RSS (statm, cheap) is read every 50 ms, PSS every 0.5 s.
                full = time.monotonic() - sampled >= PSS_EVERY_S
                rss, pss = _tree_memory(process, full)
                peak = max(peak, rss)
                if full:
                    peak_pss, sampled = max(peak_pss, pss), time.monotonic()
                time.sleep(0.05)
            if process.returncode != 0:
                raise SystemExit(
                    f"{name}: {' '.join(map(str, command))} exited {process.returncode}; see {log}"
                )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measure(name, wall, cpu, peak / 1e6, peak_pss / 1e6)


def _tree_memory(process: psutil.Process, full: bool) -> tuple[int, int]:
    """The sums of RSS and (when `full`) of PSS over the process and its descendants (PSS read from
    smaps_rollup; 0 when not `full`)."""
    rss = pss = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    for member in members:
        try:
            memory = member.memory_full_info() if full else member.memory_info()
        except psutil.Error:
            continue
        rss += memory.rss
        pss += getattr(memory, "pss", memory.rss) if full else 0
    return rss, pss


def environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "GITHUB_"))}
    env.update(NO_COLOR="1", RETRAIN_TRIGGER="bench", PYTHONWARNINGS="ignore")
    return env


# --- projects ----------------------------------------------------------------------------------------------
def copy_project(target: Path, source_csv: Path, history_weeks: int) -> Path:
    """pipeline.yaml, notebooks, data/history (the source's first weeks) and an empty data/new."""
    shutil.copy(PROJECT / "pipeline.yaml", target / "pipeline.yaml")
    shutil.copytree(
        PROJECT / "notebooks", target / "notebooks", ignore=shutil.ignore_patterns("__pycache__", ".ipynb*")
    )
    for folder in ("history", "new", "source"):
        (target / "data" / folder).mkdir(parents=True)
    lines = source_csv.read_text().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    date_column = header.rstrip("\n").split(",").index("Date")
    weeks = sorted({row.split(",")[date_column] for row in rows})
    kept = set(weeks[:history_weeks])
    (target / "data" / "history" / "sales.csv").write_text(
        header + "".join(row for row in rows if row.split(",")[date_column] in kept)
    )
    shutil.copy(source_csv, target / "data" / "source" / "sales.csv")
    return target / "data" / "source" / "sales.csv"


def synthetic_sales(rows: int, path: Path, seed: int = 20261126) -> Path:
    """A SYNTHETIC multi-store data set in the demo's format (seeded): about `rows` rows over 143 weeks.

    Not real sales: every series is a base level times a yearly season, holiday peaks, a slow trend and noise;
    the store's surroundings (temperature, fuel, CPI, unemployment) are smooth random walks; markdowns appear
    from November 2011 as in the real data.
    """
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2010-02-05", periods=143, freq="7D")
    holidays = pd.to_datetime(
        ["2010-02-12", "2010-09-10", "2010-11-26", "2010-12-31", "2011-02-11", "2011-09-09", "2011-11-25",
         "2011-12-30", "2012-02-10", "2012-09-07"]
    )  # fmt: skip
    departments = min(81, max(1, rows // (143 * 10)))
    stores = max(1, -(-rows // (143 * departments)))
    n_weeks = len(dates)
    week = np.arange(n_weeks)
    season = 1 + 0.15 * np.sin(2 * np.pi * (dates.day_of_year.to_numpy() - 80) / 365.25)
    is_holiday = dates.isin(holidays)
    peak = np.where(dates.isin(holidays[[2, 3, 6, 7]]), 1.6, np.where(is_holiday, 1.1, 1.0))
    frames = []
    for store in range(1, stores + 1):
        temperature = 60 + 25 * np.sin(2 * np.pi * (week - 10) / 52.18) + rng.normal(0, 3, n_weeks)
        fuel = 2.6 + np.cumsum(rng.normal(0.005, 0.03, n_weeks))
        cpi = 180 + 30 * rng.random() + 0.05 * week
        unemployment = 6 + 3 * rng.random() + np.cumsum(rng.normal(-0.005, 0.02, n_weeks))
        markdowns = np.where(dates >= pd.Timestamp("2011-11-11"), rng.gamma(2, 2500, (5, n_weeks)), np.nan)
        base = rng.lognormal(9.5, 1.0, departments)
        trend = 1 + rng.normal(0, 0.001, departments)[:, None] * week
        noise = rng.normal(1, 0.08, (departments, n_weeks))
        sales = base[:, None] * season * peak * trend * noise
        dept_numbers = np.arange(1, departments + 1)
        frame = pd.DataFrame(
            {
                "Store": store,
                "Dept": np.repeat(dept_numbers, n_weeks),
                "Date": np.tile(dates.strftime("%Y-%m-%d"), departments),
                "Weekly_Sales": np.round(sales.reshape(-1), 2),
                "IsHoliday": np.tile(np.where(is_holiday, "TRUE", "FALSE"), departments),
                "Type": "A",
                "Size": 150000,
                "Temperature": np.tile(np.round(temperature, 2), departments),
                "Fuel_Price": np.tile(np.round(fuel, 3), departments),
                **{f"MarkDown{i + 1}": np.tile(np.round(markdowns[i], 2), departments) for i in range(5)},
                "CPI": np.tile(np.round(cpi, 4), departments),
                "Unemployment": np.tile(np.round(unemployment, 3), departments),
            }
        )
        frame.insert(0, "id", frame["Store"].astype(str) + "_" + frame["Dept"].astype(str))
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True).sort_values(["Store", "Dept", "Date"], kind="stable")
    table.to_csv(path, index=False, na_rep="NA")
    return path


# --- the scenarios -----------------------------------------------------------------------------------------
def retrain_scenarios(workdir: Path, source_csv: Path, log: Path) -> list[Measure]:
    root = workdir / "retrain"
    root.mkdir()
    source = copy_project(root, source_csv, HISTORY_WEEKS)
    env = environment()
    run = [BIN / "retrain", "run", root / "pipeline.yaml", "--no-notify"]
    found = []
    for name in ("retrain cold", "retrain rerun 1", "retrain rerun 2"):
        found.append(_with_stages(measure(name, [run], root, env, log), root))
    subprocess.run(
        [BIN / "python", PROJECT / "data" / "walmart.py", "--root", root, "--source", source, "next-week"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    found.append(_with_stages(measure("retrain new drop", [run], root, env, log), root))
    variants = (
        ("retrain cold, kernels not forked", "RETRAIN_FORK_KERNELS"),
        ("retrain cold, no warm kernels", "RETRAIN_WARM_KERNELS"),
    )
    for name, switch in variants:
        cold = workdir / switch.lower()
        cold.mkdir()
        copy_project(cold, source_csv, HISTORY_WEEKS)
        run_cold = [BIN / "retrain", "run", cold / "pipeline.yaml", "--no-notify"]
        found.append(_with_stages(measure(name, [run_cold], cold, {**env, switch: "0"}, log), cold))
    return found


def _with_stages(result: Measure, root: Path) -> Measure:
    latest = max(path for path in (root / "reports").iterdir() if (path / "run.json").is_file())
    record = json.loads((latest / "run.json").read_text())
    result.stages = record["stages"]
    counts: dict[str, list[str]] = {}
    for name, stage in record["stages"].items():
        counts.setdefault(stage["status"], []).append(name)
    shown = "; ".join(f"{status}: {', '.join(names)}" for status, names in counts.items())
    result.what = f"{record['status']}; {shown}"
    return result


def stage_notebooks(root: Path) -> list[tuple[str, str]]:
    pipeline = yaml.safe_load((root / "pipeline.yaml").read_text())
    return [(name, stage["notebook"]) for name, stage in pipeline["stages"].items()]


def model_release(root: Path) -> tuple[str, set[str]]:
    """The registered model's name and the stages that deploy it (pipeline.yaml's `model` section)."""
    model = yaml.safe_load((root / "pipeline.yaml").read_text())["model"]
    return model["name"], set(model.get("deploy", []))


# What a user's workflow does between evaluating and deploying, so that the baselines do the runner's work:
# register the trained model (version 1 of a new store) and make it the champion. Run as `python -c` in the
# naive loop, in the same process in the limit.
REGISTER = """\
import json, pathlib, mlflow
from runner.project import tracking_uri
def register(root, name):
    mlflow.set_tracking_uri(tracking_uri(pathlib.Path(root)))
    uri = json.loads(pathlib.Path(root, "out", "products", "train.json").read_text())["model_uri"]
    version = mlflow.register_model(uri, name).version
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", version)
"""


def naive_loop(workdir: Path, source_csv: Path, log: Path) -> Measure:
    root = workdir / "naive"
    root.mkdir()
    copy_project(root, source_csv, HISTORY_WEEKS)
    out = root / "out"
    (out / "products").mkdir(parents=True)
    commands: list[list[str | Path]] = []
    model, deploys = model_release(root)
    for name, notebook in stage_notebooks(root):
        executed = out / f"{name}.ipynb"
        parameters = ["-p", "run_dir", out / "products", "-p", "run_id", "naive"]
        if name in deploys:
            registering = f"{REGISTER}\nregister({str(root)!r}, {model!r})"
            commands.append([BIN / "python", "-c", registering])
            parameters += ["-p", "champion_uri", f"models:/{model}/1"]
        options = ["-k", "python3", "--cwd", root, "--no-progress-bar"]
        commands.append([BIN / "papermill", root / notebook, executed, *options, *parameters])
        commands.append([BIN / "python", "-m", "nbconvert", "--to", "html", executed, "--log-level", "WARN"])
    result = measure("naive loop (papermill + nbconvert CLIs)", commands, root, environment(), log)
    result.what = "5 notebooks executed and rendered, the model registered before deploy; no gates or cache"
    return result


def script_limit(workdir: Path, source_csv: Path, log: Path) -> Measure:
    import nbformat

    root = workdir / "limit"
    root.mkdir()
    copy_project(root, source_csv, HISTORY_WEEKS)
    products = root / "out" / "products"
    products.mkdir(parents=True)
    steps = []
    model, deploys = model_release(root)
    for name, notebook in stage_notebooks(root):
        nb = nbformat.read(root / notebook, as_version=4)
        position = next(i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", []))
        injected = f"run_dir = {str(products)!r}\nrun_id = 'limit'\n"
        if name in deploys:
            steps.append(f"register({str(root)!r}, {model!r})")
            injected += f"champion_uri = 'models:/{model}/1'\n"
        nb.cells.insert(position + 1, nbformat.v4.new_code_cell(injected))
        nb.metadata["language_info"] = {"name": "python", "file_extension": ".py"}  # committed without it
        parameterized = root / "out" / f"{name}.ipynb"
        nbformat.write(nb, parameterized)
        subprocess.run(
            [BIN / "python", "-m", "nbconvert", "--to", "script", parameterized, "--log-level", "WARN"],
            check=True,
            capture_output=True,
        )
        steps.append(f"runpy.run_path({str(parameterized.with_suffix('.py'))!r}, run_name='__main__')")
    driver = root / "out" / "run_all.py"
    preamble = "import runpy, matplotlib\nmatplotlib.use('Agg')\n" + REGISTER
    driver.write_text(preamble + "\n".join(steps) + "\n")
    result = measure(
        "limit (exported scripts, one process)", [[BIN / "python", driver]], root, environment(), log
    )
    result.what = "the same code and registration, in one process: no kernel, no rendering, no gates"
    return result


# --- the table ---------------------------------------------------------------------------------------------
def print_table(results: list[Measure], limit: Measure, naive: Measure) -> None:
    columns = (
        f"{'wall s':>8} {'CPU s':>8} {'PSS MB':>8} {'RSS MB':>8} {'wall/limit':>10} {'wall/naive':>10} "
        f"{'PSS/limit':>9}"
    )
    header = f"{'scenario':<42} {columns}"
    print(header)
    print("-" * len(header))
    for result in results:
        print(
            f"{result.name:<42} {result.wall_s:>8.2f} {result.cpu_s:>8.2f} {result.peak_pss_mb:>8.0f} "
            f"{result.peak_rss_mb:>8.0f} {result.wall_s / limit.wall_s:>10.2f} "
            f"{result.wall_s / naive.wall_s:>10.2f} {result.peak_pss_mb / limit.peak_pss_mb:>9.2f}"
        )
    print("(PSS, RSS: peak sums over the process tree; ratios wall/limit etc. are of this one invocation)")
    print()
    for result in results:
        if result.what:
            print(f"{result.name}: {result.what}")


def print_warm_savings(warm: Measure, cold: Measure) -> None:
    print("\nwarm kernels, per stage (cold run with pre-started kernels vs the same run without):")
    header = (
        f"{'stage':<10} {'kernel wait s':>14} {'cells s':>8}   "
        f"{'no warm: wait s':>15} {'cells s':>8} {'saved s':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, stage in warm.stages.items():
        other = cold.stages.get(name, {})
        a, b = stage.get("timings", {}), other.get("timings", {})
        if stage.get("status") in ("skipped", "cached") or other.get("status") in ("skipped", "cached"):
            continue
        saved = (b["kernel_start_s"] + b["execute_s"]) - (a["kernel_start_s"] + a["execute_s"])
        print(
            f"{name:<10} {a['kernel_start_s']:>14.2f} {a['execute_s']:>8.2f}   "
            f"{b['kernel_start_s']:>15.2f} {b['execute_s']:>8.2f} {saved:>8.2f}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=None, help="use a SYNTHETIC data set of about N rows")
    parser.add_argument("--keep", action="store_true", help="keep the temporary projects and the log")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="retrain-bench-"))
    log = workdir / "bench.log"
    try:
        if args.rows:
            source_csv = synthetic_sales(args.rows, workdir / "synthetic_sales.csv")
            print(f"data: SYNTHETIC, {sum(1 for _ in source_csv.open()) - 1:,} rows (seeded), {source_csv}")
        elif SOURCE.is_file():
            source_csv = SOURCE
            print(f"data: the demo's real weekly sales ({SOURCE.relative_to(PROJECT)})")
        else:
            print("the demo's source file is missing: run `python data/walmart.py fetch` or pass --rows N")
            return 2
        print(f"machine: {os.cpu_count()} CPUs; work folder {workdir}\n")
        retrain = retrain_scenarios(workdir, source_csv, log)
        naive = naive_loop(workdir, source_csv, log)
        limit = script_limit(workdir, source_csv, log)
        print_table([*retrain, naive, limit], limit, naive)
        print_warm_savings(retrain[0], retrain[-1])
    finally:
        if args.keep:
            print(f"\nkept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
