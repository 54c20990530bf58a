"""The kernels of a run: started ahead of their stages by a launcher, handed to the stages, never outliving
the run.

Two launchers start a stage's kernel:
- `PlainLauncher`: the usual way, a new interpreter that runs ipykernel and then the stage's warm-up;
- `ForkedLauncher`: forked from the run's kernel server (server.py), which ran the pipeline's warm-up once, so
  that every stage starts with those imports done (`forked.py` speaks its protocol). On any trouble with the
  server the launcher falls back to starting kernels the usual way.
`KernelPool` holds the kernels started ahead and shuts down, in `close()`, every one that no stage took (a
stage skipped, a run stopped or interrupted): no kernel outlives the run. Its `workers` run the runner's
heavy calls next to the kernels (workers.py).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

from runner.engine.kernels.forked import SUPPORTED, KernelServer, KernelServerError, notebook_imports
from runner.engine.kernels.started import Kernel, release_thread_loop
from runner.engine.kernels.workers import Workers


class Launcher(Protocol):
    workers: Workers

    def start(self, warmup: str, notebook: Path | None) -> Kernel:
        """A kernel for a stage whose notebook is `notebook`, warmed up with `warmup`."""
        ...

    def close(self) -> None: ...


class PlainLauncher:
    """Kernels started the usual way; heavy calls run in this process."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.workers = Workers()

    def start(self, warmup: str, notebook: Path | None) -> Kernel:
        return Kernel(self.cwd, warmup)

    def close(self) -> None:
        return None


class ForkedLauncher:
    """Kernels forked from a kernel server started with the first kernel; heavy calls in its workers."""

    def __init__(self, cwd: Path, preload: str) -> None:
        self.cwd = cwd
        self.preload = preload
        self._server: KernelServer | None = None
        self._failed = False
        self.workers = Workers(lambda: self.server)

    @property
    def server(self) -> KernelServer | None:
        """The run's kernel server, once started and while it runs."""
        return self._server if self._server is not None and self._server.usable else None

    def start(self, warmup: str, notebook: Path | None) -> Kernel:
        server = self._started_server()
        if server is None:
            return Kernel(self.cwd, warmup)
        from runner.engine.kernels.provisioner import forking  # jupyter_client: when a kernel starts

        imports = notebook_imports(notebook) if notebook else frozenset[str]()
        return Kernel(self.cwd, warmup, prepare=forking(server, imports))

    def _started_server(self) -> KernelServer | None:
        if self._server is None and not self._failed:
            try:
                self._server = KernelServer(self.cwd, self.preload)
            except (OSError, KernelServerError):
                self._failed = True  # kernels start the usual way
        return self.server

    def close(self) -> None:
        if self._server is not None:
            self._server.close()  # it kills any kernel or worker it forked that is still alive


class KernelPool:
    """Kernels started ahead of their stages, by stage name."""

    def __init__(self, cwd: Path, *, warm: bool = True, fork: bool = False, preload: str = "") -> None:
        self.cwd = cwd
        self.warm = warm  # False: no kernel is started ahead; each stage starts its own when it runs
        self.launcher: Launcher = (
            ForkedLauncher(cwd, preload) if fork and warm and SUPPORTED else PlainLauncher(cwd)
        )
        self._started: dict[str, Kernel] = {}
        self._retiring: list[threading.Thread] = []

    @property
    def workers(self) -> Workers:
        return self.launcher.workers

    def start(self, stage: str, warmup: str, *, notebook: Path | None = None, now: bool = False) -> None:
        """Start `stage`'s kernel (once) and warm it up in the background. `now`: no stage runs, this one is
        next: a forked kernel is forked once the server has imported what the stage's `notebook` imports,
        rather than after its whole warm-up."""
        if self.warm and stage not in self._started:
            kernel = self.launcher.start(warmup, notebook)
            if now:
                kernel.hurry()
            self._started[stage] = kernel

    def take(self, stage: str) -> Kernel | None:
        """The kernel started for `stage`, now the caller's; None when there is none."""
        return self._started.pop(stage, None)

    def discard(self, stage: str) -> None:
        kernel = self._started.pop(stage, None)
        if kernel is not None:
            kernel.shutdown()

    def fresh(self, warmup: str = "") -> Kernel:
        """A kernel started now, the usual way: for a stage whose kernel started ahead cannot be used."""
        return Kernel(self.cwd, warmup)

    def retire(self, kernel: Kernel) -> None:
        """A stage is done with its kernel: kill it now (its memory is free for the next stage) and clean up
        its manager in the background, so that the next stage does not wait for the process to be reaped."""
        kernel.kill()

        def shut_down() -> None:
            kernel.shutdown()
            release_thread_loop()

        thread = threading.Thread(target=shut_down, name="kernel-shutdown", daemon=True)
        thread.start()
        self._retiring.append(thread)

    def close(self) -> None:
        while self._started:
            _, kernel = self._started.popitem()
            kernel.shutdown()
        for thread in self._retiring:
            thread.join()
        self.launcher.close()  # after the kernels: a server kills any it forked that is still alive
