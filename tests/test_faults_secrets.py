"""A secret with HTML and JSON special characters: found in every escaping the writers use, composed, and
taken out of what notebooks logged to the MLflow tracking store.

The secret is `Zq9xW"<&>'Kp7vR`. Whatever escapes it (JSON, HTML in its several spellings, XML, a repr, twice
or three times over) leaves its letters and digits as they are, so a search for "Zq9xW" and "Kp7vR" finds
every form of it, including forms nobody listed: that is what the end-to-end test searches for.
"""

from __future__ import annotations

import html
import json
import sqlite3
import time
from contextlib import closing

import markupsafe
import pytest

from runner.commands import main
from runner.engine.kernels import IN_THIS_PROCESS
from runner.production import store_secrets
from runner.secrets import Redactor

SECRET = "Zq9xW\"<&>'Kp7vR"
PIECES = (b"Zq9xW", b"Kp7vR")  # what every escaped form still holds


def written_forms(value: str) -> dict[str, str]:
    """The secret as the writers of a run write it, each made by that writer's own escaping."""
    from matplotlib.backends.backend_svg import _escape_attrib, _escape_comment

    as_json = json.dumps(value)
    return {
        "raw": value,
        "Jinja (run index)": str(markupsafe.escape(value)),  # &#34; and &#39;
        "nbconvert (stage page)": html.escape(value),  # &quot; and &#x27;
        "JSON (run.json)": as_json,
        "JSON, not ASCII": json.dumps(value, ensure_ascii=False),
        "a printed json.dumps in a page": html.escape(as_json),
        "a printed json.dumps in run index": str(markupsafe.escape(as_json)),
        "a printed json.dumps in a notebook": json.dumps(as_json),
        "JSON twice, in a notebook": json.dumps(json.dumps(as_json)),
        "a DataFrame's HTML in a notebook": json.dumps(html.escape(value, quote=False)),
        "an SVG attribute in a notebook": json.dumps(_escape_attrib(value)),
        "an SVG comment in a notebook": json.dumps(_escape_comment(value)),
        "a repr in a notebook": json.dumps(repr(value)),
        "a repr in a page": html.escape(repr(value)),
    }


@pytest.mark.unit
def test_every_escaping_the_writers_use_is_redacted_composed() -> None:
    redactor = Redactor.from_environ(["SPECIAL"], {"SPECIAL": SECRET})
    for writer, form in written_forms(SECRET).items():
        text = f"before {form} after"
        redacted = redactor.redact(text)
        assert not any(piece.decode() in redacted for piece in PIECES), (writer, form, redacted)
        assert "***SPECIAL***" in redacted, writer


@pytest.mark.e2e
def test_a_special_secret_appears_nowhere_in_the_reports_nor_in_the_tracking_store(make_project, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RETRAIN_TEST_SPECIAL", SECRET)
    pipeline = make_project("""\
        version: 1
        name: toy
        secrets: [RETRAIN_TEST_SPECIAL]
        stages:
          leak:
            notebook: notebooks/leaks_special_secret.ipynb
        """)
    assert main(["run", str(pipeline), "--no-notify"]) == 0
    root = pipeline.parent
    files = [path for path in (root / "reports").rglob("*") if path.is_file()]
    assert {"leak.html", "leak.ipynb", "run.json", "index.html"} <= {path.name for path in files}
    found = {str(path.relative_to(root)) for path in files for piece in PIECES if piece in path.read_bytes()}
    assert found == set(), f"the secret is in {sorted(found)}"
    store = root / "mlruns" / "mlflow.db"
    with closing(sqlite3.connect(store)) as database:
        logged = database.execute("SELECT value FROM params UNION ALL SELECT value FROM tags").fetchall()
        names = database.execute("SELECT name FROM runs").fetchall()
    assert "***RETRAIN_TEST_SPECIAL***" in {value for (value,) in logged}  # the notebook did log it
    assert not [text for (text,) in [*logged, *names] if any(p.decode() in (text or "") for p in PIECES)]
    assert not any(piece in store.read_bytes() for piece in PIECES)  # nor left in the file's free pages


@pytest.mark.e2e
def test_on_a_tracking_server_tags_and_names_are_redacted_and_params_reported(mlflow_server, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.create_experiment(f"special-{time.time_ns()}")
    since_ms = int(time.time() * 1000) - 1000
    run = client.create_run(experiment, run_name=f"run {SECRET}")
    client.log_param(run.info.run_id, "token", SECRET)
    client.set_tag(run.info.run_id, "token", f"the token is {SECRET}")
    redactor = Redactor.from_environ(["SPECIAL"], {"SPECIAL": SECRET})

    left = store_secrets.redact_store(mlflow_server, since_ms, redactor, {"SPECIAL": SECRET}, IN_THIS_PROCESS)

    after = client.get_run(run.info.run_id)
    assert after.data.tags["token"] == "the token is ***SPECIAL***"
    assert after.info.run_name == "run ***SPECIAL***"
    [warning] = left  # a logged param cannot be changed through MLflow's API: said, never hidden
    assert run.info.run_id in warning and "'token'" in warning and SECRET not in warning
