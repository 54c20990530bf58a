"""When each stage runs: stages whose `needs` are done run at the same time, up to `max_parallel`.

The scheduler decides the order of things and nothing else. What a stage does is the caller's: `start`
decides it in the calling (main) thread (skipped, served from the cache: settled at once; or returns the
work that executes it), the work runs in a worker thread, and `finish` records the outcome, again in the
main thread. So the observer, run.json, the cache index and the warm kernels are only ever touched by one
thread; a worker fills in its own stage's record and nothing else.

A pipeline that cannot overlap anything (`max_parallel` 1, or stages that form a chain) executes each stage
in the main thread, as it always did: Ctrl-C then interrupts the stage directly. Otherwise Ctrl-C and SIGTERM
still arrive in the main thread, which stops the running stages through `on_interrupt` (their kernels are
killed), waits for their threads, and re-raises.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from runner.engine.kernels import release_thread_loop

Work = Callable[[], None]


def is_chain(order: Sequence[str], needs: Mapping[str, Sequence[str]]) -> bool:
    """Whether each stage needs the one before it (directly or not): then no two stages can overlap."""
    upstream: dict[str, set[str]] = {}
    for name in order:
        upstream[name] = set(needs.get(name, ()))
        for need in needs.get(name, ()):
            upstream[name] |= upstream.get(need, set())
    return all(before in upstream[after] for before, after in itertools.pairwise(order))


def run_stages(
    order: Sequence[str],
    needs: Mapping[str, Sequence[str]],
    max_parallel: int,
    *,
    start: Callable[[str], Work | None],
    finish: Callable[[str], None],
    barriers: Collection[str] = (),
    on_interrupt: Callable[[], None] = lambda: None,
) -> None:
    """Run every stage of `order` once its `needs` are settled, at most `max_parallel` at once.

    Stages are considered in `order` whenever a slot is free, so with one slot the run is exactly the
    serial run. A stage in `barriers` (a deploy stage: it waits for the model's release) starts only when
    every stage before it has settled.
    """
    if max_parallel <= 1 or is_chain(order, needs):
        for name in order:
            work = start(name)
            if work is not None:
                work()
                finish(name)
        return
    settled: set[str] = set()
    pending = list(order)
    running: dict[Future[None], str] = {}

    def ready(name: str) -> bool:
        if name in barriers:
            return not running and all(before in settled for before in order[: order.index(name)])
        return all(need in settled for need in needs.get(name, ()))

    with ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="stage") as pool:
        try:
            while pending or running:
                considered = len(pending)
                for name in list(pending):
                    if len(running) >= max_parallel:
                        break
                    if not ready(name):
                        continue
                    pending.remove(name)
                    work = start(name)
                    if work is None:
                        settled.add(name)
                    else:
                        running[pool.submit(_in_own_event_loop, work)] = name
                if not running:
                    if len(pending) == considered:  # cannot happen with `order` topological: never spin
                        raise RuntimeError(f"no stage can start among {pending}")
                    continue  # the stages considered were settled at once: consider the rest
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda future: order.index(running[future])):
                    name = running.pop(future)
                    future.result()  # a bug in the work surfaces here, in the main thread
                    finish(name)
                    settled.add(name)
        except BaseException:
            on_interrupt()  # Ctrl-C, SIGTERM, or an error: the running stages stop; their threads end
            wait(running)
            raise


def _in_own_event_loop(work: Work) -> None:
    """Run `work` in this worker thread, then close the event loop jupyter_client made for the thread
    (one per thread: a stage in another thread never shares it)."""
    try:
        work()
    finally:
        release_thread_loop()
