"""New data through the real pipeline: a bad drop halts at validate and goes to quarantine, a good one joins
the history, nothing a user committed is lost, and production never changes on bad data.

The drops are the fixtures in tests/assets/drops/, made from the week after the demo's history (2012-04-06).
Two bad drops go through a whole run here: one the contract cannot read as text (binary), and one whose rule
needs the project's history (a week already in it). Every kind of bad drop (latin-1 among them) goes through
the contract, the scraps, the gate, the log and the quarantine in tests/test_data_contract.py: past the
contract, the run's path (validate's gate, the quarantine, production untouched) is the same for every rule.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from runner.commands import main
from runner.engine.config import load_pipeline
from runner.production import lifecycle
from tests.conftest import ON_THE_DEMO, PROJECT_ROOT, copy_project

# the module's runs share one trained project (a copy of the session's demo): one worker runs them all
pytestmark = [pytest.mark.e2e, ON_THE_DEMO]

DROPS = PROJECT_ROOT / "tests" / "assets" / "drops"
# fixture, the rule it breaks, what the message says about where (line, column, value)
BAD_DROPS = [
    ("binary.csv", "binary", "NUL byte at offset 8"),
    ("overlaps_history.csv", "already in history", "line 2: '2012-03-30'"),
]


@pytest.fixture(scope="module")
def project(demo_first_run: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo with a champion (one full run on the history), so that bad data can threaten it."""
    root, result = demo_first_run
    assert result["code"] == 0, result["output"][-3000:]
    return copy_project(root, tmp_path_factory.mktemp("intake") / "project")


def champion(root: Path) -> str | None:
    found = lifecycle.open_registry(load_pipeline(root / "pipeline.yaml")).champion_fast()
    return found.version if found else None


def digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def latest_record(root: Path) -> dict:
    run_dir = max(path for path in (root / "reports").iterdir() if path.is_dir())
    return json.loads((run_dir / "run.json").read_text())


@pytest.mark.parametrize(("fixture", "rule", "where"), BAD_DROPS, ids=[case[0] for case in BAD_DROPS])
def test_a_bad_drop_halts_at_validate_and_is_quarantined(project: Path, capsys, fixture, rule, where):
    before_champion, before_history = champion(project), digests(project / "data" / "history")
    drop = project / "data" / "new" / f"sales-{fixture}"
    shutil.copy(DROPS / fixture, drop)
    original = drop.read_bytes()

    code = main(["run", str(project / "pipeline.yaml")])

    out = capsys.readouterr().out
    assert code == 3, out
    record = latest_record(project)
    stages = record["stages"]
    assert stages["validate"]["status"] == "gate_failed"
    assert all(stages[name]["status"] == "skipped" for name in ("features", "train", "evaluate", "deploy"))
    # the log names the file, the rule and where in the file
    lines = [line for line in out.splitlines() if f"data/new/sales-{fixture}" in line]
    assert lines and rule in lines[0] and where in lines[0], out[-1500:]
    # the drop moved whole to data/quarantine/<run_id>/, beside the reasons; nothing else moved
    folder = project / "data" / "quarantine" / record["run_id"]
    assert (folder / drop.name).read_bytes() == original
    assert not drop.exists()
    reason = (folder / "REASON.md").read_text()
    assert f"data/new/{drop.name}" in reason and rule in reason
    assert json.loads((folder / "reason.json").read_text())["files"] == [f"data/new/{drop.name}"]
    assert record["data"]["action"] == "quarantined"
    # the last lines: the headline, the broken rule with its file, where the report is
    headline, reason, _ = out.strip().splitlines()[-3:]
    assert "quarantined" in headline and drop.name in reason and rule in reason, out[-1500:]
    # production and the history are untouched
    assert champion(project) == before_champion is not None
    assert digests(project / "data" / "history") == before_history


def test_a_good_drop_joins_the_history_and_its_original_is_kept(project: Path, capsys):
    history_before = digests(project / "data" / "history")
    drop = project / "data" / "new" / "sales-2012-04-06.csv"
    shutil.copy(DROPS / "good.csv", drop)
    original = drop.read_bytes()

    code = main(["run", str(project / "pipeline.yaml")])

    out = capsys.readouterr().out
    assert code == 0, out[-2000:]
    record = latest_record(project)
    assert record["data"]["action"] == "accepted"
    assert (project / "data" / "accepted" / record["run_id"] / drop.name).read_bytes() == original
    assert (project / "data" / "history" / drop.name).read_bytes() == original
    assert not drop.exists()
    # append-only: every file the history had is still there, byte for byte
    after = digests(project / "data" / "history")
    assert {name: after[name] for name in history_before} == history_before
    assert record["stages"]["validate"]["scraps"]["n_new_rows"] == 7
    # that the next week's run trains on it (the history now ends on 2012-04-06) is the last test's check: the
    # week after it passes the contract's no-gap rule there


def test_a_scheduled_run_with_nothing_new_retrains_nothing(project: Path, capsys):
    runs_before = sorted((project / "reports").iterdir())
    assert not list((project / "data" / "new").iterdir())

    assert main(["run", "--trigger", "schedule", str(project / "pipeline.yaml")]) == 0

    out = capsys.readouterr().out
    assert "nothing new" in out and "--force" in out
    assert sorted((project / "reports").iterdir()) == runs_before  # no run folder, no kernel


def test_a_run_that_fails_after_validate_keeps_the_drop_where_it_was(project: Path, capsys):
    """A model refused by its gates is not the data's fault: the drop stays in data/new/ for the next run.
    The gate, failed on purpose, is named with its values in the last lines and on the run's page."""
    drop = project / "data" / "new" / "sales-2012-04-13.csv"
    week = (DROPS / "gap.csv").read_text()  # the week of 2012-04-13, which now follows the history
    drop.write_text(week)

    code = main(["run", "-p", "wape_threshold=0.0001", str(project / "pipeline.yaml")])

    out = capsys.readouterr().out
    assert code == 3, out
    last = out.strip().splitlines()[-3:]
    assert any("wape <= params.wape_threshold" in line and "0.0001" in line for line in last), last
    record = latest_record(project)
    assert record["status"] == "gate_failed"
    gate = record["stages"]["evaluate"]["gates"][0]
    assert gate["passed"] is False and gate["values"]["params.wape_threshold"] == 0.0001
    index = (project / "reports" / record["run_id"] / "index.html").read_text()
    assert "Gate `wape &lt;= params.wape_threshold` in stage evaluate" in index
    # the good drop of 2012-04-06 joined the history: this week follows it without a gap (the contract's rule)
    validate = record["stages"]["validate"]
    assert validate["status"] == "succeeded" and validate["scraps"]["n_errors"] == 0
    assert validate["scraps"]["new_weeks"] == ["2012-04-13"]
    assert record["stages"]["evaluate"]["status"] == "gate_failed"
    assert record["data"]["action"] == "kept" and "evaluate" in record["data"]["detail"]
    assert drop.read_text() == week
    assert "New data: kept" in out
