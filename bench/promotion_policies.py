"""Which promotion policy serves customers best? The 30 real replay weeks of the demo, under each policy.

    .venv/bin/python bench/promotion_policies.py            # both scenarios, the table printed
    .venv/bin/python bench/promotion_policies.py --weeks 10 # the first 10 replay weeks only (quicker)

The demo's history is 113 weeks of real sales; the next 30 weeks arrive one a week. After each week's run,
production (the champion) forecasts the following week: that error is what customers got. Running the
pipeline 150 times would take hours, and needlessly: the challenger trained at week t is the same under every
policy, only which champion is live differs. So, per week, this trains the challenger once with the demo's
own code (notebooks/forecasting.py: `fit`, `SETTINGS`), compares it with each policy's current champion
with the package's own functions (runner/production/promotion.py: the paired block bootstrap and the
rules; runner/nb/compare.py: the rolling origins), and follows each policy's live model:

    always        every week's model is promoted (its refit on every week ships)
    never         the first model stays in production for good
    today         the rule before the promotion policy: the evaluated model (trained without the last 8 weeks)
                  ships when its WAPE on those weeks is at most 2% worse than the champion's, same weeks
    threshold     the same 2% rule on the backtests' point estimate, the refit ships
    non_inferior  the backtests' 90% interval may reach `margin` worse, not more; the refit ships
    superior      the backtests' 90% interval must be wholly better; the refit ships

Every policy passes the evaluate stage's gates first (WAPE at most 15%, better than the same week last year).

Two scenarios: `weekly` is the demo as it is (the same settings every week: a weekly retrain on new data);
`changes` also merges a change of the model's settings every 5 weeks (a team trying a variant), so that a
challenger can be really better or worse than the champion. The columns:

    live WAPE       production's error on the week after each run, pooled over the weeks (what customers got)
    live error      the same as dollars of sales missed, summed over those weeks
    promotions      champions replaced (the first champion not counted)
    worse then      promoted while worse than the champion on the point estimate the decision saw
    worse after     promoted, and worse than the model it replaced on the following 4 weeks (pooled WAPE)
    worse > 0.5 pt  the same, by more than half a point of WAPE
    worse beyond noise  worse than the model it replaced on every remaining week of the replay, the 90%
                    paired bootstrap's interval (weeks resampled) wholly on the worse side
    refreshes worse / changes worse   `worse after`, split: a refit of the champion's own settings on newer
                    data, and a change of settings

`--refresh-held` adds what-if policies the runner does not offer (`<policy>+refresh`): when a challenger is
held or refused, the champion's own settings are refit on the new week and ship; unchanged settings always
ship.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "notebooks"))

import forecasting  # noqa: E402  (the demo's own code, beside the notebooks)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from runner.nb.compare import backtest_origins  # noqa: E402
from runner.paired import Policy, compare  # noqa: E402
from runner.production.promotion import decide  # noqa: E402
from runner.records import KeyMetric  # noqa: E402

SOURCE = "data/source/walmart_sales_weekly.csv"
HISTORY_WEEKS = 113  # data/walmart.py: the demo starts with these, 30 weeks are replayed
HORIZON = 8  # holdout_weeks
ORIGINS = 4  # backtest_origins
FOLLOWING = 4  # weeks a promotion is judged on afterwards
WORSE_BY = 0.005  # half a point of WAPE
WAPE = KeyMetric("wape", "percent", 1, label="WAPE", better="lower")
CHANGES = [  # the `changes` scenario: merged at weeks 6, 11, 16, 21, 26 (each replaces the one before)
    {"num_leaves": 31},
    {"learning_rate": 0.1, "n_estimators": 200},
    {"objective": "regression"},
    {"num_leaves": 7, "min_child_samples": 20},
    {"objective": "regression_l1"},
]


def wape(actual: Any, predicted: Any) -> float:
    return forecasting.wape(actual, predicted)


class Models:
    """Every model the replay needs, trained once: the same settings on the same weeks give the same model."""

    def __init__(self, features: pd.DataFrame) -> None:
        self.features = features
        self.fitted: dict[tuple[str, str], Any] = {}
        self.seconds = 0.0

    def predict(self, settings: Mapping[str, Any], before: pd.Timestamp, rows: pd.DataFrame) -> np.ndarray:
        key = (json.dumps(settings, sort_keys=True), str(before))
        if key not in self.fitted:
            started = time.monotonic()
            self.fitted[key] = forecasting.fit(self.features, settings, before=before)
            self.seconds += time.monotonic() - started
        return np.asarray(self.fitted[key].predict(rows[forecasting.FEATURES]), dtype="float64")


@dataclass(frozen=True)
class Model:
    """A model as the replay knows it: its settings and the first week it did not learn from."""

    settings: Mapping[str, Any]
    before: pd.Timestamp
    week: int  # the run that trained it


@dataclass
class Tally:
    """One policy's story over the replay."""

    name: str
    champion: Model | None = None
    promotions: list[tuple[int, Model, Model]] = field(default_factory=list)  # (week, new, replaced)
    worse_then: int = 0
    live_abs: float = 0.0
    live_sales: float = 0.0
    live_weeks: int = 0


def run_week(
    t: int,
    last: int,
    weeks: list[pd.Timestamp],
    features: pd.DataFrame,
    models: Models,
    settings: Mapping[str, Any],
    tallies: dict[str, Tally],
    rules: Mapping[str, Policy],
) -> None:
    """The run of replay week `t` (the data ends with weeks[last]): each policy decides, production moves."""
    known = features[features["Date"] <= weeks[last]]
    holdout_start = weeks[last - HORIZON + 1]
    holdout = known[known["Date"] >= holdout_start]
    evaluated = Model(settings, holdout_start, t)
    refit = Model(settings, weeks[last] + pd.Timedelta(days=1), t)
    forecast = models.predict(settings, holdout_start, holdout)
    challenger_wape = wape(holdout["Weekly_Sales"], forecast)
    baseline = holdout.dropna(subset=["lag_52"])
    gates = challenger_wape <= 0.15 and challenger_wape < wape(baseline["Weekly_Sales"], baseline["lag_52"])
    for name, tally in tallies.items():
        new = evaluated if name == "today" else refit
        if tally.champion is None:
            if gates:
                tally.champion = new
            continue
        if not gates or name == "never":
            continue
        if name == "always":
            promote, worse = True, False
        elif name == "today":
            champion = models.predict(tally.champion.settings, tally.champion.before, holdout)
            theirs = wape(holdout["Weekly_Sales"], champion)
            promote, worse = challenger_wape <= theirs * 1.02, challenger_wape > theirs
        else:
            rule = rules[name.removesuffix("+refresh")]
            if name.endswith("+refresh") and dict(settings) == dict(tally.champion.settings):
                promote, worse = True, False  # the champion's own settings on newer data
            else:
                paired = backtests(known, weeks[: last + 1], models, settings, tally.champion.settings)
                found = compare(paired, wape, rule)
                decision = decide(rule, found, WAPE)
                promote, worse = decision.verdict == "promote", found.difference > 0
                if not promote and name.endswith("+refresh"):
                    refreshed = Model(tally.champion.settings, refit.before, t)
                    tally.promotions.append((t, refreshed, tally.champion))
                    tally.champion = refreshed
        if promote:
            tally.promotions.append((t, new, tally.champion))
            tally.worse_then += worse
            tally.champion = new


def backtests(
    known: pd.DataFrame,
    weeks: list[pd.Timestamp],
    models: Models,
    challenger: Mapping[str, Any],
    champion: Mapping[str, Any],
) -> dict[str, list[Any]]:
    """The paired rows of the rolling origins, as the evaluate notebook records them (nb.record_paired)."""
    names = ("origin", "period", "actual", "challenger", "champion")
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for start, end in backtest_origins(weeks, horizon=HORIZON, count=ORIGINS):
        rows = known[(known["Date"] >= start) & (known["Date"] <= end)]
        mine = models.predict(challenger, start, rows)
        theirs = mine if dict(champion) == dict(challenger) else models.predict(champion, start, rows)
        columns["origin"] += [str(start.date())] * len(rows)
        columns["period"] += [str(day.date()) for day in rows["Date"]]
        columns["actual"] += rows["Weekly_Sales"].tolist()
        columns["challenger"] += mine.tolist()
        columns["champion"] += theirs.tolist()
    return columns


def live_week(
    last: int, weeks: list[pd.Timestamp], features: pd.DataFrame, models: Models, tallies: dict[str, Tally]
) -> None:
    """Production forecasts the week after the run: what customers got."""
    if last + 1 >= len(weeks):
        return
    rows = features[features["Date"] == weeks[last + 1]]
    for tally in tallies.values():
        if tally.champion is None:
            continue
        predicted = models.predict(tally.champion.settings, tally.champion.before, rows)
        tally.live_abs += float(np.abs(rows["Weekly_Sales"].to_numpy() - predicted).sum())
        tally.live_sales += float(rows["Weekly_Sales"].abs().sum())
        tally.live_weeks += 1


def judged_after(
    tally: Tally, weeks: list[pd.Timestamp], features: pd.DataFrame, models: Models
) -> dict[str, int]:
    """How the promotions fared against the model each replaced, on the weeks that followed.

    `worse after`: pooled WAPE on the next FOLLOWING weeks; `much`: the same by more than WORSE_BY; `beyond
    noise`: every remaining week of the replay, worse with the policy's own 90% paired bootstrap (weeks as
    blocks) wholly on the worse side; `refreshes`/`changes`: `worse after` split between a refit of the same
    settings and a change of settings."""
    kinds = ("worse", "much", "noise", "refresh_worse", "refreshes", "change_worse", "changes")
    counts = dict.fromkeys(kinds, 0)
    for week, new, old in tally.promotions:
        last = HISTORY_WEEKS - 1 + week
        refresh = dict(new.settings) == dict(old.settings)
        counts["refreshes" if refresh else "changes"] += 1
        following = weeks[last + 1 : last + 1 + FOLLOWING]
        if not following:
            continue
        rows = features[features["Date"].isin(following)]
        gap = wape(rows["Weekly_Sales"], models.predict(new.settings, new.before, rows)) - wape(
            rows["Weekly_Sales"], models.predict(old.settings, old.before, rows)
        )
        counts["worse"] += gap > 0
        counts["much"] += gap > WORSE_BY
        counts["refresh_worse" if refresh else "change_worse"] += gap > 0
        later = features[features["Date"].isin(weeks[last + 1 :])]
        paired = {
            "origin": ["after"] * len(later),
            "period": [str(day.date()) for day in later["Date"]],
            "actual": later["Weekly_Sales"].tolist(),
            "challenger": models.predict(new.settings, new.before, later).tolist(),
            "champion": models.predict(old.settings, old.before, later).tolist(),
        }
        counts["noise"] += compare(paired, wape, Policy("superior")).low > 0
    return counts


def replay(
    features: pd.DataFrame,
    weeks: list[pd.Timestamp],
    n_weeks: int,
    schedule: Callable[[int], Mapping[str, Any]],
    rules: Mapping[str, Policy],
    refresh_held: bool = False,
) -> tuple[list[dict[str, Any]], float]:
    models = Models(features)
    names = ["always", "never", "today", *rules]
    if refresh_held:
        names += [f"{name}+refresh" for name in rules if name != "threshold"]
    tallies = {name: Tally(name) for name in names}
    for t in range(1, n_weeks + 1):
        last = HISTORY_WEEKS - 1 + t
        run_week(t, last, weeks, features, models, schedule(t), tallies, rules)
        live_week(last, weeks, features, models, tallies)
        print(f"  week {t:2d}: {len(models.fitted)} models trained, {models.seconds:.0f} s", file=sys.stderr)
    rows = []
    for tally in tallies.values():
        after = judged_after(tally, weeks, features, models)
        rows.append(
            {
                "policy": tally.name,
                "live WAPE": tally.live_abs / tally.live_sales if tally.live_sales else float("nan"),
                "live error": tally.live_abs,
                "weeks": tally.live_weeks,
                "promotions": len(tally.promotions),
                "worse then": tally.worse_then,
                "worse after": after["worse"],
                "worse > 0.5 pt": after["much"],
                "worse beyond noise": after["noise"],
                "refreshes worse": f"{after['refresh_worse']}/{after['refreshes']}",
                "changes worse": f"{after['change_worse']}/{after['changes']}",
            }
        )
    return rows, models.seconds


def table(rows: list[dict[str, Any]]) -> str:
    heads = list(rows[0])
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join(" --- " for _ in heads) + "|"]
    for row in rows:
        cells = []
        for head in heads:
            value = row[head]
            if head == "live WAPE":
                cells.append(f"{value:.3%}")
            elif head == "live error":
                cells.append(f"${value:,.0f}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", type=int, default=30, help="replay weeks (at most 30)")
    parser.add_argument("--scenario", choices=["weekly", "changes", "both"], default="both")
    parser.add_argument("--margin", type=float, action="append", help="non_inferior margins (default 0.005)")
    parser.add_argument(
        "--refresh-held", action="store_true",
        help="also what-if policies (not offered by the runner): the champion's own settings refit when a "
        "challenger is held or refused, and a refit of unchanged settings always promoted",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not (ROOT / SOURCE).is_file():
        print(f"{SOURCE} is missing: run `.venv/bin/python data/walmart.py fetch` first", file=sys.stderr)
        return 2
    sales = forecasting.load_sales(ROOT, SOURCE, "data/new/no-such-file-*.csv")
    features = forecasting.build_features(sales)
    weeks = sorted(pd.Timestamp(week) for week in features["Date"].unique())
    rules: dict[str, Policy] = {"threshold": Policy("threshold", relative_margin=0.02)}
    for margin in args.margin or [0.005]:
        name = f"non_inferior {margin:g}" if args.margin else "non_inferior"
        rules[name] = Policy("non_inferior", margin=margin)
    rules["superior"] = Policy("superior")
    scenarios: dict[str, Callable[[int], Mapping[str, Any]]] = {
        "weekly": lambda t: forecasting.settings(),
        "changes": lambda t: forecasting.settings(**(CHANGES[(t - 1) // 5 - 1] if t > 5 else {})),
    }
    chosen = list(scenarios) if args.scenario == "both" else [args.scenario]
    for name in chosen:
        started = time.monotonic()
        weeks_run = min(args.weeks, 30)
        rows, training = replay(features, weeks, weeks_run, scenarios[name], rules, args.refresh_held)
        took = time.monotonic() - started
        said = f"{min(args.weeks, 30)} replay weeks ({took:.0f} s, {training:.0f} s training)"
        print(f"\n## Scenario `{name}`: {said}\n")
        print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
