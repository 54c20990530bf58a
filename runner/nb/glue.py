"""Recording results for the runner (scrapbook), with the types checked where the mistake is made.

scrapbook stores native JSON values and tables; a numpy number (what `np.mean` or `rmse < threshold`
returns), None or a Timestamp fails deep inside it, or is stored as a string a gate cannot compare. `glue`
refuses them with the fix. `record_predictions` records the table the run page draws under the documented
name `predictions` (README, "What the runner reads").
"""

from __future__ import annotations

from typing import Any

PREDICTIONS = "predictions"
PREDICTION_COLUMNS = ("period", "actual", "prediction", "champion")


class GlueError(TypeError):
    """A value that the runner could not read back as it was meant."""


def glue(name: str, value: Any) -> None:
    """Record `value` under `name`: a bool, int, float or str, a list or dict of those, or a DataFrame."""
    import scrapbook

    _check(name, value, name)
    scrapbook.glue(name, value)


def record_predictions(
    frame: Any,
    *,
    period: str,
    actual: str,
    prediction: str,
    champion: str | None = None,
    aggregate: str = "sum",
) -> None:
    """Record, per period, the actual values beside the model's predictions (and the champion's on the same
    rows): the run page draws them as one chart. `aggregate` ("sum" or "mean") combines the rows of a period:
    sums for quantities such as sales, means for rates and probabilities."""
    if aggregate not in ("sum", "mean"):
        raise ValueError(f"aggregate must be 'sum' or 'mean', not {aggregate!r}")
    columns = {period: "period", actual: "actual", prediction: "prediction"}
    if champion is not None:
        columns[champion] = "champion"
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise KeyError(f"record_predictions: no column {', '.join(missing)} (columns: {list(frame.columns)})")
    table = frame[list(columns)].rename(columns=columns)
    grouped = table.groupby("period", sort=True)
    summed = grouped.sum(numeric_only=True) if aggregate == "sum" else grouped.mean(numeric_only=True)
    summed = summed.reset_index()
    summed["period"] = summed["period"].astype(str)
    glue(PREDICTIONS, summed.astype({name: "float64" for name in summed.columns if name != "period"}))


def _check(name: str, value: Any, where: str) -> None:
    if value is None:
        raise GlueError(f"glue({name!r}): {where} is None; record a value (0, '', nan) or leave it out")
    if isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        return  # NaN is allowed: a gate that reads it fails and says so
    if type(value).__module__ == "numpy":
        kind = type(value).__name__
        fix = "bool(...)" if "bool" in kind else "float(...) or int(...)"
        raise GlueError(f"glue({name!r}): {where} is a numpy {kind}; record {fix} of it")
    if hasattr(value, "columns") and hasattr(value, "to_dict"):
        return  # a DataFrame: scrapbook stores it as a table
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check(name, item, f"{where}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise GlueError(f"glue({name!r}): {where} has a key {key!r} that is not text")
            _check(name, item, f"{where}[{key!r}]")
        return
    if isinstance(value, tuple):
        raise GlueError(f"glue({name!r}): {where} is a tuple; record a list")
    kind = f"{type(value).__module__}.{type(value).__name__}"
    raise GlueError(f"glue({name!r}): {where} is a {kind}, which cannot be recorded; record str(...) of it")
