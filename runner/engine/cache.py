"""Content-hash caching: which stages of a run can reuse what an earlier run's stage produced.

A stage's fingerprint hashes everything that decides its results:

    its notebook's code cells (not outputs, not metadata) + its resolved parameters and the injected ones that
    change results (`mode`, `champion_uri`; never `products_dir` or `run_id`, which change every run) + its
    gates and the `params.*` they read + the champion's version when its notebook or gates read the champion +
    the contents of its declared `inputs` + its upstream stages' fingerprints + the runner's version

A stage without an `inputs` key has no fingerprint and is never cached: the runner cannot know what it
reads, and it may act on the world (a deploy). `inputs: []` declares that a stage reads nothing but its
upstream stages' products. A stage below one that has no fingerprint has none either.

The index `reports/.cache.json` maps a fingerprint to the run that executed the stage and the SHA-256 of every
output it declared. It is one small file read once per run: scanning every run's run.json instead would cost a
read and a parse per past run, and run.json holds no output hashes. A hit is used only when that run's
executed notebook is still there and every recorded output still hashes the same; a stale entry is a miss,
never an error. The index is rewritten atomically under a file lock, dropping entries whose run is gone.

The index also remembers, for stages that act on the world, the last key (code, parameters, champion) with
which each one succeeded, so that a run that changed nothing in production can say the deployment is done
instead of deploying the same model again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from runner import __version__
from runner.engine.config import Stage
from runner.engine.notebook_json import code_cells
from runner.files import atomic_copy, atomic_write_text
from runner.project import PRODUCTS_DIR
from runner.records import RunRecord, StageRecord, StageTimings
from runner.secrets import Redactor

INDEX_FILE = ".cache.json"
LOCK_FILE = ".cache.lock"
INDEX_VERSION = 1
# injected values that change every run, never the results
NOT_HASHED = frozenset({"products_dir", "run_dir", "run_id"})
RUN_OUTPUTS = PRODUCTS_DIR + "/"  # an output path starting so lives in the run's products folder


class FileHashes:
    """SHA-256 of files, each read once while it is unchanged (a data file is an input of several stages)."""

    def __init__(self) -> None:
        self._known: dict[tuple[Path, int, int], str] = {}

    def digest(self, path: Path) -> str:
        status = path.stat()
        key = (path, status.st_mtime_ns, status.st_size)
        if key not in self._known:
            with path.open("rb") as handle:
                self._known[key] = hashlib.file_digest(handle, "sha256").hexdigest()
        return self._known[key]


def matching_files(base: Path, patterns: tuple[str, ...]) -> list[Path]:
    """The files that the globs match under `base`, each once, sorted."""
    return sorted({path for pattern in patterns for path in base.glob(pattern) if path.is_file()})


def stage_fingerprint(
    stage: Stage,
    root: Path,
    *,
    injected: Mapping[str, Any],
    champion: str | None,
    upstream: Mapping[str, str | None],
    hashes: FileHashes,
) -> str | None:
    """The stage's content hash, or None when it cannot be cached (no inputs, or an upstream has none)."""
    if stage.inputs is None or any(upstream.get(name) is None for name in stage.needs):
        return None
    inputs = [
        [path.relative_to(root).as_posix(), hashes.digest(path)]
        for path in matching_files(root, stage.inputs)
    ]
    document = {
        **_run_defining(stage, injected, champion),
        "inputs": {"patterns": list(stage.inputs), "files": inputs},
        "upstream": {name: upstream[name] for name in sorted(stage.needs)},
    }
    return _digest(document)


def effect_key(stage: Stage, *, injected: Mapping[str, Any], champion: str | None) -> str:
    """What a stage that acts on the world (a deploy) did it with: code, parameters, champion, runner."""
    return _digest(_run_defining(stage, injected, champion))


def _run_defining(stage: Stage, injected: Mapping[str, Any], champion: str | None) -> dict[str, Any]:
    gate_params = sorted(
        name.removeprefix("params.")
        for gate in stage.gates
        for name in gate.names
        if name.startswith("params.")
    )
    return {
        "runner": __version__,
        "stage": stage.name,
        "code": code_cells(stage.notebook),
        "params": {**stage.params, **{k: v for k, v in injected.items() if k not in NOT_HASHED}},
        "gates": [gate.expr for gate in stage.gates],
        "gate_params": {name: stage.gate_params.get(name) for name in gate_params},
        "champion": champion,
    }


def _digest(document: Mapping[str, Any]) -> str:
    text = json.dumps(document, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Hit:
    """A completed stage of an earlier run that this run can reuse."""

    run_id: str
    run_dir: Path  # the earlier run's folder
    record: StageRecord  # the stage as that run recorded it: scraps, gates, pages
    outputs: tuple[str, ...]  # its declared outputs: "products/..." in its run folder, else in the project


class StageCache:
    """The project's index of reusable stage results (reports/.cache.json)."""

    def __init__(
        self, root: Path, reports_dir: Path, redact: Redactor, hashes: FileHashes | None = None
    ) -> None:
        self.root = root
        self.reports_dir = reports_dir
        self.redact = redact
        self.hashes = hashes or FileHashes()
        self._index = _read_index(reports_dir / INDEX_FILE)
        self._records: dict[str, RunRecord | None] = {}

    # --- reading ------------------------------------------------------------------------------------------
    def lookup(self, stage: str, fingerprint: str | None) -> Hit | None:
        """The earlier run's stage with this fingerprint, if its notebook and outputs are intact."""
        entry = self._index["stages"].get(fingerprint) if fingerprint else None
        if not isinstance(entry, dict) or entry.get("stage") != stage:
            return None
        run_id = str(entry.get("run_id", ""))
        outputs: dict[str, str] = entry.get("outputs", {})
        if not _inside(run_id) or not isinstance(outputs, dict) or not all(map(_inside, outputs)):
            return None  # an index edited by hand must not point outside reports/ or the project
        source = self.reports_dir / run_id
        record = self._run_record(run_id)
        stage_record = record.stages.get(stage) if record is not None else None
        if stage_record is None or stage_record.status != "succeeded" or not stage_record.notebook:
            return None
        if not (source / stage_record.notebook).is_file():
            return None
        for relative, expected in outputs.items():
            path = self._output_path(source, relative)
            try:
                if self.hashes.digest(path) != expected:
                    return None
            except OSError:  # gone, or not a file any more
                return None
        return Hit(run_id=run_id, run_dir=source, record=stage_record, outputs=tuple(outputs))

    def effect_run(self, stage: str, key: str) -> str | None:
        """The run in which a world-changing stage last succeeded with this key, if that run is still here."""
        entry = self._index["effects"].get(stage)
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        run_id = str(entry.get("run_id", ""))
        return run_id if (self.reports_dir / run_id / "run.json").is_file() else None

    def _run_record(self, run_id: str) -> RunRecord | None:
        if run_id not in self._records:
            try:
                data = json.loads((self.reports_dir / run_id / "run.json").read_text(encoding="utf-8"))
                self._records[run_id] = RunRecord.from_json(data)
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                self._records[run_id] = None
        return self._records[run_id]

    def _output_path(self, run_dir: Path, relative: str) -> Path:
        return run_dir / relative if relative.startswith(RUN_OUTPUTS) else self.root / relative

    # --- reusing ------------------------------------------------------------------------------------------
    def reuse(self, hit: Hit, run_dir: Path, current: StageRecord) -> None:
        """Copy the hit's products, executed notebook and page into this run; take its scraps and gates.

        Products are copied, not linked: a later stage of this run that rewrites a file in place must never
        change the earlier run's evidence.
        """
        for relative in hit.outputs:
            if relative.startswith(RUN_OUTPUTS):  # outputs elsewhere in the project are checked in place
                target = run_dir / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_copy(hit.run_dir / relative, target)
        for name in (hit.record.notebook, hit.record.html):
            if name and (hit.run_dir / name).is_file():
                atomic_copy(hit.run_dir / name, run_dir / name)
        current.status, current.cached_from = "cached", hit.run_id
        current.scraps, current.gates = dict(hit.record.scraps), list(hit.record.gates)
        current.notebook = hit.record.notebook
        current.html = hit.record.html if hit.record.html and (run_dir / hit.record.html).is_file() else None
        current.timings = StageTimings()

    # --- remembering --------------------------------------------------------------------------------------
    def remember(self, stage: Stage, fingerprint: str | None, run_dir: Path, current: StageRecord) -> None:
        """Record a stage that succeeded, with the hashes of its declared outputs.

        Nothing is recorded when an output pattern matches no file: a stage that did not write what it
        declares runs again next time.
        """
        if fingerprint is None or current.status != "succeeded" or not current.notebook:
            return
        outputs: dict[str, str] = {}
        for pattern in stage.outputs:
            run_relative = pattern.startswith(RUN_OUTPUTS)
            base = run_dir if run_relative else self.root
            found = matching_files(base, (pattern,))
            if not found:
                return
            for path in found:
                with path.open("rb") as handle:  # read afresh: the file was written during this run
                    digest = hashlib.file_digest(handle, "sha256").hexdigest()
                outputs[path.relative_to(base).as_posix()] = digest
        entry = {"run_id": run_dir.name, "stage": stage.name, "outputs": outputs}
        self._update(lambda index: index["stages"].__setitem__(fingerprint, entry))

    def remember_effect(self, stage: str, key: str, run_id: str) -> None:
        entry = {"key": key, "run_id": run_id}
        self._update(lambda index: index["effects"].__setitem__(stage, entry))

    def _update(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Read, change and rewrite the index under a lock, so that two runs at once lose no entry.

        The cache only saves time: an index that cannot be written costs a re-run later, never this run.
        """
        try:
            self._locked_update(change)
        except OSError:
            return

    def _locked_update(self, change: Callable[[dict[str, Any]], None]) -> None:
        with open(self.reports_dir / LOCK_FILE, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                index = _read_index(self.reports_dir / INDEX_FILE)
                change(index)
                present = {path.name for path in self.reports_dir.iterdir() if path.is_dir()}
                for section in ("stages", "effects"):
                    index[section] = {
                        key: entry
                        for key, entry in index[section].items()
                        if isinstance(entry, dict) and entry.get("run_id") in present
                    }
                text = json.dumps(index, indent=1, sort_keys=True)
                atomic_write_text(self.reports_dir / INDEX_FILE, text, redact=self.redact)
                self._index = index
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _inside(relative: str) -> bool:
    path = PurePosixPath(relative)
    return bool(relative) and not path.is_absolute() and ".." not in path.parts and "\\" not in relative


def _read_index(path: Path) -> dict[str, Any]:
    """The index; an empty one when it is missing, unreadable or of another version (a miss, not an error)."""
    empty: dict[str, Any] = {"version": INDEX_VERSION, "stages": {}, "effects": {}}
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return empty
    if not isinstance(index, dict) or index.get("version") != INDEX_VERSION:
        return empty
    for section in ("stages", "effects"):
        if not isinstance(index.get(section), dict):
            index[section] = {}
    return index
