"""Committed notebooks carry no outputs: diffs stay readable and no result or secret sneaks into git."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT


def committed_notebooks() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "*.ipynb"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    )
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    return [path for path in listed.stdout.split() if not path.startswith("tests/assets/")]


@pytest.mark.e2e  # asks git
def test_stage_notebooks_are_committed():
    assert {"notebooks/01_validate.ipynb", "notebooks/04_evaluate.ipynb"} <= set(committed_notebooks())


@pytest.mark.unit
@pytest.mark.parametrize("path", committed_notebooks())
def test_committed_notebook_has_no_outputs(path: str):
    notebook = json.loads((PROJECT_ROOT / path).read_text(encoding="utf-8"))
    dirty = [
        index
        for index, cell in enumerate(notebook["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]
    assert not dirty, f"{path}: cells {dirty} hold outputs; strip them (nbstripout {path})"


@pytest.mark.unit
@pytest.mark.parametrize("path", committed_notebooks())
def test_stage_notebook_has_a_tagged_parameters_cell(path: str):
    notebook = json.loads(Path(PROJECT_ROOT / path).read_text(encoding="utf-8"))
    first_code = next(cell for cell in notebook["cells"] if cell["cell_type"] == "code")
    assert "parameters" in first_code.get("metadata", {}).get("tags", []), path
