"""Chains across processes: subprocess, os.system, multiprocessing, inherited and malformed contexts."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from helpers import by_key, events_in, traced_env

import trunk_trace
from trunk_trace import track
from trunk_trace._propagate import context_env, parent_from_env, span_id, trace_id
from trunk_trace.testing import capture


def run_script(tmp_path: Path, code: str, **env: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    events_file = tmp_path / "events.jsonl"
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env=traced_env(events_file, **env),
    )
    assert result.returncode == 0, result.stderr
    return result, events_in(events_file)


def test_chain_three_processes_deep(tmp_path):
    grandchild = "from trunk_trace import track\nwith track('grandchild'):\n    pass\n"
    child = (
        "import subprocess, sys\nfrom trunk_trace import track\n"
        f"with track('child'):\n    subprocess.run([sys.executable, '-c', {grandchild!r}], check=True)\n"
    )
    _, events = run_script(tmp_path, f"""
        import subprocess, sys
        from trunk_trace import track
        with track("root"):
            with track("spawn"):
                subprocess.run([sys.executable, "-c", {child!r}], check=True)
    """)
    keyed = by_key(events)
    assert set(keyed) == {"root", "root/spawn", "root/spawn/child", "root/spawn/child/grandchild"}
    root = keyed["root"]
    assert all(e["chainId"] == root["id"] for e in events)
    assert keyed["root/spawn/child"]["parent"] == {"eventId": keyed["root/spawn"]["id"], "sequenceKey": "root/spawn"}
    assert keyed["root/spawn/child/grandchild"]["parent"]["eventId"] == keyed["root/spawn/child"]["id"]
    assert keyed["root/spawn/child"]["sequence"]["kind"] == "step"  # nested, not a second root


def test_explicit_env_os_system_and_run(tmp_path):
    _, events = run_script(tmp_path, """
        import os, subprocess, sys
        import trunk_trace
        from trunk_trace import track
        CHILD = "from trunk_trace import track\\nwith track('kid'):\\n    pass\\n"
        with track("root"):
            with track("explicit"):
                subprocess.run([sys.executable, "-c", CHILD], env=dict(os.environ), check=True)
            with track("system"):
                assert os.system(f'{sys.executable} -c "from trunk_trace import track; track(\\'kid\\').__enter__().tag(\\'x\\', 1)"') == 0
            result = trunk_trace.run([sys.executable, "-c", CHILD], name="cmd")
            assert result.returncode == 0
            failed = trunk_trace.run([sys.executable, "-c", "raise SystemExit(3)"], name="failing")
            assert failed.returncode == 3
            copied_inside = dict(os.environ)  # holds the context written for the children above
        # After the blocks closed, a child starts a chain of its own, also when its
        # environment is a copy of ours taken while a block was open.
        subprocess.run([sys.executable, "-c", CHILD], check=True)
        subprocess.run([sys.executable, "-c", CHILD], env=copied_inside, check=True)
    """)
    by_key = {}
    for e in events:
        by_key.setdefault(e["sequence"]["key"], []).append(e)
    root = by_key["root"][0]
    assert by_key["root/explicit/kid"][0]["parent"]["eventId"] == by_key["root/explicit"][0]["id"]
    assert by_key["root/cmd/kid"][0]["parent"]["eventId"] == by_key["root/cmd"][0]["id"]
    cmd, failing = by_key["root/cmd"][0], by_key["root/failing"][0]
    assert cmd["sequence"]["kind"] == "command" and cmd["conclusion"] == "SUCCESS"
    assert {"k": "exit_code", "v": 0} in cmd["payload"]["tags"]
    assert failing["conclusion"] == "FAILURE" and {"k": "exit_code", "v": 3} in failing["payload"]["tags"]
    # the os.system child ran its block (it never exited it, so no event), but the later lone child is a root
    assert len(by_key["kid"]) == 2
    for lone in by_key["kid"]:
        assert "parent" not in lone and lone["chainId"] == lone["id"] != root["id"]


PRINT_PARENT = "import os; print(os.environ.get('TRUNK_TRACE_PARENT_ID'), os.environ.get('MARK'))"


def test_threads_starting_children_at_once_each_pass_their_own_block():
    # Popen releases the GIL between its audit event and the fork: a context written
    # to os.environ there reached other threads' children (10 of 120 here, before).
    wrong: list[tuple[str, str]] = []
    started = []

    def jobs(worker: int) -> None:
        for round in range(20):
            with track(f"job-{worker}") as ev:
                out = subprocess.run([sys.executable, "-S", "-c", PRINT_PARENT], capture_output=True, text=True, check=True)
                started.append(ev.id)
                if out.stdout.split()[0] != ev.id:
                    wrong.append((ev.id, out.stdout))

    with capture():
        with track("build"):
            threads = [threading.Thread(target=jobs, args=(worker,)) for worker in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    assert len(started) == 80
    assert wrong == []


def test_popen_leaves_os_environ_and_the_callers_env_unchanged():
    environ_before = dict(os.environ)
    given = dict(os.environ, MARK="mine")
    given_before = dict(given)
    with capture():
        with track("spawn") as ev:
            out = subprocess.run([sys.executable, "-S", "-c", PRINT_PARENT], env=given, capture_output=True, text=True, check=True)
            # env as Popen's eleventh positional argument, as some old code passes it
            positional = subprocess.Popen(
                [sys.executable, "-S", "-c", PRINT_PARENT], -1, None, None, subprocess.PIPE, None, None, True, False, None, given,
            )
            positional_out = positional.communicate()[0].decode()
    assert out.stdout.split() == [ev.id, "mine"]
    assert positional_out.split() == [ev.id, "mine"]
    assert given == given_before
    assert dict(os.environ) == environ_before


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_multiprocessing_children_join_the_chain(tmp_path, method):
    _, events = run_script(tmp_path, f"""
        import multiprocessing as mp
        from trunk_trace import track

        def work(n):
            with track("work"):
                return n * 2

        if __name__ == "__main__":
            with track("root"):
                with track("pool"):
                    ctx = mp.get_context({method!r})
                    process = ctx.Process(target=work, args=(1,))
                    process.start()
                    process.join()
                    assert process.exitcode == 0
    """)
    keyed = by_key(events)
    assert "root/pool/work" in keyed, sorted(keyed)
    work = keyed["root/pool/work"]
    assert work["parent"]["eventId"] == keyed["root/pool"]["id"]
    assert work["chainId"] == keyed["root"]["id"]


def test_malformed_inherited_context_starts_a_new_chain_with_one_warning(tmp_path):
    result, events = run_script(
        tmp_path,
        "from trunk_trace import track\nwith track('a'):\n    pass\nwith track('b'):\n    pass\n",
        TRUNK_TRACE_CHAIN_ID="bad id with spaces", TRUNK_TRACE_PARENT_ID="x", TRUNK_TRACE_PARENT_KEY="k",
    )
    assert [e["sequence"]["key"] for e in events] == ["a", "b"]
    assert all("parent" not in e for e in events)
    assert result.stderr.count("malformed inherited context") == 1


def test_inherited_context_from_environment(monkeypatch):
    monkeypatch.setenv("TRUNK_TRACE_CHAIN_ID", "chain-1")
    monkeypatch.setenv("TRUNK_TRACE_PARENT_ID", "job-1")
    monkeypatch.setenv("TRUNK_TRACE_PARENT_KEY", "ci/job")
    with capture() as events:
        with track("step") as ev:
            env = context_env()
    (event,) = events
    assert event["chainId"] == "chain-1"
    assert event["parent"] == {"eventId": "job-1", "sequenceKey": "ci/job"}
    assert event["sequence"]["key"] == "ci/job/step" and event["sequence"]["kind"] == "step"
    assert env["TRUNK_TRACE_PARENT_ID"] == ev.id and env["TRUNK_TRACE_CHAIN_ID"] == "chain-1"


def test_traceparent_written_and_inherited_trace_kept(monkeypatch):
    with capture():
        with track("root") as root:
            env = context_env()
    version, trace, span, flags = env["TRACEPARENT"].split("-")
    assert (version, flags) == ("00", "01")
    assert trace == root.id.replace("-", "") == trace_id(root.id)
    assert span == span_id(root.id) and len(span) == 16 and span != "0" * 16
    trunk_trace.reset()
    monkeypatch.setenv("TRACEPARENT", "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01")
    with capture():
        with track("root2") as root2:
            env = context_env()
    assert env["TRACEPARENT"].split("-")[1] == "ab" * 16  # the caller's trace goes on
    assert env["TRUNK_TRACE_CHAIN_ID"] == root2.id  # a Trunk chain is not changed by it


@pytest.mark.parametrize(
    "env",
    [
        {"TRUNK_TRACE_CHAIN_ID": "c"},  # incomplete
        {"TRUNK_TRACE_CHAIN_ID": "c", "TRUNK_TRACE_PARENT_ID": "p", "TRUNK_TRACE_PARENT_KEY": "k" * 200},
        {"TRUNK_TRACE_CHAIN_ID": "c" * 500, "TRUNK_TRACE_PARENT_ID": "p", "TRUNK_TRACE_PARENT_KEY": "k"},
        {"TRUNK_TRACE_CHAIN_ID": "c\n", "TRUNK_TRACE_PARENT_ID": "p", "TRUNK_TRACE_PARENT_KEY": "k"},
    ],
)
def test_parent_from_env_rejects_malformed(env):
    assert parent_from_env(env) is None


def test_trace_id_of_a_non_uuid_chain_is_stable_hex():
    assert trace_id("jenkins#12") == trace_id("jenkins#12")
    assert len(trace_id("jenkins#12")) == 32 and int(trace_id("jenkins#12"), 16)
