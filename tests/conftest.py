"""Shared fixtures and helpers: everything that more than one test file uses lives here, and no test file
imports from another (a fixture imported into a second file is a second fixture: pytest then starts a second
MLflow server in one session).

Tiers: every test carries exactly one of the markers registered in pyproject.toml, `unit` (one process: no
kernel, no server process, no subprocess at all; a server in a thread of the test process, such as the Slack
webhook below, is in-process), `kernel` (starts kernels or runs notebooks) and `e2e` (whole `retrain` runs,
server processes, git remotes, workflows), on the module (`pytestmark`) when a whole file is one tier, on the
test otherwise. Collection fails when a test has none or two, and a unit test that starts a process fails.
`make test-fast` runs `-m unit`.

Expensive set-ups are made once and copied: a project whose toy model is already the champion is trained
once per session (per worker under xdist) and copied per test (`champion_project`), which is far cheaper
than training; the MLflow server is one per session.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import psutil
import pytest

from runner.records import GateResult, KeyMetric, RunRecord, StageFailure, StageRecord, StageTimings

ASSETS = Path(__file__).parent / "assets"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def project_module(relative: str) -> ModuleType:
    """A script of the project, not of the runner (data/walmart.py, notebooks/forecasting.py,
    bench/run_bench.py), imported from its path: none of their folders is a package."""
    name = Path(relative).stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / relative)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def load_walmart() -> ModuleType:
    """The demo project's data script, data/walmart.py."""
    return project_module("data/walmart.py")


# --- tiers --------------------------------------------------------------------------------------------------
TIERS = ("unit", "kernel", "e2e")


def pytest_configure(config: pytest.Config) -> None:
    """What the runner keeps in its cache folder (the empty MLflow store new stores are copied from) goes to a
    folder of this session instead: the suite leaves the user's ~/.cache alone. Set here, in the process that
    starts the xdist workers, it is theirs too: one empty store made per session, then copied. Only the
    runner's own folder (RETRAIN_CACHE_DIR): XDG_CACHE_HOME would also move matplotlib's font cache, which
    a unit test would then rebuild with a subprocess."""
    if "RETRAIN_CACHE_DIR" not in os.environ:
        os.environ["RETRAIN_CACHE_DIR"] = tempfile.mkdtemp(prefix="retrain-test-cache-")
        config.stash[_OWN_CACHE] = os.environ["RETRAIN_CACHE_DIR"]


def pytest_unconfigure(config: pytest.Config) -> None:
    if _OWN_CACHE in config.stash:
        shutil.rmtree(config.stash[_OWN_CACHE], ignore_errors=True)
        os.environ.pop("RETRAIN_CACHE_DIR", None)


_OWN_CACHE = pytest.StashKey[str]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Under `--dist loadgroup`, in a worker: every test with an xdist_group carries it in its id
    (pytest-xdist adds it while collecting). A group is what lets tests share an expensive set-up on one
    worker; a pytest that loses it (pytest-xdist#1386: pytest 9.2) trains the demo on every worker and splits
    modules that share a project, which then fail in ways far from the cause."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    lost = [
        item.nodeid
        for item in session.items
        if item.get_closest_marker("xdist_group") and "@" not in item.nodeid
    ]
    if lost:
        raise pytest.UsageError(f"--dist loadgroup does not group {lost[0]}: see pytest-xdist#1386")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: every collected test is checked, whatever is run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wrong = []
    for item in items:
        tiers = sorted({mark.name for mark in item.iter_markers() if mark.name in TIERS})
        if len(tiers) != 1:
            wrong.append(f"  {item.nodeid}: {', '.join(tiers) or 'no tier'}")
    if wrong:
        raise pytest.UsageError(
            f"every test needs exactly one tier marker ({', '.join(TIERS)}; see tests/conftest.py):\n"
            + "\n".join(wrong)
        )


@pytest.fixture(autouse=True)
def _tracking_uri_as_it_was() -> Iterator[None]:
    """MLflow's `set_tracking_uri` also writes MLFLOW_TRACKING_URI into os.environ, for child processes: a
    test whose runs used the registry in this process would point every later subprocess of its xdist worker
    at that test's store ("Registered Model ... not found" far from the cause). Each test ends as it began."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test that starts a process (a kernel, a server, a command) fails, saying so: the tier is what
    `make test-fast` trusts. Fixtures of a wider scope were set up before this one and are not watched."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(
            f"{request.node.nodeid} is marked unit but starts a process: mark it kernel or e2e"
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refused)
    monkeypatch.setattr(os, "fork", refused)
    monkeypatch.setattr(os, "posix_spawn", refused)


# --- projects from the purpose-built notebooks --------------------------------------------------------------
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


@pytest.fixture
def small_reports(make_project: MakeProject) -> Iterator[Path]:
    """A project whose reports/ is a 1 MB tmpfs (root only), with a stage that prints `kilobytes` KB: a disk
    that fills up during a run. Skipped where a tmpfs cannot be mounted."""
    pipeline = make_project("""\
        version: 1
        name: toy
        stages:
          first:
            notebook: notebooks/ok.ipynb
          chatty:
            notebook: notebooks/chatty.ipynb
            needs: [first]
        """)
    reports = pipeline.parent / "reports"
    reports.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(reports)]
    mounted = subprocess.run(mount, capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    yield pipeline
    subprocess.run(["umount", "-l", str(reports)], check=True)


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


def checked_run(capsys: pytest.CaptureFixture[str], pipeline: Path, *args: str) -> tuple[int, dict, str]:
    """`retrain run` in this process; checks what every run leaves whatever its outcome (its run folder
    named by its run id, the run and history pages, no kernel, no temporary file, readable reports) and
    returns the exit code, the run record and what was printed."""
    from runner.commands import main

    code = main(["run", str(pipeline), *args])
    out = capsys.readouterr().out
    reports = pipeline.parent / "reports"
    run_dir = max(path for path in reports.iterdir() if path.is_dir())
    record = json.loads((run_dir / "run.json").read_text())
    assert record["run_id"] == run_dir.name
    assert (run_dir / "index.html").is_file() and (reports / "index.html").is_file()
    assert not kernels_alive(), "a kernel outlived the run"
    assert temp_files(reports) == [] and assert_reports_readable(reports)
    return code, record, out


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


# --- kernels and what a run leaves behind -------------------------------------------------------------------
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


TEMPORARY = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]{8}\.tmp$")  # runner/files.py's mkstemp names


def versions(pipeline: Path, name: str) -> tuple[str | None, set[str]]:
    """The champion and every registered version, read straight from the embedded store's sqlite file
    (milliseconds, where MLflow's client takes a second or more on a loaded machine)."""
    database = f"file:{pipeline.parent / 'mlruns' / 'mlflow.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(database, uri=True, timeout=30)) as store:
        champion = store.execute(
            "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = 'champion'", (name,)
        ).fetchone()
        known = store.execute("SELECT version FROM model_versions WHERE name = ?", (name,)).fetchall()
    return (str(champion[0]) if champion else None), {str(row[0]) for row in known}


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.closed_html = False

    def handle_endtag(self, tag: str) -> None:
        self.closed_html = self.closed_html or tag == "html"


def assert_reports_readable(reports: Path) -> list[dict[str, Any]]:
    """Every run.json is a whole run record and every page a whole HTML document; returns the records."""
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


# --- the toy model (tests/assets/model) and its registry ----------------------------------------------------
TOY_MODEL_PIPELINE = """\
version: 1
name: toy
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


def make_model_project(tmp_path: Path, promotion: str = "auto", name: str = "") -> tuple[Path, str]:
    """The toy model's project under `tmp_path`/project, nothing run yet; returns its pipeline and the
    model's name (unique by default: the MLflow server is shared by the session's tests)."""
    root = tmp_path / "project"
    shutil.copytree(ASSETS / "model", root / "notebooks")
    (root / "data").mkdir()
    rows = "\n".join(f"{x},{2 * x + (1 if x % 2 else -1) * 0.5}" for x in range(1, 41))
    (root / "data" / "points.csv").write_text("x,y\n" + rows + "\n")
    name = name or f"toy-{secrets.token_hex(3)}"
    text = TOY_MODEL_PIPELINE.format(name=name, promotion=promotion)
    (root / "pipeline.yaml").write_text(text)
    return root / "pipeline.yaml", name


def aliases(pipeline: Path, name: str) -> dict[str, str]:
    from runner.production.registry import Registry
    from runner.project import tracking_uri

    registry = Registry(tracking_uri(pipeline.parent), name, lock_dir=pipeline.parent / "mlruns")
    return {alias: version.version for version in registry.versions() for alias in version.aliases}


def first_champion(make: Callable[[Path], tuple[Path, str]], folder: Path) -> tuple[Path, str]:
    """The project `make` writes in `folder` after one full run on the embedded store: version 1 is the
    champion, its run folder in reports/. Its pipeline and the model's name."""
    from runner.commands import main

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        pipeline, name = make(folder)
        assert main(["run", str(pipeline), "--no-notify"]) == 0
        assert aliases(pipeline, name)["champion"] == "1"
    return pipeline, name


def copy_for_test(
    trained: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, str]:
    """A copy of a `first_champion` project for one test alone (embedded store): its pipeline and name."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    template, name = trained
    root = copy_project(template.parent, tmp_path / "project")
    return root / "pipeline.yaml", name


@pytest.fixture(scope="session")
def _toy_champion(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The toy model's project (`make_model_project`) with its first champion. Trained once per session (per
    xdist worker); tests get copies (`champion_project`)."""
    return first_champion(make_model_project, tmp_path_factory.mktemp("toy-champion"))


@pytest.fixture
def champion_project(
    _toy_champion: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, str]:
    """A copy of the toy project whose version 1 is the champion, for this test alone."""
    return copy_for_test(_toy_champion, tmp_path, monkeypatch)


def copy_project(template: Path, root: Path) -> Path:
    """A copy of a project folder, its embedded MLflow store pointed at the copy's artifacts: the store
    records where they are as absolute paths, and a test must never read or write the template's."""
    shutil.copytree(template, root)
    store = root / "mlruns" / "mlflow.db"
    if not store.is_file():
        return root
    old, new = str(template / "mlruns"), str(root / "mlruns")
    with contextlib.closing(sqlite3.connect(store)) as database, database:
        tables = [row[0] for row in database.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in [row[1] for row in database.execute(f'PRAGMA table_info("{table}")')]:
                database.execute(
                    f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                    f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0',
                    (old, new, old),
                )
    return root


# --- the demo (pipeline.yaml, notebooks/, data/history at the root) ----------------------------------------
HEAVY = ("mlflow", "sqlalchemy", "pandas", "numpy", "pyarrow", "scrapbook", "dask", "distributed")
RUN_AND_LIST_IMPORTS = f"""
import json, sys
from runner.commands import main
code = main(["run", sys.argv[1], "--no-notify"])
heavy = {{name.split(".")[0] for name in sys.modules}} & set({HEAVY!r})
print(json.dumps({{"code": code, "heavy": sorted(heavy)}}))
"""
ON_THE_DEMO = pytest.mark.xdist_group("demo")  # under xdist, one worker trains the demo for all of them


def run_listing_imports(pipeline: Path) -> dict[str, Any]:
    """`retrain run` of `pipeline` in a process of its own, which reports its exit code (`code`) and which of
    HEAVY it imported (`heavy`); with what it printed (`output`)."""
    done = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_IMPORTS, str(pipeline)],
        cwd=pipeline.parent, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("{"), done.stdout[-3000:] + done.stderr[-3000:]
    return dict(json.loads(lines[-1]), output=done.stdout)


def demo_copy(root: Path) -> Path:
    """The demo's pipeline, notebooks and history under `root`, with an empty data/new/; nothing run yet."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "pipeline.yaml", root)
    shutil.copytree(PROJECT_ROOT / "notebooks", root / "notebooks")
    shutil.copytree(PROJECT_ROOT / "data" / "history", root / "data" / "history")
    (root / "data" / "new").mkdir()
    return root


@pytest.fixture(scope="session")
def demo_first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The demo after its first run (a new store, a model registered, promoted and deployed), made once by
    `retrain run` in a process of its own that reports its exit code and which of HEAVY it imported. Tests
    that change the project work on a copy (`copy_project`). Tests that use it are marked ON_THE_DEMO."""
    root = demo_copy(tmp_path_factory.mktemp("demo-first-run"))
    return root, run_listing_imports(root / "pipeline.yaml")


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
    """A real MLflow tracking server on 127.0.0.1, started for the test session and stopped after it.
    Under xdist, the tests that use it are in the xdist group `mlflow_server`: one worker, one server."""
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
            except (OSError, http.client.HTTPException):  # not up yet, or another process's port answered
                assert server.poll() is None, (folder / "server.log").read_text()
                return False

        assert eventually(healthy, 120), "mlflow server did not start"
        return server

    yield url, start
    for server in servers:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


ON_THE_SERVER = pytest.mark.xdist_group("mlflow_server")


@pytest.fixture(params=["embedded", "embedded, from workers", pytest.param("server", marks=ON_THE_SERVER)])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where the registry is: the embedded sqlite store (its calls in the runner, or in workers forked from
    the kernel server), or the session's MLflow server."""
    if request.param == "server":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", request.getfixturevalue("mlflow_server"))
    else:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return str(request.param)


# --- the toy model with new data arriving as drops (data/new/*.csv, history in data/) ---------------------
DROPS_SECTION = """\
data:
  new: ["data/new/*.csv"]
  history: data
  stage: train
"""


def make_drops_project(tmp_path: Path, name: str = "") -> tuple[Path, str]:
    """The toy model's project whose new data arrives as drops in data/new/ (the history is data/, where
    data/points.csv is): a drop changes the data's fingerprint, so a run with one registers a new version."""
    pipeline, name = make_model_project(tmp_path, name=name)
    # a loaded machine takes longer than the default 30 s to load a model: a slow check is not a failed one
    text = pipeline.read_text().replace('data: ["data/*.csv"]', 'data: ["data/*.csv", "data/new/*.csv"]')
    text = text.replace(
        'smoke_check: {score: "notebooks.toy_scores:wape"}',
        ('smoke_check: {score: "notebooks.toy_scores:wape", max_seconds: 600}'),
    )
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


# --- a Slack webhook on 127.0.0.1 (a thread of the test process) --------------------------------------------
@dataclass
class Reply:
    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float = 0.0  # wait this long before answering, as a stuck webhook does


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: Any


SECRET_PATH = "/services/T0SECRET/B0SECRET/xoxsecretsecretsecret"


@dataclass
class Webhook:
    """The n-th request gets script[n]; the last reply repeats. Every request is recorded."""

    url: str = ""
    script: list[Reply] = field(default_factory=lambda: [Reply()])
    requests: list[Request] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, request: Request) -> Reply:
        with self.lock:
            self.requests.append(request)
            return self.script[min(len(self.requests), len(self.script)) - 1]


class _WebhookServer(ThreadingHTTPServer):
    daemon_threads = True
    webhook: Webhook


class _WebhookHandler(BaseHTTPRequestHandler):
    server: _WebhookServer

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        reply = self.server.webhook.take(Request(self.path, dict(self.headers.items()), json.loads(raw)))
        if reply.hang_s and self.server.webhook.done.wait(reply.hang_s):
            return  # the test is over: never answer
        body = reply.body.encode()
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up waiting

    def log_message(self, format: str, *args: Any) -> None:
        pass


def no_proxy_for_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy from the environment must not stand between the tests and 127.0.0.1."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Webhook]:
    """A Slack incoming webhook on 127.0.0.1, scripted by the test (`webhook.script`)."""
    no_proxy_for_localhost(monkeypatch)
    server = _WebhookServer(("127.0.0.1", 0), _WebhookHandler)
    server.webhook = Webhook(url=f"http://127.0.0.1:{server.server_address[1]}{SECRET_PATH}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.webhook
    server.webhook.done.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


# --- an SMTP server on 127.0.0.1 (aiosmtpd, a thread of the test process) -----------------------------------
SMTP_PASSWORD = "s3cret"  # what the test SMTP server accepts


@dataclass
class Mailbox:
    messages: list[EmailMessage] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)  # each message's bytes as they arrived
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    port: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = cast(bytes, envelope.original_content)
        self.raw.append(content)
        self.messages.append(message_from_bytes(content, policy=policy.default))
        self.envelopes.append((str(envelope.mail_from), [str(rcpt) for rcpt in envelope.rcpt_tos]))
        return "250 Message accepted for delivery"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        assert isinstance(data, LoginPassword)
        self.logins.append((data.login.decode(), data.password.decode()))
        # handled=False: the server answers 535 itself
        return AuthResult(success=data.password == SMTP_PASSWORD.encode(), handled=False)


@pytest.fixture
def mailbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller

    no_proxy_for_localhost(monkeypatch)
    box = Mailbox(port=free_port())
    # Login without TLS is allowed here only because the server is a test on 127.0.0.1.
    controller = Controller(
        box, hostname="127.0.0.1", port=box.port, authenticator=box.authenticate, auth_require_tls=False
    )
    controller.start()
    yield box
    controller.stop()


# --- the GitHub REST API's issue comments on 127.0.0.1 (a thread of the test process) -----------------------
TOKEN = "ghs_dummy0123456789token"
REPOSITORY = "acme/demand-forecast"


@dataclass
class FakeGitHub:
    """The issue-comments endpoints of one repository. Every request must carry the token and GitHub's
    headers; lists come in pages of `page_size` linked by a Link header, whatever `per_page` asks."""

    token: str = TOKEN
    page_size: int = 2
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    url: str = ""
    link_base: str = ""  # the host the Link header names (default: this server)

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any, dict[str, str]]:
        data = json.loads(body) if body else None
        self.requests.append((method, path, data))
        expected = {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        if headers.get("Authorization") != expected["Authorization"]:
            return 401, {"message": "Bad credentials"}, {}
        wrong = [name for name, value in expected.items() if headers.get(name) != value]
        if data is not None and (set(data) != {"body"} or headers.get("Content-Type") != "application/json"):
            wrong.append("body")
        if wrong:
            self.problems.append(f"{method} {path}: {wrong}")
            return 400, {"message": f"unexpected {wrong}"}, {}
        parsed = urllib.parse.urlsplit(path)
        listing = re.fullmatch(rf"/repos/{REPOSITORY}/issues/(\d+)/comments", parsed.path)
        edit = re.fullmatch(rf"/repos/{REPOSITORY}/issues/comments/(\d+)", parsed.path)
        if method == "GET" and listing:
            return self._page(int(listing.group(1)), parsed)
        if method == "POST" and listing:
            number = int(listing.group(1))
            ids = [c["id"] for thread in self.comments.values() for c in thread]
            created = self._comment(max(ids, default=1000) + 1, number, data["body"])
            self.comments.setdefault(number, []).append(created)
            return 201, created, {}
        if method == "PATCH" and edit:
            for thread in self.comments.values():
                for comment in thread:
                    if comment["id"] == int(edit.group(1)):
                        comment["body"] = data["body"]
                        return 200, comment, {}
        return 404, {"message": "Not Found"}, {}

    def _page(self, number: int, parsed: urllib.parse.SplitResult) -> tuple[int, Any, dict[str, str]]:
        page = int(urllib.parse.parse_qs(parsed.query).get("page", ["1"])[0])
        thread = self.comments.get(number, [])
        start = (page - 1) * self.page_size
        headers = {}
        if start + self.page_size < len(thread):
            base = self.link_base or self.url
            headers["Link"] = f'<{base}{parsed.path}?per_page=100&page={page + 1}>; rel="next"'
        return 200, thread[start : start + self.page_size], headers

    def _comment(self, comment_id: int, number: int, body: str) -> dict[str, Any]:
        html = f"https://github.com/{REPOSITORY}/pull/{number}#issuecomment-{comment_id}"
        return {"id": comment_id, "body": body, "html_url": html, "user": {"login": "github-actions[bot]"}}

    def seed(self, number: int, *bodies: str) -> None:
        for body in bodies:
            ids = [c["id"] for thread in self.comments.values() for c in thread]
            self.comments.setdefault(number, []).append(
                self._comment(max(ids, default=1000) + 1, number, body)
            )


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    yield from serve_fake_github()


def serve_fake_github() -> Iterator[FakeGitHub]:
    """A FakeGitHub served on 127.0.0.1 by a thread; stopped when the generator is closed."""
    api = FakeGitHub()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, data, headers = api.handle(self.command, self.path, self.headers, body)
            payload = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()


# --- git: a bare origin and its clones ----------------------------------------------------------------------
GIT = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main"]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def clone(origin: Path, name: str) -> Path:
    target = origin.parent / name
    subprocess.run([*GIT, "clone", "--quiet", str(origin), str(target)], check=True)
    return target


# --- run records built by hand, and a notebook executed as the runner does (the report pages' tests) -------
STAGES = ["validate", "features", "train", "evaluate"]


def _stage(name: str, status: str = "succeeded", **fields: Any) -> StageRecord:
    defaults: dict[str, Any] = {
        "source": f"notebooks/{name}.ipynb",
        "duration_s": 2.5,
        "notebook": f"{name}.ipynb",
        "html": f"{name}.html",
        "timings": StageTimings(kernel_start_s=0.7, execute_s=1.6, render_s=0.2),
    }
    defaults.update(fields)
    return StageRecord(name=name, status=status, **defaults)  # type: ignore[arg-type]


def _record(run_id: str, status: str, stages: list[StageRecord]) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        pipeline="demand-forecast",
        trigger="schedule",
        mode="full",
        git_sha="0123456789abcdef0123456789abcdef01234567",
        started_at="2026-11-26T07:40:12+00:00",
        finished_at="2026-11-26T07:41:05+00:00",
        duration_s=53.2,
        params={"horizon_weeks": 8, "wape_threshold": 0.0001},
        stages={stage.name: stage for stage in stages},
        status=status,  # type: ignore[arg-type]
        options={"force": False},
        key_metric=KeyMetric("wape", "number", 4, better="lower"),
    )


def succeeded_run(run_id: str = "20261126T074012Z-a1b2c3", wape: float = 0.0793) -> RunRecord:
    stages = [_stage(name) for name in STAGES]
    stages[0].gates = [GateResult("n_errors == 0", True, "n_errors = 0 == 0", {"n_errors": 0})]
    stages[0].scraps = {"n_errors": 0, "n_rows": 1001, "columns": ["a", "b", "c", "d", "e", "f", "g"]}
    stages[3].scraps = {
        "wape": wape,
        "beats_champion": True,
        "model": "lightgbm",
        "errors_by_week": {"type": "table", "columns": ["week", "wape"], "rows": [[1, 0.1]], "n_rows": 3},
        "errors_split": {"columns": ["week", "wape"], "data": [[1, 0.1], [2, 0.2]]},
        "errors_list": {"week": [1, 2, 3, 4], "wape": [0.1, 0.2, 0.3, 0.4]},
        "settings": {"lr": 0.1, "leaves": 31, "objective": "l1"},
    }
    stages[3].gates = [GateResult("wape <= 0.15", True, f"wape = {wape} <= 0.15", {"wape": wape})]
    return _record(run_id, "succeeded", stages)


def gate_failed_run(run_id: str = "20261127T074012Z-d4e5f6") -> RunRecord:
    record = succeeded_run(run_id, wape=0.079)
    record.status = "gate_failed"
    evaluate = record.stages["evaluate"]
    evaluate.status = "gate_failed"
    evaluate.gates = [
        GateResult(
            "wape <= params.wape_threshold",
            False,
            "wape = 0.079 > 0.0001",
            {"wape": 0.079, "params.wape_threshold": 0.0001},
        )
    ]
    record.stages["register"] = _stage("register", "skipped", notebook=None, html=None, duration_s=0.0)
    record.stages["register"].skip_reason = "upstream stage evaluate did not pass its gates"
    return record


def failed_run(run_id: str = "20261125T074012Z-0f0f0f") -> RunRecord:
    stages = [_stage("validate"), _stage("features")]
    stages.append(
        _stage(
            "train",
            "failed",
            error="train: ZeroDivisionError in cell 5 (see train.html)",
            failure=StageFailure(
                "error",
                "ZeroDivisionError: division by zero (in cell [4])",
                cell_index=5,
                ename="ZeroDivisionError",
                evalue="division by zero",
            ),
        )
    )
    stages.append(
        _stage("evaluate", "skipped", notebook=None, html=None, skip_reason="upstream train failed")
    )
    return _record(run_id, "failed", stages)


PLOT = """fig, ax = plt.subplots(figsize=(8, 3.5), dpi=90)
x = np.linspace(0, 10, n_points)
ax.plot(x, np.sin(x * {k}), label="forecast")
ax.plot(x, np.cos(x * {k}) * 0.5, label="actual")
ax.set_title("week {k}")
ax.legend()
plt.show()"""


def execute_cells(folder: Path, name: str, cells: list[Any], parameters: dict[str, Any]) -> Path:
    """A notebook of `cells` executed as the runner executes a stage, in `folder` as `<name>.ipynb` (saved,
    flagged, with its banner when a cell raises)."""
    import nbformat
    from nbformat.v4 import new_notebook

    from runner.engine.execute import execute_notebook
    from runner.secrets import NO_SECRETS

    source, executed = folder / f"{name}.src.ipynb", folder / f"{name}.ipynb"
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=cells, metadata={"kernelspec": kernelspec}), source)
    execute_notebook(source, executed, parameters, cwd=folder, timeout_s=300, redact=NO_SECRETS)
    return executed


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
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # as MLFLOW_SERVER_ENV: no job runner
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


# --- the fault tests' shared set-ups (test_crash.py, test_faults*.py, test_leaks.py) ------------------------
@pytest.fixture(scope="session")
def _drops_champion(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The toy model's drops project (`make_drops_project`) with its first champion. Trained once per session
    (per xdist worker); tests get copies (`drops_champion_project`)."""
    return first_champion(make_drops_project, tmp_path_factory.mktemp("drops-champion"))


@pytest.fixture
def drops_champion_project(
    _drops_champion: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, str]:
    """A copy of the drops project whose version 1 is the champion, for this test alone."""
    return copy_for_test(_drops_champion, tmp_path, monkeypatch)


def read_until(process: subprocess.Popen[str], said: str, limit_s: float = 600) -> list[str]:
    """A spawned run's output lines up to the first one containing `said` (the run is still running then,
    unless that was its last line). Start the run with PYTHONUNBUFFERED=1 so that lines come as printed."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if said in line:
            return lines
    raise AssertionError(f"the run never said {said!r}:\n" + "".join(lines))
