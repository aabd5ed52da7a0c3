"""The process's tracing state that the hot path reads, and booting it.

Kept apart from :mod:`trunk_trace._config` so that ``import trunk_trace`` and
the first ``track`` cost only the standard library: attrs, the exporters and
CI detection are loaded by the exporter thread, or by an explicit
``configure()``.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from ._batch import BatchProcessor
    from ._config import Config
    from ._event import Event, RemoteParent

# Events per batch the processor exports. A power of two: the hot paths test
# "id % BATCH_SIZE == 0" as a bit mask to call every_batch().
BATCH_SIZE = 512

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})


def start_processor(ev: Event) -> None:
    # The first finished event starts the exporter thread (never import or configure).
    current_processor().sink(ev)


def every_batch() -> None:
    """The hot path's call once per ``BATCH_SIZE`` ids: let the processor drain."""
    processor = STATE.processor
    if processor is not None:
        processor.on_batch()


class State:
    __slots__ = ("enabled", "on_end", "inherited_parent", "processor", "config", "event_context", "lock", "exit_registered")

    def __init__(self) -> None:
        # None until the first block boots the state (or configure() runs).
        self.enabled: bool | None = None
        self.on_end: Callable[[Event], None] = start_processor
        self.inherited_parent: Event | RemoteParent | None = None
        self.processor: BatchProcessor | None = None
        self.config: Config | None = None  # None: resolved from the environment when first needed
        self.event_context: Any = None  # (platform, common tags, repo), resolved once
        self.lock = threading.RLock()
        self.exit_registered = False


STATE = State()


def env_flag(value: str | None) -> bool | None:
    """A boolean environment value, or None when unset or not understood."""
    if value is None:
        return None
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


def boot() -> None:
    """First block of the process: decide whether tracing is on, and arrange the exit."""
    with STATE.lock:
        if STATE.enabled is not None:
            return
        STATE.enabled = env_flag(os.environ.get("TRUNK_TRACE_DISABLED")) is not True
        register_exit()
        if STATE.enabled:
            join_inherited_chain()
            install_sigterm_handler()


def join_inherited_chain() -> None:
    """Nest this process's root blocks under what a parent process left, and pass ours on."""
    from . import _propagate

    STATE.inherited_parent = _propagate.inherited_parent()
    _propagate.install()


def install_sigterm_handler() -> None:
    """Unwind open blocks as CANCELLED on SIGTERM, unless configured off (see ``_signals``)."""
    config = STATE.config
    wanted = config.handle_sigterm if config is not None else env_flag(os.environ.get("TRUNK_TRACE_SIGTERM")) is not False
    if wanted:
        from . import _signals

        _signals.install()
    elif "trunk_trace._signals" in sys.modules:
        sys.modules["trunk_trace._signals"].uninstall()


def register_exit() -> None:
    if not STATE.exit_registered:
        atexit.register(_at_exit)
        STATE.exit_registered = True


def _at_exit() -> None:
    from ._config import shutdown_at_exit

    shutdown_at_exit()


def current_processor() -> BatchProcessor:
    with STATE.lock:
        processor = STATE.processor
        if processor is None:
            from ._batch import BatchProcessor

            processor = STATE.processor = BatchProcessor(STATE.config)
            processor.start()
            register_exit()
        if STATE.on_end is start_processor:
            # A child process may leave through os._exit (multiprocessing's fork and forkserver
            # workers do), skipping atexit: there, each task's outermost event is flushed as it ends.
            if in_child_process():
                processor.serve_child_process()
            STATE.on_end = processor.sink
        return processor


# perf_counter_ns() when this process was forked (None: not a fork child). Events started
# before it were opened by the parent process.
FORKED_AT_NS: int | None = None


def in_child_process() -> bool:
    if FORKED_AT_NS is not None:
        return True
    process = sys.modules.get("multiprocessing.process")
    return process is not None and process.parent_process() is not None  # type: ignore[attr-defined]


def _after_fork_in_child() -> None:
    # The child never resends what the parent had queued; it starts its own
    # exporter thread (and senders) when it finishes its first event.
    global FORKED_AT_NS
    FORKED_AT_NS = time.perf_counter_ns()
    STATE.lock = threading.RLock()
    report = sys.modules.get("trunk_trace._report")
    if report is not None:
        setattr(report, "_lock", threading.Lock())  # another thread may have held it at the fork
    signals = sys.modules.get("trunk_trace._signals")
    if signals is not None:
        signals.after_fork_in_child()  # a handler in pool workers can hang Pool.terminate()
    processor = STATE.processor
    if processor is not None:
        if processor.feeds(STATE.on_end):
            STATE.on_end = start_processor
        processor.abandon()
    STATE.processor = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def swap_sink(on_end: Callable[[Any], None], enabled: bool | None) -> tuple:
    """Replace where finished events go; returns what :func:`restore_sink` needs."""
    with STATE.lock:
        if STATE.enabled is None:
            boot()
        saved = (STATE.on_end, STATE.enabled)
        STATE.on_end, STATE.enabled = on_end, enabled
        return saved


def restore_sink(saved: tuple) -> None:
    with STATE.lock:
        STATE.on_end, STATE.enabled = saved
