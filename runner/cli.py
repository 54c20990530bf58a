"""The `retrain` command: the only place that prints and chooses exit codes.

Exit codes: 0 success; 1 a stage failed; 2 configuration or usage error; 3 a gate failed; 130 interrupted.
A RetrainError is shown as its message alone; anything else is a bug and is shown with its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from rich.console import Console

from runner import __version__
from runner.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    ConfigError,
    Problem,
    RetrainError,
    UsageError,
    did_you_mean,
    exit_code_for_status,
)
from runner.project import PIPELINE_FILE

if TYPE_CHECKING:
    from runner.config import Pipeline
    from runner.notify import Links
    from runner.records import RunRecord


def main(argv: Sequence[str] | None = None) -> int:
    # papermill and nbclient log what the run record already says (a timeout, a failing cell) to stderr
    logging.getLogger("papermill").setLevel(logging.CRITICAL)
    logging.getLogger("traitlets").setLevel(logging.CRITICAL)
    # MLflow sets its own loggers to INFO when imported ("Created version 3 ...": the summary says it)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    parser = build_parser()
    args = parser.parse_args(argv)
    # logs (CI, pipes) have no width: give tables room instead of rich's default of 80 columns
    width = None if sys.stdout.isatty() else 160
    console = Console(highlight=False, width=width)
    errors = Console(stderr=True, highlight=False, width=width)
    try:
        code: int = args.handler(args, console)
        return code
    except ConfigError as error:
        errors.print(f"[bold red]error:[/] {error}", soft_wrap=True)
        return error.exit_code
    except RetrainError as error:
        errors.print(f"[bold red]error:[/] {error}", soft_wrap=True)
        return error.exit_code
    except KeyboardInterrupt:
        errors.print("[bold red]interrupted[/]")
        return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retrain", description="Continuous retraining for notebook pipelines."
    )
    parser.add_argument("--version", action="version", version=f"retrain {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the pipeline")
    _pipeline_argument(run)
    _parameter_arguments(run)
    run.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="STAGE",
        help="run this stage and the stages it needs (repeatable)",
    )
    run.add_argument("--force", action="store_true", help="run even when nothing is new")
    run.add_argument(
        "--mode",
        choices=["full", "evaluate"],
        default="full",
        help="full: train and deploy; evaluate: train and compare only (pull requests)",
    )
    run.add_argument(
        "--trigger",
        default=os.environ.get("RETRAIN_TRIGGER", "manual"),
        help="what started this run, recorded in run.json (default: $RETRAIN_TRIGGER or manual)",
    )
    run.add_argument("--show-code", action="store_true", help="show code cells expanded in the stage pages")
    run.add_argument(
        "--no-notify",
        action="store_true",
        help="send no message now (a later `retrain notify RUN_ID` sends it)",
    )
    run.set_defaults(handler=command_run)

    notify = commands.add_parser("notify", help="send a finished run's message to Slack and email")
    notify.add_argument("run_id", help="the run, a folder of reports/")
    notify.add_argument("--artifact-url", default=None, help="where the run's reports can be downloaded")
    _pipeline_argument(notify)
    notify.set_defaults(handler=command_notify)

    check = commands.add_parser("check", help="validate the pipeline and parameters; run nothing")
    _pipeline_argument(check)
    _parameter_arguments(check)
    check.set_defaults(handler=command_check)

    models = commands.add_parser("models", help="list the registered versions, aliases and key metrics")
    _pipeline_argument(models)
    models.set_defaults(handler=command_models)
    promote = commands.add_parser("promote", help="make a registered version the champion (smoke-checked)")
    promote.add_argument("version", help="the version to promote")
    _pipeline_argument(promote)
    promote.set_defaults(handler=command_promote)
    rollback = commands.add_parser(
        "rollback", help="make the previous champion (or --to VERSION) the champion"
    )
    rollback.add_argument("--to", metavar="VERSION", default=None, help="the version to go back to")
    _pipeline_argument(rollback)
    rollback.set_defaults(handler=command_rollback)

    demo = commands.add_parser("demo", help="prepare the bundled retail demo's data")
    demo_commands = demo.add_subparsers(dest="demo_command", required=True, metavar="ACTION")
    fetch = demo_commands.add_parser("fetch", help="fetch the source sales file (verified by checksum)")
    fetch.set_defaults(handler=command_demo_fetch)
    reset = demo_commands.add_parser("reset", help="rebuild data/history from the source file")
    reset.add_argument(
        "--discard-new",
        action="store_true",
        help="move drops waiting in data/new to data/quarantine instead of refusing",
    )
    reset.set_defaults(handler=command_demo_reset)
    next_week = demo_commands.add_parser("next-week", help="drop the next real week into data/new")
    next_week.set_defaults(handler=command_demo_next_week)
    for sub in (fetch, reset, next_week):
        sub.add_argument("--root", type=Path, default=None, help="project folder (default: found from here)")
    replay = demo_commands.add_parser("replay", help="drop the next N weeks one by one, running after each")
    replay.add_argument("--weeks", type=int, default=6, help="how many weeks to replay (default 6)")
    for sub in (next_week, replay):
        sub.add_argument(
            "--source",
            type=Path,
            default=None,
            metavar="FILE",
            help="replay weeks from this sales file instead of the fetched demo source",
        )
    _pipeline_argument(replay)
    replay.set_defaults(handler=command_demo_replay)
    return parser


def _pipeline_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "pipeline",
        nargs="?",
        type=Path,
        default=Path(PIPELINE_FILE),
        help="the pipeline file (default: pipeline.yaml)",
    )


def _parameter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="params",
        help="override a parameter; VALUE is read as YAML (8, 0.5, true, text)",
    )
    parser.add_argument(
        "--params-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="a YAML file of parameter overrides (-p wins over it)",
    )


def _load(args: argparse.Namespace) -> Pipeline:
    from runner.config import load_pipeline
    from runner.params import parse_overrides

    overrides = parse_overrides(getattr(args, "params", []), getattr(args, "params_file", None))
    return load_pipeline(args.pipeline, overrides)


def command_check(args: argparse.Namespace, console: Console) -> int:
    pipeline = _load(args)
    gates = sum(len(stage.gates) for stage in pipeline.stages.values())
    order = " -> ".join(pipeline.stages)
    console.print(f"{args.pipeline}: valid. {len(pipeline.stages)} stages ({order}), {gates} gates.")
    return EXIT_OK


def command_run(args: argparse.Namespace, console: Console) -> int:
    from runner import display, graph
    from runner.pipeline import RunOptions, run_pipeline

    pipeline = _load(args)
    selected = _selection(args.only, list(pipeline.stages))
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    options = RunOptions(
        trigger=args.trigger,
        mode=args.mode,
        only=tuple(args.only),
        selected=frozenset(graph.with_upstream(selected, pipeline.needs)) if selected else None,
        force=args.force,
        show_code=args.show_code,
        step_summary=Path(summary_file) if summary_file else None,
        notify=not args.no_notify,
        links=_links(),
        environ=dict(os.environ),
    )
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # a cancelled workflow sends SIGTERM
    try:
        with display.RunProgress(console) as progress:
            record, run_dir = run_pipeline(pipeline, options, progress)
    finally:
        signal.signal(signal.SIGTERM, previous)
    code = exit_code_for_status(record.status)
    _github_outputs(record, run_dir, console)
    _show_notifications(console, record)  # first: the run's own outcome stays in the last lines
    console.print(display.summary(record))
    for line in display.problems(record):
        console.print(line, soft_wrap=True)
    console.print(display.outcome_line(record, run_dir, code), soft_wrap=True)
    return code


def command_notify(args: argparse.Namespace, console: Console) -> int:
    from runner import notify, report
    from runner.records import RunRecord

    pipeline = _load(args)
    run_json = pipeline.root / "reports" / args.run_id / "run.json"
    try:
        record = RunRecord.from_json(json.loads(run_json.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"cannot read run {args.run_id}: {run_json}: {error}") from None
    links = _links(artifact_url=args.artifact_url)
    record.notifications = notify.announce(record, pipeline.notify, links, os.environ)
    report.write_run_json(run_json.parent, record)
    _show_notifications(console, record, links)
    return EXIT_OK


def _github_outputs(record: RunRecord, run_dir: Path, console: Console) -> None:
    """In GitHub Actions: step outputs (run_id, status, model_version, report_dir) and ::error annotations."""
    output = os.environ.get("GITHUB_OUTPUT")
    if output:
        version = record.model.version if record.model and record.model.version else ""
        lines = [
            f"run_id={record.run_id}",
            f"status={record.status}",
            f"model_version={version}",
            f"report_dir={run_dir.relative_to(run_dir.parent.parent).as_posix()}",
            f"exit_code={exit_code_for_status(record.status)}",
        ]
        with open(output, "a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
    if os.environ.get("GITHUB_ACTIONS") != "true":
        return
    for stage in record.stages.values():
        for gate in stage.failed_gates:
            console.print(
                _annotation(f"Gate failed in {stage.name}", f"{gate.expr}: {gate.detail}"), markup=False
            )
        if stage.error:
            console.print(_annotation(f"Stage {stage.name} failed", stage.error), markup=False)
    if record.model is not None and record.model.error:
        console.print(_annotation("Model not released", record.model.error), markup=False)


def _annotation(title: str, message: str) -> str:
    """A workflow command; %, CR and LF are escaped as GitHub requires, so one message stays one line."""

    def escape(text: str) -> str:
        return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    return f"::error title={escape(title).replace(',', '%2C').replace(':', '%3A')}::{escape(message)}"


def _links(artifact_url: str | None = None) -> Links:
    """Links to the workflow run, from what GitHub Actions sets; empty elsewhere."""
    from runner.notify import Links

    server, repository, run = (
        os.environ.get(key) for key in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    run_url = f"{server}/{repository}/actions/runs/{run}" if server and repository and run else None
    return Links(run_url=run_url, artifact_url=artifact_url)


def _show_notifications(console: Console, record: RunRecord, links: Links | None = None) -> None:
    """One line per channel; with no webhook, the message itself goes to the console and step summary."""
    from runner.notify import NO_WEBHOOK, text_message

    for sent in record.notifications:
        state = "sent" if sent.delivered else "not sent"
        console.print(
            f"{sent.channel}: {state}: {sent.detail}",
            soft_wrap=True,
            style="" if sent.delivered else "yellow",
        )
        if sent.detail == NO_WEBHOOK:
            message = text_message(record, links or _links())
            console.print(message, soft_wrap=True)
            summary = os.environ.get("GITHUB_STEP_SUMMARY")
            if summary:
                with open(summary, "a", encoding="utf-8") as handle:
                    handle.write("\n#### Message\n\n```text\n" + message + "\n```\n")


def _selection(only: list[str], stages: list[str]) -> list[str]:
    unknown = [name for name in only if name not in stages]
    if unknown:
        problems = [
            Problem(
                "command line",
                f"--only {name}",
                f"unknown stage '{name}'",
                did_you_mean(name, stages) or f"stages are: {', '.join(stages)}",
            )
            for name in unknown
        ]
        raise ConfigError(problems)
    return only


def command_models(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from runner import lifecycle

    pipeline = _load(args)
    registry = lifecycle.open_registry(pipeline)
    table = Table(title=f"{registry.name} · {registry.tracking_uri}", title_justify="left")
    for column in ("version", "aliases", *lifecycle.KEY_METRICS, "created", "run", "notes"):
        table.add_column(column)
    for row in lifecycle.version_rows(registry):
        table.add_row(*row)
    console.print(table)
    return EXIT_OK


def command_promote(args: argparse.Namespace, console: Console) -> int:
    from runner import lifecycle

    pipeline = _load(args)
    console.print(
        lifecycle.promote_version(pipeline, lifecycle.open_registry(pipeline), args.version), soft_wrap=True
    )
    return EXIT_OK


def command_rollback(args: argparse.Namespace, console: Console) -> int:
    from runner import lifecycle

    pipeline = _load(args)
    console.print(lifecycle.rollback_to(lifecycle.open_registry(pipeline), args.to), soft_wrap=True)
    return EXIT_OK


def command_demo_replay(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from runner.replay import replay

    _load(args)  # a broken pipeline fails before any week is dropped
    rows = replay(args.pipeline, args.weeks, source=args.source)
    table = Table(title=f"replay of {len(rows)} weeks", title_justify="left")
    for column in ("week", "status", "exit", "version", "champion", "wape", "champion wape", "what happened"):
        table.add_column(column)
    for row in rows:
        shown = [f"{value:.4f}" if value is not None else "" for value in (row.wape, row.champion_wape)]
        table.add_row(
            row.week, row.status, str(row.exit_code), row.version or "", row.champion or "", *shown, row.what
        )
    console.print(table)
    return EXIT_OK


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _root(args: argparse.Namespace) -> Path:
    from runner.project import find_root

    try:
        return args.root.resolve() if args.root else find_root()
    except FileNotFoundError as error:
        raise ConfigError(
            [Problem(PIPELINE_FILE, "", str(error), "run inside the project or pass --root")]
        ) from None


def command_demo_fetch(args: argparse.Namespace, console: Console) -> int:
    from runner import demo

    console.print(f"demo data: {demo.fetch_source(_root(args))}")
    return EXIT_OK


def command_demo_reset(args: argparse.Namespace, console: Console) -> int:
    from runner import demo

    console.print(f"history rebuilt: {demo.reset_history(_root(args), discard_new=args.discard_new)}")
    return EXIT_OK


def command_demo_next_week(args: argparse.Namespace, console: Console) -> int:
    from runner import demo

    console.print(f"new drop: {demo.next_week(_root(args), source=args.source)}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
