"""Calls that run in a worker forked from the run's kernel server, where what they need is imported already.

The runner process itself stays small when it never imports MLflow, pandas or scikit-learn: a call that
needs them runs in a worker (a child of the kernel server, which imported them in its preload: the
pipeline's warm-up, then MLflow's imports when the pipeline has a model), and its result comes back. One rule
decides where a call runs, here and nowhere else:

    a kernel server runs, and its preload imports the package the call needs -> a worker (forked once the
                                                                                server imported it)
    otherwise                                                                  -> this process

`needs=None` asks for a worker whenever a server runs: the call then pays its own imports in the worker,
which still keeps them out of the runner (the smoke check loads a model's flavour, scikit-learn and all).

What the call raised comes back as itself when it is one of the runner's own exceptions (a RegistryConflict
stays a RegistryConflict); anything else as WorkerError("Type: message"). WorkerLost: no answer came (the
worker died or ran past its time, and was killed): whether its work happened is not known. A worker's
environment bounds MLflow's HTTP retries (runner/mlflow_http.py): its calls are the runner's own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.engine.kernels.forked import KernelServerError, WorkerError
from runner.mlflow_http import bounded_environ

if TYPE_CHECKING:
    from runner.engine.kernels.forked import KernelServer

__all__ = ["WorkerError", "WorkerLost", "Workers"]


class WorkerLost(RuntimeError):
    """A worker gave no answer: it died, or ran past its time and was killed."""


class Workers:
    """Where the runner's heavy calls run: in workers of the run's kernel server, or in this process."""

    def __init__(self, server: Callable[[], KernelServer | None] = lambda: None) -> None:
        self._server = server  # the run's kernel server once it runs (it starts with the first kernel)

    def elsewhere(self, needs: str | None) -> bool:
        """Whether a call that needs the package `needs` runs in a worker (this process then never imports
        it); `None`: any call, whatever its server imported."""
        server = self._server()
        return server is not None and server.usable and (needs is None or needs in server.preloaded)

    def call(
        self, function: Callable[..., Any], *, needs: str | None, timeout_s: float, cwd: Path, **kwargs: Any
    ) -> Any:
        """`function(**kwargs)` in a worker when `elsewhere(needs)`, else here. The function is a module's
        top-level function; its arguments are JSON values; what it returns is picklable."""
        server = self._server()
        if server is None or not self.elsewhere(needs):
            return function(**kwargs)
        target = f"{function.__module__}:{function.__qualname__}"
        env = {**os.environ, **bounded_environ(os.environ)}  # a worker makes the runner's own MLflow calls
        try:
            return server.call(target, kwargs, cwd, timeout_s, env, needs=needs)
        except KernelServerError as error:
            raise WorkerLost(f"{function.__qualname__}: {error}") from None


IN_THIS_PROCESS = Workers()  # for callers with no run (commands on the registry, tests)
