"""Context across threads and asyncio tasks, and property tests over random trees of blocks."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from hypothesis import given, settings
from hypothesis import strategies as st

import trunk_trace
from trunk_trace import current, track
from trunk_trace.testing import capture


def test_threads_do_not_inherit_without_bind():
    seen = []
    with capture():
        with track("main"):
            thread = threading.Thread(target=lambda: seen.append(current()))
            thread.start()
            thread.join()
    assert seen == [None]


def test_bind_carries_the_open_event_into_threads_and_executors():
    with capture() as events:
        with track("compile") as compile_:
            with ThreadPoolExecutor(max_workers=4) as pool:
                def work(i):
                    with track(f"unit {i}"):
                        return current().parent

                parents = list(pool.map(trunk_trace.bind(work), range(8)))
            threads = [threading.Thread(target=trunk_trace.bind(work), args=(100 + i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    assert all(p is compile_ for p in parents)
    units = [e for e in events if e["sequence"]["name"].startswith("unit")]
    assert len(units) == 16
    assert all(e["parent"]["eventId"] == compile_.id and e["chainId"] == compile_.id for e in units)
    assert all(e["sequence"]["key"].startswith("compile/unit ") for e in units)


def test_bind_keeps_the_wrapped_function_metadata():
    def job():
        """Doc."""

    bound = trunk_trace.bind(job)
    assert bound.__name__ == "job" and bound.__doc__ == "Doc." and bound.__wrapped__ is job


def test_many_threads_each_with_their_own_tree():
    def worker(n):
        with track(f"root {n}") as root:
            for i in range(50):
                with track("child") as child:
                    assert child.parent is root
        return root.id

    with capture() as events:
        with ThreadPoolExecutor(max_workers=8) as pool:
            root_ids = list(pool.map(worker, range(16)))
    assert len(events) == 16 * 51
    by_id = {e["id"]: e for e in events}
    assert len(by_id) == len(events)  # ids unique
    for e in events:
        if "parent" in e:
            assert e["parent"]["eventId"] in root_ids
            assert e["chainId"] == e["parent"]["eventId"]


def test_asyncio_tasks_inherit_and_stay_separate():
    async def task(i):
        async with track(f"task {i}") as ev:
            await asyncio.sleep(0.001 * (i % 3))
            assert current() is ev
            async with track("inner") as inner:
                await asyncio.sleep(0)
                assert inner.parent is ev
            return ev

    async def main():
        async with track("gather") as root:
            tasks = await asyncio.gather(*(task(i) for i in range(25)))
        return root, tasks

    with capture() as events:
        root, tasks = asyncio.run(main())
    assert all(t.parent is root for t in tasks)
    assert len(events) == 51
    inners = [e for e in events if e["sequence"]["name"] == "inner"]
    assert {e["parent"]["eventId"] for e in inners} == {t.id for t in tasks}


# --- property tests: random trees of blocks ---

trees = st.recursive(
    st.just([]),
    lambda children: st.lists(children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=60, deadline=None)
@given(tree=trees, fail_at=st.integers(min_value=-1, max_value=40))
def test_random_trees_nest(tree, fail_at):
    opened = []

    def run(children, name):
        with track(name) as ev:
            opened.append(ev)
            if len(opened) - 1 == fail_at:
                ev.tag("failing", True)
            for i, child in enumerate(children):
                run(child, f"n{i}")
        return ev

    with capture() as events:
        root = run(tree, "root")
    assert len(events) == len(opened)
    by_id = {e["id"]: e for e in events}
    assert len(by_id) == len(events)
    for ev in opened:
        event = by_id[ev.id]
        assert event["chainId"] == root.id
        if ev is root:
            assert "parent" not in event
            continue
        parent = by_id[event["parent"]["eventId"]]
        assert parent["id"] == ev.parent.id
        assert event["parent"]["sequenceKey"] == parent["sequence"]["key"]
        assert event["sequence"]["key"] == f"{parent['sequence']['key']}/{ev.name}"
        assert parent["createdAt"] <= event["createdAt"] <= event["finishedAt"] <= parent["finishedAt"]
        durations = {e["id"]: e["payload"]["metrics"][0]["v"] for e in (event, parent)}
        assert durations[event["id"]] <= durations[parent["id"]]
    # children finish before their parents
    order = {e["id"]: i for i, e in enumerate(events)}
    for event in events:
        if "parent" in event:
            assert order[event["id"]] < order[event["parent"]["eventId"]]


def test_a_thread_outpacing_the_exporter_drains_for_it():
    # The exporter thread is stopped, as when it cannot get the GIL: the thread finishing
    # events drains half of the queue itself once MAX_QUEUED_EVENTS are waiting, so memory
    # stays bounded, and nothing is lost.
    from trunk_trace import _batch, _state
    from trunk_trace.testing import InMemoryExporter

    exporter = InMemoryExporter()
    trunk_trace.configure(exporters=[exporter], summary=False)
    with track("warm-up"):
        pass
    processor = _state.current_processor()
    processor._closed = True
    processor._wake.set()
    processor._thread.join(5)
    assert not processor._thread.is_alive()
    count = _batch.MAX_QUEUED_EVENTS + 3 * _state.BATCH_SIZE
    for _ in range(count):
        with track("step"):
            pass
    assert len(processor._queue) < _batch.MAX_QUEUED_EVENTS  # relieved, never past the bound
    assert len(exporter.records) >= _batch.MAX_QUEUED_EVENTS // 2
    processor.drain()
    assert len(exporter.records) == count + 1
