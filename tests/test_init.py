"""`retrain init`: what a new project holds, where its data comes from, and that a folder with any of its
files in it is refused with nothing written (the runs of the projects it makes are in test_examples.py)."""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
from pathlib import Path, PurePosixPath

import pytest

from runner.commands import main
from runner.errors import EXIT_CONFIG
from runner.init import data, scaffold
from runner.init.source import RunnerSource, runner_source
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.unit

EXAMPLE = PROJECT_ROOT / "examples" / "rain-classifier"
EXAMPLE_RUNNER = RunnerSource("../..", local=True)  # the example installs the runner from this repository
# what runs and installs leave in a project: not part of it
RUNTIME = {".venv", "reports", "mlruns", "serving", "monitoring", ".test-run", "__pycache__"}
RUNTIME |= {".ipynb_checkpoints"}


def tree(root: Path) -> dict[str, bytes]:
    """The files under `root` that a project is made of (not what its runs and installs leave)."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not RUNTIME & set(path.relative_to(root).parts)
    }


def test_init_refuses_a_folder_holding_a_file_it_would_write_and_writes_nothing(tmp_path: Path, capsys):
    target = tmp_path / "mine"
    (target / "notebooks").mkdir(parents=True)
    (target / "pipeline.yaml").write_text("version: 1  # my own\n")
    (target / "notebooks" / "weather.py").write_text("# my own module\n")
    (target / "notes.txt").write_text("kept\n")

    code = main(["init", str(target), "--template", "classification"])

    err = capsys.readouterr().err
    assert code == EXIT_CONFIG
    assert str(target) in err and "pipeline.yaml" in err and "notebooks/weather.py" in err
    assert "Nothing was written" in err
    assert sorted(path.relative_to(target).as_posix() for path in target.rglob("*")) == [
        "notebooks",
        "notebooks/weather.py",
        "notes.txt",
        "pipeline.yaml",
    ]
    assert (target / "pipeline.yaml").read_text() == "version: 1  # my own\n"


def test_init_writes_beside_files_it_does_not_have(tmp_path: Path, capsys):
    """A folder with a git repository and notes of its own is fine: nothing of the project is there."""
    target = tmp_path / "mine"
    (target / ".git").mkdir(parents=True)
    (target / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (target / "notes.txt").write_text("kept\n")

    assert main(["init", str(target), "--template", "regression", "--runner", "notebook-retrain==0.1.0"]) == 0

    out = capsys.readouterr().out
    assert f"created a regression project in {target}" in out and "retrain run" in out
    assert (target / "notes.txt").read_text() == "kept\n"
    assert (target / "requirements.txt").read_text().splitlines()[-1] == "notebook-retrain==0.1.0"
    assert "cannot install the runner" not in out  # a version from an index: no warning about a local folder
    for name in ("pipeline.yaml", ".gitignore", ".pre-commit-config.yaml", "Makefile", "README.md"):
        assert (target / name).is_file(), name
    workflows = sorted(path.name for path in (target / ".github" / "workflows").iterdir())
    assert workflows == ["monitor.yml", "retrain.yml"]


def test_a_path_that_is_a_file_or_an_unknown_template_is_refused(tmp_path: Path, capsys):
    (tmp_path / "taken").write_text("x")
    assert main(["init", str(tmp_path / "taken"), "--template", "classification"]) == EXIT_CONFIG
    assert "is a file, not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:  # argparse lists the templates there are
        main(["init", str(tmp_path / "new"), "--template", "clasification"])
    assert stopped.value.code == 2
    assert "classification" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_the_data_comes_whole_from_the_package_cut_into_history_and_monthly_drops():
    spec = scaffold.load_template("classification").data
    source = data.package_file(spec)
    assert source.name == "seattle-weather.csv" and "vega_datasets" in source.parts
    files = data.cut(spec)
    history = files.pop(PurePosixPath(spec.history))
    assert sorted(str(name) for name in files) == [
        f"data/drops/seattle-weather-2015-{month:02d}.csv" for month in range(7, 13)
    ]
    rows = list(csv.reader(io.StringIO(history.decode())))
    assert rows[0] == ["date", "precipitation", "temp_max", "temp_min", "wind", "weather"]
    assert (rows[1][0], rows[-1][0], len(rows) - 1) == ("2012-01-01", "2015-06-30", 1277)
    days = sum(len(content.decode().splitlines()) - 1 for content in files.values())
    assert days == 184  # July to December 2015: every day of the package's 1,461 is in one file
    original = source.read_text().splitlines()
    assert original[1] == "2012/01/01,0.0,12.8,5.0,4.7,drizzle"
    assert rows[1] == ["2012-01-01", "0.0", "12.8", "5.0", "4.7", "drizzle"]  # only the date is rewritten


def test_the_example_is_what_init_makes_of_the_classification_template():
    """examples/rain-classifier is the template's output, byte for byte. After changing the template:
    rm -r examples/rain-classifier && retrain init examples/rain-classifier --template classification
    --runner ../.."""
    made = scaffold.project_files(scaffold.load_template("classification"), EXAMPLE_RUNNER)
    assert tree(EXAMPLE) == {str(path): content for path, content in made.items()}


@pytest.mark.parametrize("name", ["classification", "regression"])
def test_each_template_has_what_a_project_needs(name: str):
    files = {str(path) for path in scaffold.project_files(scaffold.load_template(name), EXAMPLE_RUNNER)}
    stages = ["01_validate", "02_features", "03_train", "04_evaluate", "05_deploy", "06_monitor"]
    expected = {
        "pipeline.yaml", "README.md", "Makefile", ".gitignore", ".pre-commit-config.yaml", "requirements.txt",
        ".github/workflows/retrain.yml", ".github/workflows/monitor.yml", "data/README.md",
        "data/new/.gitkeep", "notebooks/weather.py", "notebooks/weather_contract.py",
        *(f"notebooks/{stage}.ipynb" for stage in stages),
    }  # fmt: skip
    assert expected <= files
    assert "template.json" not in files


def test_the_runner_source_is_how_this_runner_was_installed():
    """Here an editable install from this repository: a local folder, which the workflows could not use."""
    found = runner_source()
    assert found.requirement.startswith("notebook-retrain")
    recorded = importlib.metadata.distribution("notebook-retrain").read_text("direct_url.json")
    direct = json.loads(recorded or "{}")
    if direct.get("url", "").startswith("file:"):
        assert found.local and found.requirement == f"notebook-retrain @ {direct['url']}"
    assert runner_source("notebook-retrain @ git+https://github.com/o/r@v1") == RunnerSource(
        "notebook-retrain @ git+https://github.com/o/r@v1", local=False
    )
    assert runner_source("-e ../runner").local and not runner_source("notebook-retrain==0.1.0").local


def test_every_template_file_is_package_data():
    """setuptools finds package data with glob, which skips names that start with a dot unless a pattern
    names them: a template's .gitignore or workflow missing from the wheel would be missing in every project
    made from an installed runner."""
    import glob
    import tomllib

    settings = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    runner = PROJECT_ROOT / "runner"
    shipped = {
        found
        for pattern in settings["package-data"]["runner"]
        for found in glob.glob(pattern, root_dir=runner, recursive=True)
    }
    templates = runner / "init" / "templates"
    files = [path.relative_to(runner).as_posix() for path in templates.rglob("*") if path.is_file()]
    assert files and [path for path in files if path not in shipped and "__pycache__" not in path] == []
