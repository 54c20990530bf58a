"""The environment, read once: what `retrain` takes from environment variables, as one typed object.

The commands read `Settings` and pass plain values on; nothing below the commands reads `os.environ` for
its own choices (the kernels inherit the environment, and secrets are looked up in `environ`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runner.errors import UsageError
from runner.project import PIPELINE_FILE

DEFAULT_MINUTE_PRICE_USD = 0.008  # a 2-core Linux runner at GitHub's list price


@dataclass(frozen=True)
class GitHubContext:
    """What GitHub Actions tells a step about its run (all empty outside GitHub Actions)."""

    actions: bool = False  # GITHUB_ACTIONS == "true"
    actor: str = ""  # GITHUB_ACTOR: who pushed, merged or dispatched
    sha: str = ""
    event_name: str = ""
    event_path: str = ""
    ref: str = ""
    ref_name: str = ""
    ref_type: str = "branch"
    repository: str = ""
    server_url: str = ""
    api_url: str = "https://api.github.com"
    run_id: str = ""
    token: str = ""
    step_summary: Path | None = None
    output: Path | None = None

    @property
    def repository_url(self) -> str:
        return f"{self.server_url}/{self.repository}" if self.server_url and self.repository else ""

    @property
    def run_url(self) -> str | None:
        """The workflow run's page, when known."""
        if self.server_url and self.repository and self.run_id:
            return f"{self.server_url}/{self.repository}/actions/runs/{self.run_id}"
        return None


@dataclass(frozen=True)
class Settings:
    pipeline: Path = Path(PIPELINE_FILE)  # RETRAIN_PIPELINE, else pipeline.yaml in the working directory
    trigger: str = "manual"  # RETRAIN_TRIGGER
    lock_wait_s: float = 0.0  # RETRAIN_LOCK_WAIT_S
    warm_kernels: bool = True  # RETRAIN_WARM_KERNELS=0 turns it off
    fork_kernels: bool = True  # RETRAIN_FORK_KERNELS=0 turns it off
    minute_price_text: str = ""  # RUNNER_MINUTE_PRICE_USD, checked when the cost is shown
    tracking_uri: str = ""  # MLFLOW_TRACKING_URI: a tracking server instead of the embedded store
    github: GitHubContext = field(default_factory=GitHubContext)
    environ: Mapping[str, str] = field(default_factory=dict)  # the whole environment: secrets' values

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        def path(name: str) -> Path | None:
            return Path(environ[name]) if environ.get(name) else None

        github = GitHubContext(
            actions=environ.get("GITHUB_ACTIONS") == "true",
            actor=environ.get("GITHUB_ACTOR", ""),
            sha=environ.get("GITHUB_SHA", ""),
            event_name=environ.get("GITHUB_EVENT_NAME", ""),
            event_path=environ.get("GITHUB_EVENT_PATH", ""),
            ref=environ.get("GITHUB_REF", ""),
            ref_name=environ.get("GITHUB_REF_NAME", ""),
            ref_type=environ.get("GITHUB_REF_TYPE", "branch"),
            repository=environ.get("GITHUB_REPOSITORY", ""),
            server_url=environ.get("GITHUB_SERVER_URL", ""),
            api_url=environ.get("GITHUB_API_URL") or "https://api.github.com",
            run_id=environ.get("GITHUB_RUN_ID", ""),
            token=environ.get("GITHUB_TOKEN", ""),
            step_summary=path("GITHUB_STEP_SUMMARY"),
            output=path("GITHUB_OUTPUT"),
        )
        return cls(
            pipeline=Path(environ.get("RETRAIN_PIPELINE") or PIPELINE_FILE),
            trigger=environ.get("RETRAIN_TRIGGER") or "manual",
            lock_wait_s=_seconds(environ.get("RETRAIN_LOCK_WAIT_S", "")),
            warm_kernels=environ.get("RETRAIN_WARM_KERNELS", "1") != "0",
            fork_kernels=environ.get("RETRAIN_FORK_KERNELS", "1") != "0",
            minute_price_text=environ.get("RUNNER_MINUTE_PRICE_USD", "").strip(),
            tracking_uri=environ.get("MLFLOW_TRACKING_URI", ""),
            github=github,
            environ=dict(environ),
        )

    @property
    def minute_price(self) -> float:
        """RUNNER_MINUTE_PRICE_USD in dollars a minute (default: a 2-core Linux runner's list price)."""
        text = self.minute_price_text
        try:
            price = float(text) if text else DEFAULT_MINUTE_PRICE_USD
        except ValueError:
            price = math.nan
        if not math.isfinite(price) or price < 0:
            what = "is not a price in dollars a minute (e.g. 0.008)"
            raise UsageError(f"RUNNER_MINUTE_PRICE_USD={text!r} {what}")
        return price


def _seconds(text: str) -> float:
    try:
        value = float(text) if text.strip() else 0.0
    except ValueError:
        return 0.0
    return max(0.0, value) if math.isfinite(value) else 0.0


def tidy_environment() -> None:
    """What a workflow step hands over that must not reach MLflow or the kernels as it is: a secret that is
    not set arrives as an empty variable (MLflow would take an empty tracking URI or password literally)."""
    empty = [key for key, value in os.environ.items() if key.startswith("MLFLOW_TRACKING_") and not value]
    for name in empty:
        del os.environ[name]
    # MLflow sets its own loggers to INFO when imported ("Created version 3 ...": the summary says it)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
