"""The outcome as a Slack message (Block Kit): the headline, the reason, the facts every channel states, what
broke (gates, the data's rules, the error), the stages, buttons to the workflow run and its reports.

Slack refuses a whole payload over any of its documented limits, so every text is cut to fit.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from runner.report.outcome import Outcome, facts

# Slack's documented Block Kit limits
MAX_BLOCKS, MAX_HEADER, MAX_TEXT, MAX_FIELD, MAX_BUTTON_URL, MAX_FIELDS = 50, 150, 3000, 2000, 3000, 10
MAX_LISTED = 10  # gates or broken rules listed in one block


def slack_payload(
    outcome: Outcome, *, run_url: str = "", artifact_url: str = "", report: str = ""
) -> dict[str, Any]:
    header = {
        "type": "plain_text",
        "text": clip(f"{outcome.icon} {outcome.headline}", MAX_HEADER),
        "emoji": True,
    }
    blocks: list[dict[str, Any]] = [{"type": "header", "text": header}]
    fields = [
        mrkdwn(f"*{escape(fact.label)}*\n{_linked(fact.text, fact.url)}", MAX_FIELD)
        for fact in facts(outcome)
    ]
    blocks.append({"type": "section", "text": mrkdwn(escape(outcome.reason)), "fields": fields[:MAX_FIELDS]})
    if len(fields) > MAX_FIELDS:
        blocks.append({"type": "section", "fields": fields[MAX_FIELDS : 2 * MAX_FIELDS]})
    if outcome.failed_gates:
        lines = [f"• {escape(g.stage)}: `{escape(g.expr)}`: {escape(g.detail)}" for g in outcome.failed_gates]
        blocks.append({"type": "section", "text": mrkdwn("*Failed gates*\n" + "\n".join(lines[:MAX_LISTED]))})
    if outcome.quarantine is not None and outcome.quarantine.problems:
        lines = [f"• {escape(problem.text)}" for problem in outcome.quarantine.problems]
        more = [f"… and {outcome.quarantine.more} more in the report"] if outcome.quarantine.more else []
        text = "*Broken rules of the new data*\n" + "\n".join([*lines, *more])
        blocks.append({"type": "section", "text": mrkdwn(text)})
    if outcome.failure is not None:
        said = outcome.failure.message + (f"\n{outcome.failure.evalue}" if outcome.failure.evalue else "")
        code = "```" + escape(said).replace("```", "'''") + "```"
        blocks.append(
            {"type": "section", "text": mrkdwn(f"*Error in stage {escape(outcome.failure.stage)}*\n{code}")}
        )
    stages = " · ".join(f"{s.name} {s.word} {s.duration}".strip() for s in outcome.stages)
    blocks.append({"type": "context", "elements": [mrkdwn(escape(f"Stages: {stages}"), MAX_FIELD)]})
    named = [("Workflow run", "run", run_url or outcome.run_url), ("Reports", "artifact", artifact_url)]
    buttons = [  # a URL Slack would refuse (not http(s), too long) is left out, not the whole message
        {"type": "button", "text": {"type": "plain_text", "text": text}, "url": url, "action_id": action}
        for text, action, url in named
        if url and is_web_url(url) and len(url) <= MAX_BUTTON_URL
    ]
    blocks += [{"type": "actions", "elements": buttons}] if buttons else []
    where = f" · report: {report}" if report else ""
    run_line = (
        f"Run {outcome.run_id} (trigger {outcome.trigger}, mode {outcome.mode}, {outcome.duration}){where}"
    )
    blocks.append({"type": "context", "elements": [mrkdwn(escape(run_line), MAX_FIELD)]})
    return {"text": clip(escape(outcome.headline), MAX_TEXT), "blocks": blocks[:MAX_BLOCKS]}


def _linked(text: str, url: str) -> str:
    return f"<{url}|{escape(text)}>" if url and is_web_url(url) else escape(text)


def mrkdwn(text: str, limit: int = MAX_TEXT) -> dict[str, str]:
    return {"type": "mrkdwn", "text": clip(text, limit)}


def escape(text: str) -> str:
    """Slack's control characters in mrkdwn: &, < and > (a `<url|label>` would otherwise become a link)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def is_web_url(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def clip(text: str, limit: int, *, middle: bool = False) -> str:
    """At most `limit` characters, cut at a word; `middle` cuts there, so the end of an error survives."""
    if len(text) <= limit:
        return text
    if middle:
        head = (limit - 1) * 2 // 3
        return text[:head] + "…" + text[len(text) - (limit - 1 - head) :]
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut) + "…"
