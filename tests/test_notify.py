"""Tests for runner/report/notify.py against real servers on 127.0.0.1: an HTTP server in a thread standing
in for Slack's incoming webhook (scripted per test), and an aiosmtpd SMTP server. Nothing in urllib or smtplib
is mocked; only the sleep between retries is injected, so that no test waits for real backoff.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from runner.report.mail import email_message
from runner.report.notify import NO_WEBHOOK, Delivery, EmailSettings, Links, post_json, send_email, send_slack
from runner.report.outcome import Outcome, outcome_of
from runner.report.slack import slack_payload
from runner.report.text import text_message
from tests import outcome_records
from tests.conftest import SECRET_PATH, Mailbox, Reply, Webhook, free_port, no_proxy_for_localhost

RUN_URL = "https://github.com/acme/demand-forecast/actions/runs/9876543210"
ARTIFACT_URL = "https://github.com/acme/demand-forecast/actions/runs/9876543210/artifacts/1234567"
LINKS = Links(RUN_URL, ARTIFACT_URL, "reports/20261126T074012Z-3fa9c1/index.html")


def success_record() -> Outcome:
    return outcome_of(outcome_records.promoted())


def gate_failure_record() -> Outcome:
    return outcome_of(outcome_records.refused_model())


def stage_failure_record() -> Outcome:
    return outcome_of(outcome_records.failed())


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
    assert request.body == slack_payload(
        record, run_url=RUN_URL, artifact_url=ARTIFACT_URL, report=LINKS.report_path or ""
    )
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
    assert message["Subject"] == f"{record.icon} {record.headline}"
    assert message["To"] == "ml-team@example.org, oncall@example.org"
    plain_part = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    assert plain_part is not None and html_part is not None  # both parts: text for any reader, HTML coloured
    body = plain_part.get_content().replace("\r\n", "\n")  # SMTP carries CRLF line ends
    assert "validate  succeeded          3.4 s     1/1 passed" in body
    assert "evaluate  refused by a gate  8.9 s     0/1 passed" in body
    assert "  - evaluate: `wape <= 0.15`: wape = 0.21 <= 0.15 is false" in body
    assert RUN_URL in body and ARTIFACT_URL in body
    assert body == text_message(record, run_url=RUN_URL, artifact_url=ARTIFACT_URL)
    assert "c-red" not in html_part.get_content() and "#cf222e" in html_part.get_content()


@pytest.mark.unit
def test_the_password_comes_from_the_named_environment_variable(mailbox: Mailbox) -> None:
    settings = _settings(mailbox.port, username="retrain-bot", password_env="SMTP_PASSWORD")

    delivery = send_email(stage_failure_record(), LINKS, settings, environ={"SMTP_PASSWORD": "s3cret"})

    assert delivery.delivered, delivery.detail
    assert mailbox.logins == [("retrain-bot", "s3cret")]
    subject = "❌ demand-forecast: failed at train; v12 still serves production"
    assert mailbox.messages[0]["Subject"] == subject


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
def test_email_message_has_a_plain_text_and_an_html_body() -> None:
    message = email_message(success_record(), sender="retrain@example.org", recipients=("a@example.org",))

    assert message["Subject"] == "✅ demand-forecast v13 retrained and deployed, WAPE 7.9% (was 8.4%)"
    assert message.get_content_type() == "multipart/alternative"
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
