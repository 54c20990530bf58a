"""The machine's absolute paths out of what is read and published (runner/scrub.py), without kernels: the
patterns, the redactor that carries them, a stage page and a published site. The demo's own pages are checked
end to end in test_demo_pipeline.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from runner.github.pages import build_site
from runner.report.history import Remembered
from runner.report.pages import render_run_index, render_stage_html, write_run_json
from runner.scrub import MachinePaths
from runner.secrets import NO_SECRETS, Redactor
from tests.conftest import failed_run

pytestmark = pytest.mark.unit


def test_each_folder_becomes_its_placeholder_where_it_is_whole(tmp_path: Path):
    root = tmp_path / "project"
    paths = MachinePaths.of(root, home=Path("/home/ana"))
    text = (
        f'products_dir = "{root}/reports/r1/products"\n'
        f"  File {sys.prefix}/lib/python3.11/site-packages/pandas/core/frame.py:12\n"
        f"sqlite:///{root}/mlruns/mlflow.db and /home/ana/.cache/x, /home/anastasia/notes, {root}-old/x\n"
    )
    scrubbed = paths.scrub(text)
    assert 'products_dir = "<project>/reports/r1/products"' in scrubbed
    # a virtual environment inside the project is the longer path: it reads <python>, not <project>/.venv
    assert "File <python>/lib/python3.11/site-packages/pandas" in scrubbed or sys.prefix == sys.base_prefix
    assert "sqlite:///<project>/mlruns/mlflow.db and ~/.cache/x" in scrubbed
    assert "/home/anastasia/notes" in scrubbed and f"{root}-old/x" in scrubbed  # other folders, left alone
    assert paths.found_in(scrubbed) == [] and paths.found_in(text) == sorted(
        {str(root), sys.prefix, "/home/ana"}
    )
    assert paths.scrub(f"{root}") == "<project>" and paths.scrub(f"({root})") == "(<project>)"


def test_a_path_inside_a_word_or_an_image_is_left_alone():
    paths = MachinePaths.from_pairs([("/root", "~")])
    assert paths.scrub("see /root/x or '/root'") == "see ~/x or '~'"
    image = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg/root/AAA+/root/B"
    assert paths.scrub(image) == image  # after a letter or '+' a "/root" is base64, not a folder
    assert paths.scrub("/rootfs and /root.d") == "/rootfs and /root.d"


def test_the_redactor_scrubs_paths_only_where_it_is_asked_to(tmp_path: Path):
    redact = Redactor.from_environ(["TOKEN"], {"TOKEN": "s3cr3t-value"})
    text = f"{tmp_path}/x with s3cr3t-value"
    assert redact.redact(text) == f"{tmp_path}/x with ***TOKEN***"  # run.json, notebooks: paths kept
    scrubbing = redact.scrubbing(MachinePaths.of(tmp_path))
    assert scrubbing.redact(text) == "<project>/x with ***TOKEN***"
    assert scrubbing.redact_bytes(f"{tmp_path}/y".encode()) == b"<project>/y"
    assert NO_SECRETS.scrubbing(MachinePaths.of(tmp_path)).redact_bytes(b"\x89PNG\x00") == b"\x89PNG\x00"


def machine_notebook(root: Path) -> nbformat.NotebookNode:
    """An executed notebook as papermill leaves it, with the machine's paths where they were seen."""
    notebook = new_notebook(
        cells=[
            new_markdown_cell("# Validate"),
            new_code_cell(
                f'products_dir = "{root}/reports/r1/products"',
                metadata={"tags": ["injected-parameters"]},
            ),
            new_code_cell(
                "open(products_dir)",
                outputs=[
                    new_output(
                        "error",
                        ename="FileNotFoundError",
                        evalue=f"[Errno 2] No such file or directory: '{root}/reports/r1/products/x.csv'",
                        traceback=[
                            f"File {sys.prefix}/lib/python3.11/site-packages/x.py:3",
                            f"{Path.home()}/x",
                        ],
                    ),
                    new_output(
                        "stream", name="stderr", text=f"{root}/notebooks/forecasting.py:9: UserWarning"
                    ),
                ],
            ),
        ]
    )
    notebook.metadata["papermill"] = {
        "input_path": f"{root}/notebooks/01_validate.ipynb",
        "output_path": f"{root}/reports/r1/validate.ipynb",
        "parameters": {"products_dir": f"{root}/reports/r1/products"},
    }
    return notebook


def machine_paths_in(folder: Path, root: Path) -> dict[str, list[str]]:
    paths = MachinePaths.of(root)
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and (held := paths.found_in(path.read_text(encoding="utf-8", errors="replace"))):
            found[str(path.relative_to(folder))] = held
    return found


def test_stage_pages_and_the_published_site_hold_no_machine_path(tmp_path: Path):
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    (root / "pipeline.yaml").write_text("version: 1\n")  # where pages find the project they belong to
    record = failed_run()
    run_dir = root / "reports" / record.run_id
    run_dir.mkdir(parents=True)
    executed = run_dir / "validate.ipynb"
    nbformat.write(machine_notebook(root), executed)
    record.stages["train"].error = (
        record.stages["train"].error or ""
    ) + f" in {root}/notebooks/03_train.ipynb"
    write_run_json(run_dir, record, redact=NO_SECRETS)
    render_run_index(run_dir, record, redact=NO_SECRETS)
    render_stage_html(
        executed, run_dir / "validate.html", title="validate", redact=NO_SECRETS, show_code=True
    )

    page = (run_dir / "validate.html").read_text(encoding="utf-8")
    assert "&lt;project&gt;/reports/r1/products" in page and "&lt;python&gt;/lib/python3.11" in page
    assert "<project>" not in page  # a bare placeholder would be read as a tag, and shown as nothing
    kept = machine_paths_in(run_dir, root)
    assert sorted(kept) == ["run.json", "validate.ipynb"]  # the runner reads these back: kept as written
    assert str(root) in kept["validate.ipynb"]
    assert json.loads((run_dir / "run.json").read_text())["run_id"] == record.run_id

    site = tmp_path / "site"
    assert build_site(root / "reports", site, 5, Remembered(), NO_SECRETS) == [record.run_id]
    assert sorted(path.name for path in (site / record.run_id).iterdir()) == [
        "index.html", "run.json", "validate.html", "validate.ipynb",
    ]  # fmt: skip
    assert machine_paths_in(site, root) == {}
    published = json.loads((site / record.run_id / "validate.ipynb").read_text(encoding="utf-8"))
    assert published["metadata"]["papermill"]["input_path"] == "<project>/notebooks/01_validate.ipynb"
    nbformat.validate(nbformat.reads(json.dumps(published), as_version=4))  # still a notebook
