"""How a model's key metric is scored from actuals and predictions, by name: the smoke check recomputes it
from the sample the evaluation saved, so that a registered model is judged by the number that promoted it.

Built-ins (numpy only: they run in the runner or in a worker, neither of which imports scikit-learn for them):

    regression      mae  rmse  rmsle  mape  r2
    classification  accuracy  f1 (binary: the larger label is positive)  roc_auc  log_loss
                    (probabilities: one column, the positive class's, or one column per class)

A project's own: "module:function" (a module importable from the project root, such as
"notebooks.metrics:rmsle"), called as function(actual, predicted) -> float, with 1-D actuals and the
predictions as the model returned them (1-D, or 2-D for several columns).
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Score = Callable[[Any, Any], float]


def _np() -> Any:
    import numpy

    return numpy


def mae(actual: Any, predicted: Any) -> float:
    np = _np()
    return float(np.mean(np.abs(actual - predicted)))


def rmse(actual: Any, predicted: Any) -> float:
    np = _np()
    return float(np.sqrt(np.mean((actual - predicted) ** 2)))


def rmsle(actual: Any, predicted: Any) -> float:
    np = _np()
    logs = np.log1p(np.maximum(predicted, 0)) - np.log1p(np.maximum(actual, 0))
    return float(np.sqrt(np.mean(logs**2)))


def mape(actual: Any, predicted: Any) -> float:
    np = _np()
    nonzero = actual != 0
    if not nonzero.any():
        return math.nan
    return float(np.mean(np.abs((actual[nonzero] - predicted[nonzero]) / actual[nonzero])))


def r2(actual: Any, predicted: Any) -> float:
    np = _np()
    total = float(np.sum((actual - np.mean(actual)) ** 2))
    return 1.0 - float(np.sum((actual - predicted) ** 2)) / total if total else math.nan


def accuracy(actual: Any, predicted: Any) -> float:
    np = _np()
    return float(np.mean(np.asarray(actual) == _labels(actual, predicted)))


def f1(actual: Any, predicted: Any) -> float:
    np = _np()
    labels = _labels(actual, predicted)
    positive = np.max(np.asarray(actual))
    true_pos = float(np.sum((labels == positive) & (actual == positive)))
    found, present = float(np.sum(labels == positive)), float(np.sum(actual == positive))
    return 2 * true_pos / (found + present) if found + present else math.nan


def roc_auc(actual: Any, predicted: Any) -> float:
    """Binary: the probability that a random positive scores above a random negative (ties count half);
    several classes: the mean over classes, each against the rest."""
    np = _np()
    actual = np.asarray(actual)
    scores = np.asarray(predicted, dtype=float)
    classes = np.unique(actual)
    if scores.ndim == 1 or scores.shape[1] == 1:
        return _binary_auc(actual == classes.max(), scores.reshape(-1))
    if scores.shape[1] == 2 and len(classes) <= 2:
        return _binary_auc(actual == classes.max(), scores[:, 1])
    return float(np.mean([_binary_auc(actual == label, scores[:, i]) for i, label in enumerate(classes)]))


def log_loss(actual: Any, predicted: Any) -> float:
    np = _np()
    actual = np.asarray(actual)
    scores = np.clip(np.asarray(predicted, dtype=float), 1e-15, 1 - 1e-15)
    classes = np.unique(actual)
    if scores.ndim == 1 or scores.shape[1] == 1:
        positive = (actual == classes.max()).astype(float)
        p = scores.reshape(-1)
        return float(-np.mean(positive * np.log(p) + (1 - positive) * np.log(1 - p)))
    index = np.searchsorted(classes, actual)
    return float(-np.mean(np.log(scores[np.arange(len(actual)), index])))


BUILT_IN: dict[str, Score] = {
    "mae": mae,
    "rmse": rmse,
    "rmsle": rmsle,
    "mape": mape,
    "r2": r2,
    "accuracy": accuracy,
    "f1": f1,
    "roc_auc": roc_auc,
    "auc": roc_auc,
    "log_loss": log_loss,
}


def resolve(name: str, root: Path) -> Score:
    """The score called `name`: a built-in, or "module:function" importable from the project `root`.
    ValueError (with what exists) when there is none."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    module_name, sep, function = name.partition(":")
    if not sep:
        known = ", ".join(sorted(BUILT_IN))
        raise ValueError(f"no score '{name}': use one of {known}, or 'module:function' of the project")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        found = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"score '{name}' cannot be imported from {root}: {error}") from None
    if not callable(found):
        raise ValueError(f"score '{name}' is not a function")
    return found  # type: ignore[no-any-return]


def _labels(actual: Any, predicted: Any) -> Any:
    """Predicted labels: as given, or the most likely class when the predictions are probabilities."""
    np = _np()
    scores = np.asarray(predicted)
    if scores.ndim == 2 and scores.shape[1] > 1:
        return np.unique(np.asarray(actual))[np.argmax(scores, axis=1)]
    if scores.dtype.kind == "f" and set(np.unique(np.asarray(actual)).tolist()) <= {0, 1}:
        return (scores.reshape(-1) >= 0.5).astype(int)  # a positive class's probability
    return scores.reshape(-1)


def _binary_auc(positive: Any, scores: Any) -> float:
    np = _np()
    n_pos, n_neg = int(np.sum(positive)), int(np.sum(~positive))
    if not n_pos or not n_neg:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    for end in range(1, len(scores) + 1):  # average ranks over ties
        if end == len(scores) or sorted_scores[end] != sorted_scores[start]:
            ranks[order[start:end]] = (start + end + 1) / 2
            start = end
    return float((np.sum(ranks[positive]) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
