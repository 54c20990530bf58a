"""A kernel killed between the moment it is ready and its stage's first cell (the fault campaign's random
kills found it): the stage fails with a dead kernel, never as a bug in the runner (exit 70)."""

from __future__ import annotations

import pytest

from runner.engine.execute import execute_notebook
from runner.engine.kernels import Kernel
from runner.secrets import NO_SECRETS
from tests.conftest import ASSETS, eventually

pytestmark = pytest.mark.kernel


def test_a_kernel_killed_after_it_was_ready_fails_its_stage_as_a_dead_kernel(tmp_path):
    kernel = Kernel(tmp_path)
    kernel.wait_ready()
    kernel.kill()
    assert eventually(lambda: not kernel.manager.is_alive(), 30)
    result = execute_notebook(
        ASSETS / "notebooks" / "ok.ipynb",
        tmp_path / "ok.ipynb",
        {},
        cwd=tmp_path,
        timeout_s=120,
        redact=NO_SECRETS,
        kernel=kernel,
    )
    assert result.failure is not None and result.failure.kind == "dead_kernel", result.failure
    assert (tmp_path / "ok.ipynb").is_file()  # the notebook saved, flagged where it stopped
