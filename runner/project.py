"""Where things live in a project: its root, its reports, its MLflow store.

Notebooks import this too, so that a notebook opened in Jupyter (working directory `notebooks/`), checked by
nbval, or executed by the runner (working directory = project root) finds the same files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

PIPELINE_FILE = "pipeline.yaml"
REPORTS_DIR = "reports"
MLFLOW_DIR = "mlruns"
PRODUCTS_DIR = "products"  # inside a run folder: what stages hand to each other (the notebooks' run_dir)


def find_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: the working directory) that holds pipeline.yaml."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PIPELINE_FILE).is_file():
            return folder
    raise FileNotFoundError(f"no {PIPELINE_FILE} in {here} or any folder above it")


def outside_project(path: str) -> bool:
    """Whether a path or glob written in pipeline.yaml could point outside the project: empty, absolute, from
    the home folder, with a drive, or climbing with `..`. The runner reads, moves and writes only inside."""
    text = path.strip()
    parts = PurePosixPath(text.replace("\\", "/")).parts
    drive = ":" in parts[0] if parts else False
    return not text or text.startswith(("/", "~", "\\")) or ".." in parts or drive


def tracking_uri(root: Path, environ: Mapping[str, str] | None = None) -> str:
    """MLFLOW_TRACKING_URI when set, else the embedded sqlite store inside the project (no server needed)."""
    env = os.environ if environ is None else environ
    return env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / MLFLOW_DIR / 'mlflow.db').resolve()}"


def use_mlflow(root: Path, experiment: str) -> str:
    """Point MLflow at the project's tracking store and experiment; returns the experiment id.

    With the embedded store the experiment's artifacts go under `<root>/mlruns/artifacts`, whatever the
    working directory is (MLflow would otherwise put them in `./mlruns` of the caller).
    """
    import mlflow  # ~1 s to import: only callers that log pay for it

    uri = tracking_uri(root)
    embedded = uri.startswith("sqlite:///") and "MLFLOW_TRACKING_URI" not in os.environ
    if embedded:
        (root / MLFLOW_DIR).mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        location = (root / MLFLOW_DIR / "artifacts").resolve().as_uri() if embedded else None
        experiment_id = mlflow.create_experiment(experiment, artifact_location=location)
    else:
        experiment_id = found.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return str(experiment_id)


def git_sha(root: Path) -> str | None:
    """The commit checked out in `root`, or None outside a git repository."""
    return git_commit(root)[0]


def git_commit(root: Path) -> tuple[str | None, str]:
    """The commit checked out in `root` and the first line of its message; (None, "") outside a repository."""
    import subprocess

    try:
        done = subprocess.run(
            ["git", "log", "-1", "--format=%H%n%s"], cwd=root, capture_output=True, text=True, timeout=10,
            check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None, ""
    sha, _, subject = done.stdout.partition("\n")
    return (sha.strip() or None, subject.strip()) if done.returncode == 0 else (None, "")
