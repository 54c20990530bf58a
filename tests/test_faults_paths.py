"""Paths in pipeline.yaml stay inside the project: the runner reads, moves and writes only there.

A data drop's glob, the history, accepted and quarantine folders, a stage's or the monitor's notebook, and
the model's data globs that climb out with `..`, start at `/` or `~`, are one configuration problem each
(exit 2), found by `retrain check` as by `retrain run`, before anything runs or moves. A notebook path at a
file outside the project is never opened, so no message quotes what it holds.
"""

from __future__ import annotations

import pytest

from runner.commands import main

pytestmark = pytest.mark.unit

PIPELINE = """\
version: 1
name: toy
stages:
  only:
    notebook: {notebook}
data:
  new: [{new}]
  history: {history}
  stage: only
  accepted: {accepted}
  quarantine: {quarantine}
"""
INSIDE = {
    "notebook": "notebooks/ok.ipynb",
    "new": '"data/new/*.csv"',
    "history": "data/history",
    "accepted": "data/accepted",
    "quarantine": "data/quarantine",
}
KEY_PATH = {
    "notebook": "stages.only.notebook",
    "new": "data.new[0]",
    "history": "data.history",
    "accepted": "data.accepted",
    "quarantine": "data.quarantine",
}


@pytest.mark.parametrize("key", list(INSIDE))
@pytest.mark.parametrize(
    "outside", ["../elsewhere", "/tmp/elsewhere", "data/../../elsewhere", "~/elsewhere", "/etc/passwd"]
)
@pytest.mark.parametrize("command", ["check", "run"])
def test_a_path_outside_the_project_is_a_configuration_error(make_project, capsys, key, outside, command):
    value = f'"{outside}/*.csv"' if key == "new" else outside
    pipeline = make_project(PIPELINE.format(**{**INSIDE, key: value}))
    outside_file = pipeline.parent.parent / "elsewhere"
    outside_file.mkdir(exist_ok=True)
    (outside_file / "drop.csv").write_text("x\n1\n")  # what a run must never move
    code = main([command, str(pipeline)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{KEY_PATH[key]}: '" in err and "is not a path inside the project" in err
    assert "Traceback" not in err and "root:" not in err  # /etc/passwd is never read, so never quoted
    assert (outside_file / "drop.csv").is_file() and not (pipeline.parent / "reports").exists()


def test_monitor_notebook_and_model_data_outside_the_project_are_refused(make_project, capsys):
    pipeline = make_project("""\
        version: 1
        name: toy
        stages:
          only:
            notebook: notebooks/ok.ipynb
        model:
          name: toy
          candidate: only.label
          metrics: only
          data: ["/var/lib/*.csv", "../data/*.csv"]
        monitor:
          notebook: /etc/shadow
          max_decay: 0.5
        """)
    assert main(["check", str(pipeline)]) == 2
    err = capsys.readouterr().err
    for where in ("model.data[0]", "model.data[1]", "monitor.notebook"):
        assert f"{where}: '" in err and "not a path inside the project" in err, where
    assert "Traceback" not in err
