"""Where the runner comes from, written into a new project's requirements.txt: the project installs the
runner as a dependency (its Makefile locally, its workflows in GitHub Actions), never a copy of it.

By default the requirement names the runner as it is installed where `retrain init` runs, from pip's record
of the install (PEP 610's direct_url.json): a git URL pinned to its commit, a local folder, an archive, or a
version from a package index. A local folder works on this machine only: the workflows of a project pushed
to GitHub need a git URL (`retrain init --runner "notebook-retrain @ git+https://github.com/OWNER/REPO@REF"`,
or edit requirements.txt).
"""

from __future__ import annotations

import importlib.metadata
import json
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

DISTRIBUTION = "notebook-retrain"


@dataclass(frozen=True)
class RunnerSource:
    requirement: str  # a line of requirements.txt
    local: bool  # a folder or file of this machine: a GitHub runner cannot install it from there


def runner_source(given: str | None = None) -> RunnerSource:
    """The requirement `given` on the command line, else the one that reinstalls this runner."""
    if given:
        return RunnerSource(given.strip(), _is_local(given))
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return RunnerSource(DISTRIBUTION, False)
    recorded = distribution.read_text("direct_url.json")
    if not recorded:  # installed from a package index
        return RunnerSource(f"{DISTRIBUTION}=={distribution.version}", False)
    direct = json.loads(recorded)
    url = str(direct.get("url", ""))
    vcs = direct.get("vcs_info")
    if isinstance(vcs, dict):
        ref = vcs.get("commit_id") or vcs.get("requested_revision")
        return RunnerSource(
            f"{DISTRIBUTION} @ {vcs.get('vcs', 'git')}+{url}" + (f"@{ref}" if ref else ""), False
        )
    return RunnerSource(f"{DISTRIBUTION} @ {url}", url.startswith("file:"))


def _is_local(requirement: str) -> bool:
    """A folder, an archive or a file URL of this machine (`name @ file:///...`, `../runner`, `-e path`)."""
    text = requirement.strip().removeprefix("-e").strip()
    if " @ " in text:
        target = text.split(" @ ", 1)[1].strip()
        return target.startswith("file:") or urlparse(target).scheme == ""
    return text.startswith(("/", ".", "~", "file:"))


def local_folder(source: RunnerSource) -> str:
    """The folder a local requirement names, for messages."""
    target = source.requirement.strip().removeprefix("-e").strip().split(" @ ", 1)[-1].strip()
    return unquote(urlparse(target).path) if target.startswith("file:") else target
