"""Reading YAML a user wrote (pipeline.yaml, a params file, a `-p` value): fast, and safe with hostile input.

libyaml's loader when PyYAML has it (ten times faster than the pure-Python one: a cached rerun reads
pipeline.yaml twice); the safe schema always (no Python objects). What PyYAML raises on bad input comes back
as one `YamlError` with a message a person can act on: a syntax error, a number too long to be one (Python
refuses integers of more than 4300 digits, with a ValueError from inside the loader), or a document nested
too deep. Aliases make a value shared, never copied: `bounded_repr` shows any value in a message without
walking all of it.
"""

from __future__ import annotations

import reprlib
from typing import Any

import yaml

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlError(ValueError):
    """The text is not YAML the runner can read; the message says why, on one line."""


def load(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as error:
        raise YamlError(" ".join(str(error).split())) from None
    except ValueError as error:  # int("9" * 5000) inside the constructor
        raise YamlError(f"a value cannot be read: {' '.join(str(error).split())[:200]}") from None
    except RecursionError:
        raise YamlError("the document is nested too deep") from None


def bounded_repr(value: Any) -> str:
    """A short repr of any value (a long string, a huge or self-repeating structure) for a message."""
    shown = reprlib.Repr()
    shown.maxlevel, shown.maxdict, shown.maxlist, shown.maxtuple = 3, 6, 6, 6
    shown.maxstring, shown.maxother, shown.maxlong = 60, 60, 40
    return shown.repr(value)


MAX_NODES = 10_000  # values, lists and mappings in one parameter's value, aliases expanded


def too_large(value: Any, limit: int = MAX_NODES) -> bool:
    """Whether `value` holds more than `limit` values once its aliases are expanded (as papermill and
    run.json would write it out): a few lines of aliases can stand for billions of them."""
    pending, seen = [value], 0
    while pending:
        item = pending.pop()
        seen += 1
        if seen > limit:
            return True
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return False
