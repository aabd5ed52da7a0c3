"""CI platform, repository and run detection.

Pure functions over an environ mapping, plus a git lookup for what the environment lacks.
Nothing runs at import: no env reads, no git, no logging.

Precedence, per field:

* platform: ``TRUNK_TRACE_PLATFORM`` (lower-cased, runs of other characters turned into ``_``;
  ignored when nothing is left) -> Forgejo (``FORGEJO_ACTIONS``, ``forgejo_actions``) -> Gitea
  (``GITEA_ACTIONS``, ``gitea_actions``) -> act (``ACT``, ``act``) -> the thirteen CI systems of
  ``_SPECS`` -> ``ci`` when ``CI`` (or, without ``CI``, ``CONTINUOUS_INTEGRATION``) is true-ish ->
  ``local``. The look-alikes come first because they also set ``GITHUB_ACTIONS``; Forgejo's runner
  descends from Gitea's, which descends from act, hence that order. ``CI=false`` only vetoes the
  generic ``ci``: a vendor's own marker still wins, because people set ``CI=false`` inside real CI
  jobs to change the behaviour of other tools (create-react-app turns warnings into errors).
  The override renames the platform only; the fields are still read from the detected system.
* repo: ``TRUNK_REPO_URL`` -> the CI's own variables -> git -> None.
* branch, sha, pr: ``TRUNK_REPO_HEAD_BRANCH`` / ``TRUNK_REPO_HEAD_SHA`` / ``TRUNK_PR_NUMBER`` ->
  the CI's variables -> git (branch and sha only) -> None.

On a pull request, ``branch`` and ``sha`` describe the PR's source (head) where the CI exposes
it, not the target branch or the CI's test-merge commit, as Trunk's analytics-cli and ddtrace do.
``run_attempt`` counts from 1 (Buildkite's zero-based retry count is shifted). Empty or
whitespace-only variables count as absent. No run URL is built for the GitHub look-alikes:
their web routes differ between versions.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Mapping, Optional, Union
from urllib.parse import urlsplit

import attrs

__all__ = ["CIContext", "Repo", "detect", "parse_remote", "redact_url", "warn_if_unsupported_host"]



# --- git remotes --------------------------------------------------------------------------


@attrs.frozen
class Repo:
    host: str
    owner: str
    name: str

    def to_wire(self) -> dict:
        return {"host": self.host, "owner": self.owner, "name": self.name}

    def __str__(self) -> str:
        return f"{self.host}/{self.owner}/{self.name}"


_URL_SCHEMES = frozenset({"http", "https", "ssh", "git", "git+ssh", "ssh+git"})
# git's rule: scp-like only when no "/" comes before the first ":"
_SCP = re.compile(r"^(?:[^@/]+@)?([^:/]+):(?!//)(.+)$")
_HOST = re.compile(r"[a-z0-9](?:[a-z0-9_.-]*[a-z0-9])?")
_AZURE_SSH_HOSTS = ("ssh.dev.azure.com", "vs-ssh.visualstudio.com")
_URL_USERINFO = re.compile(r"^(\s*[A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")
# git has no password in scp syntax, but a "user:secret@host:path" string must not leak either
_SCP_SECRET = re.compile(r"^(\s*)[^@/:]*:[^@/]*@(?=[^:/]+:)")


def parse_remote(url: str) -> Repo | None:
    """Parse any git remote form (or ``host/owner/name``) into a Repo; None if it names no host."""
    try:
        return _parse_remote(url)
    except Exception:
        return None


def _parse_remote(url: str) -> Repo | None:
    if not isinstance(url, str):
        return None
    text = url.strip()
    if not text or not text.isprintable() or " " in text:
        return None
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme.lower() not in _URL_SCHEMES:
            return None
        host, path = parts.hostname or "", parts.path  # hostname drops userinfo and port
    else:
        scp = _SCP.match(text)
        if scp:
            host, path = scp.group(1).lower(), scp.group(2)
            if len(host) == 1:  # "C:\..." or "C:/...": a Windows drive, not a host
                return None
        elif text.startswith(("/", ".", "~")) or "\\" in text:
            return None
        else:
            host, _, path = text.partition("/")
            host = host.lower()
            if "." not in host:  # "dir/sub/repo" is a relative path, not host/owner/name
                return None
    if not _HOST.fullmatch(host):
        return None
    path = path.strip("/")
    if path.endswith(".git"):
        path = path[:-4]
    segments = [s for s in path.split("/") if s]
    if len(segments) >= 2 and segments[-2] == "_git":  # Azure Repos https: org/project/_git/repo
        del segments[-2]
    elif segments and segments[0] == "v3" and host in _AZURE_SSH_HOSTS:
        del segments[0]  # Azure Repos ssh: v3/org/project/repo
    if len(segments) < 2 or any(s in (".", "..") for s in segments):
        return None
    return Repo(host=host, owner="/".join(segments[:-1]), name=segments[-1])


def redact_url(url: str) -> str:
    """Drop userinfo (``user:password@``, ``token@``) from a URL; everything else is kept."""
    try:
        if "://" in url:
            return _URL_USERINFO.sub(r"\1", url, count=1)
        return _SCP_SECRET.sub(r"\1", url, count=1)
    except Exception:
        return url if isinstance(url, str) else ""


def warn_if_unsupported_host(repo: Repo | None) -> bool:
    """Return whether ``repo`` is on a host other than github.com; log that once per process."""
    if repo is None or repo.host == "github.com":
        return False
    from ._report import report_once

    report_once(
        "unsupported-host",
        "repository %s is not on github.com; the Trunk CI Analytics API documents only "
        "github.com as repo host and may reject these events (set TRUNK_REPO_URL to override)",
        repo,
    )
    return True


# --- the context ----------------------------------------------------------------------------


_TAG_FIELDS = (
    ("branch", "branch"),
    ("sha", "sha"),
    ("pr", "pr"),
    ("ci.run_id", "run_id"),
    ("ci.run_attempt", "run_attempt"),
    ("ci.job", "job"),
    ("ci.runner", "runner"),
    ("ci.url", "url"),
)


@attrs.frozen
class CIContext:
    platform: str
    repo: Optional[Repo] = None
    repo_source: Optional[str] = None
    branch: Optional[str] = None
    sha: Optional[str] = None
    pr: Optional[str] = None
    run_id: Optional[str] = None
    run_attempt: Optional[str] = None
    job: Optional[str] = None
    runner: Optional[str] = None
    url: Optional[str] = None

    def tags(self) -> list[tuple[str, str]]:
        """The known values as event tags, in a fixed order."""
        return [(key, v) for key, field in _TAG_FIELDS if (v := getattr(self, field)) is not None]


# --- one small spec per CI system -------------------------------------------------------------

Env = Mapping[str, str]
# a variable name, or a function computing a value from the (cleaned) environment
Source = Union[str, Callable[[Env], Optional[str]]]


def _fmt(template: str) -> Callable[[Env], Optional[str]]:
    """A source filling ``{VAR}`` fields, or None unless every one is set."""
    names = re.findall(r"\{(\w+)\}", template)

    def source(env: Env) -> str | None:
        if not all(n in env for n in names):
            return None
        return re.sub(r"\{(\w+)\}", lambda m: env[m.group(1)].rstrip("/"), template)

    return source


def _match(name: str, pattern: str) -> Callable[[Env], Optional[str]]:
    """A source taking the first group of ``pattern`` searched in variable ``name``."""
    regex = re.compile(pattern)

    def source(env: Env) -> str | None:
        found = regex.search(env.get(name, ""))
        return found.group(1) if found else None

    return source


def _plus_one(name: str) -> Callable[[Env], Optional[str]]:
    def source(env: Env) -> str | None:
        value = env.get(name, "")
        return str(int(value) + 1) if value.isascii() and value.isdigit() else None

    return source


_EVENT_MAX_BYTES = 16 * 1024 * 1024
_PR_HEAD_SHA = "github.event.pull_request.head.sha"  # dotted: cannot clash with a real variable
_PR_NUMBER = "github.event.pull_request.number"


def _github_event(env: Env) -> dict[str, str]:
    """PR head sha and number from the event JSON: pull_request_target has no refs/pull/N ref."""
    path = env.get("GITHUB_EVENT_PATH")
    if not path or not env.get("GITHUB_EVENT_NAME", "").startswith("pull_request"):
        return {}
    try:
        import json

        with open(path, "rb") as f:
            data = f.read(_EVENT_MAX_BYTES + 1)
        if len(data) > _EVENT_MAX_BYTES:
            return {}
        event = json.loads(data)
    except Exception:
        return {}
    pull = event.get("pull_request") if isinstance(event, dict) else None
    if not isinstance(pull, dict):
        return {}
    found = {}
    head = pull.get("head")
    if isinstance(head, dict) and isinstance(head.get("sha"), str):
        found[_PR_HEAD_SHA] = head["sha"].strip()
    number = pull.get("number")
    if isinstance(number, int) and not isinstance(number, bool):
        found[_PR_NUMBER] = str(number)
    return found


@attrs.frozen(kw_only=True)
class _Spec:
    platform: str
    # alternatives: (variable, required lower-cased value, or None for any true-ish value)
    markers: tuple[tuple[str, Optional[str]], ...]
    # (what repo_source reports, source); a bare variable name reports itself
    repo: tuple[Union[str, tuple[str, Source]], ...] = ()
    branch: tuple[Source, ...] = ()
    tag: tuple[str, ...] = ()  # a "branch" equal to one of these is a tag build, not a branch
    sha: tuple[Source, ...] = ()
    pr: tuple[Source, ...] = ()
    run_id: tuple[Source, ...] = ()
    run_attempt: tuple[Source, ...] = ()
    job: tuple[Source, ...] = ()
    runner: tuple[Source, ...] = ()
    url: tuple[Source, ...] = ()
    extra: Optional[Callable[[Env], dict[str, str]]] = None  # synthetic variables, read lazily


_GH_RUN = "{GITHUB_SERVER_URL}/{GITHUB_REPOSITORY}/actions/runs/{GITHUB_RUN_ID}"
_GITHUB = _Spec(
    platform="github_actions",
    markers=(("GITHUB_ACTIONS", None),),
    extra=_github_event,
    repo=(
        ("GITHUB_REPOSITORY", _fmt("{GITHUB_SERVER_URL}/{GITHUB_REPOSITORY}")),
        ("GITHUB_REPOSITORY", _fmt("github.com/{GITHUB_REPOSITORY}")),
    ),
    branch=("GITHUB_HEAD_REF", "GITHUB_REF"),
    sha=(_PR_HEAD_SHA, "GITHUB_SHA"),
    pr=(_match("GITHUB_REF", r"^refs/pull/(\d+)/"), _PR_NUMBER),
    run_id=("GITHUB_RUN_ID",),
    run_attempt=("GITHUB_RUN_ATTEMPT",),
    job=("GITHUB_JOB",),
    runner=("RUNNER_NAME",),
    url=(_fmt(_GH_RUN + "/attempts/{GITHUB_RUN_ATTEMPT}"), _fmt(_GH_RUN)),
)
# their server is not github.com by default, and their run pages are addressed differently
_LOOKALIKE: dict[str, Any] = {"repo": _GITHUB.repo[:1], "url": ()}
_BITBUCKET_RUN = "/pipelines/results/{BITBUCKET_BUILD_NUMBER}"
_AZURE_RUN = "/{SYSTEM_TEAMPROJECTID}/_build/results?buildId={BUILD_BUILDID}"
_UUID = r"^\{?([^{}]+)\}?$"  # Bitbucket wraps its UUIDs in braces
_GCB_CONSOLE = "https://console.cloud.google.com/cloud-build/builds"

_SPECS: tuple[_Spec, ...] = (
    attrs.evolve(
        _GITHUB, platform="forgejo_actions", markers=(("FORGEJO_ACTIONS", None),), **_LOOKALIKE
    ),
    attrs.evolve(_GITHUB, platform="gitea_actions", markers=(("GITEA_ACTIONS", None),), **_LOOKALIKE),
    attrs.evolve(_GITHUB, platform="act", markers=(("ACT", None),), url=()),  # a local run: no page
    _GITHUB,
    _Spec(
        platform="gitlab_ci",
        markers=(("GITLAB_CI", None),),
        # CI_REPOSITORY_URL carries the job token: last, and only ever parsed, never kept
        repo=(
            ("CI_PROJECT_PATH", _fmt("https://{CI_SERVER_HOST}/{CI_PROJECT_PATH}")),
            "CI_PROJECT_URL",
            "CI_REPOSITORY_URL",
        ),
        branch=(
            "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME",
            "CI_EXTERNAL_PULL_REQUEST_SOURCE_BRANCH_NAME",
            "CI_COMMIT_BRANCH",
            "CI_COMMIT_REF_NAME",
        ),
        tag=("CI_COMMIT_TAG",),
        sha=(
            "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA",
            "CI_EXTERNAL_PULL_REQUEST_SOURCE_BRANCH_SHA",
            "CI_COMMIT_SHA",
        ),
        pr=("CI_MERGE_REQUEST_IID", "CI_EXTERNAL_PULL_REQUEST_IID"),
        run_id=("CI_PIPELINE_ID",),
        job=("CI_JOB_NAME",),
        runner=("CI_RUNNER_DESCRIPTION", "CI_RUNNER_ID"),
        url=("CI_PIPELINE_URL",),
    ),
    _Spec(
        platform="jenkins",
        markers=(("JENKINS_URL", None),),  # not BUILD_ID: Cloud Build sets it too
        repo=("GIT_URL", "GIT_URL_1"),
        branch=(
            "CHANGE_BRANCH",
            "ghprbSourceBranch",
            "gitlabSourceBranch",
            "BRANCH_NAME",
            "GIT_LOCAL_BRANCH",
            "GIT_BRANCH",
        ),
        tag=("TAG_NAME",),
        sha=("ghprbActualCommit", "GIT_COMMIT"),
        pr=("CHANGE_ID", "ghprbPullId", "gitlabMergeRequestIid"),
        run_id=("BUILD_TAG", "BUILD_NUMBER"),  # BUILD_NUMBER alone repeats across jobs
        job=("JOB_NAME",),
        runner=("NODE_NAME",),
        url=("BUILD_URL",),
    ),
    _Spec(
        platform="circleci",
        markers=(("CIRCLECI", None),),
        repo=("CIRCLE_REPOSITORY_URL",),
        branch=("CIRCLE_BRANCH",),
        tag=("CIRCLE_TAG",),
        sha=("CIRCLE_SHA1",),
        pr=("CIRCLE_PR_NUMBER", _match("CIRCLE_PULL_REQUEST", r"/(\d+)/?$")),
        run_id=("CIRCLE_WORKFLOW_ID", "CIRCLE_BUILD_NUM"),
        job=("CIRCLE_JOB",),
        url=(
            _fmt("https://app.circleci.com/pipelines/workflows/{CIRCLE_WORKFLOW_ID}"),
            "CIRCLE_BUILD_URL",
        ),
    ),
    _Spec(
        platform="buildkite",
        markers=(("BUILDKITE", None),),
        repo=("BUILDKITE_REPO",),
        branch=("BUILDKITE_BRANCH",),
        tag=("BUILDKITE_TAG",),
        sha=("BUILDKITE_COMMIT",),
        pr=("BUILDKITE_PULL_REQUEST",),
        run_id=("BUILDKITE_BUILD_ID",),
        run_attempt=(_plus_one("BUILDKITE_RETRY_COUNT"),),
        job=("BUILDKITE_LABEL", "BUILDKITE_STEP_KEY"),
        runner=("BUILDKITE_AGENT_NAME",),
        url=("BUILDKITE_BUILD_URL",),
    ),
    _Spec(
        platform="azure_pipelines",
        markers=(("TF_BUILD", None),),
        repo=("BUILD_REPOSITORY_URI",),
        branch=("SYSTEM_PULLREQUEST_SOURCEBRANCH", "BUILD_SOURCEBRANCH"),  # not ...SOURCEBRANCHNAME
        sha=("SYSTEM_PULLREQUEST_SOURCECOMMITID", "BUILD_SOURCEVERSION"),
        pr=("SYSTEM_PULLREQUEST_PULLREQUESTNUMBER", "SYSTEM_PULLREQUEST_PULLREQUESTID"),
        run_id=("BUILD_BUILDID",),
        run_attempt=("SYSTEM_JOBATTEMPT",),
        job=("SYSTEM_JOBDISPLAYNAME", "AGENT_JOBNAME"),
        runner=("AGENT_NAME",),
        url=(
            _fmt("{SYSTEM_TEAMFOUNDATIONSERVERURI}" + _AZURE_RUN),
            _fmt("{SYSTEM_COLLECTIONURI}" + _AZURE_RUN),
        ),
    ),
    _Spec(
        platform="bitbucket_pipelines",
        markers=(("BITBUCKET_BUILD_NUMBER", None),),
        repo=(
            "BITBUCKET_GIT_HTTP_ORIGIN",
            ("BITBUCKET_REPO_FULL_NAME", _fmt("bitbucket.org/{BITBUCKET_REPO_FULL_NAME}")),
        ),
        branch=("BITBUCKET_BRANCH",),
        tag=("BITBUCKET_TAG",),
        sha=("BITBUCKET_COMMIT",),
        pr=("BITBUCKET_PR_ID",),
        run_id=(_match("BITBUCKET_PIPELINE_UUID", _UUID), "BITBUCKET_BUILD_NUMBER"),
        job=(_match("BITBUCKET_STEP_UUID", _UUID),),  # Bitbucket exports no step name
        url=(
            _fmt("https://bitbucket.org/{BITBUCKET_WORKSPACE}/{BITBUCKET_REPO_SLUG}" + _BITBUCKET_RUN),
            _fmt("https://bitbucket.org/{BITBUCKET_REPO_FULL_NAME}" + _BITBUCKET_RUN),
        ),
    ),
    _Spec(
        platform="travis_ci",
        markers=(("TRAVIS", None),),
        repo=(("TRAVIS_REPO_SLUG", _fmt("github.com/{TRAVIS_REPO_SLUG}")),),  # Travis names no host
        branch=("TRAVIS_PULL_REQUEST_BRANCH", "TRAVIS_BRANCH"),  # TRAVIS_BRANCH is the PR's target
        tag=("TRAVIS_TAG",),
        sha=("TRAVIS_PULL_REQUEST_SHA", "TRAVIS_COMMIT"),
        pr=("TRAVIS_PULL_REQUEST",),
        run_id=("TRAVIS_BUILD_ID",),
        job=("TRAVIS_JOB_NAME", "TRAVIS_JOB_NUMBER"),
        url=("TRAVIS_BUILD_WEB_URL",),
    ),
    _Spec(
        # TeamCity exports little by default: repo and branch come from git
        platform="teamcity",
        markers=(("TEAMCITY_VERSION", None),),
        sha=("BUILD_VCS_NUMBER",),
        pr=("TEAMCITY_PULLREQUEST_NUMBER",),  # only when the user maps it, as ddtrace expects
        run_id=("BUILD_NUMBER",),
        job=("TEAMCITY_BUILDCONF_NAME",),
        url=("BUILD_URL",),  # likewise user-defined
    ),
    _Spec(
        # before Drone: older Woodpecker releases exported DRONE_* variables for compatibility
        platform="woodpecker",
        markers=(("CI", "woodpecker"),),
        repo=(("CI_REPO", _fmt("{CI_FORGE_URL}/{CI_REPO}")), "CI_REPO_CLONE_URL", "CI_REPO_URL"),
        branch=("CI_COMMIT_SOURCE_BRANCH", "CI_COMMIT_BRANCH"),
        tag=("CI_COMMIT_TAG",),
        sha=("CI_COMMIT_SHA",),
        pr=("CI_COMMIT_PULL_REQUEST",),
        run_id=("CI_PIPELINE_NUMBER", "CI_BUILD_NUMBER"),  # CI_BUILD_*: before Woodpecker 1.0
        job=("CI_WORKFLOW_NAME",),
        url=("CI_PIPELINE_URL", "CI_BUILD_LINK"),
    ),
    _Spec(
        platform="drone",
        markers=(("DRONE", None), ("CI", "drone")),
        repo=("DRONE_GIT_HTTP_URL", "DRONE_REMOTE_URL", "DRONE_REPO_LINK", "DRONE_GIT_SSH_URL"),
        branch=("DRONE_SOURCE_BRANCH", "DRONE_COMMIT_BRANCH", "DRONE_BRANCH"),
        tag=("DRONE_TAG",),
        sha=("DRONE_COMMIT_SHA", "DRONE_COMMIT"),
        pr=("DRONE_PULL_REQUEST",),
        run_id=("DRONE_BUILD_NUMBER",),
        job=("DRONE_STAGE_NAME",),
        runner=("DRONE_STAGE_MACHINE",),
        url=("DRONE_BUILD_LINK",),
    ),
    _Spec(
        platform="aws_codebuild",
        markers=(("CODEBUILD_BUILD_ID", None),),
        repo=("CODEBUILD_SOURCE_REPO_URL",),
        branch=("CODEBUILD_WEBHOOK_HEAD_REF", _match("CODEBUILD_WEBHOOK_TRIGGER", r"^branch/(.+)$")),
        sha=("CODEBUILD_RESOLVED_SOURCE_VERSION",),
        pr=(
            _match("CODEBUILD_WEBHOOK_TRIGGER", r"^pr/(\d+)$"),
            _match("CODEBUILD_SOURCE_VERSION", r"^pr/(\d+)$"),
        ),
        run_id=("CODEBUILD_BUILD_ID",),
        job=(_match("CODEBUILD_BUILD_ID", r"^([^:]+):"),),  # the project name
        url=(
            "CODEBUILD_PUBLIC_BUILD_URL",
            _fmt(
                "https://console.aws.amazon.com/codebuild/home?region={AWS_REGION}"
                "#/builds/{CODEBUILD_BUILD_ID}/view/new"
            ),
        ),
    ),
    _Spec(
        # substitutions reach steps only when mapped (env: or automapSubstitutions); the
        # repo's host is never named, so the repo comes from git
        platform="google_cloud_build",
        markers=(("BUILDER_OUTPUT", None),),
        branch=("_HEAD_BRANCH", "BRANCH_NAME"),
        tag=("TAG_NAME",),
        sha=("COMMIT_SHA", "REVISION_ID"),
        pr=("_PR_NUMBER",),
        run_id=("BUILD_ID",),
        job=("TRIGGER_NAME",),
        url=(
            _fmt(_GCB_CONSOLE + ";region={LOCATION}/{BUILD_ID}?project={PROJECT_ID}"),
            _fmt(_GCB_CONSOLE + "/{BUILD_ID}?project={PROJECT_ID}"),
        ),
    ),
)

_FALSE = frozenset({"false", "0", "no", "off"})
_HEX = re.compile(r"[0-9a-fA-F]{1,64}")
_DIGITS = re.compile(r"[0-9]+")


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() not in _FALSE


def _matches(spec: _Spec, env: Env) -> bool:
    for name, wanted in spec.markers:
        value = env.get(name)
        if value is not None and (value.lower() == wanted if wanted else _truthy(value)):
            return True
    return False


def _value(env: Env, source: Source) -> str | None:
    return env.get(source) if isinstance(source, str) else source(env)


def _first(
    env: Env, sources: tuple[Source, ...], norm: Callable[[str], Optional[str]] | None = None
) -> str | None:
    """The first source giving a value that survives ``norm``."""
    for source in sources:
        raw = _value(env, source)
        if raw:
            value = norm(raw) if norm else raw
            if value:
                return value
    return None


def _clean_branch(value: str | None) -> str | None:
    if not value:
        return None
    if value.startswith("refs/heads/"):
        value = value[len("refs/heads/"):]
    elif value.startswith("refs/remotes/"):
        value = value[len("refs/remotes/"):]
    elif value.startswith("refs/"):  # tags, pull/N/merge, merge-requests: not a branch
        return None
    if value.startswith("origin/"):  # Jenkins' GIT_BRANCH names the remote-tracking branch
        value = value[len("origin/"):]
    return value if value and value != "HEAD" else None


def _snake_case(value: str | None) -> str | None:
    """``"GitHub Actions"`` -> ``"github_actions"``; None when nothing usable is left."""
    if not value:
        return None
    return re.sub(r"[^a-z0-9]+", "_", value.lower()).strip("_") or None


def _digits(value: str) -> str | None:
    return value if _DIGITS.fullmatch(value) else None  # drops "false", URLs and other non-numbers


def _hex(value: str) -> str | None:
    return value if _HEX.fullmatch(value) else None  # drops Buildkite's literal "HEAD"


# --- detection ---------------------------------------------------------------------------------


def detect(environ: Mapping[str, str], cwd: str | None = None, *, use_git: bool = True) -> CIContext:
    """Describe the CI run (or local checkout) this process runs in. Never raises.

    ``cwd`` is where git looks (default ``TRUNK_REPO_ROOT``, else the process's working dir);
    git runs only when the environment leaves repo, branch or sha unknown.
    """
    try:
        return _detect(environ, cwd, use_git)
    except Exception:  # detection must never break the build it describes
        return CIContext(platform="local")


def _detect(environ: Mapping[str, str], cwd: str | None, use_git: bool) -> CIContext:
    env = {k: v.strip() for k, v in environ.items() if isinstance(v, str) and v.strip()}
    spec = next((s for s in _SPECS if _matches(s, env)), None)
    if spec is None:
        generic = _truthy(env.get("CI", env.get("CONTINUOUS_INTEGRATION")))
        spec = _Spec(platform="ci" if generic else "local", markers=())
    elif spec.extra is not None:
        env = {**env, **spec.extra(env)}

    repo_source: str | None = "TRUNK_REPO_URL"
    repo = parse_remote(env.get("TRUNK_REPO_URL", ""))
    if repo is None:
        repo, repo_source = _ci_repo(env, spec)

    tag_names = {env[t] for t in spec.tag if t in env}

    def ci_branch(value: str) -> str | None:
        branch = _clean_branch(value)
        return branch if branch not in tag_names else None

    branch = _clean_branch(env.get("TRUNK_REPO_HEAD_BRANCH")) or _first(env, spec.branch, ci_branch)
    sha = env.get("TRUNK_REPO_HEAD_SHA") or _first(env, spec.sha, _hex)
    pr = env.get("TRUNK_PR_NUMBER") or _first(env, spec.pr, _digits)

    if use_git and (repo is None or branch is None or sha is None):
        remote, git_sha, git_branch = _git_lookup(cwd or env.get("TRUNK_REPO_ROOT"))
        if repo is None:
            repo = parse_remote(remote) if remote else None
            repo_source = "git" if repo else None
        sha = sha or git_sha
        branch = branch or _clean_branch(git_branch)

    url = _first(env, spec.url)
    return CIContext(
        platform=_snake_case(env.get("TRUNK_TRACE_PLATFORM")) or spec.platform,
        repo=repo,
        repo_source=repo_source,
        branch=branch,
        sha=sha,
        pr=pr,
        run_id=_first(env, spec.run_id),
        run_attempt=_first(env, spec.run_attempt),
        job=_first(env, spec.job),
        runner=_first(env, spec.runner),
        url=redact_url(url) if url else None,
    )


def _ci_repo(env: Env, spec: _Spec) -> tuple[Repo | None, str | None]:
    for entry in spec.repo:
        label, source = (entry, entry) if isinstance(entry, str) else entry
        raw = _value(env, source)
        repo = parse_remote(raw) if raw else None
        if repo is not None:
            return repo, label
    return None, None


# --- git ---------------------------------------------------------------------------------------

_GIT_BUDGET_S = 2.0
_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


def _git_lookup(cwd: str | None) -> tuple[str | None, str | None, str | None]:
    """(remote URL, HEAD sha, branch) of the checkout at ``cwd``; the URL may hold credentials."""
    try:
        cwd = cwd or os.getcwd()
        if "GIT_DIR" not in os.environ and _find_git_dirs(cwd) is None:
            return None, None, None  # not a checkout: git would only say so, after a fork and exec
        found = _git_cli(cwd)
        return found if found is not None else _git_read(cwd)
    except Exception:
        return None, None, None


def _git_cli(cwd: str) -> tuple[str | None, str | None, str | None] | None:
    """Ask git; None when git is missing, slow or refuses (e.g. "dubious ownership")."""
    import subprocess
    import time

    deadline = time.monotonic() + _GIT_BUDGET_S
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0", LC_ALL="C")

    def git(*args: str) -> str | None:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=max(deadline - time.monotonic(), 0.01),
        )
        return done.stdout.strip() if done.returncode == 0 else None

    try:
        sha = git("rev-parse", "--verify", "-q", "HEAD")
        if sha is None or not _SHA.fullmatch(sha):
            return None
        branch = git("symbolic-ref", "--short", "-q", "HEAD")  # exit 1 when detached
        # get-url, unlike `config remote.origin.url`, applies url.<base>.insteadOf rewrites
        remote = git("remote", "get-url", "origin")
        if remote is None:
            names = (git("remote") or "").split()  # sorted by name
            remote = git("remote", "get-url", names[0]) if names else None
    except (OSError, subprocess.SubprocessError):
        return None
    return remote or None, sha, branch or None


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except (OSError, ValueError):
        return ""


def _git_read(cwd: str) -> tuple[str | None, str | None, str | None]:
    """Read ``.git`` directly, running nothing. Ignores includes, insteadOf and reftable."""
    dirs = _find_git_dirs(cwd)
    if dirs is None:
        return None, None, None
    gitdir, common = dirs
    head = _read_text(os.path.join(gitdir, "HEAD")).strip()
    sha = branch = None
    if head.startswith("ref:"):
        ref = head[4:].strip()
        if ref.startswith("refs/heads/") and ref != "refs/heads/.invalid":  # reftable placeholder
            branch = ref[len("refs/heads/"):]
        sha = _resolve_ref(gitdir, common, ref)
    elif _SHA.fullmatch(head):
        sha = head
    remotes = _config_remotes(_read_text(os.path.join(common, "config")))
    url = remotes.get("origin") or next((remotes[n] for n in sorted(remotes)), None)
    return url, sha, branch


def _find_git_dirs(start: str) -> tuple[str, str] | None:
    """(git dir, common dir) for the checkout holding ``start``: they differ in worktrees."""
    path = os.path.abspath(start)
    while True:
        dotgit = os.path.join(path, ".git")
        if os.path.isdir(dotgit):
            return dotgit, _common_dir(dotgit)
        if os.path.isfile(dotgit):  # worktrees and submodules: "gitdir: <path>"
            text = _read_text(dotgit).strip()
            if not text.startswith("gitdir:"):
                return None
            gitdir = os.path.normpath(os.path.join(path, text[len("gitdir:"):].strip()))
            return gitdir, _common_dir(gitdir)
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def _common_dir(gitdir: str) -> str:
    common = _read_text(os.path.join(gitdir, "commondir")).strip()
    return os.path.normpath(os.path.join(gitdir, common)) if common else gitdir


def _resolve_ref(gitdir: str, common: str, ref: str) -> str | None:
    for _ in range(5):  # symbolic refs may chain; a loop must end
        if not ref.startswith("refs/") or ".." in ref.split("/"):
            return None
        # per-worktree refs live in the worktree's git dir, branches in the common dir
        loose = (_read_text(os.path.join(base, *ref.split("/"))).strip() for base in (gitdir, common))
        text = next((t for t in loose if t), "") or _packed_ref(common, ref)
        if not text.startswith("ref:"):
            return text if _SHA.fullmatch(text) else None
        ref = text[4:].strip()
    return None


def _packed_ref(common: str, ref: str) -> str:
    for line in _read_text(os.path.join(common, "packed-refs")).splitlines():
        if line.startswith(("#", "^")):
            continue
        sha, _, name = line.partition(" ")
        if name.strip() == ref:
            return sha.strip()
    return ""


_SECTION = re.compile(r'^\s*\[\s*([A-Za-z0-9.-]+)\s*(?:"((?:[^"\\]|\\.)*)")?\s*\]')
_KEY = re.compile(r"^\s*([A-Za-z][A-Za-z0-9-]*)\s*=(.*)$")
_ESCAPES = {"n": "\n", "t": "\t", "b": "\b"}


def _config_remotes(text: str) -> dict[str, str]:
    """The first ``url`` of each ``[remote "name"]`` section of a git config file."""
    remotes: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        section = _SECTION.match(line)
        if section:
            name, sub = section.group(1), section.group(2)
            if sub is None and "." in name:  # legacy [remote.origin]
                name, _, sub = name.partition(".")
            elif sub is not None:
                sub = re.sub(r"\\(.)", r"\1", sub)
            current = sub if name.lower() == "remote" else None
            continue
        key = _KEY.match(line)
        if current is not None and key and key.group(1).lower() == "url":
            remotes.setdefault(current, _config_value(key.group(2)))
    return {k: v for k, v in remotes.items() if v}


def _config_value(raw: str) -> str:
    out: list[str] = []
    quoted = False
    chars = iter(raw)
    for c in chars:
        if c == '"':
            quoted = not quoted
        elif c == "\\":
            nxt = next(chars, "")
            out.append(_ESCAPES.get(nxt, nxt))
        elif c in "#;" and not quoted:
            break
        else:
            out.append(c)
    return "".join(out).strip()
