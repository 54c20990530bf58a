"""What a run leaves behind for people: run.json, a page per stage, the run's index, the history of runs,
and the GitHub step summary.

Every page is one self-contained file: inline CSS (`templates/report.css`), images as data URIs, no script,
no request to any other host. Stage pages come from our own light nbconvert template (`templates/stage/`,
built on nbconvert's `basic`); the run index and the history from Jinja2 templates with autoescaping.
Files are written through runner/files.py: atomically, and with the run's secrets redacted; the HTML pages
also lose the machine's absolute paths (runner/scrub.py: `<project>`, `<python>`, `~`), since people read and
publish them. run.json and the executed notebooks keep theirs: the runner reads them back.
"""

from __future__ import annotations

import json
import math
import os
import re
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from runner.files import append_text, atomic_write_text
from runner.project import find_root
from runner.records import KeyMetric, RunRecord
from runner.report.numbers import Numbers
from runner.scrub import MachinePaths
from runner.secrets import Redactor

if TYPE_CHECKING:
    from runner.report.history import Remembered

TEMPLATES_DIR = Path(__file__).parent / "templates"
STAGE_TEMPLATE = "stage"
SCRAP_MIMETYPE_PREFIX = "application/scrapbook.scrap."
_PYGMENTS_MARKER = "/* pygments */"
_PYGMENTS_STYLE = "default"
# A tag that would make a browser fetch something from another host (scheme-relative URLs included).
_REMOTE_LOAD = re.compile(
    r"(<(?:img|script|iframe|link|source|video|audio|embed|input)\b[^>]*?\s)(src|href|srcset)(\s*=\s*[\"']?)"
    r"(?=(?:https?:)?//)",
    re.IGNORECASE,
)
_STATUS_ICON = {"succeeded": "✅", "failed": "❌", "gate_failed": "🚧", "cancelled": "⏹️", "running": "⏳"}


# --- run.json -----------------------------------------------------------------------------------------------
def write_run_json(run_dir: Path, record: RunRecord, *, redact: Redactor) -> Path:
    """Write `<run_dir>/run.json` from the record, secrets redacted; returns its path."""
    path = run_dir / "run.json"
    atomic_write_text(path, json.dumps(record.to_json(), indent=2) + "\n", redact=redact)
    return path


# --- stage pages --------------------------------------------------------------------------------------------
RUN_CRUMBS = (("This run", "index.html"), ("All runs", "../index.html"))  # a stage page's links


def render_stage_html(
    executed_notebook: Path,
    html_path: Path,
    *,
    title: str,
    redact: Redactor,
    show_code: bool = False,
    crumbs: tuple[tuple[str, str], ...] = RUN_CRUMBS,
) -> None:
    """Render an executed stage notebook as a light, self-contained HTML page.

    Code cells sit in closed `<details>` (open with `show_code`, the `show-code` tag, or when the cell
    raised); tags `remove-cell`, `remove-input`, `remove-output` remove what they say; scrap outputs are
    dropped; papermill's injected parameters appear as a visible "Parameters of this run" block.
    """
    import nbformat  # nbformat and nbconvert are imported when used: nbconvert alone costs ~0.4 s

    notebook = nbformat.read(executed_notebook, as_version=4)
    _prepare_notebook(notebook, show_code=show_code)
    resources = {
        "metadata": {"name": executed_notebook.stem, "path": str(executed_notebook.parent)},
        "report": {
            "title": title,
            "css": (TEMPLATES_DIR / "report.css").read_text(encoding="utf-8"),
            "notebook_href": Path(os.path.relpath(executed_notebook, html_path.parent)).as_posix(),
            "facts": _notebook_facts(notebook.metadata),
            "crumbs": crumbs,  # links above the title, relative to the page
        },
    }
    html, _ = _stage_exporter().from_notebook_node(notebook, resources=resources)
    html = _REMOTE_LOAD.sub(r"\1data-blocked-\2\3", html)
    html = _unwrap_plain_tokens(html)
    html = html.replace(_PYGMENTS_MARKER, _pygments_css(html), 1)
    atomic_write_text(html_path, html, redact=for_pages(redact, html_path.parent))


def for_pages(redact: Redactor, folder: Path) -> Redactor:
    """`redact` that also replaces the machine's paths (runner/scrub.py), for a page written in `folder`: the
    project is the one above it (`redact` already scrubbing is kept as it is)."""
    if redact.paths is not None:
        return redact
    try:
        root: Path | None = find_root(folder)
    except FileNotFoundError:
        root = None
    return redact.scrubbing(MachinePaths.of(root, html=True))


def _prepare_notebook(notebook: Any, *, show_code: bool) -> None:
    """Drop scrap outputs and empty cells; mark the code cells whose source the page shows open."""
    kept = []
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [out for out in cell.outputs if not _is_scrap(out)]
            if not cell.source.strip() and not cell.outputs:
                continue
            raised = any(out.output_type == "error" for out in cell.outputs)
            tags = cell.metadata.setdefault("tags", [])
            if (show_code or raised) and "show-code" not in tags:
                tags.append("show-code")
        kept.append(cell)
    notebook.cells = kept


def _is_scrap(output: Any) -> bool:
    return any(mimetype.startswith(SCRAP_MIMETYPE_PREFIX) for mimetype in output.get("data", {}))


@lru_cache(maxsize=1)
def _stage_exporter() -> Any:
    """One exporter per process: compiling its templates costs ~60 ms, a render ~40 ms (filters that depend
    on the notebook, such as its lexer, are registered again by every `from_notebook_node`)."""
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    config = Config()
    config.TagRemovePreprocessor.enabled = True
    config.TagRemovePreprocessor.remove_cell_tags = {"remove-cell"}
    config.TagRemovePreprocessor.remove_input_tags = {"remove-input"}
    config.TagRemovePreprocessor.remove_all_outputs_tags = {"remove-output"}
    config.CSSHTMLHeaderPreprocessor.enabled = False  # we inline only the pygments rules a page uses
    exporter = HTMLExporter(
        config=config,
        template_name=STAGE_TEMPLATE,
        extra_template_basedirs=[str(TEMPLATES_DIR)],
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    # compiling its chain of templates took ~75 ms of CPU in each process that renders a page: kept as
    # bytecode like ours (0.445 -> 0.370 s for the first page of a process)
    exporter.environment.bytecode_cache = jinja2.FileSystemBytecodeCache()
    return exporter


def _notebook_facts(metadata: Any) -> list[tuple[str, str]]:
    papermill = metadata.get("papermill", {})
    facts = [("executed", _when(papermill.get("start_time")))]
    if isinstance(papermill.get("duration"), int | float):
        facts.append(("in", _duration(float(papermill["duration"]))))
    if papermill.get("exception"):
        facts.append(("result", "stopped by an error"))
    facts.append(("kernel", str(metadata.get("kernelspec", {}).get("display_name", "unknown"))))
    return facts


def _unwrap_plain_tokens(html: str) -> str:
    """Drop the pygments spans that change nothing on screen: tokens of a class the style leaves unstyled
    (names, punctuation) and whitespace. They were over half the bytes of highlighted code (~30 KB of the
    evaluate stage's page) and the text reads the same without them."""
    plain = _plain_token_classes()
    html = html.replace("<pre><span></span>", "<pre>")  # pygments opens every block with an empty span
    return _TOKEN_SPAN.sub(lambda m: m.group(2) if m.group(1) in plain else m.group(0), html)


_TOKEN_SPAN = re.compile(r'<span class="([\w-]*)">([^<]*)</span>')


@lru_cache(maxsize=1)
def _plain_token_classes() -> frozenset[str]:
    from pygments.formatters import HtmlFormatter
    from pygments.token import STANDARD_TYPES

    rules = HtmlFormatter(style=_PYGMENTS_STYLE).get_style_defs(".highlight")
    styled = set(re.findall(r"\.highlight \.([\w-]+) \{", rules))
    # whitespace is styled (a colour) but blank: unwrapping it changes nothing either
    return frozenset({*(set(STANDARD_TYPES.values()) - styled - {""}), "w"})


def _pygments_css(html: str) -> str:
    """The pygments rules for the token classes that occur in `html` (a few hundred bytes, not 5 KB)."""
    from pygments.formatters import HtmlFormatter

    used = {name for names in re.findall(r'class="([^"]+)"', html) for name in names.split()}
    rules = []
    for line in HtmlFormatter(style=_PYGMENTS_STYLE).get_style_defs(".highlight").splitlines():
        match = re.match(r"\.highlight \.([\w-]+) \{", line)
        if match and match.group(1) in used:
            rules.append(re.sub(r"\s*/\*.*?\*/\s*$", "", line))
    return "\n".join(rules)


# --- the run's index, the history of runs -------------------------------------------------------------------
def render_run_index(
    run_dir: Path, record: RunRecord, *, redact: Redactor, tracking_uri: str | None = None
) -> Path:
    """Write `<run_dir>/index.html`, the run's story: its outcome (the same one every channel tells), the
    quarantined data, the error, the model against the champion, what changed, gates with margins, data and
    drift, timings, links; returns its path. `tracking_uri` links the MLflow run when it names a server."""
    from runner.report import story
    from runner.report.outcome import facts, outcome_of

    outcome = outcome_of(record)
    numbers = outcome.numbers
    stages = list(record.stages.values())
    longest = max((stage.duration_s for stage in stages), default=0.0)
    failing = record.first_problem
    failing_line = failing.failure.line if failing and failing.failure else None

    def metric_of(left: str) -> str | None:
        """The metric a gate's left side names (`wape`, `evaluate.wape`, `champion.wape`), if any."""
        name = left.rpartition(".")[2]
        return name if name in numbers.shown else None

    def shown(left: str, value: float) -> str:
        metric = metric_of(left)
        return numbers.value(value, metric) if metric else _value(value)

    def margin(left: str, value: float) -> str:
        metric = metric_of(left)
        return numbers.change(value, 0.0, metric) if metric else f"{value:+.4g}"

    return _write_page(
        run_dir / "index.html",
        "run.html.j2",
        redact,
        record=record,
        o=outcome,
        facts=facts(outcome),
        failing_line=failing_line,
        gates=story.gate_rows(record),
        shown=shown,
        margin=margin,
        forecast_chart=story.forecast_chart(record),
        data=story.data_summary(record),
        drift=story.drift_summary(record),
        mlflow=story.mlflow_run(record, tracking_uri),
        longest=longest or 1.0,
        scraps=[(stage.name, key, _value(value)) for stage in stages for key, value in stage.scraps.items()],
    )


def render_history_index(
    reports_dir: Path, *, redact: Redactor, key: KeyMetric | None = None, known: Remembered | None = None
) -> Path:
    """Write `<reports_dir>/index.html`: every run, newest first, one line each (its outcome in a few words,
    the sentence on hover and on a second line, the key metric against the champion's), from the run folders
    and from what MLflow remembers (`known`, see history.py), with the metric across runs and across versions;
    returns its path. A run.json that cannot be read or does not have a run's shape is listed as unreadable,
    never fatal."""
    from runner.report import history

    known = known or history.Remembered()
    records, unreadable = history.read_run_folders(reports_dir)
    key = key or next((record.key_metric for record, _ in reversed(records) if record.key_metric), None)
    numbers = Numbers(key)
    metric = key.name if key else None
    rows = history.build_rows(records, known, metric)
    pipelines = {record.pipeline for record, _ in records}
    newest_first = list(reversed(rows))
    return _write_page(
        reports_dir / "index.html",
        "history.html.j2",
        redact,
        rows=newest_first,
        unreadable=unreadable,
        heading=f"{pipelines.pop()}: runs" if len(pipelines) == 1 else "Runs",
        metric=numbers.title or metric,
        direction=numbers.direction(),
        numbers=numbers,
        show_metric=any(row.metric is not None for row in rows),
        statuses=history.filter_values(rows, "status"),
        triggers=history.filter_values(rows, "trigger"),
        runs_chart=history.runs_chart(rows, metric, numbers.title) if metric else "",
        versions_chart=history.versions_chart(known.versions, metric, numbers.title) if metric else "",
        known=known,
        from_mlflow=sum(row.source == "mlflow" for row in rows),
    )


def _write_page(path: Path, template: str, redact: Redactor, **context: Any) -> Path:
    page = _jinja_env().get_template(template).render(**context)
    atomic_write_text(path, page, redact=for_pages(redact, path.parent))
    return path


def cost_markdown(job_s: float, price: float, run_s: float | None = None, weekly_budget: float = 5.0) -> str:
    """A job's minutes (GitHub bills every started minute) and their cost, for the step summary."""
    billed = max(1, math.ceil(job_s / 60))
    cost = billed * price
    pipeline = f"; the pipeline itself ran {run_s / 60:.1f} min" if run_s is not None else ""
    lines = [
        "#### Runner cost",
        "",
        f"This job: {job_s / 60:.1f} min so far, {billed} billed minute{'s' * (billed > 1)} ≈ **${cost:.3f}**"
        f" at ${price:g}/min (`RUNNER_MINUTE_PRICE_USD`){pipeline}.",
    ]
    if cost > 0:
        runs = math.floor(weekly_budget / cost + 1e-9)  # 5 // 0.008 is 624.0 in floating point
        lines.append(f"A ${weekly_budget:g} weekly budget covers {runs} jobs like this one.")
    return "\n".join(lines) + "\n"


def write_step_summary(record: RunRecord, path: Path, *, redact: Redactor) -> None:
    """Append the run's outcome, as markdown, to $GITHUB_STEP_SUMMARY."""
    from runner.report.markdown import step_summary
    from runner.report.outcome import outcome_of

    append_text(path, step_summary(outcome_of(record)) + "\n", redact=redact)


# --- formatting shared by the templates ---------------------------------------------------------------------
@lru_cache(maxsize=1)
def _jinja_env() -> jinja2.Environment:
    loader = jinja2.FileSystemLoader(TEMPLATES_DIR)
    # compiling the templates takes longer than a whole run whose stages all come from the cache: their
    # bytecode is kept in the user's temporary folder (jinja's own cache, keyed by the templates' sources)
    env = jinja2.Environment(
        loader=loader,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        bytecode_cache=jinja2.FileSystemBytecodeCache(),
    )
    env.undefined = jinja2.StrictUndefined  # a misspelt variable fails the test suite, not a page
    env.filters.update(duration=_duration, when=_when, value=_value, values=_values, sentence=_sentence)
    env.filters.update(pvalue=_pvalue)
    return env


def _sentence(text: str) -> str:
    """`text` as a sentence: its first letter capitalised, unless it starts with a version label (`v13`)."""
    if not text or re.match(r"v\d", text):
        return text
    return text[0].upper() + text[1:]


def _pvalue(value: float) -> str:
    """A test's p-value as people read it: `< 0.001` rather than 0 or 3.2e-17."""
    return "< 0.001" if value < 0.001 else f"{value:.3g}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _when(timestamp: str | None) -> str:
    """An ISO timestamp as `2026-11-26 07:40:12 UTC`; anything else unchanged."""
    if not timestamp:
        return "-"
    try:
        moment = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    if moment.tzinfo is None:
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _value(value: Any, limit: int = 80) -> str:
    """A scrap or parameter as a short string: numbers rounded, lists shortened, tables as their row count."""
    if value is None or isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, int | str):
        text = str(value)
        return text if len(text) <= limit else text[: limit - 1] + "…"
    rows = _table_rows(value)
    if rows is not None:
        return f"table ({rows} row{'' if rows == 1 else 's'})"
    if isinstance(value, list | tuple):
        shown = ", ".join(_value(item, 20) for item in value[:5])
        return f"[{shown}, … ({len(value)} items)]" if len(value) > 5 else f"[{shown}]"
    if isinstance(value, dict):
        return f"dict ({len(value)} key{'' if len(value) == 1 else 's'})"
    return _value(str(value), limit)


def _values(values: dict[str, Any]) -> str:
    return ", ".join(f"{name} = {_value(value, 40)}" for name, value in values.items())


def _number(value: float) -> str:
    if math.isfinite(value) and 1000 <= abs(value) < 1e7:
        return f"{value:,.1f}"
    return f"{value:.4g}"


def _table_rows(value: Any) -> int | None:
    """Row count when `value` looks like a data frame (pandas object, or a dict/list in a to_dict orient)."""
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple) and shape:
        return int(shape[0])
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return len(value)  # orient="records"
    if not isinstance(value, dict) or not value:
        return None
    if value.get("type") == "table" and isinstance(value.get("n_rows"), int):
        return int(value["n_rows"])  # what runner.engine.scraps makes of a glued DataFrame
    if isinstance(value.get("data"), list) and ("columns" in value or "schema" in value):
        return len(value["data"])  # orient="split" / "table"
    columns = list(value.values())
    if all(isinstance(col, list) for col in columns) and len({len(col) for col in columns}) == 1:
        return len(columns[0])  # orient="list"
    if all(isinstance(col, dict) for col in columns) and len({len(col) for col in columns}) == 1:
        return len(columns[0])  # orient="dict"
    return None


def _s(items: list[Any]) -> str:
    return "" if len(items) == 1 else "s"
