"""Tests for runner/report/notify.py against real servers on 127.0.0.1: an HTTP server in a thread standing
in for Slack's incoming webhook (scripted per test), and an aiosmtpd SMTP server. Nothing in urllib or smtplib
is mocked; only the sleep between retries is injected, so that no test waits for real backoff.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from runner.records import GateResult, ModelRecord, RunRecord, SmokeCheck, StageFailure, StageRecord
from runner.report.notify import (
    NO_WEBHOOK,
    Delivery,
    EmailSettings,
    Links,
    email_message,
    headline,
    post_json,
    send_email,
    send_slack,
    slack_payload,
    text_message,
)
from runner.report.pages import model_sentence, outcome_sentence
from tests.conftest import SECRET_PATH, Mailbox, Reply, Webhook, free_port, no_proxy_for_localhost

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "slack"
RUN_URL = "https://github.com/acme/demand-forecast/actions/runs/9876543210"
ARTIFACT_URL = "https://github.com/acme/demand-forecast/actions/runs/9876543210/artifacts/1234567"
LINKS = Links(RUN_URL, ARTIFACT_URL, "reports/20261126T074012Z-3fa9c1/index.html")
HEADLINES = {
    "success": "demand-forecast v13 retrained and deployed, WAPE 7.9% (was 8.4%)",
    "gate_failure": "demand-forecast: stopped by gate `wape <= 0.15` in evaluate (wape = 0.21)",
    "stage_failure": "demand-forecast: failed at stage train: ValueError: Input contains NaN (in cell [4])",
}


# --- records built by hand ----------------------------------------------------------------------------------
def _stage(name: str, status: str = "succeeded", duration_s: float = 2.0, **fields: Any) -> StageRecord:
    return StageRecord(name, f"notebooks/{name}.ipynb", status, duration_s, **fields)  # type: ignore[arg-type]


def _record(status: str, stages: list[StageRecord], model: ModelRecord | None = None) -> RunRecord:
    return RunRecord(
        run_id="20261126T074012Z-3fa9c1",
        pipeline="demand-forecast",
        trigger="schedule",
        mode="full",
        git_sha="0123456789abcdef0123456789abcdef01234567",
        started_at="2026-11-26T07:40:12+00:00",
        finished_at="2026-11-26T07:42:03+00:00",
        duration_s=111.0,
        params={"holdout_weeks": 8, "wape_threshold": 0.15},
        stages={stage.name: stage for stage in stages},
        status=status,  # type: ignore[arg-type]
        model=model,
    )


def _validate() -> StageRecord:
    gates = [GateResult("n_errors == 0", True, "n_errors = 0 == 0", {"n_errors": 0})]
    return _stage("validate", duration_s=3.4, gates=gates, scraps={"n_errors": 0})


def success_record() -> RunRecord:
    gates = [
        GateResult("wape <= params.wape_threshold", True, "wape = 0.079 <= 0.15", {"wape": 0.079}),
        GateResult("wape < baseline_wape", True, "wape = 0.079 < baseline_wape = 0.112", {"wape": 0.079}),
        GateResult("wape <= champion.wape * 1.02", True, "wape = 0.079 <= 0.08568", {"wape": 0.079}),
    ]
    model = ModelRecord(
        name="demand-forecast",
        action="registered",
        version="13",
        champion_before="12",
        champion_after="13",
        promoted=True,
        detail="registered as version 13; promoted to champion (was 12)",
        smoke_check=SmokeCheck(True, "reproduced the evaluate stage's predictions (max diff 0)", 1.2, 0.0),
        metrics={"wape": 0.079, "bias": -0.004},
        champion_metrics={"wape": 0.084, "bias": 0.002},
    )
    stages = [
        _validate(),
        _stage("features", duration_s=5.2),
        _stage("train", duration_s=65.3),
        _stage("evaluate", duration_s=8.9, gates=gates, scraps={"wape": 0.079}),
        _stage("deploy", duration_s=4.1),
    ]
    return _record("succeeded", stages, model)


def gate_failure_record() -> RunRecord:
    gates = [
        GateResult("wape <= 0.15", False, "wape = 0.21 > 0.15", {"wape": 0.21}),
        GateResult("wape < baseline_wape", True, "wape = 0.21 < baseline_wape = 0.24", {"wape": 0.21}),
    ]
    stages = [
        _validate(),
        _stage("features", duration_s=5.0),
        _stage("train", duration_s=61.0),
        _stage("evaluate", "gate_failed", 9.1, gates=gates, scraps={"wape": 0.21}),
        _stage("deploy", "skipped", 0.0, skip_reason="not run: stage 'evaluate' gate failed"),
    ]
    return _record("gate_failed", stages)


def stage_failure_record() -> RunRecord:
    failure = StageFailure(
        "error", "ValueError: Input contains NaN (in cell [4])", 5, "ValueError", "Input contains NaN"
    )
    stages = [
        _validate(),
        _stage("features", duration_s=5.0),
        _stage("train", "failed", 12.7, failure=failure, error=f"stage 'train' failed: {failure.message}"),
        _stage("evaluate", "skipped", 0.0, skip_reason="not run: stage 'train' failed"),
        _stage("deploy", "skipped", 0.0, skip_reason="not run: stage 'train' failed"),
    ]
    return _record("failed", stages)


RECORDS = {
    "success": success_record,
    "gate_failure": gate_failure_record,
    "stage_failure": stage_failure_record,
}


def _save(name: str, payload: dict[str, Any]) -> None:
    """Keep the payload where a report can quote it (test-artifacts/ is gitignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"{name}.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def _texts(payload: dict[str, Any]) -> str:
    """Every text a reader sees in the blocks, one per line."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(payload["blocks"])
    return "\n".join(found)


# --- wording and payloads -----------------------------------------------------------------------------------
@pytest.mark.unit
@pytest.mark.parametrize("name", list(RECORDS))
def test_headline_says_the_outcome_in_one_line(name: str) -> None:
    assert headline(RECORDS[name]()) == HEADLINES[name]


@pytest.mark.unit
def test_success_payload_has_status_version_metric_change_and_links() -> None:
    record = success_record()
    payload = slack_payload(record, LINKS)
    _save("success", payload)
    texts = _texts(payload)

    assert payload["text"] == HEADLINES["success"]
    assert payload["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "✅ " + HEADLINES["success"], "emoji": True},
    }
    assert "*Status*\n✅ succeeded" in texts
    assert "*WAPE*\n7.9% (was 8.4%, -0.5 pp)" in texts
    assert "*Gates*\n4/4 passed" in texts
    assert record.model is not None and model_sentence(record.model) in texts
    assert "validate 3.4s · features 5.2s · train 1m05s · evaluate 8.9s · deploy 4.1s" in texts
    assert "Run 20261126T074012Z-3fa9c1 (trigger schedule, mode full, git 0123456)" in texts
    buttons = next(block["elements"] for block in payload["blocks"] if block["type"] == "actions")
    assert [(button["text"]["text"], button["url"]) for button in buttons] == [
        ("Workflow run", RUN_URL),
        ("Reports artifact", ARTIFACT_URL),
    ]


@pytest.mark.unit
def test_gate_failure_payload_names_the_failed_gate_and_what_it_saw() -> None:
    payload = slack_payload(gate_failure_record(), LINKS)
    _save("gate_failure", payload)
    texts = _texts(payload)

    assert payload["blocks"][0]["text"]["text"] == "🚧 " + HEADLINES["gate_failure"]
    assert "*Gates*\n2/3 passed" in texts
    assert "*WAPE*\n21.0%" in texts
    assert "*Failed gates*\n• evaluate: `wape &lt;= 0.15`: wape = 0.21 &gt; 0.15" in texts
    assert "evaluate 9.1s (gate failed) · deploy skipped" in texts
    assert "Failed at" not in texts


@pytest.mark.unit
def test_stage_failure_payload_names_stage_and_error_in_one_line() -> None:
    payload = slack_payload(stage_failure_record(), LINKS)
    _save("stage_failure", payload)
    texts = _texts(payload)

    error_blocks = [block for block in payload["blocks"] if "*Failed at" in json.dumps(block)]
    assert len(error_blocks) == 1
    assert (
        error_blocks[0]["text"]["text"]
        == "*Failed at stage train:* `ValueError: Input contains NaN (in cell [4])`"
    )
    assert "*Status*\n❌ failed" in texts
    assert "train 12.7s (failed) · evaluate skipped · deploy skipped" in texts


@pytest.mark.unit
def test_model_release_failure_is_named_as_such() -> None:
    record = success_record()
    assert record.model is not None
    record.status, record.model.promoted, record.model.rolled_back = "failed", False, True
    record.model.error = (
        "version 13 failed its smoke check and was rolled back (champion: 12): \nmax diff 0.4"
    )

    line = headline(record)
    payload = slack_payload(record, Links())

    assert line == (
        "demand-forecast: failed at the model release: version 13 failed its smoke check and was rolled back"
        " (champion: 12): max diff 0.4"
    )
    assert "*Failed at the model release:* `version 13 failed its smoke check" in _texts(payload)
    assert not any(block["type"] == "actions" for block in payload["blocks"])  # no links, no buttons


@pytest.mark.unit
def test_payload_stays_within_slack_limits_whatever_the_record() -> None:
    long_error = "ValueError: <!channel> " + "x" * 20_000 + "\nsecond line (in cell [9])"
    stages = [_stage(f"stage_{index:02d}", duration_s=7200.0 + index) for index in range(60)]
    stages[-1] = _stage(
        "stage_59",
        "gate_failed",
        gates=[GateResult(f"metric_{n} < {n}", False, "d" * 900, {}) for n in range(30)],
    )
    stages[30] = _stage("stage_30", "failed", failure=StageFailure("error", long_error))
    record = _record("failed", stages)
    record.pipeline = "p" * 400
    links = Links("reports/not-a-url", "https://example.org/" + "a" * 4000, "reports/x/index.html")

    payload = slack_payload(record, links)
    blocks = payload["blocks"]

    json.dumps(payload)
    assert len(blocks) <= 50
    assert len(payload["text"]) <= 3000
    assert len(blocks[0]["text"]["text"]) <= 150
    for block in blocks:
        assert len(block.get("text", {}).get("text", "")) <= 3000
        assert len(block.get("fields", [])) <= 10
        assert all(len(item["text"]) <= 2000 for item in block.get("fields", []))
        if block["type"] == "context":
            assert all(len(item["text"]) <= 2000 for item in block["elements"])
    assert not any(block["type"] == "actions" for block in blocks)  # neither link is a usable button URL
    error = next(
        block["text"]["text"] for block in blocks if "*Failed at" in block.get("text", {}).get("text", "")
    )
    assert "\n" not in error and error.endswith("second line (in cell [9])`")
    assert "<!channel>" not in json.dumps(payload) and "&lt;!channel&gt;" in error
    assert "... and 20 more" in _texts(payload)


@pytest.mark.unit
def test_text_message_is_the_plain_rendering() -> None:
    record = gate_failure_record()
    text = text_message(record, LINKS)

    assert text.startswith("🚧 " + HEADLINES["gate_failure"] + "\n\n")
    assert f"\n{outcome_sentence(record)}\n" in text  # the wording the run index and step summary use
    assert "WAPE: 21.0%\nGates: 2/3 passed\n" in text
    assert "stage     status       duration  gates\nvalidate  succeeded    3.4s      1/1\n" in text
    assert "deploy    skipped      -         -\n" in text
    assert "Failed gates:\n  - evaluate: `wape <= 0.15`: wape = 0.21 > 0.15\n" in text
    assert f"Workflow run: {RUN_URL}\nArtifact: {ARTIFACT_URL}\nReport: reports/" in text
    assert text.endswith("Run 20261126T074012Z-3fa9c1 (trigger schedule, mode full, git 0123456)\n")


# --- a webhook on 127.0.0.1 (tests/conftest.py) ------------------------------------------------------------
@pytest.fixture(autouse=True)
def _no_proxy_for_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    no_proxy_for_localhost(monkeypatch)


def _assert_no_secret(delivery: Delivery, url: str) -> None:
    assert url not in delivery.detail
    assert "SECRET" not in delivery.detail and "secret" not in delivery.detail


# --- Slack delivery -----------------------------------------------------------------------------------------
@pytest.mark.unit
def test_send_slack_posts_the_payload_as_json(webhook: Webhook) -> None:
    record, sleeps = success_record(), list[float]()
    delivery = send_slack(record, LINKS, webhook_url=webhook.url, sleep=sleeps.append)

    assert delivery == Delivery(
        "slack", True, "delivered to Slack webhook (SLACK_WEBHOOK_URL) (HTTP 200 ok)", 1
    )
    assert sleeps == []
    [request] = webhook.requests
    assert request.path == SECRET_PATH
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    assert request.body == slack_payload(record, LINKS)
    _assert_no_secret(delivery, webhook.url)


@pytest.mark.unit
def test_retry_after_is_honoured_on_429(webhook: Webhook) -> None:
    webhook.script = [Reply(429, "rate_limited", {"Retry-After": "2"}), Reply()]
    sleeps: list[float] = []

    delivery = send_slack(gate_failure_record(), LINKS, webhook_url=webhook.url, sleep=sleeps.append)

    assert delivery.delivered and delivery.attempts == 2
    assert sleeps == [2.0]
    assert len(webhook.requests) == 2 and webhook.requests[0].body == webhook.requests[1].body


@pytest.mark.unit
def test_retry_after_is_capped_by_the_max_wait(webhook: Webhook) -> None:
    webhook.script = [Reply(429, "rate_limited", {"Retry-After": "3600"}), Reply()]
    sleeps: list[float] = []

    delivery = post_json(webhook.url, {"text": "hi"}, max_wait_s=5, sleep=sleeps.append)

    assert delivery.delivered and sleeps == [5]


@pytest.mark.unit
def test_a_retry_after_date_falls_back_to_the_backoff(webhook: Webhook) -> None:
    webhook.script = [Reply(503, "busy", {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}), Reply()]
    sleeps: list[float] = []

    delivery = post_json(webhook.url, {"text": "hi"}, sleep=sleeps.append)

    assert delivery.delivered and sleeps == [1.0]


@pytest.mark.unit
def test_server_errors_are_retried_with_exponential_backoff(webhook: Webhook) -> None:
    webhook.script = [Reply(500, "oops"), Reply(502, "bad gateway"), Reply(503, "busy"), Reply()]
    sleeps: list[float] = []

    delivery = send_slack(stage_failure_record(), LINKS, webhook_url=webhook.url, sleep=sleeps.append)

    assert delivery.delivered and delivery.attempts == 4
    assert sleeps == [1.0, 2.0, 4.0]
    _assert_no_secret(delivery, webhook.url)


@pytest.mark.unit
def test_a_webhook_that_always_fails_is_reported_not_raised(webhook: Webhook) -> None:
    webhook.script = [Reply(500, "internal_error")]
    sleeps: list[float] = []

    delivery = send_slack(success_record(), LINKS, webhook_url=webhook.url, sleep=sleeps.append)

    assert delivery == Delivery(
        "slack",
        False,
        "Slack webhook (SLACK_WEBHOOK_URL): not delivered after 4 attempts: HTTP 500 internal_error",
        4,
    )
    assert sleeps == [1.0, 2.0, 4.0] and len(webhook.requests) == 4


@pytest.mark.unit
def test_a_client_error_is_not_retried(webhook: Webhook) -> None:
    webhook.script = [Reply(400, "invalid_blocks")]

    delivery = send_slack(success_record(), LINKS, webhook_url=webhook.url, sleep=lambda s: None)

    assert not delivery.delivered and delivery.attempts == 1
    assert delivery.detail.endswith("after 1 attempt: HTTP 400 invalid_blocks")


@pytest.mark.unit
def test_a_hung_webhook_ends_within_the_timeouts(webhook: Webhook) -> None:
    webhook.script = [Reply(hang_s=30)]
    sleeps: list[float] = []

    started = time.monotonic()
    delivery = send_slack(
        success_record(), LINKS, webhook_url=webhook.url, timeout_s=0.5, sleep=sleeps.append
    )
    elapsed = time.monotonic() - started

    assert elapsed < 5  # 4 attempts of 0.5 s, the sleeps injected
    assert not delivery.delivered and delivery.attempts == 4
    assert delivery.detail.endswith("not delivered after 4 attempts: no answer within 0.5 s")
    assert sleeps == [1.0, 2.0, 4.0]
    _assert_no_secret(delivery, webhook.url)


@pytest.mark.unit
def test_a_refused_connection_is_retried_then_reported() -> None:
    url = f"http://127.0.0.1:{free_port()}{SECRET_PATH}"
    sleeps: list[float] = []

    delivery = send_slack(success_record(), LINKS, webhook_url=url, retries=2, sleep=sleeps.append)

    assert not delivery.delivered and delivery.attempts == 3 and sleeps == [1.0, 2.0]
    assert "connection failed: ConnectionRefusedError" in delivery.detail
    _assert_no_secret(delivery, url)


@pytest.mark.unit
@pytest.mark.parametrize(
    "url",
    [
        "hooks.example.org/services/T0SECRET/B0SECRET/secret",  # no scheme
        "http://127.0.0.1:notaport/services/T0SECRET/B0SECRET/secret",
        "http://127.0.0.1:1/services/T0SECRET/B0 SECRET/secret\n",  # whitespace inside the URL
    ],
)
def test_a_malformed_webhook_url_is_reported_without_revealing_it(url: str) -> None:
    delivery = send_slack(success_record(), LINKS, webhook_url=url, sleep=lambda s: None)

    assert not delivery.delivered and delivery.attempts <= 1
    _assert_no_secret(delivery, url)


@pytest.mark.unit
@pytest.mark.parametrize("url", [None, "", "   "])
def test_without_a_webhook_nothing_is_sent(url: str | None) -> None:
    delivery = send_slack(success_record(), LINKS, webhook_url=url)

    assert delivery == Delivery(
        "slack", False, "no webhook configured (SLACK_WEBHOOK_URL): message shown in the summary instead"
    )
    assert delivery.detail == NO_WEBHOOK


# --- email through a real SMTP server (tests/conftest.py) ---------------------------------------------------
def _settings(port: int, **fields: Any) -> EmailSettings:
    defaults: dict[str, Any] = dict(
        sender="retrain@example.org", recipients=("ml-team@example.org", "oncall@example.org"), starttls=False
    )
    return EmailSettings("127.0.0.1", port, **{**defaults, **fields}, timeout_s=5)


@pytest.mark.unit
def test_the_email_arrives_with_the_headline_stages_and_failed_gate(mailbox: Mailbox) -> None:
    record = gate_failure_record()

    delivery = send_email(record, LINKS, _settings(mailbox.port), environ={})

    assert delivery == Delivery("email", True, f"sent via SMTP 127.0.0.1:{mailbox.port} to 2 recipient(s)", 1)
    [message] = mailbox.messages
    assert mailbox.envelopes == [("retrain@example.org", ["ml-team@example.org", "oncall@example.org"])]
    assert message["Subject"] == headline(record) == HEADLINES["gate_failure"]
    assert message["To"] == "ml-team@example.org, oncall@example.org"
    body = message.get_content().replace("\r\n", "\n")  # SMTP carries CRLF line ends
    assert "validate  succeeded    3.4s      1/1" in body
    assert "evaluate  gate failed  9.1s      1/2" in body
    assert "  - evaluate: `wape <= 0.15`: wape = 0.21 > 0.15" in body
    assert RUN_URL in body and ARTIFACT_URL in body
    assert body == text_message(record, LINKS)


@pytest.mark.unit
def test_the_password_comes_from_the_named_environment_variable(mailbox: Mailbox) -> None:
    settings = _settings(mailbox.port, username="retrain-bot", password_env="SMTP_PASSWORD")

    delivery = send_email(stage_failure_record(), LINKS, settings, environ={"SMTP_PASSWORD": "s3cret"})

    assert delivery.delivered, delivery.detail
    assert mailbox.logins == [("retrain-bot", "s3cret")]
    assert mailbox.messages[0]["Subject"] == HEADLINES["stage_failure"]


@pytest.mark.unit
def test_a_refused_login_is_reported_without_the_password(mailbox: Mailbox) -> None:
    settings = _settings(mailbox.port, username="retrain-bot", password_env="SMTP_PASSWORD")

    delivery = send_email(success_record(), LINKS, settings, environ={"SMTP_PASSWORD": "not-the-password"})

    assert not delivery.delivered and delivery.attempts == 1
    assert "SMTPAuthenticationError" in delivery.detail and "not-the-password" not in delivery.detail
    assert mailbox.messages == []


@pytest.mark.unit
def test_an_unset_password_variable_sends_nothing(mailbox: Mailbox) -> None:
    settings = _settings(mailbox.port, username="retrain-bot", password_env="SMTP_PASSWORD")

    delivery = send_email(success_record(), LINKS, settings, environ={})

    assert delivery == Delivery("email", False, "email not sent: SMTP_PASSWORD is not set", 0)
    assert mailbox.logins == [] and mailbox.messages == []


@pytest.mark.unit
def test_starttls_that_the_server_does_not_offer_is_reported(mailbox: Mailbox) -> None:
    delivery = send_email(success_record(), LINKS, _settings(mailbox.port, starttls=True), environ={})

    assert not delivery.delivered
    assert "STARTTLS extension not supported by server" in delivery.detail
    assert mailbox.messages == []


@pytest.mark.unit
def test_a_wrong_port_is_reported_not_raised() -> None:
    port = free_port()

    started = time.monotonic()
    delivery = send_email(success_record(), LINKS, _settings(port), environ={})

    assert time.monotonic() - started < 5
    assert not delivery.delivered and delivery.attempts == 1
    assert delivery.detail.startswith(
        f"email not delivered via SMTP 127.0.0.1:{port}: ConnectionRefusedError"
    )


@pytest.mark.unit
def test_missing_settings_send_nothing() -> None:
    delivery = send_email(success_record(), LINKS, EmailSettings(host=""), environ={})

    assert delivery == Delivery("email", False, "email not sent: no host, sender, recipients configured")


@pytest.mark.unit
def test_email_message_has_a_plain_text_body() -> None:
    message = email_message(success_record(), LINKS, _settings(25))

    assert message["Subject"] == HEADLINES["success"]
    assert message.get_content_type() == "text/plain"
    assert message["Date"]


@pytest.mark.e2e
def test_a_run_announces_itself_and_records_the_delivery(
    webhook: Webhook, make_project: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`retrain run` sends the message at the end; `retrain notify` sends it again with the artifact link."""
    from runner.commands import main

    pipeline = make_project("version: 1\nname: toy\nstages:\n  only:\n    notebook: notebooks/ok.ipynb\n")
    monkeypatch.setenv("SLACK_WEBHOOK_URL", webhook.url)
    assert main(["run", str(pipeline)]) == 0
    out = capsys.readouterr().out
    run_json = next((pipeline.parent / "reports").glob("*/run.json"))
    record = json.loads(run_json.read_text())
    [sent] = record["notifications"]
    assert (sent["channel"], sent["delivered"], sent["attempts"]) == ("slack", True, 1)
    assert "slack: sent" in out
    assert webhook.requests[0].body["text"].startswith("toy")
    assert webhook.url not in out and webhook.url not in run_json.read_text()
    assert main(["notify", record["run_id"], str(pipeline), "--artifact-url", "https://example.org/a/1"]) == 0
    assert "https://example.org/a/1" in json.dumps(webhook.requests[1].body)
    monkeypatch.delenv("SLACK_WEBHOOK_URL")
    summary = pipeline.parent / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert main(["run", str(pipeline)]) == 0
    out = capsys.readouterr().out
    assert NO_WEBHOOK in out and "#### Message" in summary.read_text()
