"""The promotion decision: is the challenger better than the champion beyond noise?

    paired rows (backtests: origin, period, actual, the challenger's and the champion's predictions)
    -> the key metric's difference on the same rows (challenger - champion) and its interval from a paired
       block bootstrap (whole periods, or blocks of consecutive periods, resampled; never single rows)
    -> the policy (pipeline.yaml `model.promotion_policy`): promote, hold or refuse, in words a manager reads

Any key metric, either direction: the score is a function(actual, predicted) -> float (runner/production/
scores.py resolves built-ins and a project's "module:function"), so a classifier's ROC AUC (higher is better)
is compared as the demo's WAPE (lower is better). numpy only: this runs in the runner, in a worker, in a
notebook (through `runner.nb`) and in the benchmark (bench/promotion_policies.py).

The rules, with the improvement g = how much better the challenger is (its sign made positive for better)
and [g_low, g_high] its interval:

    superior      promote when g_low > 0 (wholly better); refuse when g_high < 0 (wholly worse); else hold
    non_inferior  promote when g_low >= -margin (its worse end within the margin); refuse when
                  g_high < -margin (wholly beyond the margin); else hold
    threshold     promote when g >= -margin (the point estimate within the margin); else refuse
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from runner.records import Decision, KeyMetric

Rule = Literal["superior", "non_inferior", "threshold"]
Verdict = Literal["promote", "hold", "refuse"]
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


def verdict(policy: Policy, improvement: float, low: float, high: float, margin: float) -> Verdict:
    """The rule applied to the improvement (positive: the challenger is better) and its interval."""
    if policy.rule == "threshold":
        return "promote" if improvement >= -margin else "refuse"
    floor = 0.0 if policy.rule == "superior" else -margin
    if (policy.rule == "superior" and low > 0) or (policy.rule == "non_inferior" and low >= floor):
        return "promote"
    if high < floor:
        return "refuse"
    return "hold"


def decide(
    policy: Policy,
    comparison: Comparison | None,
    key: KeyMetric,
    *,
    who: str | None = None,
    challenger: float | None = None,
    champion: float | None = None,
) -> Decision:
    """The policy's verdict on a comparison, and its sentence: "v7 held: ..." with `who` ("v7"), else
    "Held: ..." (`named` adds the version once it is registered). Without paired rows (`comparison` None) the
    threshold rule compares `challenger` with `champion` (the key metric's values); the other rules hold,
    saying that the evidence is missing; with no champion at all, the model is the first champion."""
    if comparison is None and champion is None:
        return Decision(policy.rule, "promote", f"{_subject(who, 'promote')}: the first champion")
    sign = -1.0 if key.better == "lower" else 1.0  # improvement = sign * difference
    if comparison is None:
        if policy.rule != "threshold" or challenger is None or champion is None:
            why = "the stage that measures the model recorded no paired rows (nb.record_paired)"
            return Decision(policy.rule, "hold", f"{_subject(who, 'hold')}: {why}, so the champion stays")
        difference, low, high, theirs = challenger - champion, None, None, champion
    else:
        difference, low, high = comparison.difference, comparison.low, comparison.high
        theirs = comparison.champion
    margin = policy.margin_for(theirs)
    gain = sign * difference
    gains = sorted((sign * low, sign * high)) if low is not None and high is not None else (gain, gain)
    found = verdict(policy, gain, gains[0], gains[1], margin)
    text = Sentence(key, policy, who).say(found, gain, gains, margin, comparison)
    return Decision(
        policy=policy.rule,
        verdict=found,
        sentence=text,
        difference=difference,
        low=low,
        high=high,
        confidence=policy.confidence if comparison is not None else None,
        margin=margin if policy.rule != "superior" else None,
        worse=found == "promote" and gain < 0,
    )


def named(decision: Decision, version: str) -> Decision:
    """The decision's sentence with the version it is about: "Held: ..." -> "v7 held: ..."."""
    from dataclasses import replace

    word, colon, rest = decision.sentence.partition(":")
    if not colon or word not in _WORDS.values():
        return decision  # already named
    return replace(decision, sentence=f"v{version} {word.lower()}{colon}{rest}")


_WORDS: dict[str, str] = {"promote": "Promoted", "hold": "Held", "refuse": "Refused"}


def _subject(who: str | None, found: Verdict) -> str:
    return f"{who} {_WORDS[found].lower()}" if who else _WORDS[found]


@dataclass(frozen=True)
class Sentence:
    """The decision in a manager's words: "v7 held: the new model is 0.3 points better, but the 90%
    interval runs from 0.9 better to 0.4 worse"."""

    key: KeyMetric
    policy: Policy
    who: str | None

    def amount(self, value: float, points: bool = True) -> str:
        """A difference in the key metric's units, without its sign: "0.3 points" ("0.3" inside an interval,
        whose first end names the unit), "0.012", "$41"."""
        from runner.report.numbers import Numbers

        size = abs(value)
        if self.key.format == "percent":
            return f"{size * 100:.{self.key.digits}f}" + (" points" if points else "")
        return Numbers(self.key).value(size)

    def better_or_worse(self, gain: float, points: bool = True) -> str:
        if self.amount(gain) == self.amount(0.0):
            return "as good as the champion"
        return f"{self.amount(gain, points)} {'better' if gain > 0 else 'worse'}"

    def interval(self, gains: Sequence[float]) -> str:
        """ "the 90% interval runs from 0.9 better to 0.4 worse", best end first."""
        worst, best = gains
        share = f"{self.policy.confidence:.0%}"
        if self.amount(best - worst) == self.amount(0.0):
            return f"the {share} interval is that one value (the same on every resample)"
        ends = [self.better_or_worse(best, False), self.better_or_worse(worst, False)]
        if best > 0 and worst > 0:
            ends = [self.amount(worst, False), f"{self.amount(best, False)} better"]
        elif best < 0 and worst < 0:
            ends = [self.amount(best, False), f"{self.amount(worst, False)} worse"]
        return f"the {share} interval runs from {ends[0]} to {ends[1]}"

    def say(
        self,
        found: Verdict,
        gain: float,
        gains: Sequence[float],
        margin: float,
        comparison: Comparison | None,
    ) -> str:
        subject = _subject(self.who, found)
        within = f"the margin of {self.amount(margin)}"
        verb = "within" if found == "promote" else "beyond"
        if comparison is None:  # the threshold rule on the point estimates
            return f"{subject}: the new model is {self.point(gain)} on the key metric, {verb} {within}"
        if self.amount(gains[0]) == self.amount(gains[1]) == self.amount(0.0):
            same = (
                f"{subject}: the new model scores as the champion on every one of {comparison.rows}"
                f" paired rows of {comparison.origins} backtests (the same settings trained on the same data)"
            )
            if found == "promote":
                return f"{same}, and it has learned from the newest data"
            return f"{same}; the {self.policy.rule.replace('_', '-')} rule promotes only a better model"
        now = f"{subject}: the new model is {self.point(gain)}"
        interval = self.interval(gains)
        if self.policy.rule == "threshold":
            return f"{now}, {verb} {within} ({interval})"
        if self.policy.rule == "superior":
            return f"{now}, {'but' if found == 'hold' else 'and'} {interval}"
        if found == "promote":
            end = f"its worse end within {within}" if gains[0] < 0 else "wholly better"
            return f"{now}, and {interval}: {end}"
        if found == "refuse":
            return f"{now}, and {interval}: wholly beyond {within}"
        return f"{now}, but {interval}: it may be worse by more than {within}"

    def point(self, gain: float) -> str:
        return self.better_or_worse(gain)
