"""A process that runs many pipelines (the test suite, `retrain replay`, a long-lived service) keeps no file
descriptor and no thread of a finished run: kernels' clients, event loops of worker threads and the kernel
server's pipes are all closed when a run ends."""

from __future__ import annotations

import os
import threading

import pytest

from runner.commands import main

pytestmark = pytest.mark.kernel

PIPELINE = """\
version: 1
name: toy
params:
  x: 2
stages:
  first:
    notebook: notebooks/ok.ipynb
  second:
    notebook: notebooks/downstream.ipynb
    needs: [first]
"""


def open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_runs_in_one_process_leave_no_descriptor_and_no_thread_behind(make_project, capsys):
    pipeline = make_project(PIPELINE)
    assert main(["run", str(pipeline), "--no-notify"]) == 0  # the first run makes what stays: a loop, imports
    after_first, threads = open_descriptors(), threading.active_count()
    for _ in range(3):
        assert main(["run", str(pipeline), "--force", "--no-notify"]) == 0, capsys.readouterr().out
    assert open_descriptors() - after_first == set(), "a run left file descriptors open"
    assert threading.active_count() == threads, [thread.name for thread in threading.enumerate()]
