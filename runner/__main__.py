"""`python -m runner` is the same as the `retrain` command: both run `run()`."""

import os
import signal
import sys
from contextlib import suppress
from typing import NoReturn


def run() -> NoReturn:
    """The `retrain` command, ended at once when it is done.

    Before the command's imports, a Ctrl-C or SIGTERM while they load ends the command (exit 130), even when
    SIGINT was inherited ignored; runner/interrupts.py takes over once `main` runs. Once `main` returns,
    its output flushed, the process ends without the interpreter's teardown: collecting the heap of modules
    a run imported and joining threads that have nothing left to do took seconds on a loaded machine, and a
    cancelled run must end within seconds. Every file was written and closed by then (runner/files.py);
    what a cancelled run's page render left half-done is a temporary file the next run sweeps.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)
    try:
        from runner.commands import main

        code = main()
    except KeyboardInterrupt:  # before `main` took over the signals
        code = 130
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a closed pipe: nothing more can be said there
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
