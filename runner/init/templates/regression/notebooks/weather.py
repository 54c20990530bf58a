"""How warm will it be tomorrow in Seattle? The data, the features and the target, shared by the stage
notebooks.

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
TARGET = "temp_max_tomorrow"  # the next day's highest temperature, °C
TARGET_TEXT = "tomorrow's highest temperature"
PREDICTION = "prediction"  # what the model gives: tomorrow's highest temperature, °C
KIND = "regression"

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
    features[TARGET] = days["temp_max"].shift(-1).astype("float64")
    return features[[DATE, *FEATURES, TARGET]]


def period_of(dates: pd.Series) -> pd.Series:
    """The period a day belongs to, as pipeline.yaml's `data.period` (month) names it: "2015-07"."""
    return dates.dt.strftime("%Y-%m")


def scores(actual: Any, predicted: Any) -> dict[str, float]:
    """How far the predicted temperatures are from the measured ones, in °C: RMSE (the key metric: big
    misses weigh more), MAE (the typical miss) and bias (positive: predicted too warm)."""
    error = np.asarray(predicted, dtype="float64") - np.asarray(actual, dtype="float64")
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "bias": float(np.mean(error)),
    }


def describe(prediction: float) -> str:
    """One prediction, as the deploy page and the serving bundle say it."""
    return f"a high of {prediction:.1f} °C"
