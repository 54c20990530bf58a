"""Is there anything to do? Asked first in a workflow job, before anything is installed.

    python -m runner.github.precheck      (the standard library and PyYAML only: `uv run --with pyyaml`)

A scheduled job, or a push, with no new drop retrains nothing (`retrain run` says "nothing new" and exits 0).
Knowing that before the install saves the whole install (minutes on a hosted runner) on the jobs that find
nothing, the most frequent ones. The answer goes to $GITHUB_OUTPUT as `run=true|false` and `reason=...`.

The check fails open: anything it cannot read or is not sure about (no `data` section, a pipeline file it
cannot parse, a trigger that always runs, a dispatch asking to force) answers `run=true`, and `retrain run`
decides with the whole configuration. It skips only what `retrain run` would skip: a trigger listed in
`data.skip_when_nothing_new` with no waiting drop (runner/engine/drops.py, shared with the run's intake).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.engine.drops import waiting_files

DEFAULT_SKIPPED = ("schedule", "push")  # DataSpec.skip_when_nothing_new's default


def decide(event_name: str, event: Mapping[str, Any], pipeline: Path) -> tuple[bool, str]:
    """(run, why) for this event and pipeline file."""
    trigger, force = _trigger(event_name, event)
    if force:
        return True, f"{event_name}: asked to force the run"
    try:
        import yaml

        spec = yaml.safe_load(pipeline.read_text(encoding="utf-8"))
    except Exception as error:  # fail open: `retrain run` reports a broken pipeline file properly
        return True, f"cannot read {pipeline.name} here ({type(error).__name__}): the run decides"
    data = spec.get("data") if isinstance(spec, dict) else None
    if not isinstance(data, dict):
        return True, f"{pipeline.name} has no data section: every {trigger} run retrains"
    skipped = data.get("skip_when_nothing_new", list(DEFAULT_SKIPPED))
    if not isinstance(skipped, list) or trigger not in skipped:
        return True, f"a {trigger} run retrains whether or not data is new"
    new, history = data.get("new"), data.get("history")
    accepted = data.get("accepted", "data/accepted")
    if not isinstance(new, list) or not all(isinstance(g, str) for g in new) or not isinstance(history, str):
        return True, f"the data section of {pipeline.name} is not as expected: the run decides"
    try:
        drops, _ = waiting_files(pipeline.parent, new, history, str(accepted))
    except (OSError, ValueError, NotImplementedError) as error:  # an absolute glob, say: `check` names it
        return True, f"cannot look for new data here ({type(error).__name__}): the run decides"
    if drops:
        names = ", ".join(path.name for path, _ in drops[:3]) + (" ..." if len(drops) > 3 else "")
        return True, f"{len(drops)} new drop(s): {names}"
    return False, f"nothing new: no file matches {', '.join(new)}, so a {trigger} run retrains nothing"


def _trigger(event_name: str, event: Mapping[str, Any]) -> tuple[str, bool]:
    """The trigger `retrain github plan` records for the event, and whether the event forces a run."""
    if event_name == "workflow_dispatch":
        inputs = event.get("inputs") or {}
        return "workflow_dispatch", str(inputs.get("force", "")).lower() == "true"
    if event_name == "repository_dispatch":
        payload = event.get("client_payload") or {}
        forced = str(payload.get("force", "")).lower() == "true"
        return str(payload.get("trigger") or "repository_dispatch"), forced
    return event_name, False


def main(environ: Mapping[str, str]) -> int:
    pipeline = Path(environ.get("RETRAIN_PIPELINE") or "pipeline.yaml")
    event: Any = {}
    if environ.get("GITHUB_EVENT_PATH"):
        try:
            event = json.loads(Path(environ["GITHUB_EVENT_PATH"]).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            event = {}
    event = event if isinstance(event, dict) else {}
    run, why = decide(environ.get("GITHUB_EVENT_NAME", ""), event, pipeline)
    print(f"{'run' if run else 'skip'}: {why}")
    output = environ.get("GITHUB_OUTPUT")
    if output:
        with open(output, "a", encoding="utf-8") as handle:
            handle.write(f"run={'true' if run else 'false'}\nreason={why.replace(chr(10), ' ')}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(os.environ))
