"""A notebook's cells read as plain JSON: the source of its code cells and its `parameters` cell.

nbformat's reader validates the whole document against its schema (a quarter of a second with its imports):
more than a run whose stages all come from the cache. What the runner needs before executing anything (the
code that fingerprints a stage, the parameters a notebook declares, the names it imports and glues) is in
the cells' sources, read here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def cells(notebook: Path) -> list[dict[str, Any]]:
    """Every cell, as a dict with its source joined into one string. ValueError: not a readable notebook."""
    try:
        document = json.loads(notebook.read_bytes())
        found = document["cells"]
        return [{**cell, "source": _text(cell.get("source", ""))} for cell in found if isinstance(cell, dict)]
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read notebook {notebook.name}: {error}") from None
    except (KeyError, TypeError, AttributeError):
        raise ValueError(f"cannot read notebook {notebook.name}: not a notebook (no cells)") from None


def code_cells(notebook: Path) -> list[str]:
    """The source of every code cell. ValueError: not a readable notebook."""
    return [cell["source"] for cell in cells(notebook) if cell.get("cell_type") == "code"]


def parameters_cell(notebook: Path) -> dict[str, Any] | None:
    """The first cell tagged `parameters`, or None. ValueError: not a readable notebook."""
    for cell in cells(notebook):
        if "parameters" in (cell.get("metadata") or {}).get("tags", []):
            return {"cell_type": "code", "metadata": cell.get("metadata") or {}, "source": cell["source"]}
    return None


def _text(source: Any) -> str:
    return "".join(source) if isinstance(source, list) else str(source)
