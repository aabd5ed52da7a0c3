"""The JSON Lines file: one line per finished event, safe for several processes at once.

A line is ``{"repo": {...} | null, "pid": N, "thread": N, "event": {...}}``
where ``event`` is exactly what the Trunk API receives. The same lines are
what ``trunk-trace show`` and ``trunk-trace upload`` read.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Iterator, Sequence

from .._event import FinishedEvent, record_json, wire_encoder
from .._report import count_drop, report_once


def format_line(repo_json: str, pid: int, thread: int, event_json: str) -> str:
    """One line from already-encoded parts (the spool writes the same lines: ``spool.spool_line``).

    Byte for byte ``json.dumps({"repo", "pid", "thread", "event"}, separators=(",", ":"),
    ensure_ascii=False)`` and a newline, without encoding the event a second time.
    """
    return f'{{"repo":{repo_json},"pid":{pid},"thread":{thread},"event":{event_json}}}\n'


def encode_line(record: FinishedEvent, repo: dict | None, repo_json: str | None = None) -> str:
    if repo_json is None:
        repo_json = wire_encoder().encode(repo)
    return format_line(repo_json, record.pid, record.thread_id, record_json(record))


def read_lines(path: str) -> Iterator[dict]:
    """The parsed lines of a JSON Lines file; a torn or foreign line is skipped with one warning."""
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                if not isinstance(item, dict) or not isinstance(item.get("event"), dict):
                    raise ValueError("not an event line")
            except ValueError:
                report_once(f"jsonl:{path}", "%s:%d is not an event line; skipped", path, number)
                continue
            yield item


class JsonLinesExporter:
    """Appends every finished event to *path* (created if missing)."""

    def __init__(self, path: str, repo: dict | None = None) -> None:
        self.path = path
        self.repo = repo
        self._fd: int | None = None
        self._lock = threading.Lock()

    def export(self, records: Sequence[FinishedEvent]) -> None:
        repo_json = wire_encoder().encode(self.repo)
        data = "".join([encode_line(record, self.repo, repo_json) for record in records]).encode("utf-8")
        with self._lock:
            try:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                # One write per batch of whole lines: with O_APPEND the kernel places it
                # at the end of the file as one piece, so concurrent writers never interleave.
                written = os.write(self._fd, data)
                while written < len(data):  # only on exotic file systems
                    written += os.write(self._fd, data[written:])
            except OSError as exc:
                count_drop(len(records))
                report_once(f"jsonl-write:{self.path}", "cannot write %s (%s); events are missing from it", self.path, exc)

    def force_flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self, timeout: float | None = None) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __repr__(self) -> str:
        return f"JsonLinesExporter({self.path!r})"


def load_events(path: str) -> list[dict[str, Any]]:
    """The wire events of a JSON Lines file, in file order."""
    return [item["event"] for item in read_lines(path)]
