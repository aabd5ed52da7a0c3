"""trunk_trace: time the steps of CI and build scripts and report them as events.

::

    from trunk_trace import track

    with track("build"):
        with track("compile"):
            ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._command import run
from ._context import bind, current
from ._event import Conclusion, Event, FinishedEvent
from ._track import Block, track
from ._version import __version__

if TYPE_CHECKING:
    from ._config import Config, configure, flush, reset, shutdown

# Loaded on first use: they bring in attrs, which ``import trunk_trace`` does not need.
_LAZY = {"Config", "configure", "flush", "reset", "shutdown"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import _config

        return getattr(_config, name)
    raise AttributeError(f"module 'trunk_trace' has no attribute {name!r}")


__all__ = [
    "Block",
    "Conclusion",
    "Config",
    "Event",
    "FinishedEvent",
    "__version__",
    "bind",
    "configure",
    "current",
    "flush",
    "reset",
    "run",
    "shutdown",
    "track",
]
