"""Kernels forked by the run's kernel server (runner/engine/kernels/).

A forked kernel must be indistinguishable, from inside a notebook, from one started the usual way except that
the pipeline's warm-up imports are already done: its own process, a fresh namespace, its own random state,
the project folder as working directory, the runner's environment, the inline matplotlib backend. And no
kernel, nor the server, outlives the run, even when the runner is killed.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from runner.commands import main
from runner.engine.kernels import forked, kept_servers
from runner.engine.kernels.forked import ForkedProcess, KernelServer, KernelServerError, WorkerError
from runner.engine.kernels.server import Preload, preloaded_packages
from tests.conftest import eventually, is_stage_kernel, kernels_alive, kernels_in, spawn_run

PIPELINE = """\
version: 1
name: inside
# what a warm-up prints (here, a line that looks like a reply) does not disturb the server's replies
warmup: "import colorsys, numpy\\nprint('{\\\"id\\\": 1}')\\nwarmup_variable = 1"
stages:
  one:  # the server forks its kernel at once, before the warm-up is done; the warm-up goes on meanwhile
    notebook: notebooks/sleeps.ipynb
    params: {seconds: 3}
  two:
    notebook: notebooks/inside.ipynb
    needs: [one]
  three:
    notebook: notebooks/inside.ipynb
    needs: [two]
"""


def scraps_of(pipeline: Path) -> tuple[dict, dict[str, dict]]:
    run_json = max((pipeline.parent / "reports").glob("*/run.json"))
    record = json.loads(run_json.read_text())
    return record, {name: stage["scraps"] for name, stage in record["stages"].items()}


@pytest.mark.unit
def test_ipykernel_and_scrapbook_are_preloaded_before_any_warmup() -> None:
    """Every stage records its results with scrapbook: its import (pandas, pyarrow, papermill) is paid once
    in the server, never by each kernel, and a worker reads the scraps (the runner never imports it)."""
    packages = [sorted(imported) for _, imported in Preload("import colorsys, numpy").statements]
    assert packages == [["ipykernel"], ["scrapbook"], ["colorsys"], ["numpy"]]
    assert preloaded_packages("") == {"ipykernel", "scrapbook"}
    assert preloaded_packages("import lightgbm.sklearn") == {"ipykernel", "scrapbook", "lightgbm"}
    assert preloaded_packages("import (") == frozenset()  # not Python: the server runs none of it
    assert not Preload("import (").pending and Preload("import (").error.startswith("SyntaxError")


@pytest.mark.unit
def test_a_kernel_that_ends_between_poll_and_signal_is_not_signalled_and_nothing_raises(monkeypatch) -> None:
    """jupyter_client interrupts a kernel before it shuts it down: a kernel that ended (and was reaped by the
    server) after `poll()` looked has no process or group left; as with Popen, signalling it does nothing,
    where it raised ProcessLookupError in the shutdown thread of a run."""
    gone = next(pid for pid in range(4_000_000, 3_000_000, -1) if not forked._alive(pid))
    monkeypatch.setattr(forked, "_alive", lambda pid: True)  # poll() looked while it still ran
    process = ForkedProcess()
    process.started.set_result(gone)
    process.send_signal(signal.SIGINT)
    process.terminate()
    assert process.returncode is None  # what ended it is the server's to tell


@pytest.mark.e2e
def test_forked_kernels_start_with_the_warmup_done_and_a_fresh_namespace(make_project, capsys, monkeypatch):
    monkeypatch.setenv("RETRAIN_TEST_VALUE", "from the runner's environment")
    pipeline = make_project(PIPELINE)
    assert main(["run", str(pipeline), "--no-notify"]) == 0, capsys.readouterr().out
    assert not kernels_alive(), "a kernel or the kernel server outlived the run"
    record, scraps = scraps_of(pipeline)

    assert all(stage["timings"]["forked"] for stage in record["stages"].values()), record["stages"]
    del scraps["one"]
    for name, found in scraps.items():
        assert found["preloaded"] is True, f"{name}: the warm-up's import is not done"
        assert found["leaked"] is False, f"{name}: the warm-up's variable reached the notebook"
        assert found["cwd"] == str(pipeline.parent)
        assert found["env"] == "from the runner's environment"
        assert found["backend"] == "module://matplotlib_inline.backend_inline"
    assert len({found["pid"] for found in scraps.values()}) == 2, "a kernel served two stages"
    assert len({found["random"] for found in scraps.values()}) == 2, "forked kernels share a random state"


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("warmup", "imported"),
    [
        ("import numpy\nimport colorsys", {"numpy_preloaded": True, "preloaded": False}),
        ("import colorsys\nimport numpy", {"numpy_preloaded": True, "preloaded": True}),
    ],
)
def test_a_kernel_its_stage_waits_for_is_forked_once_its_notebooks_imports_are_done(
    make_project, capsys, warmup, imported
):
    """The first stage waits for its kernel: the server forks it as soon as it has run the warm-up's
    statements up to the last one that imports a package the notebook imports (numpy here; colorsys is not
    imported by the notebook), and goes on with the rest of the warm-up meanwhile."""
    pipeline = make_project(f"""\
        version: 1
        name: first
        warmup: {json.dumps(warmup)}
        stages:
          first:
            notebook: notebooks/inside.ipynb
        """)
    assert main(["run", str(pipeline), "--no-notify"]) == 0, capsys.readouterr().out
    record, scraps = scraps_of(pipeline)
    assert record["stages"]["first"]["timings"]["forked"] is True
    assert {name: scraps["first"][name] for name in imported} == imported


@pytest.mark.e2e
def test_without_the_kernel_server_kernels_start_the_usual_way(make_project, capsys, monkeypatch):
    monkeypatch.setenv("RETRAIN_FORK_KERNELS", "0")
    pipeline = make_project(PIPELINE)
    assert main(["run", str(pipeline), "--no-notify"]) == 0, capsys.readouterr().out
    record, scraps = scraps_of(pipeline)
    assert not any(stage["timings"]["forked"] for stage in record["stages"].values())
    assert all(stage["timings"]["warm_kernel"] for name, stage in record["stages"].items() if name != "one")
    # the warm-up ran in each kernel instead: imports done, and its names in the notebook's namespace
    assert all(found["preloaded"] and found["leaked"] for name, found in scraps.items() if name != "one")
    assert not kernels_alive()


@pytest.mark.e2e
def test_a_warmup_that_fails_in_the_server_falls_back_to_usual_kernels(make_project, capsys):
    pipeline = make_project(PIPELINE.replace("import colorsys, numpy", "import colorsys, not_a_module"))
    assert main(["run", str(pipeline), "--no-notify"]) == 0, capsys.readouterr().out
    record, _ = scraps_of(pipeline)
    assert {stage["status"] for stage in record["stages"].values()} == {"succeeded"}
    # the kernels forked once the warm-up had failed run it themselves, fail, and are replaced
    assert not any(record["stages"][name]["timings"]["forked"] for name in ("two", "three"))
    assert not kernels_alive()


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGKILL])
def test_the_kernel_server_and_its_kernels_die_with_the_runner(make_project, signum):
    pipeline = make_project("""\
        version: 1
        name: sleepy
        warmup: "import json"
        stages:
          nap:
            notebook: notebooks/sleeps.ipynb
        """)
    process = spawn_run(pipeline)
    deadline = time.monotonic() + 90
    kernels: list[psutil.Process] = []
    while not kernels and time.monotonic() < deadline:
        time.sleep(0.2)
        kernels = [
            child for child in psutil.Process(process.pid).children(recursive=True) if is_stage_kernel(child)
        ]
    assert kernels, "the stage's kernel never started"
    assert kernels[0].name() == "retrain-kernel", "the kernel was not forked by the kernel server"
    time.sleep(1)
    process.send_signal(signum)  # no chance to clean up: the server sees its stdin close
    process.communicate(timeout=60)
    assert eventually(lambda: not kernels_in(pipeline.parent), 30), (
        "the server or a kernel outlived the runner"
    )


SLOW_IMPORT = """\
import os, time
time.sleep(1)
IMPORTED_BY = os.getpid()
def imported_by():
    return IMPORTED_BY
"""


@pytest.mark.kernel
def test_a_worker_forked_from_the_server_answers_raises_dies_or_times_out(tmp_path):
    (tmp_path / "slow_import.py").write_text(SLOW_IMPORT)  # the server's folder is on its sys.path
    server = KernelServer(tmp_path, "import json", for_workers="import slow_import")
    try:
        # a call that needs nothing is forked at once, while the server still imports: it imports for itself;
        # one that needs what the server imports is forked once the server did, and shares its copy
        importer = "slow_import:imported_by"
        assert server.call(importer, {}, tmp_path, 60) != server.process.pid
        assert server.call(importer, {}, tmp_path, 60, needs="slow_import") == server.process.pid
        assert server.call("json:dumps", {"obj": [1, "two"]}, tmp_path, 60) == '[1, "two"]'
        long = "x" * 20_000  # more than one pipe write: it comes back through a file
        assert server.call("json:loads", {"s": json.dumps(long)}, tmp_path, 60) == long
        with pytest.raises(WorkerError, match=r"^JSONDecodeError: "):
            server.call("json:loads", {"s": "{"}, tmp_path, 60)
        with pytest.raises(KernelServerError, match=r"ended without an answer \(exit code -6\)"):
            server.call("os:abort", {}, tmp_path, 60)  # SIGABRT: the worker dies mid-call
        started = time.monotonic()
        with pytest.raises(KernelServerError, match="did not answer within 1 s"):
            server.call("subprocess:run", {"args": ["sleep", "30"]}, tmp_path, 1)
        assert time.monotonic() - started < 10
        assert server.call("json:dumps", {"obj": "still serving"}, tmp_path, 60) == '"still serving"'
    finally:
        server.close()
    assert not server._spills.exists(), "the folder of long results outlived the server"
    assert eventually(lambda: not kernels_alive() and not _sleeping(), 10), "a worker outlived the server"


def _sleeping() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[:2] == ["sleep", "30"]]


SAYS = """\
import sys, time


def say(text):
    sys.stderr.write(text)
    sys.stderr.flush()


def sleep(seconds):
    time.sleep(seconds)
"""


@pytest.mark.kernel
def test_a_kept_server_writes_where_the_next_run_says_and_its_release_ends_what_the_run_left(tmp_path):
    """A server kept for the next run (`kept_servers`): its workers write to the file the next run gives, and
    `release()` ends what the previous run left running, while the server goes on serving."""
    (tmp_path / "says.py").write_text(SAYS)
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    server = KernelServer(tmp_path, "import json", output=first)
    try:
        server.call("says:say", {"text": "for the first run\n"}, tmp_path, 60)
        assert eventually(lambda: not server._forked, 10)  # its worker has exited, and the server said so
        failed: list[BaseException] = []

        def sleeps() -> None:
            try:
                server.call("says:sleep", {"seconds": 60}, tmp_path, 120)
            except KernelServerError as error:
                failed.append(error)

        left = threading.Thread(target=sleeps)
        left.start()
        # forked, and its pid told (a run's calls have their answer before it ends: the test must wait)
        assert eventually(lambda: server._forked, 30), "the long call never started"
        started = time.monotonic()
        server.release()
        left.join(timeout=30)
        assert failed and "ended without an answer" in str(failed[0]) and time.monotonic() - started < 10
        server.write_to(second)
        server.call("says:say", {"text": "for the second run\n"}, tmp_path, 60)
        assert server.usable
    finally:
        server.close()
    assert first.read_text() == "for the first run\n" and second.read_text() == "for the second run\n"


ONE_STAGE = """\
version: 1
name: kept
warmup: "import colorsys, numpy"
stages:
  only:
    notebook: notebooks/inside.ipynb
"""


@pytest.mark.e2e
def test_runs_within_kept_servers_share_one_server_and_nothing_outlives_the_block(make_project, capsys):
    """`retrain replay`'s runs: the second run's kernel is forked by the server the first run started, after
    the warm-up it ran once; a run's kernels still end with the run, and the server ends with the block."""
    pipeline = make_project(ONE_STAGE)
    seen = []
    with kept_servers():
        for _ in range(2):
            assert main(["run", str(pipeline), "--no-notify"]) == 0, capsys.readouterr().out
            alive = kernels_alive()
            assert not [process for process in alive if is_stage_kernel(process)], "a kernel outlived its run"
            seen.append({process.pid for process in alive if process.name() == "retrain-kserver"})
    assert len(seen[0]) == 1 and seen[1] == seen[0], seen
    assert eventually(lambda: not kernels_alive(), 10), "the kept server outlived the block"
    runs = [json.loads(path.read_text()) for path in sorted((pipeline.parent / "reports").glob("*/run.json"))]
    assert [run["stages"]["only"]["timings"]["forked"] for run in runs] == [True, True]
    assert all(run["stages"]["only"]["scraps"]["preloaded"] for run in runs)
