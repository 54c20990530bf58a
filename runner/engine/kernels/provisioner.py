"""The jupyter_client provisioner that launches a stage's kernel through the run's kernel server (forked.py):
the kernel manager and nbclient see an ordinary local kernel (connection file, ipc sockets, signals to its
process group).

Only a kernel that would have been `<this interpreter> -m ipykernel_launcher ...` is forked; any other
kernel spec is launched the usual way.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable
from typing import Any

from jupyter_client.provisioning.local_provisioner import LocalProvisioner

from runner.engine.kernels.forked import SUPPORTED, ForkedProcess, KernelServer


class ForkProvisioner(LocalProvisioner):
    """Launches the kernel through the run's kernel server when the kernel is this interpreter's ipykernel."""

    server: KernelServer | None = None
    imports: frozenset[str] = frozenset()  # what the stage's notebook imports
    output: str = ""  # where the kernel's own stdout and stderr go ("": the server's)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        if self.server is None or not forkable(cmd) or not self.server.usable:
            return await super().launch_kernel(cmd, **kwargs)
        env = dict(kwargs.get("env") or os.environ)
        cwd = str(kwargs.get("cwd") or os.getcwd())
        forked = self.server.fork(cmd[3:], env, cwd, self.imports, self.output)
        self.process = forked  # type: ignore[assignment]  # Popen-like
        self.pid, self.pgid = 0, None  # the pid comes later; signals go through the process handle
        self.cwd = cwd
        return self.connection_info

    @property
    def forked(self) -> bool:
        return isinstance(self.process, ForkedProcess)

    def warmed_up_by_server(self, warmup: str) -> bool:
        """Whether `warmup` is the server's preload, which was going well when it forked this kernel: the
        kernel then skips it (what the server had not imported yet, the notebook imports when it needs it)."""
        process = self.process
        return (
            isinstance(process, ForkedProcess)
            and self.server is not None
            and warmup == self.server.preload
            and not process.preload_error
        )


def forking(server: KernelServer, imports: frozenset[str], output: str = "") -> Callable[[Any], None]:
    """The hook that makes a kernel manager launch its kernel through `server` (for a notebook that imports
    `imports`): the manager uses this provisioner instead of creating a LocalProvisioner."""

    def prepare(manager: Any) -> None:
        manager.kernel_id = str(uuid.uuid4())
        provisioner = ForkProvisioner(
            kernel_id=manager.kernel_id, kernel_spec=manager.kernel_spec, parent=manager
        )
        provisioner.server, provisioner.imports, provisioner.output = server, imports, output
        manager.provisioner = provisioner

    return prepare


def forkable(cmd: list[str]) -> bool:
    """`<this interpreter> -m ipykernel_launcher ...`: what the server, running this interpreter, can be."""
    return SUPPORTED and cmd[:3] == [sys.executable, "-m", "ipykernel_launcher"]
