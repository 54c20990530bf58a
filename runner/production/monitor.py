"""`retrain monitor`: is the champion still as good as when it was registered?

    the pipeline's `monitor` section -> the champion (registry) -> none: `no_champion`
    -> the monitor notebook scores it on the labeled periods after the newest one it saw (papermill, its
    own kernel) -> its scraps (scrapbook) -> compared with the metric the champion was registered with
    -> ok | decay | no_data | too_few_periods | failed -> `reports/monitoring/<check_id>/` (executed
    notebook, its page, check.json) -> one JSON line appended to the monitoring log

The notebook measures; the verdict is taken here, from the registry's metric and the section's threshold, so
that a notebook cannot pass itself. Nothing here prints or exits: the CLI does (exit 4 on decay).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runner.engine.config import Pipeline
from runner.engine.execute import execute_notebook
from runner.engine.monitor_spec import Monitor
from runner.engine.params import injected
from runner.engine.scraps import read_scraps
from runner.errors import EXIT_DECAY, EXIT_OK, EXIT_STAGE_FAILED, UsageError
from runner.files import atomic_write_text
from runner.production import lifecycle
from runner.production.registry import RegistryError, Version
from runner.project import PRODUCTS_DIR, REPORTS_DIR, git_sha
from runner.report import pages as report
from runner.secrets import Redactor

MONITORING_DIR = "monitoring"  # under reports/: one folder per check (no run.json: not a run)
NOTEBOOK_NAME = "monitor"  # <folder>/monitor.ipynb and monitor.html
_EXIT_BY_STATUS = {
    "ok": EXIT_OK,
    "no_data": EXIT_OK,
    "too_few_periods": EXIT_OK,
    "no_champion": EXIT_OK,
    "decay": EXIT_DECAY,
    "failed": EXIT_STAGE_FAILED,
}


@dataclass
class Check:
    """One check of the champion: what the log line, check.json and the step outputs say."""

    check_id: str
    checked_at: str
    pipeline: str
    model: str
    metric: str
    max_decay: float | None  # relative: how much worse than registered is decay
    limit: float | None  # absolute: the worst acceptable live value
    min_periods: int
    period: str  # what one period of the data is (pipeline.yaml data.period)
    status: str = "failed"  # ok | decay | no_data | too_few_periods | no_champion | failed
    detail: str = ""
    champion_version: str | None = None
    registered: float | None = None  # the champion's metric when it was registered
    live: float | None = None  # the same metric on the periods it has not seen
    decay: float | None = None  # (live - registered) / registered, sign turned when higher is better
    periods: list[str] = field(default_factory=list)  # the periods scored, the champion saw none of them
    n_rows: int | None = None
    data_until: str | None = None  # the newest week the champion saw
    report_dir: str | None = None  # relative to the project root
    git_sha: str | None = None
    duration_s: float = 0.0

    @property
    def exit_code(self) -> int:
        return _EXIT_BY_STATUS[self.status]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: a non-finite number (a decay against a registered 0) is written as null."""
        values = asdict(self)
        for key in ("registered", "live", "decay"):
            if isinstance(values[key], float) and not math.isfinite(values[key]):
                values[key] = None
        return values


def run_monitor(pipeline: Pipeline) -> Check:
    """Check the champion once; the check is also appended to the monitoring log (whatever its status)."""
    monitor = pipeline.monitor
    if monitor is None or pipeline.model is None:
        raise UsageError(
            f"{pipeline.path.name} has no `monitor` section: add one to check the champion "
            "(see README.md, Monitoring)"
        )
    started = time.monotonic()
    redact = Redactor.from_environ(pipeline.secrets, os.environ)  # what the notebook prints may hold one
    now = datetime.now(UTC)
    check = Check(
        check_id=f"{now:%Y%m%dT%H%M%SZ}-{now.microsecond // 1000:03d}{secrets.token_hex(2)[:3]}",
        checked_at=now.isoformat(timespec="seconds"),
        pipeline=pipeline.name,
        model=pipeline.model.name,
        metric=monitor.metric,
        max_decay=monitor.max_decay,
        limit=monitor.limit,
        min_periods=monitor.min_periods,
        period=monitor.period,
        git_sha=git_sha(pipeline.root),
    )
    try:
        champion = lifecycle.open_registry(pipeline).champion_fast()
    except RegistryError as error:
        champion = None
        check.detail = f"the registry cannot be read: {error}"
    if champion is None:
        if not check.detail:
            check.status = "no_champion"
            check.detail = f"{check.model} has no champion yet: there is no model to monitor"
    else:
        check.champion_version = champion.version
        score_champion(pipeline.root, monitor, champion, check, redact, pipeline.compute)
    check.duration_s = round(time.monotonic() - started, 3)
    if check.report_dir is not None:
        folder = pipeline.root / check.report_dir
        atomic_write_text(folder / "check.json", json.dumps(check.to_json(), indent=2) + "\n", redact=redact)
    append_line(monitor.log, check.to_json(), redact)
    return check


def score_champion(
    root: Path,
    monitor: Monitor,
    champion: Version,
    check: Check,
    redact: Redactor,
    compute: Mapping[str, Any],
) -> None:
    """Run the monitor notebook on the champion, render its page, and judge what it measured."""
    folder = root / REPORTS_DIR / MONITORING_DIR / check.check_id
    (folder / PRODUCTS_DIR).mkdir(parents=True)
    check.report_dir = folder.relative_to(root).as_posix()
    given = injected(
        monitor.declared,
        products=folder / PRODUCTS_DIR,
        run_id=check.check_id,
        mode="monitor",
        champion_uri=champion.uri,  # pinned: the version judged is the one logged, even if aliases move
        compute=compute,
    )
    parameters = {**monitor.params, **given}
    executed = folder / f"{NOTEBOOK_NAME}.ipynb"
    result = execute_notebook(
        monitor.notebook, executed, parameters, cwd=root, timeout_s=monitor.timeout, redact=redact
    )
    if result.interrupted:
        raise KeyboardInterrupt
    if executed.is_file():
        title = f"{check.pipeline} · monitoring version {champion.version}"
        # a check is not a run: no run index to link to, only the executed notebook
        page = folder / f"{NOTEBOOK_NAME}.html"
        report.render_stage_html(executed, page, title=title, crumbs=(), redact=redact)
    if result.failure is not None:
        check.status = "failed"
        check.detail = f"the monitor notebook failed: {result.failure.message}"
        return
    judge(read_scraps(executed), monitor, champion, check)


def judge(scraps: dict[str, Any], monitor: Monitor, champion: Version, check: Check) -> None:
    """The verdict: the live metric against the registered one (relative) and against the limit (absolute),
    on enough new periods. The notebook records them as `periods` (`weeks`, an older notebook's name)."""
    periods = scraps.get("periods", scraps.get("weeks"))
    check.periods = [str(period) for period in periods] if isinstance(periods, list) else []
    check.n_rows = _number(scraps.get("n_rows"), int)
    check.data_until = str(scraps.get("data_until") or "") or None
    unit = monitor.period
    saw = f"version {champion.version} saw the data up to {check.data_until or 'an unknown ' + unit}"
    if not check.periods:
        check.status = "no_data"
        check.detail = f"no labeled {unit} after those it saw ({saw}): nothing to score"
        return
    check.registered = champion.metrics.get(monitor.metric)
    check.live = _number(scraps.get(monitor.metric), float)
    n, plural = len(check.periods), f"{unit}{'s' if len(check.periods) != 1 else ''}"
    # nothing to judge against is the configuration's fault, whatever the notebook recorded: said first
    if check.registered is None and monitor.limit is None:
        tag = f"metric.{monitor.metric}"
        check.status = "failed"
        check.detail = f"version {champion.version} has no registered {monitor.metric} (tag {tag})"
        return
    if check.live is None or not math.isfinite(check.live):
        check.status = "failed"
        check.detail = f"the monitor notebook recorded no finite '{monitor.metric}' for {n} {plural}"
        return
    span = f"{check.periods[0]}..{check.periods[-1]}"
    measured = f"{monitor.metric} {check.live:.4g} on {n} new {plural} ({span})"
    breaches = []
    if check.registered is not None:
        check.decay = monitor.decay(check.live, check.registered)
        registered = f"{check.registered:.4g} registered by version {champion.version}"
        measured += f" against {registered}: {_change(check.decay)}"
        if monitor.max_decay is not None and check.decay > monitor.max_decay:
            breaches.append(f"more than the {monitor.max_decay:.0%} allowed")
    if monitor.past_limit(check.live):
        worst = "above" if monitor.lower_is_better else "below"
        breaches.append(f"{worst} the limit of {monitor.limit:g}")
    if n < monitor.min_periods:
        check.status = "too_few_periods"
        check.detail = f"{measured}; not judged before {monitor.min_periods} new {unit}s"
    elif breaches:
        check.status = "decay"
        check.detail = f"{measured}, {' and '.join(breaches)}: retrain"
    else:
        check.status = "ok"
        allowed = [f"within the {monitor.max_decay:.0%} allowed"] if monitor.max_decay is not None else []
        if monitor.limit is not None:
            side = "below" if monitor.lower_is_better else "above"
            allowed.append(f"{side} the limit of {monitor.limit:g}")
        check.detail = f"{measured}, {' and '.join(allowed)}"


def append_line(log: Path, entry: dict[str, Any], redact: Redactor) -> None:
    """Append one JSON line to the log with a single O_APPEND write, then fsync: checks running at the same
    time never interleave inside a line, and a line is on disk before the command says it was recorded."""
    log.parent.mkdir(parents=True, exist_ok=True)
    data = redact.redact(json.dumps(entry, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"{log}: wrote {written} of {len(data)} bytes of a monitoring line")
        os.fsync(fd)
    finally:
        os.close(fd)


def summary_markdown(check: Check) -> str:
    """The check for the GitHub step summary."""
    icon = {"ok": "✅", "decay": "📉", "failed": "❌"}.get(check.status, "⏸️")
    version = f"version {check.champion_version}" if check.champion_version else "no champion"
    lines = [f"### {icon} {check.pipeline}: monitoring {version}: {check.status}", "", check.detail, ""]
    if check.live is not None and check.registered is not None:
        lines += [f"| {check.metric} | value |", "| --- | ---: |"]
        lines += [f"| registered | {check.registered:.4g} |", f"| live | {check.live:.4g} |"]
        lines += [f"| change | {_change(check.decay)} |", ""]
    return "\n".join(lines)


def _change(decay: float | None) -> str:
    if decay is None or not math.isfinite(decay):
        return "worse than a perfect score" if decay else "no change"
    return f"{abs(decay):.0%} {'worse' if decay > 0 else 'better'}"


def _number(value: Any, kind: type[int] | type[float]) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return kind(value)
