"""Read what a stage recorded with `scrapbook.glue`, as JSON-ready values.

Scalars, strings, lists and dicts come back as they were glued (NaN and infinities as the strings scrapbook
stores, which the gates treat as not-a-number). A glued DataFrame becomes a small table document
`{"type": "table", "columns": [...], "rows": [[...]], "n_rows": N}` holding at most TABLE_ROWS rows, so that
run.json stays small and readable; the full table stays in the executed notebook.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.engine.kernels.forked import KernelServer

TABLE_ROWS = 50
READ_TIMEOUT_S = 120


def read_scraps(executed_notebook: Path | str, server: KernelServer | None = None) -> dict[str, Any]:
    """Every scrap glued in the notebook, by name; {} when the notebook does not exist.

    With a kernel server whose warm-up imports scrapbook, they are read in a worker forked from it: scrapbook
    decodes a glued table with pandas and pyarrow, which the server has imported and the runner then never
    does (~80 MB)."""
    executed_notebook = Path(executed_notebook)  # a worker is given a string
    if not executed_notebook.is_file():
        return {}
    if server is not None and "scrapbook" in server.preloaded:
        from runner.engine.kernels.forked import KernelServerError, WorkerError

        job, folder = {"executed_notebook": str(executed_notebook)}, executed_notebook.parent
        try:
            target = "runner.engine.scraps:read_scraps"
            found: dict[str, Any] = server.call(target, job, folder, READ_TIMEOUT_S)
            return found
        except (KernelServerError, WorkerError):
            pass  # read here: what failed there fails again with its own traceback, or works
    import scrapbook

    notebook = scrapbook.read_notebook(str(executed_notebook))
    return {name: _plain(scrap.data) for name, scrap in notebook.scraps.items()}


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
