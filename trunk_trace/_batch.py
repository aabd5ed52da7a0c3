"""The processor: takes finished events off the hot path and feeds the exporters.

The hot path only appends the finished live event to a deque. A daemon thread,
started by the first finished event, turns events into wire records (ids, keys,
dicts: the slow part) and hands batches to every exporter. ``flush`` and
``shutdown`` drain on the calling thread too, so they work even where no new
thread may start (at interpreter exit).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Callable, Sequence

from ._event import Event, Records
from ._report import count_drop, report_once
from ._state import BATCH_SIZE
from .exporters import Exporter, call_exporter

if TYPE_CHECKING:
    from ._config import Config

WAKE_INTERVAL = 1.0  # seconds between drains when events trickle in
# Past this many queued events the finishing thread lends a hand (CPU and disk work, never the
# network), so memory stays bounded when a program finishes events faster than they are exported.
MAX_QUEUED_EVENTS = 32_768
# At shutdown, how long the batch the exporter thread holds may take to reach every output
# (CPU and local-disk work: milliseconds) before its events are counted as lost.
IN_HAND_GRACE = 0.25


class Resources:
    """What turning live events into records needs, resolved once per process."""

    __slots__ = ("platform", "common_tags", "exporters")

    def __init__(self, platform: str, common_tags: Sequence[tuple[str, object]], exporters: list[Exporter]) -> None:
        self.platform = platform
        self.common_tags = tuple(common_tags)
        self.exporters = exporters


def _opened_before_fork(ev: Event) -> bool:
    from ._state import FORKED_AT_NS

    return FORKED_AT_NS is not None and ev._start < FORKED_AT_NS


class BatchProcessor:
    def __init__(self, config: Config | None) -> None:
        # The configuration in force when the processor started (None: the
        # environment's); a later configure() starts another processor.
        self._config = config
        self._resources: Resources | None = None
        self._queue: deque[Event] = deque()
        self._wake = threading.Event()
        self._export_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._in_hand = 0  # events of the batch being handed to the exporters (export lock held)
        self._pid = os.getpid()
        self._sink: Callable[[Event], None] = self._queue.append

    def serve_child_process(self) -> None:
        """Hand finished events to :meth:`on_end_in_child` (this process may leave by ``os._exit``)."""
        self._sink = self.on_end_in_child

    # -- hot path --

    @property
    def sink(self) -> Callable[[Event], None]:
        """What the hot path hands each finished event to: the queue's own ``append``
        (a C call, no Python frame), or in a child process :meth:`on_end_in_child`."""
        return self._sink

    def feeds(self, on_end: Callable[[Event], None]) -> bool:
        """Whether *on_end* is one of this processor's sinks."""
        return on_end == self._queue.append or on_end == self.on_end_in_child

    def on_batch(self) -> None:
        """Called by the hot path about once per ``BATCH_SIZE`` events (every id divisible by it).

        Wakes the exporter thread, and past ``MAX_QUEUED_EVENTS`` lends it a hand.
        """
        self._wake.set()
        if len(self._queue) >= MAX_QUEUED_EVENTS:
            self._relieve()

    def on_end_in_child(self, ev: Event) -> None:
        """``on_end`` in a child process, which may leave through ``os._exit`` without atexit.

        When the process's outermost event ends (no parent here: a root, a parent
        in another process, or one opened before the fork), deliver synchronously
        within the exit budget; what does not make it is on disk when this returns.
        """
        self._queue.append(ev)
        parent = ev.parent
        if parent is None or not isinstance(parent, Event) or _opened_before_fork(parent):
            from ._config import get_config

            self.flush((self._config or get_config()).exit_timeout)

    # -- lifecycle --

    def start(self) -> None:
        thread = threading.Thread(target=self._run, name="trunk_trace.processor", daemon=True)
        try:
            thread.start()
        except RuntimeError:
            return  # at interpreter exit no thread may start: flush/shutdown drain instead
        self._thread = thread

    def wake(self) -> None:
        """Drain soon, on the processor's thread (never blocks): for a caller that knows a batch is done."""
        self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(WAKE_INTERVAL)
            self._wake.clear()
            if self._closed:
                break
            try:
                self.drain()
            except Exception as exc:  # never let one batch end the thread: the next wake drains again
                report_once("processor-bug", "a bug in trunk_trace's processor: %s", exc, exc_info=True)

    def resources(self) -> Resources:
        if self._resources is None:
            from ._config import build_resources  # attrs and CI detection load here, off the hot path

            self._resources = build_resources(self._config)
        return self._resources

    def drain(self, timeout: float | None = None) -> int:
        """Export everything queued so far; returns how many events went out.

        Waits at most *timeout* seconds for a drain already running elsewhere.
        """
        if not self._export_lock.acquire(timeout=-1 if timeout is None else timeout):
            return 0
        try:
            return self._drain_locked()
        finally:
            self._export_lock.release()

    def _relieve(self) -> None:
        # Never wait: whoever holds the lock (the exporter thread, or this very
        # thread inside an exporter that tracks blocks) is draining already.
        if self._export_lock.acquire(blocking=False):
            try:
                self._drain_locked(leave=MAX_QUEUED_EVENTS // 2)
            finally:
                self._export_lock.release()

    def _drain_locked(self, leave: int = 0) -> int:
        queue = self._queue
        if not queue:
            return 0
        resources = self.resources()
        platform, common_tags = resources.platform, resources.common_tags
        pid = os.getpid()
        count = 0
        while len(queue) > leave:
            events: list[Event] = []
            while queue and len(events) < BATCH_SIZE:
                events.append(queue.popleft())
            batch = Records(events, pid, platform, common_tags)
            self._in_hand = len(events)
            for exporter in resources.exporters:
                call_exporter(exporter, "export", batch)
            self._in_hand = 0
            count += len(events)
        return count

    def flush(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        self.drain(timeout)
        if self._resources is None:
            return True  # nothing ever finished
        ok = True
        for exporter in self._resources.exporters:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ok = call_exporter(exporter, "force_flush", remaining) is not False and ok
        return ok

    def shutdown(self, timeout: float | None = None) -> None:
        """Drain, then shut every exporter down within *timeout* seconds in all."""
        if self._closed:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        self.drain(None if deadline is None else max(0.0, deadline - time.monotonic()))
        # The exporter thread held the queue past the deadline: take what it has not reached.
        # Taken event by event (popleft is atomic), so each one is either exported by that
        # thread or counted here, never both (counting len(queue) overstated the loss).
        left = 0
        queue = self._queue
        while True:
            try:
                queue.popleft()
            except IndexError:
                break
            left += 1
        # The batch that thread holds still reaches every output, unless one blocks it past a grace.
        if thread is not None and thread is not threading.current_thread():
            if self._export_lock.acquire(timeout=IN_HAND_GRACE):
                self._export_lock.release()
            else:
                left += self._in_hand
        if left:
            count_drop(left)
            report_once("exit-queue", "%d event(s) were still being prepared when the exit budget ran out", left)
        if self._resources is None:
            return  # nothing ever finished: nothing to report
        for exporter in self._resources.exporters:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            call_exporter(exporter, "shutdown", remaining)

    def abandon(self) -> None:
        """In a forked child: forget the parent's queue and thread without touching their locks."""
        self._queue = deque()
        self._closed = True
        self._thread = None
