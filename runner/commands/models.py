"""`retrain models`, `retrain promote` and `retrain rollback`: the registered versions, and which one
serves."""

from __future__ import annotations

import argparse
from typing import Any

from runner.commands.settings import Settings
from runner.commands.shared import Context, load, pipeline_argument
from runner.errors import EXIT_OK


def add_parsers(commands: Any, settings: Settings) -> None:
    models = commands.add_parser("models", help="list the registered versions, aliases and key metrics")
    pipeline_argument(models, settings)
    models.set_defaults(handler=command_models)
    promote = commands.add_parser("promote", help="make a registered version the champion (smoke-checked)")
    promote.add_argument("version", help="the version to promote")
    pipeline_argument(promote, settings)
    promote.set_defaults(handler=command_promote)
    rollback = commands.add_parser(
        "rollback", help="make the previous champion (or --to VERSION) the champion"
    )
    rollback.add_argument("--to", metavar="VERSION", default=None, help="the version to go back to")
    pipeline_argument(rollback, settings)
    rollback.set_defaults(handler=command_rollback)


def command_models(args: argparse.Namespace, ctx: Context) -> int:
    from rich.table import Table
    from rich.text import Text

    from runner.production import lifecycle

    pipeline = load(args, ctx)
    registry = lifecycle.open_registry(pipeline)
    # Text, never markup: notes quote what a smoke check or a person wrote
    table = Table(title=Text(f"{registry.name} · {registry.tracking_uri}"), title_justify="left")
    for column in ("version", "aliases", *lifecycle.KEY_METRICS, "created", "run", "notes"):
        table.add_column(column)
    for row in lifecycle.version_rows(registry):
        table.add_row(*(Text(cell) for cell in row))
    ctx.console.print(table)
    return EXIT_OK


def command_promote(args: argparse.Namespace, ctx: Context) -> int:
    from runner.production import lifecycle

    pipeline = load(args, ctx)
    ctx.say(lifecycle.promote_version(pipeline, lifecycle.open_registry(pipeline), args.version))
    return EXIT_OK


def command_rollback(args: argparse.Namespace, ctx: Context) -> int:
    from runner.production import lifecycle

    pipeline = load(args, ctx)
    ctx.say(lifecycle.rollback_to(pipeline, lifecycle.open_registry(pipeline), args.to))
    return EXIT_OK
