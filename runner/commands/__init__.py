"""The `retrain` command: the only place that prints and chooses exit codes.

Exit codes: 0 success; 1 a stage failed; 2 configuration or usage error; 3 a gate failed; 130 interrupted;
`retrain monitor` only: 4 the champion has decayed (1: the monitor notebook failed).
A RetrainError is shown as its message alone; anything else is a bug and is shown with its traceback.
Everything printed (by this module, by a library, in a traceback) passes through the secrets' redactor:
stdout and stderr are wrapped for the duration of `main`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from rich.console import Console

from runner import __version__
from runner.errors import (
    EXIT_BUG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ConfigError,
    Problem,
    RetrainError,
    UsageError,
    did_you_mean,
    exit_code_for_status,
)
from runner.files import append_text
from runner.project import PIPELINE_FILE, REPORTS_DIR
from runner.secrets import RedactingStream, Redactor, names_in_file

DEFAULT_MINUTE_PRICE_USD = 0.008  # a 2-core Linux runner at GitHub's list price

if TYPE_CHECKING:
    from runner.engine.config import Pipeline
    from runner.records import RunRecord
    from runner.report.notify import Links


def main(argv: Sequence[str] | None = None) -> int:
    # papermill and nbclient log what the run record already says (a timeout, a failing cell) to stderr
    logging.getLogger("papermill").setLevel(logging.CRITICAL)
    logging.getLogger("traitlets").setLevel(logging.CRITICAL)
    # MLflow sets its own loggers to INFO when imported ("Created version 3 ...": the summary says it)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in [
        key for key, value in os.environ.items() if key.startswith("MLFLOW_TRACKING_") and not value
    ]:
        del os.environ[name]  # a secret that is not set reaches a workflow step as an empty variable
    parser = build_parser()
    # the secrets' values are known before the arguments are parsed: argparse's own messages are redacted
    pipeline = _pipeline_argument_of(argv if argv is not None else sys.argv[1:])
    redact = Redactor.from_environ(names_in_file(pipeline), os.environ)
    with _redacted_output(redact):
        args = parser.parse_args(argv)
        args.redact = redact
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
        except Exception:  # a bug: its traceback, printed here so that it is redacted too
            traceback.print_exc()
            return EXIT_BUG


@contextmanager
def _redacted_output(redact: Redactor) -> Iterator[None]:
    """stdout and stderr through the redactor while `main` runs, whoever writes to them."""
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(stdout, redact), RedactingStream(stderr, redact)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with suppress(OSError, ValueError):  # a closed pipe: nothing more can be said there
                stream.flush()
        sys.stdout, sys.stderr = stdout, stderr


def _pipeline_argument_of(argv: Sequence[str]) -> Path:
    """The pipeline file the command line names (the first argument ending in .yaml/.yml), else the default;
    used only to learn which variables are secrets before argparse runs."""
    after_option = {index + 1 for index, arg in enumerate(argv) if arg in ("--params-file", "-p", "--param")}
    named = [
        arg
        for index, arg in enumerate(argv)
        if arg.endswith((".yaml", ".yml")) and not arg.startswith("-") and index not in after_option
    ]
    return Path(named[0] if named else os.environ.get("RETRAIN_PIPELINE") or PIPELINE_FILE)


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
    run.add_argument(
        "--force",
        nargs="?",
        action="append",
        default=[],
        metavar="STAGE",
        help="execute every stage even when the cache holds its results; --force STAGE: that stage and the"
        " stages that need it (repeatable)",
    )
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
        "--max-parallel",
        type=_at_least_one,
        default=None,
        metavar="N",
        help="execute at most N stages at once (default: pipeline.yaml's max_parallel, else the cores)",
    )
    run.add_argument(
        "--wait",
        type=float,
        default=float(os.environ.get("RETRAIN_LOCK_WAIT_S") or 0),
        metavar="SECONDS",
        help="when another run holds the project, wait up to this long for it (default: $RETRAIN_LOCK_WAIT_S"
        " or 0: exit 2 at once, naming it)",
    )
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

    rerender = commands.add_parser(
        "report", help="draw a run's pages again from its run.json and notebooks (runs nothing)"
    )
    rerender.add_argument(
        "run_id", nargs="?", default=None, help="the run, a folder of reports/ (default: the latest)"
    )
    _pipeline_argument(rerender)
    rerender.add_argument(
        "--show-code", action="store_true", help="show code cells expanded in the stage pages"
    )
    rerender.set_defaults(handler=command_report)

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

    monitor = commands.add_parser(
        "monitor", help="score the champion on the weeks it has not seen; exit 4 when it has decayed"
    )
    _pipeline_argument(monitor)
    monitor.set_defaults(handler=command_monitor)

    _github_parser(commands)

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
    _pipeline_argument(replay)
    replay.set_defaults(handler=command_demo_replay)
    return parser


def _github_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from runner.github.actions import MONITORING_BRANCH, STATE_BRANCH

    github = commands.add_parser("github", help="the steps of the GitHub Actions workflow")
    actions = github.add_subparsers(dest="github_command", required=True, metavar="ACTION")
    plan = actions.add_parser("plan", help="mode, trigger and `retrain run` arguments for this event")
    plan.set_defaults(handler=command_github_plan)
    comment = actions.add_parser("comment", help="post or update the pull request's comment about a run")
    comment.add_argument("run_id", help="the run, a folder of reports/")
    comment.add_argument("--artifact-url", default="", help="where the run's reports can be downloaded")
    comment.set_defaults(handler=command_github_comment)
    state = actions.add_parser(
        "state", help=f"restore or save the embedded registry on branch {STATE_BRANCH}"
    )
    directions = state.add_subparsers(dest="action", required=True, metavar="pull|push")
    pull = directions.add_parser("pull", help="restore mlruns/ from the state branch, when it exists")
    push = directions.add_parser("push", help="commit mlruns/ to the state branch and push it")
    push.add_argument("--run-id", default="", help="save only when this full run changed the registry")
    for sub in (pull, push):
        sub.add_argument("--remote", default="origin", help="the git remote (default: origin)")
        sub.add_argument(
            "--branch",
            default=None,
            help=f"the state branch (default: {STATE_BRANCH}; with --monitoring, {MONITORING_BRANCH})",
        )
        sub.add_argument(
            "--monitoring",
            action="store_true",
            help="the folder of the monitoring log (pipeline.yaml: monitor.log) instead of mlruns/",
        )
        sub.set_defaults(handler=command_github_state)
    data = actions.add_parser("data", help="commit and push what a run did with the new data")
    data_directions = data.add_subparsers(dest="action", required=True, metavar="push")
    data_push = data_directions.add_parser(
        "push", help="commit the drops a run accepted or quarantined and push them to the branch"
    )
    data_push.add_argument("--run-id", required=True, help="the run, a folder of reports/")
    data_push.add_argument("--remote", default="origin", help="the git remote (default: origin)")
    data_push.add_argument("--branch", default=None, help="the branch (default: $GITHUB_REF_NAME)")
    data_push.set_defaults(handler=command_github_data)
    cost = actions.add_parser("summary-cost", help="add the job's minutes and their cost to the step summary")
    cost.add_argument("--started", type=float, required=True, help="when the job started, in epoch seconds")
    cost.add_argument("--run-id", default="", help="the run whose pipeline minutes to show")
    cost.set_defaults(handler=command_github_summary_cost)
    pages = actions.add_parser(
        "pages", help="build the GitHub Pages site: the last N runs' pages and the history, kept on a branch"
    )
    pages.add_argument("--keep", type=int, default=20, help="how many runs' pages to keep (default 20)")
    pages.add_argument("--site", type=Path, default=Path("_site"), help="the folder to build (default _site)")
    pages.add_argument("--remote", default="origin", help="the git remote (default: origin)")
    pages.set_defaults(handler=command_github_pages)
    for sub in (comment, pull, push, data_push, cost, pages):
        _pipeline_argument(sub)


def _pipeline_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "pipeline",
        nargs="?",
        type=Path,
        default=Path(os.environ.get("RETRAIN_PIPELINE") or PIPELINE_FILE),
        help="the pipeline file (default: $RETRAIN_PIPELINE, else pipeline.yaml)",
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


def _at_least_one(text: str) -> int:
    """argparse type of --max-parallel: an integer >= 1 (argparse turns the ValueError into exit 2)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _load(args: argparse.Namespace) -> Pipeline:
    from runner.engine.config import load_pipeline
    from runner.engine.params import parse_overrides

    overrides = parse_overrides(getattr(args, "params", []), getattr(args, "params_file", None))
    return load_pipeline(args.pipeline, overrides)


def command_check(args: argparse.Namespace, console: Console) -> int:
    pipeline = _load(args)
    gates = sum(len(stage.gates) for stage in pipeline.stages.values())
    order = " -> ".join(pipeline.stages)
    console.print(f"{args.pipeline}: valid. {len(pipeline.stages)} stages ({order}), {gates} gates.")
    return EXIT_OK


def command_run(args: argparse.Namespace, console: Console) -> int:
    from runner.engine import graph, intake
    from runner.pipeline import RunOptions, run_pipeline
    from runner.report import terminal as display

    force_all, force_named = _force_arguments(args)
    pipeline = _load(args)
    selected = _selection(args.only, list(pipeline.stages))
    idle = intake.nothing_new(pipeline.data, pipeline.root, args.trigger, force_all or bool(force_named))
    if idle is not None:
        console.print(idle, soft_wrap=True)
        return EXIT_OK
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    options = RunOptions(
        trigger=args.trigger,
        mode=args.mode,
        only=tuple(args.only),
        selected=frozenset(graph.with_upstream(selected, pipeline.needs)) if selected else None,
        force=force_all,
        force_stages=_forced_stages(force_named, pipeline),
        warm_kernels=os.environ.get("RETRAIN_WARM_KERNELS", "1") != "0",
        fork_kernels=os.environ.get("RETRAIN_FORK_KERNELS", "1") != "0",
        max_parallel=args.max_parallel,
        show_code=args.show_code,
        step_summary=Path(summary_file) if summary_file else None,
        notify=not args.no_notify,
        links=_links(),
        environ=dict(os.environ),
        lock_wait_s=max(0.0, args.wait) if math.isfinite(args.wait) else 0.0,
        on_lock_wait=lambda holder: console.print(
            f"waiting up to {args.wait:g} s for the run that holds this project: {holder}", soft_wrap=True
        ),
    )
    with _cancellable(), display.RunProgress(console) as progress:
        record, run_dir = run_pipeline(pipeline, options, progress)
    code = exit_code_for_status(record.status)
    _github_outputs(record, run_dir, console, args.redact)
    _show_notifications(console, record, args.redact)  # first: the run's own outcome stays in the last lines
    console.print(display.summary(record))
    for line in display.problems(record):
        console.print(line, soft_wrap=True)
    data = display.data_line(record)
    if data is not None:
        console.print(data, soft_wrap=True)
    console.print(display.outcome_line(record, run_dir, code), soft_wrap=True)
    return code


def command_monitor(args: argparse.Namespace, console: Console) -> int:
    from runner.production import monitor

    pipeline = _load(args)
    with _cancellable(), console.status("monitoring the champion"):
        check = monitor.run_monitor(pipeline)
    redact = Redactor.from_environ(pipeline.secrets, os.environ)
    _write_outputs(
        {
            "status": check.status,
            "decay": "true" if check.status == "decay" else "false",
            "live": "" if check.live is None else repr(check.live),
            "registered": "" if check.registered is None else repr(check.registered),
            "check_id": check.check_id,
            "report_dir": check.report_dir or "",
        },
        redact,
    )
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        append_text(Path(summary), monitor.summary_markdown(check) + "\n", redact=redact)
    if check.status == "decay" and os.environ.get("GITHUB_ACTIONS") == "true":
        console.print(_annotation("Champion decayed", check.detail, "warning"), markup=False)
    where = f"; report: {check.report_dir}/{monitor.NOTEBOOK_NAME}.html" if check.report_dir else ""
    logged = pipeline.monitor.log_source if pipeline.monitor else ""
    console.print(
        f"{check.status}: {check.detail} (exit {check.exit_code}; logged to {logged}{where})",
        soft_wrap=True,
        markup=False,
        style="red" if check.exit_code else "",
    )
    return check.exit_code


def _force_arguments(args: argparse.Namespace) -> tuple[bool, list[str]]:
    """`--force` alone: every stage; `--force STAGE`: named stages. `retrain run --force pipeline.yaml`
    (the pipeline after a bare --force, as before --force took a stage) still means the pipeline."""
    named = []
    force_all = False
    for value in args.force:
        if value is None:
            force_all = True
        elif value.endswith((".yaml", ".yml")) and args.pipeline == Path(PIPELINE_FILE):
            args.pipeline, force_all = Path(value), True
        else:
            named.append(value)
    return force_all, named


def _forced_stages(named: list[str], pipeline: Pipeline) -> frozenset[str]:
    """The stages `--force STAGE` executes: each named stage and every stage that needs it."""
    from runner.engine import graph

    _check_stage_names("--force", named, list(pipeline.stages))
    return frozenset(named).union(*(graph.downstream_of(name, pipeline.needs) for name in named))


def command_notify(args: argparse.Namespace, console: Console) -> int:
    from runner.report import notify
    from runner.report import pages as report

    pipeline = _load(args)
    record, run_dir = _run_record(pipeline.root, args.run_id)
    links = _links(artifact_url=args.artifact_url)
    redact = Redactor.from_environ(pipeline.secrets, os.environ)
    record.notifications = notify.announce(record, pipeline.notify, links, os.environ, redact)
    report.write_run_json(run_dir, record, redact=redact)
    _show_notifications(console, record, redact, links)
    return EXIT_OK


def command_report(args: argparse.Namespace, console: Console) -> int:
    from runner.pipeline import rerender_run

    pipeline = _load(args)
    run_id = args.run_id or _latest_run(pipeline.root)
    record, run_dir = _run_record(pipeline.root, run_id)
    redact = Redactor.from_environ(pipeline.secrets, os.environ)
    rendered = rerender_run(pipeline, record, run_dir, redact, show_code=args.show_code)
    stages = ", ".join(rendered) if rendered else "no stage page (no executed notebook)"
    console.print(f"run {record.run_id}: rendered {stages}, the run page and the history", soft_wrap=True)
    console.print(f"report: {(run_dir / 'index.html').relative_to(pipeline.root)}", soft_wrap=True)
    return EXIT_OK


def _latest_run(root: Path) -> str:
    """The newest run folder with a run.json (run ids sort by time)."""
    reports = root / REPORTS_DIR
    runs = sorted(path.parent.name for path in reports.glob("*/run.json")) if reports.is_dir() else []
    if not runs:
        raise UsageError(f"no run in {reports}: `retrain run` makes one")
    return runs[-1]


def _github_outputs(record: RunRecord, run_dir: Path, console: Console, redact: Redactor) -> None:
    """In GitHub Actions: step outputs (run_id, status, model_version, report_dir) and ::error annotations."""
    version = record.model.version if record.model and record.model.version else ""
    outputs = {
        "run_id": record.run_id,
        "status": record.status,
        "model_version": version,
        "report_dir": run_dir.relative_to(run_dir.parent.parent).as_posix(),
        "exit_code": str(exit_code_for_status(record.status)),
    }
    _write_outputs(outputs, redact)
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


def _annotation(title: str, message: str, level: str = "error") -> str:
    """A workflow command; %, CR and LF are escaped as GitHub requires, so one message stays one line."""

    def escape(text: str) -> str:
        return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    return f"::{level} title={escape(title).replace(',', '%2C').replace(':', '%3A')}::{escape(message)}"


def _links(artifact_url: str | None = None) -> Links:
    """Links to the workflow run, from what GitHub Actions sets; empty elsewhere."""
    from runner.report.notify import Links

    server, repository, run = (
        os.environ.get(key) for key in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    run_url = f"{server}/{repository}/actions/runs/{run}" if server and repository and run else None
    return Links(run_url=run_url, artifact_url=artifact_url)


def _show_notifications(
    console: Console, record: RunRecord, redact: Redactor, links: Links | None = None
) -> None:
    """One line per channel; with no webhook, the message itself goes to the console and step summary."""
    from runner.report.notify import NO_WEBHOOK, text_message

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
                text = "\n#### Message\n\n```text\n" + message + "\n```\n"
                append_text(Path(summary), text, redact=redact)


def _selection(only: list[str], stages: list[str]) -> list[str]:
    _check_stage_names("--only", only, stages)
    return only


def _check_stage_names(option: str, names: list[str], stages: list[str]) -> None:
    """ConfigError naming each stage an option names that the pipeline does not have."""
    problems = [
        Problem(
            "command line",
            f"{option} {name}",
            f"unknown stage '{name}'",
            did_you_mean(name, stages) or f"stages are: {', '.join(stages)}",
        )
        for name in names
        if name not in stages
    ]
    if problems:
        raise ConfigError(problems)


def command_models(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from runner.production import lifecycle

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
    from runner.production import lifecycle

    pipeline = _load(args)
    console.print(
        lifecycle.promote_version(pipeline, lifecycle.open_registry(pipeline), args.version), soft_wrap=True
    )
    return EXIT_OK


def command_rollback(args: argparse.Namespace, console: Console) -> int:
    from runner.production import lifecycle

    pipeline = _load(args)
    console.print(lifecycle.rollback_to(lifecycle.open_registry(pipeline), args.to), soft_wrap=True)
    return EXIT_OK


def command_demo_replay(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from runner.demo.replay import replay

    _load(args)  # a broken pipeline fails before any week is dropped
    rows = replay(args.pipeline, args.weeks, source=args.source, corrupt=set(args.corrupt))
    table = Table(title=f"replay of {len(rows)} weeks", title_justify="left")
    columns = ("week", "status", "exit", "version", "champion", "wape", "champion wape", "data")
    for column in (*columns, "what happened"):
        table.add_column(column)
    for row in rows:
        shown = [f"{value:.4f}" if value is not None else "" for value in (row.wape, row.champion_wape)]
        table.add_row(
            row.week,
            row.status,
            str(row.exit_code),
            row.version or "",
            row.champion or "",
            *shown,
            row.data,
            row.what,
        )
    console.print(table)
    return EXIT_OK


def command_github_plan(args: argparse.Namespace, console: Console) -> int:
    from runner.github import actions as github

    event_name = os.environ.get("GITHUB_EVENT_NAME", "")
    chosen = github.plan(event_name, _event(), os.environ.get("GITHUB_REF", ""))
    force = "true" if chosen.force else "false"
    _write_outputs(
        {"mode": chosen.mode, "trigger": chosen.trigger, "force": force, "args": chosen.command_line},
        args.redact,
    )
    console.print(f"{event_name}: {chosen.mode} run ({chosen.reason})", soft_wrap=True, markup=False)
    console.print(f"retrain run {chosen.command_line}", soft_wrap=True, markup=False)
    return EXIT_OK


def command_github_comment(args: argparse.Namespace, console: Console) -> int:
    from runner.github import actions as github

    record, _ = _run_record(_project_root(args.pipeline), args.run_id)
    event = _event()
    number = (event.get("pull_request") or {}).get("number")
    token, repository = os.environ.get("GITHUB_TOKEN"), os.environ.get("GITHUB_REPOSITORY", "")
    if not isinstance(number, int):
        raise UsageError("the event is not a pull request's: there is no pull request to comment on")
    if not token:
        raise UsageError("GITHUB_TOKEN is not set: give the step `env: GITHUB_TOKEN: ${{ github.token }}`")
    marker = github.comment_marker(record.pipeline)
    body = github.pr_comment_body(record, marker, _links().run_url or "", args.artifact_url)
    api = os.environ.get("GITHUB_API_URL") or "https://api.github.com"
    try:
        url = github.upsert_pr_comment(api, repository, number, token, body, marker)
    except github.GitHubApiError as error:
        head = ((event.get("pull_request") or {}).get("head") or {}).get("repo") or {}
        if error.status != 403 or head.get("full_name") in (None, repository):
            raise
        console.print(_annotation("No pull request comment", f"{error}", "warning"), markup=False)
        return EXIT_OK  # a fork's pull request gets a read-only token: the step summary has the run
    console.print(f"pull request #{number}: {url}", soft_wrap=True, markup=False)
    return EXIT_OK


def command_github_state(args: argparse.Namespace, console: Console) -> int:
    from runner.github import actions as github
    from runner.project import MLFLOW_DIR

    root = _project_root(args.pipeline)
    if args.monitoring:
        return _monitoring_state(args, root, console)
    args.branch = args.branch or github.STATE_BRANCH
    if os.environ.get("MLFLOW_TRACKING_URI"):
        console.print("state: MLFLOW_TRACKING_URI is set: the registry lives on that server; nothing to do")
        return EXIT_OK
    env, store = github.git_environment(os.environ), root / MLFLOW_DIR
    if args.action == "pull":
        console.print(f"state: {github.pull_state(root, store, env, args.remote, args.branch)}", markup=False)
        return EXIT_OK
    message = "registry state"
    if getattr(args, "run_id", ""):
        record, _ = _run_record(root, args.run_id)
        if record.mode != "full" or not github.registry_changed(record):
            why = record.model.detail if record.model else "no model was registered"
            console.print(f"state: run {record.run_id} did not change the registry ({why})", markup=False)
            return EXIT_OK
        assert record.model is not None
        message = f"registry after run {record.run_id} ({record.trigger}, {record.git_sha or 'no sha'})\n\n"
        message += record.model.detail
    detail = github.push_state(root, store, env, message, args.remote, args.branch)
    console.print(f"state: {detail}", soft_wrap=True, markup=False)
    if "had moved" in detail and os.environ.get("GITHUB_ACTIONS") == "true":  # another run saved meanwhile
        console.print(_annotation("Registry state replaced", detail, "warning"), markup=False)
    return EXIT_OK


def command_github_data(args: argparse.Namespace, console: Console) -> int:
    from pathlib import PurePosixPath

    from runner.github import actions as github

    pipeline = _load(args)
    record, _ = _run_record(pipeline.root, args.run_id)
    if pipeline.data is None or record.data is None or record.data.action not in ("accepted", "quarantined"):
        console.print(f"data: run {record.run_id} moved no data", markup=False)
        return EXIT_OK
    branch = args.branch or os.environ.get("GITHUB_REF_NAME", "")
    if not branch or os.environ.get("GITHUB_REF_TYPE", "branch") != "branch":
        raise UsageError("no branch to push the data moves to: pass --branch (or run in a branch's workflow)")
    data = pipeline.data
    folders = {str(PurePosixPath(pattern).parent) for pattern in data.new}
    paths = sorted(folders | {data.history, data.accepted, data.quarantine})
    message = f"data {record.data.action} by run {record.run_id} ({record.trigger})\n\n{record.data.detail}"
    env = github.git_environment(os.environ)
    detail = github.push_data(pipeline.root, paths, env, message, branch, args.remote)
    console.print(f"data: {detail}", soft_wrap=True, markup=False)
    return EXIT_OK


def command_github_pages(args: argparse.Namespace, console: Console) -> int:
    from runner.github import actions as github
    from runner.github import pages as publish
    from runner.pipeline import remembered_runs

    if args.keep < 1:
        raise UsageError(f"--keep {args.keep}: keep at least one run")
    pipeline = _load(args)
    site = args.site if args.site.is_absolute() else pipeline.root / args.site
    if site.exists() and any(site.iterdir()):
        raise UsageError(f"{site} is not empty: the site is built in an empty folder")
    env = github.git_environment(os.environ)
    known = remembered_runs(pipeline)
    reports = pipeline.root / REPORTS_DIR
    redact = Redactor.from_environ(pipeline.secrets, os.environ)
    said = publish.publish(pipeline.root, reports, site, args.keep, known, env, redact, args.remote)
    console.print(f"pages: {said}", soft_wrap=True, markup=False)
    return EXIT_OK


def _monitoring_state(args: argparse.Namespace, root: Path, console: Console) -> int:
    """`retrain github state pull|push --monitoring`: the monitoring log's folder on its own branch."""
    from runner.github import actions as github

    monitor = _load(args).monitor
    if monitor is None:
        raise UsageError(f"{args.pipeline} has no `monitor` section: there is no monitoring log to keep")
    folder = monitor.log.parent
    if folder.resolve() == root.resolve():
        fix = "put the log in a folder of its own (monitor.log: monitoring/checks.jsonl): that folder is kept"
        raise UsageError(f"monitor.log {monitor.log_source} is in the project root; {fix}")
    env, branch = github.git_environment(os.environ), args.branch or github.MONITORING_BRANCH
    if args.action == "pull":
        said = github.pull_state(root, folder, env, args.remote, branch, what="the log")
    else:
        message = f"monitoring log: {monitor.log_source}"
        said = github.push_state(root, folder, env, message, args.remote, branch)
    console.print(f"monitoring log: {said}", soft_wrap=True, markup=False)
    return EXIT_OK


def command_github_summary_cost(args: argparse.Namespace, console: Console) -> int:
    import time

    from runner.report import pages as report

    text = os.environ.get("RUNNER_MINUTE_PRICE_USD", "").strip()
    try:
        price = float(text) if text else DEFAULT_MINUTE_PRICE_USD
    except ValueError:
        price = math.nan
    if not math.isfinite(price) or price < 0:
        raise UsageError(f"RUNNER_MINUTE_PRICE_USD={text!r} is not a price in dollars a minute (e.g. 0.008)")
    run_s = _run_record(_project_root(args.pipeline), args.run_id)[0].duration_s if args.run_id else None
    markdown = report.cost_markdown(max(0.0, time.time() - args.started), price, run_s)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        append_text(Path(summary), "\n" + markdown, redact=args.redact)
    console.print(markdown.splitlines()[2], soft_wrap=True, markup=False)
    return EXIT_OK


def _event() -> dict[str, Any]:
    """The event payload GitHub wrote to $GITHUB_EVENT_PATH."""
    path = os.environ.get("GITHUB_EVENT_PATH")
    if not path:
        raise UsageError("GITHUB_EVENT_PATH is not set: this command runs inside GitHub Actions")
    try:
        event = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read the event payload {path}: {error}") from None
    if not isinstance(event, dict):
        raise UsageError(f"the event payload {path} is not a JSON object")
    return event


def _write_outputs(values: dict[str, str], redact: Redactor) -> None:
    """Append `key=value` lines to $GITHUB_OUTPUT, when set (a line break would forge another output)."""
    output = os.environ.get("GITHUB_OUTPUT")
    if not output:
        return
    if any("\n" in value or "\r" in value for value in values.values()):
        raise ValueError("step outputs must be one line each")
    append_text(Path(output), "".join(f"{key}={value}\n" for key, value in values.items()), redact=redact)


def _project_root(pipeline: Path) -> Path:
    if not pipeline.is_file():
        raise UsageError(f"no pipeline file {pipeline} (pass its path, or set RETRAIN_PIPELINE)")
    return pipeline.resolve().parent


def _run_record(root: Path, run_id: str) -> tuple[RunRecord, Path]:
    """A finished run's record, read from reports/<run_id>/run.json, and its folder."""
    from runner.records import RunRecord

    if not run_id or "/" in run_id or "\\" in run_id or run_id.startswith("."):
        raise UsageError(f"not a run id: {run_id!r}")
    run_json = root / REPORTS_DIR / run_id / "run.json"
    if not run_json.parent.is_dir():
        known = sorted(path.parent.name for path in (root / REPORTS_DIR).glob("*/run.json"))
        latest = f"; the latest is {known[-1]}" if known else ""
        raise UsageError(f"no run {run_id} in {root / REPORTS_DIR} ({len(known)} runs there{latest})")
    try:
        return RunRecord.from_json(json.loads(run_json.read_text(encoding="utf-8"))), run_json.parent
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise UsageError(f"cannot read run {run_id}: {run_json}: {error}") from None


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _cancellable() -> Iterator[None]:
    """SIGTERM (a cancelled workflow) and SIGINT (Ctrl-C) both cancel the work inside, whatever this process
    inherited: a command started in the background by a non-interactive shell inherits SIGINT ignored."""
    previous = {signum: signal.signal(signum, _raise_interrupt) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _root(args: argparse.Namespace) -> Path:
    from runner.project import find_root

    try:
        return args.root.resolve() if args.root else find_root()
    except FileNotFoundError as error:
        raise ConfigError(
            [Problem(PIPELINE_FILE, "", str(error), "run inside the project or pass --root")]
        ) from None


def command_demo_fetch(args: argparse.Namespace, console: Console) -> int:
    from runner.demo import walmart as demo

    console.print(f"demo data: {demo.fetch_source(_root(args))}")
    return EXIT_OK


def command_demo_reset(args: argparse.Namespace, console: Console) -> int:
    from runner.demo import walmart as demo

    console.print(f"history rebuilt: {demo.reset_history(_root(args), discard_new=args.discard_new)}")
    return EXIT_OK


def command_demo_next_week(args: argparse.Namespace, console: Console) -> int:
    from runner.demo import walmart as demo

    console.print(f"new drop: {demo.next_week(_root(args), source=args.source)}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
