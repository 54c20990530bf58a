"""Gates: the expression language that decides whether a stage's results may move forward.

A gate such as `wape <= champion.wape * 1.02` is parsed with `ast.parse(mode="eval")` and checked against an
allow-list of node types; it is never `eval`ed. `x` is a scrap of the gate's own stage, `params.x` a
parameter, `champion.x` a metric of the production model, `<stage>.x` a scrap of a stage that ran (`params`
and `champion` are reserved first segments); more segments (`params.a.b`) look into mappings.

Evaluation never raises; each problem becomes a failed GateResult whose detail says what is wrong:
- every name is read before anything is computed: a missing scrap, stage, parameter or champion metric, or a
  NaN (scrapbook's strings "nan", "inf", "-inf" become floats; inf compares as a number) fails the gate, even
  in a term that `and`/`or` would skip;
- with no champion yet, a gate that names `champion.*` passes as a whole, whatever its other terms say (a
  first model has nothing to beat); missing names and NaN still fail it;
- < <= > >= + - * / need numbers (true/false is not a number), == and != two values of one kind, and/or/not
  true/false; division by zero and a NaN result fail the gate;
- and/or short-circuit as in Python (`x != 0 and y / x > 1` is safe); the detail shows the terms that decided.
"""

from __future__ import annotations

import ast
import copy
import difflib
import itertools
import json
import math
import numbers
import operator
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runner.records import GateResult

RESERVED = frozenset({"params", "champion"})
Value = bool | int | float | str
_BOOLS = {"true": True, "false": False}
_NON_FINITE = {"nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity"}
_Op = tuple[str, Callable[[Any, Any], Any]]
_BINOPS: dict[type[ast.AST], _Op] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
}
_CMPOPS: dict[type[ast.AST], _Op] = {
    ast.Eq: ("==", operator.eq),
    ast.NotEq: ("!=", operator.ne),
    ast.Lt: ("<", operator.lt),
    ast.LtE: ("<=", operator.le),
    ast.Gt: (">", operator.gt),
    ast.GtE: (">=", operator.ge),
}
_FORBIDDEN_TABLE = """
    Call: function calls are
    Subscript Slice: subscripts (`x[...]`) are
    Lambda: lambdas are
    IfExp: conditional expressions (`a if b else c`) are
    NamedExpr: assignments (`:=`) are
    JoinedStr: f-strings are
    ListComp SetComp DictComp GeneratorExp: comprehensions are
    List Tuple Set Dict: lists, tuples, sets and dicts are
    Starred Await Yield YieldFrom: starred expressions, await and yield are
    Pow: the power operator `**` is
    FloorDiv: floor division `//` is
    Mod: the modulo operator `%` is
    MatMult BitAnd BitOr BitXor LShift RShift Invert: bitwise operators are
    Is IsNot: `is` and `is not` are
    In NotIn: `in` and `not in` are
"""
_FORBIDDEN = {  # ast class name -> what an error message calls it
    name: what.strip()
    for names, what in (row.split(":", 1) for row in _FORBIDDEN_TABLE.strip().splitlines())
    for name in names.split()
}
_ALLOWED_OPS: dict[type[ast.AST], Collection[type[ast.AST]]] = {
    ast.BinOp: _BINOPS,
    ast.Compare: _CMPOPS,
    ast.UnaryOp: {ast.Not, ast.USub, ast.UAdd},
    ast.BoolOp: {ast.And, ast.Or},
}


class GateSyntaxError(ValueError):
    """A gate outside the gate language; the message says what is wrong and at which column."""


@dataclass(frozen=True)
class Gate:
    expr: str
    names: frozenset[str]  # dotted names it reads, e.g. {"wape", "champion.wape", "params.wape_threshold"}
    tree: ast.Expression = field(compare=False, repr=False)
    ordered_names: tuple[str, ...] = field(default=(), compare=False, repr=False)  # in order of appearance


@dataclass(frozen=True)
class GateScope:
    stage: str  # the stage the gate belongs to
    scraps: Mapping[str, Mapping[str, Any]]  # scraps of every stage that ran so far (includes `stage`)
    params: Mapping[str, Any]  # the stage's resolved parameters
    champion: Mapping[str, Any] | None  # production model's registered metrics; None = no champion yet


def parse_gate(expr: str) -> Gate:
    """Parse and check `expr`; raises GateSyntaxError for anything outside the gate language."""
    text = expr.strip()
    if not text:
        raise GateSyntaxError("gate is empty: write an expression such as `n_errors == 0`")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as error:
        lineno = error.lineno or 1
        line = text.splitlines()[lineno - 1] if lineno <= len(text.splitlines()) else ""
        column = error.offset if error.offset and error.offset > 0 else len(line) + 1
        message = "invalid syntax" if error.msg.startswith("invalid syntax") else error.msg
        before, after = line[: column - 1], line[column - 1 :]
        if after.startswith("=") and not after.startswith("==") and not before.endswith(("<", ">", "!", "=")):
            message += " (`=` assigns; compare with `==`)"
        near = f", at `{after.rstrip()[:30]}`" if after.strip() else " (end of gate)"
        raise GateSyntaxError(f"{message} at {_at(lineno, column)}{near}") from None
    names: list[str] = []
    _check(tree.body, text, names)
    return Gate(text, frozenset(names), tree, tuple(names))


def referenced_stages(gate: Gate, stage_names: Collection[str]) -> set[str]:
    """The stages among `stage_names` whose scraps the gate reads as `<stage>.<scrap>` (maybe its own)."""
    return {name.split(".")[0] for name in gate.names if "." in name} & (set(stage_names) - RESERVED)


def referenced_params(gate: Gate) -> set[str]:
    """The parameter keys the gate reads as `params.<key>` (the first key of `params.a.b`)."""
    return {name.split(".")[1] for name in gate.names if name.startswith("params.")}


def evaluate_gate(gate: Gate, scope: GateScope) -> GateResult:
    values: dict[str, Any] = {}  # for the report: every name, None where it could not be read
    resolved: dict[str, Value] = {}
    problems: list[str] = []
    no_champion: list[str] = []
    for name in gate.ordered_names or sorted(gate.names):
        values[name] = None
        if name.startswith("champion.") and scope.champion is None:
            no_champion.append(name)
            continue
        try:
            value, where = _resolve(name, scope)
        except _Fail as failure:
            problems.append(str(failure))
            continue
        values[name] = resolved[name] = value
        if isinstance(value, float) and math.isnan(value):
            problems.append(f"{name} is NaN ({where}); a NaN fails the gate")

    def result(passed: bool, detail: str) -> GateResult:
        return GateResult(gate.expr, passed, detail, values)

    if problems:
        return result(False, "; ".join(problems))
    if no_champion:
        verb = "is" if len(no_champion) == 1 else "are"
        return result(True, f"no champion yet: {', '.join(no_champion)} {verb} not available, gate passes")
    evaluator = _Evaluator(gate.expr, resolved)
    try:
        verdict, text = evaluator.value(gate.tree.body), evaluator.explain(gate.tree.body)
    except _Fail as failure:
        return result(False, str(failure))
    if not isinstance(verdict, bool):
        return result(False, f"gate must be true/false, got {_fmt(verdict)} ({text})")
    if verdict:
        return result(True, f"passed: {text}")
    return result(False, text if _dotted(gate.tree.body) else f"{text} is false")  # `flag = false` says it


def _check(node: ast.expr, expr: str, names: list[str]) -> None:
    """Reject every node outside the allow-list; collect the dotted names in order of appearance."""
    if isinstance(node, ast.Constant):
        if not isinstance(node.value, bool | int | float | str):
            kind = type(node.value).__name__
            _reject(node, expr, "`None` is" if node.value is None else f"{kind} literals are")
        return
    if isinstance(node, ast.Name | ast.Attribute):
        name = _dotted(node)
        if name is None:
            _reject(node, expr, "attributes of anything but a name are")
        elif name in RESERVED:
            _reject(node, expr, f"`{name}` without a key (write `{name}.<key>`) is")
        elif name not in _BOOLS and name not in names:
            names.append(name)
        return
    ops = node.ops if isinstance(node, ast.Compare) else [getattr(node, "op", None)]
    allowed_ops = _ALLOWED_OPS.get(type(node))
    if allowed_ops is None or any(type(op) not in allowed_ops for op in ops):
        bad = [type(node).__name__, *(type(op).__name__ for op in ops)]
        _reject(node, expr, next((_FORBIDDEN[n] for n in bad if n in _FORBIDDEN), f"`{bad[0]}` is"))
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.expr):
            _check(child, expr, names)


def _reject(node: ast.expr, expr: str, what: str) -> None:
    segment = " ".join((ast.get_source_segment(expr, node) or ast.unparse(node)).split())
    segment = segment if len(segment) <= 60 else segment[:57] + "..."
    line = expr.splitlines()[node.lineno - 1]
    column = len(line.encode()[: node.col_offset].decode(errors="ignore")) + 1  # col_offset counts bytes
    raise GateSyntaxError(f"{what} not allowed in a gate: `{segment}` at {_at(node.lineno, column)}")


def _at(lineno: int, column: int) -> str:
    return f"column {column}" if lineno == 1 else f"line {lineno}, column {column}"


def _dotted(node: ast.expr) -> str | None:
    """`a.b.c` for a chain of attributes on a name, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (head := _dotted(node.value)) is not None:
        return f"{head}.{node.attr}"
    return None


class _Fail(Exception):
    """Why the gate fails; its message becomes the detail."""


def _resolve(name: str, scope: GateScope) -> tuple[Value, str]:
    """The value `name` reads and where it comes from, e.g. "scrap 'wape' of stage 'evaluate'"."""
    own = "." not in name
    head, key, *deeper = [scope.stage, name] if own else name.split(".")
    if not own and head == "params":
        source, where = scope.params, f"parameter '{key}'"
        missing = f"parameter '{key}' is not set for stage '{scope.stage}' (parameters: "
    elif not own and head == "champion":
        source, where = scope.champion or {}, f"champion metric '{key}'"
        missing = f"the champion has no metric '{key}' (the champion has: "
    elif own or head in scope.scraps:
        source, where = scope.scraps.get(head, {}), f"scrap '{key}' of stage '{head}'"
        missing = f"scrap '{key}' was not recorded by stage '{head}' (recorded: "
    else:
        hint = _did_you_mean(head, [*scope.scraps, *RESERVED])
        ran = _listing(scope.scraps)
        raise _Fail(f"`{name}` reads stage '{head}', which has not run (stages that ran: {ran}){hint}")
    if key not in source:
        raise _Fail(f"{missing}{_listing(source)}){_did_you_mean(key, source)}")
    value = source[key]
    for part in deeper:
        if not isinstance(value, Mapping):
            raise _Fail(f"{where} is {_a(value)}, it has no key '{part}'")
        if part not in value:
            raise _Fail(f"{where} has no key '{part}' (keys: {_listing(value)}){_did_you_mean(part, value)}")
        value, where = value[part], f"{where}, key '{part}'"
    if isinstance(value, str) and value.strip().lower() in _NON_FINITE:
        return float(value), where  # how scrapbook spells NaN and infinities
    if isinstance(value, bool | str):
        return value, where
    if isinstance(value, numbers.Integral):
        return int(value), where
    if isinstance(value, numbers.Real):
        return float(value), where
    raise _Fail(f"{name} is {_a(value)} ({where}); a gate reads only numbers, strings and true/false")


def _a(value: Any) -> str:
    kind = type(value).__name__
    return "null" if value is None else f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _listing(keys: Iterable[Any]) -> str:
    names = sorted(str(key) for key in keys)
    more = f", and {len(names) - 12} more" if len(names) > 12 else ""
    return ", ".join(names[:12]) + more if names else "nothing"


def _did_you_mean(word: str, candidates: Iterable[Any]) -> str:
    close = difflib.get_close_matches(word, [str(candidate) for candidate in candidates], n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _is_number(value: Value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: Value) -> str:
    return "true/false" if isinstance(value, bool) else "number" if _is_number(value) else "string"


def _fmt(value: Value, digits: int = 4) -> str:
    """Numbers with up to `digits` significant digits (ints exact), strings quoted, booleans true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value):
        text = f"{value:.{digits}g}"
        return f"{value:.0f}" if "e" in text and 1e4 <= abs(value) < 1e16 else text  # 12346, not 1.235e+04
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)


def _digits_to_tell_apart(values: list[Value]) -> int:
    """Enough digits that different numbers side by side never read the same (`0.15 <= 0.15` is false)."""
    pairs = [(a, b) for a, b in itertools.pairwise(values) if a != b]
    pairs = [(a, b) for a, b in pairs if _is_number(a) and _is_number(b)]
    return next((d for d in range(4, 17) if all(_fmt(a, d) != _fmt(b, d) for a, b in pairs)), 17)


@dataclass(frozen=True)
class _Evaluator:
    expr: str
    values: Mapping[str, Value]

    def value(self, node: ast.expr) -> Value:
        name = _dotted(node)
        if name is not None:
            return _BOOLS[name] if name in _BOOLS else self.values[name]
        if isinstance(node, ast.Constant):
            assert isinstance(node.value, bool | int | float | str), node.value  # `_check` allows no other
            return node.value
        if isinstance(node, ast.UnaryOp):
            operand = self.value(node.operand)
            if isinstance(node.op, ast.Not):
                return not self._boolean(operand, "not", node.operand)
            (number,) = self._numbers(node, "-" if isinstance(node.op, ast.USub) else "+", operand)
            return -number if isinstance(node.op, ast.USub) else number
        if isinstance(node, ast.BinOp):
            symbol, function = _BINOPS[type(node.op)]
            a, b = self._numbers(node, symbol, self.value(node.left), self.value(node.right))
            if symbol == "/" and b == 0:
                raise _Fail(f"`{self.source(node)}` divides by zero ({self._substituted(node)})")
            try:
                result: int | float = function(a, b)
            except OverflowError:
                raise _Fail(f"`{self.source(node)}` is too large to compute") from None
            if isinstance(result, float) and math.isnan(result):
                raise _Fail(f"`{self.source(node)}` is NaN ({self._substituted(node)})")
            return result
        if isinstance(node, ast.BoolOp):
            word = "or" if isinstance(node.op, ast.Or) else "and"
            for child in node.values:
                if self._boolean(self.value(child), word, child) == (word == "or"):
                    return word == "or"
            return word == "and"
        assert isinstance(node, ast.Compare), ast.dump(node)  # `_check` allows nothing else
        holds, left = True, self.value(node.left)
        for cmp, right_node in zip(node.ops, node.comparators, strict=True):
            right = self.value(right_node)
            symbol, function = _CMPOPS[type(cmp)]
            if symbol not in ("==", "!="):
                self._numbers(node, symbol, left, right)
            elif _kind(left) != _kind(right):
                raise _Fail(
                    f"`{self.source(node)}` cannot be evaluated: `{symbol}` needs two values of one kind, "
                    f"got {_kind(left)} {_fmt(left)} and {_kind(right)} {_fmt(right)}"
                )
            holds, left = holds and function(left, right), right
        return holds

    def explain(self, node: ast.expr, digits: int = 4) -> str:
        """How `node` reads in a detail: `name = value`, arithmetic as `source = numbers = result`."""
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            digits = max(digits, _digits_to_tell_apart([self.value(n) for n in operands]))
            texts = [self._wrapped(n, digits, in_compare=True) for n in operands]
            symbols = [_CMPOPS[type(cmp)][0] for cmp in node.ops]
            return texts[0] + "".join(f" {s} {t}" for s, t in zip(symbols, texts[1:], strict=True))
        if isinstance(node, ast.BoolOp):
            word = "or" if isinstance(node.op, ast.Or) else "and"
            for child in node.values:
                if self.value(child) == (word == "or"):  # this term decides: show it alone
                    return self.explain(child, digits)
            return f" {word} ".join(self._wrapped(child, digits, in_compare=False) for child in node.values)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            text = self.explain(node.operand, digits)
            return f"not ({text})" if " " in text else f"not {text}"
        name, value = _dotted(node), self.value(node)
        if name is not None and name not in _BOOLS:
            return f"{name} = {_fmt(value, digits)}"
        literal = isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant)  # -1
        if literal or isinstance(node, ast.Constant | ast.Name):
            return _fmt(value, digits)
        steps = [self.source(node), self._substituted(node, digits), _fmt(value, digits)]
        return " = ".join(dict.fromkeys(steps))  # without repeats: `-x = -2`, `1 + 2 = 3`

    def _wrapped(self, node: ast.expr, digits: int, in_compare: bool) -> str:
        """The explanation of an operand, in parentheses where it would otherwise read ambiguously."""
        text = self.explain(node, digits)
        negated = isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)
        wrap = isinstance(node, ast.BoolOp) or (in_compare and (isinstance(node, ast.Compare) or negated))
        return f"({text})" if wrap else text

    def _substituted(self, node: ast.expr, digits: int = 4) -> str:
        """`node` with each name replaced by its value: `champion.wape * 1.02` reads `0.08 * 1.02`."""
        return ast.unparse(_Substitute(self, digits).visit(copy.deepcopy(node)))

    def _boolean(self, value: Value, word: str, node: ast.expr) -> bool:
        if not isinstance(value, bool):
            got = f"{_kind(value)} {_fmt(value)}"
            raise _Fail(f"`{word}` needs true/false, got {got} from `{self.source(node)}`")
        return value

    def _numbers(self, node: ast.expr, symbol: str, *values: Value) -> list[int | float]:
        if not all(_is_number(value) for value in values):
            got = " and ".join(f"{_kind(value)} {_fmt(value)}" for value in values)
            raise _Fail(f"`{self.source(node)}` cannot be evaluated: `{symbol}` needs numbers, got {got}")
        return [value for value in values if isinstance(value, int | float)]

    def source(self, node: ast.expr) -> str:
        return ast.get_source_segment(self.expr, node) or ast.unparse(node)


class _Substitute(ast.NodeTransformer):
    """Replaces each name by a Name whose id is the value as text, which `ast.unparse` prints verbatim."""

    def __init__(self, evaluator: _Evaluator, digits: int) -> None:
        self.evaluator, self.digits = evaluator, digits

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return self._replace(node)

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        return self._replace(node)

    def _replace(self, node: ast.expr) -> ast.AST:
        text = _fmt(self.evaluator.value(node), self.digits)
        return ast.Name(id=f"({text})" if text.startswith("-") else text)
