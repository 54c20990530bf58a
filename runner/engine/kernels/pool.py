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

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Protocol

from runner.engine.kernels.forked import SUPPORTED, KernelServer, KernelServerError, notebook_imports
from runner.engine.kernels.started import Kernel, release_thread_loop
from runner.engine.kernels.workers import Workers

OTHERS = "others.log"  # the server's and its workers' output
SUFFIX = ".stage.log"  # a stage kernel's output


class Launcher(Protocol):
    workers: Workers

    def start(self, warmup: str, notebook: Path | None, output: Path | None) -> Kernel:
        """A kernel for a stage whose notebook is `notebook`, warmed up with `warmup`, writing what it prints
        outside its cells to `output`."""
        ...

    def close(self) -> None: ...


class PlainLauncher:
    """Kernels started the usual way; heavy calls run in this process."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.workers = Workers()

    def start(self, warmup: str, notebook: Path | None, output: Path | None) -> Kernel:
        return Kernel(self.cwd, warmup, output=output)

    def close(self) -> None:
        return None


class ForkedLauncher:
    """Kernels forked from a kernel server started with the first kernel; heavy calls in its workers."""

    def __init__(self, cwd: Path, preload: str, output: Path | None = None, for_workers: str = "") -> None:
        self.cwd = cwd
        self.preload = preload
        self.for_workers = for_workers
        self.output = output  # what the server and its workers write
        self._server: KernelServer | None = None
        self._failed = False
        self.workers = Workers(lambda: self.server)

    @property
    def server(self) -> KernelServer | None:
        """The run's kernel server, once started and while it runs."""
        return self._server if self._server is not None and self._server.usable else None

    def start(self, warmup: str, notebook: Path | None, output: Path | None) -> Kernel:
        server = self._started_server()
        if server is None:
            return Kernel(self.cwd, warmup, output=output)
        from runner.engine.kernels.provisioner import forking  # jupyter_client: when a kernel starts

        imports = notebook_imports(notebook) if notebook else frozenset[str]()
        return Kernel(self.cwd, warmup, prepare=forking(server, imports, str(output or "")))

    def _started_server(self) -> KernelServer | None:
        if self._server is None and not self._failed:
            try:
                self._server = KernelServer(self.cwd, self.preload, self.output, self.for_workers)
            except (OSError, KernelServerError):
                self._failed = True  # kernels start the usual way
        return self.server

    def close(self) -> None:
        if self._server is not None:
            self._server.close()  # it kills any kernel or worker it forked that is still alive


class KernelPool:
    """Kernels started ahead of their stages, by stage name.

    What the kernels, the server and the workers write outside the cells (a library's warning, MLflow's log
    lines) goes to files in a private folder, one per stage and one for the rest, never to the terminal the
    run draws its table in: `output(stage)` hands a stage's lines over once the stage is done."""

    def __init__(
        self, cwd: Path, *, warm: bool = True, fork: bool = False, preload: str = "", for_workers: str = ""
    ) -> None:
        """`preload`: the pipeline's warm-up; `for_workers`: what the kernel server imports after it for the
        calls its workers make (MLflow's), which a stage waiting for its kernel waits for only when its
        notebook imports those packages too."""
        self.cwd = cwd
        self.warm = warm  # False: no kernel is started ahead; each stage starts its own when it runs
        self._outputs = Path(tempfile.mkdtemp(prefix="retrain-output-"))
        forked = fork and warm and SUPPORTED
        self.launcher: Launcher = (
            ForkedLauncher(cwd, preload, self._outputs / OTHERS, for_workers)
            if forked
            else PlainLauncher(cwd)
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
            kernel = self.launcher.start(warmup, notebook, self._output_file(stage))
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

    def fresh(self, stage: str, warmup: str = "") -> Kernel:
        """A kernel started now, the usual way: for a stage whose kernel started ahead cannot be used."""
        return Kernel(self.cwd, warmup, output=self._output_file(stage))

    def _output_file(self, stage: str) -> Path:
        return self._outputs / f"{stage}{SUFFIX}"

    def output(self, stage: str | None = None) -> list[str]:
        """The lines a stage's kernel wrote outside its cells (`None`: the server and its workers), taken
        once: the file is removed."""
        path = self._outputs / OTHERS if stage is None else self._output_file(stage)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        path.unlink(missing_ok=True)
        return [line.rstrip() for line in text.splitlines() if line.strip()]

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

    def discard_outputs(self) -> None:
        """Remove the folder of output files (once the run has taken what it keeps)."""
        shutil.rmtree(self._outputs, ignore_errors=True)
