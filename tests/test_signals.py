"""SIGTERM: open blocks unwind as CANCELLED, events are delivered, the process exits 143."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from sink import Sink, script_env

import trunk_trace
from trunk_trace import _signals, track

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

CANCELLED_JOB = """
import sys, time
from trunk_trace import track
with track("job"):
    with track("setup"):
        pass
    with track("long step"):
        print("ready", flush=True)
        time.sleep(30)
"""


def start(tmp_path, source: str, env: dict) -> subprocess.Popen:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(source))
    process = subprocess.Popen([sys.executable, str(path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    return process


def test_sigterm_cancels_open_blocks_delivers_and_exits_143(tmp_path):
    with Sink() as sink:
        process = start(tmp_path, CANCELLED_JOB, script_env(sink.url, str(tmp_path / "spool"), TRUNK_TRACE_EXIT_TIMEOUT="1"))
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 143, err
        assert time.monotonic() - started < 1 + 1.5
        conclusions = {e["sequence"]["name"]: e["conclusion"] for e in sink.events()}
    assert conclusions == {"setup": "SUCCESS", "long step": "CANCELLED", "job": "CANCELLED"}
    assert err == ""


def test_opting_out_leaves_sigterm_alone(tmp_path):
    with Sink() as sink:
        env = script_env(sink.url, str(tmp_path / "spool"), TRUNK_TRACE_SIGTERM="0")
        process = start(tmp_path, CANCELLED_JOB, env)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        assert process.returncode == -signal.SIGTERM


def test_the_programs_own_handler_is_kept(tmp_path):
    source = """
        import signal, sys
        from trunk_trace import track
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))
        with track("job"):
            print("ready", flush=True)
            signal.pause()
    """
    with Sink() as sink:
        process = start(tmp_path, source, script_env(sink.url, str(tmp_path / "spool")))
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        assert process.returncode == 7
        assert [e["conclusion"] for e in sink.events()] == ["FAILURE"]  # SystemExit(7), as the program said


def test_pool_workers_get_the_default_action_back_and_terminate_does_not_hang(tmp_path):
    source = """
        import multiprocessing, signal
        from trunk_trace import track

        def handler_in_worker(_):
            from trunk_trace import _signals
            return signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, _signals._default_in_child)

        if __name__ == "__main__":
            multiprocessing.set_start_method("fork")
            with track("build"):
                assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
                for _ in range(20):
                    with multiprocessing.Pool(2) as pool:  # leaving calls terminate(): SIGTERM to workers
                        assert all(pool.map(handler_in_worker, range(4)))
            print("ready", flush=True)
    """
    with Sink() as sink:
        path = tmp_path / "pool.py"
        path.write_text(textwrap.dedent(source))
        done = subprocess.run([sys.executable, str(path)], env=script_env(sink.url, str(tmp_path / "spool")),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "ready"


def test_installed_when_the_first_block_opens_only_if_sigterm_is_default():
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with track("first"):
        assert signal.getsignal(signal.SIGTERM) is _signals._on_sigterm
    trunk_trace.reset()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with track("first"):
            assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_configure_can_turn_it_off_and_threads_never_install():
    trunk_trace.configure(handle_sigterm=False)
    with track("first"):
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    trunk_trace.reset()
    results = []
    thread = threading.Thread(target=lambda: results.append(_signals.install()))
    thread.start()
    thread.join()
    assert results == [False] and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
