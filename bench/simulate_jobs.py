"""Simulate a season of GitHub Actions jobs on the registry: fresh clone per job, a bare origin, the
workflows' steps run in order (tests/test_workflows.py's Runner), GitHub's cache kept between jobs.

    .venv/bin/python bench/simulate_jobs.py [--weeks 10] [--keep DIR]

The project is the toy pipeline (y = factor * x; tests/assets/model) with a `data` section: each week a drop
lands in data/new/ and is pushed to main (a `push` job), and every Monday the schedule fires (a `schedule`
job: nothing new when the push job already took the drop). The model's data fingerprint hashes the history and
the drops, so each week's data registers a new version. The train stage reads only data/points.csv: its cache
entry is reused every week (what "the cache travels" buys), and evaluate's whenever the champion is the same.

The season: `--weeks` weekly pushes, two of them at the same time (the drops of two weeks pushed back to back,
both jobs started from the same saved state), every other week a scheduled job that finds nothing new, a
monitoring dispatch on unchanged data, and a manual rollback (registry.yml). Then the registry is read from
the origin and checked: every version registered once (no fingerprint twice), none lost (each job's
registered version is there), and the champion is the one expected. Prints one row per job, then the checks.
The install is the test's environment (the Makefile's stand-in), so the times are set-up + pipeline: the
install itself is measured by bench/install_timing.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_workflows import (  # noqa: E402  (the repository's tests are the simulator)
    GIT,
    SERVER_URL,
    WORKFLOWS,
    JobRun,
    Runner,
    runner_environment,
    workflow,
)

REPOSITORY = "acme/toy-forecast"
PIPELINE = """\
version: 1
name: toy
stages:
  train:
    notebook: toy/train.ipynb
    inputs: ["data/points.csv"]
    outputs: ["products/model.json"]
  evaluate:
    notebook: toy/evaluate.ipynb
    needs: [train]
    inputs: []
    outputs: ["products/holdout.parquet"]
    gates:
      - "wape <= 0.5"
      - "wape <= champion.wape * 1.5"
  deploy:
    notebook: toy/deploy.ipynb
    needs: [evaluate]
data:
  new: ["data/new/*.csv"]
  history: data/history
  stage: train
model:
  name: toy
  candidate: train.model_uri
  metrics: evaluate
  promotion: auto
  deploy: [deploy]
  data: ["data/history/*.csv", "data/new/*.csv"]
  smoke_check: {max_seconds: 600}
"""


@dataclass
class Row:
    job: str
    event: str
    started_from: str = ""
    outcome: str = ""
    registered: str = ""
    champion: str = ""
    stages: str = ""
    saved: str = ""
    run_id: str = ""
    seconds: dict[str, float] = field(default_factory=dict)


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run([*GIT, *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def make_origin(root: Path) -> Path:
    source = root / "source"
    shutil.copytree(ROOT / "tests" / "assets" / "model", source / "toy")
    shutil.copy2(ROOT / "pipeline.yaml", source / "pipeline.yaml")  # the notebooks' find_root()
    shutil.copy2(ROOT / "constraints.txt", source / "constraints.txt")
    shutil.copytree(WORKFLOWS, source / ".github" / "workflows")
    (source / "toy.yaml").write_text(PIPELINE)
    (source / ".gitignore").write_text("mlruns/\nreports/\n.venv/\nserving/\n.retrain-cache*/\n")
    (source / "Makefile").write_text(
        "# The simulation's stand-in: `retrain` comes from this environment, first on PATH.\n"
        'install-ci:\n\t@echo "make install-ci: using $$(command -v retrain)"\n'
    )
    (source / "pyproject.toml").write_text("[project]\nname = 'toy'\n")
    rows = "\n".join(f"{x},{2 * x + (1 if x % 2 else -1) * 0.5}" for x in range(1, 41))
    (source / "data" / "history").mkdir(parents=True)
    (source / "data" / "new").mkdir(parents=True)
    (source / "data" / "points.csv").write_text("x,y\n" + rows + "\n")
    (source / "data" / "history" / "week-00.csv").write_text("week,sales\n0,100\n")
    (source / "data" / "new" / ".gitkeep").write_text("")
    git(source, "init", "--quiet")
    git(source, "add", "--all")
    git(source, "commit", "--quiet", "-m", "the toy project")
    origin = root / "origin.git"
    subprocess.run([*GIT, "init", "--quiet", "--bare", str(origin)], check=True)
    git(source, "push", "--quiet", str(origin), "HEAD:refs/heads/main")
    return origin


def push_drop(root: Path, origin: Path, week: int) -> None:
    """Someone pushes a week's sales to data/new/ on main."""
    work = root / "dropper"
    if work.exists():
        shutil.rmtree(work)
    git(root, "clone", "--quiet", origin.as_uri(), str(work))
    (work / "data" / "new" / f"week-{week:02d}.csv").write_text(f"week,sales\n{week},{100 + 3 * week}\n")
    git(work, "add", "--all")
    git(work, "commit", "--quiet", "-m", f"sales of week {week}")
    git(work, "push", "--quiet", "origin", "HEAD:main")


def state_tip(origin: Path) -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--verify", "-q", "refs/heads/retrain-state"],
        cwd=origin,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()[:7]


class Simulation:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.origin = make_origin(root)
        self.caches = root / "caches"
        self.count = 0
        self.lock = threading.Lock()

    def job(
        self,
        label: str,
        event_name: str,
        event: dict[str, Any],
        flow_file: str = "retrain.yml",
        inputs: dict[str, Any] | None = None,
    ) -> tuple[Row, list[JobRun]]:
        with self.lock:
            self.count += 1
            number = self.count
        temp = self.root / f"runner-{number}"
        (temp / "home").mkdir(parents=True)
        workspace = self.root / "work" / f"job-{number}" / "toy"  # another folder for every job
        git(self.root, "clone", "--quiet", "--depth=1", self.origin.as_uri(), str(workspace))
        event_path = temp / "event.json"
        event_path.write_text(json.dumps(event))
        env = runner_environment(temp)
        env.update(
            GITHUB_ACTIONS="true",
            CI="true",
            GITHUB_EVENT_NAME=event_name,
            GITHUB_EVENT_PATH=str(event_path),
            GITHUB_REPOSITORY=REPOSITORY,
            GITHUB_SERVER_URL=SERVER_URL,
            GITHUB_RUN_ID=str(9000 + number),
            GITHUB_REF="refs/heads/main",
            GITHUB_REF_NAME="main",
            GITHUB_REF_TYPE="branch",
            GITHUB_WORKSPACE=str(workspace),
            RUNNER_TEMP=str(temp),
            RETRAIN_PIPELINE="toy.yaml",
        )
        github = {"ref": "refs/heads/main", "repository": REPOSITORY, "workspace": str(workspace)}
        runner = Runner(workflow(WORKFLOWS / flow_file), workspace, temp / "files", env, caches=self.caches)
        row = Row(label, event_name, started_from=state_tip(self.origin) or "-")
        started = time.monotonic()
        jobs = runner.run_event(event_name, event, github, inputs)
        row.seconds["total"] = time.monotonic() - started
        describe(row, jobs, workspace)
        row.champion = champion_now(self.origin, temp / "champion.db")
        return row, jobs


SETUP = ("Start the clock", "Check out", "Set up Python", "Install uv", "Anything new?")
INSTALL = ("Restore the environment", "Install", "Keep the environment")
PIPELINE_STEPS = ("Run the pipeline", "Deploy", "Promote or roll back")


def describe(row: Row, jobs: list[JobRun], workspace: Path) -> None:
    steps = [step for job in jobs for step in job.steps]
    row.seconds["setup"] = sum(step.seconds for step in steps if step.name in SETUP)
    row.seconds["install"] = sum(step.seconds for step in steps if step.name in INSTALL)
    row.seconds["pipeline"] = sum(step.seconds for step in steps if step.name in PIPELINE_STEPS)
    failed = [f"{job.job}: {s.name}" for job in jobs for s in job.steps if s.outcome == "failure"]
    new = next((s for s in steps if s.name == "Anything new?"), None)
    if new is not None and new.outputs.get("run") == "false":
        row.outcome, row.stages, row.saved = "nothing new", "-", "-"
        return
    ran = next(
        (s for s in steps if s.name in ("Run the pipeline", "Deploy") and s.outputs.get("run_id")), None
    )
    record: dict[str, Any] = {}
    if ran is not None:
        run_json = workspace / "reports" / ran.outputs["run_id"] / "run.json"
        record = json.loads(run_json.read_text()) if run_json.is_file() else {}
    model = record.get("model") or {}
    row.run_id = str(record.get("run_id", ""))
    row.registered = f"v{model['version']}" if model.get("action") == "registered" else ""
    stages = record.get("stages", {})
    row.stages = " ".join(f"{name}:{stage['status'][:4]}" for name, stage in stages.items())
    save = next((s for s in steps if s.name == "Save the registry"), None)
    said = (save.log if save else "").strip().splitlines()
    text = " ".join(said)
    row.saved = (
        "merged"
        if "merged with what another run saved" in text
        else "saved"
        if "saved mlruns/" in text
        else "-"
    )
    row.outcome = record.get("status", "-") + (f" ({'; '.join(failed)})" if failed else "")
    if "Promotion lost" in text:
        row.outcome += ": promotion lost the race"


def champion_now(origin: Path, copy: Path) -> str:
    """The champion on the origin's state branch, now."""
    done = subprocess.run(
        ["git", "show", "retrain-state:mlflow.db"], cwd=origin, capture_output=True, check=False
    )
    if done.returncode != 0:
        return "-"
    copy.write_bytes(done.stdout)
    with sqlite3.connect(copy) as connection:
        found = connection.execute("SELECT version FROM registered_model_aliases WHERE alias = 'champion'")
        row = found.fetchone()
    return f"v{row[0]}" if row else "-"


def registry(origin: Path, folder: Path) -> tuple[dict[int, dict[str, str]], dict[str, int]]:
    """The versions (their tags) and aliases saved on the origin's state branch."""
    if folder.exists():
        shutil.rmtree(folder)
    git(origin.parent, "clone", "--quiet", "--branch", "retrain-state", origin.as_uri(), str(folder))
    with sqlite3.connect(folder / "mlflow.db") as connection:
        tags: dict[int, dict[str, str]] = {}
        for version, key, value in connection.execute(
            "SELECT version, key, value FROM model_version_tags WHERE name = 'toy'"
        ):
            tags.setdefault(int(version), {})[key] = value
        aliases = dict(connection.execute("SELECT alias, version FROM registered_model_aliases"))
    return tags, {str(k): int(v) for k, v in aliases.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", type=int, default=10, help="weekly drops (default 10)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the jobs' folders here")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="retrain-sim-")) if args.keep is None else args.keep
    root.mkdir(parents=True, exist_ok=True)
    sim = Simulation(root)
    rows: list[Row] = []
    schedule = {"schedule": "0 6 * * 1"}
    push = {"ref": "refs/heads/main", "repository": {"default_branch": "main"}}
    together = (5, 6)  # weeks whose drops are pushed back to back: their jobs run at the same time
    for week in range(1, args.weeks + 1):
        if week == together[1]:
            continue
        if week == together[0]:
            push_drop(root, sim.origin, week)
            first: dict[str, Any] = {}

            def first_job(label: str = f"week {week} push", into: dict[str, Any] = first) -> None:
                into["done"] = sim.job(label, "push", push)

            thread = threading.Thread(target=first_job)
            thread.start()
            time.sleep(2)  # the second drop lands while the first job runs
            push_drop(root, sim.origin, together[1])
            second = sim.job(f"week {together[1]} push (same time)", "push", push)
            thread.join()
            rows += [first["done"][0], second[0]]
            continue
        push_drop(root, sim.origin, week)
        rows.append(sim.job(f"week {week} push", "push", push)[0])
        if week % 2 == 0:
            rows.append(sim.job(f"week {week} schedule", "schedule", schedule)[0])
    dispatch = {
        "action": "retrain",
        "client_payload": {"trigger": "monitoring"},
        "repository": {"default_branch": "main"},
    }
    rows.append(sim.job("monitoring dispatch", "repository_dispatch", dispatch)[0])
    tags_before, aliases_before = registry(sim.origin, root / "state-before-rollback")
    rollback = {"inputs": {"action": "rollback", "version": ""}, "repository": {"default_branch": "main"}}
    rows.append(
        sim.job("manual rollback", "workflow_dispatch", rollback, "registry.yml", rollback["inputs"])[0]
    )
    tags, aliases = registry(sim.origin, root / "state")
    print_table(rows, tags, aliases)
    return check(rows, tags, aliases, tags_before, aliases_before)


def print_table(rows: list[Row], tags: dict[int, dict[str, str]], aliases: dict[str, int]) -> None:
    header = (
        "job",
        "state",
        "outcome",
        "reg.",
        "champion",
        "stages",
        "registry",
        "setup s",
        "pipeline s",
        "total s",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = (
            row.job,
            row.started_from,
            row.outcome,
            row.registered or "-",
            row.champion,
            row.stages,
            row.saved,
            f"{row.seconds.get('setup', 0):.1f}",
            f"{row.seconds.get('pipeline', 0):.1f}",
            f"{row.seconds['total']:.1f}",
        )
        print("| " + " | ".join(cells) + " |")
    print()
    print(
        "versions:",
        ", ".join(
            f"v{n} ({t.get('retrain.trigger')}, run {t.get('retrain.run_id')})"
            for n, t in sorted(tags.items())
        ),
    )
    print("aliases:", aliases)


def check(
    rows: list[Row],
    tags: dict[int, dict[str, str]],
    aliases: dict[str, int],
    tags_before: dict[int, dict[str, str]],
    aliases_before: dict[str, int],
) -> int:
    problems = []
    fingerprints = [version.get("retrain.fingerprint") for version in tags.values()]
    if len(fingerprints) != len(set(fingerprints)):
        problems.append("a fingerprint was registered twice")
    registered = [row for row in rows if row.registered]
    if len(tags) != len(registered) or sorted(tags) != list(range(1, len(tags) + 1)):
        problems.append(f"{len(registered)} jobs registered a version, the registry holds {sorted(tags)}")
    kept = {version.get("retrain.run_id") for version in tags.values()}
    lost = [row.job for row in registered if row.run_id not in kept]
    if lost:
        problems.append(f"versions lost: {', '.join(lost)}")
    expected = aliases_before.get("previous")
    if aliases.get("champion") != expected:
        problems.append(f"champion v{aliases.get('champion')} after the rollback, expected v{expected}")
    cached = [row for row in rows if "cach" in row.stages]
    if not cached:
        problems.append("no stage was reused from the cache")
    print(
        f"\n{len(tags)} versions, none twice, none lost; champion v{aliases.get('champion')} "
        f"(rolled back from v{aliases_before.get('champion')}); {len(cached)} jobs reused cached stages"
        if not problems
        else "\nPROBLEMS: " + "; ".join(problems)
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
