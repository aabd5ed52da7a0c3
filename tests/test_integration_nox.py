"""The nox integration, through real ``python -m nox`` processes in temporary projects."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import by_key, tags_of, traced_env

from trunk_trace.exporters.jsonl import read_lines

# The noxfiles here use allow_parallel / --parallel, new in nox 2026.10 (which needs Python 3.10+).
_NOX_VERSION = tuple(int(part) for part in __import__("importlib.metadata").metadata.version("nox").split(".")[:2])
pytestmark = pytest.mark.skipif(_NOX_VERSION < (2026, 10), reason="needs nox >= 2026.10 (Python >= 3.10)")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

NOXFILE = '''
import nox
import trunk_trace.integrations.nox

PY = ("python", "-c")

@nox.session(python=False, allow_parallel=True)
def lint(session):
    session.run(*PY, "import os; open('lint-context.txt', 'w').write(os.environ.get('TRUNK_TRACE_PARENT_ID', ''))")

@nox.session(python=False, allow_parallel=True)
@nox.parametrize("python", ["3.11", "3.12"])
def tests(session, python):
    session.run(*PY, "print('tests')")

@nox.session(python=False, allow_parallel=True)
def fails(session):
    session.run(*PY, "import sys; sys.exit(4)")

@nox.session(python=False, allow_parallel=True)
def skips(session):
    session.skip("not today")

@nox.session(python=False, allow_parallel=True)
def errors(session):
    session.error("gave up")

@nox.session(python=False)
def setup(session):
    session.run_install(*PY, "print('installing')")
    session.run(*PY, "print('running')")
'''


def nox(project: Path, *args: str, tail: str = "trunk_trace.integrations.nox.instrument()\n") -> tuple[subprocess.CompletedProcess, list[dict]]:
    (project / "noxfile.py").write_text(textwrap.dedent(NOXFILE) + tail)
    events_file = project / "events.jsonl"
    events_file.unlink(missing_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "nox", "--no-color", *args], cwd=project, env=traced_env(events_file),
        capture_output=True, text=True, timeout=120,
    )
    lines = list(read_lines(str(events_file))) if events_file.exists() else []
    return result, [dict(line["event"], pid=line["pid"]) for line in lines]



def summary_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("nox > *")]


SESSIONS = ["lint", "tests(python='3.11')", "tests(python='3.12')", "fails", "skips", "errors"]


def check_run(events: list[dict], parallel: bool) -> dict[str, dict]:
    keyed = by_key(events)
    root = keyed["nox"]
    assert root["sequence"]["kind"] == "pipeline" and "parent" not in root
    assert root["conclusion"] == "FAILURE"  # as nox's exit code says
    assert tags_of(root)["sessions"] == " ".join(SESSIONS)
    assert len({e["chainId"] for e in events}) == 1
    expected = {"lint": "SUCCESS", "tests(python='3.11')": "SUCCESS", "tests(python='3.12')": "SUCCESS",
                "fails": "FAILURE", "skips": "SKIPPED", "errors": "FAILURE"}
    for name, conclusion in expected.items():
        session = keyed[f"nox/{name}"]
        assert (session["sequence"]["kind"], session["sequence"]["name"], session["conclusion"]) == ("session", name, conclusion)
        assert session["parent"]["eventId"] == root["id"]
        # with -j every session runs in a child nox process; without, in nox's own
        assert (session["pid"] != root["pid"]) is parallel
    assert tags_of(keyed["nox/skips"])["reason"] == "not today"
    failed = next(e for k, e in keyed.items() if k.startswith("nox/fails/"))
    assert (failed["sequence"]["kind"], failed["conclusion"], tags_of(failed)["exit_code"]) == ("command", "FAILURE", 4)
    passed = next(e for k, e in keyed.items() if k.startswith("nox/tests(python='3.12')/"))
    assert (passed["conclusion"], tags_of(passed)["exit_code"], passed["parent"]["eventId"]) == ("SUCCESS", 0, keyed["nox/tests(python='3.12')"]["id"])
    return keyed


def test_sessions_in_sequence(tmp_path: Path) -> None:
    selection = ["-s", *SESSIONS]
    untraced, _ = nox(tmp_path, *selection, tail="")
    result, events = nox(tmp_path, *selection)
    assert result.returncode == untraced.returncode == 1
    assert summary_lines(result) == summary_lines(untraced)
    keyed = check_run(events, parallel=False)
    # the command's process joined the chain under its command event
    lint_command = next(e for k, e in keyed.items() if k.startswith("nox/lint/"))
    assert (tmp_path / "lint-context.txt").read_text() == lint_command["id"]


def test_sessions_in_parallel(tmp_path: Path) -> None:
    if "--parallel" not in subprocess.run([sys.executable, "-m", "nox", "--help"], capture_output=True, text=True).stdout:
        pytest.fail("this nox has no --parallel (needs nox 2026.10 or later, as the test extra asks)")
    selection = ["-j", "2", "-s", *SESSIONS]
    untraced, _ = nox(tmp_path, *selection, tail="")
    result, events = nox(tmp_path, *selection)
    assert result.returncode == untraced.returncode == 1
    assert sorted(summary_lines(result)) == sorted(summary_lines(untraced))
    keyed = check_run(events, parallel=True)
    lint_command = next(e for k, e in keyed.items() if k.startswith("nox/lint/"))
    assert (tmp_path / "lint-context.txt").read_text() == lint_command["id"]


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT to a process group")
def test_ctrl_c_cancels_the_command_the_session_and_the_run(tmp_path: Path) -> None:
    # The command sends SIGINT to its whole process group, as Ctrl-C in a terminal does.
    noxfile = textwrap.dedent('''
    import nox
    import trunk_trace.integrations.nox

    @nox.session(python=False)
    def interrupted(session):
        session.run("python", "-c", "import os, signal, time; os.killpg(0, signal.SIGINT); time.sleep(30)")

    @nox.session(python=False)
    def never(session):
        session.run("python", "-c", "print('never')")
    ''')
    runs = []
    for traced in (False, True):
        (tmp_path / "noxfile.py").write_text(noxfile + ("trunk_trace.integrations.nox.instrument()\n" if traced else ""))
        events_file = tmp_path / "events.jsonl"
        events_file.unlink(missing_ok=True)
        result = subprocess.run(
            [sys.executable, "-m", "nox", "--no-color", "-s", "interrupted", "never"], cwd=tmp_path,
            env=traced_env(events_file), capture_output=True, text=True, timeout=120, start_new_session=True,
        )
        runs.append(result)
    untraced, result = runs
    assert result.returncode == untraced.returncode == 130, result.stderr
    keyed = by_key([line["event"] for line in read_lines(str(events_file))])
    command = next(e for k, e in keyed.items() if k.startswith("nox/interrupted/"))
    assert (command["conclusion"], keyed["nox/interrupted"]["conclusion"], keyed["nox"]["conclusion"]) == ("CANCELLED",) * 3
    assert not any(k.startswith("nox/never") for k in keyed)  # nox stopped there, and so did the trace


def test_install_only_skips_the_runs(tmp_path: Path) -> None:
    result, events = nox(tmp_path, "-s", "setup", "--install-only")
    assert result.returncode == 0, result.stderr
    keyed = by_key(events)
    install = keyed["nox/setup/python -c 'print('\"'\"'installing'\"'\"')'"]
    run = keyed["nox/setup/python -c 'print('\"'\"'running'\"'\"')'"]
    assert (install["conclusion"], tags_of(install)["exit_code"]) == ("SUCCESS", 0)
    assert run["conclusion"] == "SKIPPED" and "exit_code" not in tags_of(run)
    assert (keyed["nox/setup"]["conclusion"], keyed["nox"]["conclusion"]) == ("SUCCESS", "SUCCESS")


def test_traced_decorator_traces_one_session(tmp_path: Path) -> None:
    noxfile = NOXFILE.replace("def lint(session):", "@trunk_trace.integrations.nox.traced\ndef lint(session):")
    (tmp_path / "noxfile.py").write_text(textwrap.dedent(noxfile))
    events_file = tmp_path / "events.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "nox", "-s", "lint", "tests"], cwd=tmp_path, env=traced_env(events_file),
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    keys = [e["event"]["sequence"]["key"] for e in read_lines(str(events_file))]
    assert len(keys) == 3 and keys[1:] == ["nox/lint", "nox"] and keys[0].startswith("nox/lint/python -c")


def test_install_in_a_virtualenv(tmp_path: Path) -> None:
    # The one test that needs a real environment: session.install runs pip in it.
    tail = textwrap.dedent('''
    @nox.session(venv_backend="venv")
    def venv(session):
        session.install("--no-index", "pip")  # already there: pip exits 0 without the network
    trunk_trace.integrations.nox.instrument()
    ''')
    result, events = nox(tmp_path, "-s", "venv", tail=tail)
    assert result.returncode == 0, result.stderr
    keyed = by_key(events)
    install = keyed["nox/venv/install --no-index pip"]
    assert (install["sequence"]["kind"], install["conclusion"], tags_of(install)["exit_code"]) == ("command", "SUCCESS", 0)
    assert keyed["nox/venv"]["conclusion"] == "SUCCESS"


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
def test_example_noxfile(tmp_path: Path, parallel: bool) -> None:
    events_file = tmp_path / "events.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "nox", "-f", str(EXAMPLES / "noxfile.py"), *(["-j", "2"] if parallel else [])],
        cwd=tmp_path, env=traced_env(events_file), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    events = [line["event"] for line in read_lines(str(events_file))]
    assert len({e["chainId"] for e in events}) == 1
    keyed = {e["sequence"]["key"]: e for e in events}
    assert {"nox", "nox/lint", "nox/tests(suite='unit')", "nox/tests(suite='integration')"} <= set(keyed)
    unit = next(e for e in events if e["sequence"]["name"] == "unit tests")  # from the command's own process
    assert unit["parent"]["sequenceKey"].startswith("nox/tests(suite='unit')/python -c")
