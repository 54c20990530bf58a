"""Tests for runner/report/pages.py: run.json, the run index, the history of runs, stage pages, the step
summary."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell

from runner.files import atomic_write_text
from runner.records import RunRecord
from runner.report.markdown import step_summary
from runner.report.outcome import outcome_of
from runner.report.pages import (
    render_history_index,
    render_run_index,
    render_stage_html,
    write_run_json,
    write_step_summary,
)
from runner.secrets import NO_SECRETS
from tests import outcome_records as outcomes
from tests.conftest import PLOT, STAGES, execute_cells, failed_run, gate_failed_run, succeeded_run

LOADING_TAGS = {"script", "link", "img", "iframe", "source", "video", "audio", "embed", "object", "input"}


# --- records built by hand: tests/conftest.py ---------------------------------------------------------------


# --- helpers ------------------------------------------------------------------------------------------------


class _Page(HTMLParser):
    """Collects what a browser would fetch, and the <details> elements, of one page."""

    def __init__(self) -> None:
        super().__init__()
        self.fetches: list[str] = []
        self.details: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in LOADING_TAGS:
            self.fetches += [
                value or "" for name, value in attrs if name in ("src", "href", "srcset", "data")
            ]
        if tag == "details":
            self.details.append(dict(attrs))


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def assert_offline(html: str) -> None:
    remote = [url for url in parse(html).fetches if re.match(r"(?i)\s*(https?:)?//", url)]
    assert remote == [], f"page would fetch from another host: {remote}"
    assert not re.search(r"(?i)@import|url\(\s*['\"]?(https?:)?//", html)


def text_of(html: str) -> str:
    """The page's text with tags removed and whitespace collapsed, for sentence assertions."""
    inline_gone = re.sub(r"</?(?:a|b|code|em|span|strong)\b[^>]*>", "", html)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", inline_gone))
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


# --- run.json and atomic writes -----------------------------------------------------------------------------


@pytest.mark.unit
def test_run_json_round_trips(tmp_path: Path) -> None:
    for record in (succeeded_run(), gate_failed_run(), failed_run()):
        path = write_run_json(tmp_path, record, redact=NO_SECRETS)
        data = json.loads(path.read_text(encoding="utf-8"))
        assert data == record.to_json()
        assert RunRecord.from_json(data) == record
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary file left behind


@pytest.mark.unit
def test_run_json_is_what_asdict_gives_made_json_safe() -> None:
    """`to_json` builds the document in one pass (run.json is written after every stage): the same document,
    key order included, as `dataclasses.asdict` made JSON-safe, which it replaced."""

    def safe(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, dict):
            return {str(key): safe(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [safe(item) for item in value]
        return value

    odd = succeeded_run()
    odd.stages["train"].scraps.update(
        {"nan": math.nan, "inf": -math.inf, "pair": (1, 2.5), "nested": {"rows": [{"x": math.inf}], 3: True}}
    )
    records = [odd, gate_failed_run(), failed_run()]
    records += [make() for make in outcomes.OUTCOMES.values()]
    for record in records:
        assert json.dumps(record.to_json(), indent=2) == json.dumps(safe(asdict(record)), indent=2)


@pytest.mark.unit
def test_atomic_write_leaves_no_temp_file_when_replace_fails(tmp_path: Path) -> None:
    target = tmp_path / "index.html"
    target.mkdir()  # os.replace cannot put a file over a directory
    with pytest.raises(OSError):
        atomic_write_text(target, "<p>new</p>", redact=NO_SECRETS)
    assert [p.name for p in tmp_path.iterdir()] == ["index.html"]


# --- the run's index ----------------------------------------------------------------------------------------


@pytest.mark.unit
def test_succeeded_run_index(tmp_path: Path) -> None:
    html = render_run_index(tmp_path, succeeded_run(), redact=NO_SECRETS).read_text(encoding="utf-8")
    text = text_of(html)
    assert "demand-forecast: succeeded" in text and "Every stage passed its gates." in text
    for stage in STAGES:
        assert f'href="{stage}.html"' in html and f'href="{stage}.ipynb"' in html
    assert "kernel 0.7 s · execute 1.6 s · render 0.2 s" in text
    assert "0.0793" in text and "[a, b, c, d, e, … (7 items)]" in text
    assert "errors_by_week table (3 rows)" in text and "errors_split table (2 rows)" in text
    assert "errors_list table (4 rows)" in text and "settings dict (3 keys)" in text
    assert 'class="badge c-green">Succeeded' in html and 'class="badge s-succeeded"' in html
    assert "0123456" in text and "2026-11-26 07:40:12 UTC" in text and "53.2 s" in text
    assert_offline(html)


@pytest.mark.unit
def test_gate_failed_run_index_names_the_gate_and_its_values(tmp_path: Path) -> None:
    record = gate_failed_run()
    html = render_run_index(tmp_path, record, redact=NO_SECRETS).read_text(encoding="utf-8")
    sentence = "Gate `wape <= params.wape_threshold` in stage evaluate: wape = 0.079 > 0.0001."
    assert outcome_of(record).reason == sentence
    text = text_of(html)
    assert sentence in text and "new model refused by `wape <= params.wape_threshold`" in text
    # the gates table: value, threshold (and what it was computed from), margin (negative: failed by), in the
    # key metric's format; no share of a threshold near zero (it would read -78900%)
    assert "0.0790 ≤ 0.0001 params.wape_threshold \u22120.0789" in text
    assert "of threshold" not in text
    assert 'class="badge c-red">Refused: the model' in html and 'class="badge s-gate_failed"' in html
    assert "register notebooks/register.ipynb upstream stage evaluate did not pass its gates" in text
    assert 'href="register.html"' not in html  # a skipped stage has no page to link
    assert_offline(html)


@pytest.mark.unit
def test_failed_run_index_shows_the_error(tmp_path: Path) -> None:
    html = render_run_index(tmp_path, failed_run(), redact=NO_SECRETS).read_text(encoding="utf-8")
    text = text_of(html)
    assert "Stage train failed: ZeroDivisionError: division by zero (in cell [4])." in text
    pre = re.search(r"<pre>(.*?)</pre>", html, re.S)
    assert pre is not None
    assert pre.group(1).splitlines() == ["ZeroDivisionError: division by zero (in cell [4])"]
    assert 'href="train.html#failing-cell"' in html
    assert "evaluate notebooks/evaluate.ipynb upstream train failed" in text
    assert_offline(html)


@pytest.mark.unit
def test_run_index_escapes_what_notebooks_glued(tmp_path: Path) -> None:
    record = succeeded_run()
    record.stages["train"].scraps = {"note": "<script>alert(1)</script>"}
    html = render_run_index(tmp_path, record, redact=NO_SECRETS).read_text(encoding="utf-8")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.unit
@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("cancelled", "Cancelled during stage train."),
        ("running", "Running: 2 of 4 stages done."),
    ],
)
def test_the_reason_of_unfinished_runs(status: str, expected: str) -> None:
    record = succeeded_run()
    record.status = status  # type: ignore[assignment]
    record.stages["train"].status = "running"
    record.stages["evaluate"].status = "pending"
    assert outcome_of(record).reason == expected


@pytest.mark.unit
def test_a_cached_stage_reads_as_reused() -> None:
    record = succeeded_run()
    record.stages["validate"].status = "cached"
    assert outcome_of(record).stages[0].word == "reused from cache"


# --- the history of runs ------------------------------------------------------------------------------------


@pytest.mark.unit
def test_history_lists_runs_newest_first_and_survives_broken_run_json(tmp_path: Path) -> None:
    runs = [failed_run(), succeeded_run(), gate_failed_run()]  # 25th, 26th, 27th of November
    for record in runs:
        run_dir = tmp_path / record.run_id
        write_run_json(run_dir, record, redact=NO_SECRETS)
        render_run_index(run_dir, record, redact=NO_SECRETS)
    half_written = tmp_path / "20261128T074012Z-aaaaaa"
    half_written.mkdir()
    (half_written / "run.json").write_text(json.dumps(succeeded_run().to_json())[:300], encoding="utf-8")
    wrong_shape = tmp_path / "20261129T074012Z-bbbbbb"
    wrong_shape.mkdir()
    (wrong_shape / "run.json").write_text("[1, 2, 3]", encoding="utf-8")
    (tmp_path / "20261130T074012Z-cccccc").mkdir()  # a run that has not written run.json yet: not listed

    render_history_index(tmp_path, redact=NO_SECRETS)
    # again, with reports/index.html there
    html = render_history_index(tmp_path, redact=NO_SECRETS).read_text(encoding="utf-8")

    links = re.findall(r'href="([^"]+)/index.html"', html)
    assert links == ["20261127T074012Z-d4e5f6", "20261126T074012Z-a1b2c3", "20261125T074012Z-0f0f0f"]
    assert "20261128T074012Z-aaaaaa/run.json" in html and "20261129T074012Z-bbbbbb/run.json" in html
    assert "20261130T074012Z-cccccc" not in html
    assert '<th class="num">WAPE</th>' in html and "0.0790" in html and "0.0793" in html
    assert "demand-forecast: runs" in html
    assert_offline(html)


@pytest.mark.unit
def test_history_of_an_empty_reports_folder(tmp_path: Path) -> None:
    html = render_history_index(tmp_path, redact=NO_SECRETS).read_text(encoding="utf-8")
    assert "No run has written a run.json yet, and the MLflow store knows of none." in html


# --- step summary -------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_summary_markdown_of_a_gate_failure() -> None:
    record = gate_failed_run()
    record.stages["evaluate"].gates[0].expr = "a | b"  # a pipe must not break the table
    markdown = step_summary(outcome_of(record))
    lines = markdown.splitlines()
    headline = "new model refused by `a \\| b`, WAPE 0.0790; no model is registered by this pipeline"
    assert lines[0] == f"### 🚧 demand-forecast: {headline}"
    assert "| evaluate | refused by a gate | 2.5 s | 0/1 passed |" in lines
    assert "| register | skipped | \u2013 | \u2013 |" in lines
    assert "- evaluate: `a | b`: wape = 0.079 > 0.0001" in lines


@pytest.mark.unit
def test_step_summary_appends(tmp_path: Path) -> None:
    path = tmp_path / "summary.md"
    path.write_text("earlier step\n", encoding="utf-8")
    write_step_summary(failed_run(), path, redact=NO_SECRETS)
    write_step_summary(succeeded_run(), path, redact=NO_SECRETS)
    content = path.read_text(encoding="utf-8")
    assert content.startswith("earlier step\n### ❌ demand-forecast: failed")
    assert "```text\nZeroDivisionError: division by zero (in cell [4])\n```" in content
    assert "### ✅ demand-forecast: succeeded" in content


# --- stage pages: real notebooks, executed as the runner does ------------------------------------------


@pytest.fixture(scope="module")
def plots_notebook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cells = [
        new_code_cell("n_points = 50", metadata={"tags": ["parameters"]}),
        new_markdown_cell(
            "# Evaluate\nErrors by week. ![logo](https://example.com/logo.png) [docs](https://example.com)"
        ),
        new_code_cell(
            "import matplotlib.pyplot as plt\nimport numpy as np\nimport pandas as pd\nimport scrapbook as sb"
        ),
        *[new_code_cell(PLOT.format(k=k)) for k in range(1, 5)],
        new_code_cell(
            "sb.glue('wape', 0.0793)\nsb.glue('label', 'ok')\nsb.glue('errors', pd.DataFrame({'w': [1, 2]}))"
        ),
        new_code_cell("pd.DataFrame({'week': [1, 2], 'wape': [0.1, 0.2]})", metadata={"tags": ["show-code"]}),
        new_code_cell("secret_token = 'do-not-show'", metadata={"tags": ["remove-cell"]}),
    ]
    return execute_cells(tmp_path_factory.mktemp("plots"), "evaluate", cells, {"n_points": 200})


@pytest.fixture(scope="module")
def failing_notebook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cells = [
        new_code_cell("divisor = 1", metadata={"tags": ["parameters"]}),
        new_code_cell("print('\\x1b[31mcoloured\\x1b[0m output')"),
        new_code_cell("def train(d):\n    return 1 / d\n\ntrain(divisor)"),
    ]
    return execute_cells(tmp_path_factory.mktemp("failing"), "train", cells, {"divisor": 0})


@pytest.mark.kernel
def test_stage_page_with_four_plots_is_small_self_contained_and_hides_code(plots_notebook: Path) -> None:
    html_path = plots_notebook.with_suffix(".html")
    render_stage_html(plots_notebook, html_path, title="demand-forecast · evaluate", redact=NO_SECRETS)
    html = html_path.read_text(encoding="utf-8")

    assert html_path.stat().st_size < 300_000
    assert html.count('src="data:image/png;base64,') == 4
    assert "application/scrapbook" not in html and "scrapbook.scrap" not in html
    assert "do-not-show" not in html  # remove-cell
    assert_offline(html)
    assert 'href="https://example.com"' in html  # a link is not a request; the remote image is blocked
    assert 'data-blocked-src="https://example.com/logo.png"' in html
    details = parse(html).details
    assert len(details) == 8  # parameters, imports, 4 plots, glue, the table
    assert [d for d in details if "open" in d] == [details[-1]]  # only the cell tagged show-code
    assert re.search(r"<details class=\"input\">\s*<summary>code</summary>", html)
    params = re.search(r"<h2>Parameters of this run</h2>(.*?)</section>", html, re.S)
    assert params is not None and "n_points" in text_of(params.group(1)) and "200" in params.group(1)
    assert 'href="evaluate.ipynb"' in html and "<title>demand-forecast · evaluate</title>" in html
    assert len(re.findall(r"^\.highlight \.", html, re.M)) < 20  # only the pygments rules in use


@pytest.mark.kernel
def test_stage_page_show_code_opens_every_cell(plots_notebook: Path, tmp_path: Path) -> None:
    html_path = tmp_path / "evaluate.html"
    render_stage_html(plots_notebook, html_path, title="evaluate", show_code=True, redact=NO_SECRETS)
    details = parse(html_path.read_text(encoding="utf-8")).details
    assert details and all("open" in d for d in details)


@pytest.mark.kernel
def test_stage_page_of_a_failed_notebook_shows_a_readable_traceback(failing_notebook: Path) -> None:
    html_path = failing_notebook.with_suffix(".html")
    render_stage_html(failing_notebook, html_path, title="demand-forecast · train", redact=NO_SECRETS)
    html = html_path.read_text(encoding="utf-8")

    stdout = re.search(r'<div class="[^"]*output_stdout[^"]*"><pre>(.*?)</pre>', html, re.S)
    assert stdout is not None and stdout.group(1) == "coloured output\n"
    assert "\x1b" not in html  # the escape character itself (the cell's source spells it as text)
    error = re.search(r'<div class="output_subarea output_text output_error"><pre>(.*?)</pre>', html, re.S)
    assert error is not None and "ZeroDivisionError: division by zero" in error.group(1)
    assert 'id="failing-cell"' in html
    failing_cell = re.search(
        r'<details class="input" open(="")?>\s*<summary>code</summary>(.*?)</details>', html, re.S
    )
    assert failing_cell is not None and "train" in text_of(failing_cell.group(2))
    assert "stopped by an error" in html
    assert_offline(html)


@pytest.mark.unit
def test_a_cached_stage_names_the_run_it_comes_from(tmp_path: Path) -> None:
    record = succeeded_run()
    stage = next(iter(record.stages.values()))
    stage.status, stage.cached_from = "cached", "20261120T060000Z-000001"
    html = render_run_index(tmp_path, record, redact=NO_SECRETS).read_text(encoding="utf-8")
    assert 'reused from run <a href="../20261120T060000Z-000001/index.html">' in html
