"""The pytest plugin, through real ``python -m pytest`` processes (with and without xdist)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers import tags_of, traced_env

from trunk_trace.exporters.jsonl import read_lines

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

SUITE = '''
import os, subprocess, sys, unittest
import pytest
import trunk_trace
from trunk_trace import track

def test_passes():
    with track("inner step"):
        pass
    event = trunk_trace.current()  # the test's own event, when the plugin is on
    if event is not None:
        event.tag("dataset", "small")

def test_starts_a_child():
    code = "import trunk_trace\\nwith trunk_trace.track('child step'): pass"
    subprocess.run([sys.executable, "-c", code], check=True)

def test_fails():
    assert 1 == 2

@pytest.mark.skip(reason="no")
def test_skipped(): pass

def test_skips_itself():
    pytest.skip("at run time")

@pytest.mark.xfail
def test_xfails(): assert 0

@pytest.mark.xfail
def test_xpasses(): pass

@pytest.mark.xfail(strict=True)
def test_xpasses_strictly(): pass

@pytest.fixture
def broken_setup():
    raise RuntimeError("setup")

def test_setup_error(broken_setup): pass

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown")

def test_teardown_error(broken_teardown): pass

@pytest.mark.parametrize("n", [1, 2])
def test_param(n): pass

class Sub(unittest.TestCase):
    def test_failing_subtest(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertNotEqual(i, 1)

    def test_passing_subtests(self):
        for i in range(3):
            with self.subTest(i=i):
                pass
'''

EXPECTED = {  # node id (after "test_suite.py::"): (conclusion, outcome tag)
    "test_passes": ("SUCCESS", "passed"),
    "test_starts_a_child": ("SUCCESS", "passed"),
    "test_fails": ("FAILURE", "failed"),
    "test_skipped": ("SKIPPED", "skipped"),
    "test_skips_itself": ("SKIPPED", "skipped"),
    "test_xfails": ("SKIPPED", "xfailed"),
    "test_xpasses": ("SUCCESS", "xpassed"),
    "test_xpasses_strictly": ("FAILURE", "failed"),
    "test_setup_error": ("FAILURE", "error"),
    "test_teardown_error": ("FAILURE", "error"),
    "test_param[1]": ("SUCCESS", "passed"),
    "test_param[2]": ("SUCCESS", "passed"),
    "Sub::test_failing_subtest": ("FAILURE", "failed"),
    "Sub::test_passing_subtests": ("SUCCESS", "passed"),
}


def pytest_run(project: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    events_file = project / "events.jsonl"
    events_file.unlink(missing_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=project,
        env=traced_env(events_file, **env), capture_output=True, text=True, timeout=120,
    )
    lines = list(read_lines(str(events_file))) if events_file.exists() else []
    return result, [dict(line["event"], pid=line["pid"]) for line in lines]



def result_counts(result: subprocess.CompletedProcess) -> str:
    """pytest's last line without its timing: what it reported, unchanged by the plugin."""
    return re.sub(r" in [0-9.]+s.*", "", result.stdout.strip().splitlines()[-1])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "test_suite.py").write_text(textwrap.dedent(SUITE))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    return tmp_path


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_every_outcome(project: Path, xdist: list[str]) -> None:
    plain, no_events = pytest_run(project, *xdist)
    result, events = pytest_run(project, "--trunk-trace", "--junitxml=junit.xml", *xdist)
    assert {e["sequence"]["name"] for e in no_events} == {"inner step", "child step"}  # the suite's own blocks
    assert result.returncode == plain.returncode == 1
    assert result_counts(result) == result_counts(plain)

    root = next(e for e in events if e["sequence"]["key"] == "pytest")
    assert root["sequence"]["kind"] == "pipeline" and "parent" not in root
    assert (root["conclusion"], tags_of(root)["exit_code"]) == ("FAILURE", 1)
    assert tags_of(root)["args"].startswith("-p no:cacheprovider --trunk-trace")
    assert len({e["chainId"] for e in events}) == 1

    tests = {e["sequence"]["name"]: e for e in events if e["sequence"]["kind"] == "test"}
    assert len(tests) == len([e for e in events if e["sequence"]["kind"] == "test"])  # each test once
    assert {name.split("::", 1)[1]: (e["conclusion"], tags_of(e)["outcome"]) for name, e in tests.items()} == EXPECTED
    for event in tests.values():
        assert event["parent"]["eventId"] == root["id"] and event["sequence"]["key"] == f"pytest/{event['sequence']['name']}"
        assert event["pid"] == root["pid"]  # reported by the controller, also under xdist
        assert (tags_of(event).get("xdist_worker", "").startswith("gw")) is bool(xdist)
    assert tags_of(tests["test_suite.py::test_setup_error"])["phase"] == "setup"
    assert tags_of(tests["test_suite.py::test_teardown_error"])["phase"] == "teardown"
    assert tags_of(tests["test_suite.py::test_passes"])["dataset"] == "small"  # tagged by the test itself

    # Blocks opened by the code under test (and by its child processes) nest under the test.
    inner = next(e for e in events if e["sequence"]["name"] == "inner step")
    assert inner["parent"]["eventId"] == tests["test_suite.py::test_passes"]["id"]
    assert inner["sequence"]["key"] == "pytest/test_suite.py::test_passes/inner step"
    child = next(e for e in events if e["sequence"]["name"] == "child step")
    assert child["parent"]["eventId"] == tests["test_suite.py::test_starts_a_child"]["id"]
    if xdist:
        assert inner["pid"] != root["pid"] and child["pid"] not in (root["pid"], inner["pid"])

    # Counts against pytest's own JUnit XML (which reports each subtest and each teardown error apart).
    cases = {(case.get("classname"), case.get("name")) for case in ET.parse(project / "junit.xml").getroot().iter("testcase")}
    assert len(cases) == len(tests)


def test_inert_unless_enabled(project: Path) -> None:
    result, events = pytest_run(project, "-k", "param")
    assert result.returncode == 0 and events == []
    result, events = pytest_run(project, "-k", "param", TRUNK_TRACE_PYTEST="1")
    assert result.returncode == 0 and len(events) == 3
    (project / "pytest.ini").write_text("[pytest]\ntrunk_trace = true\n")
    result, events = pytest_run(project, "-k", "param")
    assert result.returncode == 0 and [e["sequence"]["kind"] for e in events] == ["test", "test", "pipeline"]


def test_session_conclusions_follow_the_exit_status(project: Path) -> None:
    result, events = pytest_run(project, "--trunk-trace", "-k", "param or skipped")
    assert result.returncode == 0 and events[-1]["conclusion"] == "SUCCESS"
    result, events = pytest_run(project, "--trunk-trace", "-k", "nothing_matches")
    assert result.returncode == 5
    assert [(e["sequence"]["key"], e["conclusion"], tags_of(e)["exit_code"]) for e in events] == [("pytest", "FAILURE", 5)]


def test_reruns_fold_into_one_event(tmp_path: Path) -> None:
    # Reports as pytest-rerunfailures logs them: a failed attempt's call report has the
    # outcome "rerun" and no teardown report follows it; then the item runs again.
    (tmp_path / "conftest.py").write_text(textwrap.dedent('''
        import pytest
        from _pytest.runner import runtestprotocol

        @pytest.hookimpl(tryfirst=True)
        def pytest_runtest_protocol(item, nextitem):
            item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
            for attempt in range(3):
                item.attempt = attempt
                reports = runtestprotocol(item, nextitem=nextitem, log=False)
                rerun = attempt < 2 and any(r.failed for r in reports)
                for report in reports:
                    if rerun and report.failed:
                        report.outcome = "rerun"
                        item.ihook.pytest_runtest_logreport(report=report)
                        break
                    item.ihook.pytest_runtest_logreport(report=report)
                if not rerun:
                    break
            item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
            return True
    '''))
    (tmp_path / "test_flaky.py").write_text(textwrap.dedent('''
        def test_flaky(request):
            assert request.node.attempt == 1

        def test_broken():
            assert False
    '''))
    result, events = pytest_run(tmp_path, "--trunk-trace")
    assert result.returncode == 1
    tests = {e["sequence"]["name"]: e for e in events if e["sequence"]["kind"] == "test"}
    assert len(tests) == 2
    flaky, broken = tests["test_flaky.py::test_flaky"], tests["test_flaky.py::test_broken"]
    assert (flaky["conclusion"], tags_of(flaky)["reruns"], tags_of(flaky)["outcome"]) == ("SUCCESS", 1, "passed")
    assert (broken["conclusion"], tags_of(broken)["reruns"], tags_of(broken)["outcome"]) == ("FAILURE", 2, "failed")


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_example_suite(tmp_path: Path, xdist: list[str]) -> None:
    events_file = tmp_path / "events.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *xdist, str(EXAMPLES / "test_suite")],
        cwd=EXAMPLES / "test_suite", env=traced_env(events_file), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    events = [line["event"] for line in read_lines(str(events_file))]
    assert len({e["chainId"] for e in events}) == 1
    tests = {e["sequence"]["name"]: e for e in events if e["sequence"]["kind"] == "test"}
    assert len(tests) == 8
    assert tests["test_example.py::test_skipped"]["conclusion"] == "SKIPPED"
    assert tags_of(tests["test_example.py::test_known_bug"])["outcome"] == "xfailed"
    assert tags_of(tests["test_example.py::test_tags_its_own_event"])["dataset"] == "small"
    index_blocks = [e for e in events if e["sequence"]["name"] == "build index"]
    assert len(index_blocks) == 5 and all(e["parent"]["eventId"] in {t["id"] for t in tests.values()} for e in index_blocks)
    child = next(e for e in events if e["sequence"]["name"] == "child step")
    assert child["parent"]["eventId"] == tests["test_example.py::test_child_process_joins_the_chain"]["id"]
