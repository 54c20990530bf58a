"""The smoke check: the champion, loaded fresh from the registry right after it moved, predicts the sample
the evaluation saved, and must give the evaluation's predictions and key metric again, in time.

Any model: the predictions are compared as the model returns them, one column or several, numbers within a
relative tolerance (forecasts, probabilities) and anything else exactly (class labels). The key metric is
scored from the sample's actuals by the score the pipeline names (scores.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.engine.config import SmokeCheckSpec
from runner.engine.kernels import IN_THIS_PROCESS, WorkerError, WorkerLost, Workers
from runner.production.registry import CHAMPION, Registry
from runner.records import SmokeCheck


def check(
    registry: Registry,
    spec: SmokeCheckSpec,
    sample_path: Path,
    metric: str | None,
    metrics: Mapping[str, float],
    root: Path,
    workers: Workers = IN_THIS_PROCESS,
    refit: bool = False,
) -> SmokeCheck:
    """Load the champion and check it reproduces the evaluation: its predictions on the sample, and
    `metric` (the key metric's name; None: predictions only) against the value in `metrics`. A `refit`
    (the evaluated settings trained on all the data) is checked against the evaluated model's predictions
    within the spec's tolerance (the caller gives it `refit_tolerance`), and must predict finite numbers.

    When the run has workers, the loading and predicting happen in one (a new process with the flavour's
    libraries imported there or by the worker itself: scikit-learn, skops, LightGBM, ~2 s and ~100 MB this
    process is spared); otherwise here.
    """
    started = time.monotonic()
    job: dict[str, Any] = {
        "tracking_uri": registry.tracking_uri,
        "model_uri": f"models:/{registry.name}@{CHAMPION}",
        "sample_path": str(sample_path),
        "prediction_columns": list(spec.prediction_columns),
        "actual_column": spec.actual_column,
        "score": spec.score or metric,
        "root": str(root),
    }
    try:
        if workers.elsewhere(None):
            timeout_s = spec.max_seconds + 60  # a slow model still gets its verdict ("took N s (limit M s)")
            folder = sample_path.parent
            scored = workers.call(score_sample, needs=None, timeout_s=timeout_s, cwd=folder, **job)
        else:
            with registry.as_default():  # score_sample points MLflow at the store: for this call only
                scored = score_sample(**job)
    except (WorkerError, WorkerLost) as error:  # the worker's own "Type: message", or its silence
        return SmokeCheck(False, f"the champion could not predict: {error}"[:500], _since(started))
    except Exception as error:  # whatever breaks loading or predicting is the finding, not a crash
        why = f"the champion could not predict: {type(error).__name__}: {error}"[:500]
        return SmokeCheck(False, why, _since(started))
    seconds = _since(started)
    return _verdict(scored, spec, metric, metrics.get(metric) if metric else None, seconds, refit)


def _verdict(
    scored: Mapping[str, Any],
    spec: SmokeCheckSpec,
    metric: str | None,
    expected: float | None,
    seconds: float,
    refit: bool = False,
) -> SmokeCheck:
    problems = []
    if scored["problem"]:
        problems.append(scored["problem"])
    diff = scored["diff"]
    if diff is not None and (not math.isfinite(diff) or diff > spec.tolerance):
        problems.append(
            f"predictions differ from the evaluation's by up to {diff:.3g} (tolerance {spec.tolerance:g})"
        )
    if scored["mismatches"]:
        differ = f"{scored['mismatches']} of {scored['rows']}"
        problems.append(f"{differ} predictions differ from the evaluation's")
    value = scored["metric"]
    if metric and expected is not None and (value is None or not _close(value, expected, spec.tolerance)):
        shown = "nothing" if value is None else f"{value:.4g}"
        problems.append(f"{metric} {shown} instead of {expected:.4g}")
    if seconds > spec.max_seconds:
        problems.append(f"took {seconds:.1f} s (limit {spec.max_seconds:g} s)")
    if problems:
        return SmokeCheck(False, "; ".join(problems), seconds, diff, value)
    said = f"{scored['rows']} predictions match"
    if refit:
        said = (
            f"{scored['rows']} predictions of the refit within {spec.tolerance:g} of the evaluated model's"
            f" (largest relative difference {diff or 0:.3g})"
        )
    if metric and value is not None:
        said += f", {metric} {value:.4g}"
    return SmokeCheck(True, f"{said}, {seconds:.2f} s", seconds, diff, value)


def score_sample(
    tracking_uri: str,
    model_uri: str,
    sample_path: str,
    prediction_columns: list[str],
    actual_column: str,
    score: str | None,
    root: str,
) -> dict[str, Any]:
    """Load `model_uri`, predict the sample, compare with the predictions recorded in it and score the
    metric against its actuals. Runs in a worker (or in the runner)."""
    import mlflow
    import mlflow.pyfunc
    import numpy as np
    import pandas as pd

    from runner.production import scores

    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(model_uri)
    sample = pd.read_parquet(sample_path)
    missing = [name for name in (*prediction_columns, actual_column) if name not in sample.columns]
    if missing:
        problem = f"the sample {Path(sample_path).name} has no column {', '.join(missing)}"
        return {"problem": problem, "diff": None, "mismatches": 0, "metric": None, "rows": len(sample)}
    schema = model.metadata.get_input_schema()
    names = schema.input_names() if schema is not None else None
    inputs = sample[names] if names else sample.drop(columns=[*prediction_columns, actual_column])
    output = model.predict(inputs)
    got = np.asarray(output.to_numpy() if hasattr(output, "to_numpy") else output)
    got = got.reshape(len(sample), -1)
    recorded = sample[prediction_columns].to_numpy()
    found: dict[str, Any] = {"problem": "", "diff": None, "mismatches": 0, "metric": None}
    found["rows"] = len(sample)
    if got.shape[1] != recorded.shape[1]:
        found["problem"] = f"the model gives {got.shape[1]} columns, the sample recorded {recorded.shape[1]}"
        return found
    if got.dtype.kind in "biuf" and recorded.dtype.kind in "biuf":
        got, recorded = got.astype(float), recorded.astype(float)
        difference = np.abs(got - recorded) / np.maximum(np.abs(recorded), 1.0)
        found["diff"] = float(np.max(difference)) if len(recorded) else 0.0
    else:  # labels: equal, or not
        found["mismatches"] = int(np.sum(np.any(got.astype(str) != recorded.astype(str), axis=1)))
    if score:
        predicted = got[:, 0] if got.shape[1] == 1 else got
        actual = sample[actual_column].to_numpy()
        found["metric"] = float(scores.resolve(score, Path(root))(actual, predicted))
    return found


def _close(value: float, expected: float, tolerance: float) -> bool:
    return math.isfinite(value) and abs(value - expected) <= max(tolerance * abs(expected), 1e-12)


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)
