"""Paired rows and their comparison: how much better is one model than another on the same rows, and how sure?

    paired rows (origin, period, actual, the challenger's and the champion's predictions: the backtests)
    -> the score's difference on the same rows (challenger - champion) and its interval from a paired block
       bootstrap (whole periods, or blocks of consecutive periods, resampled; never single rows)

The promotion policy's settings (`Policy`, pipeline.yaml `model.promotion_policy`) live here too, beside the
numbers they tune. numpy only, and no layer of the package: the runner's registry step decides with it
(runner/production/promotion.py), notebooks show it (runner.nb.compare), the benchmark replays it
(bench/promotion_policies.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Rule = Literal["superior", "non_inferior", "threshold"]
Score = Callable[[Any, Any], float]
PAIRED = "paired"  # the scrap the decision reads: nb.record_paired glues it (README, "What the runner reads")
PAIRED_COLUMNS = ("origin", "period", "actual", "challenger", "champion")


@dataclass(frozen=True)
class Policy:
    """How sure the evidence must be (pipeline.yaml `model.promotion_policy`, validated there)."""

    rule: Rule = "non_inferior"
    margin: float | None = None  # absolute, in the key metric's units (0.005: half a point of WAPE)
    relative_margin: float | None = None  # a share of the champion's value (0.02: 2% worse)
    confidence: float = 0.9
    block: int = 1  # consecutive periods resampled together
    resamples: int = 2000
    seed: int = 0  # the bootstrap is deterministic: the same evidence gives the same decision

    def margin_for(self, champion_value: float) -> float:
        """The margin in the key metric's units, against a champion that scores `champion_value`."""
        if self.relative_margin is not None:
            return abs(champion_value) * self.relative_margin
        return self.margin or 0.0

    @property
    def described(self) -> str:
        """ "non-inferior, margin 0.005, 90%"; for messages and pages."""
        parts = [self.rule.replace("_", "-")]
        if self.relative_margin is not None:
            parts.append(f"margin {self.relative_margin:.0%} of the champion's value")
        elif self.margin is not None and self.rule != "superior":
            parts.append(f"margin {self.margin:g}")
        if self.rule != "threshold":
            parts.append(f"{self.confidence:.0%} interval")
        return ", ".join(parts)


@dataclass(frozen=True)
class Comparison:
    """The challenger against the champion on the same rows: the key metric of each, the difference
    (challenger - champion, in the metric's own sign) and its bootstrap interval."""

    challenger: float
    champion: float
    difference: float
    low: float
    high: float
    confidence: float
    rows: int
    blocks: int
    origins: int

    def to_json(self) -> dict[str, float | int]:
        return dict(self.__dict__)


class PairedError(ValueError):
    """The paired rows cannot be compared: the message says what is wrong with them."""


def block_labels(origins: Sequence[Any], periods: Sequence[Any], block: int = 1) -> list[tuple[str, int]]:
    """Each row's block: its origin and the rank of its period within that origin, `block` periods a block.

    Periods sort as they compare (dates, week numbers, ISO strings); a block never spans two origins."""
    if block < 1:
        raise PairedError(f"a block holds at least 1 period, not {block}")
    ranks: dict[str, dict[Any, int]] = {}
    for origin, period in zip(origins, periods, strict=True):
        ranks.setdefault(str(origin), {}).setdefault(period, 0)
    for seen in ranks.values():
        for rank, period in enumerate(sorted(seen)):
            seen[period] = rank
    return [
        (str(origin), ranks[str(origin)][period] // block)
        for origin, period in zip(origins, periods, strict=True)
    ]


def paired_bootstrap(
    actual: Any,
    challenger: Any,
    champion: Any,
    blocks: Sequence[Any],
    score: Score,
    *,
    confidence: float = 0.9,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """The difference score(challenger) - score(champion) on all rows, and its `confidence` interval.

    Whole blocks are resampled with replacement (the same blocks for both models: the comparison stays
    paired), as many as there are, `resamples` times; the interval is the percentiles of the differences.
    Rows of one period move together, so errors that go together in time are not taken for independent
    evidence. Identical predictions give (0, 0, 0); predictions whose errors differ by the same amount on
    every row give that amount three times for a mean-type score."""
    import numpy as np

    if not 0 < confidence < 1:
        raise PairedError(f"confidence must be between 0 and 1, not {confidence}")
    truth = np.asarray(actual)
    mine, theirs = np.asarray(challenger), np.asarray(champion)
    if not (len(truth) == len(mine) == len(theirs) == len(blocks)) or not len(truth):
        raise PairedError(
            f"paired rows of unequal or zero length: {len(truth)} actuals, {len(mine)} challenger and "
            f"{len(theirs)} champion predictions, {len(blocks)} blocks"
        )
    difference = float(score(truth, mine)) - float(score(truth, theirs))
    if not math.isfinite(difference):
        raise PairedError(f"the score of the paired rows is not a number ({difference})")
    keys = {key: index for index, key in enumerate(dict.fromkeys(blocks))}
    members: list[list[int]] = [[] for _ in keys]
    for row, key in enumerate(blocks):
        members[keys[key]].append(row)
    groups = [np.asarray(rows) for rows in members]
    random = np.random.default_rng(seed)
    found = np.empty(resamples)
    for draw in range(resamples):
        rows = np.concatenate([groups[i] for i in random.integers(0, len(groups), len(groups))])
        found[draw] = float(score(truth[rows], mine[rows])) - float(score(truth[rows], theirs[rows]))
    found = found[np.isfinite(found)]
    if not len(found):
        raise PairedError("no resample of the paired rows could be scored")
    tail = (1 - confidence) / 2 * 100
    low, high = (float(value) for value in np.percentile(found, [tail, 100 - tail]))
    # the percentile of equal numbers is that number up to rounding: keep an exact zero exact
    return difference, min(low, difference), max(high, difference)


def compare(paired: Mapping[str, Sequence[Any]], score: Score, policy: Policy = Policy()) -> Comparison:
    """The comparison of a `paired` table (columns PAIRED_COLUMNS; what nb.record_paired records)."""
    missing = [name for name in PAIRED_COLUMNS if name not in paired]
    if missing:
        raise PairedError(
            f"the paired rows have no column {', '.join(missing)} (need {', '.join(PAIRED_COLUMNS)})"
        )
    import numpy as np

    actual = np.asarray(paired["actual"], dtype=float)
    mine = np.asarray(paired["challenger"], dtype=float)
    theirs = np.asarray(paired["champion"], dtype=float)
    if not (np.isfinite(mine).all() and np.isfinite(theirs).all()):
        raise PairedError("the paired rows hold predictions that are not numbers")
    labels = block_labels(paired["origin"], paired["period"], policy.block)
    difference, low, high = paired_bootstrap(
        actual, mine, theirs, labels, score,
        confidence=policy.confidence, resamples=policy.resamples, seed=policy.seed,
    )  # fmt: skip
    return Comparison(
        challenger=float(score(actual, mine)),
        champion=float(score(actual, theirs)),
        difference=difference,
        low=low,
        high=high,
        confidence=policy.confidence,
        rows=len(actual),
        blocks=len(set(labels)),
        origins=len({str(origin) for origin in paired["origin"]}),
    )
