"""runner/files.py: the one writer: atomic, redacted, and clear about what it could not write."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import RetrainError, WriteError
from runner.files import append_text, atomic_copy, atomic_write_text, remove_stale_temporaries
from runner.secrets import NO_SECRETS, Redactor

pytestmark = pytest.mark.unit


def test_a_write_that_fails_names_the_file_and_leaves_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "reports"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(WriteError) as raised:
        atomic_write_text(blocker / "run" / "run.json", "{}", redact=NO_SECRETS)
    assert isinstance(raised.value, OSError) and isinstance(raised.value, RetrainError)  # exit 1, or ignored
    assert str(raised.value).startswith(f"cannot write {blocker / 'run' / 'run.json'}: ")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["reports"]


def test_writes_are_redacted_and_copies_are_whole(tmp_path: Path) -> None:
    redact = Redactor.from_environ(["TOKEN"], {"TOKEN": "hunter22"})
    atomic_write_text(tmp_path / "page.html", "<p>hunter22</p>", redact=redact)
    append_text(tmp_path / "summary.md", "token hunter22\n", redact=redact)
    atomic_copy(tmp_path / "page.html", tmp_path / "copy" / "page.html")
    assert (tmp_path / "copy" / "page.html").read_text() == "<p>***TOKEN***</p>"
    assert (tmp_path / "summary.md").read_text() == "token ***TOKEN***\n"


def test_only_the_writers_own_temporary_files_are_swept(tmp_path: Path) -> None:
    killed = tmp_path / "run" / ".run.json.a1b2c3d4.tmp"  # a write killed mid-way
    mine = tmp_path / "run" / "products" / ".cache.tmp"  # a notebook's own file: not the writer's
    for path in (killed, mine):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("partial")
    assert remove_stale_temporaries(tmp_path) == [killed]
    assert not killed.exists() and mine.exists()
