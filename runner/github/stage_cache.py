"""The stage cache between jobs: a hosted runner starts with an empty `reports/`, so the cache index
(`reports/.cache.json`) and the run folders it points to travel in GitHub's cache (actions/cache).

    after a run:  `pack`   the index and the run folders it names -> one folder, and a key that is the hash of
                           what the index fingerprints (same stages, same results: same key, saved once)
    before a run: `unpack` that folder (the most recent saved, actions/cache's restore-keys) -> reports/,
                           run folders that are not there yet and the index's entries merged in

The runner then decides stage by stage as it does locally (runner/engine/cache.py): an entry is used only
when its run's notebook and every recorded output are there and unchanged.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from runner.engine.cache import INDEX_FILE
from runner.files import atomic_copy, atomic_write_text
from runner.secrets import Redactor

SECTIONS = ("stages", "effects")


def pack(reports: Path, folder: Path) -> tuple[str, list[str]]:
    """Copy the index and the run folders it names into `folder` (which must not exist); returns the cache
    key ("" when there is no index: nothing to keep) and the runs kept."""
    index = _read(reports / INDEX_FILE)
    if index is None:
        return "", []
    runs = sorted(
        {
            str(entry.get("run_id"))
            for entry in _entries(index)
            if (reports / str(entry.get("run_id"))).is_dir()
        }
    )
    folder.mkdir(parents=True)
    for run_id in runs:
        shutil.copytree(reports / run_id, folder / run_id)
    atomic_copy(reports / INDEX_FILE, folder / INDEX_FILE)
    keyed = {
        section: sorted((key, entry.get("run_id")) for key, entry in index[section].items())
        for section in SECTIONS
    }
    digest = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return f"stages-{digest}", runs


def unpack(folder: Path, reports: Path, redact: Redactor) -> list[str]:
    """Put the saved run folders that `reports` lacks into it and merge the saved index into its own (an
    entry this checkout already has stays); returns the runs added."""
    saved = _read(folder / INDEX_FILE)
    if saved is None:
        return []
    reports.mkdir(parents=True, exist_ok=True)
    added = []
    for run in sorted(path for path in folder.iterdir() if path.is_dir()):
        if not (reports / run.name).exists():
            shutil.copytree(run, reports / run.name)
            added.append(run.name)
    index = _read(reports / INDEX_FILE) or {**saved, **{section: {} for section in SECTIONS}}
    for section in SECTIONS:
        index[section] = {**saved[section], **index[section]}
    atomic_write_text(reports / INDEX_FILE, json.dumps(index, indent=1, sort_keys=True), redact=redact)
    return added


def _read(path: Path) -> dict[str, Any] | None:
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or not all(isinstance(index.get(section), dict) for section in SECTIONS):
        return None
    return index


def _entries(index: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry for section in SECTIONS for entry in index[section].values() if isinstance(entry, dict)]
