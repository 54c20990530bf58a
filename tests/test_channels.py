"""One story of a run, told the same on every surface: for each outcome a team reads (promoted, promoted while
worse, held, refused by the data, refused by the model, failed, cancelled), every channel (run page, history
row, terminal, Slack, email text and HTML, step summary, pull request comment) states the same facts: the same
word, headline and reason, the key metric in its declared format against the champion, the quarantined files
and their broken rules, the parameters changed since the champion, the error."""

from __future__ import annotations

import html
import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from runner.report import terminal
from runner.report.mail import email_html, email_message
from runner.report.markdown import pr_comment, step_summary
from runner.report.outcome import Outcome, facts, outcome_of
from runner.report.pages import render_history_index, render_run_index, write_run_json
from runner.report.slack import slack_payload
from runner.report.text import text_message
from runner.secrets import NO_SECRETS
from tests.outcome_records import OUTCOMES

pytestmark = pytest.mark.unit
STATE_OF = {"refused_by_policy": "refused_model"}  # the records whose name is not their state


def plain(text: str) -> str:
    """A channel's text with its markup taken off: HTML tags and entities, Slack's escapes, table pipes."""
    text = re.sub(r"<https?://[^|>]+\|([^>]+)>", r"\1", text)  # a Slack link: its text
    text = re.sub(r"<[^>]+>", " ", text)
    text = html.unescape(html.unescape(text))
    return " ".join(text.replace("\\|", "|").split())


def slack_text(outcome: Outcome) -> str:
    payload = slack_payload(outcome)
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(payload["blocks"])
    return plain("\n".join(found))


def terminal_text(outcome: Outcome, run_dir: Path) -> str:
    console = Console(file=io.StringIO(), width=300, color_system=None)
    console.print(terminal.summary(outcome))
    for line in terminal.final_lines(outcome, run_dir, 0):
        console.print(line, soft_wrap=True)
    assert isinstance(console.file, io.StringIO)
    return plain(console.file.getvalue())


def channels(name: str, tmp_path: Path) -> tuple[Outcome, dict[str, str]]:
    record = OUTCOMES[name]()
    outcome = outcome_of(record)
    run_dir = tmp_path / "reports" / record.run_id
    run_dir.mkdir(parents=True)
    write_run_json(run_dir, record, redact=NO_SECRETS)
    render_run_index(run_dir, record, redact=NO_SECRETS)
    render_history_index(run_dir.parent, redact=NO_SECRETS)
    message = email_message(outcome, sender="retrain@example.org", recipients=("team@example.org",))
    texts = {
        "run page": plain((run_dir / "index.html").read_text()),
        "terminal": terminal_text(outcome, run_dir),
        "slack": slack_text(outcome),
        "email text": plain(message.get_body(("plain",)).get_content()),  # type: ignore[union-attr]
        "email html": plain(email_html(outcome)),
        "step summary": plain(step_summary(outcome)),
        "pr comment": plain(pr_comment(outcome, "<!-- marker -->")),
        "plain text": plain(text_message(outcome)),
    }
    return outcome, texts


@pytest.mark.parametrize("name", list(OUTCOMES))
def test_every_channel_states_the_same_facts(name: str, tmp_path: Path) -> None:
    outcome, texts = channels(name, tmp_path)
    assert outcome.state == STATE_OF.get(name, name)
    for channel, text in texts.items():
        said = f"{channel} of a {name} run"
        assert plain(outcome.headline) in text, said
        assert plain(outcome.reason) in text, said
        if outcome.key is not None:
            assert outcome.key.shown in text, said
            if outcome.key.change:
                assert outcome.key.change in text, said
        for fact in facts(outcome):
            if fact.label not in ("Outcome", "Gates", "Started"):
                assert plain(fact.text) in text, f"{said}: {fact.label}"
        if outcome.quarantine is not None:
            assert "sales-2012-04-13.csv" in text and "not a number" in text, said
        if outcome.failure is not None:
            assert plain(outcome.failure.message) in text, said


@pytest.mark.parametrize("name", ["held", "promoted_worse", "refused_by_policy"])
def test_every_channel_states_the_decision_and_its_interval(name: str, tmp_path: Path) -> None:
    """The promotion policy's verdict in a manager's words, the interval with it, on every surface."""
    outcome, texts = channels(name, tmp_path)
    interval = re.search(r"the 90% interval runs from [^:,]+", outcome.decision)
    assert interval is not None, outcome.decision
    for channel, text in texts.items():
        assert plain(outcome.decision) in text and interval.group(0) in text, channel
    page = plain((tmp_path / "reports" / "index.html").read_text())
    assert interval.group(0) in page  # the history's row


def test_the_held_sentence() -> None:
    outcome = outcome_of(OUTCOMES["held"]())
    assert outcome.reason == (
        "v13 held: the new model is 0.3 points better, but the 90% interval runs from 0.9 better to 0.4 worse"
    )
    worse = outcome_of(OUTCOMES["promoted_worse"]())
    assert worse.state == "promoted_worse" and worse.colour == "amber"
    assert worse.reason.startswith("v13 promoted: the new model is 0.2 points worse")
    refused = outcome_of(OUTCOMES["refused_by_policy"]())
    assert refused.headline.startswith("demand-forecast: new model refused by the promotion policy")
    assert refused.reason.startswith("Refused: the new model is 1.2 points worse")


@pytest.mark.parametrize("name", list(OUTCOMES))
def test_the_history_row_says_the_word_and_the_sentence(name: str, tmp_path: Path) -> None:
    outcome, _ = channels(name, tmp_path)
    page = (tmp_path / "reports" / "index.html").read_text()
    row = page[page.index('<tr class="run') :]
    row = row[: row.index("</tr>")]
    assert f"c-{outcome.colour}" in row and html.escape(outcome.word) in row
    assert html.escape(outcome.headline, quote=True) in row  # on hover (title) and as the second line


def test_states_words_and_colours() -> None:
    found = {name: (outcome_of(make()).word, outcome_of(make()).colour) for name, make in OUTCOMES.items()}
    assert found == {
        "promoted": ("Promoted", "green"),
        "promoted_worse": ("Promoted, worse within the margin", "amber"),
        "held": ("Held", "amber"),
        "refused_by_policy": ("Refused: the model", "red"),
        "refused_data": ("Refused: the data", "red"),
        "refused_model": ("Refused: the model", "red"),
        "failed": ("Failed", "red"),
        "cancelled": ("Cancelled", "grey"),
    }


def test_numbers_read_as_the_key_metric_declares() -> None:
    outcome = outcome_of(OUTCOMES["promoted"]())
    assert outcome.headline == "demand-forecast v13 retrained and deployed, WAPE 7.9% (was 8.4%)"
    key, mae = outcome.metrics
    assert (key.shown, key.champion_shown, key.change, key.better) == ("7.9%", "8.4%", "\u22120.5 pp", True)
    assert (mae.title, mae.shown, mae.change) == ("MAE", "$3,491", "\u2212$219")
    assert [(c.name, c.before, c.after) for c in outcome.changes] == [("num_leaves", "63", "31")]
    assert outcome.stages[0].duration == "3.4 s"


def test_a_cancelled_stage_reads_cancelled_and_skipped_stages_show_no_duration() -> None:
    outcome = outcome_of(OUTCOMES["cancelled"]())
    words = {line.name: (line.word, line.duration) for line in outcome.stages}
    assert words["train"] == ("cancelled", "9.0 s")
    assert words["deploy"] == ("skipped", "\u2013")


def test_the_pr_comment_draws_a_mermaid_chart_of_the_predictions() -> None:
    record = OUTCOMES["promoted"]()
    record.stages["evaluate"].scraps["predictions"] = {
        "type": "table",
        "columns": ["period", "actual", "prediction", "champion"],
        "rows": [["2012-02-10", 412.5, 400.1, 401.0], ["2012-02-17", 431.8, 399.3, 398.0]],
        "n_rows": 2,
    }
    body = pr_comment(outcome_of(record), "<!-- m -->")
    chart = body[body.index("```mermaid") :]
    assert "xychart-beta" in chart and 'x-axis ["2012-02-10", "2012-02-17"]' in chart
    assert "line [412.5, 431.8]" in chart and "line [401, 398]" in chart


def test_slack_payload_stays_within_slack_limits() -> None:
    record = OUTCOMES["failed"]()
    record.pipeline = "p" * 400
    failure = record.stages["train"].failure
    assert failure is not None
    failure.message = "ValueError: <!channel> " + "x" * 20_000
    payload = slack_payload(
        outcome_of(record), run_url="reports/not-a-url", artifact_url="https://e.org/" + "a" * 4000
    )
    json.dumps(payload)
    assert len(payload["blocks"]) <= 50 and len(payload["text"]) <= 3000
    assert len(payload["blocks"][0]["text"]["text"]) <= 150
    for block in payload["blocks"]:
        assert len(block.get("text", {}).get("text", "")) <= 3000
        assert len(block.get("fields", [])) <= 10
        assert all(len(item["text"]) <= 2000 for item in block.get("fields", []))
    assert not any(block["type"] == "actions" for block in payload["blocks"])  # neither link is usable
    assert "<!channel>" not in json.dumps(payload)
