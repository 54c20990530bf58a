"""GitHub Actions glue: what a workflow run does for its event, the pull request's comment, the registry's
state between runs.

- `plan`: the mode, trigger, force flag and `-p` parameters for an event (push, schedule, workflow_dispatch,
  repository_dispatch, pull_request), as `retrain run` arguments; parameters from the event are checked.
- `upsert_pr_comment`: one comment per pull request (its words: runner/report/markdown.py), found again by a
  hidden marker and edited in place (REST API through urllib).
- `pull_state` / `push_state`: the embedded MLflow store (`mlruns/`) kept on an orphan branch, restored before
  a run and committed after every full run (git through subprocess). Saving is a compare-and-set against the
  commit the checkout restored; a branch that moved meanwhile is merged with (`Merge`: the registry's in
  runner/production/store.py), never replaced. The monitoring log's folder goes the same way on a branch of
  its own (`retrain monitor` only reads the registry: saving the registry's folder after a check could put
  back a state that a retrain saved meanwhile).
- `push_data`: the drops a run accepted or quarantined, committed back to the branch (or, when the branch is
  protected, to a branch of their own for a pull request).

Nothing here prints: the CLI does, and picks the exit codes.
"""

from __future__ import annotations

import base64
import json
import math
import re
import shlex
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner import files
from runner.errors import ConfigError, Problem, RetrainError, UsageError
from runner.github import STATE_BRANCH
from runner.secrets import NO_SECRETS

RESTORED_REF = "refs/retrain/restored"  # the state commit this checkout restored: a later push checks it
EVENTS = ("push", "schedule", "workflow_dispatch", "repository_dispatch", "pull_request")
_PARAM_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TRIGGER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")
_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+\Z")
_BOT = ("github-actions[bot]", "41898282+github-actions[bot]@users.noreply.github.com")
_NOT_STATE = (
    ":(exclude)registry.lock",
    ":(exclude,glob)**/*.db-journal",
    ":(exclude,glob)**/*.db-wal",
)
_MAX_COMMENT = 60_000  # GitHub refuses a comment over 65,536 characters
_HINTS = {401: "GITHUB_TOKEN was refused", 404: "no such pull request, or the token cannot see it"}
_HINTS[403] = (
    "the job needs `permissions: pull-requests: write`; a fork's pull request gets a read-only token"
)


class GitHubApiError(RetrainError):
    """The GitHub REST API refused a request or could not be reached (exit 1)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class StateError(RetrainError):
    """git could not restore or save the registry's state (exit 1)."""


class StateConflict(StateError):
    """The state was saved merged with another run's, but that run had moved the champion first (exit 1)."""


# --- what to run --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """What a workflow run does: `retrain run` in `mode`, recorded as `trigger`, with these `-p` pairs."""

    mode: str
    trigger: str
    force: bool = False
    params: list[str] = field(default_factory=list)
    reason: str = ""

    @property
    def args(self) -> list[str]:
        pairs = [item for pair in self.params for item in ("-p", pair)]
        return ["--mode", self.mode, "--trigger", self.trigger, *(["--force"] if self.force else []), *pairs]

    @property
    def command_line(self) -> str:
        """The arguments as one shell-quoted line: `eval "set -- $ARGS"` gives them back unchanged."""
        return shlex.join(self.args)


def plan(event_name: str, event: Mapping[str, Any], ref: str = "") -> Plan:
    """The plan for one event; `ref` is $GITHUB_REF. Raises ConfigError (exit 2) for parameters or a trigger
    from the event that cannot be used, and for an event that does not start a run."""
    problems: list[Problem] = []
    if event_name == "pull_request":
        number = _get(event, "pull_request", "number")
        return Plan("evaluate", "pull_request", reason=f"pull request #{number}: no registry writes")
    if event_name in ("push", "schedule"):
        asked = Plan("full", event_name, reason="new data pushed" if event_name == "push" else "schedule")
    elif event_name == "workflow_dispatch":
        asked = _dispatch_plan(event.get("inputs") or {}, problems)
    elif event_name == "repository_dispatch":
        asked = _repository_dispatch_plan(event.get("client_payload") or {}, problems)
    else:
        fix = f"events: {', '.join(EVENTS)}"
        problems.append(Problem("GITHUB_EVENT_NAME", "", f"'{event_name}' does not start a run", fix))
    if problems:
        raise ConfigError(problems)
    return _full_on_default_branch(asked, event, ref)


def _dispatch_plan(inputs: Mapping[str, Any], problems: list[Problem]) -> Plan:
    where = "workflow_dispatch inputs"
    mode = str(inputs.get("mode") or "full")
    if mode not in ("full", "evaluate"):
        problems.append(Problem(where, "mode", f"unknown mode '{mode[:40]}'", "modes are: full, evaluate"))
    text = str(inputs.get("params") or "")
    try:
        words = shlex.split(text)  # key=value key2="two words"
    except ValueError as error:
        problems.append(Problem(where, "params", f"cannot split '{text[:80]}': {error}", "close the quotes"))
        words = []
    params = []
    for word in words:
        key, equals, value = word.partition("=")
        if equals:
            params.append(_checked_pair(key, value, where, problems))
        else:
            problems.append(
                Problem(where, "params", f"'{word[:80]}' is not key=value", "e.g. holdout_weeks=4")
            )
    return Plan(mode, "workflow_dispatch", _true(inputs.get("force")), params, f"dispatched: mode {mode}")


def _repository_dispatch_plan(payload: Mapping[str, Any], problems: list[Problem]) -> Plan:
    where = "repository_dispatch client_payload"
    trigger = str(payload.get("trigger") or "repository_dispatch")
    if not _TRIGGER.match(trigger):
        fix = "letters, digits and _ . : - (at most 64), e.g. monitoring"
        problems.append(Problem(where, "trigger", f"'{trigger[:80]}' is not a trigger name", fix))
    raw = payload.get("params") or {}
    if not isinstance(raw, Mapping):
        problems.append(Problem(where, "params", "must be an object", 'e.g. {"holdout_weeks": 4}'))
        raw = {}
    params = []
    for key, value in raw.items():
        text = _value_text(value)
        if text is None:
            what = f"{type(value).__name__} is not a parameter value"
            problems.append(Problem(where, f"params.{key}", what, "a number, a string or a boolean"))
        else:
            params.append(_checked_pair(str(key), text, where, problems))
    return Plan("full", trigger, _true(payload.get("force")), params, f"dispatched by '{trigger}'")


def _checked_pair(key: str, value: str, where: str, problems: list[Problem]) -> str:
    if not _PARAM_KEY.match(key):
        fix = "letters, digits and _, not starting with a digit"
        problems.append(Problem(where, f"params.{key[:80]}", f"'{key[:80]}' is not a parameter name", fix))
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        problems.append(
            Problem(where, f"params.{key[:80]}", "the value holds a control character", "one line")
        )
    return f"{key}={value}"


def _value_text(value: Any) -> str | None:
    """A payload value as `-p` text (read back as YAML by `retrain run`); None for lists, objects, null."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and math.isfinite(value):
        return json.dumps(value)
    return value if isinstance(value, str) else None


def _full_on_default_branch(asked: Plan, event: Mapping[str, Any], ref: str) -> Plan:
    """Full runs write the registry: only the default branch's code may do that; elsewhere, evaluate."""
    default = _get(event, "repository", "default_branch")
    ref = ref or str(event.get("ref") or "")
    if asked.mode != "full" or not default or not ref or ref == f"refs/heads/{default}":
        return asked
    why = f"{ref} is not the default branch: evaluate only (full runs start from {default})"
    return Plan("evaluate", asked.trigger, asked.force, asked.params, why)


def _true(value: Any) -> bool:
    return value is True or str(value).lower() == "true"  # workflow_dispatch inputs may arrive as strings


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, Mapping) else None
    return data


# --- the pull request's comment -----------------------------------------------------------------------------
def comment_marker(pipeline: str) -> str:
    """The hidden first line that finds the comment again on the next push."""
    return f"<!-- retrain:pull-request:{pipeline} -->"


def upsert_pr_comment(
    api_url: str, repository: str, pr_number: int, token: str, body: str, marker: str, timeout_s: float = 10
) -> str:
    """Edit the pull request's comment that starts with `marker`, or post one; returns the comment's URL."""
    if not _REPOSITORY.match(repository) or pr_number <= 0:
        raise UsageError(f"not a repository and pull request: {repository!r} #{pr_number}")
    base = f"{api_url.rstrip('/')}/repos/{repository}/issues"
    url: str | None = f"{base}/{pr_number}/comments?per_page=100"
    found = None
    while url and found is None:
        comments, url = _call("GET", url, token, None, timeout_s)
        found = next((c for c in comments if str(c.get("body", "")).startswith(marker)), None)
        if url and not url.startswith(api_url.rstrip("/") + "/"):  # the token goes to the API's host only
            raise GitHubApiError(f"GitHub API: the next page is on another host: {url.split('?')[0]}")
    if found is not None:
        done, _ = _call("PATCH", f"{base}/comments/{int(found['id'])}", token, body, timeout_s)
    else:
        done, _ = _call("POST", f"{base}/{pr_number}/comments", token, body, timeout_s)
    return str(done.get("html_url") or done.get("url") or "")


def _call(method: str, url: str, token: str, body: str | None, timeout_s: float) -> tuple[Any, str | None]:
    """One REST call; returns the decoded JSON and the URL of the next page (from the Link header)."""
    data = None if body is None else json.dumps({"body": body}).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Accept", "application/vnd.github+json")
    request.add_header("X-GitHub-Api-Version", "2022-11-28")
    request.add_header("User-Agent", "notebook-retrain")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    where = f"GitHub API {method} {url.split('?')[0]}"
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            decoded = json.loads(response.read() or b"null")
            next_page = re.search(r'<([^>]+)>;\s*rel="next"', response.headers.get("Link", ""))
    except urllib.error.HTTPError as error:
        try:
            message = str(json.loads(error.read()).get("message", error.reason))
        except (ValueError, AttributeError, OSError):
            message = str(error.reason)
        hint = f" ({_HINTS[error.code]})" if error.code in _HINTS else ""
        raise GitHubApiError(f"{where}: HTTP {error.code}: {message}{hint}", error.code) from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise GitHubApiError(f"{where}: {type(error).__name__}: {getattr(error, 'reason', error)}") from None
    return decoded, next_page.group(1) if next_page else None


# --- the registry's state between runs ----------------------------------------------------------------------
def git_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for git: never prompt, commit as the Actions bot unless told otherwise, and with
    GITHUB_TOKEN authenticate to GITHUB_SERVER_URL only (through an environment config entry: the token is
    never on a command line nor in .git/config)."""
    env = {**environ, "GIT_TERMINAL_PROMPT": "0"}
    for kind in ("AUTHOR", "COMMITTER"):
        env.setdefault(f"GIT_{kind}_NAME", _BOT[0])
        env.setdefault(f"GIT_{kind}_EMAIL", _BOT[1])
    token, server = environ.get("GITHUB_TOKEN"), environ.get("GITHUB_SERVER_URL") or "https://github.com"
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env["GIT_CONFIG_COUNT"] = "1"
        env["GIT_CONFIG_KEY_0"] = f"http.{server.rstrip('/')}/.extraheader"
        env["GIT_CONFIG_VALUE_0"] = f"AUTHORIZATION: basic {basic}"
    return env


def restored_ref(branch: str) -> str:
    """Where a checkout remembers what it restored from `branch` (one job may restore two branches)."""
    return RESTORED_REF if branch == STATE_BRANCH else f"{RESTORED_REF}-{branch}"


def pull_state(
    repo: Path,
    store: Path,
    env: Mapping[str, str],
    remote: str = "origin",
    branch: str = STATE_BRANCH,
    what: str | None = None,
) -> str:
    """Restore `store` from the state branch's latest commit, when the branch exists; `what` names the store
    in the message (default: the registry, or the store's folder for another branch)."""
    if store.exists() and any(store.iterdir()):
        raise StateError(f"{store} already holds a store: move it away before restoring {branch}")
    tip = _fetch_tip(repo, env, remote, branch)
    if tip is None:
        _git(repo, ["update-ref", "-d", restored_ref(branch)], env)
        named = what or ("the registry" if branch == STATE_BRANCH else store.name)
        return f"{remote} has no branch {branch} yet: {named} starts empty"
    _git(repo, ["update-ref", restored_ref(branch), tip], env)
    _checkout_tree(repo, tip, store, env)
    return f"restored {store.name}/ from {branch} at {tip[:7]}"


Merge = Callable[[Path | None, Path, Path], str]
"""Merges what a run added to its store (`ours`, the third argument) into the state another run saved
meanwhile (`theirs`, the second, a folder the merge changes in place), given the state both started from
(`base`, the first; None: both started without one). Returns what it did, in a few words."""


def push_state(
    repo: Path,
    store: Path,
    env: Mapping[str, str],
    message: str,
    remote: str = "origin",
    branch: str = STATE_BRANCH,
    attempts: int = 5,
    merge: Merge | None = None,
) -> str:
    """Commit `store` as the state branch's next commit and push it: a compare-and-set against the commit
    this checkout restored (the new commit's parent), so a push can only fast-forward what this run started
    from. When another run saved first, its state is fetched, `merge` adds ours to it, the store becomes
    the merged state, and the push is tried again on top of it. Without `merge`, a moved branch is a
    StateError: a state is never silently replaced."""
    if not store.is_dir() or not any(store.iterdir()):
        return f"nothing to save: {store} is empty"
    expected = _run_git(repo, ["rev-parse", "--verify", "--quiet", restored_ref(branch)], env).stdout.strip()
    merged: list[str] = []
    for _ in range(attempts):
        tree = _snapshot(repo, store, env)
        if expected and _git(repo, ["rev-parse", f"{expected}^{{tree}}"], env) == tree:
            return f"{branch} already holds this state ({expected[:7]}): nothing pushed"
        parent = ["-p", expected] if expected else []
        commit = _git(repo, ["commit-tree", tree, *parent, "-m", message], env)
        pushed = _run_git(repo, ["push", "--porcelain", remote, f"{commit}:refs/heads/{branch}"], env)
        if pushed.returncode == 0:
            _git(repo, ["update-ref", restored_ref(branch), commit], env)  # a later push starts from here
            after = f"; merged with what another run saved meanwhile: {'; then '.join(merged)}" * bool(merged)
            return f"saved {store.name}/ to {branch} at {commit[:7]}{after}"
        if "rejected" not in pushed.stdout + pushed.stderr:
            raise StateError(f"git push to {remote} {branch} failed: {_last_line(pushed.stderr)}")
        tip = _fetch_tip(repo, env, remote, branch) or ""
        if merge is None:
            raise StateError(
                f"{branch} moved to {tip[:7] or 'nothing'} on {remote} since {expected[:7] or 'no state'}"
                " was restored: another run saved meanwhile, and this state was not pushed (nothing replaced)"
            )
        merged.append(f"{tip[:7]}: {_merge_into(repo, store, env, expected, tip, merge)}")
        expected = tip
    raise StateError(f"{branch} kept moving on {remote}: not saved after {attempts} attempts")


def _merge_into(repo: Path, store: Path, env: Mapping[str, str], base: str, tip: str, merge: Merge) -> str:
    """Make `store` the merge of the state at `tip` with what this run added to the state at `base`. The
    run's own store is kept aside until the merged one is in its place."""
    with tempfile.TemporaryDirectory(dir=store.parent, prefix=f".{store.name}-merge-") as scratch:
        theirs, ours = Path(scratch, "theirs"), Path(scratch, "ours")
        _checkout_tree(repo, tip, theirs, env) if tip else theirs.mkdir()
        before = None
        if base:
            before = Path(scratch, "base")
            _checkout_tree(repo, base, before, env)
        said = merge(before, theirs, store)
        store.rename(ours)
        try:
            theirs.rename(store)
        except OSError:
            ours.rename(store)  # the run's store goes back where it was: nothing is lost
            raise
    return said


def _checkout_tree(repo: Path, commit: str, folder: Path, env: Mapping[str, str]) -> None:
    """The files of `commit` into `folder`, through a private index (the checkout's own stays untouched)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        indexed = {**env, "GIT_INDEX_FILE": str(Path(scratch, "index"))}
        _git(repo, ["read-tree", commit], indexed)
        _git(repo, ["checkout-index", "--all", "--force", f"--prefix={folder.resolve()}/"], indexed)


def merge_files(base: Path | None, theirs: Path, ours: Path) -> str:
    """A Merge for folders of append-only text (the monitoring log): a file only ours has is added; a file
    both have gets our lines that theirs lacks, after theirs."""
    added = extended = 0
    for path in sorted(p for p in ours.rglob("*") if p.is_file()):
        target = theirs / path.relative_to(ours)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            files.atomic_copy(path, target)
            added += 1
            continue
        mine, known = path.read_text(encoding="utf-8"), target.read_text(encoding="utf-8")
        seen = set(known.splitlines())
        new = [line for line in mine.splitlines() if line not in seen]
        if new:
            ending = "" if not known or known.endswith("\n") else "\n"
            # both sides were written through the redactor by their runs: nothing new to redact
            files.atomic_write_text(target, known + ending + "\n".join(new) + "\n", redact=NO_SECRETS)
            extended += 1
    return f"{added} file(s) added, {extended} extended"


def keep_ours(base: Path | None, theirs: Path, ours: Path) -> str:
    """A Merge for a folder rebuilt whole by each run (the Pages site): ours' files win, theirs' others
    stay."""
    copied = 0
    for path in (p for p in ours.rglob("*") if p.is_file()):
        target = theirs / path.relative_to(ours)
        target.parent.mkdir(parents=True, exist_ok=True)
        files.atomic_copy(path, target)
        copied += 1
    return f"{copied} file(s) of this run over theirs"


def push_data(
    repo: Path,
    paths: list[str],
    env: Mapping[str, str],
    message: str,
    branch: str,
    remote: str = "origin",
    attempts: int = 3,
    fallback: str = "",
) -> str:
    """Commit what a run moved under `paths` (drops accepted into the history or quarantined) and push it to
    `branch`, so that the next run's checkout starts from it. When the branch moved meanwhile (a new drop was
    pushed), the commit is replayed on top of it; a conflict leaves the branch alone and says so. When the
    remote refuses the branch itself (a protected branch), the commit goes to `fallback`, for a pull request
    (BranchProtected)."""
    present = [path for path in paths if (repo / path).exists() or _tracked(repo, path, env)]
    if not present:
        return "no data folder to save"
    _git(repo, ["add", "--all", "--", *present], env)
    if _run_git(repo, ["diff", "--cached", "--quiet"], env).returncode == 0:
        return "no data moved: nothing to commit"
    _git(repo, ["commit", "--quiet", "--no-verify", "-m", message], env)
    for _ in range(attempts):
        pushed = _run_git(repo, ["push", "--porcelain", remote, f"HEAD:refs/heads/{branch}"], env)
        if pushed.returncode == 0:
            return f"pushed the data moves to {branch} at {_git(repo, ['rev-parse', '--short', 'HEAD'], env)}"
        if _refused_by_remote(pushed):
            _push_elsewhere(repo, env, remote, branch, fallback, pushed)
        if "rejected" not in pushed.stdout + pushed.stderr:
            raise StateError(f"git push to {remote} {branch} failed: {_last_line(pushed.stderr)}")
        _git(repo, ["fetch", "--quiet", "--no-tags", "--depth=1", remote, f"refs/heads/{branch}"], env)
        # no rename detection: a drop moved out of data/new/ is not "data/new/ renamed", whatever git guesses
        replay = ["-c", "merge.directoryRenames=false", "rebase", "--quiet", "-X", "no-renames"]
        replayed = _run_git(repo, [*replay, "--onto", "FETCH_HEAD", "HEAD~1"], env)
        if replayed.returncode != 0:
            _run_git(repo, ["rebase", "--abort"], env)
            raise StateError(
                f"{branch} changed the same data files meanwhile: the data moves were not pushed "
                f"({_last_line(replayed.stderr)}); the run's report says what moved"
            )
    raise StateError(f"{branch} kept moving on {remote}: data moves not pushed after {attempts} attempts")


def _refused_by_remote(pushed: subprocess.CompletedProcess[str]) -> bool:
    """The remote refused the update itself (a protected branch, a ruleset, a hook), which no retry changes:
    not a `[rejected]` push that lost a race."""
    said = pushed.stdout + pushed.stderr
    return any(sign in said for sign in ("[remote rejected]", "GH006", "GH013")) or "protected branch" in said


def _push_elsewhere(
    repo: Path,
    env: Mapping[str, str],
    remote: str,
    branch: str,
    fallback: str,
    refused: subprocess.CompletedProcess[str],
) -> None:
    remote_said = [line.removeprefix("remote:").strip() for line in refused.stderr.splitlines()]
    why = next((line for line in remote_said if "GH0" in line or "protected" in line.lower()), "")
    why = why or _last_line(refused.stderr + refused.stdout)
    if not fallback:
        raise StateError(f"{remote} refuses pushes to {branch} ({why}): the data moves were not pushed")
    pushed = _run_git(repo, ["push", "--porcelain", remote, f"HEAD:refs/heads/{fallback}"], env)
    if pushed.returncode != 0:
        raise StateError(
            f"{remote} refuses pushes to {branch} ({why}), and to {fallback} too "
            f"({_last_line(pushed.stderr)}): the data moves were not pushed"
        )
    raise BranchProtected(
        f"{branch} is protected on {remote} ({why}): the data moves were pushed to branch {fallback} instead;"
        f" merge it into {branch} with a pull request (or let GitHub Actions bypass the rule). Until then the"
        " drops stay in the new-data folder on the branch, and the next run finds the same data: it registers"
        " nothing new (the data fingerprint is the same)",
        fallback,
    )


class BranchProtected(StateError):
    """The branch refused the data moves; they were pushed to another branch for a pull request."""

    def __init__(self, message: str, pushed_to: str) -> None:
        super().__init__(message)
        self.pushed_to = pushed_to


def _tracked(repo: Path, path: str, env: Mapping[str, str]) -> bool:
    """Whether git tracks files under `path` (a folder emptied by a run still has removals to commit)."""
    return bool(_run_git(repo, ["ls-files", "--", path], env).stdout.strip())


def _snapshot(repo: Path, store: Path, env: Mapping[str, str]) -> str:
    """The store's files as a git tree (lock and journal files left out); returns the tree's id."""
    git_dir = _git(repo, ["rev-parse", "--absolute-git-dir"], env)
    with tempfile.TemporaryDirectory() as scratch:
        indexed = {**env, "GIT_INDEX_FILE": str(Path(scratch, "index")), "GIT_DIR": git_dir}
        indexed["GIT_WORK_TREE"] = str(store.resolve())
        _git(store, ["add", "--all", "--force", "--", ".", *_NOT_STATE], indexed)
        return _git(store, ["write-tree"], indexed)


def _fetch_tip(repo: Path, env: Mapping[str, str], remote: str, branch: str) -> str | None:
    """Fetch the branch's latest commit (shallow); None when the remote has no such branch."""
    listed = _run_git(repo, ["ls-remote", "--exit-code", "--heads", remote, f"refs/heads/{branch}"], env)
    if listed.returncode == 2:
        return None
    if listed.returncode != 0:
        raise StateError(f"cannot read {remote}: {_last_line(listed.stderr)}")
    _git(repo, ["fetch", "--quiet", "--no-tags", "--depth=1", remote, f"refs/heads/{branch}"], env)
    return _git(repo, ["rev-parse", "FETCH_HEAD"], env)


def _git(cwd: Path, args: list[str], env: Mapping[str, str]) -> str:
    done = _run_git(cwd, args, env)
    if done.returncode != 0:
        raise StateError(f"git {args[0]} failed: {_last_line(done.stderr)}")
    return done.stdout.strip()


def _run_git(cwd: Path, args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", *args], cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise StateError(f"git {args[0]}: {error}") from None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
