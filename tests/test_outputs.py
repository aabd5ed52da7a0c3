"""The local outputs: the timing summary and the JSON Lines file."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap

import pytest

import trunk_trace
from trunk_trace import track
from trunk_trace.exporters.console import ConsoleSummary, Summary
from trunk_trace.exporters.jsonl import JsonLinesExporter, load_events
from trunk_trace.testing import InMemoryExporter, capture


def run_script(code: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TRUNK_", "CI", "GITHUB_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full_env, timeout=timeout
    )


def make_event(key, name, start, end, conclusion="SUCCESS", parent_key=None):
    event = {
        "id": key + str(start), "chainId": "c", "createdAt": start, "finishedAt": end, "conclusion": conclusion,
        "payload": {"metrics": [{"k": "duration_ms", "v": float(end - start)}], "tags": []},
        "sequence": {"platform": "local", "kind": "step", "key": key, "name": name, "payload": {"tags": []}},
    }
    if parent_key:
        event["parent"] = {"eventId": "p", "sequenceKey": parent_key}
    return event


def test_summary_tree_folds_repeats_and_draws_a_waterfall():
    summary = Summary()
    for i in range(3):
        summary.add_wire(make_event("build/test", "test", 1000 + i * 100, 1050 + i * 100, "FAILURE" if i == 1 else "SUCCESS", "build"))
    summary.add_wire(make_event("build/compile", "compile", 500, 1000, parent_key="build"))
    summary.add_wire(make_event("build", "build", 0, 2000))
    text = summary.render(colour=False, unicode=False, width=20)
    lines = text.splitlines()
    assert lines[0] == "trunk_trace: 5 events in 2.00 s"
    build, compile_, test = lines[1:]
    assert build.split()[:4] == ["build", "2.00", "s", "SUCCESS"]
    assert build.endswith("|" + "#" * 20 + "|")
    assert compile_.startswith("    compile") and "500 ms" in compile_
    assert compile_.endswith("|     #####          |")  # 500..1000 of 0..2000 on 20 columns
    assert "150 ms" in test and "FAILURE 1/3" in test and "x3, longest 50 ms" in test


def test_summary_bounds_distinct_steps():
    summary = Summary(max_nodes=10)
    for i in range(1000):
        summary.add_wire(make_event(f"root/s{i}", f"s{i}", i, i + 1, parent_key="root"))
    summary.add_wire(make_event("root", "root", 0, 1001))
    assert len(summary.nodes) == 12  # 10 steps, their parent, one "other steps"
    lines = summary.render().splitlines()
    assert lines[1].split()[0] == "root"
    assert lines[-1].startswith("    (other steps)") and "x990" in lines[-1]


def test_summary_colour_only_when_asked():
    summary = Summary()
    summary.add_wire(make_event("a", "a", 0, 10, "FAILURE"))
    assert "\x1b[31m" in summary.render(colour=True)
    assert "\x1b[" not in summary.render(colour=False)


def test_summary_of_live_events_matches_the_one_of_their_wire_form():
    # The exporter folds the live events directly; `trunk-trace show` folds wire dicts.
    # Both must build the same tree.
    live = ConsoleSummary(stream=io.StringIO())
    recorded = InMemoryExporter()
    trunk_trace.configure(exporters=[live, recorded], summary=False)
    with track("build"):
        for attempt in range(3):
            try:
                with track("test", tags={"attempt": attempt}) as ev:
                    if attempt == 1:
                        raise ValueError("flaky")
                    if attempt == 2:
                        ev.conclusion = trunk_trace.Conclusion.SKIPPED
            except ValueError:
                pass
        with track("package"):
            pass
    trunk_trace.flush()
    from_wire = Summary()
    for event in recorded.events:
        from_wire.add_wire(event)

    def shape(summary):
        return {key: (n.name, n.parent_key, n.count, n.conclusion, n.failures) for key, n in summary.nodes.items()}

    assert shape(live._summary) == shape(from_wire) == {
        "build": ("build", None, 1, "SUCCESS", 0),
        "build/test": ("test", "build", 3, "FAILURE", 1),
        "build/package": ("package", "build", 1, "SUCCESS", 0),
    }
    assert live._summary.events == from_wire.events == 5


def test_exporters_of_one_batch_share_its_records():
    seen = []

    class Keeper:
        def export(self, records):
            seen.append((len(records), list(records), records[0]))

        def force_flush(self, timeout=None):
            return True

        def shutdown(self, timeout=None):
            pass

    trunk_trace.configure(exporters=[Keeper(), Keeper()], summary=False)
    for _ in range(3):
        with track("step"):
            pass
    trunk_trace.flush()
    (count_a, records_a, first_a), (count_b, records_b, first_b) = seen
    assert count_a == count_b == len(records_a) == 3
    assert all(a is b for a, b in zip(records_a, records_b))  # made once, then shared
    assert first_a is records_a[0] and first_b is records_b[0]
    assert [r.name for r in records_a] == ["step"] * 3


def test_console_exporter_prints_at_shutdown_only():
    stream = io.StringIO()
    exporter = ConsoleSummary(stream=stream)
    trunk_trace.configure(exporters=[exporter], summary=False)
    with track("build"):
        with track("compile"):
            pass
    trunk_trace.flush()
    assert stream.getvalue() == ""
    trunk_trace.shutdown()
    text = stream.getvalue()
    assert "build" in text and "  compile" in text and "TRUNK_API_TOKEN is not set" in text
    trunk_trace.shutdown()  # idempotent: nothing printed twice
    assert stream.getvalue() == text


def test_summary_at_exit_of_a_script():
    result = run_script(
        """
        from trunk_trace import track
        with track("build"):
            with track("compile"):
                pass
            for _ in range(2):
                with track("test"):
                    pass
        raise SystemExit(3)
        """
    )
    assert result.returncode == 3  # the build's exit code is untouched
    assert "trunk_trace: 4 events" in result.stderr
    assert "  build" in result.stderr and "    test" in result.stderr and "x2" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("env, shown", [({"TRUNK_TRACE_SUMMARY": "0"}, False), ({"TRUNK_TRACE_SUMMARY": "1", "TRUNK_API_TOKEN": "t"}, True)])
def test_summary_switch(env, shown, tmp_path):
    env = dict(env, TRUNK_TRACE_SPOOL_DIR=str(tmp_path), TRUNK_PUBLIC_API_ADDRESS="http://127.0.0.1:9", TRUNK_REPO_URL="github.com/o/r")
    result = run_script("from trunk_trace import track\nwith track('x'):\n    pass\n", env)
    assert result.returncode == 0
    assert ("trunk_trace: 1 event" in result.stderr) is shown


def test_jsonl_file_holds_every_event(tmp_path):
    path = tmp_path / "events.jsonl"
    trunk_trace.configure(file=str(path), summary=False)
    with capture() as expected:
        pass
    with track("build") as build:
        with track("compile", tags={"k": "v"}):
            pass
    trunk_trace.flush()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["event"]["sequence"]["key"] for line in lines] == ["build/compile", "build"]
    assert all(set(line) == {"repo", "pid", "thread", "event"} for line in lines)
    assert lines[1]["event"]["id"] == build.id
    assert lines[0]["pid"] == os.getpid()
    assert load_events(str(path)) == [line["event"] for line in lines]
    assert expected == []


def test_jsonl_concurrent_processes_never_interleave(tmp_path):
    path = tmp_path / "shared.jsonl"
    code = f"""
        import threading
        from trunk_trace import track, configure
        configure(file={str(path)!r}, summary=False)
        def work(n):
            for i in range(300):
                with track("step " + "x" * 300, tags={{"n": n, "i": i}}):
                    pass
        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
    """
    procs = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env={k: v for k, v in os.environ.items() if not k.startswith("TRUNK_")})
        for _ in range(4)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    lines = path.read_text().splitlines()
    assert len(lines) == 4 * 4 * 300
    events = [json.loads(line)["event"] for line in lines]  # every line is whole JSON
    assert len({e["id"] for e in events}) == len(events)


def test_jsonl_unwritable_path_is_reported_not_raised(tmp_path, caplog):
    target = tmp_path / "dir"
    target.mkdir()
    exporter = JsonLinesExporter(str(target))  # a directory: open fails
    trunk_trace.configure(exporters=[exporter], summary=False)
    with track("x"):
        pass
    trunk_trace.flush()
    assert "cannot write" in caplog.text
    assert trunk_trace._report.dropped() == 1
