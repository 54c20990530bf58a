"""What a notebook records, read from its code without running it: the names of its scraps.

`retrain check` uses it to catch a gate, `model.candidate`, `model.refit`, `model.key_metric`, `champion.*` or
a promotion policy that names a scrap no notebook records ("did you mean 'wape'?"), which would otherwise
surface only when the run gets there. A call counts when it is `glue(...)` through any name (`sb.glue`,
`scrapbook.glue`, the notebook library's `nb.glue`) with the scrap's name as a literal string;
`record_predictions(...)` records `predictions`, `record_paired(...)` records `paired`. A name built at run
time (an f-string, a variable) makes the notebook's list incomplete, and then nothing is reported for it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from runner.engine.gates import GateSyntaxError, parse_gate
from runner.engine.notebook_json import code_cells
from runner.errors import Problem, did_you_mean
from runner.paired import PAIRED  # the scrap `runner.nb.record_paired` glues, the decision reads

if TYPE_CHECKING:
    from runner.engine.config import PipelineSpec

PREDICTIONS = "predictions"  # the scrap `runner.nb.record_predictions` glues


@dataclass(frozen=True)
class Glued:
    names: frozenset[str] = frozenset()
    complete: bool = True  # False: some name is only known at run time
    # the keys of a dict literal glued as `champion` (what the notebook measured for the production model)
    champion_keys: frozenset[str] = field(default_factory=frozenset)


def glued_names(notebook: Path) -> Glued:
    """The scraps a notebook's code records; an unreadable notebook or cell makes the list incomplete."""
    try:
        cells = code_cells(notebook)
    except (OSError, ValueError):
        return Glued(complete=False)
    names: set[str] = set()
    champion: set[str] = set()
    complete = True
    for source in cells:
        try:
            tree = ast.parse(_python_only(source))
        except SyntaxError:
            complete = False
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if called == "record_predictions":
                names.add(PREDICTIONS)
            if called == "record_paired":
                names.add(PAIRED)
            if called != "glue":
                continue
            name = _first_argument(node)
            if name is None:
                complete = False
                continue
            names.add(name)
            value = node.args[1] if len(node.args) > 1 else None
            if name == "champion" and isinstance(value, ast.Dict):
                keys = [key.value for key in value.keys if isinstance(key, ast.Constant)]
                champion |= {key for key in keys if isinstance(key, str)}
    return Glued(frozenset(names), complete, frozenset(champion))


def _first_argument(call: ast.Call) -> str | None:
    given = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "name"), None)
    return given.value if isinstance(given, ast.Constant) and isinstance(given.value, str) else None


def _python_only(source: str) -> str:
    """The cell without IPython's magics and shell escapes, which are not Python."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def scrap_name_problems(file: str, root: Path, spec: PipelineSpec) -> list[Problem]:
    """Each gate name, `model.candidate`, key metric and `champion.*` name that no notebook records."""
    glued = {
        name: glued_names(root / stage.notebook) if stage.notebook else Glued(complete=False)
        for name, stage in spec.stages.items()
    }
    model = spec.model
    metrics_stage = model.metrics if model is not None else None
    champion = _champion_names(glued, metrics_stage)
    problems: list[Problem] = []

    def missing(where: str, stage: str, scrap: str, what: str) -> None:
        found = glued.get(stage)
        if found is None or not found.complete or scrap in found.names:
            return
        known = sorted(found.names)
        fix = did_you_mean(scrap, known) or f"it records: {', '.join(known) or 'nothing'}"
        message = f"{what} '{scrap}', which stage {stage}'s notebook never records"
        problems.append(Problem(file, where, message, fix))

    for name, stage in spec.stages.items():
        for index, expr in enumerate(stage.gates):
            try:
                names = parse_gate(expr).names
            except GateSyntaxError:
                continue  # reported with the gates
            where = f"stages.{name}.gates[{index}]"
            for dotted in sorted(names):
                head, _, rest = dotted.partition(".")
                if not rest:
                    missing(where, name, head, "reads")
                elif head == "champion" and champion is not None and rest not in champion:
                    known = sorted(champion)
                    fix = did_you_mean(rest, known) or f"the champion has: {', '.join(known)}"
                    message = f"'{dotted}': the champion records no '{rest}'"
                    problems.append(Problem(file, where, message, fix))
                elif head in spec.stages:
                    missing(where, head, rest, "reads")
    if model is not None:
        missing("model.candidate", model.candidate_stage, model.candidate_scrap, "names")
        if model.key_metric is not None:
            missing("model.key_metric.name", model.metrics, model.key_metric.name, "names")
        for index, shown in enumerate(model.shown):
            missing(f"model.show_metrics[{index}]", model.metrics, shown.name, "names")
        if model.refit_stage is not None:
            missing("model.refit", model.refit_stage, model.refit_scrap, "names")
        policy = model.promotion_policy
        if policy is not None and policy.rule != "threshold":
            missing("model.promotion_policy", model.metrics, PAIRED, "compares the paired rows")
    return problems


def _champion_names(glued: dict[str, Glued], metrics_stage: str | None) -> frozenset[str] | None:
    """What `champion.*` can name: the metrics stage's numbers (the champion's registered metrics), what a
    stage measured for the champion (the keys of its `champion` scrap), its version; None when unknown."""
    if metrics_stage is None or metrics_stage not in glued or not all(g.complete for g in glued.values()):
        return None
    measured = frozenset().union(*(g.champion_keys for g in glued.values()))
    if any("champion" in g.names and not g.champion_keys for g in glued.values()):
        return None  # a champion scrap built at run time: its keys are not known
    return glued[metrics_stage].names | measured | {"version"}
