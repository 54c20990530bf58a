"""Drift between the data a model learned from (the reference) and the data it now meets (the current).

For notebooks: `drift_table(reference, current, numeric=[...], categorical=[...])` gives one row per feature
with its population stability index (PSI) and, for numbers, the two-sample Kolmogorov-Smirnov p-value.
`verdict(table)` sums it up for the whole data set. A numeric feature is said to drift when its PSI is above
0.25 and the Kolmogorov-Smirnov test confirms it (p < 0.05): on the few dozen rows of a weekly drop, decile
bins are coarse and the PSI alone raises false alarms.

PSI = sum over bins of (current share - reference share) * ln(current share / reference share). Numbers
are binned at the reference's deciles, so that each bin holds a tenth of the reference and a value outside
the reference's range still lands in the first or last bin; categories are their own bins. Conventional
reading (Siddiqi, "Credit Risk Scorecards"): under 0.1 stable, 0.1 to 0.25 a shift worth a look, above 0.25
a shift that matters. Empty bins get a small floor share (`FLOOR`) so that the logarithm stays finite.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

WARN_PSI = 0.1
DRIFT_PSI = 0.25
FLOOR = 1e-4  # the share given to an empty bin: 1 in 10,000
BINS = 10
KS_ALPHA = 0.05  # a KS p-value below this confirms a numeric feature's shift
TABLE_COLUMNS = ["feature", "kind", "psi", "ks_pvalue", "verdict", "reference_rows", "current_rows"]


def psi_numeric(reference: pd.Series[Any], current: pd.Series[Any], bins: int = BINS) -> float:
    """PSI of a numeric feature, binned at the reference's quantiles; NaN when either side has no value."""
    ref = pd.to_numeric(reference, errors="coerce").dropna().to_numpy(dtype=float)
    cur = pd.to_numeric(current, errors="coerce").dropna().to_numpy(dtype=float)
    if len(ref) == 0 or len(cur) == 0:
        return float("nan")
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    # searchsorted puts everything below the first edge in bin 0 and above the last in the last bin
    ref_counts = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=len(inner) + 1)
    cur_counts = np.bincount(np.searchsorted(inner, cur, side="right"), minlength=len(inner) + 1)
    return _psi(ref_counts, cur_counts)


def psi_categorical(reference: pd.Series[Any], current: pd.Series[Any]) -> float:
    """PSI of a categorical feature, each category its own bin (a category new in `current` counts)."""
    ref = reference.dropna().astype(str)
    cur = current.dropna().astype(str)
    if len(ref) == 0 or len(cur) == 0:
        return float("nan")
    categories = sorted(set(ref.unique()) | set(cur.unique()))
    ref_counts = ref.value_counts().reindex(categories, fill_value=0).to_numpy()
    cur_counts = cur.value_counts().reindex(categories, fill_value=0).to_numpy()
    return _psi(ref_counts, cur_counts)


def _psi(ref_counts: np.ndarray[Any, Any], cur_counts: np.ndarray[Any, Any]) -> float:
    ref_share = np.maximum(ref_counts / ref_counts.sum(), FLOOR)
    cur_share = np.maximum(cur_counts / cur_counts.sum(), FLOOR)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def ks_pvalue(reference: pd.Series[Any], current: pd.Series[Any]) -> float:
    """The two-sample Kolmogorov-Smirnov test's p-value (small: the two samples differ); NaN if empty."""
    from scipy.stats import ks_2samp  # scipy comes with scikit-learn; imported here, only when needed

    ref = pd.to_numeric(reference, errors="coerce").dropna().to_numpy(dtype=float)
    cur = pd.to_numeric(current, errors="coerce").dropna().to_numpy(dtype=float)
    if len(ref) == 0 or len(cur) == 0:
        return float("nan")
    return float(ks_2samp(ref, cur).pvalue)


def feature_verdict(psi: float, ks_p: float = float("nan")) -> str:
    """ok, warn or drift from the PSI; for numbers, a PSI above DRIFT_PSI that the KS test does not confirm
    (p-value at or above KS_ALPHA: small samples bin coarsely) is only a warning."""
    if np.isnan(psi):
        return "no data"
    if psi >= DRIFT_PSI:
        return "warn" if not np.isnan(ks_p) and ks_p >= KS_ALPHA else "drift"
    return "warn" if psi >= WARN_PSI else "ok"


def drift_table(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numeric: Sequence[str] = (),
    categorical: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per feature: feature, kind, psi, ks_pvalue (NaN for categories), verdict, row counts."""
    rows = []
    for name in numeric:
        psi = psi_numeric(reference[name], current[name])
        rows.append((name, "numeric", psi, ks_pvalue(reference[name], current[name])))
    for name in categorical:
        rows.append((name, "category", psi_categorical(reference[name], current[name]), float("nan")))
    table = pd.DataFrame(
        [
            {
                "feature": name,
                "kind": kind,
                "psi": psi,
                "ks_pvalue": pvalue,
                "verdict": feature_verdict(psi, pvalue),
                "reference_rows": int(reference[name].notna().sum()),
                "current_rows": int(current[name].notna().sum()),
            }
            for name, kind, psi, pvalue in rows
        ],
        columns=TABLE_COLUMNS,
    )
    return table.astype({"psi": "float64", "ks_pvalue": "float64"})


def verdict(table: pd.DataFrame, *, drift_share: float = 0.5) -> str:
    """The data set's verdict: `drift` when at least `drift_share` of the features drift, `warn` when any
    feature drifts or shifts, `ok` otherwise (`no data` when nothing could be measured)."""
    measured = table[table["verdict"] != "no data"]
    if measured.empty:
        return "no data"
    drifting = (measured["verdict"] == "drift").mean()
    if drifting >= drift_share:
        return "drift"
    return "warn" if (measured["verdict"] != "ok").any() else "ok"


def max_psi(table: pd.DataFrame) -> float:
    """The largest PSI of the table, 0.0 for a table with nothing measured (no drift to gate on)."""
    values = table["psi"].dropna()
    return float(values.max()) if len(values) else 0.0
