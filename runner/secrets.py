"""Secrets: which environment variables hold them, and their values taken out of everything the runner writes.

A secret reaches a notebook only through the environment (the kernel inherits it); it is never an injected
parameter (config.py refuses one given with -p, --params-file or in pipeline.yaml). As a second line of
defence every byte the runner writes (files, console, notifications) passes through a `Redactor`, which
replaces the value of every declared secret, and its URL-encoded and base64 forms and every form the
writers escape it into, with `***NAME***`. The writers escape, and compose: JSON (run.json, an executed
notebook, a printed `json.dumps`), HTML as Python, Jinja and nbconvert write it (`&quot;`, `&#34;`,
`&#x27;`, `&#39;`), XML as matplotlib writes an SVG's text and comments (`&apos;`), and a Python repr; a
value printed as JSON in a cell is JSON- then JSON-escaped in the notebook and JSON- then HTML-escaped in its
page. Every composition of up to three of these escapes is searched for (`encoded_forms`).

Which variables are secrets: the names in pipeline.yaml's `secrets`, the variables the `notify` section
names (the Slack webhook, the SMTP password), and those the runner itself knows to be secret
(`ALWAYS_SECRET`). A value shorter than `MIN_LENGTH` characters is not redacted: replacing every "abc" in
a report would shred it, and such a value is no secret worth the name.

Not caught: a secret cut in two by whatever wrote it (two writes, a line break inside it), or encoded in a
form not listed here (base64 of a longer text that merely contains it, hex, a hash).
"""

from __future__ import annotations

import base64
import html
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from runner import yamltext
from runner.scrub import MachinePaths

MIN_LENGTH = 4
# Secret wherever they are set, whatever pipeline.yaml says: the default Slack webhook, the registry's
# credentials and GitHub's token.
ALWAYS_SECRET = ("SLACK_WEBHOOK_URL", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "GITHUB_TOKEN")


def marker(name: str) -> str:
    """What a secret's value is replaced with."""
    return f"***{name}***"


@dataclass(frozen=True, repr=False)
class Redactor:
    """The values of a run's secrets, in every form searched for, each with the marker that replaces it."""

    names: tuple[str, ...] = ()
    # (form, marker, anchor), longest form first; a text without the anchor holds no such form
    _forms: tuple[tuple[str, str, str], ...] = ()
    paths: MachinePaths | None = None  # what is published also loses the machine's paths (runner/scrub.py)

    @classmethod
    def from_environ(cls, names: Iterable[str], environ: Mapping[str, str]) -> Redactor:
        """The redactor for the named variables, with the values `environ` gives them (unset: nothing)."""
        unique = tuple(dict.fromkeys(names))
        forms: dict[str, tuple[str, str]] = {}
        # longest value first: a secret that contains another is replaced whole, not in pieces
        for name in sorted(unique, key=lambda n: -len(environ.get(n) or "")):
            value = (environ.get(name) or "").strip()
            if len(value) < MIN_LENGTH:
                continue
            anchor = anchor_of(value)
            for form in encoded_forms(value):
                found_by = anchor if len(anchor) >= MIN_LENGTH - 1 and anchor in form else form
                forms.setdefault(form, (marker(name), found_by))
        ordered = sorted(forms.items(), key=lambda item: -len(item[0]))
        return cls(unique, tuple((form, mark, anchor) for form, (mark, anchor) in ordered))

    @property
    def active(self) -> bool:
        """Whether any secret has a value to take out."""
        return bool(self._forms)

    def __repr__(self) -> str:  # never the values, wherever a record or an error shows this object
        return f"Redactor(names={list(self.names)})"

    def scrubbing(self, paths: MachinePaths) -> Redactor:
        """This redactor, that also replaces the machine's paths: for pages people read and publish."""
        return replace(self, paths=paths)

    def redact(self, text: str) -> str:
        present: dict[str, bool] = {}  # an anchor searched once per text, not once per form
        for form, replacement, anchor in self._forms:
            if anchor not in present:
                present[anchor] = anchor in text
            if present[anchor] and form in text:
                text = text.replace(form, replacement)
        return text if self.paths is None else self.paths.scrub(text)

    def redact_bytes(self, data: bytes) -> bytes:
        """`redact` for bytes; bytes that are not UTF-8 (an image, say) pass through unchanged around it."""
        if not self._forms and self.paths is None:
            return data
        return self.redact(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")

    def secret_named(self, value: Any) -> str | None:
        """The name of the secret whose value `value` is (or contains), or None."""
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            return None
        text = str(value)
        for form, replacement, _anchor in self._forms:
            if form in text:
                return replacement.strip("*")
        return None


NO_SECRETS = Redactor()


def _json(text: str) -> str:
    return json.dumps(text)[1:-1]


def _json_unicode(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _html_markupsafe(text: str) -> str:
    """What Jinja's autoescape (markupsafe) writes: `"` as `&#34;`, `'` as `&#39;`."""
    return html.escape(text, quote=False).replace('"', "&#34;").replace("'", "&#39;")


def _xml_attribute(text: str) -> str:
    """What matplotlib's SVG writer puts in an attribute: `"` as `&quot;`, `'` as `&apos;`."""
    return html.escape(text, quote=False).replace('"', "&quot;").replace("'", "&apos;")


def _xml_comment(text: str) -> str:
    """What matplotlib's SVG writer puts in the comment it writes with each text (a plot's title)."""
    return re.sub(r"-(?=-)", "- ", html.escape(text, quote=False))


def _python_repr(text: str) -> str:
    return repr(text)[1:-1]


ESCAPES = (
    _json,
    _json_unicode,
    html.escape,  # &quot; and &#x27;: nbconvert, Python's own
    lambda text: html.escape(text, quote=False),  # pandas' DataFrame HTML, matplotlib's SVG text
    _html_markupsafe,
    _xml_attribute,
    _xml_comment,
    _python_repr,
)
ESCAPE_DEPTH = 3  # a value printed as JSON, escaped again as JSON by the notebook, then in HTML by its page


def encoded_forms(value: str) -> list[str]:
    """The value as it may appear in a file: raw, URL-encoded, base64, and every composition of up to
    ESCAPE_DEPTH of the writers' escapes (most are the value itself when it has no special character)."""
    raw = value.encode("utf-8")
    escaped = {value}
    frontier = {value}
    for _ in range(ESCAPE_DEPTH):
        frontier = {escape(form) for form in frontier for escape in ESCAPES} - escaped
        escaped |= frontier
    forms = [
        value,
        *sorted(escaped - {value}),
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote(value),
        urllib.parse.quote_plus(value),
        base64.b64encode(raw).decode("ascii"),
        base64.b64encode(raw).decode("ascii").rstrip("="),
        base64.urlsafe_b64encode(raw).decode("ascii").rstrip("="),
    ]
    return [form for form in dict.fromkeys(forms) if len(form) >= MIN_LENGTH]


def anchor_of(value: str) -> str:
    """The longest run of ASCII letters and digits in a secret: no escape changes it, so a text without it
    holds none of the escaped forms (`Redactor.redact` skips them then). "" when it has no such run."""
    runs = re.findall(r"[A-Za-z0-9]+", value)
    return max(runs, key=len) if runs else ""


def secret_names(declared: Iterable[str], named: Iterable[str | None] = ()) -> tuple[str, ...]:
    """Every variable that is a secret: declared in pipeline.yaml, named by `notify` (the webhook, the mail
    password) or `compute` (a cluster's address), or always secret."""
    return tuple(dict.fromkeys([*declared, *(name for name in named if name), *ALWAYS_SECRET]))


def names_in_file(pipeline: Path) -> tuple[str, ...]:
    """The secrets a pipeline file names, read leniently before it is validated (so that even the messages
    about a broken file are redacted); what cannot be read is simply not named here."""
    try:
        raw = yamltext.load(pipeline.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # YamlError is a ValueError
        return secret_names(())
    if not isinstance(raw, dict):
        return secret_names(())
    declared = raw.get("secrets")
    names = [name for name in declared if isinstance(name, str)] if isinstance(declared, list) else []
    found = raw.get("notify")
    notify: dict[str, Any] = found if isinstance(found, dict) else {}
    envs: list[str | None] = []
    slack = notify.get("slack", {})  # absent: the default webhook variable; null: no Slack
    if isinstance(slack, dict):
        envs.append(str(slack.get("webhook_env", "SLACK_WEBHOOK_URL")))
    email = notify.get("email")
    if isinstance(email, dict) and isinstance(email.get("password_env"), str):
        envs.append(email["password_env"])
    compute = raw.get("compute")
    if isinstance(compute, dict):
        envs.append(str(compute.get("scheduler_env", "DASK_SCHEDULER_ADDRESS")))
    return secret_names(names, envs)


class RedactingStream:
    """A text stream that redacts what passes through it to `target`, a line at a time (a secret written in
    two pieces on one line is still caught); `flush` passes on what is pending."""

    def __init__(self, target: TextIO, redactor: Redactor) -> None:
        self.target = target
        self.redactor = redactor
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            complete, _, self._pending = self._pending.rpartition("\n")
            self.target.write(self.redactor.redact(complete + "\n"))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self.target.write(self.redactor.redact(self._pending))
            self._pending = ""
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    def __getattr__(self, name: str) -> Any:  # encoding, errors, buffer...: the target's
        return getattr(self.target, name)
