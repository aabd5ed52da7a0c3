"""The Trunk HTTP exporter against a real loopback server with injected faults."""

from __future__ import annotations

import logging
import os
import threading
import time

from typing import NamedTuple

import pytest
from sink import HANG, RESET, TOKEN, Reply, Sink, closed_port, spooled_ids

import trunk_trace
from trunk_trace import track
from trunk_trace._retry import RetryPolicy
from trunk_trace.exporters.http import TrunkHttpExporter
from trunk_trace.exporters.spool import Spool

REPO = {"host": "github.com", "owner": "acme", "name": "widgets"}


class Record(NamedTuple):
    """What the exporter reads of a finished event (the protocol is duck-typed)."""

    event: dict
    pid: int
    thread_id: int
QUICK = RetryPolicy(initial=0.001, cap=0.005, max_attempts=6)  # tests never wait for backoff


def records(count: int, start: int = 0) -> list[Record]:
    return [
        Record({"id": f"e{n}", "chainId": "c", "createdAt": 1, "finishedAt": 2, "conclusion": "SUCCESS",
                       "payload": {"metrics": [], "tags": []},
                       "sequence": {"platform": "local", "kind": "step", "key": "k", "name": "n", "payload": {"tags": []}}},
                      1, 2)
        for n in range(start, start + count)
    ]


def ids(count: int, start: int = 0) -> list[str]:
    return [f"e{n}" for n in range(start, start + count)]


@pytest.fixture
def sink():
    with Sink() as server:
        yield server


@pytest.fixture
def spool_dir(tmp_path):
    return str(tmp_path / "spool")


def exporter(url: str, spool_dir: str, **options) -> TrunkHttpExporter:
    options.setdefault("policy", QUICK)
    options.setdefault("replay", False)
    return TrunkHttpExporter(TOKEN, url, REPO, Spool(spool_dir), **options)


def test_requests_follow_the_wire_contract(sink, spool_dir):
    ex = exporter(sink.url, spool_dir)
    ex.export(records(3))
    ex.shutdown(5)
    (request,) = sink.accepted
    assert request.path == "/v1/metrics/trackEvents"
    assert request.headers["x-api-token"] == TOKEN
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-source"]
    agent = request.headers["user-agent"]
    assert agent.startswith("trunk-trace/") and "python/" in agent and "urllib3/" in agent
    assert request.body["repo"] == REPO and [e["id"] for e in request.body["events"]] == ids(3)


def test_a_503_burst_is_retried_and_everything_arrives_once(sink, spool_dir):
    sink.push(Reply(503), Reply(503), Reply(502), RESET)
    ex = exporter(sink.url, spool_dir, senders=1)
    ex.export(records(700))
    ex.shutdown(10)
    assert sorted(sink.ids()) == sorted(ids(700))
    assert len(sink.attempts) == 6  # four failures, then the two batches
    assert spooled_ids(spool_dir) == []


def test_retry_after_is_honoured(sink, spool_dir):
    sink.push(Reply(429, headers=(("Retry-After", "0"),)))
    ex = exporter(sink.url, spool_dir, policy=RetryPolicy(initial=30.0))  # backoff alone would wait 30 s
    ex.export(records(2))
    assert ex.force_flush(10)
    assert sink.ids() == ids(2)
    ex.shutdown(1)


def test_a_retry_after_past_the_deadline_spools_at_once(sink, spool_dir):
    sink.push(Reply(429, headers=(("Retry-After", "60"),)))
    ex = exporter(sink.url, spool_dir)
    ex.export(records(2))
    started = time.monotonic()
    ex.shutdown(5)
    assert time.monotonic() - started < 4  # bound: did not wait the 60 s nor the whole budget
    assert spooled_ids(spool_dir) == ids(2) and sink.ids() == []


def test_a_server_that_never_answers_costs_the_budget_and_no_more(sink, spool_dir):
    sink.default = HANG
    ex = exporter(sink.url, spool_dir)
    ex.export(records(1000))
    started = time.monotonic()
    ex.shutdown(0.5)
    assert time.monotonic() - started < 0.5 + 1.5
    assert sorted(spooled_ids(spool_dir)) == sorted(ids(1000))


def test_a_refused_connection_is_spooled_without_retries_at_exit(spool_dir):
    ex = exporter(f"http://127.0.0.1:{closed_port()}", spool_dir, policy=RetryPolicy(initial=30.0))
    ex.export(records(50))
    started = time.monotonic()
    ex.shutdown(10)
    assert time.monotonic() - started < 3  # a retry would wait 30 s, the budget 10 s
    assert sorted(spooled_ids(spool_dir)) == sorted(ids(50))


def test_a_400_is_kept_aside_logged_once_and_not_retried(sink, spool_dir, caplog):
    sink.push(Reply(400, b'{"error":"events[0].sequence.key is required"}'),
              Reply(400, b'{"error":"events[0].sequence.key is required"}'))
    ex = exporter(sink.url, spool_dir, senders=1)
    ex.export(records(2))
    assert not ex.force_flush(5)
    ex.export(records(2, start=2))
    assert not ex.force_flush(5)
    ex.export(records(2, start=4))
    ex.shutdown(5)
    assert len(sink.attempts) == 3
    assert spooled_ids(spool_dir, "rejected") == ids(4) and sink.ids() == ids(2, start=4)
    messages = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(messages) == 1 and "events[0].sequence.key is required" in messages[0]


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_stops_sending_and_names_the_fix(sink, spool_dir, caplog, status):
    sink.default = Reply(status, b'{"error":"bad token"}')
    ex = exporter(sink.url, spool_dir)
    ex.export(records(3))
    ex.force_flush(5)
    ex.export(records(3, start=3))
    ex.shutdown(5)
    assert len(sink.attempts) == 1  # nothing more was tried in this process
    assert sorted(spooled_ids(spool_dir)) == sorted(ids(6))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "TRUNK_API_TOKEN" in warnings[0]


def test_a_redirect_is_not_followed_and_the_token_goes_nowhere_else(sink, spool_dir, caplog):
    with Sink() as elsewhere:
        sink.default = Reply(307, headers=(("Location", f"{elsewhere.url}/v1/metrics/trackEvents"),))
        ex = exporter(sink.url, spool_dir)
        ex.export(records(2))
        ex.shutdown(5)
        assert elsewhere.attempts == []
    assert spooled_ids(spool_dir) == ids(2)
    assert "TRUNK_PUBLIC_API_ADDRESS" in caplog.text


def test_when_the_queue_is_full_batches_spill_to_disk_and_nothing_is_lost(sink, spool_dir):
    sink.default = HANG
    ex = exporter(sink.url, spool_dir, max_queued_events=100)
    for start in range(0, 2000, 50):
        ex.export(records(50, start))  # never blocks: the server answers nothing
    assert len(spooled_ids(spool_dir)) >= 1000
    ex.shutdown(0.2)
    assert sorted(spooled_ids(spool_dir)) == sorted(ids(2000))


def test_the_next_process_replays_the_spool_after_its_own_events(sink, spool_dir):
    earlier = exporter(f"http://127.0.0.1:{closed_port()}", spool_dir)
    earlier.export(records(30, start=1000))
    earlier.shutdown(1)
    assert len(spooled_ids(spool_dir)) == 30
    ex = exporter(sink.url, spool_dir, replay=True)
    ex.export(records(5))
    assert sink.wait_for(35)
    ex.shutdown(5)
    assert sink.ids()[:5] == ids(5)  # own events first
    assert sorted(sink.ids()[5:]) == sorted(ids(30, start=1000))  # same ids as spooled
    assert spooled_ids(spool_dir) == []


def test_flush_and_shutdown_are_bounded_and_idempotent(sink, spool_dir):
    ex = exporter(sink.url, spool_dir)
    ex.export(records(10))
    assert ex.force_flush(5) and ex.force_flush(5)
    ex.shutdown(5)
    ex.shutdown(5)
    assert sink.ids() == ids(10)


def test_the_token_never_shows(sink, spool_dir, caplog):
    config = trunk_trace.configure(token=TOKEN, api_address=sink.url)
    assert TOKEN not in repr(config) and TOKEN not in str(config)
    sink.default = Reply(401, f'{{"error":"token {TOKEN} is invalid"}}'.encode())
    ex = exporter(sink.url, spool_dir)
    assert TOKEN not in repr(ex)
    ex.export(records(3))
    ex.shutdown(5)
    port = closed_port()
    down = exporter(f"http://127.0.0.1:{port}", spool_dir)
    down.export(records(3))
    down.shutdown(1)
    assert caplog.text and TOKEN not in caplog.text
    for root, _, files in os.walk(spool_dir):
        for name in files:
            assert TOKEN not in open(os.path.join(root, name), encoding="utf-8").read()
            assert TOKEN not in name


def test_configured_with_a_token_events_go_out(sink, spool_dir):
    trunk_trace.configure(token=TOKEN, api_address=sink.url, repo_url="git@github.com:acme/widgets.git", spool_dir=spool_dir)
    with track("build"):
        with track("compile"):
            pass
    trunk_trace.shutdown(5)
    assert [e["sequence"]["name"] for e in sink.events()] == ["compile", "build"]
    assert sink.accepted[0].body["repo"] == REPO


def test_sixteen_threads_of_ten_thousand_events_lose_nothing(sink, spool_dir):
    trunk_trace.configure(token=TOKEN, api_address=sink.url, repo_url="github.com/acme/widgets", spool_dir=spool_dir)
    opened: list[list[str]] = [[] for _ in range(16)]

    def work(mine: list[str]) -> None:
        for _ in range(10_000):
            with track("step") as ev:
                pass
            mine.append(ev.id)

    threads = [threading.Thread(target=work, args=(opened[n],)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    trunk_trace.shutdown(60)
    expected = sorted(i for mine in opened for i in mine)
    assert len(expected) == 160_000
    assert sorted(sink.ids() + spooled_ids(spool_dir)) == expected


def test_flush_and_shutdown_without_a_timeout(sink, spool_dir):
    """The public defaults (timeout=None) wait until delivered, and never raise."""
    trunk_trace.configure(token=TOKEN, api_address=sink.url, repo_url="github.com/acme/widgets",
                          spool_dir=spool_dir, summary=False)
    with trunk_trace.track("x"):
        pass
    assert trunk_trace.flush() is True
    assert len(sink.ids()) == 1
    with trunk_trace.track("y"):
        pass
    trunk_trace.shutdown()
    assert len(sink.ids()) == 2
