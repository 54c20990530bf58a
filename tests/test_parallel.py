"""Parallel stages: independent branches overlap up to `max_parallel`; failures, the cache, interrupts and
kernels behave as in a serial run. Overlap is judged on the times each stage recorded, never on durations."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from runner.engine.execute import ExecutionResult, execute_notebook
from runner.engine.scraps import read_scraps
from runner.secrets import Redactor
from tests.conftest import checked_run as run
from tests.conftest import is_stage_kernel, kernels_alive, spawn_run, temp_files

BRANCHES = """\
    version: 1
    name: branches
    {max_parallel}
    stages:
      left:
        notebook: notebooks/timed.ipynb
        params: {{seconds: {left_seconds}, fail: {left_fails}}}
        inputs: []
      right:
        notebook: notebooks/timed.ipynb
        params: {{seconds: {right_seconds}}}
        inputs: []
      join:
        notebook: notebooks/joins.ipynb
        needs: [left, right]
        inputs: []
    """


def branches(
    make_project,
    max_parallel: int | None = 2,
    left_seconds: float = 2,
    right_seconds: float = 2,
    left_fails: bool = False,
) -> Path:
    return make_project(
        BRANCHES.format(
            max_parallel="" if max_parallel is None else f"max_parallel: {max_parallel}",
            left_seconds=left_seconds,
            right_seconds=right_seconds,
            left_fails="true" if left_fails else "false",
        )
    )


def interval(record: dict, stage: str) -> tuple[float, float]:
    scraps = record["stages"][stage]["scraps"]
    return scraps["started"], scraps["ended"]


def overlap(first: tuple[float, float], second: tuple[float, float]) -> bool:
    return first[0] < second[1] and second[0] < first[1]


@pytest.mark.e2e
def test_independent_branches_overlap_the_join_runs_after_both_and_the_cache_serves_the_unchanged_branch(
    make_project, capsys
):
    pipeline = branches(make_project, max_parallel=2)
    code, record, out = run(capsys, pipeline)
    assert code == 0, out
    left, right = interval(record, "left"), interval(record, "right")
    assert overlap(left, right), (left, right)
    join_started = record["stages"]["join"]["scraps"]["started"]
    assert join_started >= max(left[1], right[1])
    assert list(record["stages"]) == ["left", "right", "join"]  # topological order, whichever finished first
    for name in ("left", "right", "join"):
        stage = record["stages"][name]
        assert stage["status"] == "succeeded" and stage["html"] == f"{name}.html"
        assert stage["timings"]["render_s"] > 0  # rendered in the background, recorded all the same

    # the same project again with one branch changed: the other is served from the cache
    pipeline.write_text(pipeline.read_text().replace("seconds: 2, fail", "seconds: 0.2, fail"))
    code, second, out = run(capsys, pipeline)
    assert code == 0, out
    statuses = {name: stage["status"] for name, stage in second["stages"].items()}
    assert statuses == {"left": "succeeded", "right": "cached", "join": "succeeded"}
    assert second["stages"]["right"]["cached_from"] == record["run_id"]
    run_dir = pipeline.parent / "reports" / second["run_id"]
    assert (run_dir / "right.html").is_file() and (run_dir / "left.html").is_file()


@pytest.mark.e2e
def test_max_parallel_one_runs_the_branches_one_after_the_other(make_project, capsys):
    code, record, out = run(capsys, branches(make_project, max_parallel=1, left_seconds=1, right_seconds=1))
    assert code == 0, out
    left, right = interval(record, "left"), interval(record, "right")
    assert not overlap(left, right) and left[1] <= right[0], (left, right)


@pytest.mark.e2e
def test_the_command_line_overrides_max_parallel(make_project, capsys):
    pipeline = branches(make_project, max_parallel=2, left_seconds=1, right_seconds=1)
    code, record, out = run(capsys, pipeline, "--max-parallel", "1")
    assert code == 0, out
    assert not overlap(interval(record, "left"), interval(record, "right"))
    from runner.commands import main

    with pytest.raises(SystemExit) as usage:  # argparse's usage error: exit 2
        main(["run", str(pipeline), "--max-parallel", "0"])
    assert usage.value.code == 2
    assert "must be 1 or more" in capsys.readouterr().err


@pytest.mark.unit
def test_max_parallel_must_be_at_least_one(make_project, capsys):
    from runner.commands import main

    pipeline = branches(make_project, max_parallel=0)
    assert main(["check", str(pipeline)]) == 2
    assert "max_parallel" in capsys.readouterr().err


@pytest.mark.e2e
def test_a_failing_branch_skips_the_join_and_lets_the_other_branch_finish(make_project, capsys):
    pipeline = branches(make_project, max_parallel=2, left_seconds=0.5, right_seconds=3, left_fails=True)
    code, record, out = run(capsys, pipeline)
    assert code == 1, out
    stages = record["stages"]
    assert stages["left"]["status"] == "failed" and stages["left"]["failure"]["ename"] == "RuntimeError"
    assert stages["right"]["status"] == "succeeded"  # it was running when left failed: it finished
    right_started = stages["right"]["scraps"]["started"]
    assert right_started < stages["right"]["scraps"]["ended"]
    assert stages["join"]["status"] == "skipped"
    assert stages["join"]["skip_reason"] == "not run: stage 'left' failed"


@pytest.mark.kernel
def test_execute_notebook_runs_in_several_threads_at_once(make_project, monkeypatch, tmp_path):
    """Each thread its own kernel and event loop; each save through its own redacting handler."""
    root = branches(make_project).parent
    monkeypatch.setenv("RETRAIN_TEST_TOKEN", "tok-parallel-7f3a")  # the kernels inherit it and print it
    redact = Redactor.from_environ(["RETRAIN_TEST_TOKEN"], {"RETRAIN_TEST_TOKEN": "tok-parallel-7f3a"})
    results: dict[str, ExecutionResult] = {}

    def execute(name: str) -> None:
        output = tmp_path / f"{name}.ipynb"
        results[name] = execute_notebook(
            root / "notebooks" / "timed.ipynb",
            output,
            {"seconds": 4},  # long enough to overlap while the other threads' kernels start
            cwd=root,
            timeout_s=120,
            redact=redact,
        )

    threads = [threading.Thread(target=execute, args=(name,)) for name in ("one", "two", "three")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(result.failure is None for result in results.values()), results
    spans = {}
    for name in results:
        output = tmp_path / f"{name}.ipynb"
        text = output.read_text()
        assert "tok-parallel-7f3a" not in text and "token:" in text  # printed, and redacted on the way
        scraps = read_scraps(output)
        spans[name] = (scraps["started"], scraps["ended"])
    assert overlap(spans["one"], spans["two"]) and overlap(spans["two"], spans["three"]), spans
    assert not kernels_alive()


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGTERM])
def test_interrupt_mid_parallel_cancels_both_branches(make_project, signum):
    pipeline = branches(make_project, max_parallel=2, left_seconds=60, right_seconds=60)
    process = spawn_run(pipeline)
    deadline = time.monotonic() + 90
    kernels: list[psutil.Process] = []
    while len(kernels) < 2 and time.monotonic() < deadline:  # wait until both branches have a kernel
        time.sleep(0.2)
        kernels = [
            child for child in psutil.Process(process.pid).children(recursive=True) if is_stage_kernel(child)
        ]
    assert len(kernels) >= 2, "the two branches never ran at the same time"
    time.sleep(3)  # into their cells
    process.send_signal(signum)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 130, out
    run_json = next((pipeline.parent / "reports").glob("*/run.json"))
    record = json.loads(run_json.read_text())
    assert record["status"] == "cancelled"
    for name in ("left", "right"):
        assert record["stages"][name]["failure"]["kind"] == "cancelled", record["stages"][name]
        assert (run_json.parent / f"{name}.ipynb").is_file()
    assert record["stages"]["join"]["status"] == "skipped"
    assert "cancelled" in out.strip().splitlines()[-1]
    assert temp_files(run_json.parent.parent) == []
    time.sleep(0.5)
    assert not any(kernel.is_running() and kernel.status() != psutil.STATUS_ZOMBIE for kernel in kernels)
