"""Where a notebook finds things: the project's root and the run's products folder.

A notebook runs from Jupyter (working directory `notebooks/`), under nbval, or executed by the runner
(working directory: the project root); these give the same answers in all three.
"""

from __future__ import annotations

from pathlib import Path

from runner.project import REPORTS_DIR, find_root

SCRATCH = "scratch"  # reports/scratch: the products folder of a notebook run by hand


def root() -> Path:
    """The project's root: the nearest folder at or above the working directory that holds pipeline.yaml."""
    return find_root()


def products(products_dir: str = "") -> Path:
    """The folder where this run's stages hand products to each other: the `products_dir` the runner injects,
    or, when the notebook runs by hand (empty), `reports/scratch` of the project. Created if missing."""
    folder = Path(products_dir) if products_dir else root() / REPORTS_DIR / SCRATCH
    if not folder.is_absolute():
        folder = root() / folder
    folder.mkdir(parents=True, exist_ok=True)
    return folder
