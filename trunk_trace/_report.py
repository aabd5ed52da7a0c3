"""Reporting problems like a library: through logging, once per kind, with counts."""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("trunk_trace")

_reported: set[str] = set()
_lock = threading.Lock()
_dropped = 0


def report_once(kind: str, message: str, *args: Any, level: int = logging.WARNING, exc_info: bool = False) -> None:
    """Log *message* the first time a problem of this *kind* happens in this process."""
    with _lock:
        if kind in _reported:
            return
        _reported.add(kind)
    log.log(level, "trunk_trace: " + message, *args, exc_info=exc_info)


def count_drop(count: int) -> None:
    """Count events that are lost for good (reported at exit)."""
    global _dropped
    with _lock:
        _dropped += count


def dropped() -> int:
    return _dropped


def forget() -> None:
    """Forget what was reported (for ``reset()``)."""
    global _dropped
    with _lock:
        _reported.clear()
        _dropped = 0
