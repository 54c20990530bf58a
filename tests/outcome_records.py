"""Run records built by hand, one per outcome a team reads: promoted, promoted while worse within the margin,
held (the decision's interval in words), refused by the promotion policy, refused by the data (quarantined),
refused by a model gate, failed, cancelled. Used by the channel tests
(every surface states the same facts) and the notification tests (delivery)."""

from __future__ import annotations

from typing import Any

from runner.production.promotion import Comparison, Policy, decide
from runner.records import (
    DataRecord,
    GateResult,
    KeyMetric,
    MetricFormat,
    ModelRecord,
    RunContext,
    RunRecord,
    SmokeCheck,
    StageFailure,
    StageRecord,
)

RUN_ID = "20261126T074012Z-3fa9c1"
KEY = KeyMetric(
    "wape",
    "percent",
    1,
    label="WAPE",
    better="lower",
    others=[MetricFormat("mae", "currency", 0, "$", "MAE")],
)
CONTEXT = RunContext(
    actor="octocat",
    commit_message="Tune the learning rate",
    commit_url="https://github.com/acme/demand-forecast/commit/0123456789abcdef0123456789abcdef01234567",
    run_url="https://github.com/acme/demand-forecast/actions/runs/9876543210",
)


def stage(name: str, status: str = "succeeded", duration_s: float = 2.0, **fields: Any) -> StageRecord:
    return StageRecord(name, f"notebooks/{name}.ipynb", status, duration_s, **fields)  # type: ignore[arg-type]


def record(
    status: str, stages: list[StageRecord], model: ModelRecord | None = None, **fields: Any
) -> RunRecord:
    return RunRecord(
        run_id=RUN_ID,
        pipeline="demand-forecast",
        trigger="schedule",
        mode="full",
        git_sha="0123456789abcdef0123456789abcdef01234567",
        started_at="2026-11-26T07:40:12+00:00",
        finished_at="2026-11-26T07:42:03+00:00",
        duration_s=111.0,
        params={"holdout_weeks": 8, "num_leaves": 31},
        stages={item.name: item for item in stages},
        status=status,  # type: ignore[arg-type]
        model=model,
        key_metric=KEY,
        context=CONTEXT,
        **fields,
    )


def validate(passed: bool = True) -> StageRecord:
    gates = [
        GateResult("n_errors == 0", passed, f"n_errors = {0 if passed else 2} == 0 is {str(passed).lower()}")
    ]
    return stage(
        "validate", "succeeded" if passed else "gate_failed", 3.4, gates=gates, scraps={"n_errors": 0}
    )


def model(**fields: Any) -> ModelRecord:
    found: dict[str, Any] = {
        "name": "demand-forecast",
        "action": "registered",
        "version": "13",
        "champion_before": "12",
        "champion_after": "13",
        "promoted": True,
        "detail": "registered as version 13; promoted to champion (was 12)",
        "smoke_check": SmokeCheck(True, "56 predictions match, wape 0.079, 0.85 s", 0.85, 0.0),
        "metrics": {"wape": 0.079, "mae": 3491.0},
        "champion_metrics": {"wape": 0.084, "mae": 3710.0},
        "champion_params": {"holdout_weeks": 8, "num_leaves": 63},
    }
    return ModelRecord(**{**found, **fields})


def evaluate(wape: float, passed: bool = True) -> StageRecord:
    gates = [
        GateResult("wape <= 0.15", passed, f"wape = {wape} <= 0.15 is {str(passed).lower()}", {"wape": wape})
    ]
    return stage(
        "evaluate", "succeeded" if passed else "gate_failed", 8.9, gates=gates, scraps={"wape": wape}
    )


def promoted() -> RunRecord:
    stages = [validate(), stage("train", duration_s=65.3), evaluate(0.079), stage("deploy", duration_s=4.1)]
    data = DataRecord(
        ["data/new/sales-2012-04-06.csv"], "accepted", "data/accepted/" + RUN_ID, [], "1 file accepted"
    )
    return record("succeeded", stages, model(), data=data)


def comparison(difference: float, low: float, high: float, champion: float = 0.084) -> Comparison:
    """Paired rows of 4 backtests of 8 weeks of 7 departments, summed up."""
    return Comparison(champion + difference, champion, difference, low, high, 0.9, 224, 32, 4)


def promoted_worse() -> RunRecord:
    policy = Policy("non_inferior", margin=0.005)
    decision = decide(policy, comparison(0.002, -0.002, 0.004), KEY, who="v13")
    stages = [validate(), stage("train"), evaluate(0.086), stage("deploy")]
    return record("succeeded", stages, model(metrics={"wape": 0.086, "mae": 3800.0}, decision=decision))


def held() -> RunRecord:
    decision = decide(Policy("superior"), comparison(-0.003, -0.009, 0.004), KEY, who="v13")
    found = model(
        promoted=False,
        champion_after="12",
        detail="registered as version 13; held by the promotion policy: the champion stays",
        decision=decision,
        metrics={"wape": 0.081, "mae": 3600.0},
    )
    stages = [
        validate(),
        stage("train"),
        evaluate(0.081),
        stage("deploy", "skipped", 0.0, skip_reason="not run"),
    ]
    return record("succeeded", stages, found)


def refused_by_policy() -> RunRecord:
    """Every gate passed, but the promotion policy refused the model: wholly worse beyond the margin."""
    policy = Policy("non_inferior", margin=0.005)
    decision = decide(policy, comparison(0.012, 0.008, 0.016), KEY)
    found = model(
        action="not_registered",
        version=None,
        promoted=False,
        champion_after="12",
        detail="refused by the promotion policy: nothing was registered",
        smoke_check=None,
        decision=decision,
        metrics={"wape": 0.096, "mae": 4100.0},
    )
    stages = [
        validate(),
        stage("train"),
        evaluate(0.096),
        stage("deploy", "skipped", 0.0, skip_reason="not run"),
    ]
    return record("gate_failed", stages, found)


def refused_data() -> RunRecord:
    problems = {
        "type": "table",
        "columns": ["rule", "meaning", "column", "file", "count", "examples"],
        "rows": [
            [
                "not a number",
                "numbers are plain decimal numbers",
                "Weekly_Sales",
                "data/new/sales-2012-04-13.csv",
                1,
                "line 4: 'n/a'",
            ],
            [
                "duplicate key",
                "each (Store, Dept, Date) appears once",
                "",
                "data/new/sales-2012-04-13.csv",
                2,
                "lines 7, 8",
            ],
        ],
        "n_rows": 2,
    }
    first = stage(
        "validate",
        "gate_failed",
        3.1,
        scraps={"n_errors": 2, "problems": problems},
        gates=[GateResult("n_errors == 0", False, "n_errors = 2 == 0 is false", {"n_errors": 2})],
    )
    rest = [
        stage(name, "skipped", 0.0, skip_reason="not run: stage 'validate' gate failed")
        for name in ("train", "evaluate", "deploy")
    ]
    data = DataRecord(
        ["data/new/sales-2012-04-13.csv"],
        "quarantined",
        f"data/quarantine/{RUN_ID}",
        [f"data/quarantine/{RUN_ID}/sales-2012-04-13.csv"],
        "1 file moved",
    )
    champion = ModelRecord(name="demand-forecast", champion_before="12", champion_after="12")
    return record("gate_failed", [first, *rest], champion, data=data)


def refused_model() -> RunRecord:
    stages = [
        validate(),
        stage("train"),
        evaluate(0.21, passed=False),
        stage("deploy", "skipped", 0.0, skip_reason="not run"),
    ]
    data = DataRecord(
        ["data/new/sales-2012-04-06.csv"], "kept", None, [], "kept in data/new for the next run"
    )
    found = ModelRecord(
        name="demand-forecast", champion_before="12", champion_after="12", champion_metrics={"wape": 0.084}
    )
    return record("gate_failed", stages, found, data=data)


def failed() -> RunRecord:
    failure = StageFailure(
        "error",
        "ValueError: Input contains NaN (in cell [4])",
        5,
        "ValueError",
        "Input contains NaN",
        "----> 3 booster = lgb.train(params, train_set)",
    )
    stages = [
        validate(),
        stage("train", "failed", 12.7, failure=failure, error=f"stage 'train' failed: {failure.message}"),
        stage("evaluate", "skipped", 0.0, skip_reason="not run: stage 'train' failed"),
        stage("deploy", "skipped", 0.0, skip_reason="not run: stage 'train' failed"),
    ]
    return record(
        "failed", stages, ModelRecord(name="demand-forecast", champion_before="12", champion_after="12")
    )


def cancelled() -> RunRecord:
    failure = StageFailure(
        "cancelled", "interrupted (in cell [2])", 2, "KeyboardInterrupt", "the run was interrupted"
    )
    stages = [
        validate(),
        stage("train", "failed", 9.0, failure=failure, error="stage 'train' was interrupted"),
        stage("evaluate", "skipped", 0.0, skip_reason="not run: the run was interrupted"),
        stage("deploy", "skipped", 0.0, skip_reason="not run: the run was interrupted"),
    ]
    return record(
        "cancelled", stages, ModelRecord(name="demand-forecast", champion_before="12", champion_after="12")
    )


OUTCOMES = {
    "promoted": promoted,
    "promoted_worse": promoted_worse,
    "held": held,
    "refused_by_policy": refused_by_policy,
    "refused_data": refused_data,
    "refused_model": refused_model,
    "failed": failed,
    "cancelled": cancelled,
}
