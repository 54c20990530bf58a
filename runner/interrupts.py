"""Ctrl-C and SIGTERM: how a command is cancelled, and the few moments when it must not be cut in two.

`cancellable()` makes SIGTERM (a cancelled workflow) and SIGINT (Ctrl-C) raise KeyboardInterrupt in the main
thread, whatever the process inherited: a command started in the background by a non-interactive shell
inherits SIGINT ignored, and would otherwise never hear it. `retrain` installs it first thing (the
commands' `main`), so that a signal in a command's first seconds is not lost either.

`shielded()` marks a block that must finish once it has begun: a registry write and the tag that says what
it did, the moves of the new data, the final run.json. A signal that arrives inside it is held and raised as
KeyboardInterrupt when the block ends. Such blocks are short (milliseconds to a second), so a cancelled run
still ends within seconds. What a SIGKILL cuts is for the next run to finish or undo (see README, "Faults").

Signal handlers run in the main thread only: `shielded()` in another thread shields nothing and needs not.

A signal can also land while the main thread runs a weakref callback or a `__del__` (the garbage collector
runs them between any two bytecodes), where Python reports what is raised as "Exception ignored" and goes
on: the run would carry on, deaf to the signal it was sent. `cancellable()` therefore watches what Python
ignores (`sys.unraisablehook`), and a KeyboardInterrupt of its own found there is delivered again, a moment
later, to the main thread's code.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGINT)
REDELIVERY_DELAY_S = 0.05  # long enough for the callback that ignored the signal to have returned


class _Shield:
    """How deep the main thread is in shielded blocks, and the signal held meanwhile (one is enough)."""

    def __init__(self) -> None:
        self.depth = 0
        self.held: int | None = None
        self.raised: int | None = None  # the last signal raised as KeyboardInterrupt, to deliver it again

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.depth > 0:
            self.held = signum
            return
        self.raised = signum
        raise KeyboardInterrupt

    def redeliver_if_lost(self, previous: Callable[[sys.UnraisableHookArgs], object]) -> Callable[..., None]:
        """An unraisable hook: a KeyboardInterrupt this handler raised where Python could only ignore it is
        raised again in the main thread; anything else goes to the hook that was there before."""

        def hook(unraisable: sys.UnraisableHookArgs) -> None:
            if unraisable.exc_type is KeyboardInterrupt and self.raised is not None:
                # from another thread, a moment later: raised from here, it would be ignored again
                timer = threading.Timer(REDELIVERY_DELAY_S, self.redeliver)
                timer.daemon = True
                timer.start()
                return
            previous(unraisable)

        return hook

    def redeliver(self) -> None:
        signum = self.raised
        if signum is not None:  # None: the command has ended meanwhile
            _thread.interrupt_main(signal.Signals(signum))  # as if sent again, to the main thread


_SHIELD = _Shield()  # signal handlers are the process's: so is what they hold


@contextmanager
def cancellable() -> Iterator[None]:
    """SIGTERM and SIGINT cancel the work inside (as KeyboardInterrupt), whatever this process inherited;
    the handlers that were there before are put back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are delivered to the main thread: there is nothing to install here
        return
    previous = {signum: signal.signal(signum, _SHIELD.on_signal) for signum in SIGNALS}
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _SHIELD.redeliver_if_lost(previous_hook)
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        _SHIELD.raised = None
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def shielded() -> Iterator[None]:
    """Hold SIGTERM and SIGINT while the block runs; one that arrived is raised when it ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _SHIELD.depth += 1
    try:
        yield
    finally:
        _SHIELD.depth -= 1
        if _SHIELD.depth == 0 and _SHIELD.held is not None:
            _SHIELD.held = None
            raise KeyboardInterrupt


def interrupt_pending() -> bool:
    """Whether a signal is held by an enclosing shielded block (it will be raised when the block ends)."""
    return _SHIELD.held is not None
