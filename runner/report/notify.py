"""Notifications: a run's outcome told to the team in Slack (incoming webhook, Block Kit) and by email (SMTP).

The words are the outcome's (outcome.py), drawn by slack.py, mail.py and text.py; this module delivers them,
and delivery never raises: what is not delivered comes back as a `Delivery` saying why, so a notification
never changes or hides the run's result. No text returned contains the webhook URL (a secret). Without a
webhook, the command shows `text.text_message(...)` instead.

What leaves the machine is redacted like every file the runner writes: the Slack body and the email pass
through the run's `Redactor` (runner/secrets.py) just before they are sent. `announce` is the entry point
and takes the redactor; the senders default to none only for tests of their own mechanics.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from runner.engine.config import NotifySpec
from runner.records import NotificationRecord, RunRecord
from runner.report.outcome import Outcome, outcome_of
from runner.report.slack import is_web_url
from runner.secrets import NO_SECRETS, Redactor

SLACK_TARGET = "Slack webhook (SLACK_WEBHOOK_URL)"
NO_WEBHOOK = "no webhook configured (SLACK_WEBHOOK_URL): message shown in the summary instead"
_RETRY_STATUSES = frozenset({429, *range(500, 600)})
_Attempt = tuple[int | None, str, bool, float | None]


@dataclass(frozen=True)
class Delivery:
    """What became of one notification: delivered or not, and why, in words safe to print."""

    channel: str
    delivered: bool
    detail: str
    attempts: int = 0


@dataclass(frozen=True)
class Links:
    """Where a reader goes next: the workflow run, its uploaded reports, the report on disk."""

    run_url: str | None = None
    artifact_url: str | None = None
    report_path: str | None = None


@dataclass(frozen=True)
class EmailSettings:
    """SMTP settings. The password is never configured: `password_env` names the variable that holds it."""

    host: str
    port: int = 587
    sender: str = ""
    recipients: tuple[str, ...] = ()
    starttls: bool = True
    username: str | None = None
    password_env: str | None = None
    timeout_s: float = 10


def send_slack(
    outcome: Outcome,
    links: Links,
    *,
    webhook_url: str | None,
    timeout_s: float = 10,
    retries: int = 3,
    max_wait_s: float = 60,
    sleep: Callable[[float], None] = time.sleep,
    redact: Redactor = NO_SECRETS,
) -> Delivery:
    """Post the run's message to the webhook (see `post_json`); without one, send nothing."""
    from runner.report.slack import slack_payload  # the words: built only when there is a webhook

    if not webhook_url or not webhook_url.strip():
        return Delivery("slack", False, NO_WEBHOOK)
    try:
        payload = slack_payload(
            outcome,
            run_url=links.run_url or "",
            artifact_url=links.artifact_url or "",
            report=links.report_path or "",
        )
    except Exception as error:  # a notification must never end the run it reports: say what broke instead
        return Delivery("slack", False, f"Slack message not built: {type(error).__name__}: {error}")
    url = webhook_url.strip()
    return post_json(
        url, payload, timeout_s=timeout_s, retries=retries, max_wait_s=max_wait_s, sleep=sleep, redact=redact
    )


def post_json(
    url: str,
    payload: dict[str, Any],
    *,
    timeout_s: float = 10,
    retries: int = 3,
    max_wait_s: float = 60,
    sleep: Callable[[float], None] = time.sleep,
    redact: Redactor = NO_SECRETS,
) -> Delivery:
    """POST `payload` as JSON, redacted. 429, 5xx, connection errors and timeouts (`timeout_s` per socket
    operation) are retried `retries` times after `Retry-After` or 1, 2, 4... s, each wait at most
    `max_wait_s`. Never raises; no detail it returns contains `url`."""
    if not is_web_url(url):
        return Delivery("slack", False, f"{SLACK_TARGET} is not an http(s) URL: not sent")
    # default=str: no TypeError; the redactor also knows the JSON-escaped form of each secret
    body = redact.redact(json.dumps(payload, ensure_ascii=False, default=str)).encode("utf-8")
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "notebook-retrain"}
    attempt = 0
    while True:
        attempt += 1
        status, reason, retryable, retry_after = _post_once(url, body, headers, timeout_s)
        reason = _redact(reason, url)
        if status is not None and 200 <= status < 300:
            return Delivery("slack", True, f"delivered to {SLACK_TARGET} ({reason})", attempt)
        if not retryable or attempt > retries:
            tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
            return Delivery("slack", False, f"{SLACK_TARGET}: not delivered after {tries}: {reason}", attempt)
        wait = retry_after if retry_after is not None else 2.0 ** (attempt - 1)  # 1, 2, 4... s
        sleep(min(wait, max_wait_s))


def _post_once(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> _Attempt:
    """One attempt: HTTP status (None when no answer came), reason, worth retrying, Retry-After seconds."""
    # imported here: most runs send nothing, and the HTTP client with its TLS costs a rerun ~40 ms
    import urllib.error
    import urllib.request
    from http.client import HTTPException, InvalidURL

    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            text = response.read(200).decode("utf-8", "replace")
            return int(response.status), f"HTTP {response.status} {_one_line(text)}".strip(), False, None
    except urllib.error.HTTPError as error:
        try:
            text = error.read(200).decode("utf-8", "replace")
        except (OSError, HTTPException):
            text = ""
        reason = f"HTTP {error.code} {_one_line(text) or error.reason}".strip()
        # Retry-After in seconds; its HTTP-date form (Slack does not send it) falls back to our own backoff
        after = (error.headers.get("Retry-After") or "").strip()
        return error.code, reason, error.code in _RETRY_STATUSES, float(after) if after.isdigit() else None
    except (ValueError, InvalidURL) as error:  # a bad port, a space in the URL: trying again cannot help
        return None, f"invalid URL: {type(error).__name__}: {error}", False, None
    except (OSError, HTTPException) as error:  # URLError (refused, DNS), a reset, a timeout while reading
        cause = error.reason if isinstance(error, urllib.error.URLError) else error
        if isinstance(cause, TimeoutError):
            return None, f"no answer within {timeout_s:g} s", True, None
        return None, f"connection failed: {type(cause).__name__}: {cause}", True, None


def _redact(text: str, url: str) -> str:
    """The secret is in the URL's path (or query): remove them wherever an error message repeats them."""
    parts = urllib.parse.urlsplit(url)
    for secret in [url, *(part for part in (parts.path, parts.query) if len(part) > 1)]:
        text = text.replace(secret, "…")
    return text


def send_email(
    outcome: Outcome,
    links: Links,
    settings: EmailSettings,
    environ: Mapping[str, str],
    redact: Redactor = NO_SECRETS,
) -> Delivery:
    """Send the email through SMTP (STARTTLS, login when a username is set). Never raises."""
    import smtplib
    import ssl

    from runner.report.mail import email_message

    missing = [name for name in ("host", "sender", "recipients") if not getattr(settings, name)]
    password = environ.get(settings.password_env, "") if settings.password_env else ""
    if missing:
        return Delivery("email", False, f"email not sent: no {', '.join(missing)} configured")
    if settings.username and not password:
        return Delivery(
            "email", False, f"email not sent: {settings.password_env or 'password_env'} is not set"
        )
    where = f"SMTP {settings.host}:{settings.port}"
    try:
        message = email_message(
            outcome,
            sender=settings.sender,
            recipients=settings.recipients,
            run_url=links.run_url or "",
            artifact_url=links.artifact_url or "",
            redact=redact,
        )
        with smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s) as smtp:
            if settings.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.username:
                smtp.login(settings.username, password)
            refused = smtp.send_message(message)
    except (smtplib.SMTPException, OSError, ValueError) as error:
        reason = _one_line(f"{type(error).__name__}: {error}")
        reason = reason.replace(password, "***") if password else reason
        return Delivery("email", False, f"email not delivered via {where}: {reason}", 1)
    refused_text = f"; refused: {', '.join(sorted(refused))}" if refused else ""
    sent = f"sent via {where} to {len(settings.recipients) - len(refused)} recipient(s){refused_text}"
    return Delivery("email", True, sent, 1)


def announce(
    record: RunRecord,
    spec: NotifySpec,
    links: Links,
    environ: Mapping[str, str],
    redact: Redactor,
    sleep: Callable[[float], None] = time.sleep,
) -> list[NotificationRecord]:
    """Send the run's message, redacted, to every channel of the pipeline's `notify` section; never raises."""
    sent = []
    outcome = outcome_of(record)
    if spec.slack is not None:
        delivery = send_slack(
            outcome,
            links,
            webhook_url=environ.get(spec.slack.webhook_env),
            timeout_s=spec.timeout_s,
            retries=spec.retries,
            sleep=sleep,
            redact=redact,
        )
        sent.append(delivery)
    if spec.email is not None:
        settings = EmailSettings(
            host=spec.email.host,
            port=spec.email.port,
            sender=spec.email.sender,
            recipients=tuple(spec.email.to),
            starttls=spec.email.starttls,
            username=spec.email.username,
            password_env=spec.email.password_env,
            timeout_s=spec.timeout_s,
        )
        sent.append(send_email(outcome, links, settings, environ, redact=redact))
    return [NotificationRecord(d.channel, d.delivered, redact.redact(d.detail), d.attempts) for d in sent]


def _one_line(text: str) -> str:
    return " ".join(text.split())
