"""The weather data's contract: what a file of daily weather must satisfy before a model may learn from it.

The validate notebook reads every file of the history and every new drop through `check_files`, which returns
one table of problems (rule, meaning, column, file, count, examples with their line numbers) and the rows
that were read. Problems are collected, never raised: a bad file is reported with everything wrong in it at
once, so that it can be fixed in one go. The runner moves the files named in `rejected_files` aside
(data/quarantine/<run_id>/, with the reasons) when the validate stage's gate `n_errors == 0` fails.

Three layers, each reported in the same table:
- the file itself (`runner.nb.check_file`, as for any drop): readable, UTF-8, text not binary,
  comma-delimited, a header and rows, no truncated last line. A file that fails here has no rows to check;
- each file's rows: the COLUMNS and their types, no missing value, the RANGES, the CATEGORIES, one row per
  date, temp_min at most temp_max, no date in the future;
- the new rows against the history: no date already in the history or in another drop, a row every STEP
  after the history's last one (no gap), at most `max_days_per_drop` calendar days in a drop.

To change the contract, edit the tables below; a new rule is a name and meaning in RULES and a
`problems.add(rule, column, file, count, examples)` where it is checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd

from runner import nb

DATE = "date"
DATE_FORMAT = "%Y-%m-%d"  # how `date` is written (hourly data: "%Y-%m-%d %H:%M")
STEP = pd.Timedelta(days=1)  # one row per STEP: new rows follow the history's last one without a gap
COLUMNS = {  # every column a weather file has, and its kind
    "date": "date",
    "precipitation": "number",  # mm of rain or snow over the day
    "temp_max": "number",  # °C
    "temp_min": "number",  # °C
    "wind": "number",  # m/s, the day's average
    "weather": "category",
}
RANGES = {  # physical bounds: a value outside is a unit or entry error
    "precipitation": (0.0, 300.0),
    "temp_max": (-30.0, 50.0),
    "temp_min": (-40.0, 45.0),
    "wind": (0.0, 60.0),
}
CATEGORIES = {"weather": ["drizzle", "rain", "sun", "snow", "fog"]}

# What each rule means, as the report's table shows it next to the rule's name.
RULES = {
    "no history": "there is a history to learn from",
    "malformed line": "every line has as many values as the header",
    "missing column": "every column of the contract is present",
    "unknown column": "no column outside the contract",
    "missing value": "every value is present",
    "not a date": f"dates are written as {DATE_FORMAT}",
    "not a number": "numbers are plain decimal numbers",
    "out of range": "the value is within its physical range",
    "unknown category": "weather is one of " + ", ".join(CATEGORIES["weather"]),
    "duplicate date": "each date appears once",
    "min above max": "temp_min is at most temp_max",
    "future date": "no date after today",
    "already in history": "a new date is not already in the history",
    "gap": f"new rows follow the history's last one without a gap (a row every {STEP})",
    "too many days": "a drop holds at most the allowed number of days",
}


@dataclass
class Checked:
    """What `check_files` found: the rows read (typed, with `file`, `line` and `role`) and every problem."""

    rows: pd.DataFrame
    problems: pd.DataFrame
    rejected_files: list[str] = field(default_factory=list)  # files with at least one problem


def check_files(
    history_files: list[Path],
    new_files: list[Path],
    *,
    root: Path,
    max_days_per_drop: int = 62,
    today: date | None = None,
) -> Checked:
    """Check the history and the new drops against the contract; see the module's docstring."""
    problems = nb.Problems(RULES)
    today = today or date.today()
    if not history_files:
        problems.add("no history", "", "data/history", 1, "no history file: nothing to learn from")
    frames = []
    for role, paths in (("history", history_files), ("new", new_files)):
        for path in paths:
            name = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
            rows = read_file(path, name, problems)
            if rows is None:
                continue
            check_rows(rows, name, problems, today)
            frames.append(rows.assign(file=name, role=role))
    columns = ["line", *COLUMNS, "file", "role"]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    rows[DATE] = pd.to_datetime(rows[DATE])
    history, new = rows[rows["role"] == "history"], rows[rows["role"] == "new"]
    check_new_against_history(history, new, problems, max_days_per_drop=max_days_per_drop)
    return Checked(rows=rows, problems=problems.table(), rejected_files=problems.rejected_files)


def read_file(path: Path, name: str, problems: nb.Problems) -> pd.DataFrame | None:
    """The file's rows with their types and line numbers (`line`); None when it cannot be read as a CSV or
    lacks a column. A value that is not of its type becomes missing, and is reported."""
    if nb.check_file(path, name, problems) is None:
        return None
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False, encoding="utf-8")
    except pd.errors.ParserError as error:
        problems.add(
            "malformed line", "", name, 1, str(error).replace("Error tokenizing data. C error: ", "")
        )
        return None
    raw.insert(0, "line", raw.index + 2)  # line 1 is the header
    missing = [column for column in COLUMNS if column not in raw.columns]
    if missing:
        problems.add(
            "missing column", ", ".join(missing), name, len(missing), f"columns: {list(raw.columns)}"
        )
    unknown = [column for column in raw.columns if column not in COLUMNS and column != "line"]
    if unknown:
        problems.add("unknown column", ", ".join(unknown), name, len(unknown), "not in the contract")
    if missing:
        return None
    typed = pd.DataFrame({"line": raw["line"]})
    for column, kind in COLUMNS.items():
        text = raw[column].str.strip()
        empty = text == ""
        _report(problems, "missing value", column, name, raw, empty)
        if kind == "date":
            typed[column] = pd.to_datetime(text, format=DATE_FORMAT, errors="coerce")
            _report(problems, "not a date", column, name, raw, typed[column].isna() & ~empty)
        elif kind == "number":
            typed[column] = pd.to_numeric(text, errors="coerce")
            _report(problems, "not a number", column, name, raw, typed[column].isna() & ~empty)
        else:
            typed[column] = text.where(~empty)
    return typed


def check_rows(rows: pd.DataFrame, name: str, problems: nb.Problems, today: date) -> None:
    """Each row on its own and the file's rows together: ranges, categories, one row a date, min <= max."""
    for column, (low, high) in RANGES.items():
        values = rows[column]
        _report(problems, "out of range", column, name, rows, values.notna() & ~values.between(low, high))
    for column, allowed in CATEGORIES.items():
        values = rows[column]
        _report(problems, "unknown category", column, name, rows, values.notna() & ~values.isin(allowed))
    days = rows[DATE]
    _report(problems, "duplicate date", DATE, name, rows, days.notna() & days.duplicated(keep=False))
    _report(problems, "min above max", "temp_min", name, rows, rows["temp_min"] > rows["temp_max"])
    _report(problems, "future date", DATE, name, rows, days >= pd.Timestamp(today) + pd.Timedelta(days=1))


def check_new_against_history(
    history: pd.DataFrame, new: pd.DataFrame, problems: nb.Problems, *, max_days_per_drop: int
) -> None:
    """Do the new rows continue the history: no date twice, no gap, a believable number of days?"""
    if new.empty:
        return
    known = set(history[DATE].dropna())
    for name, rows in new.groupby("file", sort=True):
        _report(problems, "already in history", DATE, str(name), rows, rows[DATE].isin(known))
        n_days = rows[DATE].dt.normalize().nunique()  # calendar days, whatever the step
        if n_days > max_days_per_drop:
            problems.add(
                "too many days", DATE, str(name), n_days, f"{n_days} days, at most {max_days_per_drop}"
            )
    fresh = new[new[DATE].notna() & ~new[DATE].isin(known)]
    twice = fresh[fresh.duplicated(DATE, keep=False) & ~fresh.duplicated([DATE, "file"], keep=False)]
    if not twice.empty:
        files = ", ".join(sorted(twice["file"].unique()))
        examples = "; ".join(f"{day:{DATE_FORMAT}}" for day in sorted(twice[DATE].unique())[:3])
        problems.add(
            "duplicate date", DATE, files, twice[DATE].nunique(), f"in more than one drop: {examples}"
        )
    if not known or fresh.empty:
        return
    expected = pd.date_range(max(known) + STEP, fresh[DATE].max(), freq=STEP)
    absent = expected.difference(pd.DatetimeIndex(fresh[DATE].unique()))
    if len(absent):
        after = fresh[fresh[DATE] > absent[0]]
        files = ", ".join(sorted(after["file"].unique())) or ", ".join(sorted(fresh["file"].unique()))
        first, last = f"{absent[0]:{DATE_FORMAT}}", f"{max(known):{DATE_FORMAT}}"
        said = f"{len(absent)} row(s) missing, the first {first} (the history ends on {last})"
        problems.add("gap", DATE, files, len(absent), said)


def _report(
    problems: nb.Problems, rule: str, column: str, name: str, rows: pd.DataFrame, broken: pd.Series
) -> None:
    """One problem for the rows where `broken` holds, with up to three of them by line number."""
    broken = broken.fillna(False).astype(bool)
    count = int(broken.sum())
    if not count:
        return
    shown = rows.loc[broken, ["line", column]].head(3)
    examples = "; ".join(f"line {line}: {_value(value)}" for line, value in shown.itertuples(index=False))
    problems.add(rule, column, name, count, examples)


def _value(value: object) -> str:
    if isinstance(value, pd.Timestamp):
        return f"{value:{DATE_FORMAT}}"
    if value is None or value == "" or (isinstance(value, float) and pd.isna(value)):
        return "(empty)"
    return repr(value)
