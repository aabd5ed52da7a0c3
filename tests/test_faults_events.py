"""One bad event never costs another: strings UTF-8 cannot encode, numbers JSON cannot carry,
blocks nested past the recursion limit, a batch a sender cannot handle, and an exact lost count."""

from __future__ import annotations

import json
import numbers
import os
import re
import textwrap
import time
from fractions import Fraction
from typing import NamedTuple

import pytest
from helpers import clean_env, events_in, tags_of
from sink import TOKEN, Sink, run_python, script_env, spooled_ids

from trunk_trace import track
from trunk_trace._report import dropped
from trunk_trace.exporters import chrome
from trunk_trace.exporters.http import TrunkHttpExporter
from trunk_trace.exporters.spool import Spool
from trunk_trace.testing import capture


def script(tmp_path, body: str) -> str:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


# --- strings UTF-8 cannot encode ---


def test_lone_surrogates_are_escaped_and_cost_no_event(tmp_path):
    # A file name that is not UTF-8, as os.listdir returns it (with a surrogate escape).
    directory = tmp_path / "files"
    directory.mkdir()
    with open(os.path.join(os.fsencode(directory), b"f\xffile"), "wb"):
        pass
    path = script(tmp_path, f"""
        import os, trunk_trace
        from trunk_trace import track
        with track("name \\ud800", tags={{"key \\ud800": "value \\udcff"}}) as ev:
            ev.tag("later", "x\\ud800")
            ev.metric("m \\ud800", 1)
        for i in range(1100):
            with track(f"step {{i}}"):
                pass
        try:
            with track("fails"):
                raise ValueError("message \\ud800")
        except ValueError:
            pass
        [name] = os.listdir({str(directory)!r})
        trunk_trace.run(["ls", name], cwd={str(directory)!r}, capture_output=True)
    """)
    events_file = tmp_path / "events.jsonl"
    with Sink() as sink:
        env = script_env(sink.url, str(tmp_path / "spool"), TRUNK_TRACE_FILE=str(events_file), TRUNK_TRACE_SUMMARY="1")
        done = run_python([path], env)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr and "failed" not in done.stderr, done.stderr
        written = events_in(events_file)
        assert len(written) == 1103
        sent = sink.ids()
        assert sorted(sent) == sorted(e["id"] for e in written)
    by_name = {e["sequence"]["name"]: e for e in written}
    # The rule: each character UTF-8 cannot encode becomes its backslash escape.
    marked = by_name["name \\ud800"]
    assert tags_of(marked) == {"key \\ud800": "value \\udcff", "later": "x\\ud800"}
    assert [m["k"] for m in marked["payload"]["metrics"]] == ["duration_ms", "m \\ud800"]
    assert tags_of(by_name["fails"])["error.message"] == "message \\ud800"
    assert by_name["ls 'f\\udcffile'"]["payload"]["tags"] == [{"k": "exit_code", "v": 0}]
    assert "name \\ud800" in done.stderr  # the summary shows it too


class Record(NamedTuple):
    """A record as an exporter reads it (the protocol is duck-typed)."""

    event: dict
    pid: int
    thread_id: int


def record(event_id: str, name: str = "n") -> Record:
    return Record({"id": event_id, "chainId": "c", "createdAt": 1, "finishedAt": 2, "conclusion": "SUCCESS",
                   "payload": {"metrics": [], "tags": []},
                   "sequence": {"platform": "local", "kind": "step", "key": "k", "name": name, "payload": {"tags": []}}},
                  1, 2)


def test_a_batch_the_sender_cannot_send_or_spool_costs_only_its_bad_event(tmp_path, caplog):
    spool_dir = str(tmp_path / "spool")
    with Sink() as sink:
        ex = TrunkHttpExporter(TOKEN, sink.url, {"host": "github.com", "owner": "acme", "name": "widgets"},
                               Spool(spool_dir), senders=1, replay=False)
        # An exporter given records it did not make (here, a string UTF-8 cannot encode).
        ex.export([record("good-0"), record("bad", name="\ud800"), record("good-1")])
        end = time.monotonic() + 10
        while dropped() == 0 and time.monotonic() < end:
            time.sleep(0.01)
        ex.export([record("after")])
        assert sink.wait_for(1)  # the sender thread lives on
        ex.shutdown(5)
        assert sink.ids() == ["after"]
    assert sorted(spooled_ids(spool_dir)) == ["good-0", "good-1"]  # its batch mates are kept
    assert dropped() == 1  # exactly the event that cannot be written anywhere
    assert caplog.text.count("a bug in trunk_trace's sender") == 1


# --- numbers: a finite value a 64-bit float can hold ---


class Float32Like:
    """Stands for numpy.float32: a numbers.Real that is not a float."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __float__(self) -> float:
        return self.value


class Int64Like:
    """Stands for numpy.int64: a numbers.Integral that is not an int."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __int__(self) -> int:
        return self.value

    __index__ = __int__


numbers.Real.register(Float32Like)
numbers.Integral.register(Int64Like)


def test_any_finite_real_number_is_accepted_as_metric_or_tag():
    with capture() as events:
        with track("numbers", metrics={"fraction": Fraction(1, 4), "int64": Int64Like(7)},
                   tags={"float32": Float32Like(0.5), "big": 2**100}) as ev:
            ev.metric("float32", Float32Like(1.5))
            ev.tag("int64", Int64Like(-3))
    [event] = events
    metrics = {m["k"]: m["v"] for m in event["payload"]["metrics"]}
    assert metrics["fraction"] == 0.25 and metrics["int64"] == 7 and metrics["float32"] == 1.5
    assert tags_of(event) == {"float32": 0.5, "big": 2**100, "int64": -3}


UNCARRIABLE = {
    "int of 5,001 digits": 10**5000, "int below -1e400": -(10**400), "2**1024": 2**1024,
    "huge Fraction": Fraction(10**5000), "Fraction below -1e400": Fraction(-(10**400), 3),
    "huge numbers.Integral": Int64Like(10**5000), "infinite numbers.Real": Float32Like(float("inf")), "nan": float("nan"),
}


@pytest.mark.parametrize("value", UNCARRIABLE.values(), ids=UNCARRIABLE.keys())
def test_a_number_json_cannot_carry_is_rejected_at_the_call_site(value):
    with pytest.raises(ValueError, match="'m'.*finite number"):
        track("x", metrics={"m": value})
    with pytest.raises(ValueError, match="'m'.*finite number"):
        track("x", tags={"m": value})
    with capture() as events:
        with track("ok") as ev:
            with pytest.raises(ValueError, match="'m'"):
                ev.metric("m", value)
            with pytest.raises(ValueError, match="'m'"):
                ev.tag("m", value)
    assert len(events) == 1 and json.loads(json.dumps(events[0])) == events[0]


def test_bools_and_other_types_are_not_numbers():
    import decimal

    for value in (True, decimal.Decimal(1), "1"):
        with pytest.raises(TypeError, match="real number"):
            track("x", metrics={"m": value})


# --- deep nesting ---


@pytest.mark.parametrize("keys", [False, True])
def test_five_thousand_nested_blocks_are_all_recorded(tmp_path, keys):
    path = script(tmp_path, f"""
        import contextlib
        from trunk_trace import track
        with contextlib.ExitStack() as stack:
            for i in range(5000):
                stack.enter_context(track(f"n{{i}}", key=f"k{{i}}" if {keys} else None))
    """)
    events_file = tmp_path / "events.jsonl"
    trace_file = tmp_path / "trace.json"
    done = run_python([path], clean_env(TRUNK_TRACE_FILE=str(events_file), TRUNK_TRACE_CHROME=str(trace_file)))
    assert done.returncode == 0
    assert sum(1 for e in chrome.load(str(trace_file)) if e["ph"] == "X") == 5000
    assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr, done.stderr[-2000:]
    written = events_in(events_file)
    assert len(written) == 5000
    deepest = next(e for e in written if e["sequence"]["name"] == "n4999")
    assert deepest["parent"]["sequenceKey"] == ("k4998" if keys else deepest["parent"]["sequenceKey"])
    if not keys:
        assert len(deepest["sequence"]["key"]) <= 127  # the 5,000-name path, shortened
    assert done.stderr.startswith("trunk_trace: 5000 events in")  # the summary, whole
    assert done.stderr.endswith("(not sent to Trunk: TRUNK_API_TOKEN is not set)\n")


# --- the lost count ---


def test_the_lost_count_is_exact_when_the_exit_budget_runs_out(tmp_path):
    total = 100_000
    path = script(tmp_path, f"""
        from trunk_trace import track
        for i in range({total}):
            with track(f"s{{i % 50}}"):
                pass
    """)
    events_file = tmp_path / "events.jsonl"
    spool_dir = str(tmp_path / "spool")
    with Sink() as sink:
        env = script_env(sink.url, spool_dir, TRUNK_TRACE_FILE=str(events_file), TRUNK_TRACE_EXIT_TIMEOUT="0.5")
        done = run_python([path], env, timeout=120)
        assert done.returncode == 0, done.stderr
        delivered = set(sink.ids()) | set(spooled_ids(spool_dir))
    written = {e["id"] for e in events_in(events_file)}
    match = re.search(r"(\d+) event\(s\) could not be recorded or kept", done.stderr)
    lost = int(match.group(1)) if match else 0
    assert written == delivered
    assert len(written) + lost == total, done.stderr
