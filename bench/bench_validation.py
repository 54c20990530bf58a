"""How fast the sales data's contract (notebooks/sales_contract.py) checks a large history and a new week.

    .venv/bin/python bench/bench_validation.py                      # 1M and 10M rows
    .venv/bin/python bench/bench_validation.py --rows 2000000

For each size, a SYNTHETIC multi-store data set (seeded, the demo's format; see bench/run_bench.py) is split
into a history (all weeks but the last) and a new drop (the last week), and `check_files` runs on both in a
fresh Python process, exactly as the validate stage calls it. Printed per size: the rows checked, the time,
rows per second, the peak RSS of that process, the in-memory size of the typed frame it returns, and the
ratio of the two. Peak RSS includes the interpreter with pandas and pandera imported (measured alone and
printed as the baseline). Target (issue 4): 10M rows in under 60 s, peak memory under 4x the frame.
This is a script that prints a table, not a test.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "bench"))
from run_bench import synthetic_sales  # noqa: E402  (a sibling script, not a package)

CHILD = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {notebooks!r})
import pandas, pandera.pandas
if {baseline!r}:
    print(json.dumps({{}}))
    raise SystemExit
import sales_contract
started = time.perf_counter()
checked = sales_contract.check_files([Path({history!r})], [Path({new!r})], root=Path({root!r}))
seconds = time.perf_counter() - started
print(json.dumps({{
    "seconds": seconds,
    "rows": len(checked.rows),
    "frame_bytes": int(checked.rows.memory_usage(deep=True).sum()),
    "problems": checked.problems.to_dict("records"),
}}))
"""


def split(source: Path, history: Path, new: Path) -> int:
    """Write all weeks but the last to `history` and the last week to `new`, line by line; returns rows."""
    with source.open() as lines:
        header = next(lines)
        date = header.rstrip("\n").split(",").index("Date")
        last = max(line.split(",", date + 1)[date] for line in lines)
    rows = 0
    with source.open() as lines, history.open("w") as old, new.open("w") as fresh:
        header = next(lines)
        old.write(header)
        fresh.write(header)
        for line in lines:
            (fresh if line.split(",", date + 1)[date] == last else old).write(line)
            rows += 1
    return rows


def measure(script: str) -> tuple[dict, float, float]:
    """Run `script` in a fresh interpreter: its JSON output, wall seconds and peak RSS in MB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest child so far: the children here grow in size, so it is this one
    return json.loads(done.stdout), wall, max(peak_kb, before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    args = parser.parse_args()
    notebooks = str(PROJECT / "notebooks")
    with tempfile.TemporaryDirectory(prefix="bench-validation-") as scratch:
        root = Path(scratch)
        baseline_script = CHILD.format(notebooks=notebooks, baseline=True, history="", new="", root=scratch)
        _, _, baseline_mb = measure(baseline_script)
        print(f"baseline: python + pandas + pandera imported, peak RSS {baseline_mb:,.0f} MB")
        header = "| rows | file | check | rows/s | peak RSS | frame in memory | peak / frame | problems |"
        print(header)
        print("|---|---|---|---|---|---|---|---|")
        for rows in sorted(args.rows):
            started = time.perf_counter()
            source = synthetic_sales(rows, root / f"synthetic-{rows}.csv")
            history, new = root / f"history-{rows}.csv", root / f"new-{rows}.csv"
            total = split(source, history, new)
            source.unlink()
            made = time.perf_counter() - started
            size_mb = (history.stat().st_size + new.stat().st_size) / 1e6
            script = CHILD.format(
                notebooks=notebooks, baseline=False, history=str(history), new=str(new), root=scratch
            )
            result, _, peak_mb = measure(script)
            frame_mb = result["frame_bytes"] / 1e6
            print(
                f"| {total:,} | {size_mb:,.0f} MB | {result['seconds']:.1f} s | "
                f"{total / result['seconds']:,.0f} | {peak_mb:,.0f} MB | {frame_mb:,.0f} MB | "
                f"{peak_mb / frame_mb:.2f}x | {len(result['problems'])} |",
                flush=True,
            )
            for problem in result["problems"][:5]:
                print(f"    problem: {problem}")
            print(f"    (data generated and split in {made:.0f} s)", flush=True)
            history.unlink()
            new.unlink()


if __name__ == "__main__":
    main()
