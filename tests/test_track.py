"""track(): the with, async with and decorator forms, nesting, and the events they make."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys

import pytest

import trunk_trace
from trunk_trace import Conclusion, current, track
from trunk_trace.testing import capture


def by_name(events):
    return {e["sequence"]["name"]: e for e in events}


def test_nested_blocks_form_a_chain():
    with capture() as events:
        with track("build") as build:
            with track("compile") as compile_:
                assert current() is compile_
            assert current() is build
        assert current() is None
    compile_event, build_event = events
    assert build_event["id"] == build_event["chainId"] == build.id
    assert "parent" not in build_event
    assert compile_event["chainId"] == build.id
    assert compile_event["parent"] == {"eventId": build.id, "sequenceKey": "build"}
    assert compile_event["sequence"]["key"] == "build/compile"
    assert build_event["sequence"]["kind"] == "pipeline"
    assert compile_event["sequence"]["kind"] == "step"
    assert compile_event["sequence"]["platform"] == "local"
    assert build_event["createdAt"] <= compile_event["createdAt"] <= compile_event["finishedAt"] <= build_event["finishedAt"]


def test_wire_shape_is_exactly_the_contract():
    with capture() as events:
        with track("build", kind="job", tags={"target": "x"}, metrics={"files": 3}) as ev:
            ev.tag("flag", True)
            ev.metric("ratio", 0.5)
    (event,) = events
    assert set(event) == {"id", "chainId", "createdAt", "finishedAt", "conclusion", "payload", "sequence"}
    assert isinstance(event["createdAt"], int) and isinstance(event["finishedAt"], int)
    assert event["conclusion"] == "SUCCESS"
    assert event["sequence"] == {
        "platform": "local", "kind": "job", "key": "build", "name": "build", "payload": {"tags": []},
    }
    metrics = {m["k"]: m["v"] for m in event["payload"]["metrics"]}
    assert set(metrics) == {"duration_ms", "files", "ratio"}
    assert metrics["files"] == 3 and metrics["ratio"] == 0.5 and metrics["duration_ms"] >= 0
    assert event["payload"]["tags"] == [{"k": "target", "v": "x"}, {"k": "flag", "v": "true"}]


def test_key_override_and_children_extend_it():
    with capture() as events:
        with track("build", key="ci/build"):
            with track("compile"):
                pass
    assert [e["sequence"]["key"] for e in events] == ["ci/build/compile", "ci/build"]


def test_repeated_siblings_share_a_key_but_not_an_id():
    with capture() as events:
        with track("build"):
            for _ in range(3):
                with track("step"):
                    pass
    steps = events[:3]
    assert {e["sequence"]["key"] for e in steps} == {"build/step"}
    assert len({e["id"] for e in events}) == 4


def test_long_keys_are_shortened_and_stay_distinct():
    long_a, long_b = "a" * 200 + "x", "a" * 200 + "y"
    with capture() as events:
        with track("root"):
            with track(long_a) as a:
                pass
            with track(long_b) as b:
                pass
    keys = [e["sequence"]["key"] for e in events[:2]]
    assert all(len(k) < 128 for k in keys)
    assert keys[0] != keys[1]
    assert keys[0].startswith("root/aaaa") and a.key == keys[0] and b.key == keys[1]
    # Deterministic across runs: the same path gives the same key.
    with capture() as again:
        with track("root"):
            with track(long_a):
                pass
    assert again[0]["sequence"]["key"] == keys[0]


@pytest.mark.parametrize(
    "exc, conclusion",
    [
        (ValueError("boom"), "FAILURE"),
        (KeyboardInterrupt(), "CANCELLED"),
        (asyncio.CancelledError(), "CANCELLED"),
        (TimeoutError(), "TIMED_OUT"),
        (subprocess.TimeoutExpired("cmd", 1), "TIMED_OUT"),
        (SystemExit(0), "SUCCESS"),
        (SystemExit(None), "SUCCESS"),
        (SystemExit(3), "FAILURE"),
        (SystemExit("message"), "FAILURE"),
    ],
)
def test_conclusions_and_exceptions_propagate_unchanged(exc, conclusion):
    with capture() as events:
        with pytest.raises(type(exc)) as raised:
            with track("step"):
                raise exc
    assert raised.value is exc
    assert events[0]["conclusion"] == conclusion
    tags = {t["k"]: t["v"] for t in events[0]["payload"]["tags"]}
    if conclusion == "SUCCESS":
        assert "error.type" not in tags
    else:
        assert tags["error.type"] == type(exc).__qualname__ if type(exc).__module__ == "builtins" else tags["error.type"].endswith(type(exc).__qualname__)


def test_error_message_is_trimmed():
    with capture() as events:
        with pytest.raises(RuntimeError):
            with track("step"):
                raise RuntimeError("x" * 5000)
    tags = {t["k"]: t["v"] for t in events[0]["payload"]["tags"]}
    assert tags["error.type"] == "RuntimeError"
    assert len(tags["error.message"]) <= 500 and tags["error.message"].endswith("...[trimmed]")


def test_set_conclusion_wins_over_automatic():
    with capture() as events:
        with track("skipped") as ev:
            ev.conclusion = Conclusion.SKIPPED
        with pytest.raises(ValueError):
            with track("flaky") as ev:
                ev.conclusion = "SUCCESS"
                raise ValueError
    assert [e["conclusion"] for e in events] == ["SKIPPED", "SUCCESS"]
    with pytest.raises(ValueError, match="conclusion"):
        ev.conclusion = "MAYBE"


def test_event_handle_after_exit_reports_conclusion():
    with capture():
        with track("a") as ev:
            assert ev.conclusion is None and not ev.finished
    assert ev.finished and ev.conclusion is Conclusion.SUCCESS
    assert "a" in repr(ev)


# --- decorators ---


def test_bare_and_called_decorators_keep_metadata():
    @track
    def plain(a: int, b: str = "x") -> str:
        """Doc."""
        return f"{a}{b}"

    @track("named", kind="task")
    def named(*, c: float) -> float:
        return c

    assert plain.__name__ == "plain" and plain.__doc__ == "Doc."
    assert inspect.signature(plain) == inspect.signature(plain.__wrapped__)
    assert list(inspect.signature(plain).parameters) == ["a", "b"]
    assert str(inspect.signature(named)) == "(*, c: 'float') -> 'float'"
    with capture() as events:
        assert plain(1) == "1x"
        assert named(c=2.5) == 2.5
    assert events[0]["sequence"]["name"].endswith("plain")
    assert events[0]["sequence"]["name"] == plain.__qualname__
    assert events[1]["sequence"]["name"] == "named" and events[1]["sequence"]["kind"] == "task"


def test_decorated_function_raising_is_failure_and_propagates():
    @track("explode")
    def explode():
        raise KeyError("k")

    with capture() as events:
        with pytest.raises(KeyError):
            explode()
    assert events[0]["conclusion"] == "FAILURE"


class Service:
    @track
    def method(self, x):
        return (self, x)

    @track
    @classmethod
    def klass(cls, x):
        return (cls, x)

    @track
    @staticmethod
    def static(x):
        return x

    @track("async-method")
    async def amethod(self):
        return current().name


def test_methods_classmethods_staticmethods():
    service = Service()
    with capture() as events:
        assert service.method(1) == (service, 1)
        assert Service.klass(2) == (Service, 2)
        assert service.klass(3) == (Service, 3)
        assert Service.static(4) == 4 and service.static(5) == 5
        assert asyncio.run(service.amethod()) == "async-method"
    names = [e["sequence"]["name"] for e in events]
    assert names == ["Service.method", "Service.klass", "Service.klass", "Service.static", "Service.static", "async-method"]


def test_async_function_measures_its_whole_run():
    @track("sleepy")
    async def sleepy():
        await asyncio.sleep(0.05)
        return current().name

    assert inspect.iscoroutinefunction(sleepy)
    with capture() as events:
        assert asyncio.run(sleepy()) == "sleepy"
    duration = events[0]["payload"]["metrics"][0]["v"]
    assert duration >= 45  # the decorator spans the awaits, unlike @contextmanager


def test_generator_spans_iteration_and_consumer_keeps_its_context():
    @track("produce")
    def produce(n):
        for i in range(n):
            assert current().name == "produce"
            yield i
        return "done"

    assert inspect.isgeneratorfunction(produce)
    with capture() as events:
        with track("consume") as consumer:
            gen = produce(3)
            assert not events  # not started before iteration starts
            seen = []
            for value in gen:
                assert current() is consumer
                seen.append(value)
    assert seen == [0, 1, 2]
    produce_event, consume_event = events
    assert produce_event["conclusion"] == "SUCCESS"
    assert produce_event["parent"]["eventId"] == consumer.id


def test_generator_return_value_send_and_throw():
    @track
    def echo():
        received = []
        try:
            while True:
                value = yield len(received)
                received.append(value)
        except ValueError:
            yield "caught"
        return received

    with capture() as events:
        gen = echo()
        assert next(gen) == 0
        assert gen.send("a") == 1
        assert gen.throw(ValueError("x")) == "caught"
        with pytest.raises(StopIteration) as stop:
            next(gen)
    assert stop.value.value == ["a"]
    assert events[0]["conclusion"] == "SUCCESS"


def test_generator_closed_early_is_success_and_raising_is_failure():
    @track("gen")
    def gen():
        yield 1
        yield 2
        raise RuntimeError("late")

    with capture() as events:
        g = gen()
        next(g)
        g.close()
        with pytest.raises(RuntimeError):
            list(gen())
    assert [e["conclusion"] for e in events] == ["SUCCESS", "FAILURE"]


def test_blocks_inside_a_generator_nest_under_it_across_yields():
    @track("outer-gen")
    def gen():
        with track("inner") as inner:
            yield 1
            assert current() is inner
            yield 2

    with capture() as events:
        assert list(gen()) == [1, 2]
    inner_event, gen_event = events
    assert inner_event["parent"]["eventId"] == gen_event["id"]


def test_async_generator():
    @track("agen")
    async def agen():
        for i in range(3):
            await asyncio.sleep(0)
            assert current().name == "agen"
            yield i

    assert inspect.isasyncgenfunction(agen)

    async def consume():
        async with track("consume") as consumer:
            out = []
            async for value in agen():
                assert current() is consumer
                out.append(value)
            early = agen()
            await early.__anext__()
            await early.aclose()
            return out

    with capture() as events:
        assert asyncio.run(consume()) == [0, 1, 2]
    assert [e["sequence"]["name"] for e in events] == ["agen", "agen", "consume"]
    assert all(e["conclusion"] == "SUCCESS" for e in events)


def test_async_with():
    async def main():
        async with track("download") as ev:
            await asyncio.sleep(0.01)
            assert current() is ev
        return ev

    with capture() as events:
        ev = asyncio.run(main())
    assert events[0]["id"] == ev.id


def test_same_block_object_reentered():
    block = track("again")
    with capture() as events:
        with block as outer:
            with block as inner:
                assert current() is inner
            assert current() is outer
    assert events[0]["parent"]["eventId"] == outer.id


# --- bad input ---


@pytest.mark.parametrize("name, error", [("", ValueError), ("   ", ValueError), (3, TypeError), (b"x", TypeError)])
def test_bad_names(name, error):
    with pytest.raises(error, match="name"):
        track(name)


def test_with_requires_a_name():
    with pytest.raises(TypeError, match="name"):
        with track():
            pass


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"tags": {"": "v"}}, ValueError, "tags"),
        ({"tags": {1: "v"}}, TypeError, "tags"),
        ({"tags": {"k": [1]}}, TypeError, "'k'"),
        ({"tags": {"k": float("nan")}}, ValueError, "finite"),
        ({"metrics": {"m": "1"}}, TypeError, "'m'"),
        ({"metrics": {"m": True}}, TypeError, "bool"),
        ({"metrics": {"m": float("inf")}}, ValueError, "finite"),
        ({"metrics": {"duration_ms": 1}}, ValueError, "duration_ms"),
        ({"tags": ["k"]}, TypeError, "mapping"),
        ({"kind": ""}, ValueError, "kind"),
        ({"key": 5}, TypeError, "key"),
    ],
)
def test_bad_arguments_raise_at_the_call_site(kwargs, error, words):
    with pytest.raises(error, match=words):
        track("step", **kwargs)


def test_bad_tag_and_metric_calls_name_the_argument():
    with capture():
        with track("step") as ev:
            with pytest.raises(TypeError, match="tag 'k'"):
                ev.tag("k", object())
            with pytest.raises(ValueError, match="tag key"):
                ev.tag("", 1)
            with pytest.raises(ValueError, match="metric 'm'"):
                ev.metric("m", float("-inf"))
            with pytest.raises(TypeError, match="metric 'm'"):
                ev.metric("m", None)


def test_tag_values_are_normalised_and_trimmed():
    import enum

    class Colour(str, enum.Enum):
        RED = "red"

    with capture() as events:
        with track("step") as ev:
            ev.tag("long", "y" * 5000)
            ev.tag("enum", Colour.RED)
            ev.tag("no", False)
            ev.tag("int", 7)
    tags = {t["k"]: t["v"] for t in events[0]["payload"]["tags"]}
    assert len(tags["long"]) == 1024 and tags["long"].endswith("...[trimmed]")
    assert tags["enum"] == "red" and type(tags["enum"]) is str
    assert tags["no"] == "false" and tags["int"] == 7


def test_decorating_a_non_callable_is_an_error():
    with pytest.raises(TypeError, match="decorate"):
        track("x")(42)


# --- disabled ---


def test_disabled_blocks_run_code_and_record_nothing(monkeypatch):
    monkeypatch.setenv("TRUNK_TRACE_DISABLED", "1")
    exporter = trunk_trace.testing.InMemoryExporter()
    trunk_trace.configure(exporters=[exporter], summary=False)
    calls = []

    @track
    def work():
        calls.append(1)
        return current()

    with track("block") as ev:
        ev.tag("k", "v")
        ev.metric("m", 1)
        assert current() is None
        assert work() is None
    with pytest.raises(ValueError):
        with track("failing"):
            raise ValueError
    with pytest.raises(TypeError):
        ev.tag("k", object())  # misuse still raises while disabled
    trunk_trace.flush()
    assert calls == [1] and exporter.events == []


def test_configure_enabled_false():
    exporter = trunk_trace.testing.InMemoryExporter()
    trunk_trace.configure(enabled=False, exporters=[exporter])
    with track("x"):
        pass
    trunk_trace.flush()
    assert exporter.events == []


def test_capture_works_even_when_disabled_and_restores(monkeypatch):
    monkeypatch.setenv("TRUNK_TRACE_DISABLED", "true")
    with capture() as events:
        with track("x"):
            pass
    assert len(events) == 1
    with track("after"):
        assert current() is None


def test_import_is_light():
    code = (
        "import sys, trunk_trace\n"
        "heavy = [m for m in ('attrs', 'urllib3', 'wrapt', 'asyncio', 'threading_x') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
        "print(sum(1 for t in __import__('threading').enumerate()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == ""  # none of the heavy modules is imported by `import trunk_trace`
    assert out[1] == "1"  # and no thread started
