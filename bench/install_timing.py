"""How long a workflow job spends before the pipeline: the install from the lock, cold and warm, and a
scheduled job that finds nothing new.

    .venv/bin/python bench/install_timing.py [--skip-cold]

Measured here, the way the workflows do it (retrain.yml):
- "Install uv": `python -m pip install uv==VERSION` into a fresh virtual environment (one wheel, binary
  inside; pip's own cache on this machine may hold it, GitHub's runner downloads it)
- "Anything new?": `uv run --no-project --with pyyaml python -m runner.github.precheck`, cold and warm
  uv cache
- "Install", cold: `uv venv` + `uv pip install -c constraints.txt -e .` with an empty uv cache (downloads
  every wheel from the package index)
- "Install", warm uv cache: the same into a new .venv with the uv cache filled (GitHub's cache would have to
  restore the uv cache first; the workflow caches the .venv instead)
- "Install", restored .venv: the .venv packed as actions/cache packs it (tar + zstd), unpacked, then
  `make install-ci` (a check that finds everything installed)
- a nothing-new scheduled job: the checkout (a local clone: GitHub's is a shallow fetch), "Install uv",
  "Anything new?"

Not measured (no GitHub runner here): GitHub's own job start, setup-python's download (it is in the runner's
tool cache on hosted runners), and actions/cache's download of the packed .venv (its size is printed: at the
~100-200 MB/s hosted runners get from GitHub's cache, add size / 150 MB/s).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UV_VERSION = "0.13.9"
PYYAML = "pyyaml==6.0.4"


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold install (downloads ~1 GB)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="retrain-install-"))
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_CACHE_DIR")}
    env["UV_CACHE_DIR"] = str(scratch / "uv-cache")
    env["UV_PYTHON_DOWNLOADS"] = "never"
    python = shutil.which("python3.11") or sys.executable
    figures: list[tuple[str, float, str]] = []
    try:
        project = scratch / "project"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(project)], check=True)
        # the working tree's own constraints and pyproject (the branch being measured)
        for name in ("constraints.txt", "pyproject.toml", "Makefile"):
            shutil.copy2(ROOT / name, project / name)
        shutil.copytree(ROOT / "runner", project / "runner", dirs_exist_ok=True)

        tools = scratch / "tools"
        subprocess.run([python, "-m", "venv", str(tools)], check=True)
        seconds = timed(
            [str(tools / "bin/python"), "-m", "pip", "install", "-q", f"uv=={UV_VERSION}"], project, env
        )
        figures.append(("Install uv (pip install uv)", seconds, ""))
        path_env = {**env, "PATH": f"{tools / 'bin'}{os.pathsep}{env['PATH']}"}
        precheck = ["uv", "run", "--quiet", "--no-project", "--python", python, "--with", PYYAML]
        precheck += ["python", "-m", "runner.github.precheck"]
        for label in ("cold", "warm"):
            seconds = timed(precheck, project, {**path_env, "GITHUB_EVENT_NAME": "schedule"})
            figures.append((f"Anything new? ({label} uv cache)", seconds, ""))

        venv = project / ".venv"
        install = ["make", "install-ci", f"PYTHON={python}"]
        if not args.skip_cold:
            shutil.rmtree(scratch / "uv-cache", ignore_errors=True)
            seconds = timed(install, project, path_env)
            figures.append(("Install, cold (empty uv cache)", seconds, _size(venv)))
            shutil.rmtree(venv)
            seconds = timed(install, project, path_env)
            figures.append(("Install, warm uv cache, new .venv", seconds, ""))
        else:
            timed(install, project, path_env)
        packed = scratch / "venv.tar.zst"
        started = time.monotonic()
        subprocess.run(["tar", "--zstd", "-cf", str(packed), "-C", str(project), ".venv"], check=True)
        pack_s = time.monotonic() - started
        shutil.rmtree(venv)
        started = time.monotonic()
        subprocess.run(["tar", "--zstd", "-xf", str(packed), "-C", str(project)], check=True)
        unpack_s = time.monotonic() - started
        check_s = timed(install, project, path_env)
        size = f"{packed.stat().st_size / 1e6:.0f} MB packed"
        figures.append(("  .venv packed (actions/cache/save)", pack_s, size))
        figures.append(("  .venv unpacked (actions/cache/restore, without the download)", unpack_s, ""))
        figures.append(("  make install-ci on the restored .venv", check_s, ""))
        figures.append(("Install, restored .venv (unpack + check)", unpack_s + check_s, size))

        clone = scratch / "clone"
        seconds = timed(["git", "clone", "--quiet", "--depth=1", ROOT.as_uri(), str(clone)], scratch, env)
        uv_s = next(s for label, s, _ in figures if label.startswith("Install uv"))
        cold = next(s for label, s, _ in figures if label == "Anything new? (cold uv cache)")
        total = seconds + uv_s + cold
        figures.append(("Nothing-new job: checkout + Install uv + Anything new? (cold)", total, ""))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    width = max(len(label) for label, _, _ in figures)
    for label, seconds, note in figures:
        print(f"{label:<{width}}  {seconds:7.1f} s  {note}")
    return 0


def _size(folder: Path) -> str:
    total = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())
    return f".venv {total / 1e6:.0f} MB"


if __name__ == "__main__":
    sys.exit(main())
