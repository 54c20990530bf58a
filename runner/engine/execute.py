"""Execute one stage's notebook in a kernel of its own: papermill injects the parameters, nbclient runs the
cells, and every save of the executed notebook goes through runner/files.py (redacted, atomic).

    the notebook -> papermill: parameters injected after its `parameters` cell -> the kernel started ahead
    for the stage (or one started now) -> nbclient runs the cells one by one, the notebook saved before and
    after each (and every 30 s of a long cell's output) -> the first failing cell stops it: flagged, with
    a banner that links to it -> the kernel shut down, whatever happened

Owning the cell loop (rather than papermill's `execute_notebook`) is what lets every save be redacted and
atomic without touching papermill's state, a timeout bound the whole stage, a stopped stage be flagged where
it stopped, and the kernel client's channels be closed when the stage ends. A failure is a result, never an
exception: `ExecutionResult.failure` says what and where (cell, error name and value).

Several stages may execute at once, one per thread (engine/schedule.py): each call owns its kernel and its
client, and jupyter_client runs its coroutines in the calling thread's own event loop. A `Stopper` lets the
main thread stop stages running in other threads (Ctrl-C and SIGTERM reach the main thread only) by killing
their kernels.
"""

from __future__ import annotations

import importlib
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runner.engine import imports
from runner.engine.kernels import IN_THIS_PROCESS, KERNEL_NAME, Kernel, KernelPool, close_channels
from runner.files import atomic_write_text
from runner.records import FailureKind, StageFailure, StageTimings
from runner.secrets import Redactor

_ENAMES = {"timeout": "TimeoutError", "dead_kernel": "DeadKernelError", "cancelled": "KeyboardInterrupt"}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
AUTOSAVE_S = 30  # a long cell's outputs are saved at least this often
BANNER_TAG = "retrain-failure-banner"  # the cells this module adds to a failed notebook
FAILING_CELL_ANCHOR = "failing-cell"  # the run page links to it
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
        self._kernels: list[Kernel] = []
        self.stopped = False

    def attach(self, kernel: Kernel) -> None:
        with self._lock:
            self._kernels.append(kernel)
            if self.stopped:  # stopped while this kernel was starting
                kernel.kill()

    def detach(self, kernel: Kernel) -> None:
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
    kernel: Kernel | None = None,
    kernels: KernelPool | None = None,
    stopper: Stopper | None = None,
    stage: str = "",
) -> ExecutionResult:
    """Run `notebook` with `parameters` injected, save the executed copy to `output` whatever happens.

    `timeout_s` bounds the whole stage: each cell may use what the earlier cells left of it. `kernel` is a
    kernel started ahead for this stage by `kernels`, the run's pool; without one, a kernel is started now.
    Either way it is shut down before this returns (retired through the pool: killed now, cleaned up in the
    background). `stopper`: how another thread stops this stage (see `Stopper`).
    """
    timings = StageTimings()
    started = time.monotonic()
    failure: StageFailure | None = None
    interrupted = False
    workers = kernels.workers if kernels is not None else IN_THIS_PROCESS
    book: _ExecutedNotebook | None = None
    try:
        _import_while_waiting(scrapbook=not workers.elsewhere("scrapbook"))
        # saved before the kernel is waited for: a stage stopped while its kernel starts leaves its notebook
        book = _ExecutedNotebook(_parameterized(notebook, parameters), output, redact)
        kernel, trouble = _ready_kernel(kernel, cwd, timings, kernels, stage or output.stem)
        timings.kernel_start_s = time.monotonic() - started
        if kernel is None:
            failure = StageFailure("dead_kernel", trouble, None, "KernelStartError", trouble)
        else:
            if stopper is not None:
                stopper.attach(kernel)
            deadline = time.monotonic() + timeout_s
            failure, interrupted = _run_cells(book, kernel.manager, deadline, timeout_s)
    except KeyboardInterrupt:
        if book is None:
            raise  # nothing of the stage exists yet
        why = "the run was interrupted (Ctrl-C or SIGTERM)"
        failure, interrupted = _stopped("cancelled", why, "interrupted"), True
    finally:
        # the kernel never outlives the stage, even on Ctrl-C
        if kernel is not None:
            if stopper is not None:
                stopper.detach(kernel)
            if kernels is not None:
                kernels.retire(kernel)
            else:
                kernel.shutdown()
        timings.execute_s = time.monotonic() - started - timings.kernel_start_s
    if failure is not None and stopper is not None and stopper.stopped:
        # its kernel was killed to stop it: the stage was interrupted, it did not fail on its own
        why = "the run was interrupted (Ctrl-C or SIGTERM)"
        failure, interrupted = _stopped("cancelled", why, "interrupted"), True
    if failure is not None and failure.kind != "error" and book is not None:
        failure = _unfinished(book, failure)
    return ExecutionResult(failure=failure, timings=timings, interrupted=interrupted)


def _ready_kernel(
    kernel: Kernel | None, cwd: Path, timings: StageTimings, kernels: KernelPool | None, stage: str
) -> tuple[Kernel | None, str]:
    """The kernel started ahead once it is ready and warm, else a fresh one; (None, why) when none starts.

    A kernel started ahead that died or whose warm-up raised is dropped (its state is unknown); a fresh
    kernel that dies while starting (seen on loaded machines) is started once more.
    """
    if kernel is not None:
        try:
            kernel.wait_ready()
            timings.warm_kernel, timings.warmup_s = True, round(kernel.warmup_s, 3)
            timings.forked = kernel.forked
            return kernel, ""
        except RuntimeError:
            kernel.shutdown()
    error = ""
    for _attempt in (1, 2):
        kernel = kernels.fresh(stage) if kernels is not None else Kernel(cwd)
        try:
            kernel.wait_ready()
            return kernel, ""
        except RuntimeError as trouble:
            kernel.shutdown()
            error = str(trouble)
    return None, f"the kernel did not start (twice): {error}"


def _import_while_waiting(scrapbook: bool) -> None:
    """Import what this process needs for a stage while the kernel boots in its own process, instead of
    after: papermill, which injects the parameters, now; nbconvert, which renders the page, and scrapbook,
    which reads the scraps (unless a worker reads them), in a thread while it runs (~0.5 s together, paid
    once; a later import waits for that one to finish)."""
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


def _parameterized(notebook: Path, parameters: Mapping[str, Any]) -> Any:
    """The notebook with papermill's cell of injected parameters after its `parameters` cell."""
    imports.papermill()
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(notebook))
    nb.cells = [cell for cell in nb.cells if BANNER_TAG not in cell.metadata.get("tags", [])]
    if parameters:
        nb = parameterize_notebook(nb, dict(parameters), kernel_name=KERNEL_NAME)
    nb.metadata.papermill["input_path"] = str(notebook)
    return nb


class _ExecutedNotebook:
    """The notebook being executed, its execution metadata (papermill's shape: start and end times,
    duration, status and exception per cell and for the whole), and its saves to `output`."""

    def __init__(self, nb: Any, output: Path, redact: Redactor) -> None:
        self.nb, self.output, self.redact = nb, output, redact
        self.started = datetime.now(UTC)
        self.saved_at = time.monotonic()
        nb.metadata.papermill.update(
            output_path=str(output), start_time=self.started.isoformat(), end_time=None, duration=None,
            exception=None,
        )  # fmt: skip
        for cell in nb.cells:
            cell.metadata["papermill"] = {"start_time": None, "end_time": None, "duration": None}
            cell.metadata.papermill.update(exception=None, status="pending")
            if cell.cell_type == "code":
                cell.execution_count, cell.outputs = None, []
        self.save()

    def save(self) -> None:
        import nbformat  # when a stage executes: a cached run does without it

        atomic_write_text(self.output, nbformat.writes(self.nb), redact=self.redact)
        self.saved_at = time.monotonic()

    def autosave(self) -> None:
        if time.monotonic() - self.saved_at >= AUTOSAVE_S:
            self.save()

    def cell_started(self, index: int) -> None:
        self.nb.cells[index].metadata.papermill.update(
            start_time=datetime.now(UTC).isoformat(), status="running", exception=False
        )
        self.save()

    def cell_finished(self, index: int, failed: bool) -> None:
        state = self.nb.cells[index].metadata.papermill
        ended = datetime.now(UTC)
        state.update(end_time=ended.isoformat(), status="failed" if failed else "completed")
        if state.get("start_time"):
            state["duration"] = (ended - datetime.fromisoformat(state["start_time"])).total_seconds()
        if failed:
            state["exception"] = True
            self.nb.metadata.papermill["exception"] = True
        self.save()

    def finish(self) -> None:
        ended = datetime.now(UTC)
        self.nb.metadata.papermill.update(
            end_time=ended.isoformat(), duration=(ended - self.started).total_seconds()
        )
        self.save()

    @property
    def running_cell(self) -> int | None:
        """The last cell that started: the one a timeout, a dead kernel or an interrupt stopped."""
        started = [i for i, cell in enumerate(self.nb.cells) if cell.metadata.papermill.get("start_time")]
        return started[-1] if started else None

    def flag(self, index: int | None, why: str) -> None:
        """Mark the notebook failed: a banner first (linking to the cell), an anchor before the cell."""
        import nbformat

        if index is not None:
            anchor = nbformat.v4.new_markdown_cell(f'<span id="{FAILING_CELL_ANCHOR}"></span>')
            anchor.metadata["tags"] = [BANNER_TAG]
            self.nb.cells.insert(index, anchor)
            why = f"{why} ([the cell where it stopped](#{FAILING_CELL_ANCHOR}))"
        banner = nbformat.v4.new_markdown_cell(f"**This stage did not finish: {why}.**")
        banner.metadata["tags"] = [BANNER_TAG]
        self.nb.cells.insert(0, banner)
        self.nb.metadata.papermill["exception"] = True
        self.save()


def _run_cells(
    book: _ExecutedNotebook, manager: Any, deadline: float, timeout_s: float
) -> tuple[StageFailure | None, bool]:
    """Run the notebook's cells in the kernel, stopping at the first failing one; (failure, interrupted)."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    class Client(NotebookClient):
        def process_message(self, *args: Any, **kwargs: Any) -> Any:
            found = super().process_message(*args, **kwargs)
            book.autosave()  # a long cell's outputs reach the disk while it runs
            return found

    def time_left(cell: Any) -> int:
        return max(1, int(deadline - time.monotonic() + 0.999))

    client = Client(book.nb, km=manager, kernel_name=KERNEL_NAME, timeout_func=time_left)
    failure: StageFailure | None = None
    connected = False
    try:
        with client.setup_kernel():
            connected = True
            for index, cell in enumerate(book.nb.cells):
                book.cell_started(index)
                try:
                    client.execute_cell(cell, index)
                except CellExecutionError as error:
                    if error.ename == "SystemExit" and str(error.evalue) in ("", "0"):
                        book.cell_finished(index, failed=False)  # sys.exit(0): the notebook ends here, well
                        break
                    book.cell_finished(index, failed=True)
                    failure = _cell_failure(error, index, cell.get("execution_count"))
                    book.flag(index, failure.message)
                    return failure, False
                book.cell_finished(index, failed=False)
            assert client.kc is not None
            info = client.wait_for_reply(client.kc.kernel_info())
            if info is not None:  # the page's syntax highlighting reads the language
                book.nb.metadata["language_info"] = info["content"]["language_info"]
    except CellTimeoutError:
        why = f"it ran past the stage's timeout of {timeout_s:g} s"
        return _stopped("timeout", why, f"timed out after {timeout_s:g} s"), False
    except DeadKernelError:
        why = "its kernel died (killed, out of memory, or os._exit)"
        return _stopped("dead_kernel", why, "the kernel died"), False
    except RuntimeError as error:
        if connected:
            raise
        # jupyter_client's client setup: "Kernel died before replying to kernel_info" (killed meanwhile)
        why = f"its kernel died before the first cell ({error})"
        return _stopped("dead_kernel", why, "the kernel died"), False
    except KeyboardInterrupt:
        why = "the run was interrupted (Ctrl-C or SIGTERM)"
        return _stopped("cancelled", why, "interrupted"), True
    finally:
        if client.kc is not None:  # nbclient leaves the channels of a client on a kernel it does not own
            close_channels(client.kc)
        book.finish()
    return None, False


def _cell_failure(error: Any, index: int, exec_count: int | None) -> StageFailure:
    evalue = strip_ansi(str(error.evalue))
    message = f"{error.ename}: {evalue}" if evalue else str(error.ename)
    where = _cell_label(exec_count, index)
    return StageFailure("error", f"{message} (in {where})", index, error.ename, evalue, _failing_line(error))


def _failing_line(error: Any) -> str | None:
    """The cell's line the error came from, as IPython's traceback marks it ("----> 3 ..."): its first
    frame is the cell's own."""
    lines = strip_ansi(str(getattr(error, "traceback", "") or "")).splitlines()
    marked = [line.strip() for line in lines if line.lstrip().startswith("---->")]
    return marked[0][:300] if marked else None


def _stopped(kind: FailureKind, why: str, what: str) -> StageFailure:
    """A stage stopped from outside its cells; `_unfinished` completes it."""
    return StageFailure(kind, what, None, _ENAMES[kind], why)


def _unfinished(book: _ExecutedNotebook, failure: StageFailure) -> StageFailure:
    """A stage that a timeout, a dead kernel or an interrupt stopped: the cell that was running is flagged
    (its output ends with the reason) and the notebook saved."""
    why = failure.evalue or failure.kind
    running = book.running_cell
    exec_count = None
    if running is not None:
        cell = book.nb.cells[running]
        cell.metadata.papermill.update(status="failed", exception=True)
        if cell.cell_type == "code":
            import nbformat

            cell.outputs.append(
                nbformat.v4.new_output("error", ename="StageStopped", evalue=why, traceback=[why])
            )
            exec_count = cell.get("execution_count")
    book.flag(running, why)
    if running is None:  # stopped before any cell ran (the kernel did not start)
        return failure
    message = f"{failure.message} (in {_cell_label(exec_count, running)})"
    return StageFailure(failure.kind, message, running, failure.ename, why)


def _cell_label(exec_count: int | None, cell_index: int | None) -> str:
    if exec_count is not None:
        return f"cell [{exec_count}]"
    return f"cell #{cell_index}" if cell_index is not None else "an unknown cell"
