"""A protected default branch: the data moves a run made go to a branch of their own, with a clear message,
instead of failing with "main kept moving" after pointless retries."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from runner.github import actions as github
from tests.conftest import GIT

pytestmark = pytest.mark.e2e  # git with a server-side hook

ENV = github.git_environment({"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")})
HOOK = """#!/bin/sh
# what GitHub answers for a protected branch
while read old new ref; do
  if [ "$ref" = "refs/heads/main" ]; then
    echo "error: GH006: Protected branch update failed for refs/heads/main." >&2
    exit 1
  fi
done
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_a_protected_branch_gets_its_data_moves_on_a_branch_for_a_pull_request(tmp_path: Path) -> None:
    origin = tmp_path / "origin.git"
    subprocess.run([*GIT, "init", "--quiet", "--bare", str(origin)], check=True)
    work = tmp_path / "work"
    (work / "data" / "new").mkdir(parents=True)
    (work / "data" / "new" / "week-14.csv").write_text("week 14\n")
    git(work, "init", "--quiet")
    git(work, "add", ".")
    git(work, "commit", "--quiet", "-m", "a drop")
    git(work, "push", "--quiet", str(origin), "HEAD:refs/heads/main")
    git(work, "remote", "add", "origin", str(origin))
    hook = origin / "hooks" / "pre-receive"
    hook.write_text(HOOK)
    hook.chmod(0o755)
    (work / "data" / "history").mkdir()
    (work / "data" / "new" / "week-14.csv").rename(work / "data" / "history" / "week-14.csv")

    paths, env = ["data/new", "data/history"], {**ENV, **_author()}
    with pytest.raises(github.BranchProtected) as refused:
        github.push_data(work, paths, env, "data accepted", "main", fallback="retrain/data-r1")
    message = str(refused.value)
    assert "main is protected on origin" in message and "GH006" in message
    assert "pushed to branch retrain/data-r1" in message and "pull request" in message
    assert "kept moving" not in message
    assert git(origin, "log", "--format=%s", "main") == "a drop"  # main untouched
    assert git(origin, "log", "--format=%s", "retrain/data-r1").splitlines()[0] == "data accepted"

    (work / "data" / "history" / "week-15.csv").write_text("week 15\n")
    with pytest.raises(github.StateError, match="refuses pushes to main") as no_fallback:
        github.push_data(work, paths, env, "again", "main")
    assert not isinstance(no_fallback.value, github.BranchProtected)


def _author() -> dict[str, str]:
    return {"GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "t@example.com"}
