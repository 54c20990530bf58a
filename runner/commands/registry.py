"""`retrain registry ...`: the registry's store itself: moving it to a tracking server."""

from __future__ import annotations

import argparse
from typing import Any

from runner.commands.settings import Settings
from runner.commands.shared import Context, load, pipeline_argument
from runner.errors import EXIT_OK, UsageError
from runner.project import MLFLOW_DIR, tracking_uri

COMMANDS = ("registry",)  # the commands add_parsers adds


def add_parsers(commands: Any, settings: Settings) -> None:
    registry = commands.add_parser("registry", help="the registry's store: move it to a tracking server")
    actions = registry.add_subparsers(dest="registry_command", required=True, metavar="ACTION")
    migrate = actions.add_parser(
        "migrate",
        help="copy every run, version, alias, tag and metric of the embedded store (mlruns/) to a tracking"
        " server, then check the copy",
    )
    migrate.add_argument(
        "--to",
        default=settings.tracking_uri,
        metavar="URI",
        help="the tracking server (default: $MLFLOW_TRACKING_URI); MLFLOW_TRACKING_USERNAME and"
        " MLFLOW_TRACKING_PASSWORD are its credentials",
    )
    pipeline_argument(migrate, settings)
    migrate.set_defaults(handler=command_migrate)


def command_migrate(args: argparse.Namespace, ctx: Context) -> int:
    from runner.production import migrate, store
    from runner.production.registry import check_reachable

    pipeline = load(args, ctx)
    source = tracking_uri(pipeline.root, environ={})  # the embedded store, whatever MLFLOW_TRACKING_URI says
    folder = pipeline.root / MLFLOW_DIR
    if not (folder / store.DB_FILE).is_file():
        raise UsageError(
            f"no embedded store in {folder}: nothing to migrate (`retrain github state pull` first?)"
        )
    if not args.to or args.to == source:
        raise UsageError("name the tracking server to copy to: --to URI (or set MLFLOW_TRACKING_URI)")
    check_reachable(args.to)
    store.rebase(folder)  # the store's paths point into this folder, wherever it was saved
    ctx.say(f"migrating {source} to {args.to} ...")
    done = migrate.migrate(source, args.to)
    ctx.say(done.summary())
    if done.differences:
        raise migrate.MigrationError(
            f"the copy differs from the source in {len(done.differences)} place(s): "
            + "; ".join(done.differences[:10])
        )
    ctx.say(
        f"checked: every version, tag, alias and run metric is the same on {args.to}. Set MLFLOW_TRACKING_URI"
        " (and its credentials) in the workflow's secrets: the state branch is no longer used"
    )
    return EXIT_OK
