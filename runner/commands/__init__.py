"""The `retrain` command: the only place that prints and chooses exit codes.

Each command family has its module here (run, models, registry, monitor, replay, github, init): it
declares its arguments and calls the library. `main` reads the environment once (settings.py), routes the
command line to a handler, and turns what escapes into an exit code, from the exception tree in
runner/errors.py:

    0 success · 1 a stage failed · 2 configuration or usage error · 3 a gate failed · 4 the champion decayed
    (`retrain monitor`) · 70 a bug in retrain (its traceback is printed) · 75 another run holds the project
    · 130 interrupted

Everything printed (here, by a library, in a traceback) passes through the secrets' redactor: stdout and
stderr are wrapped for the duration of `main`. SIGTERM and SIGINT cancel any command from its first line
(runner/interrupts.py), even when the process inherited SIGINT ignored (a background job).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from rich.console import Console
from rich.text import Text

from runner import __version__
from runner.commands import github, init, models, monitor, registry, replay, run
from runner.commands.settings import Settings, tidy_environment
from runner.commands.shared import Context
from runner.errors import EXIT_BUG, EXIT_INTERRUPTED, RetrainError
from runner.interrupts import cancellable
from runner.secrets import RedactingStream, Redactor, names_in_file

FAMILIES = (run, models, registry, monitor, replay, github, init)


def main(argv: Sequence[str] | None = None) -> int:
    with cancellable():  # first: a Ctrl-C or SIGTERM in the first second is not lost either
        try:
            return _main(argv)
        except KeyboardInterrupt:  # before the handlers below were in place
            return EXIT_INTERRUPTED
        finally:  # a process that runs many commands (the tests, a service) keeps no connection of this one
            if "mlflow.store.db.utils" in sys.modules:  # otherwise MLflow opened no database here
                from runner.production.registry import release_connections

                release_connections()


def _main(argv: Sequence[str] | None) -> int:
    # papermill and nbclient log what the run record already says (a timeout, a failing cell) to stderr
    logging.getLogger("papermill").setLevel(logging.CRITICAL)
    logging.getLogger("traitlets").setLevel(logging.CRITICAL)
    tidy_environment()
    settings = Settings.from_environ(os.environ)
    arguments = list(sys.argv[1:] if argv is None else argv)
    # the secrets' values are known before the arguments are parsed: argparse's own messages are redacted
    redact = Redactor.from_environ(names_in_file(_pipeline_named(arguments, settings)), settings.environ)
    with _redacted_output(redact):
        args = build_parser(settings, _command_named(arguments)).parse_args(arguments)
        # logs (CI, pipes) have no width: give tables room instead of rich's default of 80 columns
        width = None if sys.stdout.isatty() else 160
        console = Console(highlight=False, emoji=False, width=width)
        errors = Console(stderr=True, highlight=False, emoji=False, width=width)
        try:
            code: int = args.handler(args, Context(console, settings, redact))
            return code
        except RetrainError as error:  # a message for a person, never markup: it may quote their input
            errors.print(Text.assemble(("error:", "bold red"), " ", str(error)), soft_wrap=True)
            return error.exit_code
        except KeyboardInterrupt:
            errors.print(Text("interrupted", style="bold red"))
            return EXIT_INTERRUPTED
        except Exception:  # a bug: its traceback, printed here so that it is redacted too
            traceback.print_exc()
            errors.print(
                Text(
                    f"error: this is a bug in retrain {__version__} (exit {EXIT_BUG}); the traceback above"
                    " says where",
                    style="bold red",
                ),
                soft_wrap=True,
            )
            return EXIT_BUG


def build_parser(settings: Settings, command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser. With `command` (the one the command line names), only the family that
    has it adds its parsers: building them all costs ~15 ms, a twentieth of a rerun with nothing changed,
    and what a command prints (its help, its usage errors) depends on its own parser alone. Every family
    adds its parsers for --help, no command or one that does not exist."""
    parser = argparse.ArgumentParser(
        prog="retrain", description="Continuous retraining for notebook pipelines."
    )
    parser.add_argument("--version", action="version", version=f"retrain {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    named = [family for family in FAMILIES if command in family.COMMANDS]
    for family in named or FAMILIES:
        family.add_parsers(commands, settings)
    return parser


def _command_named(argv: Sequence[str]) -> str | None:
    """The command: the first argument, unless it is an option (--help, --version)."""
    return argv[0] if argv and not argv[0].startswith("-") else None


@contextmanager
def _redacted_output(redact: Redactor) -> Iterator[None]:
    """stdout and stderr through the redactor while `main` runs, whoever writes to them."""
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(stdout, redact), RedactingStream(stderr, redact)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with suppress(OSError, ValueError):  # a closed pipe: nothing more can be said there
                stream.flush()
        sys.stdout, sys.stderr = stdout, stderr


def _pipeline_named(argv: Sequence[str], settings: Settings) -> Path:
    """The pipeline file the command line names (the first argument ending in .yaml/.yml), else the default;
    used only to learn which variables are secrets before argparse runs."""
    after_option = {index + 1 for index, arg in enumerate(argv) if arg in ("--params-file", "-p", "--param")}
    named = [
        arg
        for index, arg in enumerate(argv)
        if arg.endswith((".yaml", ".yml")) and not arg.startswith("-") and index not in after_option
    ]
    return Path(named[0]) if named else settings.pipeline
