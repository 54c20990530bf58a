"""The kernel server: one process per run that imports the common libraries once and forks stage kernels.

Run by the runner as `python -m runner.engine.kernels.server` (forked.py is the other side). A kernel
started the usual way is a new interpreter that imports ipykernel, IPython and then, in its warm-up, pandas,
matplotlib, LightGBM, MLflow: ~1-4 s of CPU per stage, paid again by every stage. This process pays it once:
it runs the pipeline's `warmup` (the imports common to the stages) and, for each kernel the runner asks
for, `os.fork()`s a child that becomes an ordinary ipykernel with the connection file the runner wrote. The
child starts with the modules already imported (shared copy-on-write with this process) and with a fresh
namespace: nothing of the warm-up's own variables, nothing of another stage. Each kernel still serves one
stage only.

The protocol is JSON lines on stdin/stdout:
    runner -> server   {"preload": "<python code>"}                       once, first
    runner -> server   {"id": 3, "argv": [...], "env": {...}, "cwd": "...", "imports": ["pandas", ...]}
                       fork a kernel (for a notebook that imports these packages), once preloaded
    runner -> server   {"hurry": 3}                  a stage waits for it: fork it once its imports are done
    runner -> server   {"write_to": "<file>"}        what the server and the workers it forks from now on
                                                      write goes to this file (a kept server's next run)
    server -> runner   {"id": 3, "pid": 12345, "preload_error": ""}   (set: the warm-up failed before, why)
                       or   {"id": 3, "error": "fork failed: ..."}
    server -> runner   {"exited": 12345, "code": 0}                      a kernel ended (reaped here)
    runner -> server   {"id": 4, "call": "module:function", "kwargs": {...}, "env": {...}, "cwd": "...",
                        "imports": ["mlflow"], "spill": "<a file for a long result>"}
                       run a function in a forked worker, as soon as the preload imported what it needs
                       (`imports`; at once when it names none): the server answers with its pid, then
    worker -> runner   {"id": 4, "answer": "<base64 of a pickled {"result": ...} or {"failed": "Type: ...",
                       "raised": <the exception, when it is the runner's own>}>"}
                       or, for an answer of 4 KB or more, {"id": 4, "answer_file": "<the request's spill>"}
stdin closing (the runner ended, or died: the pipe's only writer is gone) makes the server kill the kernels
it forked that are still alive, and exit. The forked kernels also watch this process
(`IPKernelApp.parent_handle`): a kernel whose server is gone exits.

Forking is safe here because this process never starts a thread, an event loop or a socket before it forks:
it imports nothing but the standard library until the preload, and a warm-up is imports (docs/speed.md).
"""

from __future__ import annotations

import ast
import base64
import contextlib
import importlib
import json
import os
import pickle
import select
import signal
import sys
from pathlib import Path
from typing import Any

POLL_S = 0.2  # how often exited kernels are reaped while no request arrives
# imported before any warm-up: every kernel needs ipykernel; every stage records its results with scrapbook
ALWAYS_PRELOADED = "import ipykernel.kernelapp\nimport scrapbook"


def main() -> None:
    _call_process(b"retrain-kserver")
    # stdin and stdout are the pipes from and to the runner; the replies get a descriptor of their own, and
    # stdout goes to stderr: what a warm-up prints must not reach the runner as a reply
    replies = os.dup(1)
    os.dup2(2, 1)
    request = serve(0, replies)
    if request is None:  # the server's end: nothing buffered to flush, no interpreter teardown to wait for
        os._exit(0)
    if "call" in request:  # in a forked child: run the function the runner asked for, answer, exit
        run_call(request, replies)
    os.close(replies)  # a kernel keeps no end of the runner's pipe: it sees the server's end when it comes
    become_kernel(request)  # in a forked child: become the kernel the runner asked for


def serve(requests: int, replies: int) -> dict[str, Any] | None:
    """Preload, and fork kernels on request, until `requests` closes. Returns in forked children only.

    A kernel asked for ahead of its stage is forked once the preload is done. One that a stage waits for
    (`hurry`) is forked as soon as the preload has run every statement that imports a module its notebook
    imports too (the request's `imports`), between two statements: the kernel then shares those modules
    with this process instead of importing its own copy, and imports what it needs beyond them itself. A
    worker for a call is forked the same way, as if its caller waited: a registry call made while the
    preload imports MLflow would otherwise import its own copy of it, at the same time.
    """
    lines = _Lines(requests)
    first = lines.next(timeout=None)
    if first is None:
        return None
    preload = Preload(json.loads(first).get("preload", ""))
    children: set[int] = set()
    waiting: dict[int, dict[str, Any]] = {}  # requests not forked yet, by id
    urgent: set[int] = set()
    while True:
        _reap(children, replies)
        # a call waits like a kernel whose stage waits: for the statements importing what it needs, no more
        ready = [n for n in waiting if preload.done_for(waiting[n], "call" in waiting[n] or n in urgent)]
        for number in ready:
            request = waiting.pop(number)
            sys.stdout.flush()  # what the warm-up printed, once: a child would print its own copy again
            sys.stderr.flush()
            try:
                pid = os.fork()
            except OSError as error:
                _send(replies, {"id": number, "error": f"fork failed: {error}"})
                continue
            if pid == 0:
                return request  # become_kernel() puts other files on 0 and 1: the pipes close in this child
            children.add(pid)
            _send(replies, {"id": number, "pid": pid, "preload_error": preload.error})
        line = lines.next(timeout=0 if preload.pending else POLL_S)
        if line is not None:
            message = json.loads(line)
            if "hurry" in message:
                urgent.add(message["hurry"])
            elif "write_to" in message:  # not "output": a kernel's request names its own output file
                with contextlib.suppress(OSError):  # a file that cannot be opened: the previous one goes on
                    _write_to(message["write_to"])
            else:
                waiting[message["id"]] = message
        elif lines.closed:  # the runner is gone: nothing may outlive it
            for pid in children:
                _kill_group(pid)
            return None
        elif preload.pending:
            preload.step()


class Preload:
    """The warm-up, run one statement at a time (`import a, b` counts as two) so that forks can come between.

    ipykernel comes first: every kernel needs it. Its environment is a kernel's: ipykernel sets MPLBACKEND
    when it starts, and a warm-up that imports matplotlib reads it then. scrapbook comes next, whatever the
    warm-up says: every stage records its results with it, and its import (pandas, pyarrow, papermill; ~1.1 s
    of CPU) would otherwise be paid again by each stage's kernel of a pipeline without a warm-up.
    """

    def __init__(self, code: str) -> None:
        os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        self.error = ""
        self.namespace: dict[str, Any] = {"__name__": "__warmup__"}
        ours = _statements(ALWAYS_PRELOADED)
        try:
            statements = [*ours, *_statements(code)]
        except SyntaxError as problem:  # `retrain check` refuses it; here, only the runner's own imports run
            self.error, statements = f"SyntaxError: {problem}", ours
        # each statement with the top-level packages it imports ("mlflow" for `import mlflow.pyfunc`)
        self.statements: list[tuple[Any, set[str]]] = [
            (compile(tree, "<warmup>", "exec"), imported_packages(tree)) for tree in statements
        ]

    @property
    def pending(self) -> bool:
        return bool(self.statements) and not self.error

    def done_for(self, request: dict[str, Any], urgent: bool) -> bool:
        """Whether a kernel may be forked for `request` now: the preload is over, or its stage waits and no
        statement left imports a package that its notebook imports (its kernel is forked before the first
        statement when it names no imports)."""
        if not self.pending:
            return True
        wanted = set(request.get("imports", ()))
        return urgent and not any(packages & wanted for _, packages in self.statements)

    def step(self) -> None:
        """Run the next statement; after a failure the rest is not run."""
        try:
            exec(self.statements.pop(0)[0], self.namespace)
        except BaseException as problem:  # reported to the runner, whose kernels then warm up themselves
            self.error = f"{type(problem).__name__}: {problem}"


def preloaded_packages(warmup: str) -> frozenset[str]:
    """The top-level packages a server preloading `warmup` imports (once it got there): ours, then the
    warm-up's. Empty when the warm-up is not valid Python: the server then runs none of it (`Preload`)."""
    try:
        return frozenset(imported_packages(ast.parse(f"{ALWAYS_PRELOADED}\n{warmup}")))
    except (SyntaxError, ValueError):
        return frozenset()


def imported_packages(tree: ast.AST) -> set[str]:
    """The top-level packages the import statements in `tree` import (wherever they are in it)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def _statements(code: str) -> list[ast.Module]:
    """Top-level statements of `code`, an `import` of several modules split into one per module."""
    found = []
    for node in ast.parse(code).body:
        parts = [ast.Import(names=[name]) for name in node.names] if isinstance(node, ast.Import) else [node]
        found += [ast.fix_missing_locations(ast.Module(body=[part], type_ignores=[])) for part in parts]
    return found


def become_kernel(request: dict[str, Any]) -> None:
    """In the forked child: detach, take the environment and folder the runner gave, run ipykernel."""
    server = os.getppid()
    _settle(request, b"retrain-kernel")
    if request.get("output"):  # what the kernel writes outside its cells goes to its stage's file
        _write_to(request["output"])
    os.environ["JPY_PARENT_PID"] = str(server)
    sys.argv = ["ipykernel_launcher", *request["argv"], f"--IPKernelApp.parent_handle={server}"]
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


def run_call(request: dict[str, Any], reply: int) -> None:
    """In the forked child: call `module:function` with the request's keyword arguments and send back what
    it returns, or what it raised, pickled (workers.py reads it), then exit.

    The answer goes on the reply pipe in one write (whole among the server's lines as long as it is under
    PIPE_BUF, 4 KB); a longer one goes to the file `spill` names, and the reply says so. An exception is
    pickled only when its class is the runner's own (unpickling a library's would import that library in the
    runner, which the worker exists to avoid): otherwise its "Type: message" travels as text."""
    number = request["id"]
    answer: dict[str, Any]
    try:
        _settle(request, b"retrain-worker")
        module, _, name = request["call"].partition(":")
        answer = {"result": getattr(importlib.import_module(module), name)(**request["kwargs"])}
    except BaseException as problem:  # the runner reports it; this process only carries it
        answer = {"failed": f"{type(problem).__name__}: {problem}"[:2000]}
        if type(problem).__module__.startswith("runner."):
            answer["raised"] = problem
    try:
        payload = pickle.dumps(answer)
    except Exception as problem:  # a result or an exception that cannot travel
        failed = answer.get("failed") or f"the worker's result cannot be sent back: {problem}"
        payload = pickle.dumps({"failed": failed})
    line = json.dumps({"id": number, "answer": base64.b64encode(payload).decode("ascii")})
    if len(line) >= select.PIPE_BUF:
        spill = Path(request["spill"])  # private to the runner, read once and removed
        fd = os.open(spill, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(payload)
        line = json.dumps({"id": number, "answer_file": str(spill)})
    os.write(reply, (line + "\n").encode())
    os._exit(0)


def _settle(request: dict[str, Any], name: bytes) -> None:
    """A forked child takes its name, its own process group (the runner signals it and what it starts), the
    folder and environment the runner gave, a fresh random state; stdin, the runner's pipe, is replaced."""
    _call_process(name)  # what `ps` and `top` show: its command line is the server's
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.close(devnull)  # sys.stdin holds nothing buffered: the protocol is read with os.read
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if "numpy" in sys.modules:  # forked children would share the global random state: reseed, as a new one
        sys.modules["numpy"].random.seed()


class _Lines:
    """Lines from a pipe, read unbuffered so that select() sees what is waiting."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = b""
        self.closed = False

    def next(self, timeout: float | None) -> bytes | None:
        """The next whole line; None when none came within `timeout` s (None: no limit) or the pipe closed."""
        while b"\n" not in self.pending:
            if self.closed:
                return None
            if timeout is not None and not select.select([self.fd], [], [], timeout)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.closed = True
                return None
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line


def _write_to(output: str) -> None:
    """Send this process's stdout and stderr (a warm-up's prints go to stderr too) to the file `output`."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


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
