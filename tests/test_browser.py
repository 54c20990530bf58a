"""The report pages in a real browser: headless Chromium opens the history page, a run page and a stage page
from file:// with the network disabled, and the test checks the rendered DOM, the console and every request.

Chromium comes from the system (`make install-test` installs Debian's `chromium` when it is missing and can;
the tests are skipped, saying why, when there is none). Network off: every host resolves to nothing and the
proxy is a closed port. Requests are read from Chromium's NetLog (`--log-net-log`), console messages from its
log; a control page that does load a remote image and log an error shows that both checks do see them.
Screenshots at 1280 px wide go to test-artifacts/ (the CI uploads that folder).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell

from runner.production.registry import Version
from runner.records import GateResult, ModelRecord
from runner.report.history import Remembered
from runner.report.pages import render_history_index, render_run_index, render_stage_html, write_run_json
from runner.secrets import NO_SECRETS
from tests.conftest import PLOT, PROJECT_ROOT, execute_cells, failed_run, gate_failed_run, succeeded_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
# Chromium's own background services (updates, accounts, time): requests of the browser, not of the page.
BROWSER_HOSTS = re.compile(r"^https?://([\w.-]+\.)?(google\.com|googleapis\.com|gvt1\.com|gstatic\.com)[:/]")

pytestmark = [
    pytest.mark.e2e,  # headless Chromium, and an executed notebook
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no chromium on PATH: `make install-test` installs it (needs root and apt-get)",
    ),
]


@dataclass
class Opened:
    dom: str
    console: list[str]
    requests: list[str]  # every URL the page asked for that is not a file:// URL


def open_page(page: Path, screenshot: Path | None, tmp_path: Path, height: int = 2400) -> Opened:
    """Open `page` in headless Chromium with the network disabled: its DOM, console and requests."""
    assert CHROMIUM is not None
    profile, netlog = tmp_path / f"profile-{page.stem}", tmp_path / f"net-{page.parent.name}-{page.stem}.json"
    base = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-sync",
        "--disable-background-networking",
        "--disable-component-update",
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}",
        f"--log-net-log={netlog}",
        "--enable-logging=stderr",
        "--v=0",
        "--hide-scrollbars",
        f"--window-size=1280,{height}",
    ]
    done = subprocess.run(
        [*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    urls = set(re.findall(r'"url":"([^"]+)"', netlog.read_text(encoding="utf-8", errors="replace")))
    requests = sorted(url for url in urls if not url.startswith("file:") and not BROWSER_HOSTS.match(url))
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        shot = subprocess.run(
            [*base, f"--screenshot={screenshot}", page.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert shot.returncode == 0 and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    return Opened(done.stdout, console, requests)


def text(dom: str) -> str:
    inline_gone = re.sub(r"</?(?:a|b|code|em|span|strong)\b[^>]*>", "", dom)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", inline_gone)).replace("&amp;", "&")


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reports/ folder as three runs and an MLflow store would leave it: run pages, a stage page with four
    plots executed by papermill, and a history that also lists a run known only from the registry."""
    root = tmp_path_factory.mktemp("reports")
    good = succeeded_run()
    good.stages["validate"].scraps.update(
        n_history_rows=791,
        n_new_rows=7,
        n_weeks=114,
        new_weeks=["2012-04-06"],
        max_psi=0.31,
        drift_verdict="drift",
        drift={
            "type": "table",
            "columns": ["feature", "kind", "psi", "ks_pvalue", "verdict"],
            "rows": [
                ["Temperature", "numeric", 0.31, 0.002, "drift"],
                ["Dept", "category", 0.01, "nan", "ok"],
            ],
            "n_rows": 2,
        },
    )
    good.stages["evaluate"].scraps["forecast_by_week"] = {
        "type": "table",
        "columns": ["week", "actual", "forecast", "champion_forecast"],
        "rows": [["2012-03-02", 400967.6, 390426.6, 395000.0], ["2012-03-09", 403350.0, 384988.6, 380000.0]],
        "n_rows": 2,
    }
    good.stages["evaluate"].gates.append(
        GateResult("wape <= champion.wape * 1.02", True, "passed", {"wape": 0.0793, "champion.wape": 0.081})
    )
    good.model = ModelRecord(
        name="demand-forecast", action="registered", version="2", champion_before="1", champion_after="2",
        promoted=True, detail="registered as version 2; promoted to champion (was 1)",
        metrics={"wape": 0.0793, "mae": 3491.0}, champion_metrics={"wape": 0.081, "mae": 3600.0},
    )  # fmt: skip
    for record in (failed_run(), good, gate_failed_run()):
        run_dir = root / record.run_id
        write_run_json(run_dir, record, redact=NO_SECRETS)
        render_run_index(run_dir, record, redact=NO_SECRETS)
    cells = [
        new_code_cell("n_points = 50", metadata={"tags": ["parameters"]}),
        new_markdown_cell("# Evaluate\nForecast errors, week by week."),
        new_code_cell("import matplotlib.pyplot as plt\nimport numpy as np"),
        *[new_code_cell(PLOT.format(k=k)) for k in range(1, 5)],
    ]
    executed = execute_cells(root / good.run_id, "evaluate", cells, {"n_points": 200})
    render_stage_html(
        executed, executed.with_suffix(".html"), title="demand-forecast · evaluate", redact=NO_SECRETS
    )
    old = Version(
        name="demand-forecast",
        version="1",
        aliases=("previous",),
        tags={
            "retrain.run_id": "20261120T060000Z-000aaa",
            "retrain.trigger": "schedule",
            "retrain.promoted": "2026-11-20T06:01:00+00:00 by run 20261120T060000Z-000aaa",
            "metric.wape": "0.081",
        },
        created_at="2026-11-20T06:01:00+00:00",
        source="models:/m-1",
    )
    render_history_index(root, known=Remembered(versions=[old]), redact=NO_SECRETS)
    return root


def test_history_page_in_a_browser(reports: Path, tmp_path: Path) -> None:
    opened = open_page(reports / "index.html", ARTIFACTS / "history.png", tmp_path, height=1300)
    shown = text(opened.dom)
    assert opened.console == [] and opened.requests == []
    assert "4 runs, newest first; 1 known only from the MLflow store" in shown
    assert "20261120T060000Z-000aaa" in shown and "from MLflow: registered v1; promoted to champion" in shown
    assert "0.0793" in shown and "-0.0017" in shown  # the metric and its change against the run before
    assert opened.dom.count("<svg") == 2  # the metric across runs and across registered versions
    assert 'id="status-gate_failed"' in opened.dom and 'id="trigger-schedule"' in opened.dom


def test_run_page_in_a_browser(reports: Path, tmp_path: Path) -> None:
    page = reports / "20261126T074012Z-a1b2c3" / "index.html"
    opened = open_page(page, ARTIFACTS / "run.png", tmp_path)
    shown = text(opened.dom)
    assert opened.console == [] and opened.requests == []
    assert "Promoted: demand-forecast v2 is the new champion (was v1); every gate passed." in shown
    assert "0.0793 ≤ 0.15 +0.0707 +47.1% of threshold" in shown  # value, threshold, margin
    assert "≤ 0.08262 champion.wape * 1.02 +0.00332 +4.0% of threshold" in shown
    assert "history rows 791 new rows 7 weeks 114 new weeks 1 (2012-04-06)" in shown
    assert "largest PSI 0.31" in shown and "Temperature numeric 0.31 0.002 drift" in shown
    assert "this run (v2)" in shown and "champion (v1)" in shown and "400k" in shown  # the overlay's axis
    assert 'href="evaluate.html"' in opened.dom and 'href="evaluate.ipynb"' in opened.dom


def test_stage_page_in_a_browser(reports: Path, tmp_path: Path) -> None:
    page = reports / "20261126T074012Z-a1b2c3" / "evaluate.html"
    opened = open_page(page, ARTIFACTS / "stage.png", tmp_path)
    assert opened.console == [] and opened.requests == []
    assert opened.dom.count('src="data:image/png;base64,') == 4
    assert "Parameters of this run" in opened.dom and "n_points" in opened.dom


def test_the_checks_see_a_remote_request_and_a_console_error(tmp_path: Path) -> None:
    page = tmp_path / "control.html"
    page.write_text('<img src="http://example.com/x.png"><script>console.error("boom")</script>')
    opened = open_page(page, None, tmp_path)
    assert opened.requests == ["http://example.com/x.png"]
    assert len(opened.console) == 1 and '"boom"' in opened.console[0]
