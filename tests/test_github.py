"""Tests for runner/github/actions.py and the `retrain github` commands: the plan per event, the pull
request's comment against a real HTTP server on 127.0.0.1 standing in for the GitHub REST API, and the
registry's state branch against a bare git repository in a temporary folder as `origin`.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from runner.commands import main
from runner.errors import ConfigError
from runner.github import actions as github
from runner.records import GateResult, KeyMetric, ModelRecord, RunRecord, StageRecord
from runner.report.markdown import pr_comment, step_summary
from runner.report.outcome import outcome_of
from runner.report.pages import cost_markdown
from tests.conftest import ASSETS, GIT, REPOSITORY, TOKEN, FakeGitHub, clone, git

EVENTS = ASSETS / "events"


def event(name: str) -> dict[str, Any]:
    return dict(json.loads((EVENTS / f"{name}.json").read_text()))


# --- plan ---------------------------------------------------------------------------------------------------
MAIN = {"repository": {"default_branch": "main"}}


@pytest.mark.parametrize(
    ("event_name", "payload", "ref", "expected"),
    [
        ("push", event("push"), "refs/heads/main", ("full", "push", False, [])),
        ("push", {**MAIN, "ref": "refs/heads/data-fix"}, "", ("evaluate", "push", False, [])),
        ("schedule", event("schedule"), "refs/heads/main", ("full", "schedule", False, [])),
        (
            "workflow_dispatch",
            {**MAIN, "inputs": {}},
            "refs/heads/main",
            ("full", "workflow_dispatch", False, []),
        ),
        (
            "workflow_dispatch",
            {
                **MAIN,
                "inputs": {"mode": "evaluate", "params": 'holdout_weeks=4 note="two words"', "force": "true"},
            },
            "refs/heads/main",
            ("evaluate", "workflow_dispatch", True, ["holdout_weeks=4", "note=two words"]),
        ),
        (
            "workflow_dispatch",
            {**MAIN, "inputs": {"mode": "full", "params": "", "force": False}},
            "refs/heads/experiment",
            ("evaluate", "workflow_dispatch", False, []),
        ),
        (
            "repository_dispatch",
            {
                "client_payload": {
                    "trigger": "monitoring",
                    "force": True,
                    "params": {"h": 4, "t": 0.2, "b": True},
                }
            },
            "refs/heads/main",
            ("full", "monitoring", True, ["h=4", "t=0.2", "b=true"]),
        ),
        ("repository_dispatch", {"action": "retrain"}, "", ("full", "repository_dispatch", False, [])),
        (
            "repository_dispatch",
            event("repository_dispatch"),
            "refs/heads/main",
            ("full", "monitoring", False, ["factor=2.6"]),
        ),
        ("pull_request", event("pull_request"), "refs/pull/7/merge", ("evaluate", "pull_request", False, [])),
    ],
    ids=lambda value: value if isinstance(value, str) and value and "/" not in value else None,
)
@pytest.mark.unit
def test_plan_per_event(
    event_name: str, payload: dict[str, Any], ref: str, expected: tuple[Any, ...]
) -> None:
    chosen = github.plan(event_name, payload, ref)
    assert (chosen.mode, chosen.trigger, chosen.force, chosen.params) == expected
    assert chosen.args[:4] == ["--mode", chosen.mode, "--trigger", chosen.trigger]
    assert chosen.reason


@pytest.mark.unit
@pytest.mark.parametrize(
    ("event_name", "payload", "fragment"),
    [
        ("workflow_dispatch", {"inputs": {"params": "bad-key=1"}}, "'bad-key' is not a parameter name"),
        ("workflow_dispatch", {"inputs": {"params": "1st=1"}}, "'1st' is not a parameter name"),
        ("workflow_dispatch", {"inputs": {"params": "holdout_weeks"}}, "'holdout_weeks' is not key=value"),
        ("workflow_dispatch", {"inputs": {"params": 'a="open'}}, "cannot split"),
        ("workflow_dispatch", {"inputs": {"mode": "fast"}}, "unknown mode 'fast'"),
        ("repository_dispatch", {"client_payload": {"params": ["a=1"]}}, "params: must be an object"),
        (
            "repository_dispatch",
            {"client_payload": {"params": {"a": [1]}}},
            "params.a: list is not a parameter value",
        ),
        (
            "repository_dispatch",
            {"client_payload": {"params": {"a": None}}},
            "NoneType is not a parameter value",
        ),
        ("repository_dispatch", {"client_payload": {"params": {"a b": 1}}}, "'a b' is not a parameter name"),
        ("repository_dispatch", {"client_payload": {"params": {"a": "x\ny"}}}, "control character"),
        ("repository_dispatch", {"client_payload": {"trigger": "drift; rm -rf /"}}, "is not a trigger name"),
        ("issues", {}, "'issues' does not start a run"),
    ],
)
def test_plan_refuses_what_it_cannot_use(event_name: str, payload: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        github.plan(event_name, payload)
    assert raised.value.exit_code == 2
    assert fragment in str(raised.value)


@pytest.mark.unit
def test_plan_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as raised:
        github.plan(
            "repository_dispatch", {"client_payload": {"trigger": "a b", "params": {"x-y": 1, "ok": [2]}}}
        )
    assert len(raised.value.problems) == 3


@pytest.mark.e2e
def test_plan_args_survive_the_shell_unchanged_and_run_nothing(tmp_path: Path) -> None:
    """The workflow does `eval "set -- $PLAN_ARGS"`: quoting must give back the words, never run them."""
    hostile = {"a": "$(touch pwned)", "b": "`touch pwned`; touch pwned", "c": 'it\'s "quoted" * ?', "d": " "}
    chosen = github.plan("repository_dispatch", {"client_payload": {"params": hostile}})
    script = 'eval "set -- $PLAN_ARGS"; printf "%s\\0" "$@"'
    done = subprocess.run(
        ["bash", "-c", script],
        env={"PLAN_ARGS": chosen.command_line, "PATH": os.environ["PATH"]},
        cwd=tmp_path,
        capture_output=True,
        check=True,
    )
    assert done.stdout.decode().split("\0")[:-1] == chosen.args
    assert not (tmp_path / "pwned").exists()


@pytest.mark.unit
def test_plan_command_writes_the_step_outputs(tmp_path: Path, monkeypatch, capsys) -> None:
    outputs = tmp_path / "outputs"
    monkeypatch.setenv("GITHUB_EVENT_NAME", "repository_dispatch")
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(EVENTS / "repository_dispatch.json"))
    monkeypatch.setenv("GITHUB_REF", "refs/heads/main")
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    assert main(["github", "plan"]) == 0
    written = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    assert written == {
        "mode": "full",
        "trigger": "monitoring",
        "force": "false",
        "args": "--mode full --trigger monitoring -p factor=2.6",
    }
    assert "retrain run --mode full --trigger monitoring -p factor=2.6" in capsys.readouterr().out


@pytest.mark.unit
def test_plan_command_refuses_a_bad_payload_with_exit_2(tmp_path: Path, monkeypatch, capsys) -> None:
    payload = tmp_path / "event.json"
    payload.write_text(json.dumps({"client_payload": {"params": {"bad key": 1}}}))
    monkeypatch.setenv("GITHUB_EVENT_NAME", "repository_dispatch")
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(payload))
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "outputs"))
    assert main(["github", "plan"]) == 2
    err = capsys.readouterr().err
    assert "'bad key' is not a parameter name" in err and "Traceback" not in err
    assert not (tmp_path / "outputs").exists()


# --- the pull request's comment: a GitHub API on 127.0.0.1 (tests/conftest.py) ----------------------------
MARKER = github.comment_marker("demand-forecast")


@pytest.mark.unit
def test_first_push_posts_the_comment_and_the_next_edits_it_in_place(fake_github: FakeGitHub) -> None:
    url = github.upsert_pr_comment(fake_github.url, REPOSITORY, 7, TOKEN, MARKER + "\nfirst", MARKER)
    assert url.endswith("#issuecomment-1001")
    assert [(m, p.split("?")[0]) for m, p, _ in fake_github.requests] == [
        ("GET", f"/repos/{REPOSITORY}/issues/7/comments"),
        ("POST", f"/repos/{REPOSITORY}/issues/7/comments"),
    ]
    assert fake_github.requests[1][2] == {"body": MARKER + "\nfirst"}
    fake_github.requests.clear()

    again = github.upsert_pr_comment(fake_github.url, REPOSITORY, 7, TOKEN, MARKER + "\nsecond", MARKER)
    assert again == url
    assert [(m, p.split("?")[0]) for m, p, _ in fake_github.requests] == [
        ("GET", f"/repos/{REPOSITORY}/issues/7/comments"),
        ("PATCH", f"/repos/{REPOSITORY}/issues/comments/1001"),
    ]
    assert [c["body"] for c in fake_github.comments[7]] == [MARKER + "\nsecond"]
    assert not fake_github.problems


@pytest.mark.unit
def test_the_marker_is_found_on_a_later_page(fake_github: FakeGitHub) -> None:
    quoted = "> " + MARKER + "\n> an earlier comment, quoted by a person"
    fake_github.seed(7, "LGTM", quoted, "one more thing", MARKER + "\nold", "thanks")
    github.upsert_pr_comment(fake_github.url, REPOSITORY, 7, TOKEN, MARKER + "\nnew", MARKER)
    pages = [path for method, path, _ in fake_github.requests if method == "GET"]
    pages_asked = [urllib.parse.parse_qs(urllib.parse.urlsplit(p).query).get("page", ["1"])[0] for p in pages]
    assert pages_asked == ["1", "2"]
    assert fake_github.requests[-1][:2] == ("PATCH", f"/repos/{REPOSITORY}/issues/comments/1004")
    assert [c["body"] for c in fake_github.comments[7]] == [
        "LGTM",
        quoted,
        "one more thing",
        MARKER + "\nnew",
        "thanks",
    ]


@pytest.mark.unit
def test_a_refused_token_is_explained_without_the_token(fake_github: FakeGitHub) -> None:
    with pytest.raises(github.GitHubApiError) as raised:
        github.upsert_pr_comment(fake_github.url, REPOSITORY, 7, "ghs_wrongwrongwrong", "body", MARKER)
    message = str(raised.value)
    assert raised.value.status == 401 and "HTTP 401: Bad credentials (GITHUB_TOKEN was refused)" in message
    assert "ghs_" not in message and fake_github.url.split(":")[1] in message


@pytest.mark.unit
def test_a_next_page_on_another_host_is_not_followed(fake_github: FakeGitHub) -> None:
    fake_github.seed(7, "a", "b", "c")
    fake_github.link_base = "http://attacker.example"  # the token must not follow it there
    with pytest.raises(
        github.GitHubApiError, match=r"next page is on another host: http://attacker\.example/"
    ):
        github.upsert_pr_comment(fake_github.url, REPOSITORY, 7, TOKEN, "x", MARKER)
    assert len(fake_github.requests) == 1


@pytest.mark.unit
def test_an_unreachable_api_is_an_error_naming_the_endpoint() -> None:
    with pytest.raises(github.GitHubApiError) as raised:
        github.upsert_pr_comment("http://127.0.0.1:9", REPOSITORY, 7, TOKEN, "body", MARKER, timeout_s=2)
    assert f"GitHub API GET http://127.0.0.1:9/repos/{REPOSITORY}/issues/7/comments" in str(raised.value)


@pytest.mark.unit
@pytest.mark.parametrize(("repository", "number"), [("acme/x/../y", 7), ("acme", 7), (REPOSITORY, 0)])
def test_a_bad_repository_or_number_is_refused_before_any_request(repository: str, number: int) -> None:
    with pytest.raises(github.UsageError):
        github.upsert_pr_comment("http://127.0.0.1:9", repository, number, TOKEN, "body", MARKER)


# --- the comment's body, the summary's comparison, the cost -------------------------------------------------
def evaluated_run(champion: bool = True) -> RunRecord:
    gates = [
        GateResult("wape <= params.wape_threshold", True, "wape = 0.079 <= 0.15", {"wape": 0.079}),
        GateResult("wape <= champion.wape * 1.02", True, "wape = 0.079 <= 0.08568 | ok", {"wape": 0.079}),
    ]
    model = ModelRecord(
        name="demand-forecast",
        champion_before="3" if champion else None,
        champion_after="3" if champion else None,
        detail="mode evaluate: the registry is left as it is",
        metrics={"wape": 0.079, "mae": 812.5},
        champion_metrics={"wape": 0.084, "mae": 850.0} if champion else {},
    )
    stages = {
        "train": StageRecord("train", "notebooks/03_train.ipynb", "succeeded", 60.0),
        "evaluate": StageRecord("evaluate", "notebooks/04_evaluate.ipynb", "succeeded", 9.0, gates=gates),
    }
    return RunRecord(
        run_id="20261126T074012Z-3fa9c1",
        pipeline="demand-forecast",
        trigger="pull_request",
        mode="evaluate",
        git_sha="3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b",
        started_at="2026-11-26T07:40:12+00:00",
        params={},
        stages=stages,
        status="succeeded",
        model=model,
        key_metric=KeyMetric("wape", "percent", 1, label="WAPE", better="lower"),
    )


@pytest.mark.unit
def test_comment_body_compares_the_challenger_with_the_champion() -> None:
    outcome = outcome_of(evaluated_run())
    body = pr_comment(outcome, MARKER, run_url="https://run", artifact_url="https://artifact")
    lines = body.splitlines()
    assert lines[0] == MARKER
    assert lines[1] == "### 🔎 demand-forecast: Evaluated"
    assert "| metric | challenger | champion v3 | change |" in lines
    assert "| WAPE | 7.9% | 8.4% | \u22120.5 pp (\u22126.0%) ✅ |" in lines
    assert not any(line.startswith("| mae") for line in lines)  # only the metrics pipeline.yaml shows
    assert "**Gates: 2 of 2 passed**" in lines
    assert "| Commit | 3c2b1a0 |" in lines
    assert (
        "nothing was registered or deployed · [workflow run](https://run) · [reports](https://artifact)"
        in body
    )


@pytest.mark.unit
def test_comment_body_without_a_champion_says_so() -> None:
    body = pr_comment(outcome_of(evaluated_run(champion=False)), MARKER)
    assert "| metric | challenger | champion | change |" in body
    assert "| WAPE | 7.9% | \u2013 | \u2013 |" in body


@pytest.mark.unit
def test_the_comparison_falls_back_to_what_a_stage_measured_for_the_champion() -> None:
    record = evaluated_run()
    record.model = None
    record.stages["evaluate"].scraps = {
        "wape": 0.07,
        "n": 8,
        "ok": True,
        "champion": {"version": "5", "wape": 0.1},
    }
    [line] = outcome_of(record).metrics
    assert (line.name, line.shown, line.champion_shown, line.change) == (
        "wape",
        "7.0%",
        "10.0%",
        "\u22123.0 pp",
    )


@pytest.mark.unit
def test_step_summary_shows_the_change_against_the_champion() -> None:
    lines = step_summary(outcome_of(evaluated_run())).splitlines()
    assert "| metric | this run | champion v3 | change |" in lines
    assert "| WAPE | 7.9% | 8.4% | \u22120.5 pp (\u22126.0%) ✅ |" in lines
    assert not any(
        "champion v" in line for line in step_summary(outcome_of(evaluated_run(False))).splitlines()
    )


@pytest.mark.unit
@pytest.mark.parametrize(
    ("job_s", "price", "run_s", "fragments"),
    [
        (
            150.0,
            0.008,
            40.0,
            [
                "2.5 min so far, 3 billed minutes ≈ **$0.024**",
                "pipeline itself ran 0.7 min",
                "covers 208 jobs",
            ],
        ),
        (20.0, 0.008, None, ["0.3 min so far, 1 billed minute ≈ **$0.008**", "covers 625 jobs"]),
        (600.0, 0.0, None, ["10 billed minutes ≈ **$0.000** at $0/min"]),
    ],
)
def test_cost_markdown(job_s: float, price: float, run_s: float | None, fragments: list[str]) -> None:
    text = cost_markdown(job_s, price, run_s)
    assert text.startswith("#### Runner cost\n")
    for fragment in fragments:
        assert fragment in text
    assert ("covers" in text) == (price > 0)


@pytest.mark.unit
def test_summary_cost_command_appends_to_the_step_summary(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "pipeline.yaml").write_text("version: 1\n")
    summary = tmp_path / "summary.md"
    summary.write_text("earlier\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("RUNNER_MINUTE_PRICE_USD", "0.016")
    started = str(__import__("time").time() - 61)
    assert main(["github", "summary-cost", "--started", started, str(tmp_path / "pipeline.yaml")]) == 0
    assert "2 billed minutes ≈ **$0.032** at $0.016/min" in summary.read_text()
    assert summary.read_text().startswith("earlier\n")
    monkeypatch.setenv("RUNNER_MINUTE_PRICE_USD", "cheap")
    assert main(["github", "summary-cost", "--started", started, str(tmp_path / "pipeline.yaml")]) == 2
    assert "RUNNER_MINUTE_PRICE_USD='cheap' is not a price" in capsys.readouterr().err


# --- the registry's state on a branch of a bare origin ------------------------------------------------------
@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A bare repository with one commit on main, as `origin` of the clones the tests make."""
    bare = tmp_path / "origin.git"
    subprocess.run([*GIT, "init", "--quiet", "--bare", str(bare)], check=True)
    seed = tmp_path / "seed"
    seed.mkdir()
    git(seed, "init", "--quiet")
    (seed / "pipeline.yaml").write_text("version: 1\n")
    (seed / ".gitignore").write_text("mlruns/\n")
    git(seed, "add", ".")
    git(seed, "commit", "--quiet", "-m", "project")
    git(seed, "push", "--quiet", str(bare), "HEAD:refs/heads/main")
    return bare


def write_store(root: Path, **files: str) -> Path:
    store = root / "mlruns"
    for name, text in files.items():
        path = store / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return store


ENV = github.git_environment({"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")})


@pytest.mark.e2e
def test_pull_before_the_branch_exists_starts_empty(origin: Path) -> None:
    work = clone(origin, "work")
    said = github.pull_state(work, work / "mlruns", ENV)
    assert said == "origin has no branch retrain-state yet: the registry starts empty"
    assert not (work / "mlruns").exists()


@pytest.mark.e2e
def test_push_creates_an_orphan_branch_that_a_fresh_clone_restores(origin: Path) -> None:
    first = clone(origin, "first")
    github.pull_state(first, first / "mlruns", ENV)
    store = write_store(
        first, **{"mlflow.db": "db v1", "artifacts__1__model.pkl": "model", "registry.lock": ""}
    )
    said = github.push_state(first, store, ENV, "registry after run 1")
    assert said.startswith("saved mlruns/ to retrain-state at ") and "moved" not in said
    assert (
        git(origin, "log", "--format=%s|%P|%an", "retrain-state")
        == "registry after run 1||github-actions[bot]"
    )
    assert git(origin, "ls-tree", "-r", "--name-only", "retrain-state").split() == [
        "artifacts/1/model.pkl",
        "mlflow.db",
    ]
    assert git(first, "status", "--porcelain") == ""  # the checkout's own index and files are untouched

    second = clone(origin, "second")
    said = github.pull_state(second, second / "mlruns", ENV)
    assert said.startswith("restored mlruns/ from retrain-state at ")
    assert (second / "mlruns" / "mlflow.db").read_text() == "db v1"
    assert (second / "mlruns" / "artifacts" / "1" / "model.pkl").read_text() == "model"
    assert git(second, "status", "--porcelain") == ""


@pytest.mark.e2e
def test_push_without_a_change_pushes_nothing_and_a_change_adds_a_commit(origin: Path) -> None:
    work = clone(origin, "work")
    github.pull_state(work, work / "mlruns", ENV)
    store = write_store(work, **{"mlflow.db": "db v1"})
    github.push_state(work, store, ENV, "one")
    assert "already holds this state" in github.push_state(work, store, ENV, "two")
    (store / "mlflow.db").write_text("db v2")
    github.push_state(work, store, ENV, "three")
    assert git(origin, "log", "--format=%s", "retrain-state").split() == ["three", "one"]


@pytest.mark.e2e
def test_a_push_that_lost_the_race_replaces_nothing_and_merges_when_it_can(origin: Path) -> None:
    first, second = clone(origin, "first"), clone(origin, "second")
    github.pull_state(first, first / "mlruns", ENV)
    github.pull_state(second, second / "mlruns", ENV)  # both start from no state
    github.push_state(second, write_store(second, **{"log.jsonl": "a\nb\n"}), ENV, "second")
    with pytest.raises(github.StateError, match="another run saved meanwhile, and this state was not pushed"):
        github.push_state(first, write_store(first, **{"log.jsonl": "a\nc\n", "x.txt": "x"}), ENV, "first")
    assert git(origin, "log", "--format=%s", "retrain-state").split() == ["second"]
    said = github.push_state(first, first / "mlruns", ENV, "first", merge=github.merge_files)
    assert "merged with what another run saved meanwhile" in said and "1 file(s) added, 1 extended" in said
    assert git(origin, "log", "--format=%s", "retrain-state").split() == ["first", "second"]
    assert git(origin, "show", "retrain-state:log.jsonl").split() == ["a", "b", "c"]
    assert (first / "mlruns" / "log.jsonl").read_text() == "a\nb\nc\n"  # the store is the merged state
    assert not list(first.glob(".mlruns-merge-*"))


@pytest.mark.e2e
def test_pull_refuses_to_overwrite_a_store(origin: Path) -> None:
    work = clone(origin, "work")
    write_store(work, **{"mlflow.db": "local"})
    with pytest.raises(github.StateError, match="already holds a store"):
        github.pull_state(work, work / "mlruns", ENV)


@pytest.mark.e2e
def test_a_token_reaches_git_only_through_the_environment(origin: Path) -> None:
    env = github.git_environment({**ENV, "GITHUB_TOKEN": TOKEN, "GITHUB_SERVER_URL": "https://github.com"})
    assert env["GIT_CONFIG_KEY_0"] == "http.https://github.com/.extraheader"
    assert (
        env["GIT_CONFIG_VALUE_0"].startswith("AUTHORIZATION: basic ")
        and TOKEN not in env["GIT_CONFIG_VALUE_0"]
    )
    work = clone(origin, "work")
    github.pull_state(work, work / "mlruns", env)
    github.push_state(work, write_store(work, **{"mlflow.db": "db"}), env, "with a token")
    assert TOKEN not in (work / ".git" / "config").read_text()


@pytest.mark.e2e
def test_a_remote_that_cannot_be_read_is_a_state_error(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "--quiet")
    git(work, "remote", "add", "origin", str(tmp_path / "missing.git"))
    with pytest.raises(github.StateError, match="cannot read origin"):
        github.pull_state(work, work / "mlruns", ENV)


@pytest.mark.unit
def test_state_command_leaves_a_tracking_server_alone(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "pipeline.yaml").write_text("version: 1\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert main(["github", "state", "pull", str(tmp_path / "pipeline.yaml")]) == 0
    assert "MLFLOW_TRACKING_URI is set" in capsys.readouterr().out


@pytest.mark.e2e
def test_state_command_saves_nothing_after_an_evaluate_run(origin: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = clone(origin, "work")
    record = evaluated_run()
    run_dir = work / "reports" / record.run_id
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps(record.to_json()))
    write_store(work, **{"mlflow.db": "db"})
    assert main(["github", "state", "push", "--run-id", record.run_id, str(work / "pipeline.yaml")]) == 0
    assert f"run {record.run_id} ran in mode evaluate: it wrote nothing to keep" in capsys.readouterr().out
    assert git(origin, "branch", "--list", "retrain-state") == ""


# --- the data a run moved, committed back to the branch -----------------------------------------------
def clone_main(origin: Path, name: str) -> Path:
    work = clone(origin, name)
    git(work, "checkout", "--quiet", "-B", "main", "origin/main")
    return work


@pytest.mark.e2e
def test_data_moves_are_committed_and_pushed_on_top_of_a_branch_that_moved(origin: Path) -> None:
    seed = clone_main(origin, "with-drop")
    (seed / "data" / "new").mkdir(parents=True)
    (seed / "data" / "history").mkdir(parents=True)
    (seed / "data" / "new" / "sales-2012-04-06.csv").write_text("week 14\n")
    (seed / "data" / "history" / "sales.csv").write_text("weeks 1-13\n")
    git(seed, "add", ".")
    git(seed, "commit", "--quiet", "-m", "a drop")
    git(seed, "push", "--quiet", "origin", "HEAD:main")
    work = clone_main(origin, "work")
    # the run accepted the drop: a copy in the history and in data/accepted/<run>, none left in data/new
    (work / "data" / "accepted" / "run-1").mkdir(parents=True)
    for target in ("data/history/sales-2012-04-06.csv", "data/accepted/run-1/sales-2012-04-06.csv"):
        (work / target).write_text("week 14\n")
    (work / "data" / "new" / "sales-2012-04-06.csv").unlink()
    # meanwhile someone pushed the next drop
    other = clone_main(origin, "other")
    (other / "data" / "new" / "sales-2012-04-13.csv").write_text("week 15\n")
    git(other, "add", ".")
    git(other, "commit", "--quiet", "-m", "next drop")
    git(other, "push", "--quiet", "origin", "HEAD:main")

    paths = ["data/new", "data/history", "data/accepted", "data/quarantine"]
    said = github.push_data(work, paths, ENV, "data accepted by run run-1", "main")

    assert said.startswith("pushed the data moves to main at "), said
    log = git(origin, "log", "--format=%s", "main").splitlines()
    assert log[:2] == ["data accepted by run run-1", "next drop"]
    assert git(origin, "ls-tree", "-r", "--name-only", "main").split() == [
        ".gitignore",
        "data/accepted/run-1/sales-2012-04-06.csv",
        "data/history/sales-2012-04-06.csv",
        "data/history/sales.csv",
        "data/new/sales-2012-04-13.csv",
        "pipeline.yaml",
    ]
    assert github.push_data(work, paths, ENV, "again", "main") == "no data moved: nothing to commit"
