"""The sales data's contract: what a weekly sales file must satisfy before a model may learn from it.

The validate notebook reads every file in the history and every new drop through `check_files`, which
returns one table of problems (rule, column, file, failing rows, examples with their line numbers) and the
rows that passed. Problems are collected, never raised: a bad file is reported with everything wrong in it at
once, so that it can be fixed in one go.

Three layers, each reported in the same table:
- the file itself (`runner.nb.check_file`, as for any drop): readable, UTF-8, text not binary,
  comma-delimited, a header and rows, no truncated last line. A file that fails here has no rows to check;
- each file's rows against the schema (pandera, lazy): the columns and their types, missing values, ranges,
  allowed categories, the key (Store, Dept, Date) unique, no date in the future;
- the new weeks against the history (`check_new_against_history`): no week already in the history, no gap,
  no duplicate across files, every department present, a believable number of rows and of weeks, sales in
  the range the history has seen.

Rules that depend on the data's own history (row counts, sales range) take their bounds from it, so the
contract follows the shop as it grows instead of going stale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa

from runner import nb

KEY = ["Store", "Dept", "Date"]
LABEL = "Weekly_Sales"
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
NUMBER_PATTERN = r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$"
INTEGER_PATTERN = r"^\s*\d+\s*$"
HOLIDAY_VALUES = {"TRUE": True, "FALSE": False, "True": True, "False": False, "true": True, "false": False}
STORE_TYPES = ["A", "B", "C"]
MARKDOWNS = [f"MarkDown{i}" for i in range(1, 6)]  # promotions: only recorded from November 2011 on

# Every column a sales file may have: its type, whether it must be present and whether it may be empty.
# `id` (Store_Dept) and the store facts are carried by the export but not used by the model.
COLUMNS: dict[str, tuple[str, bool, bool]] = {
    # name: (kind, required, nullable)
    "id": ("text", False, True),
    "Store": ("integer", True, False),
    "Dept": ("integer", True, False),
    "Date": ("date", True, False),
    "Weekly_Sales": ("number", True, False),
    "IsHoliday": ("boolean", True, False),
    "Type": ("category", False, True),
    "Size": ("integer", False, True),
    "Temperature": ("number", True, False),
    "Fuel_Price": ("number", True, False),
    **{name: ("number", False, True) for name in MARKDOWNS},
    "CPI": ("number", True, False),
    "Unemployment": ("number", True, False),
}

# What each rule means, as the report's table shows it next to the rule's name.
RULES = {
    "malformed line": "every line has as many values as the header",
    "missing column": "every required column is present",
    "unknown column": "no column outside the contract",
    "missing value": "required values are present",
    "not a date": "dates are written YYYY-MM-DD",
    "not a number": "numbers are plain decimal numbers",
    "not a whole number": "Store, Dept and Size are whole numbers",
    "not a holiday flag": "IsHoliday is TRUE or FALSE",
    "store type": f"Type is one of {', '.join(STORE_TYPES)}",
    "duplicate key": "each (Store, Dept, Date) appears once",
    "negative sales": "Weekly_Sales is zero or more",
    "out of range": "the value is within its physical range",
    "future date": "no date after today",
    "not a Friday": "weeks are dated by their Friday, as in the history",
    "already in history": "a new week is not already in the history",
    "gap": "new weeks follow the history's last week without a gap",
    "too many weeks": "a drop holds at most the allowed number of weeks",
    "row count": "a week has about as many rows as the history's weeks",
    "departments complete": "every new week has all the departments of the history",
    "sales out of range": "sales stay within the range the history has seen, with a margin",
}

# Physical bounds: a value outside them is a unit or entry error, whatever the history says.
RANGES = {
    "Store": (1, 10_000),
    "Dept": (1, 99),
    "Size": (1, 10_000_000),
    "Temperature": (-60.0, 140.0),  # Fahrenheit
    "Fuel_Price": (0.0, 20.0),  # dollars a gallon
    "CPI": (50.0, 1_000.0),
    "Unemployment": (0.0, 50.0),  # percent
}


@dataclass
class Checked:
    """What `check_files` found: the rows that passed (typed, with `file` and `line`) and every problem."""

    rows: pd.DataFrame
    problems: pd.DataFrame
    rejected_files: list[str] = field(default_factory=list)  # files with at least one problem


def check_files(
    history_files: list[Path],
    new_files: list[Path],
    *,
    root: Path,
    unknown_columns: str = "fail",
    max_weeks_per_drop: int = 4,
    row_count_tolerance: float = 2.0,
    sales_margin: float = 10.0,
    today: date | None = None,
) -> Checked:
    """Check the history and the new drops against the contract; see the module's docstring.

    `unknown_columns` is "fail" or "warn": a column outside the contract is a problem, or only a note
    (then the rule reads "unknown column (warning)" and does not reject the file).
    """
    if unknown_columns not in ("fail", "warn"):
        raise ValueError(f"unknown_columns must be 'fail' or 'warn', not {unknown_columns!r}")
    problems = nb.Problems(RULES)
    today = today or date.today()
    frames = []
    names = [_relative(path, root) for path in [*history_files, *new_files]]
    for role, paths in (("history", history_files), ("new", new_files)):
        for path in paths:
            name = _relative(path, root)
            typed = read_sales_file(path, name, problems)
            if typed is None:
                continue
            unknown = [column for column in typed.columns if column not in COLUMNS and column != "line"]
            if unknown and unknown_columns == "warn":
                problems.add("unknown column (warning)", ", ".join(unknown), name, len(unknown), "left out")
                typed = typed.drop(columns=unknown)
            _collect(_schema(today, unknown_columns), typed, name, problems)
            # categories: a 10M-row history costs 10 MB of codes instead of 10M strings
            typed["file"] = pd.Categorical([name] * len(typed), categories=names)
            typed["role"] = pd.Categorical([role] * len(typed), categories=["history", "new"])
            frames.append(typed)
    rows = pd.concat(frames, ignore_index=True) if frames else _empty_rows()
    del frames
    is_history = (rows["role"] == "history").to_numpy()
    history = rows.loc[is_history, ["Date", "Dept", LABEL]]  # three columns: no copy of a large history
    new = rows[~is_history]
    check_new_against_history(
        history,
        new,
        problems,
        max_weeks_per_drop=max_weeks_per_drop,
        row_count_tolerance=row_count_tolerance,
        sales_margin=sales_margin,
    )
    return Checked(rows=rows, problems=problems.table(), rejected_files=problems.rejected_files)


# --- the file itself --------------------------------------------------------------------------------------


def read_sales_file(path: Path, name: str, problems: nb.Problems) -> pd.DataFrame | None:
    """The file's rows, typed, with their line numbers in `line`; None when it cannot be read as a CSV.

    The file itself is checked first, as any drop is (`runner.nb.check_file`: readable, UTF-8, not binary,
    comma-delimited, a header and rows, no truncated last line). A clean file is then parsed straight into
    its types by pyarrow (multi-threaded: a 10M-row history in seconds). A file that pyarrow cannot type, or
    that holds blank lines (which would shift the line numbers), is read again as text, where every value
    that is not of its type is reported with its line, and the rows with such values are left out of the
    typed rows (their problems are already reported).
    """
    header = nb.check_file(path, name, problems)
    if header is None:
        return None
    typed = _read_typed(path, header)
    if typed is not None:
        return typed
    raw = _read_text(path, name, problems)
    if raw is None:
        return None
    known = [column for column in raw.columns if column in COLUMNS or column == "line"]
    failures = _collect(_text_schema(), raw[known], name, problems)
    typed = _typed(raw[known].drop(index=failures))
    for column in raw.columns:
        if column not in known:
            typed[column] = raw[column].drop(index=failures)  # judged by the schema: unknown column
    return typed


# pyarrow's types for a clean file: integers that may be missing are read as floats, and dates with pyarrow's
# own parser, which takes ISO dates only (pandas' would also take 04/06/2012, and guess which is the month)
FAST_TYPES = {
    name: {
        "integer": "float64" if nullable else "int64",
        "number": "float64",
        "date": "timestamp[ns][pyarrow]",
    }.get(kind, "str")
    for name, (kind, _, nullable) in COLUMNS.items()
}


def _read_typed(path: Path, header: list[str]) -> pd.DataFrame | None:
    """The file parsed into its types by pyarrow, or None when a value is not of its type."""
    try:
        frame = pd.read_csv(
            path,
            engine="pyarrow",
            dtype={column: FAST_TYPES[column] for column in header if column in FAST_TYPES},
            keep_default_na=False,
            na_values=["", "NA"],
        )
    except Exception:
        return None
    if "IsHoliday" in frame.columns and not frame["IsHoliday"].dropna().isin(list(HOLIDAY_VALUES)).all():
        return None
    if frame.empty or nb.count_lines(path) != len(frame) + 1:
        return None  # blank lines: pyarrow skips them, and the line numbers would be wrong
    frame.insert(0, "line", np.arange(2, len(frame) + 2))
    for column, (kind, _, _) in COLUMNS.items():
        if column not in frame.columns:
            continue
        if kind == "date":
            frame[column] = frame[column].astype("datetime64[ns]")
        elif kind == "integer":
            frame[column] = frame[column].astype("float64")
        elif kind == "boolean":
            frame[column] = _flags(frame[column])
    return frame


def _flags(values: pd.Series) -> pd.Series:
    """TRUE/FALSE text as nullable booleans, vectorised (mapping through Python objects costs more memory)."""
    truth = values.isin([text for text, flag in HOLIDAY_VALUES.items() if flag]).to_numpy()
    known = values.isin(list(HOLIDAY_VALUES)).to_numpy()
    return pd.Series(pd.arrays.BooleanArray(truth, ~known), index=values.index)


def _read_text(path: Path, name: str, problems: nb.Problems) -> pd.DataFrame | None:
    try:
        raw = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            na_values=["", "NA"],  # the export writes NA for a week without promotions
            skip_blank_lines=False,
            encoding="utf-8",
        )
    except pd.errors.ParserError as exc:
        problems.add("malformed line", "", name, 1, str(exc).replace("Error tokenizing data. C error: ", ""))
        return None
    except (pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        problems.add("unreadable", "", name, 1, f"{type(exc).__name__}: {exc}")
        return None
    raw.insert(0, "line", raw.index + 2)  # line 1 is the header
    return raw


# --- each file's rows against the schema ------------------------------------------------------------------


def _text_schema() -> pa.DataFrameSchema:
    """The text of a file that pyarrow could not type: each value written as its type says."""
    patterns = {
        "date": (DATE_PATTERN, "not a date"),
        "number": (NUMBER_PATTERN, "not a number"),
        "integer": (INTEGER_PATTERN, "not a whole number"),
    }
    columns = {}
    for name, (kind, _, _) in COLUMNS.items():
        if kind in patterns:
            pattern, rule = patterns[kind]
            columns[name] = pa.Column(
                str, pa.Check.str_matches(pattern, error=rule), nullable=True, required=False
            )
        elif kind == "boolean":
            check = pa.Check.isin(list(HOLIDAY_VALUES), error="not a holiday flag")
            columns[name] = pa.Column(str, check, nullable=True, required=False)
    return pa.DataFrameSchema(columns)


def _schema(today: date, unknown_columns: str) -> pa.DataFrameSchema:
    """The schema of the typed rows: the columns, missing values, ranges, categories, the key, the dates."""
    checks: dict[str, list[pa.Check]] = {
        "Date": [
            pa.Check.le(pd.Timestamp(today), error="future date"),
            pa.Check(lambda dates: dates.dt.day_of_week == 4, error="not a Friday"),
            pa.Check(lambda dates: dates == dates.dt.normalize(), error="not a date"),  # a time of day
        ],
        LABEL: [pa.Check.ge(0, error="negative sales")],
        "Type": [pa.Check.isin(STORE_TYPES, error="store type")],
        **{
            name: [pa.Check.in_range(low, high, error="out of range")] for name, (low, high) in RANGES.items()
        },
    }
    columns = {
        name: pa.Column(None, checks.get(name, []), required=required, nullable=nullable)
        for name, (_, required, nullable) in COLUMNS.items()
    }
    columns["line"] = pa.Column(None)
    return pa.DataFrameSchema(columns, unique=KEY, report_duplicates="all", strict=unknown_columns == "fail")


def _typed(raw: pd.DataFrame) -> pd.DataFrame:
    """The text's values with their types (values that are not of their type were reported and dropped)."""
    typed = pd.DataFrame({"line": raw["line"]}, index=raw.index)
    for name, (kind, _, _) in COLUMNS.items():
        if name not in raw.columns:
            continue
        values = raw[name]
        if kind == "date":
            typed[name] = pd.to_datetime(values, format="%Y-%m-%d", errors="coerce").astype("datetime64[ns]")
        elif kind in ("number", "integer"):
            typed[name] = pd.to_numeric(values, errors="coerce").astype("float64")
        elif kind == "boolean":
            typed[name] = _flags(values)
        else:
            typed[name] = values
    return typed


def _collect(
    schema: pa.DataFrameSchema, frame: pd.DataFrame, name: str, problems: nb.Problems
) -> list[object]:
    """Run `schema` lazily, add one problem per (rule, column) with examples and their line numbers, and
    return the index of the rows that broke a rule."""
    try:
        schema.validate(frame, lazy=True, inplace=True)  # nothing is coerced: no copy of a large frame
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        cases = cases.assign(rule=cases["check"].astype(str).map(_rule_name))
        # a duplicate key is one problem, though pandera reports it once per key column
        cases.loc[cases["rule"] == "duplicate key", "column"] = ", ".join(KEY)
        cases = cases.drop_duplicates(["rule", "column", "index"])
        for (rule, column), group in cases.groupby(["rule", "column"], dropna=False, sort=False):
            column_name = "" if pd.isna(column) else str(column)
            if rule in ("missing column", "unknown column"):  # pandera gives the column as the failure case
                column_name = ", ".join(str(case) for case in group["failure_case"])
            examples = _examples(group, frame, rule)
            count = group["index"].nunique() if group["index"].notna().any() else len(group)
            problems.add(rule, column_name, name, count, examples)
        return [index for index in cases["index"].dropna().unique() if index in frame.index]
    return []


def _rule_name(check: str) -> str:
    if check == "column_in_dataframe":
        return "missing column"
    if check == "column_in_schema":
        return "unknown column"
    if check == "not_nullable":
        return "missing value"
    if check in ("multiple_fields_uniqueness", "field_uniqueness"):
        return "duplicate key"
    return check


def _examples(group: pd.DataFrame, frame: pd.DataFrame, rule: str, limit: int = 3) -> str:
    shown = []
    for _, case in group.head(limit * 4).iterrows():
        index = case["index"]
        if pd.isna(index) or index not in frame.index:
            shown.append(str(case["failure_case"]))
            continue
        line = int(frame.at[index, "line"])
        if rule == "duplicate key":
            key = ", ".join(str(_text(frame.at[index, column])) for column in KEY if column in frame.columns)
            shown.append(f"line {line}: {key}")
        elif rule == "missing value":
            shown.append(f"line {line}")
        else:
            shown.append(f"line {line}: {_text(case['failure_case'])!r}")
        if len(dict.fromkeys(shown)) >= limit:
            break
    return "; ".join(dict.fromkeys(shown))


def _text(value: object) -> object:
    if isinstance(value, pd.Timestamp):
        return f"{value:%Y-%m-%d}"
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# --- the new weeks against the history --------------------------------------------------------------------


def check_new_against_history(
    history: pd.DataFrame,
    new: pd.DataFrame,
    problems: nb.Problems,
    *,
    max_weeks_per_drop: int,
    row_count_tolerance: float,
    sales_margin: float,
) -> None:
    """Do the new weeks continue the history: no overlap, no gap, all departments, believable sizes?

    `history` needs only the columns Date, Dept and the label."""
    if new.empty:
        return
    history_weeks = pd.DatetimeIndex(history["Date"].dropna().unique())
    last = history_weeks.max() if len(history_weeks) else None
    schema = pa.DataFrameSchema(
        {
            "Date": pa.Column(
                "datetime64[ns]",
                pa.Check(lambda dates: ~dates.isin(history_weeks), error="already in history"),
                nullable=True,
            )
        },
    )
    # the same key in two drops (within one file, the schema above reported it already)
    across = new.dropna(subset=KEY).drop_duplicates([*KEY, "file"])
    repeated = across[across.duplicated(KEY, keep=False)]
    if not repeated.empty:
        files = ", ".join(sorted(repeated["file"].unique()))
        _collect(pa.DataFrameSchema(unique=KEY, report_duplicates="all"), repeated, files, problems)
    for name, rows in new.groupby("file", sort=True, observed=True):
        _collect(schema, rows, str(name), problems)
        weeks = rows["Date"].dropna().nunique()
        if weeks > max_weeks_per_drop:
            problems.add(
                "too many weeks", "Date", str(name), weeks, f"{weeks} weeks, at most {max_weeks_per_drop}"
            )
    fresh = new[~new["Date"].isin(history_weeks)].dropna(subset=["Date"])
    if last is not None and not fresh.empty:
        expected = last
        for week in sorted(fresh["Date"].unique()):
            expected = expected + pd.Timedelta(days=7)
            if week != expected:
                files = ", ".join(sorted(fresh.loc[fresh["Date"] == week, "file"].unique()))
                problems.add(
                    "gap",
                    "Date",
                    files,
                    (pd.Timestamp(week) - expected).days // 7,
                    f"{pd.Timestamp(week):%Y-%m-%d} comes after {expected - pd.Timedelta(days=7):%Y-%m-%d}: "
                    f"{expected:%Y-%m-%d} is missing",
                )
                break
    if history.empty:
        return
    usual = history.groupby("Date").size().median()
    known = {int(dept) for dept in history["Dept"].dropna().unique()}
    for week, rows in fresh.groupby("Date"):
        files = ", ".join(sorted(rows["file"].unique()))
        if not usual / row_count_tolerance <= len(rows) <= usual * row_count_tolerance:
            problems.add(
                "row count",
                "",
                files,
                len(rows),
                f"{pd.Timestamp(week):%Y-%m-%d}: {len(rows)} rows, the history's weeks have {usual:.0f}",
            )
        absent = sorted(known - set(rows["Dept"].dropna().astype(int)))
        if absent:
            problems.add(
                "departments complete",
                "Dept",
                files,
                len(absent),
                f"{pd.Timestamp(week):%Y-%m-%d}: no Dept {', '.join(map(str, absent))}",
            )
    highest = history[LABEL].max()
    if pd.notna(highest):
        too_high = fresh[fresh[LABEL] > highest * sales_margin]
        for name, rows in too_high.groupby("file", observed=True):
            examples = "; ".join(
                f"line {line}: {value:,.2f}" for line, value in rows[["line", LABEL]].head(3).values
            )
            problems.add(
                "sales out of range",
                LABEL,
                str(name),
                len(rows),
                f"{examples} (history's highest: {highest:,.2f}, x{sales_margin:g} allowed)",
            )


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _empty_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "line": pd.Series(dtype="int64"),
            "Store": pd.Series(dtype="float64"),
            "Dept": pd.Series(dtype="float64"),
            "Date": pd.Series(dtype="datetime64[ns]"),
            LABEL: pd.Series(dtype="float64"),
            "IsHoliday": pd.Series(dtype="boolean"),
            "file": pd.Series(dtype="str"),
            "role": pd.Series(dtype="str"),
        }
    )
