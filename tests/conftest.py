"""Shared fixtures: small projects built in a temporary folder from the purpose-built notebooks."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
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


def eventually(condition: Callable[[], Any], limit_s: float = 60) -> bool:
    """Poll `condition` until it holds (True), or give up after `limit_s` (False): a bound, not a timing."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (taken from the OS, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the toy model (tests/assets/model): y = factor * x as an MLflow pyfunc model ---------------------------
TOY_MODEL_PIPELINE = """\
version: 1
name: toy
{warmup}
stages:
  train:
    notebook: notebooks/train.ipynb
  evaluate:
    notebook: notebooks/evaluate.ipynb
    needs: [train]
    gates:
      - "wape <= 0.5"
      - "wape <= champion.wape * 1.5"
  deploy:
    notebook: notebooks/deploy.ipynb
    needs: [evaluate]
model:
  name: {name}
  candidate: train.model_uri
  metrics: evaluate
  key_metric: {{name: wape, better: lower, format: percent}}
  smoke_check: {{score: "notebooks.toy_scores:wape"}}
  promotion: {promotion}
  deploy: [deploy]
  data: ["data/*.csv"]
"""

# With MLflow in the warm-up, the registry's calls and the scraps run in workers forked from the kernel server
IN_WORKERS = 'warmup: "import mlflow, scrapbook"'


def make_model_project(
    tmp_path: Path, promotion: str = "auto", warmup: str = "", name: str = ""
) -> tuple[Path, str]:
    """The toy model's project under `tmp_path`/project, nothing run yet; returns its pipeline and the
    model's name (unique by default: the MLflow server is shared by the session's tests)."""
    root = tmp_path / "project"
    shutil.copytree(ASSETS / "model", root / "notebooks")
    (root / "data").mkdir()
    rows = "\n".join(f"{x},{2 * x + (1 if x % 2 else -1) * 0.5}" for x in range(1, 41))
    (root / "data" / "points.csv").write_text("x,y\n" + rows + "\n")
    name = name or f"toy-{secrets.token_hex(3)}"
    text = TOY_MODEL_PIPELINE.format(name=name, promotion=promotion, warmup=warmup)
    (root / "pipeline.yaml").write_text(text)
    return root / "pipeline.yaml", name


def aliases(pipeline: Path, name: str) -> dict[str, str]:
    from runner.production.registry import Registry
    from runner.project import tracking_uri

    registry = Registry(tracking_uri(pipeline.parent), name, lock_dir=pipeline.parent / "mlruns")
    return {alias: version.version for version in registry.versions() for alias in version.aliases}


# --- MLflow servers on 127.0.0.1 ----------------------------------------------------------------------------
# MLflow's job runner (eight processes polling all the time, ~25% of a core) serves nothing the runner uses
MLFLOW_SERVER_ENV = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def _mlflow_server_command(folder: Path, port: int) -> list[str]:
    return [
        str(Path(sys.executable).with_name("mlflow")), "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination", str(folder / "artifacts"),
    ]  # fmt: skip


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server on 127.0.0.1, started for the test session and stopped after it."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(
        _mlflow_server_command(folder, port),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=MLFLOW_SERVER_ENV,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "mlflow server did not start: " + (folder / "server.log").read_text()
                ) from None
            time.sleep(0.5)
    yield url
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:  # a loaded machine: its workers take longer to stop than we wait
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
    log.close()


@pytest.fixture
def own_mlflow_server(tmp_path: Path) -> Iterator[tuple[str, Callable[[], subprocess.Popen[bytes]]]]:
    """An MLflow server for this test alone (it gets killed): its URL and a function that (re)starts it."""
    folder = tmp_path / "mlflow-server"
    folder.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    servers: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        log = (folder / "server.log").open("a")
        server = subprocess.Popen(
            _mlflow_server_command(folder, port),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=MLFLOW_SERVER_ENV,
        )  # fmt: skip
        servers.append(server)

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2):
                    return True
            except OSError:
                assert server.poll() is None, (folder / "server.log").read_text()
                return False

        assert eventually(healthy, 120), "mlflow server did not start"
        return server

    yield url, start
    for server in servers:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


# --- the toy model with new data arriving as drops (data/new/*.csv, history in data/) ---------------------
DROPS_SECTION = """\
data:
  new: ["data/new/*.csv"]
  history: data
  stage: train
"""


def make_drops_project(tmp_path: Path, warmup: str = "", name: str = "") -> tuple[Path, str]:
    """The toy model's project whose new data arrives as drops in data/new/ (the history is data/, where
    data/points.csv is): a drop changes the data's fingerprint, so a run with one registers a new version."""
    pipeline, name = make_model_project(tmp_path, warmup=warmup, name=name)
    # a loaded machine takes longer than the default 30 s to load a model: a slow check is not a failed one
    text = pipeline.read_text().replace('data: ["data/*.csv"]', 'data: ["data/*.csv", "data/new/*.csv"]')
    text = text.replace('smoke_check: {score: "notebooks.toy_scores:wape"}', (
        'smoke_check: {score: "notebooks.toy_scores:wape", max_seconds: 600}'
    ))
    pipeline.write_text(text + DROPS_SECTION)
    (pipeline.parent / "data" / "new").mkdir()
    return pipeline, name


def add_drop(pipeline: Path, number: int) -> Path:
    """A new drop, data/new/drop-<number>.csv, with rows no other drop has."""
    path = pipeline.parent / "data" / "new" / f"drop-{number:04d}.csv"
    rows = "\n".join(f"{x},{2 * x}" for x in range(1000 + 10 * number, 1010 + 10 * number))
    path.write_text("x,y\n" + rows + "\n")
    return path


def newest_record(pipeline: Path) -> dict[str, Any]:
    """The run.json of the project's newest run."""
    run_dir = max(path for path in (pipeline.parent / "reports").iterdir() if path.is_dir())
    return dict(json.loads((run_dir / "run.json").read_text()))
