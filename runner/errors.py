"""The exceptions the runner raises on purpose, each carrying the exit code the CLI uses for it.

    RetrainError                 exit 1  reported without a traceback
    ├── ConfigError              exit 2  pipeline.yaml, -p or --params-file is wrong: every problem found
    ├── UsageError               exit 2  a command asked for something that cannot be (unknown run, ...)
    ├── ProjectBusy              exit 75 another `retrain run` holds the project's lock: try again later
    └── WriteError               exit 1  a file could not be written (disk full, read-only); also an OSError

A stage that fails or a gate that fails is not an exception: it is a status in the run record, and the CLI
maps the run's status to exit codes 1 and 3 (see `exit_code_for_status`). `retrain monitor` exits 4 when
the champion has decayed: a finding, not an error.
Ctrl-C and SIGTERM end a run as `cancelled` (exit 130). Anything else that escapes is a bug: the CLI prints
its traceback and exits 70 (EX_SOFTWARE of sysexits.h), so that a crash never reads as a failed stage.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

EXIT_OK = 0
EXIT_STAGE_FAILED = 1
EXIT_CONFIG = 2
EXIT_GATE_FAILED = 3
EXIT_DECAY = 4  # `retrain monitor` only: the champion has decayed (see runner/production/monitor.py)
EXIT_BUG = 70  # an exception that is not a RetrainError: a bug in retrain (sysexits.h EX_SOFTWARE)
EXIT_BUSY = 75  # another run holds the project: nothing ran, try again (sysexits.h EX_TEMPFAIL)
EXIT_INTERRUPTED = 130

_EXIT_BY_RUN_STATUS = {
    "succeeded": EXIT_OK,
    "failed": EXIT_STAGE_FAILED,
    "gate_failed": EXIT_GATE_FAILED,
    "cancelled": EXIT_INTERRUPTED,
}


def exit_code_for_status(status: str) -> int:
    return _EXIT_BY_RUN_STATUS[status]


class RetrainError(Exception):
    exit_code = EXIT_STAGE_FAILED


@dataclass(frozen=True)
class Problem:
    """One configuration problem: in which file, at which key path, what is wrong, and how to fix it."""

    file: str
    where: str  # key path, e.g. "stages.train.needs[0]"; "" for the file as a whole
    message: str
    fix: str = ""

    def __str__(self) -> str:
        location = f"{self.file}: {self.where}" if self.where else self.file
        text = f"{location}: {self.message}"
        return f"{text} ({self.fix})" if self.fix else text


def did_you_mean(name: str, candidates: list[str]) -> str:
    """A fix suggesting the nearest valid name, or "" when nothing is near."""
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""


class ConfigError(RetrainError):
    exit_code = EXIT_CONFIG

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        count = len(problems)
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"{count} configuration problem{'s' if count != 1 else ''}:\n{lines}")


class UsageError(RetrainError):
    exit_code = EXIT_CONFIG


class ProjectBusy(RetrainError):
    """Another run holds the project's lock (runner/engine/lock.py): nothing was run."""

    exit_code = EXIT_BUSY


class WriteError(RetrainError, OSError):
    """A file the runner writes could not be written. An OSError too: optional writes (the stage cache)
    keep ignoring it as they ignore any OSError."""

    @classmethod
    def about(cls, path: Path, error: OSError) -> WriteError:
        reason = error.strerror or str(error)
        return cls(error.errno or 0, f"cannot write {path}: {reason}")

    def __str__(self) -> str:
        return str(self.strerror)
