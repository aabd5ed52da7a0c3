"""Whole processes: instrumented scripts run as subprocesses, then `trunk-trace flush`.

Each checks the exit code, an upper bound on the exit time that encodes the
budget, what reached the server, and what waits in the spool.
"""

from __future__ import annotations

import os
import textwrap

import pytest
from sink import HANG, TOKEN, Reply, Sink, closed_port, run_python, script_env, spooled_ids

BUDGET = 1.0
SLACK = 1.5  # interpreter start and stop on a busy machine

SCRIPT = """
import sys
from trunk_trace import track
with track("build"):
    for n in range(int(sys.argv[1])):
        with track("step", tags={"n": n}):
            pass
sys.exit(int(sys.argv[2]))
"""


@pytest.fixture
def sink():
    with Sink() as server:
        yield server


def write(tmp_path, source: str, name: str = "script.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def flush(url: str, spool_dir: str, *args: str):
    env = script_env(url, spool_dir)
    return run_python(["-m", "trunk_trace.cli", "flush", *args], env)


def problem_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_healthy_all_delivered_and_the_exit_code_kept(tmp_path, sink):
    spool = str(tmp_path / "spool")
    done = run_python([write(tmp_path, SCRIPT), "2000", "3"], script_env(sink.url, spool, TRUNK_TRACE_EXIT_TIMEOUT=str(BUDGET)))
    assert done.returncode == 3
    assert done.stderr == ""
    assert len(sink.ids()) == 2001 == len(set(sink.ids()))
    assert spooled_ids(spool) == []


@pytest.mark.parametrize("fault", ["refused", "silent", "503"])
def test_endpoint_down_all_spooled_within_budget_then_flush_delivers_once(tmp_path, sink, fault):
    spool = str(tmp_path / "spool")
    url = sink.url
    if fault == "refused":
        url = f"http://127.0.0.1:{closed_port()}"
    elif fault == "silent":
        sink.default = HANG
    else:
        sink.default = Reply(503)
    done = run_python([write(tmp_path, SCRIPT), "3000", "0"], script_env(url, spool, TRUNK_TRACE_EXIT_TIMEOUT=str(BUDGET)))
    assert done.returncode == 0
    assert done.seconds < BUDGET + SLACK + 1.0  # includes starting the interpreter
    assert sink.ids() == []
    assert len(set(spooled_ids(spool))) == 3001
    lines = problem_lines(done.stderr)
    # One short line per kind of problem (on a slow machine "ran out of time" may join the first).
    assert 1 <= len(lines) <= 2 and len(set(lines)) == len(lines)
    assert all(line.startswith("trunk_trace:") and spool in line for line in lines)
    assert TOKEN not in done.stderr

    with Sink() as healthy:
        sent = flush(healthy.url, spool)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "sent 3001 event(s)" in sent.stdout
        assert len(healthy.ids()) == len(set(healthy.ids())) == 3001  # each exactly once
        again = flush(healthy.url, spool)
        assert again.returncode == 0 and "sent 0 event(s)" in again.stdout
    assert spooled_ids(spool) == []


def test_flush_fails_while_the_endpoint_is_down(tmp_path):
    spool = str(tmp_path / "spool")
    url = f"http://127.0.0.1:{closed_port()}"
    run_python([write(tmp_path, SCRIPT), "10", "0"], script_env(url, spool, TRUNK_TRACE_EXIT_TIMEOUT="1"))
    done = flush(url, spool, "--timeout", "0.5")
    assert done.returncode == 1
    assert "11 event(s) remain" in done.stdout
    assert len(spooled_ids(spool)) == 11


def test_no_token_flush_says_so(tmp_path):
    env = script_env("http://127.0.0.1:9", str(tmp_path))
    del env["TRUNK_API_TOKEN"]
    done = run_python(["-m", "trunk_trace.cli", "flush"], env)
    assert done.returncode == 2 and "TRUNK_API_TOKEN" in done.stderr


def test_the_next_process_sends_what_the_previous_one_spooled(tmp_path, sink):
    spool = str(tmp_path / "spool")
    script = write(tmp_path, SCRIPT)
    run_python([script, "100", "0"], script_env(f"http://127.0.0.1:{closed_port()}", spool))
    earlier = spooled_ids(spool)
    assert len(earlier) == 101
    later = write(tmp_path, """
        import time, trunk_trace
        from trunk_trace import track
        with track("later"):
            pass
        trunk_trace.flush(5)
        time.sleep(1.0)  # a process that lives on: the spool is replayed in the background
    """, "later.py")
    done = run_python([later], script_env(sink.url, spool))
    assert done.returncode == 0, done.stderr
    assert sink.events()[0]["sequence"]["name"] == "later"
    assert sorted(sink.ids()[1:]) == sorted(earlier)
    assert spooled_ids(spool) == []


MULTIPROCESSING = """
import multiprocessing, sys
from trunk_trace import track

def task(n):
    with track("task"):
        with track("inner"):
            return n * n

if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])
    with track("build"):
        with multiprocessing.Pool(2) as pool:
            assert pool.map(task, range(8)) == [n * n for n in range(8)]
"""


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_events_finished_in_multiprocessing_children_are_delivered(tmp_path, sink, method):
    if method not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip(f"no {method} here")
    spool = str(tmp_path / "spool")
    done = run_python([write(tmp_path, MULTIPROCESSING), method], script_env(sink.url, spool), timeout=60)
    assert done.returncode == 0, done.stderr
    names = sorted(e["sequence"]["name"] for e in sink.events())
    assert names == ["build"] + ["inner"] * 8 + ["task"] * 8
    assert len(set(sink.ids())) == len(sink.ids())  # the parent's queue was not resent by children
    if method == "fork":
        build = [e for e in sink.events() if e["sequence"]["name"] == "build"][0]
        assert all(e["chainId"] == build["id"] for e in sink.events())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_leaving_through_os_exit_delivers(tmp_path, sink):
    script = write(tmp_path, """
        import os
        from trunk_trace import track
        with track("parent"):
            for n in range(3):
                with track("before-fork"):
                    pass
            pid = os.fork()
            if pid == 0:
                with track("child"):
                    pass
                os._exit(0)
            os.waitpid(pid, 0)
    """)
    done = run_python([script], script_env(sink.url, str(tmp_path / "spool")))
    assert done.returncode == 0, done.stderr
    names = sorted(e["sequence"]["name"] for e in sink.events())
    assert names == ["before-fork"] * 3 + ["child", "parent"]
