"""Helpers for testing code that uses trunk_trace (and for trunk_trace's own tests)."""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator, Sequence

from ._event import Event, FinishedEvent, wire_event
from ._state import restore_sink, swap_sink

__all__ = ["InMemoryExporter", "capture"]


@contextlib.contextmanager
def capture() -> Iterator[list[dict[str, Any]]]:
    """Collect every event finished while active, from any thread, as wire dicts.

    Nothing is sent or written meanwhile; the previous configuration is back
    on exit. Tracing is on inside, even where ``TRUNK_TRACE_DISABLED`` is set::

        with capture() as events:
            with track("compile"):
                ...
        assert events[0]["sequence"]["name"] == "compile"
    """
    from ._config import event_context

    platform, common_tags, _repo = event_context()
    events: list[dict[str, Any]] = []

    def on_end(ev: Event) -> None:
        events.append(wire_event(ev, platform, common_tags))

    saved = swap_sink(on_end, True)
    try:
        yield events
    finally:
        restore_sink(saved)


class InMemoryExporter:
    """An exporter that keeps what it is given: ``configure(exporters=[InMemoryExporter()])``."""

    def __init__(self) -> None:
        self._records: list[FinishedEvent] = []
        self._lock = threading.Lock()
        self.shut_down = False

    def export(self, records: Sequence[FinishedEvent]) -> None:
        with self._lock:
            self._records.extend(records)

    def force_flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self, timeout: float | None = None) -> None:
        self.shut_down = True

    @property
    def records(self) -> list[FinishedEvent]:
        with self._lock:
            return list(self._records)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [record.event for record in self.records]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
