"""A data drop checked as a file, before its rows are: the checks every CSV drop needs, whatever its columns.

    unreadable · empty · binary · not UTF-8 · delimiter · no rows · truncated last line

Each broken rule becomes a row of one `Problems` table (rule, meaning, column, file, count, examples): the
`problems` scrap that the run page, Slack and the quarantine's REASON.md show, with `rejected_files` naming
the files to quarantine. A data contract adds its own rules (columns, types, ranges, keys) to the same table.
The checks read a file's first and last blocks and stream the rest once in C (UTF-8, line count): fast
enough for files of millions of rows.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROBLEM_COLUMNS = ["rule", "meaning", "column", "file", "count", "examples"]
SNIFF_BYTES = 64 * 1024  # enough of a file's start to tell text from binary and find its delimiter
BLOCK = 1 << 24
FILE_RULES = {
    "unreadable": "the file can be opened and read",
    "empty": "the file has a header line",
    "binary": "the file is text, not binary",
    "not UTF-8": "the file is UTF-8 text",
    "delimiter": "values are separated by the expected delimiter",
    "no rows": "the file has rows after its header",
    "truncated last line": "the file ends with a complete line",
}
WARNING = " (warning)"  # a rule whose name ends so is noted, and does not reject its file


class Problems:
    """Broken rules, collected (never raised) so that a file is reported with everything wrong at once."""

    def __init__(self, meanings: Mapping[str, str] | None = None) -> None:
        self.meanings = {**FILE_RULES, **(meanings or {})}
        self.found: list[dict[str, Any]] = []

    def add(self, rule: str, column: str, file: str, count: int, examples: str) -> None:
        self.found.append(
            {
                "rule": rule,
                "meaning": self.meanings.get(rule.removesuffix(WARNING), rule),
                "column": column,
                "file": file,
                "count": int(count),
                "examples": examples.strip()[:300],
            }
        )

    def table(self) -> Any:
        """The problems as a DataFrame, in the order found (the `problems` scrap)."""
        import pandas as pd

        return pd.DataFrame(self.found, columns=PROBLEM_COLUMNS).astype({"count": "int64"})

    @property
    def rejected_files(self) -> list[str]:
        """The files with a problem that is not a warning (the `rejected_files` scrap)."""
        files = {
            file
            for row in self.found
            if not str(row["rule"]).endswith(WARNING)
            for file in str(row["file"]).split(", ")
            if file
        }
        return sorted(files)


def check_file(path: Path, name: str, problems: Problems, *, delimiter: str = ",") -> list[str] | None:
    """Check `path` (shown as `name`) as a delimited text file; return its header's column names, or None
    when the file cannot be read as such (its problems are in `problems`)."""
    try:
        with path.open("rb") as handle:
            start = handle.read(SNIFF_BYTES)
    except OSError as error:
        problems.add("unreadable", "", name, 1, f"{type(error).__name__}: {error}")
        return None
    if not start.strip():
        problems.add("empty", "", name, 1, "the file is empty: no header, no rows")
        return None
    if b"\x00" in start:
        offset = start.index(b"\x00")
        problems.add("binary", "", name, 1, f"a NUL byte at offset {offset}: this is not a CSV text file")
        return None
    bad = first_non_utf8(path)
    if bad is not None:
        line, offset, byte = bad
        said = f"line {line} (byte offset {offset}): byte {byte:#04x} is not UTF-8"
        problems.add("not UTF-8", "", name, 1, said)
        return None
    header_line = start.splitlines()[0].decode("utf-8", errors="replace")
    header = next(csv.reader([header_line], delimiter=delimiter))
    if len(header) == 1:
        marks = (mark for mark in (";", ",", "\t", "|") if mark != delimiter and mark in header_line)
        other = next(marks, None)
        if other is not None:
            said = f"line 1 is one column {header_line[:80]!r}: the file looks separated by {other!r}"
            problems.add("delimiter", "", name, 1, said)
            return None
    if count_lines(path) < 2:
        problems.add("no rows", "", name, 1, f"only a header: {header_line[:80]}")
        return None
    _check_last_line(path, name, len(header), problems, delimiter)
    return header


def count_lines(path: Path) -> int:
    """Lines in the file, a last line without its newline included."""
    count, last = 0, b"\n"
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def first_non_utf8(path: Path) -> tuple[int, int, int] | None:
    """(line, byte offset, byte) of the first byte that is not UTF-8, or None when the file is UTF-8."""
    base, lines, carry = 0, 1, b""  # `carry`: a character cut at a block's end, completed by the next
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            data, carry = carry + block, b""
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as error:
                cut = error.reason == "unexpected end of data" and error.end == len(data)
                if not cut:
                    return lines + data.count(b"\n", 0, error.start), base + error.start, data[error.start]
                carry, data = data[error.start :], data[: error.start]
            lines += data.count(b"\n")
            base += len(data)
    return (lines, base, carry[0]) if carry else None


def _check_last_line(path: Path, name: str, n_columns: int, problems: Problems, delimiter: str) -> None:
    """A file cut short mid-line (an interrupted export or upload) ends without a newline and few fields."""
    with path.open("rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - 4096))
        tail = handle.read()
    if tail.endswith((b"\n", b"\r")):
        return
    last = tail.splitlines()[-1].decode("utf-8", errors="replace")
    fields = next(csv.reader([last], delimiter=delimiter), [])
    if len(fields) < n_columns:
        said = f"the last line has {len(fields)} of {n_columns} values and no line end: {last[:60]!r}"
        problems.add("truncated last line", "", name, 1, said)
