"""What the run page shows beyond the outcome (outcome.py): each gate's value, threshold and margin, the data
and drift summaries, and the challenger's predictions against the champion's.

Everything is read from the run record (run.json), so that `retrain report` can draw the page again without
running anything. Scraps this module knows by name (all optional; a page without them says so):
- data: `n_history_rows`, `n_new_rows`, `n_weeks`, `new_weeks` (any stage, usually validate);
- drift: `drift` (a table: feature, kind, weight, trending, psi, test, pvalue, verdict, as `runner.nb.drift`
  makes it; older tables have ks_pvalue), `max_psi`, `drift_verdict`, `drift_weighing`;
- predictions: `predictions` (a table: `period`, `actual`, `prediction` and optionally `champion`, as
  `runner.nb.record_predictions` records it; `forecast_by_week`, with `forecast` and `champion_forecast`,
  is an older notebook's name for it);
- `mlflow_run_id`: the MLflow run that logged the candidate model.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from markupsafe import Markup

from runner.records import GateResult, RunRecord, StageRecord
from runner.report.charts import Series, line_chart

_COMPARE: dict[type[ast.cmpop], tuple[str, int]] = {  # operator -> (symbol, sign of the room left)
    ast.Lt: ("<", 1),
    ast.LtE: ("≤", 1),
    ast.Gt: (">", -1),
    ast.GtE: ("≥", -1),
    ast.Eq: ("=", 0),
    ast.NotEq: ("≠", 0),
}
_ARITHMETIC: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
DATA_SCRAPS = {
    "n_history_rows": "history rows",
    "n_new_rows": "new rows",
    "n_weeks": "weeks",
    "new_weeks": "new weeks",
}


# --- gates: value, threshold, margin ------------------------------------------------------------------------
@dataclass(frozen=True)
class GateRow:
    stage: str
    gate: GateResult
    left: str = ""  # the left side as written: its name says how its numbers read (the key metric's format)
    value: float | None = None  # the left side of a comparison
    symbol: str = ""
    threshold: float | None = None  # the right side
    threshold_expr: str = ""  # how the threshold was computed, when it is not a plain number
    margin: float | None = None  # room left before the gate fails (negative: by how much it failed)

    @property
    def relative_margin(self) -> float | None:
        """The margin as a share of the threshold, when that reads as something (not against a threshold
        near zero, where any margin is thousands of percent)."""
        if self.margin is None or not self.threshold:
            return None
        share = self.margin / abs(self.threshold)
        return share if abs(share) <= 10 else None


def gate_rows(record: RunRecord) -> list[GateRow]:
    return [_gate_row(stage.name, gate) for stage in record.stages.values() for gate in stage.gates]


def _gate_row(stage: str, gate: GateResult) -> GateRow:
    """Split `left <op> right` and compute both sides from the values the gate saw; anything else (and/or,
    chained comparisons, a missing value) gets no threshold or margin."""
    try:
        tree = ast.parse(gate.expr.strip(), mode="eval").body
    except SyntaxError:
        return GateRow(stage, gate)
    if not isinstance(tree, ast.Compare) or len(tree.ops) != 1 or type(tree.ops[0]) not in _COMPARE:
        return GateRow(stage, gate)
    symbol, sign = _COMPARE[type(tree.ops[0])]
    left = ast.unparse(tree.left)
    value, threshold = _number(tree.left, gate.values), _number(tree.comparators[0], gate.values)
    if value is None or threshold is None:
        return GateRow(stage, gate, left, value, symbol, threshold)
    right = tree.comparators[0]
    shown = "" if isinstance(right, ast.Constant) else ast.unparse(right)
    margin = (threshold - value) * sign if sign else None
    return GateRow(stage, gate, left, value, symbol, threshold, shown, margin)


def _number(node: ast.expr, values: Mapping[str, Any]) -> float | None:
    if isinstance(node, ast.Constant):
        return _float(node.value) if not isinstance(node.value, str) else None
    if isinstance(node, ast.Name | ast.Attribute):
        value = values.get(ast.unparse(node))
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        return None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _number(node.operand, values)
        return None if inner is None else -inner
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left, right = _number(node.left, values), _number(node.right, values)
        if left is None or right is None or (isinstance(node.op, ast.Div) and right == 0):
            return None
        return _ARITHMETIC[type(node.op)](left, right)
    return None


# --- data and drift -----------------------------------------------------------------------------------------
def data_summary(record: RunRecord) -> list[tuple[str, str]]:
    """(label, value) for the data scraps the run recorded, in a fixed order."""
    found: list[tuple[str, str]] = []
    for key, label in DATA_SCRAPS.items():
        stage = _stage_with(record, key)
        if stage is None:
            continue
        value = stage.scraps[key]
        if isinstance(value, list):
            text = ", ".join(str(item) for item in value) if value else "none"
            found.append((label, f"{len(value)} ({text})" if value else "none"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found.append((label, f"{value:,}"))
        else:
            found.append((label, str(value)))
    return found


@dataclass(frozen=True)
class Drift:
    stage: str
    verdict: str | None
    max_psi: float | None
    rows: list[dict[str, Any]]  # feature, kind, weight, trending, psi, test, pvalue, verdict
    weighing: str | None = None  # how the features were weighed, as the stage said it
    weighed: bool = False  # the rows carry weights (older runs' tables have none)


def drift_summary(record: RunRecord) -> Drift | None:
    """The drift scraps of the stage that measured drift, or None when no stage did."""
    found = (_stage_with(record, key) for key in ("drift", "drift_verdict", "max_psi"))
    stage = next((stage for stage in found if stage is not None), None)
    if stage is None:
        return None
    scraps = stage.scraps
    verdict = scraps.get("drift_verdict")
    max_psi = _float(scraps.get("max_psi"))
    rows = [_drift_row(row) for row in table_records(scraps.get("drift"))]
    order = {"drift": 0, "warn": 1, "trend": 2, "ok": 3}  # the features that moved first
    rows.sort(key=lambda row: (order.get(str(row.get("verdict")), 4), -(_float(row.get("psi")) or 0.0)))
    weighing = scraps.get("drift_weighing")
    return Drift(
        stage.name,
        None if verdict is None else str(verdict),
        max_psi,
        rows,
        None if weighing is None else str(weighing),
        weighed=any(row.get("weight") is not None for row in rows),
    )


def _drift_row(row: dict[str, Any]) -> dict[str, Any]:
    """A drift table's row in today's columns: older tables have `ks_pvalue` and neither test nor weight."""
    if "pvalue" not in row:
        row["pvalue"] = row.get("ks_pvalue")
        row["test"] = "KS" if row.get("kind") == "numeric" else None
    row["pvalue"], row["weight"] = _float(row.get("pvalue")), _float(row.get("weight"))  # NaN: None
    row["trending"] = bool(row.get("trending"))
    return row


def table_records(table: Any) -> list[dict[str, Any]]:
    """The rows of a table scrap (runner.engine.scraps' `{"type": "table", "columns", "rows"}`) as dicts."""
    if not isinstance(table, dict) or not isinstance(table.get("columns"), list):
        return []
    columns = [str(name) for name in table["columns"]]
    return [dict(zip(columns, row, strict=False)) for row in table.get("rows", []) if isinstance(row, list)]


# --- challenger against champion ----------------------------------------------------------------------------
def forecast_chart(record: RunRecord) -> Markup:
    """Actual values, this run's predictions and the champion's on the same axes (empty without the scrap)."""
    name = "predictions" if _stage_with(record, "predictions") else "forecast_by_week"
    stage = _stage_with(record, name)
    if stage is None:
        return Markup("")
    table = stage.scraps[name]
    rows = table_records(table)
    if not rows:
        return Markup("")
    x_name = str(table["columns"][0])
    labels = [str(row.get(x_name, "")) for row in rows]
    version = record.model.version if record.model and record.model.version else None
    champion = _champion_version(record)
    older = name != "predictions"
    ours, theirs = ("forecast", "champion_forecast") if older else ("prediction", "champion")
    lines = [
        ("actual", "actual", "#1f2328", False),
        (ours, f"this run{f' (v{version})' if version else ''}", "#dd8452", False),
        (theirs, f"champion{f' (v{champion})' if champion else ''}", "#2da44e", True),
    ]
    series = [
        Series(name, [_float(row.get(column)) for row in rows], colour, dashed)
        for column, name, colour, dashed in lines
        if column in table["columns"]
    ]
    unit = record.key_metric.unit if record.key_metric and record.key_metric.format == "currency" else ""
    title, axis = "Actual against predicted", f"total {unit}".strip()
    return line_chart(labels, series, title=title, y_format=compact_number, y_title=axis)


def _champion_version(record: RunRecord) -> str | None:
    if record.model is not None and record.model.champion_before:
        return record.model.champion_before
    for stage in record.stages.values():
        measured = stage.scraps.get("champion")
        if isinstance(measured, dict) and measured.get("version") is not None:
            return str(measured["version"])
    return None


def compact_number(value: float) -> str:
    """412,275.7 -> 412k; 0.0621 -> 0.0621: axis labels that stay short."""
    size = abs(value)
    if size >= 1e6:
        return f"{value / 1e6:.3g}M"
    if size >= 1e4:
        return f"{value / 1e3:.3g}k"
    return f"{value:.3g}"


# --- links --------------------------------------------------------------------------------------------------
def mlflow_run(record: RunRecord, tracking_uri: str | None) -> tuple[str, str | None] | None:
    """(the MLflow run id that logged the candidate, a link to it in the MLflow UI or None).

    Only a tracking server has a UI to link to; its URL is shown without any user:password part."""
    stage = _stage_with(record, "mlflow_run_id")
    if stage is None:
        return None
    run_id = str(stage.scraps["mlflow_run_id"])
    if not tracking_uri or not tracking_uri.startswith(("http://", "https://")):
        return run_id, None
    parts = urlsplit(tracking_uri)
    public = urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))
    if parts.port:
        public = urlunsplit((parts.scheme, f"{parts.hostname}:{parts.port}", parts.path, "", ""))
    return run_id, f"{public.rstrip('/')}/#/runs/{run_id}"


# --- helpers ------------------------------------------------------------------------------------------------
def _stage_with(record: RunRecord, scrap: str) -> StageRecord | None:
    """The first stage (in pipeline order) that recorded `scrap`."""
    return next((stage for stage in record.stages.values() if scrap in stage.scraps), None)


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
