"""Execute one stage's notebook with papermill, in-process, in a kernel this module owns.

Owning the kernel (rather than letting papermill start one) gives the kernel the project root as its working
directory, lets the kernel's start be timed apart from the cells, and guarantees the kernel is shut down in
`finally` whatever happens: an error, a timeout, a dead kernel, or Ctrl-C.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from runner.records import FailureKind, StageFailure, StageTimings

KERNEL_NAME = "python3"  # in a virtualenv this is the venv's own interpreter: no kernelspec to install
KERNEL_START_TIMEOUT_S = 60
_ENAMES = {"timeout": "TimeoutError", "dead_kernel": "DeadKernelError", "cancelled": "KeyboardInterrupt"}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


@dataclass
class ExecutionResult:
    failure: StageFailure | None
    timings: StageTimings
    interrupted: bool = False  # Ctrl-C or SIGTERM arrived while the stage ran


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def execute_notebook(
    notebook: Path,
    output: Path,
    parameters: Mapping[str, Any],
    *,
    cwd: Path,
    timeout_s: float,
) -> ExecutionResult:
    """Run `notebook` with `parameters` injected, save the executed copy to `output` whatever happens.

    `timeout_s` bounds the whole stage: each cell may use what the earlier cells left of it.
    """
    from jupyter_client.manager import KernelManager

    timings = StageTimings()
    started = time.monotonic()
    # IPC sockets in a private folder: local-only, no TCP port to race for, nothing on the network
    sockets = Path(tempfile.mkdtemp(prefix="retrain-kernel-"))
    kernel = KernelManager(
        kernel_name=KERNEL_NAME,
        transport="ipc",
        ip=str(sockets / "kernel"),
        # nbclient polls outputs, replies and liveness in one event loop: with a blocking client the output
        # poll blocks the loop, and neither timeouts nor a dead kernel are ever noticed
        client_class="jupyter_client.asynchronous.AsyncKernelClient",
    )
    try:
        trouble = _start_kernel_retrying(kernel, cwd)
        timings.kernel_start_s = time.monotonic() - started
        failure: StageFailure | None
        if trouble is not None:
            failure = StageFailure("dead_kernel", trouble, None, "KernelStartError", trouble)
            interrupted = False
        else:
            deadline = time.monotonic() + timeout_s
            failure, interrupted = _run_cells(notebook, output, parameters, kernel, deadline, timeout_s)
    finally:
        # the kernel never outlives the stage, even on Ctrl-C
        if kernel.has_kernel:
            kernel.shutdown_kernel(now=True)
        shutil.rmtree(sockets, ignore_errors=True)
        timings.execute_s = time.monotonic() - started - timings.kernel_start_s
    return ExecutionResult(failure=failure, timings=timings, interrupted=interrupted)


def _start_kernel_retrying(kernel: Any, cwd: Path) -> str | None:
    """Start the stage's kernel, once more if the first one dies while starting (seen on loaded machines).

    Returns None when it is ready, else why it could not be started.
    """
    for attempt in (1, 2):
        try:
            _start_kernel(kernel, cwd)
            return None
        except (RuntimeError, TimeoutError) as error:
            if kernel.has_kernel:
                kernel.shutdown_kernel(now=True)
            if attempt == 2:
                return f"the kernel did not start (twice): {error}"
    return None


def _start_kernel(kernel: Any, cwd: Path) -> None:
    # an in-memory history: a sqlite history file per kernel is slow and can lock under parallel stages
    kernel.start_kernel(cwd=str(cwd), extra_arguments=["--HistoryManager.hist_file=:memory:"])
    from jupyter_client.blocking.client import BlockingKernelClient

    client = BlockingKernelClient()
    client.load_connection_info(kernel.get_connection_info())
    client.start_channels()
    try:
        client.wait_for_ready(timeout=KERNEL_START_TIMEOUT_S)
    finally:
        client.stop_channels()


def _run_cells(
    notebook: Path,
    output: Path,
    parameters: Mapping[str, Any],
    kernel: Any,
    deadline: float,
    timeout_s: float,
) -> tuple[StageFailure | None, bool]:
    import papermill
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
        return _unfinished(output, "timeout", why, f"timed out after {timeout_s:g} s"), False
    except DeadKernelError:
        why = "its kernel died (killed, out of memory, or os._exit)"
        return _unfinished(output, "dead_kernel", why, "the kernel died"), False
    except KeyboardInterrupt:
        why = "the run was interrupted (Ctrl-C or SIGTERM)"
        return _unfinished(output, "cancelled", why, "interrupted"), True
    return None, False


def _unfinished(output: Path, kind: FailureKind, why: str, what: str) -> StageFailure:
    cell_index, exec_count = _mark_unfinished(output, why)
    message = f"{what} (in {_cell_label(exec_count, cell_index)})"
    return StageFailure(kind, message, cell_index, _ENAMES[kind], why)


def _cell_label(exec_count: int | None, cell_index: int | None) -> str:
    if exec_count is not None:
        return f"cell [{exec_count}]"
    return f"cell #{cell_index}" if cell_index is not None else "an unknown cell"


def _mark_unfinished(output: Path, why: str) -> tuple[int | None, int | None]:
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
    nbformat.write(nb, output)
    return running, exec_count
