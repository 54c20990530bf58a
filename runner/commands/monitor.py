"""`retrain monitor`: is the champion still as good as when it was registered? Exit 4 when it has decayed."""

from __future__ import annotations

import argparse
from typing import Any

from runner.commands.settings import Settings
from runner.commands.shared import Context, load, pipeline_argument

COMMANDS = ("monitor",)  # the commands add_parsers adds


def add_parsers(commands: Any, settings: Settings) -> None:
    monitor = commands.add_parser(
        "monitor", help="score the champion on the data it has not seen; exit 4 when it has decayed"
    )
    pipeline_argument(monitor, settings)
    monitor.set_defaults(handler=command_monitor)


def command_monitor(args: argparse.Namespace, ctx: Context) -> int:
    from runner.production import monitor

    pipeline = load(args, ctx)
    with ctx.console.status("monitoring the champion"):
        check = monitor.run_monitor(pipeline)
    ctx.outputs(
        {
            "status": check.status,
            "decay": "true" if check.status == "decay" else "false",
            "live": "" if check.live is None else repr(check.live),
            "registered": "" if check.registered is None else repr(check.registered),
            "check_id": check.check_id,
            "report_dir": check.report_dir or "",
        }
    )
    ctx.step_summary(monitor.summary_markdown(check) + "\n")
    if check.status == "decay" and ctx.settings.github.actions:
        ctx.annotate("Champion decayed", check.detail, "warning")
    where = f"; report: {check.report_dir}/{monitor.NOTEBOOK_NAME}.html" if check.report_dir else ""
    logged = pipeline.monitor.log_source if pipeline.monitor else ""
    ctx.say(
        f"{check.status}: {check.detail} (exit {check.exit_code}; logged to {logged}{where})",
        style="red" if check.exit_code else "",
    )
    return check.exit_code
