"""What every event carries from its environment: the platform, CI tags, the repository."""

from __future__ import annotations

import json

from helpers import tags_of

import trunk_trace
from trunk_trace import track
from trunk_trace.testing import capture

GITHUB = {
    "GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "acme/app",
    "GITHUB_RUN_ID": "777", "GITHUB_RUN_ATTEMPT": "2", "GITHUB_JOB": "test", "GITHUB_SHA": "b" * 40,
    "GITHUB_REF": "refs/heads/feature/x", "GITHUB_REF_NAME": "feature/x", "RUNNER_NAME": "runner-1",
}


def test_ci_tags_and_platform_on_every_event(monkeypatch):
    for name, value in GITHUB.items():
        monkeypatch.setenv(name, value)
    with capture() as events:
        with track("build", tags={"branch": "mine"}):
            with track("compile"):
                pass
    for event in events:
        assert event["sequence"]["platform"] == "github_actions"
        tags = tags_of(event)
        assert tags["sha"] == "b" * 40 and tags["ci.run_id"] == "777" and tags["ci.run_attempt"] == "2"
        assert tags["ci.job"] == "test" and tags["ci.runner"] == "runner-1"
        assert tags["ci.url"] == "https://github.com/acme/app/actions/runs/777/attempts/2"
    assert tags_of(events[0])["branch"] == "feature/x"
    assert tags_of(events[1])["branch"] == "mine"  # the event's own tag wins


def test_platform_overrides(monkeypatch):
    for name, value in GITHUB.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TRUNK_TRACE_PLATFORM", "buildfarm")
    with capture() as events:
        with track("x"):
            pass
    assert events[0]["sequence"]["platform"] == "buildfarm"
    trunk_trace.reset()
    trunk_trace.configure(platform="configured", summary=False)
    with capture() as events:
        with track("x"):
            pass
    assert events[0]["sequence"]["platform"] == "configured"


def test_repo_in_the_jsonl_lines(tmp_path, monkeypatch):
    path = tmp_path / "e.jsonl"
    monkeypatch.setenv("TRUNK_REPO_URL", "git@github.com:acme/tool.git")
    trunk_trace.configure(file=str(path), summary=False)
    with track("x"):
        pass
    trunk_trace.flush()
    (line,) = [json.loads(text) for text in path.read_text().splitlines()]
    assert line["repo"] == {"host": "github.com", "owner": "acme", "name": "tool"}


def test_unreadable_repo_url_is_reported(tmp_path, caplog):
    path = tmp_path / "e.jsonl"
    trunk_trace.configure(file=str(path), summary=False, repo_url="not a repo")
    with track("x"):
        pass
    trunk_trace.flush()
    assert json.loads(path.read_text())["repo"] is None
    assert "cannot read the repository" in caplog.text


def test_a_repo_off_github_is_sent_with_one_warning(tmp_path, caplog):
    trunk_trace.configure(
        token="t0k3n", repo_url="https://gitlab.com/group/sub/proj.git", api_address="http://127.0.0.1:9",
        spool_dir=str(tmp_path / "spool"), summary=False, exit_timeout=0.5,
    )
    for _ in range(3):
        with track("x"):
            pass
        trunk_trace.flush(0.5)
    trunk_trace.shutdown(0.5)
    warnings = [r.getMessage() for r in caplog.records if "github.com" in r.getMessage()]
    assert len(warnings) == 1 and "gitlab.com" in warnings[0]
    assert "t0k3n" not in caplog.text
