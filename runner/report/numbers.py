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

from runner.records import KeyMetric

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
        return [self.key.name, *self.key.others] if self.key else []

    def value(self, value: Any, metric: str | None = None) -> str:
        """One metric's value: the key metric in its format; any other metric plainly."""
        number = _finite(value)
        if number is None:
            return "n/a" if value is not None else ""
        key = self.key
        if key is None or (metric is not None and metric != key.name):
            return _plain(number)
        if key.format == "percent":
            return f"{number * 100:.{key.digits}f}%"
        if key.format == "currency":
            sign = MINUS if number < 0 else ""
            return f"{sign}{key.unit}{abs(number):,.{max(key.digits, 0)}f}"
        if key.format == "integer":
            text = f"{round(number):,}".replace("-", MINUS)
        else:
            text = f"{number:,.{key.digits}f}".replace("-", MINUS)
        return f"{text} {key.unit}" if key.unit else text

    def change(self, new: Any, old: Any, metric: str | None = None) -> str:
        """How `new` differs from `old`: "-0.5 pp" for a percent, else the difference in the metric's own
        format with a sign; "" when either is unknown."""
        a, b = _finite(new), _finite(old)
        if a is None or b is None:
            return ""
        difference = a - b
        sign = "+" if difference > 0 else (MINUS if difference < 0 else "\u00b1")
        key = self.key
        if key is None or (metric is not None and metric != key.name):
            return sign + _plain(abs(difference))
        if key.format == "percent":
            return f"{sign}{abs(difference) * 100:.{key.digits}f} pp"
        return sign + self.value(abs(difference)).lstrip(MINUS)

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
        """"lower is better" / "higher is better"; "" without a key metric."""
        return f"{self.key.better} is better" if self.key else ""

    def metrics(self, values: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(name, shown value) for the metrics worth showing that `values` has, key first."""
        return [(name, self.value(values[name], name)) for name in self.shown if name in values]


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
