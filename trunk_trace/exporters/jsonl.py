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

from .._event import FinishedEvent
from .._report import count_drop, report_once


def encode_line(record: FinishedEvent, repo: dict | None) -> str:
    return json.dumps(
        {"repo": repo, "pid": record.pid, "thread": record.thread_id, "event": record.event},
        separators=(",", ":"),
        ensure_ascii=False,
    ) + "\n"


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
        data = "".join(encode_line(record, self.repo) for record in records).encode("utf-8")
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
