"""`retrain models`, `retrain promote` and `retrain rollback`: the registered versions, and which one
serves."""

from __future__ import annotations

import argparse
from typing import Any

from runner.commands.settings import Settings
from runner.commands.shared import Context, load, pipeline_argument
from runner.errors import EXIT_OK

COMMANDS = ("models", "promote", "rollback")  # the commands add_parsers adds


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
    from runner.report.numbers import Numbers

    pipeline = load(args, ctx)
    registry = lifecycle.open_registry(pipeline)
    numbers = Numbers(pipeline.key_metric)
    title = f"{registry.name} · {registry.tracking_uri}"
    if numbers.key is not None:
        title += f" · {numbers.title}: {numbers.direction()}"
    # Text, never markup: notes quote what a smoke check or a person wrote
    table = Table(title=Text(title), title_justify="left")
    for column in ("version", "aliases", *numbers.shown, "created", "run", "notes"):
        table.add_column(column, justify="right" if column in numbers.shown else "left")
    for version in registry.versions():
        metrics = version.metrics
        noted = [key for key in ("smoke_check", "rolled_back") if version.lineage(key)]
        if lifecycle.check_state(version) == lifecycle.PASSED:
            noted.remove("smoke_check")  # the usual case: only what needs a look is a note
        cells = (
            version.version,
            ", ".join(version.aliases),
            *(numbers.value(metrics.get(name), name) for name in numbers.shown),
            version.created_at,
            version.lineage("run_id") or "",
            "; ".join(f"{key}: {version.lineage(key)}" for key in noted),
        )
        table.add_row(*(Text(cell) for cell in cells))
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
