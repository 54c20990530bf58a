"""The kernel machinery, behind one door: the rest of the runner imports from here, never from the modules
inside.

    KernelPool   the kernels of a run, started ahead of their stages (pool.py), by a launcher that starts
                 them the usual way or forks them from a kernel server that did the pipeline's warm-up once
    kept_servers  a block whose runs of one project share that server (replay): the warm-up paid once
    Kernel       one stage's kernel (started.py): wait_ready, kill, shutdown, its jupyter_client manager
    Workers      where the runner's heavy calls run: a worker forked from the kernel server when it imported
                 what the call needs, else this process (workers.py); IN_THIS_PROCESS when there is no run
    WorkerError  what such a call raised, when it is not one of the runner's own exceptions
    WorkerLost   the worker gave no answer
    release_thread_loop   what a thread that used a kernel calls before it ends
    close_channels        how a kernel client is stopped: only what it opened, never raising

Only this folder knows that kernels and workers may be forked (forked.py, server.py).
"""

from runner.engine.kernels.pool import KernelPool, kept_servers
from runner.engine.kernels.started import KERNEL_NAME, Kernel, close_channels, release_thread_loop
from runner.engine.kernels.workers import IN_THIS_PROCESS, WorkerError, WorkerLost, Workers

__all__ = [
    "IN_THIS_PROCESS",
    "KERNEL_NAME",
    "Kernel",
    "KernelPool",
    "WorkerError",
    "WorkerLost",
    "Workers",
    "close_channels",
    "kept_servers",
    "release_thread_loop",
]
