"""Drift that matters (runner/nb/drift.py, runner/nb/importance.py): PSI, the tests that confirm a shift (KS
for numbers, chi-square for categories), features weighed by the champion's importance, trending features that
never alarm, the figure of the features that moved most. Known answers are worked out by hand in comments."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from runner.nb import drift, importance

pytestmark = pytest.mark.unit

matplotlib.use("Agg")


def verdicts(table: pd.DataFrame) -> dict[str, str]:
    return dict(zip(table["feature"], table["verdict"], strict=True))


def measured(rows: list[tuple[str, float, str, bool]]) -> pd.DataFrame:
    """A drift table as drift_table makes it: (feature, weight, verdict, trending) rows, a PSI per verdict."""
    psi = {"ok": 0.02, "warn": 0.15, "drift": 0.9, "trend": 3.0, "no data": float("nan")}
    return pd.DataFrame(
        [
            {"feature": name, "weight": weight, "verdict": verdict, "trending": trending, "psi": psi[verdict]}
            for name, weight, verdict, trending in rows
        ]
    )


# --- PSI and the tests that confirm it ----------------------------------------------------------------------


def test_psi_is_zero_for_the_same_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(7)
    reference = pd.Series(rng.normal(0, 1, 5000))
    same = pd.Series(rng.normal(0, 1, 5000))
    shifted = pd.Series(rng.normal(1, 1, 5000))
    assert drift.psi_numeric(reference, same) < 0.02
    assert drift.psi_numeric(reference, shifted) > drift.DRIFT_PSI
    assert drift.psi_numeric(reference, shifted) > drift.psi_numeric(reference, reference + 0.3)


def test_psi_of_categories_counts_a_new_category():
    reference = pd.Series(["a"] * 50 + ["b"] * 50)
    assert drift.psi_categorical(reference, reference) == pytest.approx(0.0)
    # hand-computed: shares (0.5, 0.5, 0) -> (0.25, 0.25, 0.5), the empty bin floored at 1e-4
    expected = 2 * (0.25 - 0.5) * np.log(0.25 / 0.5) + (0.5 - 1e-4) * np.log(0.5 / 1e-4)
    current = pd.Series(["a"] * 25 + ["b"] * 25 + ["c"] * 50)
    assert drift.psi_categorical(reference, current) == pytest.approx(expected)


def test_chi_square_of_categories_has_the_hand_computed_p_value():
    reference = pd.Series(["a"] * 50 + ["b"] * 50)
    current = pd.Series(["a"] * 90 + ["b"] * 10)
    # counts [[50, 50], [90, 10]]; expected [[70, 30], [70, 30]];
    # chi2 = 2 * (20^2/70 + 20^2/30) = 38.095; with one degree of freedom p = erfc(sqrt(chi2 / 2))
    chi2 = 2 * (400 / 70 + 400 / 30)
    assert drift.chi_square_pvalue(reference, current) == pytest.approx(math.erfc(math.sqrt(chi2 / 2)))
    assert drift.chi_square_pvalue(reference, reference) == pytest.approx(1.0)  # the same shares: chi2 = 0
    assert drift.chi_square_pvalue(pd.Series(["a"] * 5), pd.Series(["a"] * 9)) == 1.0  # one category
    assert math.isnan(drift.chi_square_pvalue(reference, pd.Series([], dtype=str)))


def test_categories_get_a_chi_square_test_that_confirms_or_not_instead_of_nan():
    reference = pd.DataFrame({"k": ["a"] * 50 + ["b"] * 50, "few": ["a"] * 5 + ["b"] * 5 + [None] * 90})
    current = pd.DataFrame({"k": ["a"] * 90 + ["b"] * 10, "few": ["a"] * 2 + [None] * 98})
    table = drift.drift_table(reference, current, categorical=["k", "few"]).set_index("feature")
    assert list(table["test"]) == ["chi-square", "chi-square"] and table["pvalue"].notna().all()
    # k: PSI (0.9-0.5) ln(0.9/0.5) + (0.1-0.5) ln(0.1/0.5) = 0.879, p ~ 7e-10: drift
    assert table.loc["k", "psi"] == pytest.approx(0.4 * math.log(1.8) - 0.4 * math.log(0.2))
    assert table.loc["k", "verdict"] == "drift"
    # few: 10 rows against 2, counts [[5, 5], [2, 0]]: chi2 = 1.714, p = erfc(sqrt(0.857)) = 0.19; a huge PSI
    # on two rows that the test does not confirm is only a warning
    expected_chi2 = (
        (5 - 70 / 12) ** 2 / (70 / 12)
        + (5 - 50 / 12) ** 2 / (50 / 12)
        + (2 - 14 / 12) ** 2 / (14 / 12)
        + (10 / 12) ** 2 / (10 / 12)
    )
    assert table.loc["few", "pvalue"] == pytest.approx(math.erfc(math.sqrt(expected_chi2 / 2)))
    assert table.loc["few", "psi"] > drift.DRIFT_PSI and table.loc["few", "verdict"] == "warn"


def test_numbers_are_confirmed_by_kolmogorov_smirnov():
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 2000), "y": rng.normal(0, 1, 2000), "k": ["a"] * 2000})
    current = pd.DataFrame({"x": rng.normal(2, 1, 500), "y": rng.normal(0, 1, 500), "k": ["a"] * 500})
    table = drift.drift_table(reference, current, numeric=["x", "y"], categorical=["k"])
    assert list(table.columns) == drift.TABLE_COLUMNS
    assert verdicts(table) == {"x": "drift", "y": "ok", "k": "ok"}
    assert list(table["test"]) == ["KS", "KS", "chi-square"]
    assert table.set_index("feature").loc["x", "pvalue"] < 1e-6
    assert list(table["weight"]) == pytest.approx([1 / 3] * 3)  # no weights: each weighs the same
    assert drift.verdict(table) == "warn"  # a third of the weight drifts: under half
    assert drift.max_psi(table) == pytest.approx(table["psi"].max())
    assert drift.feature_verdict(0.4, 0.3) == "warn"  # a large PSI the test does not confirm
    assert drift.feature_verdict(0.4, 0.001) == "drift"
    assert drift.feature_verdict(float("nan")) == "no data"


def test_drift_of_empty_data_is_no_data():
    empty = pd.DataFrame({"x": pd.Series(dtype=float)})
    table = drift.drift_table(empty, empty, numeric=["x"])
    assert drift.verdict(table) == "no data" and drift.max_psi(table) == 0.0


# --- weights ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # the feature the model leans on drifts: 0.8 of the weight >= 0.5
        ([("sales", 0.8, "drift", False), ("dept", 0.1, "ok", False), ("temp", 0.1, "ok", False)], "drift"),
        # a minor feature drifts: 0.1 of the weight, under half but over a twentieth
        ([("sales", 0.8, "ok", False), ("dept", 0.1, "drift", False), ("temp", 0.1, "ok", False)], "warn"),
        # a feature the model hardly uses drifts: 0.03 < 0.05, no alarm
        ([("sales", 0.97, "ok", False), ("temp", 0.03, "drift", False)], "ok"),
        # weights in any unit: 3 of 4 drifts (0.75)
        ([("sales", 3.0, "drift", False), ("temp", 1.0, "ok", False)], "drift"),
        # equal weights, as without a champion: one in three drifts -> warn, two in three -> drift
        ([("a", 1 / 3, "drift", False), ("b", 1 / 3, "ok", False), ("c", 1 / 3, "ok", False)], "warn"),
        ([("a", 1 / 3, "drift", False), ("b", 1 / 3, "drift", False), ("c", 1 / 3, "ok", False)], "drift"),
        # no measured feature is one the model uses (all weights 0): each weighs the same, 1 of 2 drifts
        ([("a", 0.0, "drift", False), ("b", 0.0, "ok", False)], "drift"),
        # a trending feature that moved a lot, with most of the weight, never alarms; the rest is ok
        ([("cpi", 0.9, "trend", True), ("sales", 0.1, "ok", False)], "ok"),
        # the trending feature's weight is left out: the one other feature that drifts is all that counts
        ([("cpi", 0.9, "trend", True), ("sales", 0.1, "drift", False)], "drift"),
        # only trending features measured: nothing can alarm
        ([("cpi", 0.5, "trend", True), ("fuel", 0.5, "trend", True)], "ok"),
        # a feature without data is left out
        ([("sales", 0.9, "no data", False), ("temp", 0.1, "ok", False)], "ok"),
        ([("sales", 0.9, "no data", False)], "no data"),
    ],
)
def test_the_data_sets_verdict_weighs_features(rows, expected):
    assert drift.verdict(measured(rows)) == expected


def test_column_weights_add_the_importance_of_features_built_from_a_column():
    model = {"lag_1": 30.0, "lag_52": 20.0, "CPI": 10.0, "month": 40.0}
    sources = {"lag_1": "Weekly_Sales", "lag_52": "Weekly_Sales"}
    weights = drift.column_weights(model, ["Weekly_Sales", "CPI", "Dept"], sources)
    # shares of the model's total (100): sales 30 + 20, CPI 10, Dept none; the calendar's 40 is left out
    assert weights == pytest.approx({"Weekly_Sales": 0.5, "CPI": 0.1, "Dept": 0.0})
    assert drift.column_weights({}, ["a"]) == {"a": 0.0}


def test_trending_features_are_reported_as_trend_and_never_alarm():
    # sales: the same ten values in both, in the same shares (PSI 0); CPI: every current value above the range
    reference = pd.DataFrame({"CPI": np.linspace(210, 212, 60), "sales": np.tile(np.arange(10.0), 6)})
    current = pd.DataFrame({"CPI": np.linspace(219, 220, 30), "sales": np.tile(np.arange(10.0), 3)})
    weights = {"CPI": 0.2, "sales": 0.8}
    alarmed = drift.drift_table(reference, current, numeric=["CPI", "sales"], weights=weights)
    assert verdicts(alarmed)["CPI"] == "drift" and drift.max_psi(alarmed) > 5  # every value beyond the range
    table = drift.drift_table(reference, current, numeric=["CPI", "sales"], weights=weights, trending=["CPI"])
    row = table.set_index("feature").loc["CPI"]
    assert (row["verdict"], bool(row["trending"]), row["weight"]) == ("trend", True, 0.2)
    assert row["psi"] == alarmed.set_index("feature").loc["CPI", "psi"]  # measured all the same
    assert drift.verdict(table) == "ok"
    assert drift.max_psi(table) == pytest.approx(table.set_index("feature").loc["sales", "psi"])
    with pytest.raises(ValueError, match="CPl are not among the features measured"):
        drift.drift_table(reference, current, numeric=["CPI"], trending=["CPl"])  # a misspelt name


# --- the figure ---------------------------------------------------------------------------------------------


def test_the_figure_draws_the_features_that_moved_most_first():
    table = measured(
        [
            ("a", 0.2, "ok", False),
            ("b", 0.2, "trend", True),
            ("c", 0.2, "drift", False),
            ("d", 0.2, "warn", False),
        ]
    ).assign(kind=["numeric", "numeric", "numeric", "category"])
    assert drift.most_moved(table) == ["c", "d", "b"]  # drift, then warn, then trend: ok last
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.normal(0, 1, 40), "b": rng.normal(0, 1, 40), "c": rng.normal(0, 1, 40)})
    frame["d"] = ["x", "y"] * 20
    fig = drift.distribution_figure(frame, frame.assign(c=frame["c"] + 3), table)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["c: PSI 0.90 (drift)", "d: PSI 0.15 (warn)", "b: PSI 3.00 (trends by nature)"]
    assert [text.get_text() for text in fig.axes[0].get_legend().get_texts()] == ["reference", "current"]
    assert [tick.get_text() for tick in fig.axes[1].get_xticklabels()] == ["x", "y"]
    assert drift.distribution_figure(frame, frame, measured([("a", 1.0, "no data", False)])) is None
    sales = pd.DataFrame({"a": np.linspace(20_000, 140_000, 40), "b": 0.0, "c": 0.0, "d": "x"})
    fig = drift.distribution_figure(sales, sales, table.assign(verdict=["drift", "ok", "ok", "ok"]), top=1)
    fig.canvas.draw()
    labels = [tick.get_text() for tick in fig.axes[0].get_xticklabels()]
    assert "120k" in labels and all(len(label) <= 5 for label in labels)  # short: they never run together


# --- importance: recorded by the champion's training, read back by validate ---------------------------------


def test_importance_shares_sum_to_one_largest_first():
    assert importance.shares([1.0, 3.0, 0.0], ["a", "b", "c"]) == {"b": 0.75, "a": 0.25, "c": 0.0}
    assert importance.shares({"a": 0, "b": 0}) == {}
    shares = importance.shares(np.array([2, 6]), np.array(["x", "y"]))
    assert shares == {"y": 0.75, "x": 0.25} and all(type(value) is float for value in shares.values())


def test_without_a_champion_features_weigh_the_same_and_the_report_says_why(tmp_path: Path):
    weighing = importance.champion_weighing("", tmp_path)
    assert weighing.importance == {} and weighing.how.startswith("equally: there is no champion yet")


def test_the_champions_importance_is_read_from_its_training_run(tmp_path: Path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    from runner.project import use_mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    use_mlflow(tmp_path, "drift")
    client = MlflowClient()
    client.create_registered_model("m")
    with mlflow.start_run() as recorded:
        mlflow.log_dict({"lag_1": 0.75, "CPI": 0.25}, importance.ARTIFACT)
    with mlflow.start_run() as older:  # trained before importance was recorded
        mlflow.log_param("x", 1)
    client.create_model_version("m", f"runs:/{recorded.info.run_id}/model", run_id=recorded.info.run_id)
    client.create_model_version("m", f"runs:/{older.info.run_id}/model", run_id=older.info.run_id)

    weighing = importance.champion_weighing("models:/m/1", tmp_path)
    assert weighing.importance == {"lag_1": 0.75, "CPI": 0.25} and weighing.version == "1"
    assert weighing.how == "by the champion's feature importance (version 1, as its training recorded it)"
    older_weighing = importance.champion_weighing("models:/m/2", tmp_path)
    assert older_weighing.importance == {}
    assert "version 2) was trained before feature importance was recorded" in older_weighing.how
    missing = importance.champion_weighing("models:/m/9", tmp_path)
    assert missing.importance == {} and missing.how.startswith("equally: the champion's (version 9) feature")
