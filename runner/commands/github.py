"""`retrain github ...`: the steps of the GitHub Actions workflows (runner/github/ does the work)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path, PurePosixPath
from typing import Any

from runner.commands.settings import Settings
from runner.commands.shared import Context, event, load, pipeline_argument, project_root, run_record
from runner.errors import EXIT_OK, UsageError
from runner.github import MONITORING_BRANCH, STATE_BRANCH
from runner.project import MLFLOW_DIR, REPORTS_DIR

COMMANDS = ("github",)  # the commands add_parsers adds


def add_parsers(commands: Any, settings: Settings) -> None:
    github = commands.add_parser("github", help="the steps of the GitHub Actions workflow")
    actions = github.add_subparsers(dest="github_command", required=True, metavar="ACTION")
    plan = actions.add_parser("plan", help="mode, trigger and `retrain run` arguments for this event")
    plan.set_defaults(handler=command_plan)
    comment = actions.add_parser("comment", help="post or update the pull request's comment about a run")
    comment.add_argument("run_id", help="the run, a folder of reports/")
    comment.add_argument("--artifact-url", default="", help="where the run's reports can be downloaded")
    comment.set_defaults(handler=command_comment)
    state = actions.add_parser(
        "state", help=f"restore or save the embedded registry on branch {STATE_BRANCH}"
    )
    directions = state.add_subparsers(dest="action", required=True, metavar="pull|push")
    pull = directions.add_parser("pull", help="restore mlruns/ from the state branch, when it exists")
    push = directions.add_parser("push", help="commit mlruns/ to the state branch and push it")
    push.add_argument(
        "--run-id", default="", help="the run to keep in the store's run log (an evaluate run saves nothing)"
    )
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
        sub.set_defaults(handler=command_state)
    data = actions.add_parser("data", help="commit and push what a run did with the new data")
    data_directions = data.add_subparsers(dest="action", required=True, metavar="push")
    data_push = data_directions.add_parser(
        "push", help="commit the drops a run accepted or quarantined and push them to the branch"
    )
    data_push.add_argument("--run-id", required=True, help="the run, a folder of reports/")
    data_push.add_argument("--remote", default="origin", help="the git remote (default: origin)")
    data_push.add_argument("--branch", default=None, help="the branch (default: $GITHUB_REF_NAME)")
    data_push.set_defaults(handler=command_data)
    stages = actions.add_parser(
        "stage-cache", help="carry the stage cache between jobs (GitHub's cache holds the folder)"
    )
    stage_directions = stages.add_subparsers(dest="action", required=True, metavar="pack|unpack")
    pack = stage_directions.add_parser(
        "pack", help="copy the cache index and the runs it names into --dir; step output `key`"
    )
    unpack = stage_directions.add_parser("unpack", help="put what --dir holds into reports/")
    for sub in (pack, unpack):
        sub.add_argument("--dir", type=Path, default=Path(".retrain-cache"), help="default: .retrain-cache")
        sub.set_defaults(handler=command_stage_cache)
    awaiting = actions.add_parser(
        "awaiting", help="step output `version`: the version a run registered and left for approval"
    )
    awaiting.add_argument("--run-id", required=True, help="the run, a folder of reports/")
    awaiting.set_defaults(handler=command_awaiting)
    cost = actions.add_parser("summary-cost", help="add the job's minutes and their cost to the step summary")
    cost.add_argument("--started", type=float, required=True, help="when the job started, in epoch seconds")
    cost.add_argument("--run-id", default="", help="the run whose pipeline minutes to show")
    cost.set_defaults(handler=command_summary_cost)
    pages = actions.add_parser(
        "pages", help="build the GitHub Pages site: the last N runs' pages and the history, kept on a branch"
    )
    pages.add_argument("--keep", type=int, default=20, help="how many runs' pages to keep (default 20)")
    pages.add_argument("--site", type=Path, default=Path("_site"), help="the folder to build (default _site)")
    pages.add_argument("--remote", default="origin", help="the git remote (default: origin)")
    pages.set_defaults(handler=command_pages)
    for sub in (comment, pull, push, data_push, pack, unpack, awaiting, cost, pages):
        pipeline_argument(sub, settings)


def command_plan(args: argparse.Namespace, ctx: Context) -> int:
    from runner.github import actions

    github = ctx.settings.github
    chosen = actions.plan(github.event_name, event(ctx), github.ref)
    force = "true" if chosen.force else "false"
    ctx.outputs({"mode": chosen.mode, "trigger": chosen.trigger, "force": force, "args": chosen.command_line})
    ctx.say(f"{github.event_name}: {chosen.mode} run ({chosen.reason})")
    ctx.say(f"retrain run {chosen.command_line}")
    return EXIT_OK


def command_comment(args: argparse.Namespace, ctx: Context) -> int:
    from runner.github import actions
    from runner.report.markdown import pr_comment
    from runner.report.outcome import outcome_of

    record, _ = run_record(project_root(args.pipeline), args.run_id)
    payload, github = event(ctx), ctx.settings.github
    number = (payload.get("pull_request") or {}).get("number")
    if not isinstance(number, int):
        raise UsageError("the event is not a pull request's: there is no pull request to comment on")
    if not github.token:
        raise UsageError("GITHUB_TOKEN is not set: give the step `env: GITHUB_TOKEN: ${{ github.token }}`")
    marker = actions.comment_marker(record.pipeline)
    outcome = outcome_of(record)
    body = pr_comment(outcome, marker, run_url=github.run_url or "", artifact_url=args.artifact_url)
    try:
        url = actions.upsert_pr_comment(github.api_url, github.repository, number, github.token, body, marker)
    except actions.GitHubApiError as error:
        head = ((payload.get("pull_request") or {}).get("head") or {}).get("repo") or {}
        if error.status != 403 or head.get("full_name") in (None, github.repository):
            raise
        ctx.annotate("No pull request comment", f"{error}", "warning")
        return EXIT_OK  # a fork's pull request gets a read-only token: the step summary has the run
    ctx.say(f"pull request #{number}: {url}")
    return EXIT_OK


def command_state(args: argparse.Namespace, ctx: Context) -> int:
    from runner.github import actions
    from runner.production import store

    root = project_root(args.pipeline)
    if args.monitoring:
        return _monitoring_state(args, root, ctx)
    args.branch = args.branch or STATE_BRANCH
    if ctx.settings.tracking_uri:
        ctx.say("state: MLFLOW_TRACKING_URI is set: the registry lives on that server; nothing to do")
        return EXIT_OK
    env, folder = actions.git_environment(ctx.settings.environ), root / MLFLOW_DIR
    if args.action == "pull":
        said = actions.pull_state(root, folder, env, args.remote, args.branch)
        moved = store.rebase(folder)  # restored under another folder than it was saved from
        ctx.say(f"state: {said}" + (f"; {moved}" if moved else ""))
        return EXIT_OK
    message = "registry state"
    if getattr(args, "run_id", ""):
        record, run_dir = run_record(root, args.run_id)
        if record.mode != "full":
            ctx.say(f"state: run {record.run_id} ran in mode {record.mode}: it wrote nothing to keep")
            return EXIT_OK
        store.log_run(folder, run_dir / "run.json", record.run_id)  # refused runs too: the history shows them
        detail = record.model.detail if record.model else "no model was registered"
        message = f"{record.status} run {record.run_id} ({record.trigger}, {record.git_sha or 'no sha'})"
        message += f"\n\n{detail}"
    store.rebase(folder)  # store.json says where the saved paths point
    merger = store.RegistryMerge()
    said = actions.push_state(root, folder, env, message, args.remote, args.branch, merge=merger)
    ctx.say(f"state: {said}")
    conflict = merger.champion_conflict
    if conflict is not None:
        text = (
            f"both runs' versions are saved, but this run's promotion lost: {conflict}; the champion is the"
            " one the other run promoted, and this run's version is tagged retrain.not_promoted"
        )
        ctx.annotate("Promotion lost to another run", text)
        raise actions.StateConflict(text)
    return EXIT_OK


def _monitoring_state(args: argparse.Namespace, root: Path, ctx: Context) -> int:
    """`retrain github state pull|push --monitoring`: the monitoring log's folder on its own branch."""
    from runner.github import actions

    monitor = load(args, ctx).monitor
    if monitor is None:
        raise UsageError(f"{args.pipeline} has no `monitor` section: there is no monitoring log to keep")
    folder = monitor.log.parent
    if folder.resolve() == root.resolve():
        fix = "put the log in a folder of its own (monitor.log: monitoring/checks.jsonl): that folder is kept"
        raise UsageError(f"monitor.log {monitor.log_source} is in the project root; {fix}")
    env, branch = actions.git_environment(ctx.settings.environ), args.branch or MONITORING_BRANCH
    if args.action == "pull":
        said = actions.pull_state(root, folder, env, args.remote, branch, what="the log")
    else:
        message = f"monitoring log: {monitor.log_source}"
        said = actions.push_state(root, folder, env, message, args.remote, branch, merge=actions.merge_files)
    ctx.say(f"monitoring log: {said}")
    return EXIT_OK


def command_data(args: argparse.Namespace, ctx: Context) -> int:
    from runner.github import actions

    pipeline = load(args, ctx)
    record, _ = run_record(pipeline.root, args.run_id)
    if pipeline.data is None or record.data is None or record.data.action not in ("accepted", "quarantined"):
        ctx.say(f"data: run {record.run_id} moved no data")
        return EXIT_OK
    github = ctx.settings.github
    branch = args.branch or github.ref_name
    if not branch or github.ref_type != "branch":
        raise UsageError("no branch to push the data moves to: pass --branch (or run in a branch's workflow)")
    data = pipeline.data
    folders = {str(PurePosixPath(pattern).parent) for pattern in data.new}
    paths = sorted(folders | {data.history, data.accepted, data.quarantine})
    message = f"data {record.data.action} by run {record.run_id} ({record.trigger})\n\n{record.data.detail}"
    env = actions.git_environment(ctx.settings.environ)
    fallback = f"retrain/data-{record.run_id}"
    try:
        said = actions.push_data(pipeline.root, paths, env, message, branch, args.remote, fallback=fallback)
    except actions.BranchProtected as protected:  # the run itself succeeded: a person merges the moves
        ctx.say(f"data: {protected}")
        ctx.annotate("Data moves on a branch", str(protected), "warning")
        return EXIT_OK
    ctx.say(f"data: {said}")
    return EXIT_OK


def command_stage_cache(args: argparse.Namespace, ctx: Context) -> int:
    from runner.github import stage_cache

    root = project_root(args.pipeline)
    folder = args.dir if args.dir.is_absolute() else root / args.dir
    reports = root / REPORTS_DIR
    if args.action == "unpack":
        added = stage_cache.unpack(folder, reports, ctx.redact)
        said = f"{len(added)} run(s) restored" if added else "nothing restored (no saved cache here)"
        ctx.say(f"stage cache: {said}")
        return EXIT_OK
    if folder.exists():
        raise UsageError(f"{folder} exists: the stage cache is packed into a new folder")
    key, runs = stage_cache.pack(reports, folder)
    ctx.outputs({"key": key, "runs": str(len(runs))})
    ctx.say(f"stage cache: {len(runs)} run(s) packed as {key}" if key else "stage cache: no index to keep")
    return EXIT_OK


def command_awaiting(args: argparse.Namespace, ctx: Context) -> int:
    """The version a run registered without promoting it (--hold-promotion): what the approval job takes."""
    record, _ = run_record(project_root(args.pipeline), args.run_id)
    model = record.model
    waiting = model is not None and model.action == "registered" and not model.promoted and not model.error
    version = model.version if waiting and model is not None and model.version else ""
    ctx.outputs({"version": version})
    if version:
        ctx.say(f"version {version} awaits approval: the `production` environment's reviewers decide")
        ctx.step_summary(
            f"\n#### Awaiting approval\n\nVersion {version} is registered; the promote job waits for the"
            " `production` environment's reviewers.\n"
        )
    else:
        ctx.say(f"run {record.run_id} registered no new version: nothing awaits approval")
    return EXIT_OK


def command_pages(args: argparse.Namespace, ctx: Context) -> int:
    from runner.github import actions, pages
    from runner.pipeline import remembered_runs

    if args.keep < 1:
        raise UsageError(f"--keep {args.keep}: keep at least one run")
    pipeline = load(args, ctx)
    site = args.site if args.site.is_absolute() else pipeline.root / args.site
    if site.exists() and any(site.iterdir()):
        raise UsageError(f"{site} is not empty: the site is built in an empty folder")
    env = actions.git_environment(ctx.settings.environ)
    known = remembered_runs(pipeline)
    reports = pipeline.root / REPORTS_DIR
    said = pages.publish(pipeline.root, reports, site, args.keep, known, env, ctx.redact, args.remote)
    ctx.say(f"pages: {said}")
    return EXIT_OK


def command_summary_cost(args: argparse.Namespace, ctx: Context) -> int:
    from runner.report import pages

    price = ctx.settings.minute_price
    run_s = run_record(project_root(args.pipeline), args.run_id)[0].duration_s if args.run_id else None
    markdown = pages.cost_markdown(max(0.0, time.time() - args.started), price, run_s)
    ctx.step_summary("\n" + markdown)
    ctx.say(markdown.splitlines()[2])
    return EXIT_OK
