"""The machine's absolute paths taken out of what people read and what is published.

An executed notebook carries the paths of the machine that ran it: the products folder injected as a
parameter, papermill's `input_path`/`output_path` metadata, the frames of a traceback, a warning's file name.
Once GitHub Pages publishes a run they are public, and on any page they are noise. `MachinePaths` replaces
them with placeholders a reader understands:

| path | placeholder |
| --- | --- |
| the project's root | `<project>` |
| the Python environment (`sys.prefix`, a virtual environment) | `<python>` |
| the Python installation it was made from (`sys.base_prefix`) | `<python-base>` |
| the home folder | `~` |

A path is replaced only where it is whole (followed by `/`, a quote, a space or the end: `/root` never turns
`/rootfs` into `~fs`); the longest first, so a virtual environment inside the project reads `<python>`.

In an HTML page the placeholders are escaped (`&lt;project&gt;`), so that the browser shows them. It is a
step beside the secrets' redactor (`Redactor.scrubbing(paths)` adds it): the stage pages, the run
page and the history are written through it, and `retrain github pages` passes every file it publishes
through it. The executed notebooks and run.json kept in `reports/<run_id>/` are not scrubbed: the runner
reads them back (scraps, the cache, `retrain report`), and a local reader may follow their paths.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from pathlib import Path

PROJECT, PYTHON, PYTHON_BASE, HOME = "<project>", "<python>", "<python-base>", "~"
# Characters that continue a path's last name: where one follows, the path found is a longer name's prefix.
_NAME_GOES_ON = r"(?![\w.\-+@~])"
# ...and that come before a path only inside a word or a base64 image (which must not lose "/root" by chance).
_NOT_AFTER = r"(?<![\w+])"
_SHORTEST = 4  # "/usr" is the shortest folder worth replacing; "/" or "/a" would shred every path


@dataclass(frozen=True, repr=False)
class MachinePaths:
    """The folders of this machine to replace, each with its placeholder, as one compiled pattern."""

    pairs: tuple[tuple[str, str], ...] = ()
    _pattern: re.Pattern[str] | None = None

    @classmethod
    def of(cls, root: Path | None, *, home: Path | None = None, html: bool = False) -> MachinePaths:
        """The project's `root` (None: unknown), the Python environment and installation, the home folder.
        `html`: placeholders escaped, for an HTML page (where a bare `<project>` would be read as a tag)."""
        found: list[tuple[Path, str]] = [
            (Path(sys.prefix), PYTHON),
            (Path(sys.base_prefix), PYTHON_BASE),
            (home if home is not None else Path.home(), HOME),
        ]
        if root is not None:
            found.insert(0, (root, PROJECT))
        return cls.from_pairs(_spellings(found), html=html)

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]], *, html: bool = False) -> MachinePaths:
        unique: dict[str, str] = {}
        for path, placeholder in pairs:
            if len(path) >= _SHORTEST:
                unique.setdefault(path, escape(placeholder) if html else placeholder)
        ordered = tuple(sorted(unique.items(), key=lambda item: -len(item[0])))
        if not ordered:
            return cls()
        alternatives = "|".join(re.escape(path) for path, _ in ordered)
        return cls(ordered, re.compile(f"{_NOT_AFTER}(?:{alternatives}){_NAME_GOES_ON}"))

    def __repr__(self) -> str:
        return f"MachinePaths({len(self.pairs)} paths)"

    def scrub(self, text: str) -> str:
        if self._pattern is None:
            return text
        lookup = dict(self.pairs)
        return self._pattern.sub(lambda match: lookup[match.group(0)], text)

    def found_in(self, text: str) -> list[str]:
        """The machine paths `text` still holds (for checks and tests)."""
        return [] if self._pattern is None else sorted(set(self._pattern.findall(text)))


def _spellings(found: Iterable[tuple[Path, str]]) -> list[tuple[str, str]]:
    """Each folder as written and resolved (a symlinked temporary folder), and escaped for JSON and HTML."""
    pairs = []
    for path, placeholder in found:
        for form in dict.fromkeys([str(path), str(path.resolve())]):
            for spelled in dict.fromkeys([form, json.dumps(form)[1:-1], escape(form)]):
                pairs.append((spelled.rstrip("/\\"), placeholder))
    return pairs
