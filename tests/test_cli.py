"""The trunk-trace command: run, begin/end, show, doctor (flush has its own tests)."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import clean_env, events_in

from trunk_trace._propagate import span_id, trace_id

CLI = [sys.executable, "-m", "trunk_trace.cli"]


def cli(*args: str, env: dict, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=60, **kwargs)


def test_run_records_the_command_and_keeps_its_status(tmp_path):
    events_file = tmp_path / "e.jsonl"
    env = clean_env(TRUNK_TRACE_FILE=str(events_file))
    ok = cli("run", "--name", "ok", "--tag", "team=build", "--", sys.executable, "-c", "print('hi')", env=env)
    failed = cli("run", "--kind", "lint", "--", sys.executable, "-c", "raise SystemExit(7)", env=env)
    assert (ok.returncode, ok.stdout.strip(), failed.returncode) == (0, "hi", 7)
    assert ok.stderr == ""  # no summary of its own unless asked
    first, second = events_in(events_file)
    assert first["sequence"]["name"] == "ok" and first["sequence"]["kind"] == "command"
    assert {"k": "team", "v": "build"} in first["payload"]["tags"] and {"k": "exit_code", "v": 0} in first["payload"]["tags"]
    assert second["sequence"]["kind"] == "lint" and second["conclusion"] == "FAILURE"
    assert {"k": "exit_code", "v": 7} in second["payload"]["tags"]
    assert second["sequence"]["name"].startswith(shlex.quote(sys.executable))


def test_run_a_missing_command(tmp_path):
    events_file = tmp_path / "e.jsonl"
    result = cli("run", "--", "no-such-command-xyz", env=clean_env(TRUNK_TRACE_FILE=str(events_file)))
    assert result.returncode == 127 and "cannot run 'no-such-command-xyz'" in result.stderr
    (event,) = events_in(events_file)
    assert event["conclusion"] == "FAILURE" and {"k": "exit_code", "v": 127} in event["payload"]["tags"]


@pytest.mark.parametrize(
    "args, words",
    [(["run"], "no command"), (["run", "--tag", "novalue", "--", "true"], "K=V"), (["end"], "begin"),
     (["end", "--conclusion", "meh"], "conclusion"), (["nope"], "invalid choice"), ([], "usage")],
)
def test_usage_errors_exit_2_with_one_line(args, words):
    result = cli(*args, env=clean_env())
    assert result.returncode == 2
    assert words in result.stderr


@pytest.mark.parametrize("command", ["run", "begin", "end", "flush", "upload", "show", "doctor"])
def test_help_everywhere(command):
    result = cli(command, "--help", env=clean_env())
    assert result.returncode == 0 and "usage: trunk-trace" in result.stdout


def test_run_forwards_sigterm_and_exits_like_the_child(tmp_path):
    events_file = tmp_path / "e.jsonl"
    ready = tmp_path / "ready"
    child = textwrap.dedent(f"""
        import pathlib, signal, sys, time
        def stop(signum, frame):
            sys.exit(143)
        signal.signal(signal.SIGTERM, stop)
        pathlib.Path({str(ready)!r}).write_text("x")
        time.sleep(30)
    """)
    process = subprocess.Popen([*CLI, "run", "--name", "long", "--", sys.executable, "-c", child],
                               env=clean_env(TRUNK_TRACE_FILE=str(events_file)), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 143
    (event,) = events_in(events_file)
    assert event["conclusion"] == "CANCELLED" and {"k": "exit_code", "v": 143} in event["payload"]["tags"]


def test_chain_python_run_python(tmp_path):
    """Three processes deep: a Python build, trunk-trace run, and a Python script under it."""
    events_file = tmp_path / "e.jsonl"
    inner = "from trunk_trace import track\nwith track('inner'):\n    pass\n"
    outer = textwrap.dedent(f"""
        import subprocess, sys
        from trunk_trace import track
        with track("build"):
            subprocess.run({[*CLI, 'run', '--name', 'step', '--', sys.executable, '-c', inner]!r}, check=True)
    """)
    result = subprocess.run([sys.executable, "-c", outer], env=clean_env(TRUNK_TRACE_FILE=str(events_file), TRUNK_TRACE_SUMMARY="0"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    by_key = {e["sequence"]["key"]: e for e in events_in(events_file)}
    assert set(by_key) == {"build", "build/step", "build/step/inner"}
    assert by_key["build/step"]["parent"]["eventId"] == by_key["build"]["id"]
    assert by_key["build/step/inner"]["parent"]["eventId"] == by_key["build/step"]["id"]
    assert {e["chainId"] for e in by_key.values()} == {by_key["build"]["id"]}


def test_begin_and_end_across_separate_processes(tmp_path):
    events_file = tmp_path / "e.jsonl"
    github_env = tmp_path / "github_env"
    github_env.write_text("")
    env = clean_env(TRUNK_TRACE_FILE=str(events_file), GITHUB_ENV=str(github_env))
    begun = cli("begin", "--name", "unit tests", env=env)
    assert begun.returncode == 0
    exported = {}
    for line in begun.stdout.splitlines():
        assert line.startswith("export ")
        name, value = line[len("export "):].split("=", 1)
        exported[name] = shlex.split(value)[0]
    assert set(exported) >= {"TRUNK_TRACE_CHAIN_ID", "TRUNK_TRACE_PARENT_ID", "TRUNK_TRACE_PARENT_KEY", "TRACEPARENT", "TRUNK_TRACE_JOB_START"}
    assert github_env.read_text().splitlines() == [f"{k}={v}" for k, v in exported.items()]
    step_env = dict(env, **exported)
    # Later steps: separate processes started with the exported variables.
    code = "from trunk_trace import track\nwith track('compile'):\n    pass\n"
    assert subprocess.run([sys.executable, "-c", code], env=step_env, timeout=60).returncode == 0
    assert cli("run", "--name", "lint", "--", sys.executable, "-c", "pass", env=step_env).returncode == 0
    ended = cli("end", "--conclusion", "failure", env=step_env)
    assert ended.returncode == 0, ended.stderr  # 0 whatever the job's conclusion
    by_name = {e["sequence"]["name"]: e for e in events_in(events_file)}
    job = by_name["unit tests"]
    assert job["id"] == job["chainId"] == exported["TRUNK_TRACE_CHAIN_ID"] and "parent" not in job
    assert job["sequence"]["kind"] == "job" and job["conclusion"] == "FAILURE"
    assert job["createdAt"] == int(exported["TRUNK_TRACE_JOB_START"]) <= job["finishedAt"]
    for step in ("compile", "lint"):
        assert by_name[step]["chainId"] == job["id"]
        assert by_name[step]["parent"] == {"eventId": job["id"], "sequenceKey": "unit tests"}
        assert by_name[step]["sequence"]["key"] == f"unit tests/{step}"


def test_begin_keeps_the_trace_of_an_inherited_traceparent():
    def begin(**env: str) -> dict:
        result = cli("begin", "--name", "job", env=clean_env(**env))
        assert result.returncode == 0, result.stderr
        return {k: shlex.split(v)[0] for k, v in (line[len("export "):].split("=", 1) for line in result.stdout.splitlines())}

    inherited = begin(TRACEPARENT="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01")
    version, trace, span, flags = inherited["TRACEPARENT"].split("-")
    assert trace == "ab" * 16  # the CI system's trace goes on in every later process
    assert span == span_id(inherited["TRUNK_TRACE_PARENT_ID"]) and (version, flags) == ("00", "01")
    assert inherited["TRUNK_TRACE_CHAIN_ID"] == inherited["TRUNK_TRACE_PARENT_ID"]  # Trunk's chain is the job's
    own = begin()
    assert own["TRACEPARENT"].split("-")[1] == trace_id(own["TRUNK_TRACE_CHAIN_ID"])


def test_show_prints_the_summary_of_a_file(tmp_path):
    events_file = tmp_path / "e.jsonl"
    code = "from trunk_trace import track\nwith track('build'):\n    for _ in range(3):\n        with track('test'):\n            pass\n"
    subprocess.run([sys.executable, "-c", code], env=clean_env(TRUNK_TRACE_FILE=str(events_file), TRUNK_TRACE_SUMMARY="0"), check=True, timeout=60)
    result = cli("show", str(events_file), env=clean_env())
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("trunk_trace: 4 events")
    assert lines[1].split()[0] == "build" and lines[2].split()[0] == "test" and "x3" in lines[2]
    missing = cli("show", str(tmp_path / "missing.jsonl"), env=clean_env())
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_doctor_redacts_the_token_and_reports_context(tmp_path):
    token = "tok-" + "s3cr3t" * 5
    env = clean_env(
        TRUNK_API_TOKEN=token, TRUNK_REPO_URL="https://user:pw@gitlab.com/group/sub/proj.git",
        GITHUB_ACTIONS="true", GITHUB_RUN_ID="42", GITHUB_SHA="a" * 40, GITHUB_REF_NAME="main",
        GITHUB_SERVER_URL="https://github.com", GITHUB_REPOSITORY="o/r", TRUNK_TRACE_SPOOL_DIR=str(tmp_path / "spool"),
    )
    result = cli("doctor", env=env)
    assert result.returncode == 0
    out = result.stdout
    assert token not in out and "user:pw" not in out  # no secret, no password
    assert f"set ({len(token)} characters)" in out
    assert "gitlab.com/group/sub/proj (from TRUNK_REPO_URL)" in out and "only github.com" in out
    assert "github_actions" in out and "42" in out and "a" * 40 in out
    assert "pending    0 event(s)" in out


def test_upload_sends_a_files_events_once_and_keeps_what_fails(tmp_path):
    from sink import TOKEN, Reply, Sink, closed_port, script_env

    events_file = tmp_path / "e.jsonl"
    code = "from trunk_trace import track\nwith track('build'):\n    for _ in range(5):\n        with track('step'):\n            pass\n"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   env=clean_env(TRUNK_TRACE_FILE=str(events_file), TRUNK_TRACE_SUMMARY="0", TRUNK_REPO_URL="github.com/acme/widgets"))
    ids = [e["id"] for e in events_in(events_file)]
    spool = str(tmp_path / "spool")
    down = cli("upload", str(events_file), "--timeout", "1", env=script_env(f"http://127.0.0.1:{closed_port()}", spool))
    assert down.returncode == 1 and "6 event(s) remain" in down.stdout
    with Sink() as sink:
        sink.push(Reply(503))  # one transient failure on the way
        done = cli("upload", str(events_file), env=script_env(sink.url, spool))
        assert done.returncode == 0, done.stdout + done.stderr
        # The failed upload's copy and this one: each event arrives, always with its own id.
        assert sorted(set(sink.ids())) == sorted(ids)
        assert sink.accepted[0].body["repo"] == {"host": "github.com", "owner": "acme", "name": "widgets"}
        assert all(TOKEN not in line for line in (done.stdout + done.stderr).splitlines())
    no_token = cli("upload", str(events_file), env=clean_env())
    assert no_token.returncode == 2 and "TRUNK_API_TOKEN" in no_token.stderr
