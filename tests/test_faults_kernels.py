"""A kernel killed between the moment it is ready and its stage's first cell (the fault campaign's random
kills found it): the stage fails with a dead kernel, never as a bug in the runner (exit 70)."""

from __future__ import annotations

import pytest

from runner.engine.execute import execute_notebook
from runner.engine.kernels import Kernel, close_channels
from runner.secrets import NO_SECRETS
from tests.conftest import ASSETS, eventually

pytestmark = pytest.mark.kernel

# a client's channels, as a kernel's connection file gives them (ipc: files named <ip>-<port>)
CHANNELS = ("shell", "iopub", "stdin", "hb", "control")
PORTS = {f"{name}_port": number for number, name in enumerate(CHANNELS, 1)}


def test_a_kernel_killed_after_it_was_ready_fails_its_stage_as_a_dead_kernel(tmp_path):
    kernel = Kernel(tmp_path)
    kernel.wait_ready()
    kernel.kill()
    assert eventually(lambda: not kernel.manager.is_alive(), 30)
    result = execute_notebook(
        ASSETS / "notebooks" / "ok.ipynb",
        tmp_path / "ok.ipynb",
        {},
        cwd=tmp_path,
        timeout_s=120,
        redact=NO_SECRETS,
        kernel=kernel,
    )
    assert result.failure is not None and result.failure.kind == "dead_kernel", result.failure
    assert (tmp_path / "ok.ipynb").is_file()  # the notebook saved, flagged where it stopped


def test_a_client_stopped_while_it_opens_its_channels_opens_nothing_more_and_never_raises(tmp_path):
    """A SIGTERM in a stage's first second stops its client while it opens its channels. jupyter_client's
    stop_channels opens each channel not opened yet before closing it, and a socket ZeroMQ cannot make
    ("Too many open files") turned the cancelled run into a bug (exit 70): only what is open is closed."""
    import zmq
    import zmq.asyncio
    from jupyter_client.asynchronous import AsyncKernelClient

    context = zmq.asyncio.Context()
    context.max_sockets = 2  # room for the two channels opened before the signal: the next socket fails
    client = AsyncKernelClient(context=context, transport="ipc", ip=str(tmp_path / "kernel"), **PORTS)
    shell, iopub = client.shell_channel, client.iopub_channel
    with pytest.raises(zmq.ZMQError, match="Too many open files"):
        client.stdin_channel  # noqa: B018  # what stop_channels reaches next: a new socket
    close_channels(client)
    assert not shell.is_alive() and not iopub.is_alive()
    assert not client.channels_running  # the channels it had not opened stay unopened
    context.term()


def test_a_client_whose_context_keeps_a_socket_nothing_closes_is_stopped_within_a_second(tmp_path):
    """A signal that comes between ZeroMQ making a socket and pyzmq tracking it leaves a socket that the
    context's end waits for: the cancelled run hung there for good (the campaign's SIGTERMs found it)."""
    import time

    import zmq
    from jupyter_client.asynchronous import AsyncKernelClient

    client = AsyncKernelClient(transport="ipc", ip=str(tmp_path / "kernel"), shell_port=1)
    shell = client.shell_channel  # the client made its own context: stopping the client ends it
    untracked = zmq.Context.shadow(client.context.underlying).socket(zmq.REQ)  # not the client's to close
    started = time.monotonic()
    close_channels(client)
    assert time.monotonic() - started < 3, "stopping the client waited for a socket nothing closes"
    assert not shell.is_alive()
    untracked.close(linger=0)  # the context's end, waiting in its thread, now completes
    assert eventually(lambda: client.context.closed, 10)


def test_a_stage_client_opens_no_heartbeat_channel(tmp_path):
    """jupyter_client's heartbeat thread, stopped before it first ran (a signal while a stage's client opens
    its channels), re-creates its socket without pause until ZeroMQ refuses one ("Too many open files"); the
    kernel manager tells whether the kernel lives, so a stage's client has no such thread."""
    import threading

    from jupyter_client.channels import HBChannel

    from runner.engine.kernels.client import StageClient

    client = StageClient(transport="ipc", ip=str(tmp_path / "kernel"), **PORTS)
    client.start_channels()
    try:
        assert client.channels_running
        assert not [thread for thread in threading.enumerate() if isinstance(thread, HBChannel)]
    finally:
        close_channels(client)
    assert not client.channels_running
