"""How long the runner's own MLflow calls may wait for a tracking server: bounded.

MLflow's HTTP client retries a server that does not answer 7 times with a doubling backoff, each request
waiting up to 120 s: a run whose tracking server died would hang for many minutes (writing its history page
alone took over 10). The runner's own calls (the registry's, the smoke check's, the tracking store's search
for secrets: in this process or in a worker of the run) use at most HTTP_BOUNDS; a smaller value set in the
environment is kept. Notebooks keep MLflow's defaults (and the stage's timeout). MLflow reads these
variables at every request, so setting them for the duration of a call is enough.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": 2,
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": 1,
    "MLFLOW_HTTP_REQUEST_TIMEOUT": 20,
}


def bounded_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The values of HTTP_BOUNDS to set: each bound, or the environment's own value when it is smaller."""
    bounded = {}
    for name, bound in HTTP_BOUNDS.items():
        try:
            given = int(environ.get(name, bound))
        except ValueError:
            given = bound
        bounded[name] = str(max(0, min(given, bound)))
    return bounded


class _HttpBounds:
    """HTTP_BOUNDS in this process's environment while the runner's own MLflow calls run, the environment
    as it was otherwise (kernels started meanwhile inherit it, and notebooks keep MLflow's defaults)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: dict[str, str | None] = {}

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._saved = {name: os.environ.get(name) for name in HTTP_BOUNDS}
                os.environ.update(bounded_environ(os.environ))
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    for name, value in self._saved.items():
                        if value is None:
                            os.environ.pop(name, None)
                        else:
                            os.environ[name] = value


bounded_http = _HttpBounds()  # one per process: the environment is the process's
