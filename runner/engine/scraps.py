"""Read what a stage recorded with `scrapbook.glue`, as JSON-ready values.

Scalars, strings, lists and dicts come back as they were glued (NaN and infinities as the strings scrapbook
stores, which the gates treat as not-a-number). A glued DataFrame becomes a small table document
`{"type": "table", "columns": [...], "rows": [[...]], "n_rows": N}` holding at most TABLE_ROWS rows, so that
run.json stays small and readable; the full table stays in the executed notebook.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from runner.engine.kernels import IN_THIS_PROCESS, WorkerError, WorkerLost, Workers

TABLE_ROWS = 50
READ_TIMEOUT_S = 120


def read_scraps(executed_notebook: Path, workers: Workers = IN_THIS_PROCESS) -> dict[str, Any]:
    """Every scrap glued in the notebook, by name; {} when the notebook does not exist.

    In a worker when the run's kernel server imported scrapbook: scrapbook decodes a glued table with pandas
    and pyarrow, which the server has imported and the runner then never does (~80 MB)."""
    if not executed_notebook.is_file():
        return {}
    where, folder = str(executed_notebook), executed_notebook.parent
    try:
        found: dict[str, Any] = workers.call(
            scraps_in, needs="scrapbook", timeout_s=READ_TIMEOUT_S, cwd=folder, notebook=where
        )
    except (WorkerError, WorkerLost):  # read here: what failed there fails again with its traceback, or works
        found = scraps_in(where)
    return found


def scraps_in(notebook: str) -> dict[str, Any]:
    """The scraps of an executed notebook, read here (in the runner, or in a worker)."""
    import scrapbook

    read = scrapbook.read_notebook(notebook)
    return {name: _plain(scrap.data) for name, scrap in read.scraps.items()}


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict") and hasattr(value, "columns"):
        return _table(value)
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if hasattr(value, "item") and callable(value.item):  # a numpy scalar that slipped through
        return value.item()
    return value


def _table(frame: Any) -> dict[str, Any]:
    head = frame.head(TABLE_ROWS)
    rows = [[_cell(item) for item in row] for row in head.itertuples(index=False, name=None)]
    return {"type": "table", "columns": [str(c) for c in frame.columns], "rows": rows, "n_rows": len(frame)}


def _cell(item: Any) -> Any:
    if hasattr(item, "item") and callable(item.item):
        item = item.item()
    if isinstance(item, float) and not math.isfinite(item):
        return str(item)
    if item is None or isinstance(item, bool | int | float | str):
        return item
    return str(item)
