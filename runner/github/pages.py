"""The site that GitHub Pages serves: the last N runs' pages and the history, kept on a branch between jobs.

A GitHub Actions job starts with this run's folder only, so the pages of earlier runs live on an orphan
branch (`retrain-pages`, like the registry's `retrain-state`): restore it, add this run, keep the newest N run
folders, draw the history again (from those folders and the MLflow store), save the branch. The site holds
pages only (run.json, *.html, *.ipynb): never `products/`, which holds data and model files. Every file
published loses the machine's absolute paths on the way (runner/scrub.py): the executed notebooks and
run.json carry the project's folder in parameters, papermill's metadata and tracebacks.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from runner.files import atomic_write_bytes
from runner.github import PAGES_BRANCH
from runner.github import actions as github
from runner.report import pages as report
from runner.report.history import Remembered
from runner.scrub import MachinePaths
from runner.secrets import Redactor

PAGE_FILES = ("run.json", "*.html", "*.ipynb")


def build_site(reports_dir: Path, site: Path, keep: int, known: Remembered, redact: Redactor) -> list[str]:
    """Copy the page files of every run folder in `reports_dir` into `site` (over what it holds), keep the
    newest `keep` run folders there, and draw the site's history; returns the run ids kept, newest first.
    The project is the folder that holds `reports_dir`: its path and the machine's are scrubbed."""
    if keep < 1:
        raise ValueError("keep at least one run")
    project = reports_dir.resolve().parent
    scrubbing = {html: redact.scrubbing(MachinePaths.of(project, html=html)) for html in (False, True)}
    for run_json in sorted(reports_dir.glob("*/run.json")):
        target = site / run_json.parent.name
        target.mkdir(parents=True, exist_ok=True)
        for pattern in PAGE_FILES:
            for page in run_json.parent.glob(pattern):
                # redacted when written; scrubbed here (pages were scrubbed when written, notebooks were not)
                scrub = scrubbing[page.suffix == ".html"]
                atomic_write_bytes(target / page.name, page.read_bytes(), redact=scrub)
    runs = sorted((path.parent for path in site.glob("*/run.json")), key=lambda path: path.name, reverse=True)
    for old in runs[keep:]:
        shutil.rmtree(old)  # run ids sort by time: the oldest go
    report.render_history_index(site, known=known, redact=scrubbing[True])
    return [path.name for path in runs[:keep]]


def publish(
    repo: Path,
    reports_dir: Path,
    site: Path,
    keep: int,
    known: Remembered,
    env: Mapping[str, str],
    redact: Redactor,
    remote: str = "origin",
) -> str:
    """Restore the published site from its branch into `site` (empty or missing), add the runs in
    `reports_dir`, keep the newest `keep`, save the branch; returns what happened in one line."""
    restored = github.pull_state(repo, site, env, remote, PAGES_BRANCH)
    kept = build_site(reports_dir, site, keep, known, redact)
    message = f"reports: {', '.join(kept[:3])}{' …' if len(kept) > 3 else ''} ({len(kept)} runs kept)"
    saved = github.push_state(repo, site, env, message, remote, PAGES_BRANCH, merge=github.keep_ours)
    return f"{restored}; {len(kept)} runs in {site.name}/; {saved}"
