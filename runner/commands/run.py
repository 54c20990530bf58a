"""`retrain run`, `retrain check`, `retrain report` and `retrain notify`: a run, its validation, its pages
drawn again, its message sent later."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.commands.settings import Settings
from runner.commands.shared import (
    Context,
    check_stage_names,
    latest_run,
    load,
    parameter_arguments,
    pipeline_argument,
    run_context,
    run_record,
)
from runner.errors import EXIT_OK, UsageError, exit_code_for_status
from runner.project import PIPELINE_FILE

if TYPE_CHECKING:
    from runner.engine.config import Pipeline
    from runner.records import RunRecord
    from runner.report.notify import Links

Subparsers = Any  # argparse's private _SubParsersAction

COMMANDS = ("run", "deploy", "check", "report", "notify")  # the commands add_parsers adds


def add_parsers(commands: Subparsers, settings: Settings) -> None:
    run = commands.add_parser("run", help="run the pipeline")
    pipeline_argument(run, settings)
    parameter_arguments(run)
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
        default=settings.trigger,
        help="what started this run, recorded in run.json (default: $RETRAIN_TRIGGER or manual)",
    )
    run.add_argument(
        "--hold-promotion",
        action="store_true",
        help="register the model but leave the promotion to `retrain promote` (promotion: manual for this"
        " run; the workflow's approval job)",
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
        type=_seconds,
        default=settings.lock_wait_s,
        metavar="SECONDS",
        help="when another run holds the project, wait up to this long for it (default: $RETRAIN_LOCK_WAIT_S"
        " or 0: exit 75 at once, naming it)",
    )
    run.add_argument(
        "--no-notify",
        action="store_true",
        help="send no message now (a later `retrain notify RUN_ID` sends it)",
    )
    run.set_defaults(handler=command_run)

    deploy = commands.add_parser(
        "deploy",
        help="run the model's deploy stages with the champion as it is (after `retrain promote` or"
        " `retrain rollback`); nothing else runs and the registry is not written",
    )
    pipeline_argument(deploy, settings)
    deploy.add_argument("--trigger", default=settings.trigger, help="recorded in run.json (default: manual)")
    deploy.add_argument("--no-notify", action="store_true", help="send no message now")
    deploy.set_defaults(
        handler=command_run,
        deploy_only=True,
        params=[],
        params_file=None,
        only=[],
        force=[],
        mode="full",
        show_code=False,
        max_parallel=None,
        wait=settings.lock_wait_s,
    )

    check = commands.add_parser("check", help="validate the pipeline and parameters; run nothing")
    pipeline_argument(check, settings)
    parameter_arguments(check)
    check.set_defaults(handler=command_check)

    rerender = commands.add_parser(
        "report", help="draw a run's pages again from its run.json and notebooks (runs nothing)"
    )
    rerender.add_argument(
        "run_id", nargs="?", default=None, help="the run, a folder of reports/ (default: the latest)"
    )
    pipeline_argument(rerender, settings)
    rerender.add_argument(
        "--show-code", action="store_true", help="show code cells expanded in the stage pages"
    )
    rerender.set_defaults(handler=command_report)

    notify = commands.add_parser("notify", help="send a finished run's message to Slack and email")
    notify.add_argument("run_id", help="the run, a folder of reports/")
    notify.add_argument("--artifact-url", default=None, help="where the run's reports can be downloaded")
    pipeline_argument(notify, settings)
    notify.set_defaults(handler=command_notify)


def _at_least_one(text: str) -> int:
    """argparse type of --max-parallel: an integer >= 1 (argparse turns the ValueError into exit 2)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _seconds(text: str) -> float:
    """argparse type of --wait: seconds, at least 0 (infinite or not a number: 0)."""
    value = float(text)
    return max(0.0, value) if value == value and value not in (float("inf"), float("-inf")) else 0.0


def command_check(args: argparse.Namespace, ctx: Context) -> int:
    pipeline = load(args, ctx, scrap_names=True)
    gates = sum(len(stage.gates) for stage in pipeline.stages.values())
    order = " -> ".join(pipeline.stages)
    ctx.say(f"{args.pipeline}: valid. {len(pipeline.stages)} stages ({order}), {gates} gates.")
    return EXIT_OK


def command_run(args: argparse.Namespace, ctx: Context) -> int:
    from runner.engine import graph, intake
    from runner.pipeline import RunOptions, run_pipeline
    from runner.report import terminal
    from runner.report.outcome import outcome_of

    force_all, force_named = _force_arguments(args)
    pipeline = load(args, ctx)
    if getattr(args, "hold_promotion", False) and pipeline.model is not None:
        pipeline = replace(pipeline, model=pipeline.model.model_copy(update={"promotion": "manual"}))
    check_stage_names("--only", args.only, list(pipeline.stages))
    deploy_only = bool(getattr(args, "deploy_only", False))
    if deploy_only and (pipeline.model is None or not pipeline.model.deploy):
        raise UsageError(f"{args.pipeline} has no `model.deploy` stages: there is nothing to deploy")
    idle = intake.nothing_new(pipeline.data, pipeline.root, args.trigger, force_all or bool(force_named))
    if idle is not None and not deploy_only:
        ctx.say(idle)
        return EXIT_OK
    settings = ctx.settings
    deploying = frozenset(pipeline.model.deploy) if deploy_only and pipeline.model else frozenset()
    selected = frozenset(graph.with_upstream(args.only, pipeline.needs)) if args.only else None
    options = RunOptions(
        trigger=args.trigger,
        mode=args.mode,
        only=tuple(sorted(deploying)) or tuple(args.only),
        selected=deploying or selected,
        force=force_all,
        force_stages=deploying or _forced_stages(force_named, pipeline),
        deploy_only=deploy_only,
        warm_kernels=settings.warm_kernels,
        fork_kernels=settings.fork_kernels,
        max_parallel=args.max_parallel,
        show_code=args.show_code,
        step_summary=settings.github.step_summary,
        notify=not args.no_notify,
        links=ctx.links(),
        environ=settings.environ,
        lock_wait_s=args.wait,
        on_lock_wait=lambda holder: ctx.say(
            f"waiting up to {args.wait:g} s for the run that holds this project: {holder}"
        ),
        context=run_context(ctx),
    )
    with terminal.RunProgress(ctx.console) as progress:  # Ctrl-C and SIGTERM: runner/interrupts.py
        record, run_dir = run_pipeline(pipeline, options, progress)
    code = exit_code_for_status(record.status)
    _github_outputs(record, run_dir, ctx)
    show_notifications(ctx, record)  # first: the run's own outcome stays in the last lines
    outcome = outcome_of(record)
    ctx.console.print(terminal.summary(outcome))
    for warning in progress.warnings:  # held while the table was live
        ctx.say(f"  warning: {warning}", style="dim")
    for line in terminal.final_lines(outcome, run_dir, code):
        ctx.say(line)
    return code


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

    check_stage_names("--force", named, list(pipeline.stages))
    return frozenset(named).union(*(graph.downstream_of(name, pipeline.needs) for name in named))


def command_notify(args: argparse.Namespace, ctx: Context) -> int:
    from runner.report import notify, pages

    pipeline = load(args, ctx)
    record, run_dir = run_record(pipeline.root, args.run_id)
    links = ctx.links(artifact_url=args.artifact_url)
    record.notifications = notify.announce(record, pipeline.notify, links, ctx.settings.environ, ctx.redact)
    pages.write_run_json(run_dir, record, redact=ctx.redact)
    show_notifications(ctx, record, links)
    return EXIT_OK


def command_report(args: argparse.Namespace, ctx: Context) -> int:
    from runner.pipeline import rerender_run

    pipeline = load(args, ctx)
    run_id = args.run_id or latest_run(pipeline.root)
    record, run_dir = run_record(pipeline.root, run_id)
    rendered = rerender_run(pipeline, record, run_dir, ctx.redact, show_code=args.show_code)
    stages = ", ".join(rendered) if rendered else "no stage page (no executed notebook)"
    ctx.say(f"run {record.run_id}: rendered {stages}, the run page and the history")
    ctx.say(f"report: {(run_dir / 'index.html').relative_to(pipeline.root)}")
    return EXIT_OK


def _github_outputs(record: RunRecord, run_dir: Path, ctx: Context) -> None:
    """In GitHub Actions: step outputs (run_id, status, model_version, report_dir) and ::error annotations."""
    version = record.model.version if record.model and record.model.version else ""
    ctx.outputs(
        {
            "run_id": record.run_id,
            "status": record.status,
            "model_version": version,
            "report_dir": run_dir.relative_to(run_dir.parent.parent).as_posix(),
            "exit_code": str(exit_code_for_status(record.status)),
        }
    )
    if not ctx.settings.github.actions:
        return
    for stage in record.stages.values():
        for gate in stage.failed_gates:
            ctx.annotate(f"Gate failed in {stage.name}", f"{gate.expr}: {gate.detail}")
        if stage.error:
            ctx.annotate(f"Stage {stage.name} failed", stage.error)
    if record.model is not None and record.model.error:
        ctx.annotate("Model not released", record.model.error)


def show_notifications(ctx: Context, record: RunRecord, links: Links | None = None) -> None:
    """One line per channel; with no webhook, the message itself goes to the console and step summary."""
    from runner.report.notify import NO_WEBHOOK
    from runner.report.outcome import outcome_of
    from runner.report.text import text_message

    for sent in record.notifications:
        state = "sent" if sent.delivered else "not sent"
        ctx.say(f"{sent.channel}: {state}: {sent.detail}", style="" if sent.delivered else "yellow")
        if sent.detail == NO_WEBHOOK:
            links = links or ctx.links()
            message = text_message(
                outcome_of(record), run_url=links.run_url or "", artifact_url=links.artifact_url or ""
            )
            ctx.step_summary("\n#### Message\n\n```text\n" + message + "\n```\n")
