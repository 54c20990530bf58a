"""What a stage's kernel writes outside its cells (below Python, or before a cell runs) is kept with the
stage, in run.json and on the run page, and shown under the stage's name after the table: it never breaks
into the terminal's live table."""

from __future__ import annotations

import json

import pytest

from runner.commands import main

pytestmark = pytest.mark.kernel

PIPELINE = """\
version: 1
name: outside
stages:
  noisy:
    notebook: notebooks/writes_outside.ipynb
"""


@pytest.mark.parametrize("fork", ["1", "0"], ids=["forked", "plain"])
def test_output_outside_the_cells_is_kept_with_its_stage(make_project, capfd, monkeypatch, fork):
    monkeypatch.setenv("RETRAIN_FORK_KERNELS", fork)
    pipeline = make_project(PIPELINE)
    assert main(["run", str(pipeline), "--no-notify"]) == 0
    out, err = capfd.readouterr()
    run_json = next((pipeline.parent / "reports").glob("*/run.json"))
    record = json.loads(run_json.read_text())
    assert record["stages"]["noisy"]["output"] == ["a warning from outside the cell"]
    assert "a warning from outside the cell" not in err  # not in the terminal's stream, where the table is
    table_end = out.index("└")
    assert "noisy wrote 1 lines outside its cells:" in out[table_end:]
    page = (run_json.parent / "index.html").read_text()
    assert "Output outside the cells" in page and "a warning from outside the cell" in page
