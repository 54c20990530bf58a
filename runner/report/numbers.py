"""Numbers for people, one way everywhere: the key metric in its declared format, its change, and whether a
change is for the better. Every page, message and table formats metrics through here.

    percent   0.0623 -> "6.2%"        a change of -0.005 -> "-0.5 pp"
    number    0.8734 -> "0.873"        (digits after the point; a unit after it: "3,491 units")
    currency  3491.2 -> "$3,491.20"    (the unit is the symbol)
    integer   3491.2 -> "3,491"
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from runner.records import KeyMetric, MetricFormat

MINUS = "\u2212"  # a real minus sign: "-0.5" reads as a hyphen in a sentence


class Numbers:
    """How the pipeline's metrics read. Without a key metric, numbers are shown plainly (4 significant
    digits) and no change is called better or worse."""

    def __init__(self, key: KeyMetric | None) -> None:
        self.key = key

    @property
    def name(self) -> str | None:
        return self.key.name if self.key else None

    @property
    def title(self) -> str:
        """The key metric as people call it ("WAPE", "ROC AUC"); "" without one."""
        return self.key.title if self.key else ""

    @property
    def shown(self) -> list[str]:
        """The metrics worth showing, key first: the key metric and the ones declared beside it."""
        return [self.key.name, *(other.name for other in self.key.others)] if self.key else []

    def title_of(self, metric: str) -> str:
        """What people call a metric: its label, else its name."""
        found = self._format(metric)
        return found.title if found else metric

    def _format(self, metric: str | None) -> MetricFormat | None:
        key = self.key
        if key is None:
            return None
        if metric is None or metric == key.name:
            return key
        return next((other for other in key.others if other.name == metric), None)

    def value(self, value: Any, metric: str | None = None) -> str:
        """One metric's value in its declared format (the key metric's when `metric` is None); a metric
        without a declared format plainly."""
        number = _finite(value)
        if number is None:
            return "n/a" if value is not None else ""
        found = self._format(metric)
        return _plain(number) if found is None else _formatted(number, found)

    def change(self, new: Any, old: Any, metric: str | None = None) -> str:
        """How `new` differs from `old`: "-0.5 pp" for a percent, else the difference in the metric's own
        format with a sign; "" when either is unknown."""
        a, b = _finite(new), _finite(old)
        if a is None or b is None:
            return ""
        difference = a - b
        sign = "+" if difference > 0 else (MINUS if difference < 0 else "\u00b1")
        found = self._format(metric)
        if found is None:
            return sign + _plain(abs(difference))
        if found.format == "percent":
            return f"{sign}{abs(difference) * 100:.{found.digits}f} pp"
        return sign + _formatted(abs(difference), found)

    def relative(self, new: Any, old: Any) -> str:
        """The change as a share of the old value: "-5.9%"; "" when it cannot be said."""
        a, b = _finite(new), _finite(old)
        if a is None or b is None or b == 0:
            return ""
        share = (a - b) / abs(b) * 100
        return f"{'+' if share > 0 else MINUS if share < 0 else ''}{abs(share):.1f}%"

    def better(self, new: Any, old: Any) -> bool | None:
        """Whether `new` is better than `old` by the key metric's direction; None when unknown or equal."""
        a, b = _finite(new), _finite(old)
        if self.key is None or a is None or b is None or a == b:
            return None
        return a < b if self.key.better == "lower" else a > b

    def direction(self) -> str:
        """ "lower is better" / "higher is better"; "" without a key metric."""
        return f"{self.key.better} is better" if self.key else ""

    def metrics(self, values: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(name, shown value) for the metrics worth showing that `values` has, key first."""
        return [(name, self.value(values[name], name)) for name in self.shown if name in values]


def _formatted(number: float, found: MetricFormat) -> str:
    if found.format == "percent":
        return f"{number * 100:.{found.digits}f}%".replace("-", MINUS)
    if found.format == "currency":
        sign = MINUS if number < 0 else ""
        return f"{sign}{found.unit}{abs(number):,.{found.digits}f}"
    if found.format == "integer":
        text = f"{round(number):,}".replace("-", MINUS)
    else:
        text = f"{number:,.{found.digits}f}".replace("-", MINUS)
    return f"{text} {found.unit}" if found.unit else text


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _plain(number: float) -> str:
    if number == 0:
        return "0"
    magnitude = abs(number)
    if magnitude >= 1e6 or magnitude < 1e-4:
        return f"{number:.3g}".replace("-", MINUS)
    if magnitude >= 1000:
        return f"{number:,.0f}".replace("-", MINUS)
    return f"{number:.4g}".replace("-", MINUS)
