"""The runner's side of the kernel server (server.py): kernels and workers forked from a warmed-up process.

`KernelServer` starts the server process of a run and asks it for kernels and for calls in workers.
`ForkedProcess` stands for a kernel's process, which is the server's child, not ours: the server tells its
pid and exit. The jupyter_client provisioner that launches a kernel through the server is in
provisioner.py (jupyter_client is imported only when a kernel starts). On any trouble with the server, a
stage falls back to a kernel started the usual way (pool.py).
"""

from __future__ import annotations

import ast
import base64
import contextlib
import itertools
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 60  # the server's preload and each fork; a kernel start has the same bound
CLOSE_WAIT_S = 1.0  # an idle server ends within its poll (0.2 s) of its stdin closing
# Forking a process that imported libraries is safe on Linux; elsewhere (macOS: system frameworks that do not
# survive fork) kernels start the usual way.
SUPPORTED = sys.platform == "linux"


class KernelServerError(RuntimeError):
    pass


class WorkerError(RuntimeError):
    """What a function run by `KernelServer.call` raised, as "Type: message"."""


class ForkedProcess:
    """The Popen-like handle of a kernel forked by the server: what LocalProvisioner calls on its process."""

    stdin = stdout = stderr = None  # the provisioner closes these when set; a forked kernel has none of ours

    def __init__(self) -> None:
        self.started: Future[int] = Future()
        self.returncode: int | None = None
        self.preload_error = ""  # the server's preload had failed when it forked this kernel
        self.hurry: Callable[[], None] = lambda: None  # a stage waits for it: fork it now

    @property
    def pid(self) -> int:
        return self.started.result(timeout=START_TIMEOUT_S)

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        if not self.started.done():
            return None  # still being forked: a kernel that is starting
        if self.started.exception() is not None:
            self.returncode = 1
        elif not _alive(self.started.result()):
            self.returncode = -signal.SIGKILL  # gone before the server said how: a kill is the usual reason
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("forked kernel", timeout or 0)
            time.sleep(0.02)
        return code

    def send_signal(self, signum: int) -> None:
        """Signal the kernel. One not forked yet (the server is still warming up) is not waited for: the
        signal reaches it the moment the server forks it (a server that ends first never does), and a
        SIGKILL counts at once, so that stopping or shutting down a stage, Ctrl-C included, never waits for
        a warm-up to finish."""
        if self.poll() is not None:
            return
        if not self.started.done():
            if signum == signal.SIGKILL:
                self.returncode = -signal.SIGKILL
            self.started.add_done_callback(lambda started: _signal_once_forked(started, signum))
            return
        pid = self.pid
        try:
            os.killpg(pid, signum)  # the kernel leads its own process group: its children get it too
        except OSError:
            # no such group: a kernel forked a moment ago does not lead one yet, or the kernel ended since
            # poll() looked (the server reaps it); an ended one has nothing to signal, as with Popen
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.send_signal(signal.SIGTERM)


class KernelServer:
    """A run's kernel server: started with the code to preload, asked for kernels, closed at the run's end.

    A kernel asked for ahead of its stage is forked when the preload is done, or as soon as `hurry()` is
    called on its handle (its stage waits for it).
    """

    def __init__(self, cwd: Path, preload: str, output: Path | None = None, for_workers: str = "") -> None:
        """`preload`: the pipeline's warm-up (a kernel forked after it skips it); `for_workers`: imports run
        after it for the workers' calls; `output`: the file that receives what the server and its workers
        write (a warm-up's warnings, MLflow's log lines), None: the runner's stderr."""
        from runner.engine.kernels.server import preloaded_packages

        self.preload = preload
        everything = f"{preload}\n{for_workers}" if for_workers else preload
        # what a worker finds imported (once the preload got there): worth a worker, not an import
        self.preloaded = preloaded_packages(everything)
        self._lock = threading.Lock()  # one writer on the server's stdin at a time
        self._ids = itertools.count(1)
        self._requests: dict[int, ForkedProcess] = {}
        self._forked: dict[int, ForkedProcess] = {}
        self._calls: dict[int, Future[Any]] = {}  # by request id: what a worker answers
        self._workers: dict[int, int] = {}  # worker pid -> request id
        self._dead = threading.Event()
        self._spills = Path(tempfile.mkdtemp(prefix="retrain-results-"))  # workers' long results
        errors = output.open("ab") if output is not None else None
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "runner.engine.kernels.server"],
                cwd=cwd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                start_new_session=True,  # a Ctrl-C in the terminal is the runner's, not the server's
            )
        finally:
            if errors is not None:
                errors.close()  # the server has its own descriptor now
        self._write({"preload": everything})
        self._reader = threading.Thread(target=self._read, name="kernel-server", daemon=True)
        self._reader.start()

    @property
    def usable(self) -> bool:
        return not self._dead.is_set() and self.process.poll() is None

    def fork(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        imports: frozenset[str] = frozenset(),
        output: str = "",
    ) -> ForkedProcess:
        """Ask for a kernel with these arguments (after `-m ipykernel_launcher`), for a notebook that imports
        the packages `imports` (see `notebook_imports`), its own stdout and stderr going to the file `output`
        ("": the server's); returns at once."""
        request = {"argv": argv, "env": env, "cwd": cwd, "imports": sorted(imports), "output": output}
        number, handle = self._request(request)
        handle.hurry = lambda: self._hurry(number, handle)
        return handle

    def _request(
        self, request: dict[str, Any], answer: Future[Any] | None = None, spill: bool = False
    ) -> tuple[int, ForkedProcess]:
        """Send a request to fork: its number and the handle of the process to be."""
        handle = ForkedProcess()
        with self._lock:
            if not self.usable:
                raise KernelServerError("the kernel server is not running")
            number = next(self._ids)
            self._requests[number] = handle
            if answer is not None:
                self._calls[number] = answer
            if spill:
                request = {**request, "spill": str(self._spills / f"{number}.pickle")}
            self._write({"id": number, **request})
        return number, handle

    def _hurry(self, number: int, handle: ForkedProcess) -> None:
        with self._lock, contextlib.suppress(KernelServerError):
            if not handle.started.done() and self.usable:
                self._write({"hurry": number})

    def call(
        self,
        target: str,
        kwargs: dict[str, Any],
        cwd: Path,
        timeout_s: float,
        env: Mapping[str, str] | None = None,
        needs: str | None = None,
    ) -> Any:
        """Run `module:function`(**kwargs) (JSON arguments) in a worker, with this process's environment (or
        `env`); return what it returns. The worker is forked at once, or, when the preload imports the
        package `needs`, once it did (the wait counts in `timeout_s`). What it raised is raised here when it
        is one of the runner's own exceptions, else WorkerError ("Type: message"); KernelServerError: no
        answer (it is killed)."""
        answer: Future[Any] = Future()
        environment = dict(os.environ if env is None else env)
        imports = [needs] if needs is not None else []
        request = {"call": target, "kwargs": kwargs, "env": environment, "cwd": str(cwd), "imports": imports}
        number, handle = self._request(request, answer, spill=True)
        try:
            return answer.result(timeout=timeout_s)
        except TimeoutError:
            handle.kill()
            raise KernelServerError(f"{target} did not answer within {timeout_s:g} s") from None
        finally:
            self._calls.pop(number, None)

    def write_to(self, output: Path) -> None:
        """From now on, what the server and the workers it forks write goes to `output` (a kept server's next
        run: its own file)."""
        with self._lock:
            if not self.usable:
                raise KernelServerError("the kernel server is not running")
            self._write({"write_to": str(output)})

    def release(self) -> None:
        """Kill what this server forked that is still alive (each leads its own process group): when the run
        it served is over and the server is kept for the next one, which stays; or once it is killed."""
        for pid in list(self._forked):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:  # just forked: not yet the leader of its own group
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        """Stop the server; it kills any kernel or worker it forked that is still alive. A server busy in a
        warm-up statement (an import of seconds) does not see its stdin close: after CLOSE_WAIT_S it is
        killed, and so is every process it said it forked (each leads its own process group)."""
        with self._lock, contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout=CLOSE_WAIT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self.release()  # the children it can no longer kill
        self._reader.join(timeout=5)
        if self.process.stdout is not None and not self._reader.is_alive():
            self.process.stdout.close()  # the reader is done with it: a process running many runs keeps none
        shutil.rmtree(self._spills, ignore_errors=True)

    def _write(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write((json.dumps(message) + "\n").encode())
            self.process.stdin.flush()
        except OSError as error:
            self._dead.set()
            raise KernelServerError(f"the kernel server is gone: {error}") from error

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                message = json.loads(line)
            except ValueError:  # not the protocol's (the server sends its own output to stderr): not ours
                continue
            if "exited" in message:
                forked = self._forked.pop(message["exited"], None)
                if forked is not None:
                    forked.returncode = message["code"]
                self._answer(self._workers.pop(message["exited"], None), died=message["code"])
            elif "answer" in message or "answer_file" in message:
                self._answer(message["id"], message=message)
            elif message.get("id") in self._requests:
                handle = self._requests.pop(message["id"])
                if "pid" in message:
                    self._forked[message["pid"]] = handle
                    if message["id"] in self._calls:
                        self._workers[message["pid"]] = message["id"]
                    handle.preload_error = message["preload_error"]
                    handle.started.set_result(message["pid"])
                else:
                    handle.started.set_exception(KernelServerError(message["error"]))
        self._dead.set()  # the server ended: requests still waiting will never be answered
        for handle in list(self._requests.values()):
            handle.started.set_exception(KernelServerError("the kernel server ended"))
        self._requests.clear()
        for number in list(self._calls):
            self._answer(number, died=None)

    def _answer(
        self, number: int | None, *, message: dict[str, Any] | None = None, died: int | None = 0
    ) -> None:
        answer = self._calls.get(number) if number is not None else None
        if answer is None or answer.done():
            return
        if message is None:
            answer.set_exception(KernelServerError(f"the worker ended without an answer (exit code {died})"))
            return
        try:
            if "answer_file" in message:
                spill = Path(message["answer_file"])
                try:
                    payload = spill.read_bytes()
                finally:
                    spill.unlink(missing_ok=True)
            else:
                payload = base64.b64decode(message["answer"])
            # our own child's answer (server.py, run_call): the runner's values and exceptions only
            said: dict[str, Any] = pickle.loads(payload)
        except (OSError, ValueError, pickle.UnpicklingError, AttributeError, ImportError) as error:
            answer.set_exception(KernelServerError(f"the worker's answer is unreadable: {error}"))
            return
        if "result" in said:
            answer.set_result(said["result"])
        elif isinstance(said.get("raised"), BaseException):
            answer.set_exception(said["raised"])
        else:
            answer.set_exception(WorkerError(said.get("failed", "the worker failed")))


def _signal_once_forked(started: Future[int], signum: int) -> None:
    if started.exception() is None:
        with contextlib.suppress(OSError):
            os.killpg(started.result(), signum)


def notebook_imports(notebook: Path) -> frozenset[str]:
    """The top-level packages the notebook's code cells import, anywhere in them (a cell that is not plain
    Python, or a notebook that cannot be read, adds nothing)."""
    from runner.engine.kernels.server import imported_packages
    from runner.engine.notebook_json import code_cells

    try:
        cells = code_cells(notebook)
    except (OSError, ValueError):
        return frozenset()
    found: set[str] = set()
    for source in cells:
        with contextlib.suppress(SyntaxError, ValueError):
            found |= imported_packages(ast.parse(source))
    return frozenset(found)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
