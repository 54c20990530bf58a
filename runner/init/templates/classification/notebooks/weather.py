"""Will it rain tomorrow in Seattle? The data, the features and the target, shared by the stage notebooks.

One definition of each: the features stage builds the training table with `build_features`; the deploy stage
predicts tomorrow from the latest day with the same function, and the monitor notebook scores the production
model on the days it has not seen with it too. The model is always fed what it was trained on.

Notebooks import this module after finding the project root:

    sys.path.insert(0, str(ROOT / "notebooks"))
    import weather

To predict something else from the same data, change TARGET, TARGET_TEXT, `build_features`' last lines and
`scores`; to use other data, change `load_weather`, the features and notebooks/weather_contract.py.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DATE = "date"
DATE_FORMAT = "%Y-%m-%d"  # how the files write `date` (hourly data: "%Y-%m-%d %H:%M")
HORIZON = pd.Timedelta(days=1)  # how far after a row's date its target is (the deploy step dates with it)
TARGET = "rain_tomorrow"  # 1 when any rain or snow is measured the next day, 0 when none is
TARGET_TEXT = "rain tomorrow"
PREDICTION = "probability"  # what the model gives: the probability of rain tomorrow
KIND = "classification"

DESCRIPTIONS: dict[str, str] = {
    "precipitation": "rain or snow today (mm)",
    "rained": "it rained today (1) or not (0)",
    "precipitation_yesterday": "rain or snow yesterday (mm)",
    "rain_days_7": "days with rain in the last 7 days, today included",
    "temp_max": "highest temperature today (°C)",
    "temp_min": "lowest temperature today (°C)",
    "temp_range": "today's highest minus lowest temperature (°C)",
    "temp_max_change": "today's highest temperature minus yesterday's (°C)",
    "wind": "average wind speed today (m/s)",
    "wind_change": "today's wind speed minus yesterday's (m/s)",
    "season_sin": "time of year, sine (winter and summer apart)",
    "season_cos": "time of year, cosine (spring and autumn apart)",
}
# The `weather` column (sun, fog, rain...) is not a feature: its labels change over the years of the data
# (hundreds of "rain" days in 2012, three in 2014, when "fog" and "sun" took over), and a model would learn
# the labelling rather than the weather. The contract still checks it and the drift check watches it.
FEATURES: list[str] = list(DESCRIPTIONS)  # the model's inputs, in this order


def weather_files(root: Path, history_glob: str, new_glob: str) -> list[str]:
    """The weather files, history first, each group in name order (globs are relative to `root`)."""
    return sorted(glob.glob(str(root / history_glob))) + sorted(glob.glob(str(root / new_glob)))


def load_weather(root: Path, history_glob: str, new_glob: str) -> pd.DataFrame:
    """Every day of the history and new files, with `date` as a timestamp, sorted by date. Raises
    FileNotFoundError when no file matches (the validate stage has checked the files' contents)."""
    files = weather_files(root, history_glob, new_glob)
    if not files:
        raise FileNotFoundError(f"no weather file matches {history_glob} or {new_glob} under {root}")
    days = pd.concat([pd.read_csv(path) for path in files], ignore_index=True)
    days[DATE] = pd.to_datetime(days[DATE], format=DATE_FORMAT)
    return days.sort_values(DATE).reset_index(drop=True)


def build_features(days: pd.DataFrame) -> pd.DataFrame:
    """One row per day: `date`, the FEATURES (what is known at the end of that day) and the TARGET (what the
    next day brought; missing for the latest day, whose tomorrow is not known yet). Days must follow each
    other without a gap: the validate stage checks it."""
    days = days.sort_values(DATE).reset_index(drop=True)
    features = pd.DataFrame({DATE: days[DATE]})
    rained = (days["precipitation"] > 0).astype("int64")
    features["precipitation"] = days["precipitation"].astype("float64")
    features["rained"] = rained
    features["precipitation_yesterday"] = days["precipitation"].shift(1)
    features["rain_days_7"] = rained.rolling(7, min_periods=1).sum().astype("float64")
    features["temp_max"] = days["temp_max"].astype("float64")
    features["temp_min"] = days["temp_min"].astype("float64")
    features["temp_range"] = features["temp_max"] - features["temp_min"]
    features["temp_max_change"] = features["temp_max"].diff()
    features["wind"] = days["wind"].astype("float64")
    features["wind_change"] = features["wind"].diff()
    angle = 2 * np.pi * days[DATE].dt.day_of_year / 365.25
    features["season_sin"] = np.sin(angle)
    features["season_cos"] = np.cos(angle)
    tomorrow = days["precipitation"].shift(-1)
    features[TARGET] = (tomorrow > 0).astype("float64").where(tomorrow.notna())
    return features[[DATE, *FEATURES, TARGET]]


def period_of(dates: pd.Series) -> pd.Series:
    """The period a day belongs to, as pipeline.yaml's `data.period` (month) names it: "2015-07"."""
    return dates.dt.strftime("%Y-%m")


def scores(actual: Any, probability: Any) -> dict[str, float]:
    """How good the probabilities of rain are: ROC AUC (the key metric: how well rainy days are ranked
    above dry ones, 0.5 is a coin), accuracy at 50%, log loss and Brier score (lower is better). The AUC
    is NaN when the days hold one class only: then it cannot be measured."""
    from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score

    actual = np.asarray(actual, dtype="int64")
    probability = np.asarray(probability, dtype="float64")
    both = len(np.unique(actual)) == 2
    return {
        "roc_auc": float(roc_auc_score(actual, probability)) if both else float("nan"),
        "accuracy": float(accuracy_score(actual, probability >= 0.5)),
        "log_loss": float(log_loss(actual, np.clip(probability, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "brier": float(brier_score_loss(actual, probability)),
    }


def describe(prediction: float) -> str:
    """One prediction, as the deploy page and the serving bundle say it."""
    return f"{prediction:.0%} chance of rain"
