"""The spool on disk: format, permissions, atomic files, the cap, claims and recovery."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys

from typing import NamedTuple

from sink import TOKEN, Reply, Sink

from trunk_trace._report import dropped
from trunk_trace.exporters.http import Client, replay_claim
from trunk_trace.exporters.jsonl import encode_line
from trunk_trace.exporters.spool import Spool, encode_event, encode_repo, spool_line
from trunk_trace._retry import RetryPolicy

REPO = {"host": "github.com", "owner": "acme", "name": "widgets"}


class Record(NamedTuple):
    """What the exporter reads of a finished event (the protocol is duck-typed)."""

    event: dict
    pid: int
    thread_id: int


def event(n: int) -> dict:
    return {"id": f"id-{n:06d}", "chainId": "c", "createdAt": 1, "finishedAt": 2, "conclusion": "SUCCESS",
            "payload": {"metrics": [], "tags": [{"k": "ü", "v": n}]},
            "sequence": {"platform": "local", "kind": "step", "key": "k", "name": "n", "payload": {"tags": []}}}


def lines(numbers, repo=REPO) -> list[str]:
    return [spool_line(encode_repo(repo), 7, 8, encode_event(event(n))) for n in numbers]


def test_lines_are_the_json_lines_format_byte_for_byte():
    record = Record(event(1), 7, 8)
    assert lines([1]) == [encode_line(record, REPO)]
    assert lines([1], repo=None) == [encode_line(record, None)]


def test_files_are_private_and_whole(tmp_path):
    spool = Spool(str(tmp_path / "spool"))
    path = spool.write(lines(range(3)))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for area in ("", "pending", "claimed", "rejected", "tmp"):
        assert stat.S_IMODE(os.stat(tmp_path / "spool" / area).st_mode) == 0o700
    assert [item["event"]["id"] for item in spool.lines()] == ["id-000000", "id-000001", "id-000002"]
    assert os.listdir(tmp_path / "spool" / "tmp") == []  # written there, then renamed into place
    assert spool.stats() == (1, 3, os.path.getsize(path))


def test_a_torn_file_left_by_a_crash_is_never_read(tmp_path):
    spool = Spool(str(tmp_path))
    spool.write(lines([1]))
    (tmp_path / "tmp" / "0-1-0.jsonl").write_text('{"repo":{"host":"github.com"},"pid":1,"thr')
    assert [item["event"]["id"] for item in spool.lines()] == ["id-000001"]
    os.utime(tmp_path / "tmp" / "0-1-0.jsonl", (0, 0))
    spool.recover()
    assert os.listdir(tmp_path / "tmp") == []  # stale partial files are cleaned up


def test_past_the_cap_the_oldest_files_go_counted_and_loudly(tmp_path, caplog):
    one_file = len("".join(lines(range(10))).encode())
    spool = Spool(str(tmp_path), max_bytes=int(one_file * 2.5))
    for start in (0, 10, 20, 30):
        spool.write(lines(range(start, start + 10)))
    kept = [item["event"]["id"] for item in spool.lines()]
    assert kept == [f"id-{n:06d}" for n in range(20, 40)]
    assert dropped() == 20
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "removing the oldest" in errors[0].getMessage()


def test_only_one_claim_wins(tmp_path):
    spool = Spool(str(tmp_path))
    spool.write(lines([1]))
    (name,) = spool.pending()
    assert spool.claim(name) is not None
    assert spool.claim(name) is None
    assert spool.pending() == []


def test_claims_of_dead_processes_come_back_live_ones_stay(tmp_path):
    spool = Spool(str(tmp_path))
    spool.write(lines([1]))
    spool.write(lines([2]))
    first, second = spool.pending()
    # A process that claims a file and dies without finishing (a crash mid-replay).
    code = (
        "import sys; from trunk_trace.exporters.spool import Spool; "
        f"assert Spool(sys.argv[1]).claim({first!r}); import os; os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=30)
    mine = spool.claim(second)
    assert spool.pending() == []
    assert spool.recover() == 1
    assert spool.pending() == [first]  # the dead process's claim is back, ours stays
    spool.release(mine)
    assert spool.pending() == [first, second]


def test_replay_sends_a_file_keeping_ids_and_puts_back_what_failed(tmp_path):
    spool = Spool(str(tmp_path))
    spool.write(lines(range(600)))  # two requests' worth
    with Sink() as sink:
        sink.push(Reply(200), Reply(503))
        client = Client(TOKEN, sink.url)
        claim = spool.claim(spool.pending()[0])
        result = replay_claim(client, spool, claim, policy=RetryPolicy(max_attempts=1))
        assert result.sent == 512 and len(result.unsent) == 88 and result.last.status == 503
        assert sink.ids() == [f"id-{n:06d}" for n in range(512)]
        (name,) = spool.pending()
        result = replay_claim(client, spool, spool.claim(name))
        assert result.sent == 88 and result.last is None
        assert sink.ids() == [f"id-{n:06d}" for n in range(600)]  # each exactly once, same ids
        assert spool.pending() == [] and os.listdir(tmp_path / "claimed") == []
        assert sink.accepted[0].body["repo"] == REPO


def test_events_without_a_repo_wait_for_one(tmp_path):
    spool = Spool(str(tmp_path))
    spool.write(lines([1, 2], repo=None), repo_known=False)
    assert spool.pending() == []  # background replay cannot send them
    (name,) = spool.pending(include_no_repo=True)
    with Sink() as sink:
        result = replay_claim(Client(TOKEN, sink.url), spool, spool.claim(name))
        assert result.sent == 0 and len(result.unsent) == 2
        (name,) = spool.pending(include_no_repo=True)
        result = replay_claim(Client(TOKEN, sink.url), spool, spool.claim(name), fallback_repo=REPO)
        assert result.sent == 2
        assert sink.accepted[0].body["repo"] == REPO


def test_rejected_batches_are_kept_aside(tmp_path, caplog):
    spool = Spool(str(tmp_path))
    spool.write(lines([1]))
    with Sink() as sink:
        sink.push(Reply(400, b'{"error":"sequence.key too long"}'))
        result = replay_claim(Client(TOKEN, sink.url), spool, spool.claim(spool.pending()[0]))
    assert len(result.rejected) == 1 and len(sink.attempts) == 1
    assert [item["event"]["id"] for item in spool.lines("rejected")] == ["id-000001"]
    assert "sequence.key too long" in caplog.text
