"""The outcome as an email: the headline as its subject, a plain-text part (text.py) and an HTML part with the
same facts, coloured by the outcome's state. Both parts are redacted before they are encoded (a body sent as
base64 or quoted-printable would hide a secret from a redactor run on the bytes)."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.utils import formatdate
from html import escape

from runner.report.outcome import Outcome, facts
from runner.report.text import text_message
from runner.secrets import NO_SECRETS, Redactor

COLOURS = {"green": "#1a7f37", "amber": "#9a6700", "red": "#cf222e", "grey": "#57606a"}


def email_message(
    outcome: Outcome,
    *,
    sender: str,
    recipients: tuple[str, ...],
    run_url: str = "",
    artifact_url: str = "",
    redact: Redactor = NO_SECRETS,
) -> EmailMessage:
    message = EmailMessage(policy=policy.default.clone(max_line_length=998))  # no folded one-line subject
    message["Subject"] = redact.redact(f"{outcome.icon} {outcome.headline}")
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=False)
    text = text_message(outcome, run_url=run_url, artifact_url=artifact_url)
    message.set_content(redact.redact(text))
    message.add_alternative(
        redact.redact(email_html(outcome, run_url=run_url, artifact_url=artifact_url)), subtype="html"
    )
    return message


def email_html(outcome: Outcome, *, run_url: str = "", artifact_url: str = "") -> str:
    colour = COLOURS[outcome.colour]
    rows = "".join(
        f"<tr><th align='left' style='padding:2px 12px 2px 0'>{escape(fact.label)}</th>"
        f"<td>{_linked(fact.text, fact.url)}</td></tr>"
        for fact in facts(outcome)
    )
    parts = [
        f"<p style='border-left:6px solid {colour};padding:6px 10px;font-size:16px'>"
        f"<b style='color:{colour}'>{escape(outcome.word)}</b>: {escape(outcome.headline)}</p>",
        f"<p>{escape(outcome.reason)}</p>",
        f"<table style='border-collapse:collapse'>{rows}</table>",
    ]
    if outcome.failed_gates:
        items = "".join(
            f"<li>{escape(g.stage)}: <code>{escape(g.expr)}</code>: {escape(g.detail)}</li>"
            for g in outcome.failed_gates
        )
        parts.append(f"<p><b>Failed gates</b></p><ul>{items}</ul>")
    if outcome.quarantine is not None and outcome.quarantine.problems:
        items = "".join(f"<li>{escape(problem.text)}</li>" for problem in outcome.quarantine.problems)
        more = f"<li>and {outcome.quarantine.more} more in the report</li>" if outcome.quarantine.more else ""
        parts.append(f"<p><b>Broken rules of the new data</b></p><ul>{items}{more}</ul>")
    if outcome.failure is not None:
        said = outcome.failure.message + (f"\n{outcome.failure.evalue}" if outcome.failure.evalue else "")
        parts.append(f"<p><b>Error in stage {escape(outcome.failure.stage)}</b></p><pre>{escape(said)}</pre>")
    stages = "".join(
        f"<tr><td>{escape(s.name)}</td><td>{escape(s.word)}</td><td align='right'>{escape(s.duration)}</td>"
        f"<td>{escape(s.gates)}</td></tr>"
        for s in outcome.stages
    )
    parts.append(f"<table style='border-collapse:collapse' cellpadding='3'>{stages}</table>")
    links = [
        (text, url)
        for text, url in (("Workflow run", run_url or outcome.run_url), ("Reports", artifact_url))
        if url
    ]
    if links:
        parts.append(
            "<p>" + " · ".join(f"<a href='{escape(url)}'>{escape(text)}</a>" for text, url in links) + "</p>"
        )
    parts.append(
        f"<p style='color:#57606a'>Run {escape(outcome.run_id)} (trigger {escape(outcome.trigger)}, "
        f"mode {escape(outcome.mode)}, {escape(outcome.duration)})</p>"
    )
    return "<html><body style='font-family:sans-serif'>" + "".join(parts) + "</body></html>"


def _linked(text: str, url: str) -> str:
    return (
        f"<a href='{escape(url)}'>{escape(text)}</a>"
        if url.startswith(("http://", "https://"))
        else escape(text)
    )
