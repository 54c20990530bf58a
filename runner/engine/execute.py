"""Execute one stage's notebook with papermill, in-process, in a kernel this module owns.

Owning the kernel (rather than letting papermill start one) gives the kernel the project root as its working
directory, lets the kernel's start be timed apart from the cells, and guarantees the kernel is shut down in
`finally` whatever happens: an error, a timeout, a dead kernel, or Ctrl-C.

Warm kernels: a stage's kernel can be started ahead (`StartedKernel`), while the previous stage runs, and
warmed up in the background with the pipeline's `warmup` code (imports, typically), so that the stage starts
with its kernel ready. A kernel is still never shared: one kernel per stage, started for that stage only.
`WarmKernels` holds the kernels started ahead and shuts down, in `close()`, every one that no stage took
(a stage skipped, a run stopped or interrupted): no kernel outlives the run.

papermill saves the executed notebook after every cell; each save goes through runner/files.py (redacted,
atomic) by an I/O handler registered for that one output path while the stage runs, so that a secret a
cell prints never reaches the disk, not even in a partial notebook.

Several stages may execute at once, one per thread (runner/engine/schedule.py). That is safe because each call
owns its kernel and its client, and jupyter_client runs its coroutines in the calling thread's own event
loop (jupyter_core keeps one per thread); papermill's list of I/O handlers, the one thing shared, is
replaced rather than changed in place. A `Stopper` lets the main thread stop stages running in other
threads (Ctrl-C and SIGTERM reach the main thread only) by killing their kernels.
"""

from __future__ import annotations

import contextlib
import importlib
import queue
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat

from runner.engine import imports
from runner.files import atomic_write_text
from runner.records import FailureKind, StageFailure, StageTimings
from runner.secrets import Redactor

if TYPE_CHECKING:
    from runner.engine.kernels.forked import KernelServer

KERNEL_NAME = "python3"  # in a virtualenv this is the venv's own interpreter: no kernelspec to install
KERNEL_START_TIMEOUT_S = 60
_ENAMES = {"timeout": "TimeoutError", "dead_kernel": "DeadKernelError", "cancelled": "KeyboardInterrupt"}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# guards papermill's process-wide list of I/O handlers, which stages in several threads update
_HANDLERS_LOCK = threading.Lock()
_LATER_IMPORTS: threading.Thread | None = None  # imports what the runner needs after a stage, once
_LATER_IMPORTS_LOCK = threading.Lock()


@dataclass
class ExecutionResult:
    failure: StageFailure | None
    timings: StageTimings
    interrupted: bool = False  # Ctrl-C or SIGTERM arrived while the stage ran


class Stopper:
    """Stops, from any thread, the stages executing in other threads: their kernels are killed, and
    `execute_notebook` reports them `cancelled` rather than failed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kernels: list[StartedKernel] = []
        self.stopped = False

    def attach(self, kernel: StartedKernel) -> None:
        with self._lock:
            self._kernels.append(kernel)
            if self.stopped:  # stopped while this kernel was starting
                kernel.kill()

    def detach(self, kernel: StartedKernel) -> None:
        with self._lock:
            if kernel in self._kernels:
                self._kernels.remove(kernel)

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            for kernel in self._kernels:
                kernel.kill()


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def execute_notebook(
    notebook: Path,
    output: Path,
    parameters: Mapping[str, Any],
    *,
    cwd: Path,
    timeout_s: float,
    redact: Redactor,
    kernel: StartedKernel | None = None,
    stopper: Stopper | None = None,
    retire: Callable[[StartedKernel], None] | None = None,
) -> ExecutionResult:
    """Run `notebook` with `parameters` injected, save the executed copy to `output` whatever happens.

    `timeout_s` bounds the whole stage: each cell may use what the earlier cells left of it. `kernel` is a
    kernel started ahead for this stage (see `WarmKernels`); without one, a kernel is started now. Either
    way it is shut down before this returns, or handed to `retire` (`WarmKernels.retire`: killed now, its
    manager cleaned up in the background). `stopper`: how another thread stops this stage (see `Stopper`).
    """
    timings = StageTimings()
    started = time.monotonic()
    failure: StageFailure | None = None
    interrupted = False
    try:
        kernel, trouble = _ready_kernel(kernel, cwd, timings)
        timings.kernel_start_s = time.monotonic() - started
        if kernel is None:
            failure = StageFailure("dead_kernel", trouble, None, "KernelStartError", trouble)
        else:
            if stopper is not None:
                stopper.attach(kernel)
            deadline = time.monotonic() + timeout_s
            manager = kernel.manager
            with _saved_through(output, redact):
                failure, interrupted = _run_cells(notebook, output, parameters, manager, deadline, timeout_s)
            if failure is not None and stopper is not None and stopper.stopped:
                # its kernel was killed to stop it: the stage was interrupted, it did not fail on its own
                why = "the run was interrupted (Ctrl-C or SIGTERM)"
                failure, interrupted = _stopped("cancelled", why, "interrupted"), True
            if failure is not None and failure.kind != "error":
                failure = _unfinished(output, failure, redact)
    finally:
        # the kernel never outlives the stage, even on Ctrl-C
        if kernel is not None:
            if stopper is not None:
                stopper.detach(kernel)
            if retire is not None:
                retire(kernel)
            else:
                kernel.shutdown()
        timings.execute_s = time.monotonic() - started - timings.kernel_start_s
    return ExecutionResult(failure=failure, timings=timings, interrupted=interrupted)


def _ready_kernel(
    kernel: StartedKernel | None, cwd: Path, timings: StageTimings
) -> tuple[StartedKernel | None, str]:
    """The kernel started ahead once it is ready and warm, else a fresh one; (None, why) when none starts.

    A kernel started ahead that died or whose warm-up raised is dropped (its state is unknown); a fresh
    kernel that dies while starting (seen on loaded machines) is started once more.
    """
    if kernel is not None:
        try:
            _import_while_waiting(scrapbook="scrapbook" not in kernel.preloaded)
            kernel.wait_ready()
            timings.warm_kernel, timings.warmup_s = True, round(kernel.warmup_s, 3)
            timings.forked = kernel.forked
            return kernel, ""
        except RuntimeError:
            kernel.shutdown()
    error = ""
    for _attempt in (1, 2):
        kernel = StartedKernel(cwd)
        try:
            _import_while_waiting(scrapbook=True)
            kernel.wait_ready()
            return kernel, ""
        except RuntimeError as trouble:
            kernel.shutdown()
            error = str(trouble)
    return None, f"the kernel did not start (twice): {error}"


def _import_while_waiting(scrapbook: bool) -> None:
    """Import what this process needs for a stage while the kernel boots in its own process, instead of
    after: papermill, which runs it, now; nbconvert, which renders it, and scrapbook, which reads its scraps
    (unless a worker forked from the kernel server reads them), in a thread while it runs (~0.5 s together,
    paid once; a later import waits for that one to finish)."""
    imports.papermill()

    global _LATER_IMPORTS
    with _LATER_IMPORTS_LOCK:
        if _LATER_IMPORTS is None:
            later = ["nbconvert", *(["scrapbook"] if scrapbook else [])]
            _LATER_IMPORTS = threading.Thread(target=_import, args=later, name="imports", daemon=True)
            _LATER_IMPORTS.start()


def _import(*modules: str) -> None:
    for name in modules:
        importlib.import_module(name)


class StartedKernel:
    """A kernel for one stage: started now, made ready (and warmed up) in a background thread.

    The thread talks to the kernel through its own client only; `wait_ready()` joins it and `shutdown()`
    stops it before shutting the kernel down, so the kernel manager is used by one thread at a time.
    """

    def __init__(
        self,
        cwd: Path,
        warmup: str = "",
        server: KernelServer | None = None,
        imports: frozenset[str] = frozenset(),
    ) -> None:
        from jupyter_client.manager import KernelManager

        self.warmup = warmup
        self.warmup_s = 0.0
        self._error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # IPC sockets in a private folder: local-only, no TCP port to race for, nothing on the network
        self._sockets = Path(tempfile.mkdtemp(prefix="retrain-kernel-"))
        self.manager = KernelManager(
            kernel_name=KERNEL_NAME,
            transport="ipc",
            ip=str(self._sockets / "kernel"),
            # nbclient polls outputs, replies and liveness in one event loop: with a blocking client the
            # output poll blocks the loop, and neither timeouts nor a dead kernel are ever noticed
            client_class="jupyter_client.asynchronous.AsyncKernelClient",
        )
        if server is not None:  # forked by the run's kernel server: the common imports are already done
            self._fork_from(server, imports)
        try:
            # an in-memory history: a sqlite history file per kernel is slow and can lock when in parallel
            self.manager.start_kernel(cwd=str(cwd), extra_arguments=["--HistoryManager.hist_file=:memory:"])
            self._thread = threading.Thread(target=self._get_ready, name="kernel-ready", daemon=True)
            self._thread.start()
        except BaseException:
            self.shutdown()
            raise

    def _fork_from(self, server: KernelServer, imports: frozenset[str]) -> None:
        import uuid

        from runner.engine.kernels.forked import ForkProvisioner

        self.manager.kernel_id = str(uuid.uuid4())
        provisioner = ForkProvisioner(
            kernel_id=self.manager.kernel_id, kernel_spec=self.manager.kernel_spec, parent=self.manager
        )
        provisioner.server, provisioner.imports = server, imports
        self.manager.provisioner = provisioner  # the manager uses it instead of creating a LocalProvisioner

    @property
    def forked(self) -> bool:
        return bool(getattr(self.manager.provisioner, "forked", False))

    @property
    def preloaded(self) -> frozenset[str]:
        """The packages imported by the warm-up of the kernel server that forked this kernel (if it was)."""
        server = getattr(self.manager.provisioner, "server", None)
        return server.preloaded if self.forked and server is not None else frozenset()

    def hurry(self) -> None:
        """A kernel the kernel server has not forked yet (it finishes its warm-up first): fork it now."""
        process = getattr(self.manager.provisioner, "process", None)
        getattr(process, "hurry", lambda: None)()

    def wait_ready(self) -> None:
        """Block until the kernel answers and its warm-up ran; RuntimeError when it cannot be used."""
        self.hurry()
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise RuntimeError(self._error)

    def kill(self) -> None:
        """Kill the kernel's process now; safe from any thread. The thread running the stage sees a dead
        kernel, and its `shutdown()` still cleans up."""
        process = getattr(self.manager.provisioner, "process", None)
        if process is not None:
            with contextlib.suppress(OSError):
                process.kill()

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.manager.has_kernel:
            self.manager.shutdown_kernel(now=True)
        shutil.rmtree(self._sockets, ignore_errors=True)

    def _get_ready(self) -> None:
        from jupyter_client.blocking.client import BlockingKernelClient

        client = BlockingKernelClient()
        client.load_connection_info(self.manager.get_connection_info())
        client.start_channels()
        try:
            deadline = time.monotonic() + KERNEL_START_TIMEOUT_S
            if self._reply(client, client.kernel_info, deadline, resend=True) is None:
                return
            warmup = self.warmup
            provisioner = self.manager.provisioner
            if getattr(provisioner, "warmed_up_by_server", lambda _: False)(warmup):
                warmup = ""  # done in the kernel server: the notebook sees a namespace without its names
            if warmup.strip():
                started = time.monotonic()

                def warm_up() -> str:
                    return str(client.execute(warmup, silent=True, store_history=False))

                reply = self._reply(client, warm_up, deadline, resend=False)
                self.warmup_s = time.monotonic() - started
                content = reply["content"] if reply is not None else {}
                if reply is not None and content.get("status") != "ok":
                    self._error = f"its warm-up failed: {content.get('ename')}: {content.get('evalue')}"
        except Exception as error:  # whatever broke, the stage gets a fresh kernel instead
            self._error = self._error or f"the kernel is not usable: {error}"
        finally:
            client.stop_channels()
            from jupyter_core.utils import ensure_event_loop

            ensure_event_loop().close()  # the loop jupyter_client made for this thread: closed, not leaked

    def _reply(self, client: Any, send: Any, deadline: float, *, resend: bool) -> dict[str, Any] | None:
        """Send a request and wait for its reply; None (and `_error` set) when stopped, dead or too late."""
        msg_id = send()
        while not self._stop.is_set():
            try:
                reply: dict[str, Any] = client.get_shell_msg(timeout=0.2)
            except queue.Empty:
                if time.monotonic() > deadline:
                    self._error = f"the kernel did not answer within {KERNEL_START_TIMEOUT_S} s"
                    return None
                if not self.manager.is_alive():
                    self._error = "the kernel died while starting"
                    return None
                if resend:  # a kernel still booting may not have been listening yet
                    msg_id = send()
                continue
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                return reply
        self._error = "stopped before it was ready"
        return None


class WarmKernels:
    """Kernels started ahead of their stages; `close()` shuts down every one that no stage took.

    With `fork`, the kernels are forked by a kernel server (runner/engine/kernels/server.py) that ran
    `preload` (the pipeline's warm-up) once, started with the first kernel: a stage's kernel then starts with
    those imports done, without paying for them again.
    """

    def __init__(self, cwd: Path, enabled: bool = True, *, fork: bool = False, preload: str = "") -> None:
        self.cwd = cwd
        self.enabled = enabled
        self.fork = fork
        self.preload = preload
        self._started: dict[str, StartedKernel] = {}
        self._server: KernelServer | None = None
        self._retiring: list[threading.Thread] = []

    def start(self, stage: str, warmup: str, *, notebook: Path | None = None, now: bool = False) -> None:
        """Start `stage`'s kernel (once) and warm it up in the background. `now`: no stage runs, this one
        is next: the kernel server forks it once it has imported what the stage's `notebook` imports,
        rather than after its whole warm-up."""
        if self.enabled and stage not in self._started:
            from runner.engine.kernels.forked import notebook_imports

            server = self._kernel_server()
            imports = notebook_imports(notebook) if server and notebook else frozenset[str]()
            kernel = StartedKernel(self.cwd, warmup, server=server, imports=imports)
            if now:
                kernel.hurry()
            self._started[stage] = kernel

    @property
    def server(self) -> KernelServer | None:
        """The run's kernel server, if a kernel was forked from it and it still runs (never started here)."""
        return self._server if self._server is not None and self._server.usable else None

    def _kernel_server(self) -> KernelServer | None:
        from runner.engine.kernels.forked import SUPPORTED, KernelServer, KernelServerError

        if not self.fork or not SUPPORTED:
            return None
        if self._server is None:
            try:
                self._server = KernelServer(self.cwd, self.preload)
            except (OSError, KernelServerError):
                self.fork = False  # kernels start the usual way
                return None
        return self.server

    def take(self, stage: str) -> StartedKernel | None:
        """The kernel started for `stage`, now the caller's; None when there is none."""
        return self._started.pop(stage, None)

    def discard(self, stage: str) -> None:
        kernel = self._started.pop(stage, None)
        if kernel is not None:
            kernel.shutdown()

    def retire(self, kernel: StartedKernel) -> None:
        """A stage is done with its kernel: kill it now (its memory is free for the next stage) and clean up
        its manager in the background, so that the next stage does not wait for the process to be reaped."""
        kernel.kill()
        thread = threading.Thread(target=kernel.shutdown, name="kernel-shutdown", daemon=True)
        thread.start()
        self._retiring.append(thread)

    def close(self) -> None:
        while self._started:
            _, kernel = self._started.popitem()
            kernel.shutdown()
        for thread in self._retiring:
            thread.join()
        if self._server is not None:
            self._server.close()  # after the kernels: it kills any it forked that is still alive


def _run_cells(
    notebook: Path,
    output: Path,
    parameters: Mapping[str, Any],
    kernel: Any,
    deadline: float,
    timeout_s: float,
) -> tuple[StageFailure | None, bool]:
    papermill = imports.papermill()
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    def time_left(cell: Any) -> int:
        return max(1, int(deadline - time.monotonic() + 0.999))

    try:
        papermill.execute_notebook(
            str(notebook),
            str(output),
            parameters=dict(parameters),
            kernel_name=KERNEL_NAME,
            km=kernel,
            timeout_func=time_left,
            progress_bar=False,
            request_save_on_cell_execute=True,  # without it a timeout or Ctrl-C would save nothing
        )
    except PapermillExecutionError as error:
        evalue = strip_ansi(str(error.evalue))
        message = f"{error.ename}: {evalue}" if evalue else error.ename
        cell = _cell_label(error.exec_count, error.cell_index)
        return StageFailure("error", f"{message} (in {cell})", error.cell_index, error.ename, evalue), False
    except CellTimeoutError:
        why = f"it ran past the stage's timeout of {timeout_s:g} s"
        return _stopped("timeout", why, f"timed out after {timeout_s:g} s"), False
    except DeadKernelError:
        why = "its kernel died (killed, out of memory, or os._exit)"
        return _stopped("dead_kernel", why, "the kernel died"), False
    except KeyboardInterrupt:
        why = "the run was interrupted (Ctrl-C or SIGTERM)"
        return _stopped("cancelled", why, "interrupted"), True
    return None, False


class _RedactedSaves:
    """A papermill I/O handler: papermill's saves of one executed notebook, written by runner/files.py."""

    def __init__(self, redact: Redactor) -> None:
        self.redact = redact

    def read(self, path: str) -> str:
        return Path(path).read_text(encoding="utf-8")

    def write(self, buf: str, path: str) -> None:
        atomic_write_text(Path(path), buf, redact=self.redact)

    def listdir(self, path: str) -> list[str]:
        return [str(child) for child in Path(path).iterdir()]

    def pretty_path(self, path: str) -> str:
        return path


@contextmanager
def _saved_through(output: Path, redact: Redactor) -> Iterator[None]:
    """Route papermill's writes to `output` through `_RedactedSaves` while the stage runs.

    papermill picks a handler by path prefix, newest first; the prefix here is the output file itself, so
    nothing else papermill reads or writes is affected. papermill has no way to unregister a handler: the
    entry is taken out of its list again by hand, so that no handler (and no redactor) outlives the stage.
    Stages in other threads look handlers up meanwhile: the list is replaced, never changed in place (an
    element removed under a reader's loop would make it skip another stage's handler and write unredacted).
    """
    from papermill.iorw import papermill_io

    entry = (str(output), _RedactedSaves(redact))
    with _HANDLERS_LOCK:
        papermill_io._handlers = [entry, *papermill_io._handlers]
    try:
        yield
    finally:
        with _HANDLERS_LOCK:
            papermill_io._handlers = [known for known in papermill_io._handlers if known is not entry]


def _stopped(kind: FailureKind, why: str, what: str) -> StageFailure:
    """A stage stopped from outside its cells; `_unfinished` completes it once papermill let go."""
    return StageFailure(kind, what, None, _ENAMES[kind], why)


def _unfinished(output: Path, failure: StageFailure, redact: Redactor) -> StageFailure:
    why = failure.evalue or failure.kind
    cell_index, exec_count = _mark_unfinished(output, why, redact)
    message = f"{failure.message} (in {_cell_label(exec_count, cell_index)})"
    return StageFailure(failure.kind, message, cell_index, failure.ename, why)


def _cell_label(exec_count: int | None, cell_index: int | None) -> str:
    if exec_count is not None:
        return f"cell [{exec_count}]"
    return f"cell #{cell_index}" if cell_index is not None else "an unknown cell"


def _mark_unfinished(output: Path, why: str, redact: Redactor) -> tuple[int | None, int | None]:
    """Flag a notebook that papermill saved without an error (timeout, dead kernel, interrupt) as failed.

    The cell that was running is the last one papermill started (it marks every cell `completed` on the
    way out, finished or not). Returns that cell's index and execution count.
    """
    if not output.is_file():
        return None, None
    nb = nbformat.read(output, as_version=4)
    started = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.get("metadata", {}).get("papermill", {}).get("start_time")
    ]
    running = started[-1] if started else None
    exec_count = None
    if running is not None:
        cell = nb.cells[running]
        cell.metadata.papermill.update(status="failed", exception=True)
        cell.outputs.append(
            nbformat.v4.new_output("error", ename="StageStopped", evalue=why, traceback=[why])
        )
        exec_count = cell.get("execution_count")
    banner = nbformat.v4.new_markdown_cell(f"**This stage did not finish: {why}.**")
    banner.metadata["tags"] = ["retrain-failure-banner"]
    nb.cells.insert(0, banner)
    nb.metadata.setdefault("papermill", {})["exception"] = True
    atomic_write_text(output, nbformat.writes(nb), redact=redact)
    return running, exec_count
