"""The stage graph: execution order, cycles, and which stages a selection pulls in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from graphlib import CycleError, TopologicalSorter

Needs = Mapping[str, Sequence[str]]  # stage -> the stages it needs, in declaration order


class StageCycleError(ValueError):
    """The stages' `needs` form a loop; `cycle` lists it with the first stage repeated at the end."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__("stages depend on each other in a loop: " + " -> ".join(cycle))


def stage_order(needs: Needs) -> list[str]:
    """Stages in an order that runs every stage after the stages it needs.

    Among stages that are ready at the same time, declaration order wins, so the order is stable and
    reads like pipeline.yaml.
    """
    position = {name: index for index, name in enumerate(needs)}
    sorter: TopologicalSorter[str] = TopologicalSorter()
    for name, upstream in needs.items():
        sorter.add(name, *(stage for stage in upstream if stage in position))
    try:
        sorter.prepare()
    except CycleError as error:
        # graphlib reports the loop as [a, b, ..., a] walking "depends on" edges backwards
        raise StageCycleError(list(reversed(error.args[1]))) from None
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        order.extend(ready)
        sorter.done(*ready)
    return order


def upstream_of(name: str, needs: Needs) -> set[str]:
    """Every stage that `name` needs, directly or through other stages."""
    seen: set[str] = set()
    pending = list(needs.get(name, ()))
    while pending:
        stage = pending.pop()
        if stage not in seen:
            seen.add(stage)
            pending.extend(needs.get(stage, ()))
    return seen


def downstream_of(name: str, needs: Needs) -> set[str]:
    """Every stage that needs `name`, directly or through other stages."""
    return {stage for stage in needs if name in upstream_of(stage, needs)}


def with_upstream(selected: Iterable[str], needs: Needs) -> set[str]:
    """The selected stages plus everything they need: what `--only` runs."""
    chosen = set(selected)
    for name in list(chosen):
        chosen |= upstream_of(name, needs)
    return chosen
