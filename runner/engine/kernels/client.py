"""The client a stage's notebook runs through: jupyter_client's asynchronous client, without a heartbeat.

The kernel manager tells whether the kernel lives (it watches the process), so the heartbeat channel is of no
use to a stage; and its thread has a race. Stopped before it first ran (a Ctrl-C or SIGTERM in the moments a
stage's client opens its channels, all the likelier on a loaded machine), it marks itself running again and
re-creates its socket without pause, each old one lingering a second: thousands of sockets, until ZeroMQ
refuses one ("Too many open files"), which killed the channel's thread and then the stage's own cleanup.
Imported only when a kernel starts (by name, from started.py).
"""

from __future__ import annotations

from jupyter_client.asynchronous.client import AsyncKernelClient


class StageClient(AsyncKernelClient):
    """AsyncKernelClient whose channels never include the heartbeat (liveness is the manager's to tell)."""

    def start_channels(
        self,
        shell: bool = True,
        iopub: bool = True,
        stdin: bool = True,
        hb: bool = True,
        control: bool = True,
    ) -> None:
        super().start_channels(shell=shell, iopub=iopub, stdin=stdin, hb=False, control=control)
