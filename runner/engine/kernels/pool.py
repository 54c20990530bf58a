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

A process that makes several runs of one project in a row (`retrain replay`) may keep the kernel server
between them (`kept_servers()`): the next run with the same warm-up and environment is served by the same
server, whose preload (the demo's: ~7 s of CPU) is then paid once. Its kernels and workers still end with
their run; the server ends with the block.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from runner.engine.kernels.forked import SUPPORTED, KernelServer, KernelServerError, notebook_imports
from runner.engine.kernels.started import Kernel, release_thread_loop
from runner.engine.kernels.workers import Workers

OTHERS = "others.log"  # the server's and its workers' output
SUFFIX = ".stage.log"  # a stage kernel's output


ServerKey = tuple[str, str, str, frozenset[tuple[str, str]]]  # project, warm-up, workers' imports, env
# within `kept_servers()`, the server kept for each project (one at most) with the key of the run it served;
# None outside
_kept: dict[str, tuple[ServerKey, KernelServer]] | None = None


@contextmanager
def kept_servers() -> Iterator[None]:
    """Within this block a run's kernel server outlives the run, for the next run of the same project with
    the same warm-up and environment; every server kept is closed when the block ends."""
    global _kept
    if _kept is not None:  # within another such block: that one closes them
        yield
        return
    _kept = {}
    try:
        yield
    finally:
        servers, _kept = _kept, None
        for _, server in servers.values():
            server.close()


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
        # what a server kept from an earlier run shares with this run when it may serve it (the environment:
        # the one its preload ran in)
        self.key: ServerKey = (str(cwd), preload, for_workers, frozenset(os.environ.items()))
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
            self._server = self._kept_server()
            if self._server is None:
                try:
                    self._server = KernelServer(self.cwd, self.preload, self.output, self.for_workers)
                except (OSError, KernelServerError):
                    self._failed = True  # kernels start the usual way
                    return None
                if _kept is not None:
                    _kept[str(self.cwd)] = (self.key, self._server)
        return self.server

    def _kept_server(self) -> KernelServer | None:
        """The server an earlier run in `kept_servers()` kept for a run like this one, writing to this run's
        output file from now on; None when there is none, it ended, or it served a run with another key (it is
        closed: this run's server takes its place)."""
        kept = _kept.pop(str(self.cwd), None) if _kept is not None else None
        if kept is None:
            return None
        key, server = kept
        if key != self.key:  # kept for another warm-up or environment
            server.close()
            return None
        try:
            if self.output is not None:
                server.write_to(self.output)
        except KernelServerError:  # it ended meanwhile
            server.close()
            return None
        assert _kept is not None
        _kept[str(self.cwd)] = kept
        return server

    def close(self) -> None:
        if self._server is None:
            return
        if _kept is not None and _kept.get(str(self.cwd)) == (self.key, self._server):
            self._server.release()  # this run's kernels and workers end; the server waits for the next run
        else:
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
