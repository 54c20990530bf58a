"""The report pages in a real browser: headless Chromium opens the history page, a run page and a stage page
from file:// with the network disabled, and the test checks the rendered DOM, the console and every request.

Chromium comes from the system (`make install-test` installs Debian's `chromium` when it is missing and can;
the tests are skipped, saying why, when there is none). Network off: every host resolves to nothing and the
proxy is a closed port. Requests are read from Chromium's NetLog (`--log-net-log`), console messages from its
log; a control page that does load a remote image and log an error shows that both checks do see them.
Screenshots at 1280 px wide go to test-artifacts/ (the CI uploads that folder). The history and a run page
per outcome (tests/outcome_records.py) are also laid out at 1280 and 400 px (a phone): the banner's colour is
the outcome's, nothing but a scroll container is wider than the screen, chart text stays legible; their
screenshots go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import json
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
from runner.report.outcome import WORDS
from runner.report.pages import render_history_index, render_run_index, render_stage_html, write_run_json
from runner.secrets import NO_SECRETS
from tests import outcome_records
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


def open_page(
    page: Path,
    screenshot: Path | None,
    tmp_path: Path,
    height: int = 2400,
    width: int = 1280,
    extra: tuple[str, ...] = (),
) -> Opened:
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
        f"--window-size={width},{height}",
        *extra,
    ]
    # one browser for the DOM and the screenshot: headless Chromium does both once the page has loaded (a
    # second start of the browser per page was half of this file's time)
    shoot: list[str] = []
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.unlink(missing_ok=True)  # the size check below reads this run's screenshot, not an old one
        shoot = [f"--screenshot={screenshot}"]
    done = subprocess.run(
        [*base, "--dump-dom", *shoot, page.as_uri()], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    urls = set(re.findall(r'"url":"([^"]+)"', netlog.read_text(encoding="utf-8", errors="replace")))
    requests = sorted(url for url in urls if not url.startswith("file:") and not BROWSER_HOSTS.match(url))
    if screenshot is not None:
        assert screenshot.is_file() and screenshot.stat().st_size > 10_000, done.stderr[-2000:]
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
    assert "20261120T060000Z-000aaa" in shown
    assert "Promoted From MLflow: registered v1; promoted to champion" in shown
    assert "0.0793" in shown and "\u22120.0017" in shown  # the metric and its change against the champion
    assert opened.dom.count("<svg") == 2  # the metric across runs and across registered versions
    assert 'id="status-gate_failed"' in opened.dom and 'id="trigger-schedule"' in opened.dom


def test_run_page_in_a_browser(reports: Path, tmp_path: Path) -> None:
    page = reports / "20261126T074012Z-a1b2c3" / "index.html"
    opened = open_page(page, ARTIFACTS / "run.png", tmp_path)
    shown = text(opened.dom)
    assert opened.console == [] and opened.requests == []
    assert "✅ demand-forecast v2 retrained and deployed, WAPE 0.0793 (was 0.0810)" in shown
    assert "0.0793 ≤ 0.1500 +0.0707 +47.1% of threshold" in shown  # value, threshold, margin
    assert "≤ 0.0826 champion.wape * 1.02 +0.0033 +4.0% of threshold" in shown
    assert "history rows 791 new rows 7 weeks 114 new weeks 1 (2012-04-06)" in shown
    assert "largest PSI 0.31" in shown
    assert "Temperature drift 0.31 KS 0.002 numeric" in shown  # an older run's table: no weight, KS named
    assert "this run (v2)" in shown and "champion (v1)" in shown and "400k" in shown  # the overlay's axis
    assert 'href="evaluate.html"' in opened.dom and 'href="evaluate.ipynb"' in opened.dom


def test_stage_page_in_a_browser(reports: Path, tmp_path: Path) -> None:
    page = reports / "20261126T074012Z-a1b2c3" / "evaluate.html"
    opened = open_page(page, ARTIFACTS / "stage.png", tmp_path)
    assert opened.console == [] and opened.requests == []
    assert opened.dom.count('src="data:image/png;base64,') == 4
    assert "Parameters of this run" in opened.dom and "n_points" in opened.dom
    on_a_phone = laid_out(page, tmp_path, 400, SHOTS / "stage-400.png")
    assert on_a_phone["page"] <= 400 and on_a_phone["outside"] == [], on_a_phone  # plots shrink to fit


def test_the_checks_see_a_remote_request_and_a_console_error(tmp_path: Path) -> None:
    page = tmp_path / "control.html"
    page.write_text('<img src="http://example.com/x.png"><script>console.error("boom")</script>')
    opened = open_page(page, None, tmp_path)
    assert opened.requests == ["http://example.com/x.png"]
    assert len(opened.console) == 1 and '"boom"' in opened.console[0]


# --- every outcome at a desktop's and a phone's width -------------------------------------------------------
SHOTS = ARTIFACTS / "screenshots"
COLOURS = {  # the banner's colour per outcome: the same on every surface (runner/report/outcome.py)
    "promoted": "green",
    "promoted_worse": "amber",
    "held": "amber",
    "refused_data": "red",
    "refused_model": "red",
    "failed": "red",
    "cancelled": "grey",
}
SHOT_NAMES = {"promoted_worse": "amber", "refused_data": "quarantined"}  # the names the issue reads them by
WIDTHS = (1280, 400)
# Headless Chromium lays a window out at least 500 px wide: a phone's 400 px is an <iframe> of that width in
# a page of its own (FRAME). MEASURE, injected into a copy of the page, reports its layout to the frame's
# page, which --dump-dom then shows: the banner's and the badges' classes, and where
# the layout overflows the screen. An element inside a container that scrolls or clips sideways (a table's
# .scroll, a chart, a <pre>) may be wider than the screen; any other may not.
FRAME = """<!DOCTYPE html><html><head><meta charset="utf-8"><style>body{{margin:0}}
iframe{{border:0;display:block;width:{width}px;height:{height}px}}</style></head><body>
<iframe src="{page}"></iframe><pre id="measured"></pre>
<script>addEventListener("message", (e) => {{ document.getElementById("measured").textContent = e.data; }});
</script></body></html>"""
MEASURE = """<script>
addEventListener("load", () => {
  const screen = document.documentElement.clientWidth;
  const clipped = (el) => {
    for (let up = el.parentElement; up && up !== document.body; up = up.parentElement) {
      if (getComputedStyle(up).overflowX !== "visible") return true;
    }
    return false;
  };
  const outside = [];
  for (const el of document.body.querySelectorAll("*")) {
    if (el.tagName === "SCRIPT" || clipped(el)) continue;
    const box = el.getBoundingClientRect();
    if (box.width && box.right > screen + 1) outside.push(`${el.tagName.toLowerCase()}.${el.className}`);
  }
  const texts = [...document.querySelectorAll("figure.chart svg text")];
  const rows = [...document.querySelectorAll("table.history tbody tr")];
  parent.postMessage(JSON.stringify({
    screen, page: document.documentElement.scrollWidth, outside: outside.slice(0, 10),
    banner: document.querySelector(".decision")?.className ?? null,
    badges: [...document.querySelectorAll("h1 .badge, table.history .badge")].map(
      (b) => [b.className, b.textContent.trim()]),
    chart_text_px: texts.length ? Math.min(...texts.map((t) => t.getBoundingClientRect().height)) : null,
    row_px: rows.length ? Math.max(...rows.map((r) => r.getBoundingClientRect().height)) : null,
    scrolling: [...document.querySelectorAll(".scroll, figure.chart")].filter(
      (box) => box.scrollWidth > box.clientWidth + 1).map((box) => box.firstElementChild.className),
  }), "*");
});
</script>"""


def drifted(record):
    """The promoted run with what its validate stage measured and its forecasts, as the demo records them."""
    columns = ["feature", "kind", "weight", "trending", "psi", "test", "pvalue", "verdict"]
    rows = [
        ["Weekly_Sales", "numeric", 0.81, False, 0.12, "KS", 0.21, "warn"],
        ["CPI", "numeric", 0.02, True, 4.31, "KS", 0.0, "trend"],
        ["Fuel_Price", "numeric", 0.01, True, 1.92, "KS", 0.0, "trend"],
        ["Temperature", "numeric", 0.03, False, 0.05, "KS", 0.62, "ok"],
        ["Dept", "category", 0.09, False, 0.0, "chi-square", 1.0, "ok"],
    ]
    record.stages["validate"].scraps.update(
        n_history_rows=791,
        n_new_rows=7,
        n_weeks=114,
        new_weeks=["2012-04-06"],
        drift={"type": "table", "columns": columns, "rows": rows, "n_rows": len(rows)},
        drift_verdict="warn",
        max_psi=0.12,
        drift_weighing="Features weighed by the champion's feature importance (version 12, as its training"
        " recorded it).",
    )
    weeks = ["2012-02-10", "2012-02-17", "2012-02-24", "2012-03-02", "2012-03-09", "2012-03-16"]
    record.stages["evaluate"].scraps["predictions"] = {
        "type": "table",
        "columns": ["period", "actual", "prediction", "champion"],
        "rows": [[week, 400e3 + 9e3 * k, 396e3 + 8e3 * k, 391e3 + 9.5e3 * k] for k, week in enumerate(weeks)],
        "n_rows": len(weeks),
    }
    return record


@pytest.fixture(scope="module")
def outcome_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A reports/ folder with one run per outcome, a day apart, and their history; the pages by outcome."""
    root = tmp_path_factory.mktemp("outcomes")
    pages = {}
    for day, (state, make) in enumerate(outcome_records.OUTCOMES.items(), start=19):
        record = make()
        record.run_id = f"202611{day}T074012Z-{day:02d}a1b2"
        record.started_at = f"2026-11-{day}T07:40:12+00:00"
        record.finished_at = f"2026-11-{day}T07:42:03+00:00"
        if state == "promoted":
            drifted(record)
        write_run_json(root / record.run_id, record, redact=NO_SECRETS)
        pages[state] = render_run_index(root / record.run_id, record, redact=NO_SECRETS)
    pages["history"] = render_history_index(root, key=outcome_records.KEY, redact=NO_SECRETS)
    return pages


def laid_out(page: Path, tmp_path: Path, width: int, shot: Path | None = None, height: int = 2400) -> dict:
    """`page` laid out `width` px wide, as MEASURE found it; its screenshot in `shot`, `width` px wide."""
    from PIL import Image

    copy = tmp_path / page.parent.name / page.name  # a copy: the page itself stays without a script
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), "utf-8")
    frame = copy.with_name(f"frame-{width}.html")
    frame.write_text(FRAME.format(width=width, height=height, page=copy.name), encoding="utf-8")
    window = (max(width, 500), height)
    budget = ("--virtual-time-budget=5000",)  # the DOM is dumped once the frame has reported
    opened = open_page(frame, shot, tmp_path, height=window[1], width=window[0], extra=budget)
    assert opened.console == [] and opened.requests == []
    found = re.search(r'<pre id="measured">([^<]+)</pre>', opened.dom)
    assert found, "the measuring script did not report"
    if shot is not None and window[0] != width:
        with Image.open(shot) as image:
            image.crop((0, 0, width, height)).save(shot)
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("state", list(COLOURS))
def test_each_outcome_reads_in_its_colour_on_a_desktop_and_a_phone(
    outcome_reports: dict[str, Path], tmp_path: Path, state: str, width: int
) -> None:
    shot = SHOTS / f"{SHOT_NAMES.get(state, state)}-{width}.png"
    found = laid_out(outcome_reports[state], tmp_path, width, shot)
    colour, word = COLOURS[state], WORDS[state][0]
    assert found["banner"] == f"outcome decision c-{colour}", found
    assert found["badges"] == [[f"badge c-{colour}", word]], found
    assert found["screen"] == width and found["page"] <= width, found  # the page never scrolls sideways
    assert found["outside"] == [], found  # only scroll containers may hold what is wider than the screen
    if width >= 1280:
        assert found["scrolling"] == [], found  # on a desktop every table and chart fits the page
    if found["chart_text_px"] is not None:
        assert found["chart_text_px"] >= 9, found  # a chart's smallest text, as drawn at this width


@pytest.mark.parametrize("width", WIDTHS)
def test_the_history_scans_on_a_desktop_and_a_phone(
    outcome_reports: dict[str, Path], tmp_path: Path, width: int
) -> None:
    found = laid_out(outcome_reports["history"], tmp_path, width, SHOTS / f"history-{width}.png", height=1600)
    assert found["screen"] == width and found["page"] <= width and found["outside"] == [], found
    assert found["scrolling"] == [] or width < 1280, found
    assert found["chart_text_px"] >= 9, found
    assert found["row_px"] <= 60, found  # one run, one line (two at most, on a phone's narrow column)
    words = {(badge, word) for badge, word in found["badges"]}
    assert words == {(f"badge c-{colour}", WORDS[state][0]) for state, colour in COLOURS.items()}, found
