"""The open event of the current context, and the ids events are named by.

Everything here is plain functions over one ``ContextVar`` (as structlog and
OpenTelemetry do it): asyncio tasks copy the context when they are created,
so they inherit the open event; threads do not, hence :func:`bind`.
"""

from __future__ import annotations

import contextvars
import itertools
import os
from typing import TYPE_CHECKING, Any, Callable, TypeVar

if TYPE_CHECKING:
    from ._event import Event

F = TypeVar("F", bound=Callable[..., Any])

_CURRENT: contextvars.ContextVar[Event | None] = contextvars.ContextVar(
    "trunk_trace.current", default=None
)


def current() -> Event | None:
    """Return the innermost open event of this context, or ``None``."""
    return _CURRENT.get()


def bind(fn: F) -> F:
    """Return *fn* bound to the caller's context, so it runs inside the open event.

    For ``Thread(target=bind(work))`` and ``executor.submit(bind(work), ...)``:
    blocks opened by *fn* nest under the event open where ``bind`` was called.
    """
    context = contextvars.copy_context()

    def bound(*args: Any, **kwargs: Any) -> Any:
        # A copy per call: the same bound function may run in several threads at once,
        # and a Context can be entered by one thread at a time only.
        return context.copy().run(fn, *args, **kwargs)

    bound.__wrapped__ = fn  # type: ignore[attr-defined]
    bound.__name__ = getattr(fn, "__name__", "bound")
    bound.__qualname__ = getattr(fn, "__qualname__", bound.__name__)
    bound.__doc__ = getattr(fn, "__doc__", None)
    return bound  # type: ignore[return-value]


# Ids: on the hot path an event only takes a 128-bit integer; its UUID string is
# made when first asked for (by the user or by the exporter thread). The integer
# is the process's random 64-bit prefix and a sequence number, laid out as an
# RFC 9562 version-8 UUID, so ids are unique across processes without paying for
# ``uuid4()`` (about 2 us) per block.
_VERSION_8 = 0x8 << 76
_VARIANT = 0b10 << 62


def _new_prefix() -> int:
    random64 = int.from_bytes(os.urandom(8), "big")
    # Clear the version nibble's place (bits 76..79 of the UUID) before setting it.
    return ((random64 & ~(0xF << 12)) << 64) | _VERSION_8 | _VARIANT


_prefix = _new_prefix()
_sequence = itertools.count(1)


def new_id() -> int:
    """A fresh event id as an integer; :func:`format_id` makes its string."""
    return _prefix | next(_sequence)


def format_id(id_int: int) -> str:
    """The canonical UUID text of an id (what ``str(uuid.UUID(int=...))`` gives)."""
    h = f"{id_int:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _after_fork_in_child() -> None:
    # A forked child shares the parent's prefix and counter position; without a
    # new prefix its ids would collide with the parent's.
    global _prefix
    _prefix = _new_prefix()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
