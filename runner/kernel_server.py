"""The kernel server: one process per run that imports the common libraries once and forks stage kernels.

Run by the runner as `python -m runner.kernel_server` (runner/kernel_fork.py is the other side). A kernel
started the usual way is a new interpreter that imports ipykernel, IPython and then, in its warm-up, pandas,
matplotlib, LightGBM, MLflow: ~1-4 s of CPU per stage, paid again by every stage. This process pays it once:
it runs the pipeline's `warmup` (the imports common to the stages), then, for each kernel the runner asks
for, `os.fork()`s a child that becomes an ordinary ipykernel with the connection file the runner wrote. The
child starts with the modules already imported (shared copy-on-write with this process) and with a fresh
namespace: nothing of the warm-up's own variables, nothing of another stage. Each kernel still serves one
stage only.

The protocol is JSON lines on stdin/stdout:
    runner -> server   {"preload": "<python code>"}                       once, first
    server -> runner   {"ready": true, "seconds": 2.1, "error": ""}       the preload ran (error: why not)
    runner -> server   {"id": 3, "argv": [...], "env": {...}, "cwd": "..."}   fork a kernel
    server -> runner   {"id": 3, "pid": 12345}   or   {"id": 3, "error": "..."}
    server -> runner   {"exited": 12345, "code": 0}                      a kernel ended (reaped here)
stdin closing (the runner ended, or died: the pipe's only writer is gone) makes the server kill the kernels
it forked that are still alive, and exit. The forked kernels also watch this process
(`IPKernelApp.parent_handle`): a kernel whose server is gone exits.

Forking is safe here because this process never starts a thread, an event loop or a socket before it forks:
the preload only imports. It imports nothing of its own beyond the standard library until the preload.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import time
from typing import Any

POLL_S = 0.2  # how often exited kernels are reaped while no request arrives


def main() -> None:
    _call_process(b"retrain-kserver")
    request = serve(0, 1)  # stdin and stdout: the pipes from and to the runner
    if request is not None:  # in a forked child: become the kernel the runner asked for
        become_kernel(request)


def serve(requests: int, replies: int) -> dict[str, Any] | None:
    """Preload, then fork kernels on request until `requests` closes. Returns in forked children only."""
    lines = _Lines(requests)
    first = lines.next(block=True)
    if first is None:
        return None
    _send(replies, preload(json.loads(first).get("preload", "")))
    children: set[int] = set()
    while True:
        _reap(children, replies)
        line = lines.next(block=False)
        if line is None:
            if lines.closed:  # the runner is gone: nothing may outlive it
                for pid in children:
                    _kill_group(pid)
                return None
            continue
        request: dict[str, Any] = json.loads(line)
        try:
            pid = os.fork()
        except OSError as error:
            _send(replies, {"id": request["id"], "error": f"fork failed: {error}"})
            continue
        if pid == 0:
            return request  # become_kernel() puts other files on 0 and 1: the pipes close in this child
        children.add(pid)
        _send(replies, {"id": request["id"], "pid": pid})


def preload(code: str) -> dict[str, Any]:
    """Import what every kernel needs, and the pipeline's warm-up, as a kernel would have: same backend."""
    started = time.monotonic()
    # ipykernel sets this when a kernel starts; the warm-up may import matplotlib, which reads it then
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    error = ""
    try:
        import ipykernel.kernelapp  # noqa: F401

        if code.strip():
            exec(compile(code, "<warmup>", "exec"), {"__name__": "__warmup__"})
    except BaseException as problem:  # reported; the stage's own warm-up will say it again
        error = f"{type(problem).__name__}: {problem}"
    return {"ready": True, "seconds": round(time.monotonic() - started, 3), "error": error}


def become_kernel(request: dict[str, Any]) -> None:
    """In the forked child: detach, take the environment and folder the runner gave, run ipykernel."""
    server = os.getppid()
    _call_process(b"retrain-kernel")  # what `ps` and `top` show: its command line is the server's
    os.setsid()  # its own process group: the runner signals (interrupts, kills) the kernel and its children
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # what a kernel prints outside a cell goes where the runner's own kernels' output goes
    os.close(devnull)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the interpreter's own stream, never closed
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ["JPY_PARENT_PID"] = str(server)
    if "numpy" in sys.modules:  # forked kernels would share the global random state: reseed, as a new one
        sys.modules["numpy"].random.seed()
    sys.argv = ["ipykernel_launcher", *request["argv"], f"--IPKernelApp.parent_handle={server}"]
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


class _Lines:
    """Lines from a pipe, read unbuffered so that select() sees what is waiting."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = b""
        self.closed = False

    def next(self, *, block: bool) -> bytes | None:
        """The next whole line; None when there is none yet (after waiting POLL_S) or the pipe closed."""
        while b"\n" not in self.pending:
            if self.closed:
                return None
            if not block and not select.select([self.fd], [], [], POLL_S)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.closed = True
                return None
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line


def _call_process(name: bytes) -> None:
    """Set the process's name (Linux's comm, 15 bytes at most), as shown by ps, top and psutil."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(15, name, 0, 0, 0)  # PR_SET_NAME


def _reap(children: set[int], replies: int) -> None:
    for pid in list(children):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 0
        if done:
            children.discard(pid)
            _send(replies, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # the kernel and whatever it started
    except OSError:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _send(fd: int, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the runner is gone; stdin's end tells the loop
        os.write(fd, (json.dumps(message) + "\n").encode())


if __name__ == "__main__":
    main()
