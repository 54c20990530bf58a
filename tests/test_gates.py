"""The gate language: what parses, what is refused, and what a person reads when a gate passes or fails."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from runner.engine.gates import (
    Gate,
    GateScope,
    GateSyntaxError,
    evaluate_gate,
    parse_gate,
    referenced_params,
    referenced_stages,
)
from runner.records import GateResult

pytestmark = pytest.mark.unit

SCRAPS: dict[str, dict[str, Any]] = {
    "validate": {"n_errors": 0, "n_rows": 1200},
    "train": {"rmse": 812.34},
    "evaluate": {
        "wape": 0.0791,
        "rmse": 812.34,
        "mae": 3,
        "baseline_wape": 0.095,
        "status": "ok",
        "drifted": False,
        "flag": True,
        "ratio": 0.3,
        "neg": -2,
        "zero": 0,
        "big": 12345.678,
        "close": 0.150004,
        "loss": "inf",  # how scrapbook returns an infinity
    },
}
PARAMS: dict[str, Any] = {"wape_threshold": 0.15, "tight": 0.0001, "max_rmse": 1000, "cfg": {"level": 2}}
CHAMPION: dict[str, Any] = {"wape": 0.08, "rmse": 900.0}


def scope(
    scraps: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    champion: dict[str, Any] | None = CHAMPION,
    stage: str = "evaluate",
    others: dict[str, dict[str, Any]] | None = None,
) -> GateScope:
    """The default scope, with the gate's own stage's scraps replaced by `scraps` when given."""
    all_scraps = {**SCRAPS, **(others or {})}
    if scraps is not None:
        all_scraps[stage] = scraps
    return GateScope(
        stage=stage, scraps=all_scraps, params=PARAMS if params is None else params, champion=champion
    )


def run(expr: str, where: GateScope | None = None) -> GateResult:
    return evaluate_gate(parse_gate(expr), where or scope())


# -- (1) expressions that evaluate: verdict and what the detail says -----------------------------------------

CASES = [
    ("wape <= 0.15", True, "passed: wape = 0.0791 <= 0.15"),
    ("wape <= params.wape_threshold", True, "passed: wape = 0.0791 <= params.wape_threshold = 0.15"),
    ("wape <= params.tight", False, "wape = 0.0791 <= params.tight = 0.0001 is false"),
    ("wape < baseline_wape", True, "passed: wape = 0.0791 < baseline_wape = 0.095"),
    ("wape <= champion.wape * 1.02", True, "wape = 0.0791 <= champion.wape * 1.02 = 0.08 * 1.02 = 0.0816"),
    (
        "wape * 1.2 <= champion.wape",
        False,
        "wape * 1.2 = 0.0791 * 1.2 = 0.09492 <= champion.wape = 0.08 is false",
    ),
    ("validate.n_errors == 0", True, "passed: validate.n_errors = 0 == 0"),
    (
        "validate.n_errors == 0 and rmse < 1000",
        True,
        "passed: validate.n_errors = 0 == 0 and rmse = 812.3 < 1000",
    ),
    ("validate.n_rows > 5000 and rmse < 1000", False, "validate.n_rows = 1200 > 5000 is false"),
    ("validate.n_rows > 5000 or rmse < 1000", True, "passed: rmse = 812.3 < 1000"),
    ("validate.n_rows > 5000 or rmse > 1000", False, "n_rows = 1200 > 5000 or rmse = 812.3 > 1000 is false"),
    ("train.rmse <= params.max_rmse", True, "train.rmse = 812.3 <= params.max_rmse = 1000"),
    ("not drifted", True, "passed: not (drifted = false)"),
    ("drifted", False, "drifted = false"),
    ('status == "ok"', True, 'passed: status = "ok" == "ok"'),
    ("status != 'ok'", False, 'status = "ok" != "ok" is false'),
    ("flag == true", True, "passed: flag = true == true"),
    ("flag == True and drifted == False", True, "flag = true == true and drifted = false == false"),
    ("flag", True, "passed: flag = true"),
    ("0 < wape <= 1", True, "passed: 0 < wape = 0.0791 <= 1"),
    ("0 < wape <= 0.05", False, "0 < wape = 0.0791 <= 0.05 is false"),
    ("wape < 1e-3", False, "wape = 0.0791 < 0.001 is false"),
    ("neg < -1", True, "neg = -2 < -1"),
    ("-neg == 2", True, "-neg = -(-2) = 2 == 2"),
    ("neg * 2 + 1 < 0", True, "neg * 2 + 1 = (-2) * 2 + 1 = -3 < 0"),
    ("(wape + 0.01) * 2 < 1", True, "(wape + 0.01) * 2 = (0.0791 + 0.01) * 2 = 0.1782 < 1"),
    ("mae / 2 == 1.5", True, "mae / 2 = 3 / 2 = 1.5 == 1.5"),
    ("mae == 3.0", True, "mae = 3 == 3"),
    ("params.cfg.level >= 2", True, "params.cfg.level = 2 >= 2"),
    ("close <= 0.15", False, "close = 0.150004 <= 0.15 is false"),  # never "0.15 <= 0.15 is false"
    ("big > 10000", True, "big = 12346 > 10000"),
    ("loss > 1e300", True, "loss = inf > 1e+300"),
    ("not (wape < 1 and rmse > 1)", False, "not (wape = 0.0791 < 1 and rmse = 812.3 > 1) is false"),
    ("(wape < 1) == true", True, "(wape = 0.0791 < 1) == true"),
    ("zero != 0 and wape / zero > 1", False, "zero = 0 != 0 is false"),  # and short-circuits
    ("wape <= champion.wape and rmse < champion.rmse", True, "wape = 0.0791 <= champion.wape = 0.08 and"),
]


@pytest.mark.parametrize(("expr", "passed", "fragment"), CASES, ids=[case[0] for case in CASES])
def test_gate_verdict_and_detail(expr: str, passed: bool, fragment: str) -> None:
    result = run(expr)
    assert result.passed is passed, result.detail
    assert fragment in result.detail
    assert result.expr == expr
    assert "\n" not in result.detail


# -- (2) expressions that are refused at parse time ----------------------------------------------------------

BAD = [
    ("__import__('os')", "function calls are not allowed in a gate: `__import__('os')` at column 1"),
    ("x[0]", "subscripts"),
    ("len(x)", "function calls are not allowed in a gate: `len(x)` at column 1"),
    ("a if b else c", "conditional expressions"),
    ("x ** 2", "`**`"),
    ("lambda: 1", "lambdas"),
    ("x.y()", "function calls are not allowed in a gate: `x.y()`"),
    ("1 +", "invalid syntax at column 4 (end of gate)"),
    ("", "empty"),
    ("   ", "empty"),
    ("x in y", "`in`"),
    ("a = 1", "compare with `==`"),
    ("[1]", "lists"),
    ("{}", "dicts"),
    ("x // 2", "`//`"),
    ("f'{x}'", "f-strings"),
    ("x is None", "`is`"),
    ("x == None", "`None`"),
    ("x % 2", "`%`"),
    ("x & y", "bitwise"),
    ("~x", "bitwise"),
    ("(a := 1)", "`:=`"),
    ("[v for v in y]", "comprehensions"),
    ("(a + b).c", "attributes"),
    ("params < 1", "`params` without a key"),
    ("champion", "`champion` without a key"),
    ("wape < 1 and len(x) > 0", "`len(x)` at column 14"),
    ("wape <= 0.1 rmse < 3", "invalid syntax at column 13, at `rmse < 3`"),
    ("'open", "unterminated string"),
    ("b'x' == y", "bytes literals"),
]


@pytest.mark.parametrize(("expr", "fragment"), BAD, ids=[case[0] or "<empty>" for case in BAD])
def test_bad_gate_is_refused(expr: str, fragment: str) -> None:
    with pytest.raises(GateSyntaxError) as caught:
        parse_gate(expr)
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


def test_syntax_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="column"):
        parse_gate("wape <")


# -- (3) the ways a gate fails at evaluation, and the names it reports ---------------------------------------


@pytest.mark.parametrize("nan", [math.nan, "nan", "NaN"])
def test_nan_scrap_fails_and_says_which(nan: Any) -> None:
    result = run("wape <= 0.15", scope({"wape": nan}))
    assert not result.passed
    assert result.detail == "wape is NaN (scrap 'wape' of stage 'evaluate'); a NaN fails the gate"
    assert isinstance(result.values["wape"], float) and math.isnan(result.values["wape"])


def test_nan_anywhere_the_gate_reads_fails_it() -> None:
    nan_param = run("wape <= params.wape_threshold", scope(params={"wape_threshold": math.nan}))
    assert not nan_param.passed
    assert "params.wape_threshold is NaN (parameter 'wape_threshold')" in nan_param.detail
    nan_champion = run("wape <= champion.wape", scope(champion={"wape": "nan"}))
    assert not nan_champion.passed and "champion.wape is NaN" in nan_champion.detail
    skipped_term = run("wape < 1 or rmse < 1", scope({"wape": 0.1, "rmse": math.nan}))
    assert not skipped_term.passed and "rmse is NaN" in skipped_term.detail


def test_nan_from_arithmetic_fails() -> None:
    result = run("loss - loss < 1")
    assert not result.passed and result.detail == "`loss - loss` is NaN (inf - inf)"


def test_infinities_compare_as_numbers() -> None:
    assert run("loss > 0", scope({"loss": "-inf"})).passed is False
    assert run("loss < 0", scope({"loss": "-inf"})).values == {"loss": -math.inf}


def test_missing_scrap_names_it_and_what_the_stage_recorded() -> None:
    result = run("wape <= 0.15", scope({"mae": 1.0, "rmse": 2.0}))
    assert not result.passed
    assert result.detail == "scrap 'wape' was not recorded by stage 'evaluate' (recorded: mae, rmse)"
    assert result.values == {"wape": None}


def test_missing_scrap_suggests_a_close_name() -> None:
    result = run("wape_val <= 0.15", scope({"wape_value": 0.1, "rmse": 2.0}))
    assert "(recorded: rmse, wape_value); did you mean 'wape_value'?" in result.detail


def test_missing_scrap_of_another_stage() -> None:
    result = run("validate.n_error == 0")
    assert not result.passed
    assert (
        "scrap 'n_error' was not recorded by stage 'validate' (recorded: n_errors, n_rows);" in result.detail
    )
    assert "did you mean 'n_errors'?" in result.detail


def test_stage_that_recorded_nothing() -> None:
    result = run("wape < 1", GateScope(stage="evaluate", scraps={}, params={}, champion=None))
    assert result.detail == "scrap 'wape' was not recorded by stage 'evaluate' (recorded: nothing)"


def test_missing_stage_fails_naming_it() -> None:
    result = run("validat.n_errors == 0")
    assert not result.passed
    ran = "(stages that ran: evaluate, train, validate)"
    assert f"`validat.n_errors` reads stage 'validat', which has not run {ran}" in result.detail
    assert "did you mean 'validate'?" in result.detail


def test_missing_param_fails_naming_it() -> None:
    result = run("wape <= params.wape_treshold")
    assert not result.passed
    assert "parameter 'wape_treshold' is not set for stage 'evaluate'" in result.detail
    assert "did you mean 'wape_threshold'?" in result.detail


def test_missing_nested_key() -> None:
    result = run("params.cfg.levels > 1")
    assert "parameter 'cfg' has no key 'levels' (keys: level); did you mean 'level'?" in result.detail
    assert "is an int, it has no key 'x'" in run("params.max_rmse.x > 1").detail


def test_no_champion_passes_and_says_why() -> None:
    result = run("wape <= champion.wape * 1.02", scope(champion=None))
    assert result.passed
    assert result.detail == "no champion yet: champion.wape is not available, gate passes"
    assert result.values == {"wape": 0.0791, "champion.wape": None}


def test_no_champion_passes_the_whole_gate_even_with_a_failing_term() -> None:
    result = run("wape < 0.01 and wape <= champion.wape", scope(champion=None))
    assert result.passed and result.detail.startswith("no champion yet")


def test_no_champion_does_not_hide_a_missing_scrap_or_nan() -> None:
    assert not run("wap <= champion.wape", scope(champion=None)).passed
    assert not run("wape <= champion.wape", scope({"wape": math.nan}, champion=None)).passed


def test_champion_without_the_metric_fails_naming_it() -> None:
    result = run("mape <= champion.mape", scope({"mape": 0.1}, champion={"wape": 0.08, "rmse": 900.0}))
    assert not result.passed
    assert "the champion has no metric 'mape' (the champion has: rmse, wape)" in result.detail
    assert "did you mean 'wape'?" in result.detail


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("status > 1", '`status > 1` cannot be evaluated: `>` needs numbers, got string "ok" and number 1'),
        ("status == 1", '`==` needs two values of one kind, got string "ok" and number 1'),
        ("flag == 1", "got true/false true and number 1"),
        ("status * 2 > 1", '`status * 2` cannot be evaluated: `*` needs numbers, got string "ok" and'),
        ("flag + 1 > 1", "`+` needs numbers, got true/false true"),
        ("-status < 0", "`-` needs numbers"),
        ("wape / zero > 1", "`wape / zero` divides by zero (0.0791 / 0)"),
        ("mae / (zero * 2) > 1", "divides by zero (3 / (0 * 2))"),
        ("ratio", "gate must be true/false, got 0.3 (ratio = 0.3)"),
        ("wape + 1", "gate must be true/false, got 1.079"),
        ("ratio and flag", "`and` needs true/false, got number 0.3 from `ratio`"),
        ("not status", '`not` needs true/false, got string "ok"'),
    ],
)
def test_type_errors_fail_the_gate_without_raising(expr: str, fragment: str) -> None:
    result = run(expr)
    assert not result.passed
    assert fragment in result.detail


@pytest.mark.parametrize("odd", [None, [1, 2], {"a": 1}, object(), 1j])
def test_a_scrap_that_is_not_a_scalar_fails(odd: Any) -> None:
    result = run("wape < 1", scope({"wape": odd}))
    assert not result.passed
    assert "a gate reads only numbers, strings and true/false" in result.detail


def test_values_holds_every_name_the_gate_read() -> None:
    result = run("validate.n_errors == 0 and wape <= champion.wape * 1.02 and wape < params.wape_threshold")
    assert result.values == {
        "validate.n_errors": 0,
        "wape": 0.0791,
        "champion.wape": 0.08,
        "params.wape_threshold": 0.15,
    }
    json.dumps(result.values)


def test_parse_gate_reports_names() -> None:
    gate = parse_gate("  wape <= champion.wape * 1.02 and validate.n_errors == 0 and flag == true  ")
    assert gate.expr == "wape <= champion.wape * 1.02 and validate.n_errors == 0 and flag == true"
    assert gate.names == {"wape", "champion.wape", "validate.n_errors", "flag"}
    assert gate == parse_gate(gate.expr)
    assert isinstance(gate, Gate)


def test_referenced_stages_and_params() -> None:
    gate = parse_gate("validate.n_errors == 0 and train.rmse < params.max_rmse and wape <= champion.wape")
    assert referenced_stages(gate, ["validate", "train", "evaluate"]) == {"validate", "train"}
    assert referenced_stages(gate, ["evaluate"]) == set()
    assert referenced_params(gate) == {"max_rmse"}
    assert referenced_params(parse_gate("params.cfg.level > 1")) == {"cfg"}
