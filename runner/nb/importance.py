"""A model's feature importance: recorded by the stage that trains it, read back to weigh drift.

The validate stage runs before the model of its own run is trained, so drift is weighed by the importance of
the model in production (the champion), as its training run recorded it:

    # train stage, inside its MLflow run
    importance = nb.importance.shares(booster.feature_importance("gain"), booster.feature_name())
    mlflow.log_dict(importance, nb.importance.ARTIFACT)
    nb.glue("feature_importance", importance)

    # validate stage, which declares `champion_uri = ""` (the runner injects the champion, pinned)
    weighing = nb.importance.champion_weighing(champion_uri, ROOT)
    weights = nb.drift.column_weights(weighing.importance, FEATURES, sources=...)   # {} weighs equally

Without a champion (a first run), or with one whose training run recorded no importance, every feature weighs
the same, and `Weighing.how` says so: the report states how the verdict was weighed.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ARTIFACT = "feature_importance.json"  # in the training run's MLflow artifacts: {feature: share of the total}
SCRAP = "feature_importance"


def shares(
    importance: Iterable[Any] | Mapping[str, Any], names: Iterable[str] | None = None
) -> dict[str, float]:
    """Importance as each feature's share of the total (native floats, largest first, summing to 1), from a
    mapping or from values and their `names` (LightGBM's `feature_importance()` and `feature_name()`)."""
    if isinstance(importance, Mapping):
        pairs = [(str(key), float(value)) for key, value in importance.items()]
    else:
        labels = [str(name) for name in (names if names is not None else ())]
        pairs = list(zip(labels, (float(value) for value in importance), strict=True))
    total = sum(max(value, 0.0) for _, value in pairs)
    if total <= 0:
        return {}
    return {name: max(value, 0.0) / total for name, value in sorted(pairs, key=lambda pair: -pair[1])}


@dataclass(frozen=True)
class Weighing:
    """What weighs the features in the drift verdict, and a sentence that says so."""

    how: str
    importance: dict[str, float] = field(default_factory=dict)  # empty: every feature weighs the same
    version: str = ""  # the champion's version whose importance it is


def champion_weighing(champion_uri: str, root: Path) -> Weighing:
    """The champion's feature importance, as its training run logged it (`ARTIFACT`); without a champion,
    or when it cannot be read, equal weights and the reason. Never raises: drift is measured either way."""
    if not champion_uri:
        return Weighing("equally: there is no champion yet whose feature importance could weigh them")
    name, _, version = champion_uri.removeprefix("models:/").rstrip("/").rpartition("/")
    try:
        loaded = _logged_importance(name, version, root)
    except Exception as error:  # an unreadable record is reported, never fatal to the validation
        first_line = next(iter(str(error).strip().splitlines()), "")
        reason = f"{type(error).__name__}: {first_line}"[:200]
        return Weighing(
            f"equally: the champion's (version {version}) feature importance could not be read ({reason})"
        )
    if not loaded:
        return Weighing(
            f"equally: the champion (version {version}) was trained before feature importance was recorded",
            version=version,
        )
    return Weighing(
        f"by the champion's feature importance (version {version}, as its training recorded it)",
        shares(loaded),
        version,
    )


def _logged_importance(name: str, version: str, root: Path) -> dict[str, Any]:
    # no download bars nor tqdm's widget warning in the validate stage's page
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    warnings.filterwarnings("ignore", message="IProgress not found")
    import mlflow
    from mlflow import MlflowClient

    from runner.project import tracking_uri

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri(root))
    run_id = MlflowClient().get_model_version(name, version).run_id
    if not run_id:
        return {}
    client = MlflowClient()
    if ARTIFACT not in {item.path for item in client.list_artifacts(run_id)}:
        return {}
    loaded = mlflow.artifacts.load_dict(f"runs:/{run_id}/{ARTIFACT}")
    if not isinstance(loaded, dict):
        raise ValueError(f"{ARTIFACT} of run {run_id} is not a mapping of feature to importance")
    return loaded
