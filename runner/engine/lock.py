"""One `retrain run` at a time in a project: an exclusive lock on `reports/.run.lock`.

Two runs at once in one project would race for the stage cache, the run index and the registry's aliases.
The second run waits up to `wait_s` seconds (default 0: it does not wait) and then gives up with
`ProjectBusy` (exit 75), naming the run that holds the lock. The lock is `fcntl.flock`: the operating system
releases it when its holder ends, however it ends (SIGKILL and power loss included), so a crashed run never
leaves a project locked. The file itself stays; its content only says who holds it.

Runs in different clones, on different machines, are not serialised by this lock: the registry's
compare-and-set (runner/production/registry.py) keeps them from both promoting.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from runner.errors import ProjectBusy, WriteError
from runner.secrets import Redactor

LOCK_FILE = ".run.lock"
POLL_S = 0.2


@contextlib.contextmanager
def project_lock(
    reports_dir: Path,
    *,
    redact: Redactor,
    wait_s: float = 0.0,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the project's run lock for the duration of the `with` block.

    `on_wait(holder)` is called once if the lock is taken and this call is going to wait for it."""
    path = reports_dir / LOCK_FILE
    try:
        reports_dir.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+", encoding="utf-8")
    except OSError as error:
        raise WriteError.about(path, error) from error
    with handle:
        _acquire(handle, path, wait_s, on_wait)
        try:
            _say_who_holds(handle, redact)
            yield
        finally:
            with contextlib.suppress(OSError):
                handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _acquire(handle: IO[str], path: Path, wait_s: float, on_wait: Callable[[str], None] | None) -> None:
    deadline = time.monotonic() + max(0.0, wait_s)
    told = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = holder_of(path)
            if time.monotonic() >= deadline:
                waited = f" (waited {wait_s:g} s)" if wait_s > 0 else ""
                raise ProjectBusy(
                    f"another retrain run is running in this project{waited}: {holder}. Wait for it to"
                    f" finish, or pass --wait SECONDS to queue behind it (lock: {path})"
                ) from None
            if on_wait is not None and not told:
                on_wait(holder)
                told = True
            time.sleep(POLL_S)


def _say_who_holds(handle: IO[str], redact: Redactor) -> None:
    """Write who holds the lock into it, for the message another run shows; best effort (a full disk
    must not stop the run that holds the lock)."""
    since = datetime.now(UTC).isoformat(timespec="seconds")
    command = " ".join(["retrain", *sys.argv[1:]])[:200]
    with contextlib.suppress(OSError):
        handle.seek(0)
        handle.truncate()
        handle.write(redact.redact(f"pid {os.getpid()} on {socket.gethostname()} since {since} ({command})"))
        handle.flush()


def holder_of(path: Path) -> str:
    """Who holds the lock, as its holder wrote it; "an unknown process" before it has written it."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return text or "an unknown process (it has just taken the lock)"
