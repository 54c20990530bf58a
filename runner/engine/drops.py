"""Which files of a new-data folder are drops still waiting: the part of intake that needs nothing but the
standard library, so that a workflow asks it before installing anything (runner/github/precheck.py).

A file matching the `new` globs waits unless the same bytes are already in the history folder and kept
under `<accepted>/<run_id>/` with its name: then a run accepted it and a crash stopped the move before the
file left the new-data folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def waiting_files(
    root: Path, new: Iterable[str], history: str, accepted: str
) -> tuple[list[tuple[Path, str]], list[Path]]:
    """(path, sha256) of each waiting drop in name order, and the files whose acceptance was interrupted."""
    found = matching(root, new)
    if not found:
        return [], []
    known = {sha256(path) for path in (root / history).glob("*") if path.is_file()}
    drops: list[tuple[Path, str]] = []
    interrupted: list[Path] = []
    for path in found:
        digest = sha256(path)
        if digest in known and has_original(root / accepted, path.name, digest):
            interrupted.append(path)
        else:
            drops.append((path, digest))
    return drops, interrupted


def has_original(accepted: Path, name: str, digest: str) -> bool:
    return any(sha256(path) == digest for path in accepted.glob(f"*/{name}") if path.is_file())


def matching(root: Path, globs: Iterable[str]) -> list[Path]:
    found = {path for pattern in globs for path in root.glob(pattern) if path.is_file()}
    return sorted(found)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
