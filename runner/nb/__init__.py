"""The notebook library: what stage notebooks import, so that no helper is copied from notebook to notebook.

    from runner import nb

    ROOT = nb.root()                           # the project's root, from Jupyter as from the runner
    PRODUCTS = nb.products(products_dir)       # the run's products folder (reports/scratch by hand)
    nb.glue("rmse", float(rmse))               # record a result; refuses numpy scalars and None, with the fix
    nb.show(fig)                               # a matplotlib figure, compact, for the report page
    nb.record_predictions(frame, period="week", actual="sales", prediction="forecast", champion="champion")
    problems = nb.Problems()                   # the `problems` table a quarantine reads
    header = nb.check_file(path, name, problems)   # encoding, binary, delimiter, header, rows, last line
    nb.drift.drift_table(reference, current, numeric=[...], categorical=[...], weights=..., trending=[...])
    nb.importance.champion_weighing(champion_uri, ROOT)   # the champion's feature importance, to weigh drift
    nb.backtest_origins(weeks, horizon=8, count=4)   # rolling origins, newest first
    nb.recorded_params(champion_uri)           # the settings the champion was trained with (its MLflow run)
    nb.record_paired(rows, origin=..., period=..., actual=..., prediction=..., champion=...)
    nb.compare(paired, score)                  # the difference and its interval, under the pipeline's policy
    nb.compute.Compute.of(compute).client()    # a Dask client when the data is large (`compute` section)

The names the runner reads from what notebooks record are listed in README.md ("What the runner reads").
"""

from runner.nb import compute, drift, importance
from runner.nb.compare import (
    backtest_origins,
    compare,
    paired_table,
    promotion_policy,
    record_paired,
    recorded_params,
)
from runner.nb.figures import show
from runner.nb.files import FILE_RULES, PROBLEM_COLUMNS, Problems, check_file, count_lines, first_non_utf8
from runner.nb.glue import PREDICTIONS, GlueError, glue, record_predictions
from runner.nb.paths import products, root

__all__ = [
    "FILE_RULES",
    "PREDICTIONS",
    "PROBLEM_COLUMNS",
    "GlueError",
    "Problems",
    "backtest_origins",
    "check_file",
    "compare",
    "compute",
    "count_lines",
    "drift",
    "first_non_utf8",
    "glue",
    "importance",
    "paired_table",
    "products",
    "promotion_policy",
    "record_paired",
    "record_predictions",
    "recorded_params",
    "root",
    "show",
]
