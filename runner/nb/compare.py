"""Backtests and the paired comparison, for any pipeline's notebooks: the evidence the promotion policy reads.

    origins = nb.backtest_origins(frame["week"], horizon=8, count=4)  # newest first: [(start, end), ...]
    settings = nb.recorded_params(champion_uri)     # the champion's settings, from its MLflow run
    ...  # per origin: train both settings on the rows before `start`, predict start..end
    nb.record_paired(rows, origin="origin", period="week", actual="sales", prediction="forecast",
                     champion="champion_forecast")  # the `paired` scrap the registry step decides on
    nb.compare(rows_or_paired, score)               # the difference and its interval, to show in the page

The decision itself (the policy in pipeline.yaml: superior, non_inferior, threshold) is taken by the runner
when it registers the model, from the `paired` scrap, with runner/production/promotion.py; `compare` here
uses the same numbers (runner/paired.py) with the same policy, so that the notebook's page can say what the
runner will decide.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner.nb.glue import glue
from runner.paired import PAIRED, PAIRED_COLUMNS, Comparison, Policy, Score
from runner.paired import compare as compare_paired


def backtest_origins(periods: Any, *, horizon: int, count: int) -> list[tuple[Any, Any]]:
    """`count` rolling origins, newest first: each (first, last) period of a test window of `horizon`
    periods, the newest ending on the last period and each earlier one ending where the next begins.
    Fewer when the periods run out (a model needs periods before its first origin to learn from)."""
    if horizon < 1 or count < 1:
        raise ValueError(f"horizon and count must be at least 1, not {horizon} and {count}")
    ordered = sorted(set(periods))
    found = []
    for index in range(count):
        end = len(ordered) - index * horizon
        start = end - horizon
        if start < 1:  # no period left to train on
            break
        found.append((ordered[start], ordered[end - 1]))
    return found


def record_paired(
    frame: Any, *, origin: str, period: str, actual: str, prediction: str, champion: str
) -> None:
    """Record the paired rows: per row of every backtest, its origin and period, the actual value, and the
    challenger's and the champion's predictions on it (one number each: a forecast, a positive class's
    probability). Recorded whole (not cut to a table's first rows), as the `paired` scrap."""
    glue(
        PAIRED,
        paired_table(
            frame, origin=origin, period=period, actual=actual, prediction=prediction, champion=champion
        ),
    )


def paired_table(
    frame: Any, *, origin: str, period: str, actual: str, prediction: str, champion: str
) -> dict[str, list[Any]]:
    """The paired rows of `frame` as `record_paired` records them: columns PAIRED_COLUMNS, as lists."""
    names = dict(zip(PAIRED_COLUMNS, (origin, period, actual, prediction, champion), strict=True))
    missing = [name for name in names.values() if name not in frame.columns]
    if missing:
        raise KeyError(f"paired rows: no column {', '.join(missing)} (columns: {list(frame.columns)})")
    return {
        key: [str(value) if key in ("origin", "period") else float(value) for value in frame[name]]
        for key, name in names.items()
    }


def compare(paired: dict[str, list[Any]], score: Score, policy: Policy | None = None) -> Comparison:
    """The challenger against the champion on the paired rows: the key metric of each, the difference and
    its interval, with the pipeline's promotion policy (its confidence, blocks and resamples)."""
    return compare_paired(paired, score, policy or promotion_policy())


def promotion_policy(root: Path | None = None) -> Policy:
    """The pipeline's `model.promotion_policy` (pipeline.yaml at the project root; `retrain check` checks
    it), or the default policy when it declares none."""
    from runner import yamltext
    from runner.nb.paths import root as project_root

    path = (root or project_root()) / "pipeline.yaml"
    found = yamltext.load(path.read_text(encoding="utf-8")) if path.is_file() else {}
    model = found.get("model") if isinstance(found, dict) else None
    declared = model.get("promotion_policy") if isinstance(model, dict) else None
    if not isinstance(declared, dict):
        return Policy()
    known = {key: value for key, value in declared.items() if key in Policy.__dataclass_fields__}
    return Policy(**known)


def recorded_params(model_uri: str, root: Path | None = None) -> dict[str, str]:
    """The parameters logged by the MLflow run that produced a registered model (`models:/<name>/<version>`
    or `models:/<name>@<alias>`): the settings a backtest trains again on equal data."""
    import mlflow

    from runner.nb.paths import root as project_root
    from runner.project import tracking_uri

    client = mlflow.MlflowClient(tracking_uri=tracking_uri(root or project_root()))
    reference = model_uri.removeprefix("models:/").rstrip("/")
    if "@" in reference:
        name, alias = reference.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    else:
        name, _, number = reference.rpartition("/")
        version = client.get_model_version(name, number)
    if not version.run_id:
        return {}
    return dict(client.get_run(version.run_id).data.params)
