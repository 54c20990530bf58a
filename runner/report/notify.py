"""Notifications: a run's result told to the team in Slack (incoming webhook, Block Kit) and by email (SMTP).

Owns the headline ("demand-forecast v13 retrained and deployed, WAPE 7.9% (was 8.4%)"), the Slack payload,
the plain text (console, step summary, email body) and delivery, which never raises: what is not delivered
comes back as a `Delivery` saying why, so a notification never changes or hides the run's result. No text
returned contains the webhook URL (a secret). Without a webhook, show `text_message(...)` instead.

What leaves the machine is redacted like every file the runner writes: the Slack body and the email pass
through the run's `Redactor` (runner/secrets.py) just before they are sent. `announce` is the entry point
and takes the redactor; the senders default to none only for tests of their own mechanics.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.utils import formatdate
from http.client import HTTPException, InvalidURL
from typing import Any

from runner.engine.config import NotifySpec
from runner.records import GateResult, NotificationRecord, RunRecord
from runner.report.numbers import Numbers
from runner.report.pages import model_sentence, outcome_sentence
from runner.secrets import NO_SECRETS, Redactor

SLACK_TARGET = "Slack webhook (SLACK_WEBHOOK_URL)"
NO_WEBHOOK = "no webhook configured (SLACK_WEBHOOK_URL): message shown in the summary instead"
# Slack's documented Block Kit limits: a payload over any of them is refused whole.
_MAX_BLOCKS, _MAX_HEADER, _MAX_TEXT, _MAX_FIELD, _MAX_BUTTON_URL = 50, 150, 3000, 2000, 3000
_MAX_LINE, _MAX_GATE_LINE, _MAX_LISTED_GATES = 500, 250, 10  # 10 gate lines fit in a text
_STATUS_ICON = {"succeeded": "✅", "failed": "❌", "gate_failed": "🚧", "cancelled": "⏹️", "running": "⏳"}
_MODEL_OUTCOME = {"promoted": "retrained and deployed", "unchanged": "unchanged (same data, code and params)"}
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


# --- wording ------------------------------------------------------------------------------------------------
def headline(record: RunRecord) -> str:
    """The result in one line: Slack's fallback text, the email's subject, the first line of the text."""
    name, problem, model = record.pipeline, record.first_problem, record.model
    measured = _metric_text(record)
    suffix = f", {Numbers(record.key_metric).title} {measured}" if measured else ""
    who = f"{model.name} v{model.version}" if model is not None and model.version is not None else ""
    if record.status == "succeeded" and model is not None and who:
        outcome = _MODEL_OUTCOME.get(
            "promoted" if model.promoted else model.action, "retrained, not deployed"
        )
        text = f"{who} {outcome}{suffix}"
    elif record.status == "succeeded":
        text = f"{name}: {'succeeded' if record.mode == 'full' else 'evaluated'}{suffix}"
    elif record.status == "gate_failed" and problem is not None and problem.failed_gates:
        gate, *more = problem.failed_gates
        seen = _gate_values(gate) or gate.detail
        text = f"{name}: stopped by gate `{gate.expr}` in {problem.name}" + (f" ({seen})" if seen else "")
        text += f" and {len(more)} more gate{'s' if len(more) > 1 else ''}" if more else ""
    elif record.status == "failed" and (failure := _failure(record)) is not None:
        text = f"{name}: failed at {failure[0]}: {failure[1]}"
    else:
        text = f"{name}: {record.status.replace('_', ' ')}"
    return _clip(_one_line(text), _MAX_LINE, middle=True)


def _metric_text(record: RunRecord, *, change: bool = False) -> str:
    """`7.9% (was 8.4%)`, with `change` `7.9% (was 8.4%, -0.5 pp)`, "" when not measured; "was" when this
    run's model replaced the champion, else "champion". The model's metrics first, else the last scrap."""
    numbers, metric = Numbers(record.key_metric), (record.key_metric.name if record.key_metric else None)
    if metric is None:
        return ""
    model, stages = record.model, reversed(record.stages.values())
    scrap = next((stage.scraps[metric] for stage in stages if metric in stage.scraps), None)
    value = model.metrics.get(metric, scrap) if model else scrap
    before = model.champion_metrics.get(metric) if model else None
    if value is None or before is None:
        return "" if value is None else numbers.value(value)
    word = "was" if model is not None and model.promoted else "champion"
    delta = numbers.change(value, before) if change else ""
    return f"{numbers.value(value)} ({word} {numbers.value(before)}{f', {delta}' if delta else ''})"


def _gate_values(gate: GateResult) -> str:
    return ", ".join(f"{name} = {Numbers(None).value(value)}" for name, value in gate.values.items())


def _failure(record: RunRecord) -> tuple[str, str] | None:
    """Where a failed run failed ("stage train", "the model release") and its error in one line; else None."""
    stage = record.first_problem
    if stage is not None and stage.status == "failed":
        # papermill's "ValueError: ... (in cell [4])" when there is one; `error` repeats the stage's name
        error = stage.failure.message if stage.failure and stage.failure.message else stage.error
        return f"stage {stage.name}", _clip(_one_line(error or "no error recorded"), _MAX_LINE, middle=True)
    if stage is None and record.model is not None and record.model.error:
        return "the model release", _clip(_one_line(record.model.error), _MAX_LINE, middle=True)
    return None


def _failed_gates(record: RunRecord) -> list[str]:
    failed = [(stage.name, gate) for stage in record.stages.values() for gate in stage.failed_gates]
    lines = [f"{at}: `{gate.expr}`: {_one_line(gate.detail or _gate_values(gate))}" for at, gate in failed]
    more = [f"... and {len(lines) - _MAX_LISTED_GATES} more"] if len(lines) > _MAX_LISTED_GATES else []
    return [_clip(line, _MAX_GATE_LINE) for line in lines[:_MAX_LISTED_GATES]] + more


def _gate_count(record: RunRecord) -> str:
    gates = [gate for stage in record.stages.values() for gate in stage.gates]
    return f"{sum(gate.passed for gate in gates)}/{len(gates)} passed" if gates else "no gates"


def _stage_rows(record: RunRecord) -> list[tuple[str, str, str, str]]:
    """(stage, status, duration, gates passed/total) for each stage; "-" for what does not apply."""
    rows = []
    for stage in record.stages.values():
        duration = _duration(stage.duration_s) if stage.status not in ("skipped", "pending") else "-"
        gates = f"{len(stage.gates) - len(stage.failed_gates)}/{len(stage.gates)}" if stage.gates else "-"
        rows.append((stage.name, stage.status.replace("_", " "), duration, gates))
    return rows


def _stage_durations(record: RunRecord) -> str:
    """`validate 2.1s · train 1m05s (failed) · evaluate skipped`."""
    parts = []
    for name, status, took, _ in _stage_rows(record):
        note = "" if status == "succeeded" else f" ({status})"
        parts.append(f"{name} {status}" if took == "-" else f"{name} {took}{note}")
    return " · ".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _run_facts(record: RunRecord) -> str:
    sha = f", git {record.git_sha[:7]}" if record.git_sha else ""
    return f"Run {record.run_id} (trigger {record.trigger}, mode {record.mode}{sha})"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clip(text: str, limit: int, *, middle: bool = False) -> str:
    """At most `limit` characters; `middle` cuts there, so the end of an error ("(in cell [4])") survives."""
    if len(text) <= limit:
        return text
    head = (limit - 1) * 2 // 3 if middle else limit - 1
    return text[:head] + "…" + text[len(text) - (limit - 1 - head) :]


# --- Slack --------------------------------------------------------------------------------------------------
def slack_payload(record: RunRecord, links: Links) -> dict[str, Any]:
    """The Block Kit message: header, facts, error or failed gates, stage durations, buttons, run id."""
    line = headline(record)
    title = f"{_STATUS_ICON.get(record.status, '')} {line}".strip()
    facts = [("Status", f"{_STATUS_ICON.get(record.status, '')} {record.status.replace('_', ' ')}")]
    if measured := _metric_text(record, change=True):
        facts.append((Numbers(record.key_metric).title, measured))
    facts.append(("Gates", _gate_count(record)))
    fields = [_mrkdwn(f"*{_escape(name)}*\n{_escape(value)}", _MAX_FIELD) for name, value in facts]
    failure, gates = _failure(record), "\n".join(f"• {_escape(line)}" for line in _failed_gates(record))
    summary = [] if failure or gates else [outcome_sentence(record)]  # else the blocks below say it
    summary += [model_sentence(record.model, record.key_metric)] if record.model else []
    section: dict[str, Any] = {"type": "section", "fields": fields}
    section |= {"text": _mrkdwn(_escape("\n".join(summary)))} if summary else {}
    header = {"type": "plain_text", "text": _clip(title, _MAX_HEADER), "emoji": True}
    blocks: list[dict[str, Any]] = [{"type": "header", "text": header}, section]
    if failure is not None:
        code = "`" + _escape(failure[1]).replace("`", "'") + "`"
        blocks.append({"type": "section", "text": _mrkdwn(f"*Failed at {_escape(failure[0])}:* {code}")})
    if gates:
        blocks.append({"type": "section", "text": _mrkdwn(f"*Failed gates*\n{gates}")})
    stages = f"*Stages:* {_escape(_stage_durations(record))}"
    blocks.append({"type": "context", "elements": [_mrkdwn(stages, _MAX_FIELD)]})
    named = [("Workflow run", "run", links.run_url), ("Reports artifact", "artifact", links.artifact_url)]
    buttons = [  # a URL that Slack would refuse (not http(s), too long) is left out, not the whole message
        {"type": "button", "text": {"type": "plain_text", "text": text}, "url": url, "action_id": action}
        for text, action, url in named
        if url and _is_web_url(url) and len(url) <= _MAX_BUTTON_URL
    ]
    blocks += [{"type": "actions", "elements": buttons}] if buttons else []
    report = f" · report: {links.report_path}" if links.report_path else ""
    run_line = _escape(_run_facts(record) + report)
    blocks.append({"type": "context", "elements": [_mrkdwn(run_line, _MAX_FIELD)]})
    return {"text": _clip(_escape(line), _MAX_TEXT), "blocks": blocks[:_MAX_BLOCKS]}


def _is_web_url(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _mrkdwn(text: str, limit: int = _MAX_TEXT) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _clip(text, limit)}


def _escape(text: str) -> str:
    """Slack's control characters in mrkdwn: &, < and > (a `<url|label>` would otherwise become a link)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def send_slack(
    record: RunRecord,
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
    if not webhook_url or not webhook_url.strip():
        return Delivery("slack", False, NO_WEBHOOK)
    try:
        payload = slack_payload(record, links)
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
    if not _is_web_url(url):
        return Delivery("slack", False, f"{SLACK_TARGET} is not an http(s) URL: not sent")
    # default=str: no TypeError; the redactor also knows the JSON-escaped form of each secret
    body = redact.redact(json.dumps(payload, ensure_ascii=False, default=str)).encode("utf-8")
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "notebook-retrain"}
    attempt = 0
    while True:
        attempt += 1
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        status, reason, retryable, retry_after = _post_once(request, timeout_s)
        reason = _redact(reason, url)
        if status is not None and 200 <= status < 300:
            return Delivery("slack", True, f"delivered to {SLACK_TARGET} ({reason})", attempt)
        if not retryable or attempt > retries:
            tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
            return Delivery("slack", False, f"{SLACK_TARGET}: not delivered after {tries}: {reason}", attempt)
        wait = retry_after if retry_after is not None else 2.0 ** (attempt - 1)  # 1, 2, 4... s
        sleep(min(wait, max_wait_s))


def _post_once(request: urllib.request.Request, timeout_s: float) -> _Attempt:
    """One attempt: HTTP status (None when no answer came), reason, worth retrying, Retry-After seconds."""
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


# --- plain text and email -----------------------------------------------------------------------------------
def text_message(record: RunRecord, links: Links) -> str:
    """The message as plain text: for the console, for the step summary without Slack, as the email body."""
    title = f"{_STATUS_ICON.get(record.status, '')} {headline(record)}".strip()
    lines = [title, "", outcome_sentence(record)]
    lines += [model_sentence(record.model, record.key_metric)] if record.model else []
    measured = _metric_text(record, change=True)
    lines += [f"{Numbers(record.key_metric).title}: {measured}"] if measured else []
    rows = [("stage", "status", "duration", "gates"), *_stage_rows(record)]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines += [f"Gates: {_gate_count(record)}", ""]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if gates := _failed_gates(record):
        lines += ["", "Failed gates:", *(f"  - {line}" for line in gates)]
    if failure := _failure(record):
        lines += ["", f"Error in {failure[0]}: {failure[1]}"]
    named = [("Workflow run", links.run_url), ("Artifact", links.artifact_url), ("Report", links.report_path)]
    lines += ["", *(f"{name}: {where}" for name, where in named if where), _run_facts(record)]
    return "\n".join(lines) + "\n"


def email_message(
    record: RunRecord,
    links: Links,
    settings: EmailSettings,
    redact: Redactor = NO_SECRETS,
) -> EmailMessage:
    """The email: subject = the headline, body = `text_message` (plain text); redacted before encoding (a
    body sent as base64 or quoted-printable would hide a secret from a redactor run on the bytes)."""
    message = EmailMessage(policy=policy.default.clone(max_line_length=998))  # no folded one-line subject
    message["Subject"] = redact.redact(headline(record))
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.recipients)
    message["Date"] = formatdate(localtime=False)
    message.set_content(redact.redact(text_message(record, links)))
    return message


def send_email(
    record: RunRecord,
    links: Links,
    settings: EmailSettings,
    environ: Mapping[str, str],
    redact: Redactor = NO_SECRETS,
) -> Delivery:
    """Send the email through SMTP (STARTTLS, login when a username is set). Never raises."""
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
        message = email_message(record, links, settings, redact)
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
    if spec.slack is not None:
        delivery = send_slack(
            record,
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
        sent.append(send_email(record, links, settings, environ, redact=redact))
    return [NotificationRecord(d.channel, d.delivered, redact.redact(d.detail), d.attempts) for d in sent]
