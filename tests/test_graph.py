import pytest

from runner.engine.graph import StageCycleError, downstream_of, stage_order, upstream_of, with_upstream

pytestmark = pytest.mark.unit

DIAMOND = {
    "validate": [],
    "features": ["validate"],
    "baseline": ["validate"],
    "evaluate": ["features", "baseline"],
}


def test_order_runs_needs_first_and_keeps_declaration_order():
    assert stage_order(DIAMOND) == ["validate", "features", "baseline", "evaluate"]
    assert stage_order({"b": [], "a": []}) == ["b", "a"]


def test_cycle_lists_the_loop():
    with pytest.raises(StageCycleError) as caught:
        stage_order({"a": ["c"], "b": ["a"], "c": ["b"], "d": []})
    assert caught.value.cycle[0] == caught.value.cycle[-1]
    assert set(caught.value.cycle) == {"a", "b", "c"}
    assert "a -> c -> b -> a" in str(caught.value)


def test_upstream_downstream_and_selection():
    assert upstream_of("evaluate", DIAMOND) == {"validate", "features", "baseline"}
    assert downstream_of("features", DIAMOND) == {"evaluate"}
    assert downstream_of("validate", DIAMOND) == {"features", "baseline", "evaluate"}
    assert with_upstream(["features"], DIAMOND) == {"validate", "features"}
