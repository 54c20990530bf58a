"""Drift between the data a model learned from (the reference) and the data it now meets (the current).

For notebooks: `drift_table(reference, current, numeric=[...], categorical=[...], weights=...,
trending=[...])` gives one row per feature: its population stability index (PSI), the test that confirms a
shift and its p-value, the feature's weight in the verdict and whether it trends by nature. `verdict(table)`
sums it up for the whole data set; `distribution_figure` draws reference against current for the features
that moved most.

- **PSI** = sum over bins of (current share - reference share) * ln(current share / reference share).
  Numbers are binned at the reference's deciles, so that each bin holds a tenth of the reference and a value
  outside the reference's range still lands in the first or last bin; categories are their own bins.
  Conventional reading (Siddiqi, "Credit Risk Scorecards"): under 0.1 stable, 0.1 to 0.25 a shift worth a
  look, above 0.25 a shift that matters. Empty bins get a small floor share (`FLOOR`) so that the logarithm
  stays finite.
- **Confirmation**: on the few dozen rows of a weekly drop, bins are coarse and the PSI alone raises false
  alarms. A PSI above 0.25 is called drift only when a test confirms it (p < `ALPHA`): the two-sample
  Kolmogorov-Smirnov test for numbers, Pearson's chi-square test of homogeneity for categories (the
  reference's and the current's counts per category, as a 2 x k table).
- **Weights**: a shift in a feature the model hardly uses matters less than one in the feature it leans on.
  `column_weights` turns a model's feature importance into a weight per measured column (a model feature
  built from a column, `lag_1` from sales, say, adds its importance to that column's). Without weights,
  every feature weighs the same.
- **Trending features**: some features move by nature (prices, an index, a count that grows). Declared as
  `trending`, they are measured and reported with the verdict `trend`, but never alarm: the data set's
  verdict and `max_psi` leave them out.
- **The data set's verdict**: `drift` when the features that drift carry at least `drift_share` of the
  weight of the features measured (trending ones aside), `warn` when those that drift or shift carry at
  least `warn_share`, `ok` otherwise. With equal weights and `drift_share` 0.5, half the features must drift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

WARN_PSI = 0.1
DRIFT_PSI = 0.25
FLOOR = 1e-4  # the share given to an empty bin: 1 in 10,000
BINS = 10
ALPHA = 0.05  # a test's p-value below this confirms a shift
KS_ALPHA = ALPHA  # the name of older notebooks
DRIFT_SHARE = 0.5  # the share of the weight that must drift for the data set to drift
WARN_SHARE = 0.05  # the share of the weight that must drift or shift for a warning
TABLE_COLUMNS = [
    "feature", "kind", "weight", "trending", "psi", "test", "pvalue", "verdict", "reference_rows",
    "current_rows",
]  # fmt: skip
ALARMS = ("drift", "warn")  # the verdicts of a feature that moved; `trend` is one that moved by nature


def psi_numeric(reference: pd.Series[Any], current: pd.Series[Any], bins: int = BINS) -> float:
    """PSI of a numeric feature, binned at the reference's quantiles; NaN when either side has no value."""
    ref, cur = _numbers(reference), _numbers(current)
    if len(ref) == 0 or len(cur) == 0:
        return float("nan")
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    # searchsorted puts everything below the first edge in bin 0 and above the last in the last bin
    ref_counts = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=len(inner) + 1)
    cur_counts = np.bincount(np.searchsorted(inner, cur, side="right"), minlength=len(inner) + 1)
    return _psi(ref_counts, cur_counts)


def psi_categorical(reference: pd.Series[Any], current: pd.Series[Any]) -> float:
    """PSI of a categorical feature, each category its own bin (a category new in `current` counts)."""
    counts = category_counts(reference, current)
    return float("nan") if counts is None else _psi(*counts)


def category_counts(
    reference: pd.Series[Any], current: pd.Series[Any]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]] | None:
    """The counts of each category seen on either side (reference's, current's); None if a side is empty."""
    ref, cur = reference.dropna().astype(str), current.dropna().astype(str)
    if len(ref) == 0 or len(cur) == 0:
        return None
    categories = sorted(set(ref.unique()) | set(cur.unique()))
    return (
        ref.value_counts().reindex(categories, fill_value=0).to_numpy(),
        cur.value_counts().reindex(categories, fill_value=0).to_numpy(),
    )


def _psi(ref_counts: np.ndarray[Any, Any], cur_counts: np.ndarray[Any, Any]) -> float:
    ref_share = np.maximum(ref_counts / ref_counts.sum(), FLOOR)
    cur_share = np.maximum(cur_counts / cur_counts.sum(), FLOOR)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def _numbers(values: pd.Series[Any]) -> np.ndarray[Any, Any]:
    numbers: np.ndarray[Any, Any] = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
    return numbers


def ks_pvalue(reference: pd.Series[Any], current: pd.Series[Any]) -> float:
    """The two-sample Kolmogorov-Smirnov test's p-value (small: the two samples differ); NaN if empty."""
    from scipy.stats import ks_2samp  # scipy comes with scikit-learn; imported here, only when needed

    ref, cur = _numbers(reference), _numbers(current)
    if len(ref) == 0 or len(cur) == 0:
        return float("nan")
    return float(ks_2samp(ref, cur).pvalue)


def chi_square_pvalue(reference: pd.Series[Any], current: pd.Series[Any]) -> float:
    """Pearson's chi-square test of homogeneity of the two samples' categories (no continuity correction):
    small when the categories' shares differ. 1.0 when only one category is seen (nothing can differ);
    NaN when a side is empty."""
    from scipy.stats import chi2_contingency

    counts = category_counts(reference, current)
    if counts is None:
        return float("nan")
    if len(counts[0]) < 2:
        return 1.0
    return float(chi2_contingency(np.vstack(counts), correction=False).pvalue)


def feature_verdict(psi: float, pvalue: float = float("nan"), *, trending: bool = False) -> str:
    """ok, warn or drift from the PSI; a PSI above DRIFT_PSI that its test does not confirm (p-value at or
    above ALPHA) is only a warning. A trending feature that moved is `trend`: reported, never an alarm."""
    if np.isnan(psi):
        return "no data"
    if psi >= DRIFT_PSI:
        moved = "warn" if not np.isnan(pvalue) and pvalue >= ALPHA else "drift"
    else:
        moved = "warn" if psi >= WARN_PSI else "ok"
    return "trend" if trending and moved in ALARMS else moved


def column_weights(
    importance: Mapping[str, float], columns: Sequence[str], sources: Mapping[str, str] | None = None
) -> dict[str, float]:
    """Each column's share of the model's importance: the importance of every model feature built from it
    (`sources` names a derived feature's column, `{"lag_1": "Weekly_Sales"}`; a feature named like a column
    is that column). Importance is normalised to the model's total, so the weights of the columns measured
    sum to at most 1 (model features built from no measured column, a calendar, say, are left out)."""
    total = sum(max(float(value), 0.0) for value in importance.values())
    weights = dict.fromkeys(columns, 0.0)
    if total <= 0:
        return weights
    for feature, value in importance.items():
        column = (sources or {}).get(feature, feature)
        if column in weights:
            weights[column] += max(float(value), 0.0) / total
    return weights


def drift_table(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numeric: Sequence[str] = (),
    categorical: Sequence[str] = (),
    weights: Mapping[str, float] | None = None,
    trending: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per feature (TABLE_COLUMNS): feature, kind, weight (`weights`' value, 0 for a feature it does
    not name; the same for all without `weights`), trending, psi, test (KS or chi-square), pvalue, verdict,
    row counts. A trending feature that is not measured is an error (a misspelt name would alarm again)."""
    features = [*numeric, *categorical]
    unknown = sorted(set(trending) - set(features))
    if unknown:
        raise ValueError(f"trending feature(s) {', '.join(unknown)} are not among the features measured")
    rows = []
    for name in features:
        ref, cur = reference[name], current[name]
        if name in numeric:
            kind, psi, test, pvalue = "numeric", psi_numeric(ref, cur), "KS", ks_pvalue(ref, cur)
        else:
            kind, psi, test, pvalue = (
                "category",
                psi_categorical(ref, cur),
                "chi-square",
                chi_square_pvalue(ref, cur),
            )
        rows.append(
            {
                "feature": name,
                "kind": kind,
                "weight": float(weights.get(name, 0.0)) if weights is not None else 1 / len(features),
                "trending": name in trending,
                "psi": psi,
                "test": test,
                "pvalue": pvalue,
                "verdict": feature_verdict(psi, pvalue, trending=name in trending),
                "reference_rows": int(ref.notna().sum()),
                "current_rows": int(cur.notna().sum()),
            }
        )
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    return table.astype({"psi": "float64", "pvalue": "float64", "weight": "float64", "trending": "bool"})


def _alarming(table: pd.DataFrame) -> pd.DataFrame:
    """The features measured that may alarm: not trending, with a PSI."""
    trending = table["trending"].astype(bool) if "trending" in table else False
    return table[(table["verdict"] != "no data") & ~trending]


def verdict(table: pd.DataFrame, *, drift_share: float = DRIFT_SHARE, warn_share: float = WARN_SHARE) -> str:
    """The data set's verdict, weighing features by their weight (see the module's docstring): `drift`,
    `warn`, `ok`, or `no data` when nothing could be measured. Trending features never raise it."""
    if (table["verdict"] == "no data").all():
        return "no data"
    measured = _alarming(table)
    if measured.empty:
        return "ok"
    weight = measured["weight"].astype(float).clip(lower=0) if "weight" in measured else None
    if weight is None or weight.sum() <= 0:  # no feature measured is one the model uses: each weighs the same
        weight = pd.Series(1.0, index=measured.index)
    share = weight / weight.sum()
    if share[measured["verdict"] == "drift"].sum() >= drift_share:
        return "drift"
    return "warn" if share[measured["verdict"].isin(ALARMS)].sum() >= warn_share else "ok"


def max_psi(table: pd.DataFrame) -> float:
    """The largest PSI of the features that may alarm (trending ones aside), 0.0 when none was measured."""
    values = _alarming(table)["psi"].dropna()
    return float(values.max()) if len(values) else 0.0


def most_moved(table: pd.DataFrame, top: int = 3) -> list[str]:
    """The features that moved most: those that drift, then shift, then trend, each by PSI, largest first."""
    rank = {"drift": 0, "warn": 1, "trend": 2, "ok": 3}
    measured = table[table["verdict"] != "no data"]
    ordered = sorted(measured.itertuples(index=False), key=lambda row: (rank.get(row.verdict, 4), -row.psi))
    return [str(row.feature) for row in ordered[:top]]


def distribution_figure(
    reference: pd.DataFrame, current: pd.DataFrame, table: pd.DataFrame, *, top: int = 3, dpi: int = 90
) -> Any:
    """Reference against current for the `top` features that moved most, one small panel each: shares of
    rows per bin (numbers, the same bins for both) or per category. None when no feature was measured."""
    import matplotlib.pyplot as plt

    names = most_moved(table, top)
    if not names:
        return None
    rows = table.set_index("feature")
    fig, axes = plt.subplots(1, len(names), figsize=(3.3 * len(names), 2.5), dpi=dpi, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=True):
        row = rows.loc[name]
        if row["kind"] == "numeric":
            _numeric_panel(ax, _numbers(reference[name]), _numbers(current[name]))
        else:
            _category_panel(ax, reference[name], current[name])
        note = "trends by nature" if row["verdict"] == "trend" else str(row["verdict"])
        ax.set_title(f"{name}: PSI {row['psi']:.2f} ({note})", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, axis="y")
    axes.flat[0].set_ylabel("share of rows", fontsize=8)
    axes.flat[0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


REFERENCE_COLOUR, CURRENT_COLOUR = "#8c8c8c", "#dd8452"


def _numeric_panel(ax: Any, ref: np.ndarray[Any, Any], cur: np.ndarray[Any, Any]) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins=12)
    for values, colour, label in ((ref, REFERENCE_COLOUR, "reference"), (cur, CURRENT_COLOUR, "current")):
        weights = np.full(len(values), 1 / len(values))
        ax.hist(
            values, bins=edges, weights=weights, histtype="step", linewidth=1.6, color=colour, label=label
        )
    ax.xaxis.set_major_locator(MaxNLocator(5))  # a few short labels: "120k", not "100000120000" run together
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _compact(value)))


def _compact(value: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def _category_panel(ax: Any, reference: pd.Series[Any], current: pd.Series[Any]) -> None:
    counts = category_counts(reference, current)
    if counts is None:
        return
    categories = sorted(set(reference.dropna().astype(str)) | set(current.dropna().astype(str)))
    shown = np.argsort(-(counts[0] + counts[1]))[:12]  # the 12 largest categories: a panel stays readable
    place = np.arange(len(shown))
    for offset, side, colour, label in (
        (-0.2, counts[0], REFERENCE_COLOUR, "reference"),
        (0.2, counts[1], CURRENT_COLOUR, "current"),
    ):
        ax.bar(place + offset, side[shown] / side.sum(), width=0.4, color=colour, label=label)
    ax.set_xticks(place, [categories[index] for index in shown], rotation=45 if len(shown) > 6 else 0)
