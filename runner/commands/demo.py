"""`retrain demo ...`: the bundled retail demo's data (fetch, reset, next week) and its replay."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from runner.commands.settings import Settings
from runner.commands.shared import Context, load, pipeline_argument
from runner.errors import EXIT_OK, ConfigError, Problem
from runner.project import PIPELINE_FILE


def add_parsers(commands: Any, settings: Settings) -> None:
    demo = commands.add_parser("demo", help="prepare the bundled retail demo's data")
    demo_commands = demo.add_subparsers(dest="demo_command", required=True, metavar="ACTION")
    fetch = demo_commands.add_parser("fetch", help="fetch the source sales file (verified by checksum)")
    fetch.set_defaults(handler=command_fetch)
    reset = demo_commands.add_parser("reset", help="rebuild data/history from the source file")
    reset.add_argument(
        "--discard-new",
        action="store_true",
        help="move drops waiting in data/new to data/quarantine instead of refusing",
    )
    reset.set_defaults(handler=command_reset)
    next_week = demo_commands.add_parser("next-week", help="drop the next real week into data/new")
    next_week.set_defaults(handler=command_next_week)
    for sub in (fetch, reset, next_week):
        sub.add_argument("--root", type=Path, default=None, help="project folder (default: found from here)")
    replay = demo_commands.add_parser("replay", help="drop the next N weeks one by one, running after each")
    replay.add_argument("--weeks", type=int, default=6, help="how many weeks to replay (default 6)")
    replay.add_argument(
        "--corrupt",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="damage the Nth replayed week (text in Weekly_Sales, a repeated row) to see it quarantined",
    )
    for sub in (next_week, replay):
        sub.add_argument(
            "--source",
            type=Path,
            default=None,
            metavar="FILE",
            help="replay weeks from this sales file instead of the fetched demo source",
        )
    pipeline_argument(replay, settings)
    replay.set_defaults(handler=command_replay)


def _root(args: argparse.Namespace) -> Path:
    from runner.project import find_root

    try:
        return args.root.resolve() if args.root else find_root()
    except FileNotFoundError as error:
        raise ConfigError(
            [Problem(PIPELINE_FILE, "", str(error), "run inside the project or pass --root")]
        ) from None


def command_fetch(args: argparse.Namespace, ctx: Context) -> int:
    from runner.demo import walmart

    ctx.say(f"demo data: {walmart.fetch_source(_root(args))}")
    return EXIT_OK


def command_reset(args: argparse.Namespace, ctx: Context) -> int:
    from runner.demo import walmart

    ctx.say(f"history rebuilt: {walmart.reset_history(_root(args), discard_new=args.discard_new)}")
    return EXIT_OK


def command_next_week(args: argparse.Namespace, ctx: Context) -> int:
    from runner.demo import walmart

    ctx.say(f"new drop: {walmart.next_week(_root(args), source=args.source)}")
    return EXIT_OK


def command_replay(args: argparse.Namespace, ctx: Context) -> int:
    from rich.table import Table
    from rich.text import Text

    from runner.demo.replay import replay

    load(args, ctx)  # a broken pipeline fails before any week is dropped
    rows = replay(args.pipeline, args.weeks, source=args.source, corrupt=set(args.corrupt))
    table = Table(title=f"replay of {len(rows)} weeks", title_justify="left")
    columns = ("week", "status", "exit", "version", "champion", "wape", "champion wape", "data")
    for column in (*columns, "what happened"):
        table.add_column(column)
    for row in rows:
        shown = [f"{value:.4f}" if value is not None else "" for value in (row.wape, row.champion_wape)]
        cells = (row.week, row.status, str(row.exit_code), row.version or "", row.champion or "", *shown)
        table.add_row(*(Text(cell) for cell in (*cells, row.data, row.what)))  # Text: `what` quotes errors
    ctx.console.print(table)
    return EXIT_OK
