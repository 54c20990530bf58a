"""`retrain replay --drops DIR`: feed a folder of data drops one at a time, running the pipeline after each,
and show what it would have done: a line per drop as it goes, then the table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from runner.commands.settings import Settings
from runner.commands.shared import Context, load, pipeline_argument
from runner.errors import EXIT_OK

COMMANDS = ("replay",)  # the commands add_parsers adds


def add_parsers(commands: Any, settings: Settings) -> None:
    replay = commands.add_parser(
        "replay", help="feed a folder of data drops one by one, running the pipeline after each"
    )
    replay.add_argument(
        "--drops",
        type=Path,
        required=True,
        metavar="DIR",
        help="the drops, fed in the order of their names (a leading 'NN-' orders them and is dropped)",
    )
    replay.add_argument("--trigger", default="replay", help="recorded in each run.json (default replay)")
    pipeline_argument(replay, settings)
    replay.set_defaults(handler=command_replay)


def command_replay(args: argparse.Namespace, ctx: Context) -> int:
    from rich.table import Table
    from rich.text import Text

    from runner.replay import ReplayRow, drops_in, new_folder, replay
    from runner.report.numbers import Numbers

    pipeline = load(args, ctx)  # a broken pipeline fails before any drop is fed
    drops = drops_in(args.drops)
    new_folder(pipeline)  # a pipeline without a data section is refused before any drop is fed
    numbers = Numbers(pipeline.key_metric)

    def told(index: int, name: str, row: ReplayRow | None) -> None:
        where = f"[{index}/{len(drops)}] {name}"
        if row is None:
            ctx.say(f"{where}: running")
            return
        measured = f", {numbers.title} {numbers.value(row.metric)}" if row.metric is not None else ""
        ctx.say(f"{where}: {row.status.replace('_', ' ')}{measured}; data {row.data or 'none'}")

    rows = replay(args.pipeline, drops, trigger=args.trigger, on_drop=told)  # Ctrl-C: runner/interrupts.py
    table = Table(title=f"replay of {len(rows)} drops", title_justify="left")
    title = numbers.title or "metric"
    for column in ("drop", "status", "exit", "version", "champion", title, f"champion {title}", "data"):
        table.add_column(column, justify="right" if title in column else "left")
    table.add_column("what happened")
    for row in rows:
        cells = (row.drop, row.status, str(row.exit_code), row.version or "", row.champion or "")
        measured = (numbers.value(row.metric), numbers.value(row.champion_metric))
        table.add_row(*(Text(cell) for cell in (*cells, *measured, row.data, row.what)))  # Text: no markup
    ctx.console.print(table)
    return EXIT_OK
