"""A process that runs many pipelines (the test suite, `retrain replay`, a long-lived service) keeps no file
descriptor and no thread of a finished run: kernels' clients, event loops of worker threads and the kernel
server's pipes are all closed when a run ends; so are the registry's connections and the Slack message's,
whether MLflow's calls run in this process or in workers."""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runner.commands import main
from tests.conftest import add_drop, make_drops_project

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
    """This process's open descriptors, each as "number -> what it is" (a file, a socket, a pipe)."""
    found = set()
    for number in os.listdir("/proc/self/fd"):
        try:
            found.add(f"{number} -> {os.readlink(f'/proc/self/fd/{number}')}")
        except OSError:  # the descriptor listdir itself used, closed meanwhile
            continue
    return found


def test_runs_in_one_process_leave_no_descriptor_and_no_thread_behind(make_project, capsys):
    pipeline = make_project(PIPELINE)
    assert main(["run", str(pipeline), "--no-notify"]) == 0  # the first run makes what stays: a loop, imports
    after_first, threads = open_descriptors(), threading.active_count()
    for _ in range(2):  # a leak of every run grows run by run; one of only the second run shows too
        assert main(["run", str(pipeline), "--force", "--no-notify"]) == 0, capsys.readouterr().out
    assert open_descriptors() - after_first == set(), "a run left file descriptors open"
    assert threading.active_count() == threads, [thread.name for thread in threading.enumerate()]


class _Accepting(BaseHTTPRequestHandler):
    """A Slack webhook that accepts every message."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        return None


# the registry's calls run in the kernel server's workers; without a kernel server, in the runner's process
@pytest.mark.parametrize("fork", ["0", "1"], ids=["registry in this process", "registry in workers"])
def test_model_runs_with_the_registry_and_slack_leave_nothing_behind(tmp_path, monkeypatch, capsys, fork):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RETRAIN_FORK_KERNELS", fork)
    webhook = ThreadingHTTPServer(("127.0.0.1", 0), _Accepting)
    serving = threading.Thread(target=webhook.serve_forever, daemon=True)
    serving.start()
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"http://127.0.0.1:{webhook.server_port}/hook")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    pipeline, _ = make_drops_project(tmp_path)
    try:
        assert main(["run", str(pipeline)]) == 0, capsys.readouterr().out  # MLflow's imports, pools, a loop
        after_first, threads = open_descriptors(), threading.active_count()
        # a run with a champion: it registers, compares, promotes and smoke-checks a version, and tells Slack;
        # what a run leaves grows run by run, so one such run shows it
        add_drop(pipeline, 0)
        assert main(["run", str(pipeline)]) == 0, capsys.readouterr().out
        assert "slack: sent" in capsys.readouterr().out
        assert open_descriptors() - after_first == set(), "a run left file descriptors open"
        assert threading.active_count() == threads, [thread.name for thread in threading.enumerate()]
    finally:
        webhook.shutdown()
        webhook.server_close()
