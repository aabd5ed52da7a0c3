"""Exporters: where finished events go.

An exporter is any object with these three methods (all called from the
processor, never from the hot path; none may block past the time it is given):

``export(records)``
    Take a batch of :class:`~trunk_trace.FinishedEvent` records (a read-only
    sequence; the processor's batches make each record on first access). Must
    not block on the network: queue the work and return.
``force_flush(timeout)``
    Deliver what was exported so far, within *timeout* seconds (``None``: no
    limit). Returns ``True`` when everything went out.
``shutdown(timeout)``
    Flush and release resources within *timeout* seconds. Called once, at exit.

Exceptions raised by an exporter are caught, logged once, and never reach the
build.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

from .._event import FinishedEvent
from .._report import report_once


@runtime_checkable
class Exporter(Protocol):
    def export(self, records: Sequence[FinishedEvent]) -> None: ...

    def force_flush(self, timeout: float | None = None) -> bool: ...

    def shutdown(self, timeout: float | None = None) -> None: ...


def call_exporter(exporter: Exporter, method: str, *args: Any) -> Any:
    """Call an exporter's method; a failure is logged once per exporter and method, never raised."""
    try:
        return getattr(exporter, method)(*args)
    except Exception as exc:
        name = type(exporter).__name__
        report_once(
            f"exporter:{name}.{method}",
            "%s.%s failed (%s: %s); events may be missing from that output",
            name, method, type(exc).__name__, exc,
            exc_info=True,
        )
        return False
