"""Shared fixtures: small projects built in a temporary folder from the purpose-built notebooks."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

ASSETS = Path(__file__).parent / "assets"
PROJECT_ROOT = Path(__file__).resolve().parents[1]

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


def kernels_alive() -> list[psutil.Process]:
    """Kernel processes started from this test process (other children, such as a test's MLflow server,
    are not kernels)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "ipykernel" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found
