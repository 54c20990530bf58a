"""How training the demo's model scales: in one process (pandas) beside a Dask cluster (lightgbm.dask).

    .venv/bin/python bench/scale_bench.py                                  # 1M and 10M rows
    .venv/bin/python bench/scale_bench.py --rows 1000000 --rows 30000000 --workers 2

For each size, SYNTHETIC sales shaped like the demo (stores x departments x 143 weeks, seeded: run_bench.py)
become the feature table (notebooks/forecasting.py; Parquet, row groups of 1Mi rows). Then, each in a
process of its own, what the train stage does on either path (pipeline.yaml `compute`): pandas reads the
table and `forecasting.fit` trains in that process; dask starts a LocalCluster of --workers processes and
`forecasting.fit_on_cluster` trains on it, the process reading only the holdout weeks it scores. Printed
for each: wall time, CPU of the process tree, its peak memory (PSS summed over the process and the
cluster's workers, RSS beside it), and the holdout WAPE of the model. A path that fails (out of memory,
killed) is printed as failed and the next goes on. Building the feature table itself (the features stage)
is not measured here. This is a script that prints a table, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(PROJECT / "bench"), str(PROJECT / "notebooks")]
import forecasting  # noqa: E402  (the demo's module, a sibling folder's script)
from run_bench import Measure, environment, measure, synthetic_sales  # noqa: E402

HOLDOUT_WEEKS = 8
CHILD = """
import json, sys, time
import pandas as pd
sys.path.insert(0, {notebooks!r})
import forecasting
from runner.nb.compute import Compute


def main():  # a LocalCluster spawns its workers, which import this script again: nothing runs at import
    path, engine, workers = {path!r}, {engine!r}, {workers!r}
    before = pd.Timestamp({before!r})
    settings = forecasting.settings(**forecasting.SETTINGS)
    started = time.perf_counter()
    if engine == "pandas":
        model = forecasting.fit(pd.read_parquet(path), settings, before=before)
    else:
        with Compute(above_rows=0, workers=workers).client() as client:
            model = forecasting.fit_on_cluster(client, path, settings, before=before)
    seconds = time.perf_counter() - started
    holdout = pd.read_parquet(path, filters=[("Date", ">=", before)])
    forecast = model.predict(holdout[forecasting.FEATURES])
    wape = forecasting.wape(holdout[forecasting.TARGET], forecast)
    print(json.dumps({{"fit_s": seconds, "wape": wape}}))


if __name__ == "__main__":
    main()
"""


def feature_table(rows: int, folder: Path) -> tuple[Path, str, int]:
    """The synthetic feature table of about `rows` rows, its holdout's first week and its exact row count."""
    sales = forecasting.load_sales(folder, synthetic_sales(rows, folder / "sales.csv").name, "none/*.csv")
    features = forecasting.build_features(sales)
    del sales
    path = folder / "features.parquet"
    features.to_parquet(path, index=False, row_group_size=1 << 20)
    before = f"{sorted(features['Date'].unique())[-HOLDOUT_WEEKS]:%Y-%m-%d}"
    return path, before, len(features)


def train(engine: str, path: Path, before: str, workers: int, folder: Path) -> tuple[Measure | None, dict]:
    code = CHILD.format(
        notebooks=str(PROJECT / "notebooks"), path=str(path), engine=engine, workers=workers, before=before
    )
    script = folder / f"train_{engine}.py"
    script.write_text(code)
    output = folder / f"train_{engine}.out"
    try:
        result = measure(engine, [[sys.executable, str(script)]], folder, environment(), output)
    except SystemExit as failed:  # measure's way of saying the command failed (killed, out of memory)
        return None, {"error": str(failed)}
    lines = [line for line in output.read_text().splitlines() if line.startswith("{")]
    return result, json.loads(lines[-1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, action="append", help="about N rows (repeat for sizes)")
    parser.add_argument("--workers", type=int, default=2, help="the local cluster's worker processes")
    args = parser.parse_args(argv)
    sizes = args.rows or [1_000_000, 10_000_000]
    table = []
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as temporary:
        for size in sizes:
            folder = Path(temporary) / str(size)
            folder.mkdir()
            path, before, rows = feature_table(size, folder)
            print(f"{rows:,} rows of features ({path.stat().st_size / 1e6:,.0f} MB of Parquet)", flush=True)
            for engine in ("pandas", "dask"):
                result, found = train(engine, path, before, args.workers, folder)
                table.append((rows, engine, result, found))
                print(f"  {engine}: {describe(result, found)}", flush=True)
            path.unlink()
    print(f"\n{'rows':>12} {'path':>7} {'wall':>9} {'CPU':>9} {'peak PSS':>10} {'peak RSS':>10} {'WAPE':>7}")
    for rows, engine, result, found in table:
        if result is None:
            print(f"{rows:>12,} {engine:>7}  failed: {found['error'][:80]}")
            continue
        print(
            f"{rows:>12,} {engine:>7} {result.wall_s:>8.1f}s {result.cpu_s:>8.1f}s "
            f"{result.peak_pss_mb:>8,.0f}MB {result.peak_rss_mb:>8,.0f}MB {found['wape']:>6.2%}"
        )
    return 0


def describe(result: Measure | None, found: dict) -> str:
    if result is None:
        return f"failed ({found['error'][:120]})"
    return (
        f"{result.wall_s:.1f} s (fit {found['fit_s']:.1f} s), peak PSS {result.peak_pss_mb:,.0f} MB, "
        f"WAPE {found['wape']:.2%}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
