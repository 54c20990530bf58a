"""Parameters: what a notebook declares, what the command line overrides, whether a value fits, and the
one resolver that decides what each notebook receives and where each value came from.

A notebook declares its parameters in the cell tagged `parameters`; papermill's Python translator reads the
names, defaults and comments from it. The type a parameter expects is its annotation, or else the type of
its default value. Values come in layers, later ones winning (`resolve`):

    pipeline (pipeline.yaml `params`) < stage (`stages.<name>.params`) < params file (`--params-file`)
    < command line (`-p`)                      and for the monitor notebook:
    pipeline < monitor setting (`monitor.metric`, ...) < monitor (`monitor.params`)

and the runner injects, into every notebook that declares them, `products_dir` (the folder where a run's
stages hand products to each other; `run_dir` is its older name, still served), `run_id`, `mode`,
`champion_uri` and `compute` (the `compute` section: where large data is computed). `run.json` keeps each
stage's values with their sources (`param_sources`).
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner import yamltext
from runner.engine import imports
from runner.engine.notebook_json import parameters_cell
from runner.errors import Problem, did_you_mean
from runner.secrets import Redactor

# Set by the runner for every notebook that declares them; never by pipeline.yaml or -p.
INJECTED = ("products_dir", "run_dir", "run_id", "mode", "champion_uri", "compute")
# Where a value came from, as run.json says it
PIPELINE, STAGE, PARAMS_FILE, COMMAND_LINE, RUNNER = "pipeline", "stage", "params file", "-p", "injected"
MONITOR_SETTING, MONITOR = "monitor setting", "monitor"
Layer = tuple[str, Mapping[str, Any]]  # (source, values)
_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}


@dataclass(frozen=True)
class NotebookParameter:
    name: str
    type_name: str  # int, float, str, bool, list, dict, or "any"
    default: str  # the default as written in the cell
    help: str = ""


def declared_parameters(notebook: Path) -> dict[str, NotebookParameter]:
    """The parameters a notebook declares; {} when it has no `parameters` cell. ValueError if unreadable."""
    cell = parameters_cell(notebook)
    return _inspect(cell) if cell is not None else {}


def _inspect(cell: Any) -> dict[str, NotebookParameter]:
    imports.papermill()
    import nbformat
    from papermill.translators import PythonTranslator

    cell = nbformat.from_dict(cell)  # papermill reads it as a notebook cell

    declared = {}
    for parameter in PythonTranslator.inspect(cell):
        type_name = parameter.inferred_type_name
        if type_name not in _TYPES:
            type_name = _type_of_default(parameter.default)
        declared[parameter.name] = NotebookParameter(
            parameter.name, type_name, parameter.default, parameter.help
        )
    return declared


class DeclaredParameters:
    """`declared_parameters`, remembered by the text of each notebook's parameters cell.

    Reading a parameters cell takes papermill, whose import costs a quarter of a second: more than a whole
    run whose stages all come from the cache. The answers are kept in `<folder>/.parameters.json`, keyed by
    the cell's SHA-256 under papermill's version, and rewritten (atomically) only when a new cell was read.
    A missing or unreadable file only means reading the cells again.
    """

    FILE = ".parameters.json"

    def __init__(self, folder: Path | None) -> None:
        self.path = folder / self.FILE if folder is not None else None
        self._reader = _reader_version()
        self._known: dict[str, list[list[str]]] = {}
        self._changed = False
        if self.path is not None:
            with contextlib.suppress(OSError, ValueError):
                stored = json.loads(self.path.read_text(encoding="utf-8"))
                if isinstance(stored, dict) and stored.get("reader") == self._reader:
                    self._known = dict(stored.get("cells", {}))

    def __call__(self, notebook: Path) -> dict[str, NotebookParameter]:
        cell = parameters_cell(notebook)
        if cell is None:
            return {}
        key = hashlib.sha256(cell["source"].encode("utf-8")).hexdigest()
        if key in self._known:
            with contextlib.suppress(TypeError, ValueError):
                return {fields[0]: NotebookParameter(*fields) for fields in self._known[key]}
        declared = _inspect(cell)
        self._known[key] = [[p.name, p.type_name, p.default, p.help] for p in declared.values()]
        self._changed = True
        return declared

    def save(self, redact: Redactor) -> None:
        """Write what is new, into an existing folder only (a run that fails early leaves no reports/)."""
        if self.path is None or not self._changed or not self.path.parent.is_dir():
            return
        from runner.files import atomic_write_text

        with contextlib.suppress(OSError):
            document = {"reader": self._reader, "cells": self._known}
            atomic_write_text(self.path, json.dumps(document, indent=1, sort_keys=True), redact=redact)
            self._changed = False


def _reader_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"papermill {version('papermill')}"
    except PackageNotFoundError:
        return "papermill unknown"


def _type_of_default(default: str) -> str:
    try:
        value = ast.literal_eval(default)
    except (ValueError, SyntaxError):
        return "any"
    return type(value).__name__ if type(value).__name__ in _TYPES else "any"


def parameter_problems(
    file: str,
    where: str,
    notebook: str,
    given: Mapping[str, Any],
    declared: Mapping[str, NotebookParameter],
    reserved: Mapping[str, tuple[str, str]] | None = None,
) -> list[Problem]:
    """What is wrong with the parameters `given` to `notebook` in `file` at key path `where`: one set by the
    runner, one `reserved` for something else (name -> message, fix), one the notebook does not declare, or
    a value that does not fit the declared default's type."""
    problems = []
    for key, value in given.items():
        at = f"{where}.{key}"
        if key in INJECTED:
            problems.append(Problem(file, at, f"'{key}' is set by the runner", "remove it from params"))
        elif reserved and key in reserved:
            problems.append(Problem(file, at, *reserved[key]))
        elif key not in declared:
            message = f"{notebook} does not declare '{key}' in its parameters cell"
            fix = did_you_mean(key, list(declared)) or f"it declares: {', '.join(declared) or 'nothing'}"
            problems.append(Problem(file, at, message, fix))
        elif (trouble := check_value(declared[key], value)) is not None:
            problems.append(Problem(file, at, trouble))
    return problems


def check_value(parameter: NotebookParameter, value: Any) -> str | None:
    """Why `value` does not fit the parameter, or None when it does."""
    expected = parameter.type_name
    if expected == "any" or value is None:
        return None
    if expected == "str" and isinstance(value, str | int | float | bool):
        return None  # -p name=2024 reads as a number; the notebook wants text: coerce() makes it text
    if expected == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return None
    if expected == "int" and isinstance(value, float) and value.is_integer():
        return None
    if isinstance(value, _TYPES[expected]) and not (expected != "bool" and isinstance(value, bool)):
        return None
    shown = yamltext.bounded_repr(value)
    return f"'{parameter.name}' expects {expected} (default {parameter.default}), got {shown}"


def coerce(parameter: NotebookParameter, value: Any) -> Any:
    """The value converted to the parameter's type where check_value allowed a looser one."""
    if parameter.type_name == "str" and value is not None and not isinstance(value, str):
        return str(value).lower() if isinstance(value, bool) else str(value)
    if parameter.type_name == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if parameter.type_name == "int" and isinstance(value, float):
        return int(value)
    return value


@dataclass(frozen=True)
class Resolved:
    """What a notebook receives: each declared parameter that some layer sets, with the layer it came from."""

    values: Mapping[str, Any] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)


def resolve(declared: Mapping[str, NotebookParameter], layers: list[Layer]) -> Resolved:
    """The values of the parameters `declared` by a notebook, from `layers` (later ones win), each converted
    to its declared type; the names the runner injects are never taken from a layer."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, layer in layers:
        for key, value in layer.items():
            if key in declared and key not in INJECTED:
                values[key], sources[key] = coerce(declared[key], value), source
    return Resolved(values, sources)


def injected(
    declared: Mapping[str, NotebookParameter],
    *,
    products: Path,
    run_id: str,
    mode: str,
    champion_uri: str,
    compute: Mapping[str, Any],
) -> dict[str, Any]:
    """What the runner gives a notebook that declares them: the products folder (as `products_dir`, and as
    `run_dir`, its older name), the run's id, its mode, the champion's pinned URI ("" when none) and the
    pipeline's `compute` section ({} when none)."""
    available = {
        "products_dir": str(products),
        "run_dir": str(products),
        "run_id": run_id,
        "mode": mode,
        "champion_uri": champion_uri,
        "compute": dict(compute),
    }
    return {key: value for key, value in available.items() if key in declared}


def merged(layers: list[Layer]) -> dict[str, Any]:
    """Every value the layers set, declared or not (what `params.*` means in a gate)."""
    found: dict[str, Any] = {}
    for _, layer in layers:
        found.update(layer)
    return found


@dataclass(frozen=True)
class Overrides:
    """Parameters from `--params-file` and `-p KEY=VALUE` (the latter win), with the problems parsing them."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (file, where) for messages
    problems: tuple[Problem, ...] = ()

    def layers(self) -> list[Layer]:
        """The overrides as resolver layers: the params file's, then the command line's."""
        from_file = {k: v for k, v in self.values.items() if self.sources[k][0] != COMMAND_SOURCE}
        from_line = {k: v for k, v in self.values.items() if self.sources[k][0] == COMMAND_SOURCE}
        return [(PARAMS_FILE, from_file), (COMMAND_LINE, from_line)]

    def check_against(
        self, pipeline_params: Mapping[str, Any], declared: Mapping[str, Mapping[str, NotebookParameter]]
    ) -> list[Problem]:
        """A key must be a pipeline-wide parameter or declared by some stage: a typo must not do nothing."""
        known = set(pipeline_params) | {key for params in declared.values() for key in params}
        problems = []
        for key, value in self.values.items():
            file, where = self.sources[key]
            if key in INJECTED:
                fix = "use --mode" if key == "mode" else "the runner sets it for every run"
                problems.append(Problem(file, where, f"'{key}' cannot be overridden", fix))
            elif key not in known:
                fix = did_you_mean(key, sorted(known)) or f"known parameters: {', '.join(sorted(known))}"
                problems.append(Problem(file, where, f"unknown parameter '{key}'", fix))
            else:
                for stage, params in declared.items():
                    if key in params and (trouble := check_value(params[key], value)) is not None:
                        problems.append(Problem(file, where, f"{trouble} (stage {stage})"))
        return problems


COMMAND_SOURCE = "command line"  # the `file` of a -p value's messages


def parse_overrides(pairs: list[str], params_file: Path | None = None) -> Overrides:
    """Read `--params-file` (a YAML mapping) then `-p KEY=VALUE` pairs, values parsed as YAML scalars."""
    values: dict[str, Any] = {}
    sources: dict[str, tuple[str, str]] = {}
    problems: list[Problem] = []
    if params_file is not None:
        loaded, trouble = _read_params_file(params_file)
        if trouble:
            problems.append(trouble)
        for key, value in loaded.items():
            values[key] = value
            sources[key] = (str(params_file), str(key))
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        shown = pair if len(pair) <= 80 else f"{pair[:60]}...{pair[-12:]} ({len(pair)} characters)"
        if not sep or not key.isidentifier():
            problems.append(
                Problem(COMMAND_SOURCE, f"-p {shown}", "expected KEY=VALUE", "e.g. -p horizon_weeks=8")
            )
            continue
        try:
            value = yamltext.load(text) if text.strip() else ""
        except yamltext.YamlError:
            value = text  # not YAML (an unbalanced quote, a number too long to be one): take it as text
        if isinstance(value, dict | list):
            fix = "quote it to pass text, or put structured values in --params-file"
            problems.append(Problem(COMMAND_SOURCE, f"-p {shown}", "expected a single value", fix))
            continue
        values[key] = value
        sources[key] = (COMMAND_SOURCE, f"-p {shown}")
    return Overrides(values=values, sources=sources, problems=tuple(problems))


def _read_params_file(path: Path) -> tuple[dict[str, Any], Problem | None]:
    try:
        loaded = yamltext.load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, Problem(str(path), "", "params file not found")
    except (OSError, UnicodeDecodeError, yamltext.YamlError) as error:
        return {}, Problem(str(path), "", f"not valid YAML: {' '.join(str(error).split())}")
    if loaded is None:
        return {}, None
    if not isinstance(loaded, dict) or not all(isinstance(key, str) for key in loaded):
        return {}, Problem(
            str(path), "", "expected a mapping of parameter names to values", "e.g. horizon_weeks: 8"
        )
    return loaded, None
