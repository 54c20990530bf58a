"""Tests for runner/github/pages.py: the GitHub Pages site kept on a branch of a real (bare) git remote."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from runner.github import PAGES_BRANCH
from runner.github.actions import git_environment
from runner.github.pages import publish
from runner.records import RunRecord
from runner.report.history import Remembered
from runner.report.pages import render_run_index, write_run_json
from runner.secrets import NO_SECRETS
from tests.conftest import failed_run, gate_failed_run, succeeded_run

pytestmark = pytest.mark.e2e  # a real git remote

GIT = ["git", "-c", "init.defaultBranch=main"]


def _repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    origin, repo = tmp_path / "origin.git", tmp_path / "repo"
    env = git_environment({**os.environ, "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "t@example.com"})
    subprocess.run([*GIT, "init", "-q", "--bare", str(origin)], check=True)
    subprocess.run([*GIT, "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "remote", "add", "origin", str(origin)], cwd=repo, check=True)
    return repo, env


def _write_runs(reports: Path, *records: RunRecord) -> None:
    for record in records:
        run_dir = reports / record.run_id
        write_run_json(run_dir, record, redact=NO_SECRETS)
        render_run_index(run_dir, record, redact=NO_SECRETS)
        (run_dir / "products").mkdir()
        (run_dir / "products" / "features.parquet").write_bytes(b"data, never published")


def test_the_site_keeps_the_newest_runs_across_jobs(tmp_path: Path) -> None:
    repo, env = _repo(tmp_path)
    first_job = repo / "reports"
    _write_runs(first_job, failed_run(), succeeded_run())  # the 25th and the 26th
    said = publish(repo, first_job, repo / "_site", 2, Remembered(), env, NO_SECRETS)
    assert said.startswith("origin has no branch retrain-pages yet: _site starts empty; 2 runs in _site/")
    assert sorted(path.name for path in (repo / "_site").iterdir()) == [
        "20261125T074012Z-0f0f0f", "20261126T074012Z-a1b2c3", "index.html",
    ]  # fmt: skip
    assert not list((repo / "_site").glob("*/products"))

    # the next job starts from a fresh checkout: only its own run folder, the earlier ones are on the branch
    second = tmp_path / "second"
    subprocess.run(["git", "clone", "-q", str(tmp_path / "origin.git"), str(second)], check=True, env=env)
    _write_runs(second / "reports", gate_failed_run())  # the 27th
    said = publish(second, second / "reports", second / "_site", 2, Remembered(), env, NO_SECRETS)
    assert said.startswith(f"restored _site/ from {PAGES_BRANCH} at ")
    site = second / "_site"
    assert sorted(path.name for path in site.iterdir()) == [
        "20261126T074012Z-a1b2c3", "20261127T074012Z-d4e5f6", "index.html",
    ]  # fmt: skip
    history = (site / "index.html").read_text(encoding="utf-8")
    assert 'href="20261127T074012Z-d4e5f6/index.html"' in history and "20261125T074012Z-0f0f0f" not in history
    subprocess.run(["git", "fetch", "-q", "origin"], cwd=second, check=True, env=env)
    listed = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", f"origin/{PAGES_BRANCH}"],
        cwd=second, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "20261127T074012Z-d4e5f6/run.json" in listed.stdout.split()
    assert not any(name.startswith("20261125") for name in listed.stdout.split())
