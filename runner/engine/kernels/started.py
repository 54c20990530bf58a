"""A kernel for one stage: started now, made ready (and warmed up) in a background thread.

The thread talks to the kernel through its own client only; `wait_ready()` joins it and `shutdown()` stops it
before shutting the kernel down, so the kernel manager is used by one thread at a time. How the kernel's
process comes to be (started the usual way, or forked from the run's kernel server) is the launcher's
business (pool.py): it hands a `prepare` hook that configures the manager before it starts the kernel.
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

KERNEL_NAME = "python3"  # in a virtualenv this is the venv's own interpreter: no kernelspec to install
KERNEL_START_TIMEOUT_S = 60
CONTEXT_END_WAIT_S = 1.0  # a client's ZeroMQ context ends within its sockets' linger (0.1 s) unless stuck


class Kernel:
    """One stage's kernel. Never shared: one kernel per stage, started for that stage only."""

    def __init__(
        self,
        cwd: Path,
        warmup: str = "",
        prepare: Callable[[Any], None] | None = None,
        output: Path | None = None,
    ) -> None:
        """`output`: the file that receives what the kernel process writes outside its cells (to its own
        stdout and stderr: a library's warning at import, a C extension's message); None: the runner's."""
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
            # (without a heartbeat channel: client.py)
            client_class="runner.engine.kernels.client.StageClient",
        )
        if prepare is not None:
            prepare(self.manager)
        streams: dict[str, Any] = {}
        if output is not None and not getattr(self.manager.provisioner, "server", None):
            handle = output.open("ab")  # the kernel's own descriptors: closed here once it has them
            streams = {"stdout": handle, "stderr": subprocess.STDOUT}
        try:
            # an in-memory history: a sqlite history file per kernel is slow and can lock when in parallel
            self.manager.start_kernel(
                cwd=str(cwd), extra_arguments=["--HistoryManager.hist_file=:memory:"], **streams
            )
            self._thread = threading.Thread(target=self._get_ready, name="kernel-ready", daemon=True)
            self._thread.start()
        except BaseException:
            self.shutdown()
            raise
        finally:
            if streams:
                streams["stdout"].close()

    @property
    def forked(self) -> bool:
        """Whether its process was forked from the run's kernel server (recorded in the stage's timings)."""
        return bool(getattr(self.manager.provisioner, "forked", False))

    def hurry(self) -> None:
        """Its stage waits for it: a launcher that queued it (the kernel server finishing its warm-up) starts
        it now."""
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
        client.start_channels(hb=False)  # the manager tells whether the kernel lives: see client.py
        try:
            deadline = time.monotonic() + KERNEL_START_TIMEOUT_S
            if self._reply(client, client.kernel_info, deadline, resend=True) is None:
                return
            warmup = self.warmup
            if getattr(self.manager.provisioner, "warmed_up_by_server", lambda _: False)(warmup):
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
            close_channels(client)
            release_thread_loop()

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


_CHANNELS = ("_shell_channel", "_iopub_channel", "_stdin_channel", "_hb_channel", "_control_channel")


def close_channels(client: Any) -> None:
    """Stop the channels a kernel client opened and close its ZeroMQ context; never raises.

    jupyter_client's own `stop_channels` reaches each channel through a property that opens the channel
    when it was not opened yet: on a client interrupted while starting its channels (a Ctrl-C or SIGTERM in
    a stage's first second) it opens new sockets only to close them, and an error there (ZeroMQ's "Too many
    open files" when a socket cannot be made) escaped the stage as a bug of the runner instead of the
    cancellation it was. Here only the channels that exist are stopped, each on its own, and what fails to
    close is left to the process's end: stopping a client is cleanup, never the run's outcome, and never
    waits more than CONTEXT_END_WAIT_S."""
    for name in _CHANNELS:
        channel = getattr(client, name, None)  # jupyter_client's attributes (channels_running reads them)
        if channel is None:
            continue
        with contextlib.suppress(Exception):
            if channel.is_alive():
                channel.stop()
    context = getattr(client, "context", None)
    if getattr(client, "_created_context", False) and context is not None and not context.closed:
        # Terminating a context waits for every socket made in it to close, and a signal that came while
        # the client made one (between ZeroMQ making it and pyzmq tracking it) leaves one that nothing
        # closes: the run hung there for good. The context ends in a thread of its own, waited for briefly.
        ending = threading.Thread(target=_destroy, args=(context,), name="zmq-context-end", daemon=True)
        ending.start()
        ending.join(timeout=CONTEXT_END_WAIT_S)


def _destroy(context: Any) -> None:
    with contextlib.suppress(Exception):
        context.destroy(linger=100)


def release_thread_loop() -> None:
    """Close the event loop jupyter_client made for this thread, when it is not the main thread's.

    jupyter_client's blocking calls run coroutines in a loop jupyter_core keeps per thread; a thread that
    ends without closing its own leaks the loop's selector (three descriptors a thread)."""
    if threading.current_thread() is threading.main_thread():
        return
    import asyncio  # here: a rerun served by the cache starts no kernel and need not pay for asyncio

    from jupyter_core.utils import ensure_event_loop

    loop = ensure_event_loop()
    if not loop.is_running():
        loop.close()
        asyncio.set_event_loop(None)
