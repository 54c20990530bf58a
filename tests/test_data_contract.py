"""The sales data's contract (notebooks/sales_contract.py) and the intake's crash recovery
(runner/engine/intake.py), without kernels: the same checks the validate stage runs (drift: test_drift.py).
Each kind of bad drop also goes the way a run takes it after the validate stage, in this process: its findings
glued and read back as scraps, judged by the demo's gate, printed in the log, and the drop moved to quarantine
with its reasons (tests/test_data_intake.py runs two, a binary file and a drop overlapping the history,
through a whole `retrain run`)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from runner.engine import intake
from runner.engine.config import DataSpec, load_pipeline
from runner.engine.gates import GateScope, evaluate_gate
from runner.engine.scraps import read_scraps
from runner.records import RunRecord, StageRecord
from runner.report import terminal
from runner.report.outcome import outcome_of
from runner.secrets import NO_SECRETS
from tests.conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "notebooks"))
import sales_contract

pytestmark = pytest.mark.unit

DROPS = PROJECT_ROOT / "tests" / "assets" / "drops"
HISTORY = PROJECT_ROOT / "data" / "history" / "sales.csv"
TODAY = date(2026, 11, 26)

# fixture, the rule it breaks, what the message says about where (line, column, value)
BAD_DROPS = [
    ("empty.csv", "empty", "no header"),
    ("header_only.csv", "no rows", "only a header"),
    ("missing_column.csv", "missing column", "Temperature"),
    ("unknown_column.csv", "unknown column", "Region"),
    ("text_in_sales.csv", "not a number", "line 4: 'abc'"),
    ("negative_sales.csv", "negative sales", "line 3: -1520.5"),
    ("missing_sales.csv", "missing value", "line 5"),
    ("duplicate_key.csv", "duplicate key", "line 6: 1, 38, 2012-04-06"),
    ("overlaps_history.csv", "already in history", "line 2: '2012-03-30'"),
    ("gap.csv", "gap", "2012-04-06 is missing"),
    ("future_dates.csv", "future date", "line 2: '2031-01-03'"),
    ("unparseable_dates.csv", "not a date", "line 2: '04/06/2012'"),
    ("semicolon_delimited.csv", "delimiter", "separated by ';'"),
    ("latin1.csv", "not UTF-8", "line 5"),
    ("truncated_last_line.csv", "truncated last line", "10 of 17 values"),
    ("ten_times_rows.csv", "row count", "70 rows, the history's weeks have 7"),
    ("binary.csv", "binary", "NUL byte at offset 8"),
]


def check(*new: Path, **options) -> sales_contract.Checked:
    return sales_contract.check_files([HISTORY], list(new), root=PROJECT_ROOT, today=TODAY, **options)


@pytest.mark.parametrize(("fixture", "rule", "where"), BAD_DROPS, ids=[case[0] for case in BAD_DROPS])
def test_each_kind_of_bad_drop_is_named_with_its_rule_and_place(fixture, rule, where):
    checked = check(DROPS / fixture)
    first = checked.problems.iloc[0]
    assert (first["rule"], first["file"]) == (rule, f"tests/assets/drops/{fixture}"), checked.problems
    assert where in f"{first['column']} {first['examples']}", checked.problems.to_dict("records")
    assert checked.rejected_files == [f"tests/assets/drops/{fixture}"]  # never the history


@pytest.fixture(scope="module")
def demo():
    """The demo's pipeline as a run reads it (its data section and its validate stage's gates)."""
    return load_pipeline(PROJECT_ROOT / "pipeline.yaml")


def glued(folder: Path, **values) -> Path:
    """A notebook whose one cell glued `values` with scrapbook, as the validate stage's last cell does: the
    same encoders (a DataFrame through parquet), the same outputs, without a kernel."""
    import nbformat
    from scrapbook.api import _prepare_ipy_data_format
    from scrapbook.encoders import registry
    from scrapbook.scraps import Scrap, scrap_to_payload

    outputs = []
    for name, value in values.items():
        encoder = registry.determine_encoder_name(value)
        payload = scrap_to_payload(registry.encode(Scrap(name, value, encoder)))
        data, metadata = _prepare_ipy_data_format(name, payload, encoder)
        outputs.append(nbformat.v4.new_output("display_data", data=data, metadata=metadata))
    cell = nbformat.v4.new_code_cell("sb.glue(...)", outputs=outputs)
    notebook = folder / "validate.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), notebook)
    return notebook


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")}


@pytest.mark.parametrize(("fixture", "rule", "where"), BAD_DROPS, ids=[case[0] for case in BAD_DROPS])
def test_each_kind_of_bad_drop_is_logged_and_quarantined_with_its_rule_and_place(
    demo, tmp_path, fixture, rule, where
):
    root = tmp_path / "project"
    (root / "data" / "new").mkdir(parents=True)
    shutil.copytree(HISTORY.parent, root / "data" / "history")
    drop = root / "data" / "new" / f"sales-{fixture}"
    shutil.copy(DROPS / fixture, drop)
    original, history = drop.read_bytes(), digests(root / "data" / "history")
    waiting = intake.waiting(demo.data, root)
    assert [found.path for found in waiting] == [drop]

    # the validate stage: the contract, then what its last cell glues
    checked = sales_contract.check_files(
        sorted((root / "data" / "history").glob("*.csv")), [drop], root=root, today=TODAY
    )
    errors = checked.problems[~checked.problems["rule"].str.endswith("(warning)")]
    notebook = glued(
        tmp_path,
        n_errors=len(errors),
        problems=errors.drop(columns=["meaning"]).reset_index(drop=True),
        rejected_files=checked.rejected_files,
    )
    scraps = read_scraps(notebook)
    validate = demo.stages["validate"]
    scope = GateScope("validate", {"validate": scraps}, validate.gate_params, None)
    gates = [evaluate_gate(gate, scope) for gate in validate.gates]
    assert not all(gate.passed for gate in gates)
    stage = StageRecord("validate", validate.source, "gate_failed", 1.0, scraps=scraps, gates=gates)
    record = RunRecord(
        run_id="20261126T074012Z-0bad00",
        pipeline=demo.name,
        trigger="push",
        mode="full",
        git_sha=None,
        started_at="2026-11-26T07:40:12+00:00",
        params={},
        stages={"validate": stage},
        status="gate_failed",
    )

    # the drop moves whole to data/quarantine/<run_id>/, beside the reasons; the history is untouched
    record.data = intake.settle(demo.data, record, waiting, root, NO_SECRETS)
    folder = root / "data" / "quarantine" / record.run_id
    assert record.data.action == "quarantined" and record.data.folder == f"data/quarantine/{record.run_id}"
    assert (folder / drop.name).read_bytes() == original and not drop.exists()
    reason = (folder / "REASON.md").read_text()
    assert f"data/new/{drop.name}" in reason and rule in reason and "n_errors == 0" in reason
    assert json.loads((folder / "reason.json").read_text())["files"] == [f"data/new/{drop.name}"]
    assert digests(root / "data" / "history") == history

    # the log's last lines: the headline says the data was quarantined, the reason names the file, the rule
    # and where in the file
    run_dir = root / "reports" / record.run_id
    said = [str(line) for line in terminal.final_lines(outcome_of(record), run_dir, 3)]
    headline, reason = said[-3:-1]
    assert "quarantined" in headline and drop.name in reason and rule in reason and where in reason, said


def test_the_real_week_after_the_history_meets_the_contract():
    checked = check(DROPS / "good.csv")
    assert checked.problems.empty, checked.problems
    new = checked.rows[checked.rows["role"] == "new"]
    assert len(new) == 7 and set(new["Date"]) == {pd.Timestamp("2012-04-06")}
    assert len(checked.rows) == 114 * 7


def test_violations_are_collected_all_at_once():
    broken = (DROPS / "good.csv").read_text().splitlines(keepends=True)
    broken[2] = broken[2].replace(",FALSE,", ",perhaps,")
    broken[3] = broken[3].replace("2012-04-06", "2012-4-6")
    broken.append(broken[1])
    rules = set(check_text(broken)["rule"])
    assert {"not a holiday flag", "not a date", "duplicate key"} <= rules


def check_text(lines: list[str]) -> pd.DataFrame:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        drop = Path(scratch) / "drop.csv"
        drop.write_text("".join(lines))
        return check(drop).problems


def test_an_unknown_column_only_warns_when_configured_so():
    checked = check(DROPS / "unknown_column.csv", unknown_columns="warn")
    assert list(checked.problems["rule"]) == ["unknown column (warning)"]
    assert checked.rejected_files == []
    with pytest.raises(ValueError, match="unknown_columns"):
        check(DROPS / "good.csv", unknown_columns="sometimes")


def test_two_drops_with_the_same_week_are_refused_together(tmp_path: Path):
    copy = tmp_path / "again.csv"
    copy.write_text((DROPS / "good.csv").read_text())
    checked = sales_contract.check_files(
        [HISTORY], [DROPS / "good.csv", copy], root=PROJECT_ROOT, today=TODAY
    )
    duplicate = checked.problems[checked.problems["rule"] == "duplicate key"]
    assert len(duplicate) == 1 and "good.csv" in duplicate.iloc[0]["file"]
    assert str(copy) in duplicate.iloc[0]["file"]


# --- intake: an interrupted acceptance is finished, never repeated -----------------------------------------


def test_a_drop_already_accepted_before_a_crash_is_not_seen_again(tmp_path: Path):
    data = DataSpec(new=["data/new/*.csv"], history="data/history", stage="validate")
    for folder in ("data/new", "data/history", "data/accepted/run-1"):
        (tmp_path / folder).mkdir(parents=True)
    content = (DROPS / "good.csv").read_bytes()
    # the crash came after the copy into the history and before the removal from data/new
    (tmp_path / "data/new/sales-2012-04-06.csv").write_bytes(content)
    (tmp_path / "data/history/sales-2012-04-06.csv").write_bytes(content)
    (tmp_path / "data/accepted/run-1/sales-2012-04-06.csv").write_bytes(content)
    other = tmp_path / "data/new/sales-2012-04-13.csv"
    other.write_bytes((DROPS / "gap.csv").read_bytes())

    waiting = intake.waiting(data, tmp_path)

    assert [drop.path for drop in waiting] == [other]
    assert not (tmp_path / "data/new/sales-2012-04-06.csv").exists()
    assert (tmp_path / "data/history/sales-2012-04-06.csv").read_bytes() == content


def test_a_drop_in_the_history_without_its_original_kept_is_not_removed(tmp_path: Path):
    """Without the copy in data/accepted/, removing the drop could lose it: it is left for a person."""
    data = DataSpec(new=["data/new/*.csv"], history="data/history", stage="validate")
    for folder in ("data/new", "data/history"):
        (tmp_path / folder).mkdir(parents=True)
    content = (DROPS / "good.csv").read_bytes()
    (tmp_path / "data/new/sales.csv").write_bytes(content)
    (tmp_path / "data/history/sales.csv").write_bytes(content)
    assert [drop.path.name for drop in intake.waiting(data, tmp_path)] == ["sales.csv"]


def test_only_the_drops_the_data_stage_named_are_refused(tmp_path: Path):
    for folder in ("data/new", "data/history"):
        (tmp_path / folder).mkdir(parents=True)
    drops = []
    for name in ("sales-a.csv", "sales-b.csv"):
        (tmp_path / "data/new" / name).write_text("x\n")
        drops.append(intake.Drop(tmp_path / "data/new" / name, "sha"))
    named = {"rejected_files": ["data/new/sales-b.csv"]}
    assert [drop.path.name for drop in intake._refused(named, drops, tmp_path)] == ["sales-b.csv"]
    # only the history is broken: the new drops are not to blame, they stay where they are
    assert intake._refused({"rejected_files": ["data/history/sales.csv"]}, drops, tmp_path) == []
    # a data stage that says nothing about files: none of the new data may reach training
    assert intake._refused({}, drops, tmp_path) == drops
