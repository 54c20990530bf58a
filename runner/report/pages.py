"""What a run leaves behind for people: run.json, a page per stage, the run's index, the history of runs,
and the GitHub step summary.

Every page is one self-contained file: inline CSS (`templates/report.css`), images as data URIs, no script,
no request to any other host. Stage pages come from our own light nbconvert template (`templates/stage/`,
built on nbconvert's `basic`); the run index and the history from Jinja2 templates with autoescaping.
Files are written through runner/files.py: atomically, and with the run's secrets redacted.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from runner.files import append_text, atomic_write_text
from runner.records import KeyMetric, ModelRecord, RunRecord, StageRecord
from runner.report.numbers import Numbers
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
    atomic_write_text(html_path, html, redact=redact)


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
    return HTMLExporter(
        config=config,
        template_name=STAGE_TEMPLATE,
        extra_template_basedirs=[str(TEMPLATES_DIR)],
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )


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
    """Write `<run_dir>/index.html`, the run's story: the decision, gates with margins, challenger against
    champion, data and drift, timings, links; returns its path. `tracking_uri` links the MLflow run when it
    names a tracking server."""
    from runner.report import story

    stages = list(record.stages.values())
    version, comparison = champion_comparison(record)
    longest = max((stage.duration_s for stage in stages), default=0.0)
    return _write_page(
        run_dir / "index.html",
        "run.html.j2",
        redact,
        record=record,
        decision=story.decision_sentence(record),
        outcome=outcome_sentence(record),
        model_text=model_sentence(record.model, record.key_metric) if record.model else None,
        failures=[(stage, _failure_text(stage)) for stage in stages if stage.status == "failed"],
        skipped=[stage for stage in stages if stage.status == "skipped"],
        gates=story.gate_rows(record),
        champion_version=version,
        comparison=comparison,
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
    """Write `<reports_dir>/index.html`: every run, newest first, from the run folders and from what MLflow
    remembers (`known`, see history.py), with the metric across runs and across versions; returns its
    path. A run.json that cannot be read or does not have a run's shape is listed as unreadable, never fatal.
    """
    from runner.report import history

    known = known or history.Remembered()
    records, unreadable = history.read_run_folders(reports_dir)
    key = key or next((record.key_metric for record, _ in reversed(records) if record.key_metric), None)
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
        metric=metric,
        show_metric=any(row.metric is not None for row in rows),
        statuses=history.filter_values(rows, "status"),
        triggers=history.filter_values(rows, "trigger"),
        runs_chart=history.runs_chart(rows, metric) if metric else "",
        versions_chart=history.versions_chart(known.versions, metric) if metric else "",
        known=known,
        from_mlflow=sum(row.source == "mlflow" for row in rows),
    )


def _write_page(path: Path, template: str, redact: Redactor, **context: Any) -> Path:
    atomic_write_text(path, _jinja_env().get_template(template).render(**context), redact=redact)
    return path


def outcome_sentence(record: RunRecord) -> str:
    """The run's outcome in one sentence, as the run index, the step summary and notifications say it."""
    stages = list(record.stages.values())
    problem = record.first_problem
    if record.status == "succeeded":
        done = [stage for stage in stages if stage.status in ("succeeded", "cached")]
        cached = sum(stage.status == "cached" for stage in stages)
        reuse = f" ({cached} reused from cache)" if cached else ""
        if len(done) == len(stages):
            return f"Succeeded: all {len(stages)} stage{_s(stages)} passed their gates{reuse}."
        return f"Succeeded: {len(done)} of {len(stages)} stages ran and passed their gates{reuse}."
    if record.status == "gate_failed" and problem is not None and problem.failed_gates:
        gate, *more = problem.failed_gates
        seen = gate.detail or _values(gate.values)
        extra = f" and {len(more)} more gate{_s(more)}" if more else ""
        return f"Stopped by a gate in stage {problem.name}: {gate.expr}{f' ({seen})' if seen else ''}{extra}."
    if record.status == "failed" and problem is None and record.model is not None and record.model.error:
        return f"Failed after every stage passed: {record.model.error}."
    if record.status == "failed" and problem is not None:
        return f"Failed at stage {problem.name}: {_failure_phrase(problem)}."
    if record.status == "cancelled":
        running = [stage.name for stage in stages if stage.status in ("running", "failed")]
        return f"Cancelled during stage {running[0]}." if running else "Cancelled."
    if record.status == "running":
        finished = sum(stage.status not in ("pending", "running") for stage in stages)
        return f"Running: {finished} of {len(stages)} stages done."
    return f"{record.status.replace('_', ' ').capitalize()}: no stage recorded why."


def model_sentence(model: ModelRecord, key: KeyMetric | None = None) -> str:
    """What the run did to the model, in one sentence: "demand-forecast v13 is the new champion, ..."."""
    if model.error:
        return f"{model.name}: {model.error}."
    if not model.promoted:
        return f"{model.name}: {model.detail}."
    numbers = Numbers(key)
    value = model.metrics.get(key.name) if key else None
    before = model.champion_metrics.get(key.name) if key else None
    measured = f", {numbers.title} {numbers.value(value)}" if value is not None else ""
    was = f" (was {numbers.value(before)})" if value is not None and before is not None else ""
    checked = f"; smoke check: {model.smoke_check.detail}" if model.smoke_check else ""
    return f"{model.name} v{model.version} is the new champion{measured}{was}{checked}."


def _failure_phrase(stage: StageRecord) -> str:
    if stage.failure is None:
        return stage.error or "no error recorded"
    return stage.failure.message or stage.failure.kind


def _failure_text(stage: StageRecord) -> str:
    """The failure as the error box shows it: what happened, and why when the message does not say it."""
    failure = stage.failure
    if failure is None:
        return stage.error or "no error recorded"
    lines = [failure.message]
    if failure.kind != "error" and failure.evalue and failure.evalue not in failure.message:
        lines.append(failure.evalue)
    return "\n".join(lines)


# --- GitHub step summary ------------------------------------------------------------------------------------
def summary_markdown(record: RunRecord) -> str:
    """GitHub-flavoured markdown for $GITHUB_STEP_SUMMARY: status, outcome, stages, failed gates."""
    icon = _STATUS_ICON.get(record.status, "")
    lines = [
        f"### {icon} {_md(record.pipeline)}: {record.status.replace('_', ' ')} (`{record.run_id}`)".strip(),
        "",
        _md(outcome_sentence(record)),
        "",
        *([_md(model_sentence(record.model, record.key_metric)), ""] if record.model else []),
        *_comparison_table(record),
        "| stage | status | duration | gates |",
        "| --- | --- | ---: | ---: |",
    ]
    for stage in record.stages.values():
        gates = f"{len(stage.gates) - len(stage.failed_gates)}/{len(stage.gates)}" if stage.gates else "-"
        status = stage.status.replace("_", " ")
        lines.append(f"| {_md(stage.name)} | {status} | {_duration(stage.duration_s)} | {gates} |")
    failed = [(stage.name, gate) for stage in record.stages.values() for gate in stage.failed_gates]
    if failed:
        lines += ["", "**Failed gates**", ""]
        lines += [
            f"- {_md(name)}: `{gate.expr}`: {_md(gate.detail or _values(gate.values))}"
            for name, gate in failed
        ]
    for stage in record.stages.values():
        if stage.status == "failed":
            lines += ["", f"**Error in stage {_md(stage.name)}**", "", "```text", _failure_text(stage), "```"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class MetricChange:
    """One metric of this run's model beside the champion's (None: the champion has no such metric)."""

    name: str
    value: float
    champion: float | None

    @property
    def change(self) -> str:
        """`-0.005 (-6.0%)`; "-" when the champion has no such metric."""
        if self.champion is None:
            return "-"
        change = self.value - self.champion
        relative = f" ({change / self.champion:+.1%})" if self.champion else ""
        return f"{change:+.4g}{relative}"


def champion_comparison(record: RunRecord) -> tuple[str | None, list[MetricChange]]:
    """This run's model metrics beside the champion's: (the champion's version or None, a row a metric).

    From `record.model` (the metrics stage's numbers and the champion's, as the gates saw them), else from a
    stage that recorded a `champion` scrap (what it measured for the production model on the same data).
    """
    model = record.model
    if model is not None and model.metrics:
        rows = [
            MetricChange(key, value, model.champion_metrics.get(key)) for key, value in model.metrics.items()
        ]
        return model.champion_before, rows
    for stage in reversed(record.stages.values()):
        measured = stage.scraps.get("champion")
        if isinstance(measured, dict) and "error" not in measured:
            theirs = _numbers(measured)
            rows = [
                MetricChange(key, value, theirs.get(key)) for key, value in _numbers(stage.scraps).items()
            ]
            version = measured.get("version")
            return (None if version is None else str(version)), rows
    return None, []


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def _comparison_table(record: RunRecord) -> list[str]:
    """The metrics both this run's model and the champion have, with the change, as markdown lines."""
    version, rows = champion_comparison(record)
    rows = [row for row in rows if row.champion is not None]
    if not rows:
        return []
    lines = [
        f"| metric | this run | champion v{_md(version or '?')} | change |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {_md(row.name)} | {row.value:.4g} | {row.champion:.4g} | {row.change} |" for row in rows]
    return [*lines, ""]


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
    """Append the run's summary to `path` (the file $GITHUB_STEP_SUMMARY names)."""
    append_text(path, summary_markdown(record) + "\n", redact=redact)


def _md(text: str) -> str:
    """Text safe inside a markdown table cell or list item."""
    return text.replace("|", "\\|").replace("\n", " ")


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
    env.filters.update(duration=_duration, when=_when, value=_value, values=_values)
    return env


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
