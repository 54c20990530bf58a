"""Shared fixtures: small projects built in a temporary folder from the purpose-built notebooks."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import pytest

ASSETS = Path(__file__).parent / "assets"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def load_walmart() -> ModuleType:
    """The demo project's data script, data/walmart.py (a script of the project, not of the runner)."""
    if "walmart" not in sys.modules:
        spec = importlib.util.spec_from_file_location("walmart", PROJECT_ROOT / "data" / "walmart.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["walmart"] = module
        spec.loader.exec_module(module)
    return sys.modules["walmart"]

MakeProject = Callable[[str], Path]


@pytest.fixture
def make_project(tmp_path: Path) -> MakeProject:
    """A project folder with the asset notebooks under notebooks/ and the given pipeline.yaml text."""

    def make(pipeline_yaml: str) -> Path:
        root = tmp_path / "project"
        if not root.exists():
            shutil.copytree(ASSETS / "notebooks", root / "notebooks")
        (root / "pipeline.yaml").write_text(textwrap.dedent(pipeline_yaml))
        return root / "pipeline.yaml"

    return make


def spawn_run(pipeline: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`retrain run PIPELINE ARGS...` as its own process in the project folder (for signals and kills),
    its output captured as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(pipeline), *args],
        cwd=pipeline.parent,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def is_kernel(cmdline: Sequence[str]) -> bool:
    """A kernel started the usual way, a run's kernel server or a kernel it forked (same command line)."""
    text = " ".join(cmdline)
    return "ipykernel" in text or "runner.engine.kernels.server" in text


def is_stage_kernel(process: psutil.Process) -> bool:
    """A stage's kernel: started the usual way, or forked by the run's kernel server (named so)."""
    return process.name() == "retrain-kernel" or "ipykernel" in " ".join(process.cmdline())


def kernels_alive() -> list[psutil.Process]:
    """Kernel processes started from this test process (other children, such as a test's MLflow server,
    are not kernels)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if is_kernel(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def kernels_in(root: Path) -> list[psutil.Process]:
    """Kernel processes working in the project `root`, whoever started them: a runner that was killed leaves
    its kernels to init, out of reach of `kernels_alive`."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd", "status"]):
        try:
            if (
                is_kernel(process.info["cmdline"] or ())
                and process.info["cwd"] == str(root)
                and process.info["status"] != psutil.STATUS_ZOMBIE
            ):
                found.append(process)
        except psutil.Error:
            continue
    return found


def temp_files(folder: Path) -> list[Path]:
    """What a writer killed mid-write leaves behind (runner/files.py names its temporary files so)."""
    return sorted(folder.rglob(".*.tmp")) if folder.is_dir() else []


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.closed_html = False

    def handle_endtag(self, tag: str) -> None:
        self.closed_html = self.closed_html or tag == "html"


def assert_reports_readable(reports: Path) -> list[dict[str, Any]]:
    """Every run.json is a whole run record and every page a whole HTML document; returns the records."""
    from runner.records import RunRecord

    records = []
    for run_json in sorted(reports.glob("*/run.json")):
        data = json.loads(run_json.read_text(encoding="utf-8"))
        RunRecord.from_json(data)  # the record's shape, not just JSON
        records.append(data)
    for page in sorted(reports.glob("**/*.html")):
        parser = _Html()
        parser.feed(page.read_text(encoding="utf-8"))
        assert parser.closed_html, f"{page} is not a whole HTML document"
    return records


# --- a toy project on a bare origin: jobs on fresh clones, as GitHub Actions runs them ----------------------
TOY_PIPELINE = """\
# A toy pipeline: y = factor * x, registered and promoted like the real one, in seconds.
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
GIT = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main"]


@dataclass(frozen=True)
class ToyOrigin:
    """A bare repository holding the toy project on `main`; clones go beside it."""

    path: Path
    folder: Path


@dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str
    outputs: dict[str, str]  # what the command wrote to $GITHUB_OUTPUT


@dataclass
class Running:
    process: subprocess.Popen[str]
    output_file: Path

    def finish(self, timeout_s: float = 600) -> Done:
        stdout, stderr = self.process.communicate(timeout=timeout_s)
        lines = self.output_file.read_text().splitlines() if self.output_file.exists() else []
        outputs = dict(line.split("=", 1) for line in lines if "=" in line)
        return Done(self.process.returncode, stdout, stderr, outputs)


@pytest.fixture
def toy_origin(tmp_path: Path) -> ToyOrigin:
    source = tmp_path / "source"
    shutil.copytree(ASSETS / "model", source / "toy")
    shutil.copy2(PROJECT_ROOT / "pipeline.yaml", source / "pipeline.yaml")  # the notebooks' find_root()
    (source / "toy.yaml").write_text(TOY_PIPELINE)
    (source / ".gitignore").write_text("mlruns/\nreports/\n")
    rows = "\n".join(f"{x},{2 * x + (1 if x % 2 else -1) * 0.5}" for x in range(1, 41))
    (source / "data").mkdir()
    (source / "data" / "points.csv").write_text("x,y\n" + rows + "\n")
    subprocess.run([*GIT, "init", "--quiet"], cwd=source, check=True)
    subprocess.run([*GIT, "add", "--all"], cwd=source, check=True)
    subprocess.run([*GIT, "commit", "--quiet", "-m", "the toy project"], cwd=source, check=True)
    origin = tmp_path / "origin.git"
    subprocess.run([*GIT, "init", "--quiet", "--bare", str(origin)], check=True)
    subprocess.run([*GIT, "push", "--quiet", str(origin), "HEAD:refs/heads/main"], cwd=source, check=True)
    return ToyOrigin(origin, tmp_path)


def clone_toy(origin: ToyOrigin, name: str) -> Path:
    """A fresh shallow clone of the toy project, as a job's checkout."""
    target = origin.folder / "jobs" / name / "toy"
    subprocess.run([*GIT, "clone", "--quiet", "--depth=1", origin.path.as_uri(), str(target)], check=True)
    return target


def job_environment(clone: Path) -> dict[str, str]:
    """A job's environment: this machine's, less what a workflow sets or a test run would leak."""
    drop = ("GITHUB_", "RUNNER_", "MLFLOW_", "SLACK_", "RETRAIN_", "PYTEST_", "VIRTUAL_ENV")
    env = {key: value for key, value in os.environ.items() if not key.startswith(drop)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(GITHUB_ACTIONS="true", GITHUB_OUTPUT=str(clone.parent / "github-output"))
    home = clone.parent / "home"
    home.mkdir(exist_ok=True)
    env["HOME"] = str(home)
    return env


def start_retrain(clone: Path, *args: str, env: dict[str, str] | None = None) -> Running:
    """`retrain ARGS` in a job's clone, as its own process; `finish()` waits for it."""
    environment = {**job_environment(clone), **(env or {})}
    output = Path(environment["GITHUB_OUTPUT"])
    output.unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=clone,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return Running(process, output)


def retrain(clone: Path, *args: str, env: dict[str, str] | None = None) -> Done:
    return start_retrain(clone, *args, env=env).finish()


# --- the team option: an MLflow tracking server whose artifacts live in an S3-compatible store --------------
@dataclass(frozen=True)
class S3Server:
    """`mlflow server` on 127.0.0.1 with `--artifacts-destination s3://BUCKET/...` on moto's S3 server."""

    url: str  # the tracking server
    s3_endpoint: str  # moto's S3 server
    bucket: str
    folder: Path

    def objects(self) -> list[str]:
        """The keys the artifact store holds (what MLflow wrote to S3)."""
        import boto3

        client = boto3.client("s3", endpoint_url=self.s3_endpoint, **S3_CREDENTIALS)
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


S3_CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "region_name": "us-east-1",
}


def free_local_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def s3_mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server (ThreadedMotoServer) and an `mlflow server` whose artifacts go to a bucket on it;
    MLflow's server reaches S3 with MLFLOW_S3_ENDPOINT_URL and dummy credentials. Clients need neither: the
    server proxies the artifacts (mlflow-artifacts:/)."""
    import time
    import urllib.request

    import boto3
    from moto.server import ThreadedMotoServer

    folder = tmp_path_factory.mktemp("mlflow-s3")
    s3_port, port = free_local_port(), free_local_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
    moto.start()
    endpoint, bucket = f"http://127.0.0.1:{s3_port}", "retrain-models"
    boto3.client("s3", endpoint_url=endpoint, **S3_CREDENTIALS).create_bucket(Bucket=bucket)
    env = {
        **os.environ,
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    command = [
        str(Path(sys.executable).with_name("mlflow")), "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination", f"s3://{bucket}/mlartifacts",
    ]  # fmt: skip
    log = (folder / "server.log").open("a")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600  # a loaded 2-core machine starts it in minutes
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                break
        except OSError:
            assert server.poll() is None, (folder / "server.log").read_text()
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.2)
    try:
        yield S3Server(url, endpoint, bucket, folder)
    finally:
        import signal

        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()
        moto.stop()
