"""Whole runs on purpose-built notebooks: outcomes, exit codes, run folders and the last lines printed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from runner.commands import main
from tests.conftest import assert_reports_readable, checked_run, spawn_run, temp_files

pytestmark = pytest.mark.e2e


run = checked_run


def one_stage(make_project, notebook: str, extra: str = "") -> Path:
    return make_project(f"""\
        version: 1
        name: toy
        stages:
          only:
            notebook: notebooks/{notebook}
        {extra}""")


def test_success_injects_parameters_and_writes_the_run_folder(make_project, capsys):
    pipeline = make_project("""\
        version: 1
        name: toy
        params: {x: 21}
        stages:
          first:
            notebook: notebooks/ok.ipynb
            gates: ["y == 42", "mode == 'evaluate'"]
          second:
            notebook: notebooks/downstream.ipynb
            needs: [first]
            gates: ["z < first.y"]
        """)
    code, record, out = run(capsys, pipeline, "--mode", "evaluate", "--trigger", "schedule")
    assert code == 0, out
    assert (
        record["status"] == "succeeded" and record["trigger"] == "schedule" and record["mode"] == "evaluate"
    )
    first = record["stages"]["first"]
    assert first["scraps"]["y"] == 42
    assert first["scraps"]["run_id"] == record["run_id"]
    assert first["scraps"]["cwd"] == str(pipeline.parent)  # the kernel works in the project root
    assert [gate["passed"] for gate in first["gates"]] == [True, True]
    assert first["gates"][0]["values"] == {"y": 42}
    run_dir = pipeline.parent / "reports" / record["run_id"]
    assert (run_dir / "products" / "ok.txt").read_text() == f"{record['run_id']} evaluate"
    for name in ("first", "second"):
        assert (run_dir / f"{name}.ipynb").is_file() and (run_dir / f"{name}.html").is_file()
        assert record["stages"][name]["status"] == "succeeded"
    timings = first["timings"]
    assert timings["kernel_start_s"] > 0 and timings["execute_s"] > 0 and timings["render_s"] > 0
    assert out.strip().splitlines()[-1].startswith("succeeded in ")
    assert f"reports/{record['run_id']}/index.html" in out.strip().splitlines()[-1]


def test_raising_cell_fails_the_stage_and_skips_the_rest(make_project, capsys):
    pipeline = make_project("""\
        version: 1
        name: toy
        stages:
          boom:
            notebook: notebooks/raises.ipynb
          after:
            notebook: notebooks/downstream.ipynb
            needs: [boom]
        """)
    code, record, out = run(capsys, pipeline)
    assert code == 1
    boom = record["stages"]["boom"]
    assert record["status"] == "failed" and boom["status"] == "failed"
    assert boom["failure"]["ename"] == "ValueError" and boom["failure"]["evalue"] == "boom: x was 1"
    assert boom["error"] == "stage 'boom' failed: ValueError: boom: x was 1 (in cell [3])"
    assert "\x1b" not in json.dumps(record)
    assert boom["scraps"] == {"before": 1}  # what it recorded before failing is kept
    assert record["stages"]["after"]["status"] == "skipped"
    assert record["stages"]["after"]["skip_reason"] == "not run: stage 'boom' failed"
    executed = nbformat.read(pipeline.parent / "reports" / record["run_id"] / "boom.ipynb", as_version=4)
    assert executed.metadata.papermill.exception is True
    assert "Stage boom failed: ValueError: boom: x was 1 (in cell [3])." in out


def test_sys_exit_zero_ends_the_stage_early_and_successfully(make_project, capsys):
    code, record, _ = run(capsys, one_stage(make_project, "sysexit0.ipynb"))
    assert code == 0
    assert record["stages"]["only"]["scraps"] == {"before_exit": 1}


def test_timeout_fails_the_stage_and_marks_the_notebook(make_project, capsys):
    pipeline = one_stage(make_project, "sleeps.ipynb").parent / "pipeline.yaml"
    pipeline.write_text(pipeline.read_text().replace("sleeps.ipynb", "sleeps.ipynb\n    timeout: 3"))
    code, record, _out = run(capsys, pipeline)  # the cell sleeps 60 s
    stage = record["stages"]["only"]
    assert code == 1 and stage["failure"]["kind"] == "timeout"
    assert "timed out after 3 s" in stage["error"]
    executed = nbformat.read(pipeline.parent / "reports" / record["run_id"] / "only.ipynb", as_version=4)
    assert "did not finish" in executed.cells[0].source
    assert executed.metadata.papermill.exception is True


def test_dead_kernel_fails_the_stage(make_project, capsys):
    code, record, _ = run(capsys, one_stage(make_project, "dies.ipynb"))
    stage = record["stages"]["only"]
    assert code == 1 and stage["failure"]["kind"] == "dead_kernel"
    assert "kernel died" in stage["error"]


@pytest.mark.parametrize(
    ("notebook", "gate", "detail"),
    [
        ("no_scrap.ipynb", "y == 2", "scrap 'y' was not recorded by stage 'only'"),
        ("nan_scrap.ipynb", "score > 0.5", "NaN"),
    ],
)
def test_missing_scrap_or_nan_fails_the_gate(make_project, capsys, notebook, gate, detail):
    pipeline = one_stage(make_project, notebook)
    pipeline.write_text(pipeline.read_text() + f'    gates: ["{gate}"]\n')
    code, record, _out = run(capsys, pipeline)
    assert code == 3 and record["status"] == "gate_failed"
    result = record["stages"]["only"]["gates"][0]
    assert result["passed"] is False and detail in result["detail"]


def test_failed_gate_names_threshold_and_value_in_the_last_lines(make_project, capsys):
    pipeline = make_project("""\
        version: 1
        name: toy
        params: {threshold: 1}
        stages:
          first:
            notebook: notebooks/ok.ipynb
            gates: ["y >= params.threshold"]
          second:
            notebook: notebooks/downstream.ipynb
            needs: [first]
        """)
    code, record, out = run(capsys, pipeline, "-p", "threshold=100")
    assert code == 3
    assert record["stages"]["second"]["status"] == "skipped"
    last = out.strip().splitlines()[-3:]
    assert any("y >= params.threshold" in line and "100" in line and "y = 2" in line for line in last), last
    assert last[-1].startswith("gate_failed in ")


def test_only_runs_the_stage_and_what_it_needs(make_project, capsys):
    pipeline = make_project("""\
        version: 1
        name: toy
        stages:
          first:
            notebook: notebooks/ok.ipynb
          second:
            notebook: notebooks/downstream.ipynb
            needs: [first]
          unrelated:
            notebook: notebooks/sysexit0.ipynb
        """)
    code, record, _ = run(capsys, pipeline, "--only", "second")
    assert code == 0
    assert [record["stages"][name]["status"] for name in ("first", "second", "unrelated")] == [
        "succeeded",
        "succeeded",
        "skipped",
    ]
    assert main(["run", str(pipeline), "--only", "secnd"]) == 2
    assert "did you mean 'second'?" in capsys.readouterr().err


def test_notebook_without_parameters_cell_runs_but_refuses_parameters(make_project, capsys):
    pipeline = one_stage(make_project, "no_parameters.ipynb")
    code, record, _ = run(capsys, pipeline)
    assert code == 0 and record["stages"]["only"]["scraps"] == {"done": True}
    assert main(["run", str(pipeline), "-p", "x=1"]) == 2
    assert "unknown parameter 'x'" in capsys.readouterr().err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupt_cancels_the_run_and_keeps_the_evidence(make_project, signum):
    pipeline = one_stage(make_project, "sleeps.ipynb")
    process = spawn_run(pipeline)
    run_json = None
    deadline = time.monotonic() + 60
    while run_json is None and time.monotonic() < deadline:  # wait until the stage is under way
        time.sleep(0.2)
        found = list((pipeline.parent / "reports").glob("*/products"))
        if found and process.poll() is None:
            children = psutil.Process(process.pid).children(recursive=True)
            if children:
                run_json = found[0].parent / "run.json"
    time.sleep(2)
    kernels = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signum)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 130, out
    record = json.loads(run_json.read_text())
    assert record["status"] == "cancelled"
    assert record["stages"]["only"]["failure"]["kind"] == "cancelled"
    assert (run_json.parent / "only.ipynb").is_file() and (run_json.parent / "index.html").is_file()
    assert "cancelled" in out.strip().splitlines()[-1]
    assert temp_files(run_json.parent.parent) == [] and assert_reports_readable(run_json.parent.parent)
    time.sleep(0.5)
    assert not any(kernel.is_running() and kernel.status() != psutil.STATUS_ZOMBIE for kernel in kernels)


def test_python_dash_m_runner_is_the_same_command(make_project):
    pipeline = one_stage(make_project, "ok.ipynb")
    done = subprocess.run(
        [sys.executable, "-m", "runner", "check", str(pipeline)],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert done.returncode == 0 and "valid. 1 stages" in done.stdout


def test_github_actions_gets_step_outputs_and_error_annotations(make_project, capsys, monkeypatch, tmp_path):
    pipeline = make_project("""\
        version: 1
        name: toy
        stages:
          first:
            notebook: notebooks/ok.ipynb
            gates: ["y >= 100"]
        """)
    outputs = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    code, record, out = run(capsys, pipeline)
    assert code == 3
    written = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    assert written == {
        "run_id": record["run_id"],
        "status": "gate_failed",
        "model_version": "",
        "report_dir": f"reports/{record['run_id']}",
        "exit_code": "3",
    }
    assert "::error title=Gate failed in first::y >= 100: y = 2 >= 100 is false" in out
