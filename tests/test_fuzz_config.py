"""Property-based tests: whatever pipeline.yaml and the -p values hold, `retrain check` (which validates all
that `run` would, running nothing) answers with success (0) or configuration errors (2), never a traceback.

The generated files mix what is valid (the asset notebooks, their parameters, real gate syntax) with what is
not (unknown keys, wrong types, NaN, unicode, broken YAML), so that examples reach the deep checks too.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.commands import main
from tests.conftest import ASSETS

pytestmark = pytest.mark.unit

NOTEBOOKS = [f"notebooks/{path.name}" for path in sorted((ASSETS / "notebooks").glob("*.ipynb"))]
NAMES = [
    "x",
    "y",
    "threshold",
    "kilobytes",
    "run_dir",
    "mode",
    "first",
    "second",
    "only",
    "SLACK_WEBHOOK_URL",
]
KEYS = ["version", "name", "params", "stages", "model", "notify", "secrets", "warmup", "stage", "verison"]
STAGE_KEYS = ["notebook", "params", "timeout", "gates", "needs", "show_code", "inputs", "outputs", "warmup"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(NAMES + NOTEBOOKS),
)
names = st.one_of(st.sampled_from(NAMES), st.text(max_size=12))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=6,
)
gates = st.one_of(
    st.sampled_from(
        ["y == 2", "y >= params.threshold", "z < first.y", "champion.wape > 0", "not y", "y ==", "1 +"]
    ),
    st.text(max_size=20),
)


STAGE_VALUES = {
    "notebook": st.one_of(st.sampled_from(NOTEBOOKS), st.text(max_size=15)),
    "params": st.dictionaries(names, values, max_size=3),
    "timeout": st.one_of(st.floats(), st.integers(-5, 10), st.text(max_size=5)),
    "gates": st.lists(gates, max_size=3),
    "needs": st.lists(names, max_size=2),
}


@st.composite
def stage(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(values)  # not a mapping at all
    keys = draw(st.lists(st.sampled_from(STAGE_KEYS), max_size=5, unique=True))
    body = {key: draw(STAGE_VALUES.get(key, values)) for key in keys}
    if draw(st.booleans()):
        body.setdefault("notebook", draw(st.sampled_from(NOTEBOOKS)))
    return body


@st.composite
def pipeline_text(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 19)) == 0:
        return draw(st.text(max_size=80))  # not even YAML, perhaps
    document: dict[Any, Any] = {
        "version": draw(st.one_of(st.just(1), values)),
        "name": draw(st.one_of(st.just("toy"), values)),
    }
    document["stages"] = draw(st.one_of(st.dictionaries(names, stage(), min_size=1, max_size=3), values))
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=3, unique=True)):
        document[key] = draw(values)
    if draw(st.booleans()):
        document["params"] = draw(st.dictionaries(names, values, max_size=3))
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


pairs = st.lists(
    st.one_of(
        st.builds(lambda key, value: f"{key}={value}", names, st.text(max_size=15)),
        st.text(max_size=15),
    ),
    max_size=3,
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "project"
    shutil.copytree(ASSETS / "notebooks", root / "notebooks")
    return root / "pipeline.yaml"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=pipeline_text(), params=pairs)
def test_any_pipeline_and_parameters_give_a_result_or_a_configuration_error(
    project: Path, capsys: pytest.CaptureFixture[str], text: str, params: list[str]
) -> None:
    project.write_text(text, encoding="utf-8")
    argv = ["check", str(project)]
    for pair in params:
        argv += ["-p", pair]
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own usage errors (`-p -x`: a value that looks like an option)
        code = stop.code
    captured = capsys.readouterr()
    assert code in (0, 2), captured.out + captured.err
    assert "Traceback" not in captured.err
    if code == 2:
        assert "error:" in captured.err  # one message, not a crash
