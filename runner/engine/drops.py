"""Which files of a new-data folder are drops still waiting: the part of intake that needs nothing but the
standard library, so that a workflow asks it before installing anything (runner/github/precheck.py).

A file matching the `new` globs waits unless the same bytes are kept under `<accepted>/<run_id>/` with its
name: then a run accepted it and a crash stopped the move before the file left the new-data folder (before
or after its copy reached the history folder).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple


class Interrupted(NamedTuple):
    """A file whose acceptance a crash interrupted: what is left to do is finishing it."""

    path: Path
    sha256: str
    run_id: str  # the run that accepted it: the folder under `accepted` that keeps its original
    in_history: bool  # False: stopped before its copy reached the history folder


def waiting_files(
    root: Path, new: Iterable[str], history: str, accepted: str
) -> tuple[list[tuple[Path, str]], list[Interrupted]]:
    """(path, sha256) of each waiting drop in name order, and the files whose acceptance was interrupted."""
    found = matching(root, new)
    if not found:
        return [], []
    known = {sha256(path) for path in (root / history).glob("*") if path.is_file()}
    drops: list[tuple[Path, str]] = []
    interrupted: list[Interrupted] = []
    for path in found:
        digest = sha256(path)
        run_id = accepted_by(root / accepted, path.name, digest)
        if run_id is not None:
            interrupted.append(Interrupted(path, digest, run_id, digest in known))
        else:
            drops.append((path, digest))
    return drops, interrupted


def accepted_by(accepted: Path, name: str, digest: str) -> str | None:
    """The run that kept an original of these bytes under this name when it accepted it, if any."""
    found = (path for path in sorted(accepted.glob(f"*/{name}")) if path.is_file())
    return next((path.parent.name for path in found if sha256(path) == digest), None)


def matching(root: Path, globs: Iterable[str]) -> list[Path]:
    found = {path for pattern in globs for path in root.glob(pattern) if path.is_file()}
    return sorted(found)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
