"""Shared fixtures: small projects built in a temporary folder from the purpose-built notebooks."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import pytest

ASSETS = Path(__file__).parent / "assets"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def load_walmart() -> ModuleType:
    """The demo project's data script, data/walmart.py (a script of the project, not of the runner)."""
    if "walmart" not in sys.modules:
        spec = importlib.util.spec_from_file_location("walmart", PROJECT_ROOT / "data" / "walmart.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["walmart"] = module
        spec.loader.exec_module(module)
    return sys.modules["walmart"]

MakeProject = Callable[[str], Path]


@pytest.fixture
def make_project(tmp_path: Path) -> MakeProject:
    """A project folder with the asset notebooks under notebooks/ and the given pipeline.yaml text."""

    def make(pipeline_yaml: str) -> Path:
        root = tmp_path / "project"
        if not root.exists():
            shutil.copytree(ASSETS / "notebooks", root / "notebooks")
        (root / "pipeline.yaml").write_text(textwrap.dedent(pipeline_yaml))
        return root / "pipeline.yaml"

    return make


def spawn_run(pipeline: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`retrain run PIPELINE ARGS...` as its own process in the project folder (for signals and kills),
    its output captured as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(pipeline), *args],
        cwd=pipeline.parent,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def is_kernel(cmdline: Sequence[str]) -> bool:
    """A kernel started the usual way, a run's kernel server or a kernel it forked (same command line)."""
    text = " ".join(cmdline)
    return "ipykernel" in text or "runner.engine.kernels.server" in text


def is_stage_kernel(process: psutil.Process) -> bool:
    """A stage's kernel: started the usual way, or forked by the run's kernel server (named so)."""
    return process.name() == "retrain-kernel" or "ipykernel" in " ".join(process.cmdline())


def kernels_alive() -> list[psutil.Process]:
    """Kernel processes started from this test process (other children, such as a test's MLflow server,
    are not kernels)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if is_kernel(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def kernels_in(root: Path) -> list[psutil.Process]:
    """Kernel processes working in the project `root`, whoever started them: a runner that was killed leaves
    its kernels to init, out of reach of `kernels_alive`."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd", "status"]):
        try:
            if (
                is_kernel(process.info["cmdline"] or ())
                and process.info["cwd"] == str(root)
                and process.info["status"] != psutil.STATUS_ZOMBIE
            ):
                found.append(process)
        except psutil.Error:
            continue
    return found


def temp_files(folder: Path) -> list[Path]:
    """What a writer killed mid-write leaves behind (runner/files.py names its temporary files so)."""
    return sorted(folder.rglob(".*.tmp")) if folder.is_dir() else []


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.closed_html = False

    def handle_endtag(self, tag: str) -> None:
        self.closed_html = self.closed_html or tag == "html"


def assert_reports_readable(reports: Path) -> list[dict[str, Any]]:
    """Every run.json is a whole run record and every page a whole HTML document; returns the records."""
    from runner.records import RunRecord

    records = []
    for run_json in sorted(reports.glob("*/run.json")):
        data = json.loads(run_json.read_text(encoding="utf-8"))
        RunRecord.from_json(data)  # the record's shape, not just JSON
        records.append(data)
    for page in sorted(reports.glob("**/*.html")):
        parser = _Html()
        parser.feed(page.read_text(encoding="utf-8"))
        assert parser.closed_html, f"{page} is not a whole HTML document"
    return records
