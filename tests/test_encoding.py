"""The wire JSON encoded straight from the live event is byte for byte the wire dict's JSON."""

from __future__ import annotations

import json
import math
from time import perf_counter_ns

from hypothesis import given, settings
from hypothesis import strategies as st

from trunk_trace._event import (
    Conclusion,
    Event,
    FinishedEvent,
    RemoteParent,
    encode_wire,
    record_json,
    wire_encoder,
    wire_event,
)
from trunk_trace._track import Block, track
from trunk_trace.exporters.jsonl import encode_line
from trunk_trace.exporters.spool import encode_event, encode_repo, spool_line


def dumps(value: object) -> str:
    """What every output wrote before: json.dumps, compact, UTF-8 text."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Int(int):
    pass


class Text(str):
    pass


# Text that json has to escape, and text it writes as is (non-ASCII, lone surrogates).
awkward = st.sampled_from(['"', "\\", "\n", "\x00", "\x1f", "\x7f", "\u2028", "é", "日本", "\U0001f600", "\ud800", "/"])
text = st.lists(st.one_of(st.text(max_size=8), awkward), max_size=4).map("".join)
names = text.filter(lambda s: s.strip() != "")
floats = st.floats(allow_nan=True, allow_infinity=True)
# What validation lets through, and (for spec tags, common tags) more than it does.
values = st.one_of(
    text, st.integers(), st.integers(min_value=-(10**40), max_value=10**40), floats,
    st.booleans(), st.none(), st.integers().map(Int), text.map(Text), st.sampled_from(list(Conclusion)),
)
pairs = st.lists(st.tuples(st.one_of(names, st.sampled_from(["outcome", "error.type", "ci.branch"])), values), max_size=5)
metrics = st.dictionaries(st.one_of(names, st.sampled_from(["a", "b"])), st.one_of(st.integers(), floats, st.booleans()), max_size=3)


def make_block(draw: st.DrawFn) -> Block:
    block = track("x")
    block.name = draw(names)
    block.kind = draw(st.one_of(st.none(), names))
    block.key = draw(st.one_of(st.none(), names, st.text(min_size=128, max_size=300)))
    block.tags = dict(draw(pairs)) or None
    block.metrics = draw(metrics) or None
    return block


@st.composite
def events(draw: st.DrawFn) -> Event:
    parent_kind = draw(st.sampled_from(["none", "event", "remote"]))
    parent: Event | RemoteParent | None = None
    if parent_kind == "event":
        parent = Event(make_block(draw), None)
        parent._id = draw(st.one_of(st.integers(min_value=0, max_value=2**128 - 1), names))
        parent._start = perf_counter_ns()
    elif parent_kind == "remote":
        parent = RemoteParent(draw(names), draw(names), draw(names))
    ev = Event(make_block(draw), parent)
    ev._id = draw(st.one_of(st.integers(min_value=0, max_value=2**128 - 1), names))
    ev._start = draw(st.integers(min_value=-(10**15), max_value=10**18))
    ev._end = ev._start + draw(st.integers(min_value=0, max_value=10**15))
    ev._tags = dict(draw(pairs)) or None
    ev._metrics = draw(metrics) or None
    ev._error = draw(st.one_of(st.none(), st.tuples(text, text)))
    ev._conclusion = draw(st.one_of(st.none(), st.sampled_from(list(Conclusion))))
    ev._outcome = draw(st.one_of(st.none(), st.sampled_from(list(Conclusion))))
    return ev


@settings(max_examples=400, deadline=None)
@given(events(), st.one_of(names, text.map(Text)), st.lists(st.tuples(st.one_of(names, st.just("outcome")), values), max_size=6))
def test_encode_wire_is_the_wire_dict_json(ev: Event, platform: str, common: list) -> None:
    common_tags = tuple(common)
    expected = dumps(wire_event(ev, platform, common_tags))
    assert encode_wire(ev, platform, common_tags) == expected
    assert encode_wire(ev, platform, common_tags) == expected  # again, with the common tags cached
    assert encode_wire(ev, platform, list(common_tags)) == expected  # any iterable, never cached
    assert wire_encoder().encode(wire_event(ev, platform, common_tags)) == expected


def test_non_finite_and_odd_values_go_through_the_encoder() -> None:
    ev = Event(track("step"), None)
    ev._id, ev._start, ev._end = 1, 0, 5
    ev._tags = {"nan": math.nan, "inf": -math.inf, "yes": True, "none": None, "int": Int(3), "text": Text("t")}
    ev._metrics = {"m": math.inf}
    expected = dumps(wire_event(ev, "local"))
    assert '"v":NaN' in expected and '"v":-Infinity' in expected and '"v":true' in expected
    assert encode_wire(ev, "local") == expected


def test_siblings_and_cousins_each_name_their_own_parent() -> None:
    root = Event(track("build"), None)
    root._id, root._start = 1, 0
    other = RemoteParent("remote-id", "remote/key", "chain")
    children = []
    for n, parent in enumerate([root, root, other, root, other, other]):
        ev = Event(track(f"step{n}"), parent)
        ev._id, ev._start, ev._end = 10 + n, 1, 2
        children.append(ev)
    for ev in children:
        assert encode_wire(ev, "local") == dumps(wire_event(ev, "local"))


@settings(max_examples=100, deadline=None)
@given(events(), st.booleans())
def test_finished_event_json_agrees_with_its_dict(ev: Event, dict_first: bool) -> None:
    record = FinishedEvent(ev, 7, "local", (("ci.branch", "main"),))
    if dict_first:
        assert json.loads(record.json) == json.loads(dumps(record.event))
    assert record.json == dumps(record.event) == record_json(record)
    assert record.json is record.json  # encoded once


class Record:
    """A duck-typed record (what tests and user code may hand an exporter): only ``event``."""

    def __init__(self, event: dict) -> None:
        self.event, self.pid, self.thread_id = event, 3, 4


@settings(max_examples=100, deadline=None)
@given(events(), st.one_of(st.none(), st.fixed_dictionaries({"host": text, "owner": text, "name": text})))
def test_lines_are_json_dumps_of_the_line(ev: Event, repo: dict | None) -> None:
    record = FinishedEvent(ev, 12, "local")
    line = {"repo": repo, "pid": record.pid, "thread": record.thread_id, "event": record.event}
    expected = dumps(line) + "\n"
    assert encode_line(record, repo) == expected
    assert encode_line(Record(record.event), repo) == dumps({**line, "pid": 3, "thread": 4}) + "\n"
    assert spool_line(encode_repo(repo), record.pid, record.thread_id, record.json) == expected
    assert spool_line(encode_repo(repo), record.pid, record.thread_id, encode_event(record.event)) == expected
