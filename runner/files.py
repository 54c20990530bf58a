"""Every file the runner writes goes through this module: redacted, and atomic where it replaces a file.

Redacted: the bytes pass through the run's `Redactor` (runner/secrets.py) before they reach the disk, so a
secret never lands in reports/, the step summary or GitHub's output files, whoever produced the text (a
notebook cell, a traceback, a template). The redactor is a required argument: a writer cannot forget it.
tests/test_secrets.py checks that no other module of runner/ opens a file for writing.

Atomic: a temporary file in the same folder (`.<name>.<random>.tmp`), then `os.replace`. Readers see the
old file or the new one, never a part of either, even when the process is killed mid-write; such a kill
leaves only the temporary file, which the next run removes (`remove_stale_temporaries`) once it holds the
project's lock (runner/engine/lock.py), when no other writer can be busy.

A write that fails (a full disk, a read-only folder) raises `WriteError`, which names the file; it is an
OSError too, so callers for whom a write is optional (the stage cache) keep treating it as one.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from runner.errors import WriteError
from runner.secrets import Redactor

TEMP_SUFFIX = ".tmp"
# what `tempfile.mkstemp(prefix=".<name>.", suffix=".tmp")` names: a product a notebook wrote is never taken
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def atomic_write_bytes(path: Path, data: bytes, *, redact: Redactor) -> None:
    """Write `data`, redacted, to `path` so that readers see the old file or the new one, never a part."""
    _replace_with(path, lambda handle: handle.write(redact.redact_bytes(data)))


def atomic_write_text(path: Path, text: str, *, redact: Redactor) -> None:
    """`atomic_write_bytes` for UTF-8 text (newlines written as given, on every platform)."""
    _replace_with(path, lambda handle: handle.write(redact.redact(text).encode("utf-8")))


def create_new_bytes(path: Path, data: bytes, *, redact: Redactor) -> None:
    """Write `data`, redacted, to `path`, which must not exist: a file already there (even one that appears
    meanwhile) is never replaced, and raises FileExistsError. The bytes go to a temporary file first, then
    take the name with a hard link, which fails if the name is taken: never a part of a file either."""
    tmp_name = ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        with os.fdopen(fd, "wb") as handle:
            handle.write(redact.redact_bytes(data))
        os.chmod(tmp_name, 0o644)
        try:
            os.link(tmp_name, path)
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            _create_exclusive(path, Path(tmp_name).read_bytes())  # no hard links on this file system
    except FileExistsError:
        raise
    except OSError as error:
        raise WriteError.about(path, error) from error
    finally:
        if tmp_name:
            Path(tmp_name).unlink(missing_ok=True)


def _create_exclusive(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def atomic_copy(source: Path, target: Path) -> None:
    """Copy a file the runner wrote earlier (already redacted) so that `target` is whole or absent."""

    def copy(handle: BinaryIO) -> None:
        with source.open("rb") as origin:
            shutil.copyfileobj(origin, handle)

    _replace_with(target, copy)


def append_text(path: Path, text: str, *, redact: Redactor) -> None:
    """Append, redacted, to a file others write too ($GITHUB_STEP_SUMMARY, $GITHUB_OUTPUT): no rename."""
    try:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(redact.redact(text))
    except OSError as error:
        raise WriteError.about(path, error) from error


class SpaceReserve:
    """Room kept on the disk for a run's last words: a file of zeros written when the run starts, removed
    just before the final run.json is written again on a disk that filled up meanwhile, so that the run's
    outcome reaches the disk even then (runner/endings.py). Named like a temporary file: a run killed before
    it removes it leaves it for the next run to sweep (`remove_stale_temporaries`). A disk already too full
    to hold it gets none (the run will fail on its first write anyway)."""

    NAME = ".space.reserved.tmp"
    SIZE = 256 * 1024

    def __init__(self, folder: Path, size: int = SIZE) -> None:
        self.path = folder / self.NAME
        try:
            with self.path.open("wb") as handle:  # zeros: nothing to redact
                handle.write(bytes(size))
                handle.flush()
                os.fsync(handle.fileno())  # the blocks are the disk's only once written out
            self.held = True
        except OSError:
            self.path.unlink(missing_ok=True)
            self.held = False

    def release(self) -> bool:
        """Give the room back to the disk; whether there was any."""
        held, self.held = self.held, False
        self.path.unlink(missing_ok=True)
        return held


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left under `folder`; returns them.

    Only safe while no writer can be at work there: call it holding the project's lock."""
    removed = []
    if folder.is_dir():
        for path in folder.rglob(f".*{TEMP_SUFFIX}"):
            if path.is_file() and _TEMPORARY.match(path.name):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def _replace_with(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    tmp_name = ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        with os.fdopen(fd, "wb") as handle:
            fill(handle)
        os.chmod(tmp_name, 0o644)  # mkstemp's 0600 would hide reports from a web server or a teammate
        os.replace(tmp_name, path)
    except OSError as error:
        if tmp_name:
            Path(tmp_name).unlink(missing_ok=True)
        raise WriteError.about(path, error) from error
    except BaseException:
        if tmp_name:
            Path(tmp_name).unlink(missing_ok=True)
        raise
