"""The promotion decision: is the challenger better than the champion beyond noise?

    paired rows (backtests: origin, period, actual, the challenger's and the champion's predictions)
    -> the key metric's difference on the same rows (challenger - champion) and its interval from a paired
       block bootstrap (whole periods, or blocks of consecutive periods, resampled; never single rows)
    -> the policy (pipeline.yaml `model.promotion_policy`): promote, hold or refuse, in words a manager reads

Any key metric, either direction: the score is a function(actual, predicted) -> float (runner/production/
scores.py resolves built-ins and a project's "module:function"), so a classifier's ROC AUC (higher is better)
is compared as the demo's WAPE (lower is better). The numbers (the paired bootstrap,
the policy's settings) are runner/paired.py's; this module decides and says it.

The rules, with the improvement g = how much better the challenger is (its sign made positive for better)
and [g_low, g_high] its interval:

    superior      promote when g_low > 0 (wholly better); refuse when g_high < 0 (wholly worse); else hold
    non_inferior  promote when g_low >= -margin (its worse end within the margin); refuse when
                  g_high < -margin (wholly beyond the margin); else hold
    threshold     promote when g >= -margin (the point estimate within the margin); else refuse
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from runner.paired import PAIRED, Comparison, PairedError, Policy, compare
from runner.records import Decision, KeyMetric

__all__ = [
    "PAIRED", "Comparison", "PairedError", "Policy", "Verdict", "compare", "decide", "named", "verdict",
]  # fmt: skip

Verdict = Literal["promote", "hold", "refuse"]


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
