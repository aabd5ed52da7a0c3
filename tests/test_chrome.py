"""Trace files for Perfetto and chrome://tracing: `trunk-trace show --format chrome` and
TRUNK_TRACE_CHROME, including several processes appending to one file."""

from __future__ import annotations

import json
import os
import textwrap
import threading

from sink import run_python

import trunk_trace
from trunk_trace import cli, track
from trunk_trace.exporters.chrome import load
from trunk_trace.exporters.jsonl import read_lines

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def complete_events(events: list[dict]) -> list[dict]:
    return [event for event in events if event["ph"] == "X"]


def assert_nested(child: dict, parent: dict) -> None:
    assert parent["ts"] <= child["ts"] and child["ts"] + child["dur"] <= parent["ts"] + parent["dur"], (child, parent)


def build() -> None:
    with track("build"):
        with track("compile", tags={"lang": "c"}) as ev:
            ev.metric("objects", 7)
            worker = threading.Thread(target=trunk_trace.bind(lambda: track("codegen")(lambda: None)()))
            worker.start()
            worker.join()
        for _ in range(3):
            with track("test"):
                pass


def test_show_writes_one_complete_event_per_block(tmp_path, capsys):
    path = str(tmp_path / "events.jsonl")
    trunk_trace.configure(file=path, summary=False)
    build()
    trunk_trace.shutdown(5)

    assert cli.main(["show", path, "--format", "chrome"]) == 0
    events = json.loads(capsys.readouterr().out)  # a complete JSON array
    lines = list(read_lines(path))
    blocks = complete_events(events)
    assert len(blocks) == len(lines) == 6
    by_name = {}
    for event in blocks:
        by_name.setdefault(event["name"], []).append(event)
    (build_event,), (compile_event,), (codegen,) = by_name["build"], by_name["compile"], by_name["codegen"]
    for child in [compile_event, *by_name["test"]]:
        assert_nested(child, build_event)
    assert_nested(codegen, compile_event)
    tests = sorted(by_name["test"], key=lambda e: e["ts"])
    for earlier, later in zip(tests, tests[1:]):
        assert earlier["ts"] + earlier["dur"] <= later["ts"]  # consecutive blocks do not overlap
    line = next(item for item in lines if item["event"]["sequence"]["name"] == "compile")
    assert compile_event["ts"] == line["event"]["createdAt"] * 1000  # microseconds
    assert compile_event["pid"] == line["pid"] and compile_event["cat"] == "step"
    assert compile_event["args"]["lang"] == "c" and compile_event["args"]["objects"] == 7
    assert compile_event["args"]["trunk.conclusion"] == "SUCCESS"
    # threads are lanes: the worker's block is on a lane of its own, inside 32 bits
    assert codegen["tid"] != compile_event["tid"] == compile_event["pid"]
    assert all(0 < event["tid"] < 2**31 for event in events)
    names = {(e["name"], e["tid"]): e["args"]["name"] for e in events if e["ph"] == "M"}
    assert names[("process_name", build_event["pid"])] == "build"
    assert names[("thread_name", codegen["tid"])] == "codegen"


def test_show_of_a_missing_file_fails_cleanly(tmp_path, capsys):
    assert cli.main(["show", str(tmp_path / "nope.jsonl"), "--format", "chrome"]) == 1
    assert "cannot read" in capsys.readouterr().err


PARENT = """
import subprocess, sys
from trunk_trace import track
CHILD = "from trunk_trace import track\\nwith track('child'):\\n    with track('child step'):\\n        pass"
with track("pipeline"):
    with track("prepare"):
        pass
    with track("fan out"):
        children = [subprocess.Popen([sys.executable, "-c", CHILD]) for _ in range(int(sys.argv[1]))]
        assert all(child.wait() == 0 for child in children)
"""


def run_pipeline(tmp_path, children: int, trace: str):
    script = tmp_path / "pipeline.py"
    script.write_text(textwrap.dedent(PARENT))
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "SYSTEMROOT") if name in os.environ}
    env.update(PYTHONPATH=ROOT, TRUNK_TRACE_CHROME=trace, TRUNK_TRACE_SUMMARY="0")
    done = run_python([str(script), str(children)], env)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_child_processes_append_to_the_file_their_ancestor_named(tmp_path):
    trace = str(tmp_path / "trace.json")
    run_pipeline(tmp_path, 3, trace)
    with open(trace, encoding="utf-8") as file:
        text = file.read()
    assert text.startswith("[") and not text.rstrip().endswith("]")  # open for appending
    events = json.loads(text + "]")  # what `load` does: close the array
    assert events == load(trace)
    blocks = complete_events(events)
    assert len(blocks) == 3 + 3 * 2  # pipeline, prepare, fan out; child and child step per child
    pids = {event["pid"] for event in blocks}
    assert len(pids) == 4  # each process is its own lane
    fan_out = next(e for e in blocks if e["name"] == "fan out")
    children = [e for e in blocks if e["name"] == "child"]
    for child in children:
        assert_nested(child, fan_out)
        step = next(e for e in blocks if e["name"] == "child step" and e["pid"] == child["pid"])
        assert_nested(step, child)
    assert {e["args"]["name"] for e in events if e["name"] == "process_name"} == {"pipeline", "child"}
    assert len({e["pid"] for e in events if e["name"] == "process_name"}) == 4


def test_a_new_run_replaces_the_file_of_an_earlier_one(tmp_path):
    trace = str(tmp_path / "trace.json")
    run_pipeline(tmp_path, 2, trace)
    first = complete_events(load(trace))
    run_pipeline(tmp_path, 2, trace)
    second = complete_events(load(trace))
    assert len(first) == len(second) == 7
    assert min(e["ts"] for e in second) > max(e["ts"] + e["dur"] for e in first)  # only the new run's


def test_the_run_s_later_chains_and_the_live_file_in_process(tmp_path):
    trace = str(tmp_path / "trace.json")
    trunk_trace.configure(chrome=trace, summary=False)
    with track("setup"):
        pass
    trunk_trace.flush(5)
    with track("tests"):  # a second root: another chain of the same run, so the file grows
        with track("unit"):
            pass
    trunk_trace.shutdown(5)
    blocks = complete_events(load(trace))
    assert sorted(e["name"] for e in blocks) == ["setup", "tests", "unit"]
    unit, tests = (next(e for e in blocks if e["name"] == n) for n in ("unit", "tests"))
    assert_nested(unit, tests)


POOL = """
import multiprocessing, sys
from trunk_trace import track

def work(n):
    with track("work"):
        return n

if __name__ == "__main__":
    with multiprocessing.get_context(sys.argv[1]).Pool(2) as pool:  # started outside any block
        with track("main"):
            assert pool.map(work, range(4)) == [0, 1, 2, 3]
"""


def test_pool_workers_with_chains_of_their_own_add_to_the_file(tmp_path):
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        return
    script = tmp_path / "pool.py"
    script.write_text(textwrap.dedent(POOL))
    trace = str(tmp_path / "trace.json")
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "SYSTEMROOT") if name in os.environ}
    env.update(PYTHONPATH=ROOT, TRUNK_TRACE_CHROME=trace, TRUNK_TRACE_SUMMARY="0")
    done = run_python([str(script), "fork"], env)
    assert done.returncode == 0, done.stderr
    assert sorted(e["name"] for e in complete_events(load(trace))) == ["main"] + ["work"] * 4
