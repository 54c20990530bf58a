"""New labeled data: the drops waiting in `data/new/`, and where they go once a run has judged them.

    a run starts   -> `waiting`: the drops, each with its sha256 (a drop changed during the run stays put)
    the run ends   -> `settle`: succeeded in full, with a model registered (when the pipeline declares one)
                                                   -> accepted: each drop copied to `data/accepted/<run_id>/`
                                                      (the original, kept) and added to the history folder
                                                      (append-only: files are added, none is rewritten),
                                                      then removed from `data/new/`
                                 the data stage's gates refused the data -> quarantined: moved whole to
                                                      `data/quarantine/<run_id>/`, beside REASON.md and
                                                      reason.json
                                 anything else      -> kept: `data/new/` as it was, so that pushing again
                                                      (or a fixed model) retries

Every copy goes through a temporary file and a rename, so that a crash leaves a drop either where it was or
where it went, never half-written. An acceptance is three steps (the original kept in `data/accepted/`, a
copy added to the history, the drop removed from `data/new/`): a crash after the first leaves an original in
`data/accepted/` for a drop still waiting, and `waiting` finishes that acceptance (the run that began it
had succeeded) before the next run looks at the drops. Nothing here deletes a byte a user committed without
a copy of it existing elsewhere first.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.engine import drops as files_of
from runner.engine.config import DataSpec
from runner.files import atomic_copy, atomic_write_text
from runner.records import DataRecord, RunRecord
from runner.secrets import Redactor

REASON_FILE = "REASON.md"
REASON_JSON = "reason.json"


@dataclass(frozen=True)
class Drop:
    path: Path
    sha256: str


def waiting(data: DataSpec, root: Path, *, finish_interrupted: bool = True) -> list[Drop]:
    """The drops in `data.new`, in name order, after finishing any acceptance a crash interrupted (only
    within a run, which holds the project's lock: `finish_interrupted=False` only looks)."""
    found, interrupted = files_of.waiting_files(root, data.new, data.history, data.accepted)
    if finish_interrupted:
        history, added = root / data.history, set()
        for left in interrupted:
            if not left.in_history and left.sha256 not in added:  # stopped before the copy to the history
                _add_to_history(left.path, left.sha256, history, left.run_id)
                added.add(left.sha256)
            left.path.unlink()
    return [Drop(path, digest) for path, digest in found]


def folders(data: DataSpec | None, root: Path) -> list[Path]:
    """The folders the runner writes drops into (where a killed copy may have left a temporary file)."""
    if data is None:
        return []
    return [root / data.history, root / data.accepted, root / data.quarantine]


def nothing_new(data: DataSpec | None, root: Path, trigger: str, force: bool) -> str | None:
    """Why this run would retrain nothing (no drop waiting, for a trigger that only retrains on new data),
    or None when it should run."""
    if data is None or force or trigger not in data.skip_when_nothing_new:
        return None
    if waiting(data, root, finish_interrupted=False):
        return None
    globs = ", ".join(data.new)
    return (
        f"nothing new: no file matches {globs}, so a {trigger} run retrains nothing "
        "(--force retrains on the history anyway)"
    )


def record_drops(drops: list[Drop], root: Path) -> DataRecord:
    return DataRecord(drops=[_relative(drop.path, root) for drop in drops])


def settle(
    data: DataSpec,
    record: RunRecord,
    drops: list[Drop],
    root: Path,
    redact: Redactor,
    *,
    model_declared: bool = False,
) -> DataRecord:
    """Accept, quarantine or keep the run's drops, as the run's outcome says (see the module's docstring).
    `model_declared`: the pipeline has a model, so a drop is accepted only by a run that registered one."""
    result = record_drops(drops, root)
    if not drops:
        result.action, result.detail = "none", "no new data in this run"
        return result
    validate = record.stages.get(data.stage)
    unchanged = [drop for drop in drops if drop.path.is_file() and files_of.sha256(drop.path) == drop.sha256]
    changed = [_relative(drop.path, root) for drop in drops if drop not in unchanged]
    refused = _refused(validate.scraps, unchanged, root) if validate is not None else []
    if validate is not None and validate.status == "gate_failed" and not refused:
        named = ", ".join(str(item) for item in validate.scraps.get("rejected_files", []))
        result.action = "kept"
        result.detail = (
            f"{_count(drops, 'file')} left in place: stage '{data.stage}' refused other files ({named}), "
            "not the new drops"
        )
    elif validate is not None and validate.status == "gate_failed":
        folder = _run_folder(root / data.quarantine, record.run_id)
        _write_reason(folder, record, data.stage, refused, root, redact)
        moved = [_move(drop.path, folder / drop.path.name) for drop in refused]
        result.action, result.folder = "quarantined", _relative(folder, root)
        result.files = [_relative(path, root) for path in moved]
        result.detail = (
            f"{_count(moved, 'file')} moved to {result.folder}/ (reasons in {REASON_FILE}); "
            "fix and add again to data/new/ to retry"
        )
    elif accepts(record, model_declared):
        folder = _run_folder(root / data.accepted, record.run_id)
        added = [_accept(drop, folder, root / data.history) for drop in unchanged]
        result.action, result.folder = "accepted", _relative(folder, root)
        result.files = [_relative(path, root) for path in added]
        result.detail = (
            f"{_count(added, 'file')} added to {data.history}/ (originals in {result.folder}/): "
            "the next run trains on them"
        )
    else:
        result.action = "kept"
        result.detail = f"{_count(drops, 'file')} left in place: {_why_kept(record, data)}"
    if changed:
        result.detail += f"; changed during the run, left in place: {', '.join(changed)}"
    return result


def accepts(record: RunRecord, model_declared: bool) -> bool:
    """The outcome rule for new data: a run that succeeded, in full (every stage, mode full), and that
    registered a model (or found it already registered) when the pipeline declares one."""
    if record.status != "succeeded" or record.mode != "full" or record.options.get("only"):
        return False
    return not model_declared or (record.model is not None and record.model.version is not None)


def _refused(scraps: dict[str, Any], drops: list[Drop], root: Path) -> list[Drop]:
    """The drops the data stage named in its `rejected_files` scrap (none, when it only named files of the
    history: a broken history is not the new drop's fault); all of them when the stage has no such scrap (it
    refused the data without saying which file: none of it may reach training)."""
    named = scraps.get("rejected_files")
    if isinstance(named, list):
        return [drop for drop in drops if _relative(drop.path, root) in {str(item) for item in named}]
    return drops


def _accept(drop: Drop, accepted: Path, history: Path) -> Path:
    """Keep the original under `accepted`, add a copy to `history`, then remove it from `data/new/`."""
    _copy(drop.path, accepted / drop.path.name)
    target = _add_to_history(drop.path, drop.sha256, history, accepted.name)
    drop.path.unlink()
    return target


def _add_to_history(path: Path, digest: str, history: Path, run_id: str) -> Path:
    """A copy of the drop in the history, under its own name unless another file has it (never overwritten:
    then under a name with the accepting run's id)."""
    target = history / path.name
    if target.exists() and files_of.sha256(target) != digest:
        target = history / f"{path.stem}-{run_id}{path.suffix}"
    if not target.exists():
        _copy(path, target)
    return target


def _why_kept(record: RunRecord, data: DataSpec) -> str:
    if record.status == "cancelled":
        return "the run was cancelled"
    if record.mode != "full":
        return f"mode {record.mode} accepts no data"
    if record.options.get("only"):
        return "a run with --only accepts no data"
    problem = record.first_problem
    if problem is not None:
        return f"stage '{problem.name}' {problem.status.replace('_', ' ')}; the data itself was not refused"
    return f"the run {record.status.replace('_', ' ')}"


def _write_reason(
    folder: Path, record: RunRecord, stage: str, refused: list[Drop], root: Path, redact: Redactor
) -> None:
    """REASON.md for people and reason.json for tools, written before any file moves."""
    scraps = record.stages[stage].scraps
    gates = [gate for gate in record.stages[stage].gates if not gate.passed]
    problems = scraps.get("problems")
    rows = _table_rows(problems)
    names = {_relative(drop.path, root) for drop in refused}
    mine = [row for row in rows if any(name in str(row.get("file", "")) for name in names)] or rows
    document = {
        "run_id": record.run_id,
        "pipeline": record.pipeline,
        "stage": stage,
        "files": sorted(names),
        "gates": [{"expr": gate.expr, "detail": gate.detail} for gate in gates],
        "problems": mine,
    }
    lines = [
        f"# Quarantined by run {record.run_id}",
        "",
        f"Stage `{stage}` of pipeline `{record.pipeline}` refused these files; they were moved here from",
        "where they arrived, unchanged. Fix them and add them again to retry.",
        "",
        *[f"- `{name}`" for name in sorted(names)],
        "",
        "## Failed gates",
        "",
        *[f"- `{gate.expr}`: {gate.detail}" for gate in gates],
    ]
    if mine:
        columns = list(mine[0])
        lines += ["", "## Problems", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cell(row.get(column)) for column in columns) + " |" for row in mine]
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / REASON_JSON, json.dumps(document, indent=2, default=str), redact=redact)
    atomic_write_text(folder / REASON_FILE, "\n".join(lines) + "\n", redact=redact)


def _table_rows(value: Any) -> list[dict[str, Any]]:
    """The rows of a table scrap (as runner/engine/scraps.py stores a DataFrame), or []."""
    if isinstance(value, dict) and value.get("type") == "table":
        columns = [str(column) for column in value.get("columns", [])]
        return [dict(zip(columns, row, strict=False)) for row in value.get("rows", [])]
    return []


def _cell(value: Any) -> str:
    return str(value if value is not None else "").replace("|", "\\|").replace("\n", " ")


def _run_folder(base: Path, run_id: str) -> Path:
    folder = base / run_id
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _move(source: Path, target: Path) -> Path:
    """Move within the project: a rename, atomic on one file system; a copy then a removal otherwise."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, target)
    except OSError:
        _copy(source, target)
        source.unlink()
    return target


def _copy(source: Path, target: Path) -> None:
    """The user's file, byte for byte (never redacted: it is their data), whole at `target` or absent."""
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_copy(source, target)


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _count(items: list[Any], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"
