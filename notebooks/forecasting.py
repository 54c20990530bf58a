"""The demand forecast's features, shared by the stage notebooks.

The features stage builds the training table with `build_features`; the deploy stage uses the same function,
through `forecast_ahead`, to forecast the weeks after the latest known one. One definition of the features
means the model is always fed what it was trained on. One definition of the training (`fit`, with the
model's `SETTINGS`) means the train stage, the evaluate stage's backtests, the refit and the promotion
benchmark (bench/promotion_policies.py) train the same model from the same settings.

Notebooks import this module after finding the project root:

    sys.path.insert(0, str(ROOT / "notebooks"))
    import forecasting
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TARGET = "Weekly_Sales"
SERIES = ["Store", "Dept"]  # one sales series per store and department
LAGS = (1, 2, 4, 52)
LOOKBACK = max(*LAGS, 13)  # how many weeks back a week's features reach: lag_52, the 13-week rolling mean
ECONOMY = ["Temperature", "Fuel_Price", "CPI", "Unemployment"]  # the store's surroundings
MARKDOWNS = [f"MarkDown{i}" for i in range(1, 6)]  # promotions; missing means none recorded

DESCRIPTIONS: dict[str, str] = {
    "Dept": "department",
    "lag_1": "sales last week",
    "lag_2": "sales two weeks ago",
    "lag_4": "sales four weeks ago",
    "lag_52": "sales in the same week last year",
    "rolling_mean_4": "average sales over the previous 4 weeks",
    "rolling_mean_13": "average sales over the previous 13 weeks (a quarter)",
    "rolling_std_4": "spread of sales over the previous 4 weeks",
    "week_of_year": "week number in the year (1-53)",
    "month": "month (1-12)",
    "year": "year",
    "is_holiday": "holiday week (Super Bowl, Labor Day, Thanksgiving, Christmas)",
    "weeks_to_christmas": "weeks until the next Christmas",
    "Temperature": "average temperature in the region (F)",
    "Fuel_Price": "fuel price in the region ($ per gallon)",
    "CPI": "consumer price index",
    "Unemployment": "unemployment rate (%)",
    "markdown_total": "promotional markdowns, total ($, 0 when none recorded)",
}
FEATURES: list[str] = list(DESCRIPTIONS)  # the model's inputs, in this order
# Dept stays an integer column, declared categorical to LightGBM: a pandas category would not survive
# Parquet, and the logged model then takes plain department numbers when it is served.
CATEGORICAL: list[str] = ["Dept"]
# The column of the sales files each derived feature is built from: the validate stage weighs a column's
# drift by the importance of the features built from it (features named like a column are that column;
# the calendar's features come from the date, which drift does not measure).
SOURCES: dict[str, str] = {
    **{f"lag_{lag}": TARGET for lag in LAGS},
    "rolling_mean_4": TARGET,
    "rolling_mean_13": TARGET,
    "rolling_std_4": TARGET,
    "is_holiday": "IsHoliday",
}


# The model's settings (the train stage's parameters set them; MLflow logs them with every model, so that a
# backtest can train the champion's settings again on other weeks). Tweedie: see the train notebook.
SETTINGS: dict[str, Any] = {
    "objective": "tweedie",
    "num_leaves": 15,
    "learning_rate": 0.05,
    "n_estimators": 400,
    "min_child_samples": 10,
    "random_state": 42,
}


def settings(**given: Any) -> dict[str, Any]:
    """The model's settings: SETTINGS with `given` over them (unknown names are refused)."""
    unknown = sorted(set(given) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown model settings: {', '.join(unknown)} (known: {', '.join(SETTINGS)})")
    return {**SETTINGS, **given}


def settings_from(params: Mapping[str, str]) -> dict[str, Any] | None:
    """The settings a model was trained with, from the parameters its MLflow run logged (as text), typed as
    SETTINGS; None when the run did not log them all (a model from before they were logged)."""
    if not all(name in params for name in SETTINGS):
        return None
    found: dict[str, Any] = {}
    for name, default in SETTINGS.items():
        text = str(params[name])
        found[name] = text if isinstance(default, str) else type(default)(float(text))
    return found


def training_rows(features: pd.DataFrame, before: Any = None) -> pd.DataFrame:
    """The rows a model learns from: every week before `before` (all when None) that has a "last week"."""
    rows = features[features["lag_1"].notna()]
    return rows if before is None else rows[rows["Date"] < pd.Timestamp(before)]


def fit(
    features: pd.DataFrame, model_settings: Mapping[str, Any], before: Any = None, *, scored: bool = False
) -> Any:
    """A LightGBM model of `model_settings`, trained on the `training_rows` before `before`. Deterministic:
    the same rows and settings give the same model. `scored`: LightGBM also scores the training rows after
    every tree (`evals_result_["training"]["l1"]`: the learning curve)."""
    import lightgbm as lgb

    rows = training_rows(features, before)
    model = lgb.LGBMRegressor(
        **model_settings,
        # Threads only add overhead on a few hundred rows (the demo); on a million rows, 2 threads train in
        # 20 s instead of 38 s.
        n_jobs=1 if len(rows) < 100_000 else len(os.sched_getaffinity(0)),
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
    )
    X, y = rows[FEATURES], rows[TARGET]
    scoring = {"eval_X": (X,), "eval_y": (y,), "eval_names": ["training"], "eval_metric": "l1"}
    model.fit(X, y, categorical_feature=CATEGORICAL, **(scoring if scored else {}))
    return model


def fit_on_cluster(
    client: Any,
    features_path: Path,
    model_settings: Mapping[str, Any],
    before: Any = None,
    *,
    scored: bool = False,
) -> Any:
    """`fit` on a Dask cluster (runner/nb/compute.py), for a feature table too large for one process: the
    workers read the Parquet file's row groups and LightGBM trains on them together (`lightgbm.dask`, data
    parallel). Returns a plain LightGBM model, as `fit` does: logged, saved and served the same way. Not
    bit-identical to `fit` (the workers bin their own rows and share histograms); tests/test_compute.py
    bounds the difference."""
    import dask.dataframe as dd
    import lightgbm as lgb
    from distributed import wait

    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    table = dd.read_parquet(features_path, columns=["Date", *FEATURES, TARGET], split_row_groups=True)
    rows = table[table["lag_1"].notnull()]  # `training_rows`, in Dask's terms
    if before is not None:
        rows = rows[rows["Date"] < pd.Timestamp(before)]
    # Each worker holds every n-th row of the table: LightGBM's data-parallel learner bins each worker's rows
    # as a sample of the whole, and a slice of the table by position (whole departments) is not one (the
    # demo's model went from 6% to 21% WAPE). Placed explicitly: left to the scheduler, the parts of a file of
    # one row group stay on the worker that read it, and LightGBM trains on that worker alone.
    # (a function of this module would reach the workers by name, and they cannot import this module: the
    # lambda travels whole)
    shares = [
        rows.map_partitions(lambda part, first, step: part.iloc[first::step], i, len(workers))
        for i in range(len(workers))
    ]
    placed = [
        client.compute(part, workers=[worker], allow_other_workers=False)
        for worker, share in zip(workers, shares, strict=True)
        for part in share.to_delayed()
    ]
    wait(placed)
    rows = dd.from_delayed(placed, meta=rows._meta, verify_meta=False)
    model = lgb.DaskLGBMRegressor(
        client=client, **model_settings, deterministic=True, force_row_wise=True, verbose=-1
    )
    X, y = rows[FEATURES], rows[TARGET]
    scoring = {"eval_X": (X,), "eval_y": (y,), "eval_names": ["training"], "eval_metric": "l1"}
    with warnings.catch_warnings():  # each worker trains on its own threads: LightGBM's n_jobs is moot
        warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
        model.fit(X, y, categorical_feature=CATEGORICAL, **(scoring if scored else {}))
    return model.to_local()


def fit_with(
    client: Any,
    features: pd.DataFrame,
    features_path: Path,
    model_settings: Mapping[str, Any],
    before: Any = None,
    *,
    scored: bool = False,
) -> Any:
    """`fit_on_cluster` with a client (the stage's data is large: runner/nb/compute.py), else `fit` on
    `features`, the table read in this process."""
    if client is not None:
        return fit_on_cluster(client, features_path, model_settings, before, scored=scored)
    return fit(features, model_settings, before, scored=scored)


def example_rows(features_path: Path, count: int = 5) -> pd.DataFrame:
    """The first `count` training rows of the feature table, the model's inputs only, read batch by batch:
    the input example logged with a model, without loading the table."""
    import pyarrow.parquet as pq

    found: list[pd.DataFrame] = []
    for batch in pq.ParquetFile(features_path).iter_batches(batch_size=10_000, columns=FEATURES):
        found.append(training_rows(batch.to_pandas()))
        if sum(len(rows) for rows in found) >= count:
            break
    return pd.concat(found).head(count).reset_index(drop=True)


def sales_files(root: Path, history_glob: str, new_glob: str) -> list[str]:
    """The sales files, history first, each group in name order (globs are relative to `root`)."""
    return sorted(glob.glob(str(root / history_glob))) + sorted(glob.glob(str(root / new_glob)))


def load_sales(root: Path, history_glob: str, new_glob: str) -> pd.DataFrame:
    """All sales rows of the history and new files, typed and sorted by store, department and week.

    `Date` becomes a timestamp and `IsHoliday` a boolean; the other columns stay as read. Raises
    FileNotFoundError when no file matches.
    """
    files = sales_files(root, history_glob, new_glob)
    if not files:
        raise FileNotFoundError(f"no sales file matches {history_glob} or {new_glob} under {root}")
    sales = pd.concat([pd.read_csv(path) for path in files], ignore_index=True)
    sales["Date"] = pd.to_datetime(sales["Date"], format="%Y-%m-%d")
    sales["IsHoliday"] = sales["IsHoliday"].astype(str).str.strip().str.lower().isin(["true", "1"])
    return sales.sort_values([*SERIES, "Date"]).reset_index(drop=True)


def build_features(sales: pd.DataFrame) -> pd.DataFrame:
    """One row per store, department and week: Date, Store, Dept, Weekly_Sales, then the other FEATURES.

    Sales features use earlier weeks of the same series only, so a week's own sales never leak into its
    features; weeks must be consecutive within a series (the validate stage checks it). Integer features
    are int64 and the others float64, as the model was trained on them.
    """
    sales = sales.sort_values([*SERIES, "Date"]).reset_index(drop=True)
    features = sales[["Date", *SERIES, TARGET]].copy()
    by_series = sales.groupby(SERIES, sort=False)[TARGET]
    for lag in LAGS:
        features[f"lag_{lag}"] = by_series.shift(lag)
    # Shift first, then roll: a week's window holds only the weeks before it (no leakage of its own sales).
    # A grouped rolling window is computed in one pass over all series (a Python function per series took
    # 8 s on a million rows); its result is indexed by series first, then by row: back to the rows' index.
    previous = by_series.shift(1).groupby([sales[column] for column in SERIES], sort=False)
    for name, window in (("rolling_mean_4", previous.rolling(4)), ("rolling_mean_13", previous.rolling(13))):
        features[name] = window.mean().droplevel(list(range(len(SERIES))))
    features["rolling_std_4"] = previous.rolling(4).std().droplevel(list(range(len(SERIES))))

    date = sales["Date"]
    features["week_of_year"] = date.dt.isocalendar().week.astype("int64")
    features["month"] = date.dt.month.astype("int64")
    features["year"] = date.dt.year.astype("int64")
    features["is_holiday"] = sales["IsHoliday"].astype("int64")
    christmas = _christmas(date.dt.year)
    christmas = christmas.where(date <= christmas, _christmas(date.dt.year + 1))
    features["weeks_to_christmas"] = ((christmas - date).dt.days // 7).astype("int64")
    for column in ECONOMY:
        features[column] = sales[column].astype("float64")
    features["markdown_total"] = sales.reindex(columns=MARKDOWNS).fillna(0).sum(axis=1).astype("float64")
    return features[["Date", *SERIES, TARGET, *[name for name in FEATURES if name not in SERIES]]]


def _christmas(years: pd.Series) -> pd.Series:
    return pd.to_datetime(pd.DataFrame({"year": years, "month": 12, "day": 25}))


def holidays(year: int) -> list[pd.Timestamp]:
    """The days that make a week a holiday week in the data: Super Bowl Sunday, Labor Day, Thanksgiving
    and Christmas Day of `year`.

    The Super Bowl is played on the first Sunday of February up to 2021 and on the second one since 2022
    (the longer NFL season); Labor Day is the first Monday of September, Thanksgiving the fourth Thursday
    of November.
    """
    february_sundays = [day for day in pd.date_range(f"{year}-02-01", periods=14) if day.dayofweek == 6]
    super_bowl = february_sundays[0 if year <= 2021 else 1]
    labor_day = next(day for day in pd.date_range(f"{year}-09-01", periods=7) if day.dayofweek == 0)
    thursdays = [day for day in pd.date_range(f"{year}-11-01", periods=30) if day.dayofweek == 3]
    return [super_bowl, labor_day, thursdays[3], pd.Timestamp(f"{year}-12-25")]


def is_holiday_week(week_end: pd.Timestamp) -> bool:
    """Whether the week ending on `week_end` (the data dates a week by its last day, a Friday) holds one of
    the `holidays`: the definition of the data's IsHoliday column."""
    week_end = pd.Timestamp(week_end).normalize()
    start = week_end - pd.Timedelta(days=6)
    years = {start.year, week_end.year}
    return any(start <= day <= week_end for year in years for day in holidays(year))


def forecast_ahead(
    model_predict: Callable[[pd.DataFrame], Any], sales: pd.DataFrame, weeks: int
) -> pd.DataFrame:
    """Forecast the `weeks` weeks after the latest week of `sales`, one week at a time.

    `model_predict` takes a frame of the FEATURES columns and returns one forecast per row (a fitted
    model's `predict`, or an MLflow pyfunc model's). The series forecast are those present in the latest
    week. Each future week's sales features (lags, rolling means) come from the actual sales and, for the
    weeks after the first, from the previous weeks' forecasts. Temperature, Fuel_Price, CPI and
    Unemployment are carried forward from the latest week (the last value known, if that week misses one),
    the markdowns as they were in the latest week; IsHoliday comes from the calendar (`is_holiday_week`).

    Returns one row per series and future week: Date, Store, Dept, the other FEATURES as the model received
    them, and `forecast`.
    """
    if weeks < 1:
        raise ValueError(f"weeks must be at least 1, not {weeks}")
    if sales.empty:
        raise ValueError("no sales to forecast from")
    known = sales.sort_values([*SERIES, "Date"]).reset_index(drop=True)
    last = known["Date"].max()
    latest = known[known["Date"] == last].copy()
    latest[ECONOMY] = known.groupby(SERIES, sort=False)[ECONOMY].ffill().loc[latest.index]
    # The features of the weeks ahead read at most LOOKBACK weeks back: the rest of the history would only be
    # rebuilt (once per week ahead) to be thrown away.
    known = known.groupby(SERIES, sort=False).tail(LOOKBACK).reset_index(drop=True)
    forecasts = []
    for step in range(1, weeks + 1):
        week = last + pd.Timedelta(weeks=step)
        future = latest.assign(Date=week, IsHoliday=is_holiday_week(week), **{TARGET: np.nan})
        table = build_features(pd.concat([known, future], ignore_index=True))
        rows = table[table["Date"] == week].drop(columns=TARGET).reset_index(drop=True)
        predicted = np.asarray(model_predict(rows[FEATURES]), dtype="float64").reshape(-1)
        if len(predicted) != len(rows):
            raise ValueError(f"the model returned {len(predicted)} forecasts for {len(rows)} rows")
        rows["forecast"] = predicted
        forecasts.append(rows)
        filled = future.drop(columns=TARGET).merge(
            rows[[*SERIES, "forecast"]].rename(columns={"forecast": TARGET}), on=SERIES, how="left"
        )
        known = pd.concat([known, filled], ignore_index=True)
    return pd.concat(forecasts, ignore_index=True)


def wape(actual: Any, forecast: Any) -> float:
    """Weighted absolute percentage error: the total absolute error as a share of total sales. The demo's
    key metric: pipeline.yaml names this function as the smoke check's score."""
    actual, forecast = np.asarray(actual, dtype="float64"), np.asarray(forecast, dtype="float64")
    return float(np.abs(actual - forecast).sum() / np.abs(actual).sum())


def scores(actual: Any, forecast: Any) -> dict[str, float]:
    """WAPE, MAE and RMSE, as the evaluation records them."""
    error = np.asarray(actual, dtype="float64") - np.asarray(forecast, dtype="float64")
    return {
        "wape": wape(actual, forecast),
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt((error**2).mean())),
    }
