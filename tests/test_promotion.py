"""The promotion decision: the paired block bootstrap against known answers, the three rules, the sentence a
manager reads, any key metric in either direction, and the policy's checks in pipeline.yaml."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runner.engine.config import load_pipeline
from runner.errors import ConfigError
from runner.nb.compare import backtest_origins, paired_table
from runner.paired import Comparison, PairedError, Policy, block_labels, compare, paired_bootstrap
from runner.production import scores
from runner.production.promotion import decide, verdict
from runner.records import KeyMetric

pytestmark = pytest.mark.unit

WAPE = KeyMetric("wape", "percent", 1, label="WAPE", better="lower")
AUC = KeyMetric("roc_auc", "number", 3, label="ROC AUC", better="higher")


def wape(actual, predicted):
    return float(np.abs(actual - predicted).sum() / np.abs(actual).sum())


def weeks(n_origins: int = 4, n_weeks: int = 8, rows: int = 7) -> tuple[list[str], list[str]]:
    origins = [f"o{o}" for o in range(n_origins) for _ in range(n_weeks) for _ in range(rows)]
    periods = [f"w{w:02d}" for _ in range(n_origins) for w in range(n_weeks) for _ in range(rows)]
    return origins, periods


def test_identical_models_give_a_zero_width_interval():
    random = np.random.default_rng(1)
    actual = random.uniform(100, 200, 224)
    predicted = actual + random.normal(0, 20, 224)
    origins, periods = weeks()
    found = paired_bootstrap(actual, predicted, predicted.copy(), block_labels(origins, periods), wape)
    assert found == (0.0, 0.0, 0.0)


def test_a_constant_shift_gives_exactly_that_shift():
    """Champion errors are 10 on every row, the challenger's 7: the mean absolute error differs by -3 on every
    resample, so the interval is [-3, -3]."""
    actual = np.linspace(100, 300, 224)
    origins, periods = weeks()
    difference, low, high = paired_bootstrap(
        actual, actual - 7, actual - 10, block_labels(origins, periods), scores.mae
    )
    assert difference == pytest.approx(-3) and low == pytest.approx(-3) and high == pytest.approx(-3)


def test_the_interval_of_a_mean_difference_is_the_normal_one():
    """Per-block mean differences with a known spread: the percentile interval of the bootstrap of their
    mean is the mean +- 1.645 standard errors (90%), within the bootstrap's own noise."""
    random = np.random.default_rng(7)
    blocks = 64
    shift = random.normal(-2.0, 4.0, blocks)  # per block, how much smaller the challenger's error is
    actual = np.full(blocks * 5, 1000.0)
    labels = np.repeat(np.arange(blocks), 5)
    champion = actual - 50  # error 50 everywhere
    challenger = actual - (50 + np.repeat(shift, 5))  # error 50 + shift, all positive
    difference, low, high = paired_bootstrap(
        actual, challenger, champion, list(labels), scores.mae, confidence=0.9, resamples=4000
    )
    mean, error = shift.mean(), shift.std() / math.sqrt(blocks)
    assert difference == pytest.approx(mean)
    assert low == pytest.approx(mean - 1.645 * error, abs=0.12 * error * 1.645)
    assert high == pytest.approx(mean + 1.645 * error, abs=0.12 * error * 1.645)


def test_whole_periods_move_together():
    """Two weeks, each with many rows: resampling rows would make the interval narrow; resampling the two
    weeks keeps it as wide as the two weeks' disagreement."""
    actual = np.full(200, 100.0)
    champion = actual - 10
    challenger = np.concatenate([actual[:100] - 5, actual[100:] - 15])  # better one week, worse the next
    labels = block_labels(["o"] * 200, ["w1"] * 100 + ["w2"] * 100)
    _, low, high = paired_bootstrap(actual, challenger, champion, labels, scores.mae, resamples=500)
    assert low == pytest.approx(-5) and high == pytest.approx(5)


def test_blocks_of_consecutive_periods_never_span_origins():
    labels = block_labels(["a", "a", "a", "b", "b"], ["w3", "w1", "w2", "w1", "w2"], block=2)
    assert labels == [("a", 1), ("a", 0), ("a", 0), ("b", 0), ("b", 0)]
    with pytest.raises(PairedError, match="at least 1"):
        block_labels(["a"], ["w1"], block=0)


def test_unequal_rows_are_refused():
    with pytest.raises(PairedError, match="unequal"):
        paired_bootstrap([1.0, 2.0], [1.0], [1.0, 2.0], [0, 1], scores.mae)


@pytest.mark.parametrize(
    ("rule", "gain", "low", "high", "expected"),
    [
        ("superior", 0.3, 0.1, 0.5, "promote"),
        ("superior", 0.3, -0.4, 0.9, "hold"),
        ("superior", 0.0, 0.0, 0.0, "hold"),
        ("superior", -0.6, -0.9, -0.2, "refuse"),
        ("non_inferior", 0.0, 0.0, 0.0, "promote"),
        ("non_inferior", -0.2, -0.4, 0.1, "promote"),  # the worse end within the margin of 0.5
        ("non_inferior", 0.1, -0.8, 0.9, "hold"),
        ("non_inferior", -1.0, -1.4, -0.6, "refuse"),
        ("threshold", -0.4, -2.0, 1.0, "promote"),
        ("threshold", -0.6, -0.7, -0.5, "refuse"),
    ],
)
def test_the_rules(rule, gain, low, high, expected):
    policy = Policy(rule, margin=None if rule == "superior" else 0.5)
    assert verdict(policy, gain, low, high, policy.margin_for(10.0)) == expected


def comparison(difference: float, low: float, high: float, champion: float = 0.068) -> Comparison:
    return Comparison(champion + difference, champion, difference, low, high, 0.9, 224, 32, 4)


def test_the_sentence_a_manager_reads():
    decision = decide(Policy("superior"), comparison(-0.003, -0.009, 0.004), WAPE, who="v7")
    assert decision.verdict == "hold"
    assert decision.sentence == (
        "v7 held: the new model is 0.3 points better, but the 90% interval runs from 0.9 better to 0.4 worse"
    )
    assert (decision.difference, decision.low, decision.high, decision.confidence) == (
        -0.003,
        -0.009,
        0.004,
        0.9,
    )


def test_promoted_while_worse_within_the_margin_says_so():
    policy = Policy("non_inferior", margin=0.005)
    decision = decide(policy, comparison(0.002, -0.002, 0.004), WAPE, who="v8")
    assert decision.verdict == "promote" and decision.worse and decision.margin == 0.005
    assert decision.sentence == (
        "v8 promoted: the new model is 0.2 points worse, and the 90% interval runs from 0.2 better to 0.4"
        " worse:"
        " its worse end within the margin of 0.5 points"
    )


def test_equal_settings_on_equal_data_promote_under_non_inferiority_and_hold_under_superiority():
    same = comparison(0.0, 0.0, 0.0)
    promoted = decide(Policy("non_inferior", margin=0.005), same, WAPE, who="v9")
    held = decide(Policy("superior"), same, WAPE, who="v9")
    assert promoted.verdict == "promote" and not promoted.worse
    assert "scores as the champion on every one of 224 paired rows of 4 backtests" in promoted.sentence
    assert held.verdict == "hold" and "promotes only a better model" in held.sentence


def test_a_relative_margin_is_a_share_of_the_champions_value():
    policy = Policy("threshold", relative_margin=0.02)
    assert decide(policy, None, WAPE, challenger=0.0687, champion=0.0682).verdict == "promote"  # 0.7% worse
    refused = decide(policy, None, WAPE, challenger=0.0700, champion=0.0682)  # 2.6% worse
    assert refused.verdict == "refuse" and "beyond the margin of 0.1 points" in refused.sentence


def test_a_score_where_higher_is_better():
    """A classifier's ROC AUC: the challenger ranks positives above negatives more often; the difference is
    positive, and positive is better."""
    random = np.random.default_rng(3)
    actual = np.tile([0, 1], 400)
    champion = np.clip(actual * 0.15 + random.uniform(0, 0.85, 800), 0, 1)
    challenger = np.clip(actual * 0.45 + random.uniform(0, 0.55, 800), 0, 1)
    origins, periods = ["o"] * 800, [f"d{index // 20:02d}" for index in range(800)]
    paired = {
        "origin": origins,
        "period": periods,
        "actual": actual,
        "challenger": challenger,
        "champion": champion,
    }
    found = compare(paired, scores.roc_auc, Policy("superior"))
    assert found.difference > 0 and found.low > 0 and found.blocks == 40
    decision = decide(Policy("superior"), found, AUC, who="v3")
    assert decision.verdict == "promote" and not decision.worse
    assert (
        decision.sentence.startswith("v3 promoted: the new model is 0.")
        and " better, and the 90%" in decision.sentence
    )


def test_no_champion_is_the_first_champion_and_missing_evidence_holds():
    assert decide(Policy(margin=0.005), None, WAPE, who="v1").sentence == "v1 promoted: the first champion"
    held = decide(Policy(margin=0.005), None, WAPE, who="v2", challenger=0.06, champion=0.07)
    assert held.verdict == "hold" and "recorded no paired rows" in held.sentence


def test_backtest_origins_and_the_paired_table():
    import pandas as pd

    periods = [f"2012-{month:02d}" for month in range(1, 13)]
    assert backtest_origins(periods, horizon=3, count=4) == [
        ("2012-10", "2012-12"),
        ("2012-07", "2012-09"),
        ("2012-04", "2012-06"),
    ]  # the fourth would leave nothing to learn from
    frame = pd.DataFrame({"o": [1, 1], "week": ["a", "b"], "y": [1, 2], "p": [1.5, 2], "c": [1, 2.5]})
    table = paired_table(frame, origin="o", period="week", actual="y", prediction="p", champion="c")
    assert table == {
        "origin": ["1", "1"],
        "period": ["a", "b"],
        "actual": [1.0, 2.0],
        "challenger": [1.5, 2.0],
        "champion": [1.0, 2.5],
    }


MODEL = """\
version: 1
name: toy
stages:
  first:
    notebook: notebooks/ok.ipynb
  second:
    notebook: notebooks/downstream.ipynb
    needs: [first]
model:
  name: toy
  candidate: first.y
  metrics: first
  key_metric: {name: y, better: lower}
"""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "  promotion_policy: {rule: superior, margin: 0.1}\n",
            "model.promotion_policy.margin: the superior rule takes no margin",
        ),
        (
            "  promotion_policy: {rule: non_inferior}\n",
            "model.promotion_policy: the non_inferior rule needs one margin",
        ),
        (
            "  promotion_policy: {rule: threshold, margin: 0.1, relative_margin: 0.02}\n",
            "needs one margin, got both margin and relative_margin",
        ),
        ("  promotion_policy: {rule: superoir}\n", "model.promotion_policy.rule: Input should be"),
        ("  promotion_policy: {confidence: 1.5, margin: 0.1}\n", "model.promotion_policy.confidence"),
        ("  promotion_policy: {margn: 0.1}\n", "unknown key 'margn' (did you mean 'margin'?)"),
        ("  refit: second.y\n", "model.smoke_check.refit_tolerance: required with model.refit"),
        (
            "  refit: first.y\n  smoke_check: {refit_tolerance: 0.5}\n",
            "refit stage 'first' runs once the model",
        ),
        ("  refit: thrid.y\n  smoke_check: {refit_tolerance: 0.5}\n", "unknown stage 'thrid'"),
    ],
)
def test_the_policy_and_the_refit_are_checked(make_project, extra, expected):
    with pytest.raises(ConfigError) as caught:
        load_pipeline(make_project(MODEL + extra))
    said = [str(problem) for problem in caught.value.problems]
    assert any(expected in line for line in said), said


def test_a_valid_policy_and_refit_load(make_project):
    extra = (
        "  promotion_policy: {margin: 0.005, block: 2}\n  refit: second.z\n"
        "  smoke_check: {refit_tolerance: 0.5}\n"
    )
    pipeline = load_pipeline(make_project(MODEL + extra))
    assert pipeline.model is not None and pipeline.model.promotion_policy is not None
    policy = pipeline.model.promotion_policy.policy()
    assert (policy.rule, policy.margin, policy.confidence, policy.block) == ("non_inferior", 0.005, 0.9, 2)
    assert pipeline.model.refit_stage == "second"


def test_a_decision_is_named_once_its_version_is_registered():
    from runner.production.promotion import named

    decision = decide(Policy("superior"), comparison(-0.003, -0.009, 0.004), WAPE)
    assert decision.sentence.startswith("Held: the new model is 0.3 points better, but")
    assert named(decision, "7").sentence.startswith("v7 held: the new model is 0.3 points better, but")
    assert named(named(decision, "7"), "8").sentence.startswith("v7 held:")
