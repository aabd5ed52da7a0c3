from __future__ import annotations

import json
import logging
import os
import shutil
import string
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from trunk_trace import _ci
from trunk_trace._ci import CIContext, Repo, detect, parse_remote, redact_url, warn_if_unsupported_host

SHA_A = "a" * 40
SHA_B = "b" * 40
SHA_C = "c" * 40


def R(text: str) -> Repo:
    host, *owner, name = text.split("/")
    return Repo(host=host, owner="/".join(owner), name=name)


# --- parse_remote / redact_url -------------------------------------------------------------

REMOTE_VECTORS = [
    # ecosystem.md 1.6
    ("https://github.com/trunk-io/analytics-cli.git", "github.com/trunk-io/analytics-cli"),
    ("https://x-access-token:SECRET@github.com/o/r.git", "github.com/o/r"),
    ("https://user:pass@GitHub.com/o/r", "github.com/o/r"),
    ("http://github.com:8080/o/r.git", "github.com/o/r"),
    ("ssh://git@github.com:22/o/r.git", "github.com/o/r"),
    ("git@github.com:trunk-io/analytics-cli.git", "github.com/trunk-io/analytics-cli"),
    ("github.com:o/r.git", "github.com/o/r"),
    ("git://github.com/o/r", "github.com/o/r"),
    ("https://gitlab.com/group/sub/proj.git", "gitlab.com/group/sub/proj"),
    ("https://org@dev.azure.com/org/project/_git/repo", "dev.azure.com/org/project/repo"),
    ("git@ssh.dev.azure.com:v3/org/project/repo", "ssh.dev.azure.com/org/project/repo"),
    ("file:///srv/r.git", None),
    ("/srv/r.git", None),
    ("C:\\repos\\r", None),
    # more forms
    ("C:/repos/r", None),
    ("git+ssh://git@github.com/o/r.git", "github.com/o/r"),
    ("ssh+git://git@github.com/o/r", "github.com/o/r"),
    ("HTTPS://GitHub.COM/o/r.git", "github.com/o/r"),
    ("https://github.com/o/r/", "github.com/o/r"),
    ("https://github.com/o/r.git/", "github.com/o/r"),
    ("  https://github.com/o/r.git\n", "github.com/o/r"),
    ("https://ghp_tokenvalue@github.com/o/r", "github.com/o/r"),
    ("https://gitlab-ci-token:SECRET@gitlab.example.com:8443/a/b/c/d.git", "gitlab.example.com/a/b/c/d"),
    ("git@gitlab.com:group/sub/proj.git", "gitlab.com/group/sub/proj"),
    ("git@host.example:/srv/o/r.git", "host.example/srv/o/r"),
    ("ssh://git@ssh.dev.azure.com/v3/org/project/repo", "ssh.dev.azure.com/org/project/repo"),
    ("org@vs-ssh.visualstudio.com:v3/org/project/repo", "vs-ssh.visualstudio.com/org/project/repo"),
    ("https://org.visualstudio.com/project/_git/repo", "org.visualstudio.com/project/repo"),
    ("https://dev.azure.com/org/_git/repo", "dev.azure.com/org/repo"),
    ("github.com/o/r", "github.com/o/r"),
    ("GitHub.com/o/r.git", "github.com/o/r"),
    ("gitlab.com/group/sub/proj", "gitlab.com/group/sub/proj"),
    ("https://git-codecommit.us-east-1.amazonaws.com/v1/repos/r", "git-codecommit.us-east-1.amazonaws.com/v1/repos/r"),
    # not a repo identity
    ("ssh://github.com//testrepo", None),
    ("ssh://github.com/github/", None),
    ("https://github.com/o/.git", None),
    ("https://github.com/../r", None),
    ("https://github.com", None),
    ("https:///o/r", None),
    ("https://[::1/o/r", None),
    ("s3://bucket/o/r.zip", None),
    ("ftp://github.com/o/r", None),
    ("repos/o/r", None),
    ("./o/r", None),
    ("../o/r", None),
    ("~/o/r", None),
    ("host:", None),
    ("", None),
    ("   ", None),
    ("garbage", None),
    ("https://github.com/o/r x", None),
    ("https://user@bad@host!/o/r", None),
]


@pytest.mark.parametrize(("url", "expected"), REMOTE_VECTORS)
def test_parse_remote(url, expected):
    assert parse_remote(url) == (R(expected) if expected else None)


@pytest.mark.parametrize("value", [None, 3, b"https://github.com/o/r", ["github.com/o/r"]])
def test_parse_remote_non_str_is_none(value):
    assert parse_remote(value) is None


def test_repo_wire_and_str():
    repo = parse_remote("https://gitlab.com/group/sub/proj.git")
    assert repo.to_wire() == {"host": "gitlab.com", "owner": "group/sub", "name": "proj"}
    assert str(repo) == "gitlab.com/group/sub/proj"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://x-access-token:SECRET@github.com/o/r.git", "https://github.com/o/r.git"),
        ("https://user:p@ss@host.example:8443/a/b?x=1#f", "https://host.example:8443/a/b?x=1#f"),
        ("HTTP://tok@host/o/r", "HTTP://host/o/r"),
        ("ssh://git@github.com:22/o/r.git", "ssh://github.com:22/o/r.git"),
        ("https://org@dev.azure.com/org/project/_git/repo", "https://dev.azure.com/org/project/_git/repo"),
        ("https://jenkins.example/job/a@b/1/", "https://jenkins.example/job/a@b/1/"),
        ("https://github.com/o/r.git", "https://github.com/o/r.git"),
        ("user:SECRET@host.example:o/r.git", "host.example:o/r.git"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),  # an ssh login, not a secret
        ("/srv/r.git", "/srv/r.git"),
        ("", ""),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


@given(st.text())
def test_parse_and_redact_never_raise_on_text(text):
    repo = parse_remote(text)
    assert repo is None or isinstance(repo, Repo)
    assert isinstance(redact_url(text), str)


_LOWER = string.ascii_lowercase + string.digits
_label = st.text(alphabet=_LOWER, min_size=1, max_size=8)
_host = st.lists(_label, min_size=1, max_size=3).map(".".join)
_segment = st.text(alphabet=_LOWER + "-_.", min_size=1, max_size=10).filter(
    lambda s: s not in (".", "..", "_git", "v3") and not s.endswith(".git")  # no Azure markers
)
# userinfo characters git and urlsplit both accept unencoded; "PW" marks what must never leak
_password = st.text(
    alphabet=string.ascii_letters + string.digits + "-._~!$&'()*+,;=%", min_size=4, max_size=20
).map(lambda s: "PW" + s)


@settings(max_examples=300)
@given(
    scheme=st.sampled_from(["https", "http", "ssh", "git", "git+ssh", "HTTPS"]),
    user=st.text(alphabet=_LOWER + "-_", max_size=8),
    password=_password,
    token_only=st.booleans(),
    host=_host,
    port=st.one_of(st.none(), st.integers(1, 65535)),
    segments=st.lists(_segment, min_size=2, max_size=4),
    suffix=st.sampled_from(["", ".git", "/", ".git/"]),
)
def test_url_credentials_never_leak(scheme, user, password, token_only, host, port, segments, suffix):
    userinfo = password if token_only else f"{user}:{password}"
    rest = f"{host}{'' if port is None else f':{port}'}/{'/'.join(segments)}{suffix}"
    assume(password.lower() not in (user + rest).lower())
    url = f"{scheme}://{userinfo}@{rest}"

    repo = parse_remote(url)
    redacted = redact_url(url)

    assert repo == Repo(host=host, owner="/".join(segments[:-1]), name=segments[-1])
    assert password.lower() not in str(repo).lower()
    assert redacted == f"{scheme}://{rest}"


@given(user=st.text(alphabet=_LOWER, min_size=1, max_size=8), password=_password, host=_host,
       segments=st.lists(_segment, min_size=2, max_size=4))
def test_scp_credentials_never_leak(user, password, host, segments):
    assume(len(host) > 1 and password.lower() not in (user + host + "/".join(segments)).lower())
    url = f"{user}:{password}@{host}:{'/'.join(segments)}"
    assert parse_remote(url) == Repo(host=host, owner="/".join(segments[:-1]), name=segments[-1])
    assert password not in redact_url(url)


# --- CI systems ----------------------------------------------------------------------------------

CI_CASES = [
    pytest.param(
        {
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_REPOSITORY": "octo/hello",
            "GITHUB_REPOSITORY_OWNER": "octo",
            "GITHUB_EVENT_NAME": "push",
            "GITHUB_REF": "refs/heads/feature/x",
            "GITHUB_REF_NAME": "feature/x",
            "GITHUB_HEAD_REF": "",  # set but empty outside pull requests
            "GITHUB_SHA": SHA_A,
            "GITHUB_RUN_ID": "1234",
            "GITHUB_RUN_NUMBER": "5",
            "GITHUB_RUN_ATTEMPT": "2",
            "GITHUB_JOB": "test",
            "RUNNER_NAME": "GitHub Actions 2",
        },
        dict(
            platform="github_actions", repo=R("github.com/octo/hello"), repo_source="GITHUB_REPOSITORY",
            branch="feature/x", sha=SHA_A, run_id="1234", run_attempt="2", job="test",
            runner="GitHub Actions 2", url="https://github.com/octo/hello/actions/runs/1234/attempts/2",
        ),
        id="github-push",
    ),
    pytest.param(
        {
            "GITHUB_ACTIONS": "true",
            "GITHUB_SERVER_URL": "https://GHE.example.com",
            "GITHUB_REPOSITORY": "octo/hello",
            "GITHUB_EVENT_NAME": "pull_request",
            "GITHUB_REF": "refs/pull/42/merge",
            "GITHUB_HEAD_REF": "feat",
            "GITHUB_BASE_REF": "main",
            "GITHUB_SHA": SHA_A,
            "GITHUB_RUN_ID": "99",
        },
        dict(
            platform="github_actions", repo=R("ghe.example.com/octo/hello"),
            repo_source="GITHUB_REPOSITORY", branch="feat", sha=SHA_A, pr="42", run_id="99",
            url="https://GHE.example.com/octo/hello/actions/runs/99",
        ),
        id="github-enterprise-pr-without-event-file",
    ),
    pytest.param(
        {
            "GITHUB_ACTIONS": "true",
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_REPOSITORY": "octo/hello",
            "GITHUB_REF": "refs/tags/v1.2",
            "GITHUB_REF_NAME": "v1.2",
            "GITHUB_SHA": SHA_A,
        },
        dict(platform="github_actions", repo=R("github.com/octo/hello"), repo_source="GITHUB_REPOSITORY",
             sha=SHA_A),
        id="github-tag-is-not-a-branch",
    ),
    pytest.param(
        {
            "GITHUB_ACTIONS": "true",
            "GITEA_ACTIONS": "true",
            "ACT": "true",
            "GITHUB_SERVER_URL": "https://gitea.example.com",
            "GITHUB_REPOSITORY": "o/r",
            "GITHUB_REF": "refs/pull/4/head",
            "GITHUB_HEAD_REF": "feat",
            "GITHUB_SHA": SHA_A,
            "GITHUB_RUN_ID": "77",
            "GITHUB_RUN_NUMBER": "3",
            "GITHUB_JOB": "build",
            "RUNNER_NAME": "gitea-runner",
        },
        dict(platform="gitea_actions", repo=R("gitea.example.com/o/r"), repo_source="GITHUB_REPOSITORY",
             branch="feat", sha=SHA_A, pr="4", run_id="77", job="build", runner="gitea-runner"),
        id="gitea",
    ),
    pytest.param(
        {
            "GITHUB_ACTIONS": "true",
            "FORGEJO_ACTIONS": "true",
            "GITEA_ACTIONS": "true",
            "ACT": "true",
            "GITHUB_SERVER_URL": "https://codeberg.org",
            "GITHUB_REPOSITORY": "o/r",
            "GITHUB_REF": "refs/heads/main",
            "GITHUB_SHA": SHA_A,
            "GITHUB_RUN_ID": "5",
        },
        dict(platform="forgejo_actions", repo=R("codeberg.org/o/r"), repo_source="GITHUB_REPOSITORY",
             branch="main", sha=SHA_A, run_id="5"),
        id="forgejo",
    ),
    pytest.param(
        {
            "GITHUB_ACTIONS": "true",
            "ACT": "true",
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_REPOSITORY": "o/r",
            "GITHUB_REF": "refs/heads/dev",
            "GITHUB_SHA": SHA_A,
            "GITHUB_RUN_ID": "1",
        },
        dict(platform="act", repo=R("github.com/o/r"), repo_source="GITHUB_REPOSITORY", branch="dev",
             sha=SHA_A, run_id="1"),
        id="act",
    ),
    pytest.param(
        {
            "CI": "true",
            "GITLAB_CI": "true",
            "CI_SERVER_HOST": "gitlab.com",
            "CI_SERVER_URL": "https://gitlab.com",
            "CI_PROJECT_PATH": "grp/sub/proj",
            "CI_PROJECT_NAMESPACE": "grp/sub",
            "CI_PROJECT_NAME": "proj",
            "CI_PROJECT_URL": "https://gitlab.com/grp/sub/proj",
            "CI_REPOSITORY_URL": "https://gitlab-ci-token:SECRET@gitlab.com/grp/sub/proj.git",
            "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "feat",
            "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA": SHA_B,
            "CI_COMMIT_REF_NAME": "feat",
            "CI_COMMIT_SHA": SHA_A,
            "CI_MERGE_REQUEST_IID": "12",
            "CI_MERGE_REQUEST_ID": "987654",
            "CI_PIPELINE_ID": "555",
            "CI_PIPELINE_IID": "8",
            "CI_JOB_ID": "777",
            "CI_JOB_NAME": "test 1/2",
            "CI_JOB_STAGE": "test",
            "CI_RUNNER_DESCRIPTION": "shared-runner",
            "CI_RUNNER_ID": "3",
            "CI_PIPELINE_URL": "https://gitlab.com/grp/sub/proj/-/pipelines/555",
            "CI_JOB_URL": "https://gitlab.com/grp/sub/proj/-/jobs/777",
        },
        dict(platform="gitlab_ci", repo=R("gitlab.com/grp/sub/proj"), repo_source="CI_PROJECT_PATH",
             branch="feat", sha=SHA_B, pr="12", run_id="555", job="test 1/2", runner="shared-runner",
             url="https://gitlab.com/grp/sub/proj/-/pipelines/555"),
        id="gitlab-merge-request",
    ),
    pytest.param(
        {
            "GITLAB_CI": "true",
            "CI_SERVER_HOST": "gitlab.example.com",
            "CI_PROJECT_PATH": "g/p",
            "CI_COMMIT_TAG": "v2.0",
            "CI_COMMIT_REF_NAME": "v2.0",
            "CI_COMMIT_SHA": SHA_A,
            "CI_PIPELINE_ID": "1",
        },
        dict(platform="gitlab_ci", repo=R("gitlab.example.com/g/p"), repo_source="CI_PROJECT_PATH",
             sha=SHA_A, run_id="1"),
        id="gitlab-tag",
    ),
    pytest.param(
        {
            "JENKINS_URL": "https://ci.example.com/",
            "BUILD_ID": "7",
            "BUILD_NUMBER": "7",
            "BUILD_TAG": "jenkins-org-repo-PR-3-7",
            "JOB_NAME": "org/repo/PR-3",
            "JOB_BASE_NAME": "PR-3",
            "BRANCH_NAME": "PR-3",
            "CHANGE_ID": "3",
            "CHANGE_BRANCH": "feat",
            "CHANGE_TARGET": "main",
            "CHANGE_URL": "https://github.com/org/repo/pull/3",
            "GIT_URL": "https://bot:SECRET@github.com/org/repo.git",
            "GIT_COMMIT": SHA_A,
            "NODE_NAME": "agent-1",
            "EXECUTOR_NUMBER": "0",
            "BUILD_URL": "https://ci.example.com/job/org/job/repo/job/PR-3/7/",
        },
        dict(platform="jenkins", repo=R("github.com/org/repo"), repo_source="GIT_URL", branch="feat",
             sha=SHA_A, pr="3", run_id="jenkins-org-repo-PR-3-7", job="org/repo/PR-3", runner="agent-1",
             url="https://ci.example.com/job/org/job/repo/job/PR-3/7/"),
        id="jenkins-multibranch-pr",
    ),
    pytest.param(
        {
            "JENKINS_URL": "https://ci.example.com/",
            "BUILD_NUMBER": "12",
            "BUILD_TAG": "jenkins-nightly-12",
            "JOB_NAME": "nightly",
            "GIT_URL": "git@bitbucket.org:team/repo.git",
            "GIT_BRANCH": "origin/release/1.x",
            "GIT_COMMIT": SHA_A,
            "NODE_NAME": "built-in",
            "BUILD_URL": "https://admin:SECRET@ci.example.com/job/nightly/12/",
        },
        dict(platform="jenkins", repo=R("bitbucket.org/team/repo"), repo_source="GIT_URL",
             branch="release/1.x", sha=SHA_A, run_id="jenkins-nightly-12", job="nightly", runner="built-in",
             url="https://ci.example.com/job/nightly/12/"),
        id="jenkins-freestyle",
    ),
    pytest.param(
        {
            "CI": "true",
            "CIRCLECI": "true",
            "CIRCLE_REPOSITORY_URL": "git@github.com:o/r.git",
            "CIRCLE_PROJECT_USERNAME": "o",
            "CIRCLE_PROJECT_REPONAME": "r",
            "CIRCLE_BRANCH": "feat",
            "CIRCLE_SHA1": SHA_A,
            "CIRCLE_PULL_REQUEST": "https://github.com/o/r/pull/88",
            "CIRCLE_WORKFLOW_ID": "6fc3a0e4-0000-4000-8000-000000000000",
            "CIRCLE_BUILD_NUM": "100",
            "CIRCLE_JOB": "build",
            "CIRCLE_BUILD_URL": "https://circleci.com/gh/o/r/100",
        },
        dict(platform="circleci", repo=R("github.com/o/r"), repo_source="CIRCLE_REPOSITORY_URL",
             branch="feat", sha=SHA_A, pr="88", run_id="6fc3a0e4-0000-4000-8000-000000000000", job="build",
             url="https://app.circleci.com/pipelines/workflows/6fc3a0e4-0000-4000-8000-000000000000"),
        id="circleci",
    ),
    pytest.param(
        {
            "BUILDKITE": "true",
            "BUILDKITE_REPO": "git@github.com:o/r.git",
            "BUILDKITE_BRANCH": "feat",
            "BUILDKITE_COMMIT": SHA_A,
            "BUILDKITE_PULL_REQUEST": "15",
            "BUILDKITE_PULL_REQUEST_BASE_BRANCH": "main",
            "BUILDKITE_BUILD_ID": "0190-uuid",
            "BUILDKITE_BUILD_NUMBER": "31",
            "BUILDKITE_RETRY_COUNT": "1",
            "BUILDKITE_LABEL": ":pytest: tests",
            "BUILDKITE_STEP_KEY": "tests",
            "BUILDKITE_JOB_ID": "job-uuid",
            "BUILDKITE_AGENT_NAME": "agent-3",
            "BUILDKITE_BUILD_URL": "https://buildkite.com/acme/pipe/builds/31",
        },
        dict(platform="buildkite", repo=R("github.com/o/r"), repo_source="BUILDKITE_REPO", branch="feat",
             sha=SHA_A, pr="15", run_id="0190-uuid", run_attempt="2", job=":pytest: tests",
             runner="agent-3", url="https://buildkite.com/acme/pipe/builds/31"),
        id="buildkite-pr-retried",
    ),
    pytest.param(
        {
            "BUILDKITE": "true",
            "BUILDKITE_REPO": "https://github.com/o/r.git",
            "BUILDKITE_BRANCH": "main",
            "BUILDKITE_COMMIT": "HEAD",
            "BUILDKITE_PULL_REQUEST": "false",
            "BUILDKITE_BUILD_ID": "b",
            "BUILDKITE_RETRY_COUNT": "0",
        },
        dict(platform="buildkite", repo=R("github.com/o/r"), repo_source="BUILDKITE_REPO", branch="main",
             run_id="b", run_attempt="1"),
        id="buildkite-head-and-false",
    ),
    pytest.param(
        {
            "TF_BUILD": "True",
            "BUILD_REPOSITORY_URI": "https://org@dev.azure.com/org/project/_git/repo",
            "BUILD_REPOSITORY_PROVIDER": "TfsGit",
            "SYSTEM_PULLREQUEST_SOURCEBRANCH": "refs/heads/feature/x",
            "BUILD_SOURCEBRANCH": "refs/pull/9/merge",
            "BUILD_SOURCEBRANCHNAME": "merge",
            "BUILD_SOURCEVERSION": SHA_A,
            "SYSTEM_PULLREQUEST_SOURCECOMMITID": SHA_B,
            "SYSTEM_PULLREQUEST_PULLREQUESTID": "9",
            "BUILD_REASON": "PullRequest",
            "BUILD_BUILDID": "321",
            "SYSTEM_JOBATTEMPT": "1",
            "SYSTEM_JOBDISPLAYNAME": "Test job",
            "AGENT_NAME": "Hosted Agent",
            "SYSTEM_TEAMFOUNDATIONSERVERURI": "https://dev.azure.com/org/",
            "SYSTEM_TEAMPROJECTID": "0a1b2c3d",
        },
        dict(platform="azure_pipelines", repo=R("dev.azure.com/org/project/repo"),
             repo_source="BUILD_REPOSITORY_URI", branch="feature/x", sha=SHA_B, pr="9", run_id="321",
             run_attempt="1", job="Test job", runner="Hosted Agent",
             url="https://dev.azure.com/org/0a1b2c3d/_build/results?buildId=321"),
        id="azure-repos-pr",
    ),
    pytest.param(
        {
            "TF_BUILD": "True",
            "BUILD_REPOSITORY_URI": "https://github.com/o/r",
            "BUILD_REPOSITORY_PROVIDER": "GitHub",
            "SYSTEM_PULLREQUEST_SOURCEBRANCH": "feat",
            "SYSTEM_PULLREQUEST_PULLREQUESTNUMBER": "5",
            "SYSTEM_PULLREQUEST_PULLREQUESTID": "1234567",
            "BUILD_SOURCEVERSION": SHA_A,
            "BUILD_BUILDID": "4",
            "SYSTEM_COLLECTIONURI": "https://dev.azure.com/org/",
            "SYSTEM_TEAMPROJECTID": "p",
        },
        dict(platform="azure_pipelines", repo=R("github.com/o/r"), repo_source="BUILD_REPOSITORY_URI",
             branch="feat", sha=SHA_A, pr="5", run_id="4",
             url="https://dev.azure.com/org/p/_build/results?buildId=4"),
        id="azure-github-pr",
    ),
    pytest.param(
        {
            "CI": "true",
            "BITBUCKET_BUILD_NUMBER": "17",
            "BITBUCKET_COMMIT": "abcdef123456",
            "BITBUCKET_BRANCH": "feat",
            "BITBUCKET_PR_ID": "4",
            "BITBUCKET_PR_DESTINATION_BRANCH": "main",
            "BITBUCKET_GIT_HTTP_ORIGIN": "http://bitbucket.org/ws/slug",
            "BITBUCKET_WORKSPACE": "ws",
            "BITBUCKET_REPO_SLUG": "slug",
            "BITBUCKET_REPO_FULL_NAME": "ws/slug",
            "BITBUCKET_PIPELINE_UUID": "{abc-123}",
            "BITBUCKET_STEP_UUID": "{def-456}",
        },
        dict(platform="bitbucket_pipelines", repo=R("bitbucket.org/ws/slug"),
             repo_source="BITBUCKET_GIT_HTTP_ORIGIN", branch="feat", sha="abcdef123456", pr="4",
             run_id="abc-123", job="def-456", url="https://bitbucket.org/ws/slug/pipelines/results/17"),
        id="bitbucket",
    ),
    pytest.param(
        {
            "BITBUCKET_BUILD_NUMBER": "18",
            "BITBUCKET_REPO_FULL_NAME": "ws/slug",
            "BITBUCKET_TAG": "v3",
            "BITBUCKET_COMMIT": SHA_A,
        },
        dict(platform="bitbucket_pipelines", repo=R("bitbucket.org/ws/slug"),
             repo_source="BITBUCKET_REPO_FULL_NAME", sha=SHA_A, run_id="18",
             url="https://bitbucket.org/ws/slug/pipelines/results/18"),
        id="bitbucket-full-name-only",
    ),
    pytest.param(
        {
            "CI": "true",
            "CONTINUOUS_INTEGRATION": "true",
            "TRAVIS": "true",
            "TRAVIS_REPO_SLUG": "o/r",
            "TRAVIS_BRANCH": "main",
            "TRAVIS_PULL_REQUEST_BRANCH": "feat",
            "TRAVIS_PULL_REQUEST": "21",
            "TRAVIS_COMMIT": SHA_A,
            "TRAVIS_PULL_REQUEST_SHA": SHA_B,
            "TRAVIS_BUILD_ID": "9000",
            "TRAVIS_BUILD_NUMBER": "12",
            "TRAVIS_JOB_NAME": "unit",
            "TRAVIS_JOB_NUMBER": "12.1",
            "TRAVIS_BUILD_WEB_URL": "https://app.travis-ci.com/github/o/r/builds/9000",
        },
        dict(platform="travis_ci", repo=R("github.com/o/r"), repo_source="TRAVIS_REPO_SLUG", branch="feat",
             sha=SHA_B, pr="21", run_id="9000", job="unit",
             url="https://app.travis-ci.com/github/o/r/builds/9000"),
        id="travis-pr",
    ),
    pytest.param(
        {
            "TRAVIS": "true",
            "TRAVIS_REPO_SLUG": "o/r",
            "TRAVIS_BRANCH": "v1.0",
            "TRAVIS_TAG": "v1.0",
            "TRAVIS_PULL_REQUEST": "false",
            "TRAVIS_PULL_REQUEST_BRANCH": "",
            "TRAVIS_COMMIT": SHA_A,
            "TRAVIS_BUILD_ID": "9001",
            "TRAVIS_JOB_NUMBER": "13.1",
        },
        dict(platform="travis_ci", repo=R("github.com/o/r"), repo_source="TRAVIS_REPO_SLUG", sha=SHA_A,
             run_id="9001", job="13.1"),
        id="travis-tag",
    ),
    pytest.param(
        {
            "TEAMCITY_VERSION": "2023.11 (build 147486)",
            "BUILD_VCS_NUMBER": SHA_A,
            "BUILD_NUMBER": "42",
            "TEAMCITY_BUILDCONF_NAME": "Build",
            "TEAMCITY_PROJECT_NAME": "Proj",
        },
        dict(platform="teamcity", sha=SHA_A, run_id="42", job="Build"),
        id="teamcity",
    ),
    pytest.param(
        {
            "CI": "true",
            "DRONE": "true",
            "DRONE_REPO": "o/r",
            "DRONE_GIT_HTTP_URL": "https://github.com/o/r.git",
            "DRONE_REPO_LINK": "https://github.com/o/r",
            "DRONE_SOURCE_BRANCH": "feat",
            "DRONE_TARGET_BRANCH": "main",
            "DRONE_BRANCH": "main",
            "DRONE_COMMIT_SHA": SHA_A,
            "DRONE_PULL_REQUEST": "3",
            "DRONE_BUILD_EVENT": "pull_request",
            "DRONE_BUILD_NUMBER": "12",
            "DRONE_STAGE_NAME": "default",
            "DRONE_STEP_NAME": "test",
            "DRONE_STAGE_MACHINE": "runner-1",
            "DRONE_BUILD_LINK": "https://drone.example.com/o/r/12",
        },
        dict(platform="drone", repo=R("github.com/o/r"), repo_source="DRONE_GIT_HTTP_URL", branch="feat",
             sha=SHA_A, pr="3", run_id="12", job="default", runner="runner-1",
             url="https://drone.example.com/o/r/12"),
        id="drone-pr",
    ),
    pytest.param(
        {
            "CI": "woodpecker",
            "CI_REPO": "o/r",
            "CI_FORGE_URL": "https://codeberg.org",
            "CI_REPO_CLONE_URL": "https://codeberg.org/o/r.git",
            "CI_COMMIT_SOURCE_BRANCH": "feat",
            "CI_COMMIT_TARGET_BRANCH": "main",
            "CI_COMMIT_BRANCH": "main",
            "CI_COMMIT_SHA": SHA_A,
            "CI_COMMIT_PULL_REQUEST": "8",
            "CI_PIPELINE_EVENT": "pull_request",
            "CI_PIPELINE_NUMBER": "33",
            "CI_WORKFLOW_NAME": "test",
            "CI_STEP_NAME": "pytest",
            "CI_PIPELINE_URL": "https://ci.codeberg.org/repos/1/pipeline/33",
        },
        dict(platform="woodpecker", repo=R("codeberg.org/o/r"), repo_source="CI_REPO", branch="feat",
             sha=SHA_A, pr="8", run_id="33", job="test", url="https://ci.codeberg.org/repos/1/pipeline/33"),
        id="woodpecker-pr",
    ),
    pytest.param(
        {
            "CODEBUILD_BUILD_ID": "proj:0000-uuid",
            "CODEBUILD_BUILD_ARN": "arn:aws:codebuild:us-east-1:1:build/proj:0000-uuid",
            "CODEBUILD_SOURCE_REPO_URL": "https://github.com/o/r.git",
            "CODEBUILD_WEBHOOK_HEAD_REF": "refs/heads/feat",
            "CODEBUILD_WEBHOOK_TRIGGER": "pr/5",
            "CODEBUILD_WEBHOOK_EVENT": "PULL_REQUEST_UPDATED",
            "CODEBUILD_SOURCE_VERSION": "pr/5",
            "CODEBUILD_RESOLVED_SOURCE_VERSION": SHA_A,
            "AWS_REGION": "us-east-1",
        },
        dict(platform="aws_codebuild", repo=R("github.com/o/r"), repo_source="CODEBUILD_SOURCE_REPO_URL",
             branch="feat", sha=SHA_A, pr="5", run_id="proj:0000-uuid", job="proj",
             url="https://console.aws.amazon.com/codebuild/home?region=us-east-1"
                 "#/builds/proj:0000-uuid/view/new"),
        id="codebuild-pr",
    ),
    pytest.param(
        {
            "CODEBUILD_BUILD_ID": "proj:1111",
            "CODEBUILD_WEBHOOK_TRIGGER": "branch/main",
            "CODEBUILD_RESOLVED_SOURCE_VERSION": SHA_A,
            "CODEBUILD_PUBLIC_BUILD_URL": "https://public.example/builds/1111",
        },
        dict(platform="aws_codebuild", branch="main", sha=SHA_A, run_id="proj:1111", job="proj",
             url="https://public.example/builds/1111"),
        id="codebuild-branch-trigger",
    ),
    pytest.param(
        {
            "BUILDER_OUTPUT": "/builder/outputs",
            "BUILD_ID": "b-1",
            "PROJECT_ID": "proj",
            "LOCATION": "us-central1",
            "TRIGGER_NAME": "pr-trigger",
            "COMMIT_SHA": SHA_A,
            "BRANCH_NAME": "main",
            "_HEAD_BRANCH": "feat",
            "_BASE_BRANCH": "main",
            "_PR_NUMBER": "11",
        },
        dict(platform="google_cloud_build", branch="feat", sha=SHA_A, pr="11", run_id="b-1",
             job="pr-trigger",
             url="https://console.cloud.google.com/cloud-build/builds;region=us-central1/b-1?project=proj"),
        id="cloud-build",
    ),
    pytest.param({"CI": "true"}, dict(platform="ci"), id="generic-ci"),
    pytest.param({"CI": "1", "BUILD_NUMBER": "3"}, dict(platform="ci"), id="generic-ci-1"),
    pytest.param({"CONTINUOUS_INTEGRATION": "yes"}, dict(platform="ci"), id="generic-continuous-integration"),
    pytest.param({"CI": "false", "CONTINUOUS_INTEGRATION": "true"}, dict(platform="local"), id="ci-false"),
    pytest.param({"CI": ""}, dict(platform="local"), id="ci-empty"),
    pytest.param({}, dict(platform="local"), id="local"),
    pytest.param({"BUILD_ID": "12", "BUILD_NUMBER": "12"}, dict(platform="local"), id="build-id-is-not-jenkins"),
    pytest.param({"JENKINS_URL": "", "BUILD_ID": "1", "CI": "true"}, dict(platform="ci"), id="empty-marker"),
    pytest.param({"GITHUB_ACTIONS": "false", "CI": "true"}, dict(platform="ci"), id="false-marker"),
    pytest.param(
        {"CI": "false", "GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "o/r"},
        dict(platform="github_actions", repo=R("github.com/o/r"), repo_source="GITHUB_REPOSITORY"),
        id="ci-false-does-not-hide-a-vendor",
    ),
    pytest.param(
        {"CI": "drone", "DRONE_BUILD_NUMBER": "4"},
        dict(platform="drone", run_id="4"),
        id="very-old-drone",
    ),
]


@pytest.mark.parametrize(("env", "expected"), CI_CASES)
def test_ci_systems(env, expected):
    assert detect(env, use_git=False) == CIContext(**expected)


def test_thirteen_systems_and_lookalikes_are_covered():
    platforms = {p.values[1]["platform"] for p in CI_CASES}
    assert platforms >= {
        "github_actions", "gitlab_ci", "jenkins", "circleci", "buildkite", "azure_pipelines",
        "bitbucket_pipelines", "travis_ci", "teamcity", "drone", "woodpecker", "aws_codebuild",
        "google_cloud_build", "gitea_actions", "forgejo_actions", "act", "ci", "local",
    }


def test_values_are_stripped_and_blank_is_absent():
    env = {"GITLAB_CI": " true ", "CI_SERVER_HOST": "gitlab.com", "CI_PROJECT_PATH": "g/p\n",
           "CI_COMMIT_BRANCH": "  ", "CI_COMMIT_REF_NAME": "main\n", "CI_PIPELINE_ID": "\t"}
    ctx = detect(env, use_git=False)
    assert (ctx.platform, ctx.repo, ctx.branch, ctx.run_id) == ("gitlab_ci", R("gitlab.com/g/p"), "main", None)


# --- GitHub event payloads -----------------------------------------------------------------------


def _github_pr_env(event_path, event_name="pull_request_target", ref="refs/heads/main"):
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_EVENT_NAME": event_name,
        "GITHUB_EVENT_PATH": str(event_path),
        "GITHUB_REF": ref,
        "GITHUB_HEAD_REF": "feat",
        "GITHUB_SHA": SHA_A,
    }


def test_github_pull_request_target_reads_number_and_head_from_event(tmp_path):
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"action": "opened", "pull_request": {"number": 77, "head": {"sha": SHA_B}}}))
    ctx = detect(_github_pr_env(event), use_git=False)
    assert (ctx.branch, ctx.sha, ctx.pr) == ("feat", SHA_B, "77")


def test_github_pull_request_prefers_head_sha_over_merge_commit(tmp_path):
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 42, "head": {"sha": SHA_B}}}))
    ctx = detect(_github_pr_env(event, "pull_request", "refs/pull/42/merge"), use_git=False)
    assert (ctx.branch, ctx.sha, ctx.pr) == ("feat", SHA_B, "42")


def test_github_push_event_file_is_not_consulted(tmp_path):
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 42, "head": {"sha": SHA_B}}}))
    ctx = detect(_github_pr_env(event, "push"), use_git=False)
    assert (ctx.sha, ctx.pr) == (SHA_A, None)


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"",
        b"\xff\xfe",
        b"[]",
        b"null",
        b'{"pull_request": []}',
        b'{"pull_request": {"number": "77", "head": {"sha": 5}}}',
        b'{"pull_request": {"number": true, "head": "x"}}',
        b'{"pull_request": {"number": 1.5}}',
        None,  # missing file
        "dir",  # a directory
    ],
)
def test_github_bad_event_file_is_ignored(tmp_path, content):
    event = tmp_path / "event.json"
    if content == "dir":
        event.mkdir()
    elif content is not None:
        event.write_bytes(content)
    ctx = detect(_github_pr_env(event), use_git=False)
    assert (ctx.platform, ctx.branch, ctx.sha, ctx.pr) == ("github_actions", "feat", SHA_A, None)


# --- credentials ---------------------------------------------------------------------------------


def _leaks(ctx: CIContext, secret: str) -> bool:
    seen = [repr(ctx), repr(ctx.tags()), str(ctx.repo), repr(ctx.repo and ctx.repo.to_wire())]
    return any(secret in s for s in seen)


def test_gitlab_job_token_never_leaks():
    env = {
        "GITLAB_CI": "true",
        "CI_REPOSITORY_URL": "https://gitlab-ci-token:SECRET@gitlab.example.com/grp/proj.git",
        "CI_COMMIT_BRANCH": "main",
        "CI_PIPELINE_URL": "https://gitlab-ci-token:SECRET@gitlab.example.com/grp/proj/-/pipelines/1",
    }
    ctx = detect(env, use_git=False)
    assert ctx.repo == R("gitlab.example.com/grp/proj")
    assert ctx.repo_source == "CI_REPOSITORY_URL"
    assert ctx.url == "https://gitlab.example.com/grp/proj/-/pipelines/1"
    assert not _leaks(ctx, "SECRET")


@pytest.mark.parametrize(("env", "expected"), CI_CASES)
def test_no_fixture_leaks_secret(env, expected):
    assert not _leaks(detect(env, use_git=False), "SECRET")


def test_trunk_repo_url_credentials_are_dropped():
    ctx = detect({"TRUNK_REPO_URL": "https://u:SECRET@github.com/o/r.git"}, use_git=False)
    assert ctx.repo == R("github.com/o/r") and not _leaks(ctx, "SECRET")


# --- overrides -----------------------------------------------------------------------------------

GITHUB_ENV = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": "octo/hello",
    "GITHUB_REF": "refs/pull/3/merge",
    "GITHUB_HEAD_REF": "feat",
    "GITHUB_SHA": SHA_A,
    "GITHUB_RUN_ID": "1",
}


@pytest.mark.parametrize(
    ("url", "expected"),
    [("git@github.com:other/repo.git", "github.com/other/repo"), ("github.com/a/b", "github.com/a/b")],
)
def test_trunk_repo_url_wins(url, expected):
    ctx = detect({**GITHUB_ENV, "TRUNK_REPO_URL": url}, use_git=False)
    assert (ctx.repo, ctx.repo_source) == (R(expected), "TRUNK_REPO_URL")


def test_unparseable_trunk_repo_url_falls_back_to_ci():
    ctx = detect({**GITHUB_ENV, "TRUNK_REPO_URL": "/srv/local/repo"}, use_git=False)
    assert (ctx.repo, ctx.repo_source) == (R("github.com/octo/hello"), "GITHUB_REPOSITORY")


def test_head_and_pr_overrides_win():
    env = {**GITHUB_ENV, "TRUNK_REPO_HEAD_BRANCH": "refs/heads/mine", "TRUNK_REPO_HEAD_SHA": SHA_C,
           "TRUNK_PR_NUMBER": "999"}
    ctx = detect(env, use_git=False)
    assert (ctx.branch, ctx.sha, ctx.pr) == ("mine", SHA_C, "999")
    assert (ctx.platform, ctx.run_id) == ("github_actions", "1")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("My CI-System 2", "my_ci_system_2"), ("Jenkins", "jenkins"), ("custom", "custom"), ("---", "github_actions"),
     ("", "github_actions")],
)
def test_platform_override(value, expected):
    ctx = detect({**GITHUB_ENV, "TRUNK_TRACE_PLATFORM": value}, use_git=False)
    assert ctx.platform == expected
    assert ctx.repo == R("github.com/octo/hello")  # the fields still come from the detected CI


def test_platform_override_outside_ci():
    assert detect({"TRUNK_TRACE_PLATFORM": "build_farm"}, use_git=False).platform == "build_farm"


# --- tags ------------------------------------------------------------------------------------------


def test_tags_order_and_keys():
    ctx = CIContext(platform="x", repo=R("github.com/o/r"), repo_source="git", branch="b", sha="s", pr="1",
                    run_id="r", run_attempt="2", job="j", runner="m", url="u")
    assert ctx.tags() == [("branch", "b"), ("sha", "s"), ("pr", "1"), ("ci.run_id", "r"),
                          ("ci.run_attempt", "2"), ("ci.job", "j"), ("ci.runner", "m"), ("ci.url", "u")]


def test_tags_only_known():
    assert CIContext(platform="local", sha="s", job="j").tags() == [("sha", "s"), ("ci.job", "j")]
    assert CIContext(platform="local").tags() == []


# --- never raising ---------------------------------------------------------------------------------

_KNOWN_NAMES = sorted(
    {
        name
        for spec in _ci._SPECS
        for name in [m for m, _ in spec.markers] + [s for s in spec.branch + spec.sha + spec.pr if isinstance(s, str)]
    }
    | {"TRUNK_REPO_URL", "TRUNK_TRACE_PLATFORM", "GITHUB_EVENT_PATH", "GITHUB_EVENT_NAME", "GITHUB_REPOSITORY",
       "GITHUB_SERVER_URL", "CI_SERVER_HOST", "CI_PROJECT_PATH", "BUILDKITE_RETRY_COUNT", "CI",
       "CODEBUILD_WEBHOOK_TRIGGER", "BITBUCKET_PIPELINE_UUID", "CIRCLE_PULL_REQUEST", "GITHUB_REF"}
)


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(_KNOWN_NAMES), st.one_of(st.text(max_size=30), st.sampled_from(
    ["true", "false", "", "woodpecker", "drone", "refs/tags/x", "refs/pull/1/merge", "{x}", "99", "/",
     "pr/", "branch/", "https://u:p@h/o/r", "\x00", "."]))))
def test_detect_never_raises(env):
    ctx = detect(env, use_git=False)
    assert isinstance(ctx, CIContext) and isinstance(ctx.platform, str) and ctx.platform
    assert all(isinstance(v, str) and v for _, v in ctx.tags())


@pytest.mark.parametrize("env", [{"CI": None, "GITHUB_ACTIONS": 1}, {1: "x"}, {"BUILDKITE": "true",
                                 "BUILDKITE_RETRY_COUNT": "\u0663"}])
def test_detect_tolerates_odd_mappings(env):
    assert isinstance(detect(env, use_git=False), CIContext)


def test_detect_with_missing_cwd(tmp_path):
    ctx = detect({}, cwd=str(tmp_path / "nope"))
    assert ctx == CIContext(platform="local")


# --- unsupported host warning -----------------------------------------------------------------------


def test_warn_if_unsupported_host_logs_once(caplog):
    caplog.set_level(logging.WARNING, logger="trunk_trace")
    assert warn_if_unsupported_host(R("github.com/o/r")) is False
    assert warn_if_unsupported_host(None) is False
    assert caplog.records == []
    assert warn_if_unsupported_host(R("gitlab.com/g/p")) is True
    assert warn_if_unsupported_host(R("bitbucket.org/w/s")) is True
    assert len(caplog.records) == 1
    assert "github.com" in caplog.records[0].getMessage()
    assert "gitlab.com/g/p" in caplog.records[0].getMessage()


def test_detect_does_not_log(caplog):
    caplog.set_level(logging.DEBUG)
    env = {"GITLAB_CI": "true", "CI_SERVER_HOST": "gitlab.com", "CI_PROJECT_PATH": "g/p"}
    for _ in range(3):
        assert detect(env, use_git=False).repo == R("gitlab.com/g/p")
    assert caplog.records == []


# --- git ---------------------------------------------------------------------------------------------

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")


def git(cwd, *args) -> str:
    done = subprocess.run(
        [GIT, "-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    )
    return done.stdout.strip()


@pytest.fixture
def clean_git_env(monkeypatch, tmp_path):
    # the developer's config (insteadOf, templates) and a hook's GIT_DIR must not leak in
    for name in list(os.environ):
        if name.startswith("GIT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def make_repo(path: Path, remote: str | None = "https://github.com/o/r.git", branch: str = "main") -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q")
    git(path, "symbolic-ref", "HEAD", f"refs/heads/{branch}")
    if remote:
        git(path, "remote", "add", "origin", remote)
    git(path, "commit", "-q", "--allow-empty", "-m", "one")
    return path


def detect_without_git(monkeypatch, tmp_path, cwd, env=None) -> CIContext:
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    with monkeypatch.context() as m:
        m.setenv("PATH", str(empty))
        assert shutil.which("git") is None
        return detect(env or {}, cwd=str(cwd))


def _scenario_normal(tmp_path):
    repo = make_repo(tmp_path / "repo", branch="feature/x")
    return repo, dict(repo=R("github.com/o/r"), branch="feature/x", sha=git(repo, "rev-parse", "HEAD"))


def _scenario_subdirectory(tmp_path):
    repo = make_repo(tmp_path / "repo")
    (repo / "a" / "b").mkdir(parents=True)
    return repo / "a" / "b", dict(repo=R("github.com/o/r"), branch="main", sha=git(repo, "rev-parse", "HEAD"))


def _scenario_detached(tmp_path):
    repo = make_repo(tmp_path / "repo")
    git(repo, "commit", "-q", "--allow-empty", "-m", "two")
    git(repo, "checkout", "-q", "--detach", "HEAD~1")
    return repo, dict(repo=R("github.com/o/r"), branch=None, sha=git(repo, "rev-parse", "HEAD"))


def _scenario_worktree(tmp_path):
    repo = make_repo(tmp_path / "repo")
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "wt-branch", str(wt))
    git(wt, "commit", "-q", "--allow-empty", "-m", "in worktree")
    sha = git(wt, "rev-parse", "HEAD")
    assert sha != git(repo, "rev-parse", "HEAD")
    assert (wt / ".git").is_file()
    return wt, dict(repo=R("github.com/o/r"), branch="wt-branch", sha=sha)


def _scenario_detached_worktree(tmp_path):
    repo = make_repo(tmp_path / "repo")
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "--detach", str(wt))
    return wt, dict(repo=R("github.com/o/r"), branch=None, sha=git(repo, "rev-parse", "HEAD"))


def _scenario_credentials(tmp_path):
    repo = make_repo(tmp_path / "repo", remote="https://user:SECRET@GitLab.example.com:8443/grp/sub/proj.git")
    return repo, dict(repo=R("gitlab.example.com/grp/sub/proj"), branch="main", sha=git(repo, "rev-parse", "HEAD"))


def _scenario_packed(tmp_path):
    repo = make_repo(tmp_path / "repo", branch="release/1")
    git(repo, "tag", "-a", "-m", "tag", "v1")  # gives packed-refs a peeled "^" line
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "release" / "1").exists()
    assert "refs/heads/release/1" in (repo / ".git" / "packed-refs").read_text()
    return repo, dict(repo=R("github.com/o/r"), branch="release/1", sha=git(repo, "rev-parse", "HEAD"))


def _scenario_other_remotes(tmp_path):
    repo = make_repo(tmp_path / "repo", remote=None)
    git(repo, "remote", "add", "zeta", "git@github.com:z/z.git")
    git(repo, "remote", "add", "upstream", "git@github.com:up/r.git")
    return repo, dict(repo=R("github.com/up/r"), branch="main", sha=git(repo, "rev-parse", "HEAD"))


def _scenario_no_remote(tmp_path):
    repo = make_repo(tmp_path / "repo", remote=None)
    return repo, dict(repo=None, branch="main", sha=git(repo, "rev-parse", "HEAD"))


def _scenario_unborn(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "symbolic-ref", "HEAD", "refs/heads/trunk")
    git(repo, "remote", "add", "origin", "https://github.com/o/r")
    return repo, dict(repo=R("github.com/o/r"), branch="trunk", sha=None)


def _scenario_not_a_repo(tmp_path):
    (tmp_path / "plain").mkdir()
    return tmp_path / "plain", dict(repo=None, branch=None, sha=None)


def _scenario_quoted_config(tmp_path):
    repo = make_repo(tmp_path / "repo", remote=None)
    with open(repo / ".git" / "config", "a") as f:
        f.write('[Remote "origin"]  # a comment\n\tURL = "git@github.com:q/r.git" ; trailing\n'
                '\turl = https://github.com/second/url\n')
    return repo, dict(repo=R("github.com/q/r"), branch="main", sha=git(repo, "rev-parse", "HEAD"))


GIT_SCENARIOS = [
    _scenario_normal, _scenario_subdirectory, _scenario_detached, _scenario_worktree,
    _scenario_detached_worktree, _scenario_credentials, _scenario_packed, _scenario_other_remotes,
    _scenario_no_remote, _scenario_unborn, _scenario_not_a_repo, _scenario_quoted_config,
]


@needs_git
@pytest.mark.usefixtures("clean_git_env")
@pytest.mark.parametrize("scenario", GIT_SCENARIOS, ids=lambda f: f.__name__[len("_scenario_"):])
def test_git_cli_and_reader_agree(monkeypatch, tmp_path, scenario):
    cwd, expected = scenario(tmp_path)
    source = "git" if expected["repo"] else None
    want = CIContext(platform="local", repo_source=source, **expected)

    assert detect({}, cwd=str(cwd)) == want
    assert detect_without_git(monkeypatch, tmp_path, cwd) == want
    for ctx in (detect({}, cwd=str(cwd)), detect_without_git(monkeypatch, tmp_path, cwd)):
        assert not _leaks(ctx, "SECRET")


def _git_processes_started(cwd: Path) -> tuple[int, str]:
    """(processes started, sha found) by detect() at *cwd*, seen by an audit hook in a fresh interpreter."""
    code = (
        "import sys\n"
        "started = []\n"
        "sys.addaudithook(lambda event, args: started.append(args) if event == 'subprocess.Popen' else None)\n"
        "from trunk_trace._ci import detect\n"
        "context = detect({}, cwd=sys.argv[1])\n"
        "print(len(started), context.sha)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    out = subprocess.run([sys.executable, "-c", code, str(cwd)], env=env, capture_output=True, text=True, check=True)
    count, sha = out.stdout.split()
    return int(count), sha


@needs_git
@pytest.mark.usefixtures("clean_git_env")
def test_git_runs_only_in_a_checkout(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    assert _git_processes_started(plain) == (0, "None")  # nothing to ask git about: no fork, no exec
    repo = make_repo(tmp_path / "repo")
    started, sha = _git_processes_started(repo)
    assert started > 0 and sha == git(repo, "rev-parse", "HEAD")


@needs_git
@pytest.mark.usefixtures("clean_git_env")
def test_git_cli_is_preferred_for_insteadof(monkeypatch, tmp_path):
    # only the CLI applies url.<base>.insteadOf: this shows which path answered
    repo = make_repo(tmp_path / "repo", remote="gh:o/r")
    git(repo, "config", "url.https://github.com/.insteadOf", "gh:")
    assert detect({}, cwd=str(repo)).repo == R("github.com/o/r")
    assert detect_without_git(monkeypatch, tmp_path, repo).repo == R("gh/o/r")


@needs_git
@pytest.mark.usefixtures("clean_git_env")
def test_git_fills_what_the_ci_lacks(tmp_path):
    repo = make_repo(tmp_path / "repo", branch="topic")
    env = {"TEAMCITY_VERSION": "2023.11", "BUILD_VCS_NUMBER": SHA_C, "BUILD_NUMBER": "4"}
    ctx = detect(env, cwd=str(repo))
    assert (ctx.platform, ctx.repo, ctx.repo_source) == ("teamcity", R("github.com/o/r"), "git")
    assert (ctx.branch, ctx.sha, ctx.run_id) == ("topic", SHA_C, "4")  # the CI's sha wins over git's


@needs_git
@pytest.mark.usefixtures("clean_git_env")
def test_ci_repo_wins_over_git(tmp_path):
    repo = make_repo(tmp_path / "repo", remote="https://github.com/fork/r.git")
    ctx = detect(GITHUB_ENV, cwd=str(repo))
    assert (ctx.repo, ctx.repo_source, ctx.branch, ctx.sha) == (
        R("github.com/octo/hello"), "GITHUB_REPOSITORY", "feat", SHA_A)


@needs_git
@pytest.mark.usefixtures("clean_git_env")
def test_overrides_win_over_git_and_use_git_false_skips_it(tmp_path):
    repo = make_repo(tmp_path / "repo")
    env = {"TRUNK_REPO_HEAD_SHA": SHA_C, "TRUNK_REPO_URL": "github.com/x/y"}
    ctx = detect(env, cwd=str(repo))
    assert (ctx.repo, ctx.repo_source, ctx.branch, ctx.sha) == (R("github.com/x/y"), "TRUNK_REPO_URL", "main", SHA_C)
    assert detect({}, cwd=str(repo), use_git=False) == CIContext(platform="local")


@needs_git
@pytest.mark.usefixtures("clean_git_env")
def test_trunk_repo_root_is_where_git_looks(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "repo")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert detect({}).repo is None
    assert detect({"TRUNK_REPO_ROOT": str(repo)}).repo == R("github.com/o/r")
    assert detect({"TRUNK_REPO_ROOT": str(tmp_path / "elsewhere")}, cwd=str(repo)).repo == R("github.com/o/r")


def _fake_git(tmp_path: Path, body: str) -> Path:
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    script = bin_dir / "git"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return bin_dir


@needs_git
@pytest.mark.skipif(sys.platform == "win32", reason="shell script stands in for git")
@pytest.mark.usefixtures("clean_git_env")
@pytest.mark.parametrize("body", ["echo 'fatal: detected dubious ownership' >&2; exit 128",
                                  f"exec {shutil.which('sleep')} 30", "echo not-a-sha"])
def test_failing_or_hanging_git_falls_back_to_reading(monkeypatch, tmp_path, body):
    repo = make_repo(tmp_path / "repo", branch="b")
    sha = git(repo, "rev-parse", "HEAD")
    monkeypatch.setenv("PATH", str(_fake_git(tmp_path, body)))
    start = time.monotonic()
    ctx = detect({}, cwd=str(repo))
    assert time.monotonic() - start < 6
    assert (ctx.repo, ctx.branch, ctx.sha) == (R("github.com/o/r"), "b", sha)


def test_reader_on_hand_made_git_dir(monkeypatch, tmp_path):
    # no git involved at all: the layout git documents, written by hand
    gitdir = tmp_path / "repo" / ".git"
    (gitdir / "refs" / "heads").mkdir(parents=True)
    (gitdir / "HEAD").write_text("ref: refs/heads/dev\n")
    (gitdir / "refs" / "heads" / "alias").write_text("ref: refs/heads/dev\n")
    (gitdir / "packed-refs").write_text(
        f"# pack-refs with: peeled fully-peeled sorted\n{SHA_B} refs/heads/dev\n{SHA_C} refs/tags/v1\n^{SHA_A}\n"
    )
    (gitdir / "config").write_text(
        '[core]\n\tbare = false\n[remote "up\\"stream"]\n\turl = https://github.com/up/r\n'
        "[remote.origin]\n\turl = git@github.com:o/r.git # comment\n"
    )
    ctx = detect_without_git(monkeypatch, tmp_path, tmp_path / "repo")
    assert (ctx.repo, ctx.branch, ctx.sha) == (R("github.com/o/r"), "dev", SHA_B)
    (gitdir / "HEAD").write_text("ref: refs/heads/alias\n")  # a symbolic ref to a packed ref
    assert detect_without_git(monkeypatch, tmp_path, tmp_path / "repo").sha == SHA_B
    (gitdir / "HEAD").write_text("ref: refs/heads/../../../etc/passwd\n")
    assert detect_without_git(monkeypatch, tmp_path, tmp_path / "repo").sha is None
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / ".git").write_text("not a gitdir line")
    assert detect_without_git(monkeypatch, tmp_path, tmp_path / "broken") == CIContext(platform="local")


@needs_git
def test_import_is_lazy(tmp_path):
    # a stand-in git on PATH records any call: importing must not make one, detect must
    marker = tmp_path / "git-was-run"
    bin_dir = _fake_git(tmp_path, f": > '{marker}'; exit 1")
    code = (
        "import os, sys, trunk_trace._ci as ci\n"
        "assert not os.path.exists(sys.argv[1])\n"
        "ci.detect({}, cwd=sys.argv[2])\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {"PATH": str(bin_dir), "PYTHONPATH": str(root)}
    checkout = tmp_path / "checkout"
    (checkout / ".git").mkdir(parents=True)  # outside a checkout, detect asks no git at all
    done = subprocess.run([sys.executable, "-c", code, str(marker), str(checkout)], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert marker.exists()
