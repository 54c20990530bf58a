"""Stage pages rendered off the critical path: in one background thread while the next stages execute."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from runner.records import StageRecord
from runner.report import pages as report
from runner.secrets import Redactor


@dataclass(frozen=True)
class PageJob:
    """One stage page to render: the executed notebook, where the page goes, how it looks."""

    executed: Path
    html: Path
    title: str
    show_code: bool


class BackgroundRenders:
    """Stage pages rendered in one background thread while the next stages execute.

    The render thread only writes the page; the stage's record (`html`, `timings.render_s`) is updated by
    `collect`, in the main thread, so that run.json is never written from a record being changed.
    """

    def __init__(self, redact: Redactor) -> None:
        self.redact = redact
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="render")
        self._jobs: list[tuple[StageRecord, PageJob, Future[float]]] = []
        self._lock = threading.Lock()  # stages in worker threads submit, the main thread collects

    def submit(self, stage: StageRecord, job: PageJob) -> None:
        with self._lock:
            self._jobs.append((stage, job, self._pool.submit(self._render, job)))

    def collect(self, *, wait_all: bool) -> None:
        """Record the pages rendered so far (all of them, with `wait_all`); a render's error is raised."""
        with self._lock:
            jobs = list(self._jobs)
        for stage, job, future in jobs:
            if not (wait_all or future.done()):
                continue
            with self._lock:
                self._jobs.remove((stage, job, future))
            stage.timings.render_s = future.result()
            stage.html = job.html.name

    def close(self, wait: bool = True) -> None:
        """Wait for the renders still running (no thread writes once the run is over), raising nothing.
        `wait=False` (a cancelled run): the pages not started are dropped, the one being rendered finishes."""
        self._pool.shutdown(wait=True, cancel_futures=not wait)
        for stage, job, future in self._jobs:
            if not future.cancelled() and future.exception() is None:
                stage.timings.render_s, stage.html = future.result(), job.html.name
        self._jobs.clear()

    def _render(self, job: PageJob) -> float:
        started = time.monotonic()
        report.render_stage_html(
            job.executed, job.html, title=job.title, show_code=job.show_code, redact=self.redact
        )
        return time.monotonic() - started
