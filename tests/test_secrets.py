"""Secrets: refused as parameters, and redacted from every byte the runner produces.

The leak test runs `retrain run` as a process whose notebook prints a secret (raw, URL-encoded, base64, in
HTML, in a scrap, as a cell's value) and then raises an error whose message holds it; Slack (a webhook on
127.0.0.1) and email (an SMTP server on 127.0.0.1) hear about the failure. Then every byte under reports/,
both output streams of the process (the kernels' included, they inherit them), the step summary, the step
outputs, the Slack requests and the emails are searched for the secret in each form: no hit.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from runner.commands import main
from runner.secrets import MIN_LENGTH, RedactingStream, Redactor, names_in_file
from tests.conftest import SMTP_PASSWORD, Mailbox, Webhook

TOKEN = "tok-9f8e7d6c/5b4a+3210=Zq"  # /, + and = make its URL-encoded and base64 forms differ from it
RUNNER = Path(__file__).resolve().parents[1] / "runner"


def forms(secret: str) -> dict[str, bytes]:
    """The secret as it could appear in a file, spelled out here independently of runner/secrets.py."""
    raw = secret.encode()
    return {
        "raw": raw,
        "url-encoded": urllib.parse.quote(secret, safe="").encode(),
        "url-encoded (plus)": urllib.parse.quote_plus(secret).encode(),
        "base64": base64.b64encode(raw),
        "base64 (url-safe)": base64.urlsafe_b64encode(raw).rstrip(b"="),
        "json-escaped": json.dumps(secret)[1:-1].encode(),
    }


def hits(blobs: dict[str, bytes], secret: str) -> list[str]:
    return [
        f"{form} in {where}"
        for where, blob in blobs.items()
        for form, seen in forms(secret).items()
        if seen in blob
    ]


# --- the redactor -------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_every_form_of_a_secret_is_replaced_by_its_name() -> None:
    redactor = Redactor.from_environ(["API_TOKEN"], {"API_TOKEN": TOKEN})
    text = " | ".join(seen.decode() for seen in forms(TOKEN).values())
    redacted = redactor.redact(text)
    assert not hits({"text": redacted.encode()}, TOKEN)
    assert redacted.count("***API_TOKEN***") == len(forms(TOKEN))
    assert redactor.redact_bytes(b"\x89PNG\xff " + TOKEN.encode()) == b"\x89PNG\xff ***API_TOKEN***"
    assert TOKEN not in repr(redactor)


@pytest.mark.unit
def test_short_values_are_not_redacted_and_the_longest_secret_wins() -> None:
    short = "x" * (MIN_LENGTH - 1)
    environ = {"SHORT": short, "OUTER": "abcd-efgh-ijkl", "INNER": "efgh"}
    redactor = Redactor.from_environ(["SHORT", "OUTER", "INNER"], environ)
    assert redactor.redact(f"{short} abcd-efgh-ijkl efgh") == f"{short} ***OUTER*** ***INNER***"


@pytest.mark.unit
def test_a_secret_written_in_two_pieces_on_one_line_is_caught() -> None:
    class Sink:
        def __init__(self) -> None:
            self.text = ""

        def write(self, text: str) -> int:
            self.text += text
            return len(text)

        def flush(self) -> None:
            return None

    sink = Sink()
    stream = RedactingStream(sink, Redactor.from_environ(["T"], {"T": TOKEN}))  # type: ignore[arg-type]
    stream.write("token " + TOKEN[:5])
    stream.write(TOKEN[5:] + " end\nnext ")
    stream.flush()
    assert sink.text == "token ***T*** end\nnext "


@pytest.mark.unit
def test_secret_names_come_from_the_file_notify_and_the_runner(tmp_path: Path) -> None:
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        "secrets: [WAREHOUSE_PASSWORD]\nnotify:\n  slack: {webhook_env: TEAM_HOOK}\n"
        "  email: {host: h, sender: s, to: [t], password_env: SMTP_PW}\n"
    )
    assert {"WAREHOUSE_PASSWORD", "TEAM_HOOK", "SMTP_PW", "MLFLOW_TRACKING_PASSWORD"} <= set(
        names_in_file(pipeline)
    )
    pipeline.write_text("version: [unclosed")
    assert "SLACK_WEBHOOK_URL" in names_in_file(pipeline)  # a broken file still has the defaults


# --- a secret is never a parameter --------------------------------------------------------------------------
PIPELINE = """\
version: 1
name: toy
secrets: [RETRAIN_TEST_TOKEN]
params: {{x: {x}}}
stages:
  only:
    notebook: notebooks/ok.ipynb
"""


@pytest.mark.unit
@pytest.mark.parametrize(
    ("how", "where"),
    [
        (["-p", f"x={TOKEN}"], "-p x=***"),
        (["-p", "retrain_test_token=anything"], "-p retrain_test_token=***"),
        (["--params-file", "{params_file}"], "params.yaml: x"),
        ([], "pipeline.yaml: params.x"),
    ],
)
def test_a_secret_given_as_a_parameter_is_refused_with_how_to_pass_it(
    make_project, capsys, monkeypatch, how, where
) -> None:
    monkeypatch.setenv("RETRAIN_TEST_TOKEN", TOKEN)
    pipeline = make_project(PIPELINE.format(x=json.dumps(TOKEN) if not how else 1))
    params_file = pipeline.parent / "params.yaml"
    params_file.write_text(f"x: {json.dumps(TOKEN)}\n")
    args = [arg.replace("{params_file}", "params.yaml") for arg in how]
    monkeypatch.chdir(pipeline.parent)
    code = main(["check", "pipeline.yaml", *args])
    captured = capsys.readouterr()
    assert code == 2
    assert "a secret (RETRAIN_TEST_TOKEN) cannot be passed as a parameter" in captured.err
    assert "set RETRAIN_TEST_TOKEN in the environment" in captured.err
    assert "os.environ['RETRAIN_TEST_TOKEN']" in captured.err
    assert where in captured.err
    assert TOKEN not in captured.out + captured.err


# --- no writer bypasses the redactor ------------------------------------------------------------------------
WRITING_CALLS = {"write_text", "write_bytes", "mkstemp", "NamedTemporaryFile", "fdopen", "copyfile", "copy2"}
# modules that write without runner/files.py, and why that is safe
ALLOWED = {
    "files.py": "the writer itself",
    "github/precheck.py": "runs before the install (no runner.files): appends its answer to GITHUB_OUTPUT",
    "engine/cache.py": "opens its lock file (a+) to hold an flock; writes nothing into it",
    "production/registry.py": "writes its own pid into the registry's lock file",
    "engine/lock.py": "writes who holds the run lock (pid, host, time, redacted command line)",
    "engine/kernels/server.py": "a worker's pickled answer: a private file the runner reads once, removes",
}


@pytest.mark.unit
def test_no_module_writes_a_file_except_through_runner_files() -> None:
    found = []
    for path in sorted(RUNNER.rglob("*.py")):
        if path.relative_to(RUNNER).as_posix() in ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            modes = [arg.value for arg in node.args[1:2] if isinstance(arg, ast.Constant)]
            modes += [
                kw.value.value
                for kw in node.keywords
                if kw.arg == "mode" and isinstance(kw.value, ast.Constant)
            ]
            opens_for_writing = name == "open" and any(set(str(mode)) & set("wax+") for mode in modes)
            if name in WRITING_CALLS or opens_for_writing or (name == "write" and _is_nbformat(node)):
                found.append(f"{path.relative_to(RUNNER)}:{node.lineno}: {name}")
    assert not found, "write through runner/files.py (redacted, atomic): " + ", ".join(found)


def _is_nbformat(node: ast.Call) -> bool:
    return isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", "") == "nbformat"


# --- the leak test ------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_a_secret_printed_by_a_notebook_and_raised_in_an_error_appears_nowhere(
    make_project,
    webhook: Webhook,
    mailbox: Mailbox,
    tmp_path: Path,
) -> None:
    pipeline = make_project(f"""\
        version: 1
        name: toy
        secrets: [RETRAIN_TEST_TOKEN]
        stages:
          leak:
            notebook: notebooks/leaks_secret.ipynb
        notify:
          email:
            host: 127.0.0.1
            port: {mailbox.port}
            sender: retrain@example.org
            to: [ml-team@example.org]
            starttls: false
            username: retrain
            password_env: RETRAIN_SMTP_PASSWORD
        """)
    summary, outputs = tmp_path / "step_summary.md", tmp_path / "github_output"
    env = {
        **os.environ,
        "RETRAIN_TEST_TOKEN": TOKEN,
        "SLACK_WEBHOOK_URL": webhook.url,
        "RETRAIN_SMTP_PASSWORD": SMTP_PASSWORD,
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_OUTPUT": str(outputs),
        "GITHUB_ACTIONS": "true",  # the ::error annotations repeat the stage's error
        "NO_PROXY": "127.0.0.1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "runner", "run", str(pipeline)],
        cwd=pipeline.parent,
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout.decode() + done.stderr.decode()
    reports = pipeline.parent / "reports"
    blobs = {
        str(path.relative_to(reports)): path.read_bytes() for path in reports.rglob("*") if path.is_file()
    }
    blobs |= {"stdout": done.stdout, "stderr": done.stderr}
    blobs |= {"step summary": summary.read_bytes(), "step outputs": outputs.read_bytes()}
    blobs |= {f"slack request {i}": json.dumps(r.body).encode() for i, r in enumerate(webhook.requests)}
    for i, message in enumerate(mailbox.messages):
        blobs[f"email {i}"] = mailbox.raw[i]
        blobs[f"email {i} (decoded body)"] = message.get_body().get_content().encode()  # type: ignore[union-attr]
    assert webhook.requests and mailbox.messages, "both channels heard about the run"

    secrets = {"RETRAIN_TEST_TOKEN": TOKEN, "SLACK_WEBHOOK_URL": webhook.url, "SMTP": SMTP_PASSWORD}
    found = {name: hits(blobs, value) for name, value in secrets.items()}
    searched = sum(len(blob) for blob in blobs.values())
    print(f"searched {searched} bytes in {len(blobs)} places; hits: {found}")
    assert found == {name: [] for name in secrets}

    # and it was there to be redacted: the marker stands where the secret was
    record = json.loads(next(reports.glob("*/run.json")).read_text())
    stage = record["stages"]["leak"]
    assert stage["failure"]["evalue"] == "the service refused token ***RETRAIN_TEST_TOKEN***"
    assert stage["scraps"]["leaked"] == "***RETRAIN_TEST_TOKEN***"
    for where in ("leak.ipynb", "leak.html", "stdout", "slack request 0", "email 0 (decoded body)"):
        name = next(key for key in blobs if key.endswith(where))
        assert b"***RETRAIN_TEST_TOKEN***" in blobs[name], where
    assert b"***SLACK_WEBHOOK_URL***" in blobs[next(k for k in blobs if k.endswith("leak.ipynb"))]
