"""What every command family uses: the context a handler gets, the common arguments, loading the pipeline,
reading a finished run, and GitHub Actions' step outputs and annotations."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from runner.commands.settings import Settings
from runner.errors import ConfigError, Problem, UsageError, did_you_mean
from runner.files import append_text
from runner.project import REPORTS_DIR
from runner.secrets import Redactor

if TYPE_CHECKING:
    from runner.engine.config import Pipeline
    from runner.records import RunContext, RunRecord
    from runner.report.notify import Links


@dataclass(frozen=True)
class Context:
    """What a command's handler is given besides its arguments."""

    console: Console
    settings: Settings
    redact: Redactor  # the secrets of the pipeline the command line names (stdout and stderr pass through it)

    def say(self, text: object, style: str = "") -> None:
        """One message, never read as rich markup (it may quote a user's text) and never wrapped."""
        self.console.print(text, soft_wrap=True, markup=False, style=style)

    def annotate(self, title: str, message: str, level: str = "error") -> None:
        """A GitHub Actions annotation (::error, ::warning), written whole: rich would wrap or cut it."""
        self.console.file.flush()
        sys.stdout.write(annotation(title, message, level) + "\n")
        sys.stdout.flush()

    def outputs(self, values: Mapping[str, str]) -> None:
        """Append `key=value` lines to $GITHUB_OUTPUT, when set (a line break would forge another output)."""
        output = self.settings.github.output
        if output is None:
            return
        if any("\n" in value or "\r" in value for value in values.values()):
            raise ValueError("step outputs must be one line each")
        text = "".join(f"{key}={value}\n" for key, value in values.items())
        append_text(output, text, redact=self.redact)

    def step_summary(self, markdown: str) -> None:
        """Append to $GITHUB_STEP_SUMMARY, when set."""
        if self.settings.github.step_summary is not None:
            append_text(self.settings.github.step_summary, markdown, redact=self.redact)

    def links(self, artifact_url: str | None = None) -> Links:
        from runner.report.notify import Links

        return Links(run_url=self.settings.github.run_url, artifact_url=artifact_url)


def annotation(title: str, message: str, level: str = "error") -> str:
    """A workflow command; %, CR and LF are escaped as GitHub requires, so one message stays one line."""

    def escape(text: str) -> str:
        return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    return f"::{level} title={escape(title).replace(',', '%2C').replace(':', '%3A')}::{escape(message)}"


def pipeline_argument(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.add_argument(
        "pipeline",
        nargs="?",
        type=Path,
        default=settings.pipeline,
        help="the pipeline file (default: $RETRAIN_PIPELINE, else pipeline.yaml)",
    )


def parameter_arguments(parser: argparse.ArgumentParser) -> None:
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


def load(args: argparse.Namespace, ctx: Context, *, scrap_names: bool = False) -> Pipeline:
    """The pipeline the command line names, validated with its `-p` and `--params-file` overrides
    (`scrap_names`: and the names of the scraps it reads, against what its notebooks record)."""
    from runner.engine.config import load_pipeline
    from runner.engine.params import parse_overrides

    overrides = parse_overrides(getattr(args, "params", []), getattr(args, "params_file", None))
    environ = ctx.settings.environ
    return load_pipeline(args.pipeline, overrides, environ=environ, scrap_names=scrap_names)


def check_stage_names(option: str, names: list[str], stages: list[str]) -> None:
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


def project_root(pipeline: Path) -> Path:
    if not pipeline.is_file():
        raise UsageError(f"no pipeline file {pipeline} (pass its path, or set RETRAIN_PIPELINE)")
    return pipeline.resolve().parent


def run_record(root: Path, run_id: str) -> tuple[RunRecord, Path]:
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


def latest_run(root: Path) -> str:
    """The newest run folder with a run.json (run ids sort by time)."""
    reports = root / REPORTS_DIR
    runs = sorted(path.parent.name for path in reports.glob("*/run.json")) if reports.is_dir() else []
    if not runs:
        raise UsageError(f"no run in {reports}: `retrain run` makes one")
    return runs[-1]


def run_context(ctx: Context) -> RunContext:
    """Who and what started this run: GitHub Actions' actor, pull request and links; locally, the user."""
    from runner.records import RunContext

    github = ctx.settings.github
    actor = github.actor or getpass_user()
    payload: dict[str, Any] = {}
    if github.event_path:
        with suppress(UsageError):
            payload = event(ctx)
    pr = payload.get("pull_request") or {}
    number = pr.get("number") if isinstance(pr.get("number"), int) else None
    commit = f"{github.repository_url}/commit/{github.sha}" if github.repository_url else ""
    if github.repository_url and not github.sha:
        commit = f"{github.repository_url}/commit/"  # the run completes it with the commit checked out
    return RunContext(
        actor=actor,
        commit_url=commit,
        pr_number=number,
        pr_title=str(pr.get("title") or ""),
        pr_url=str(pr.get("html_url") or ""),
        run_url=github.run_url or "",
    )


def getpass_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no user name for this uid (a container)
        return ""


def event(ctx: Context) -> dict[str, Any]:
    """The event payload GitHub wrote to $GITHUB_EVENT_PATH."""
    path = ctx.settings.github.event_path
    if not path:
        raise UsageError("GITHUB_EVENT_PATH is not set: this command runs inside GitHub Actions")
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read the event payload {path}: {error}") from None
    if not isinstance(payload, dict):
        raise UsageError(f"the event payload {path} is not a JSON object")
    return payload
