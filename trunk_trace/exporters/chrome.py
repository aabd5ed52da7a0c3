"""Trace files that Perfetto (ui.perfetto.dev) and ``chrome://tracing`` open.

The Trace Event Format's JSON array form: one complete event (``"ph": "X"``)
per block, ``ts`` and ``dur`` in microseconds since the epoch, ``pid`` and
``tid`` as lanes, tags and metrics in ``args``, the sequence kind as ``cat``,
plus ``process_name``/``thread_name`` metadata events.

Two writers:

* :func:`from_lines` turns the lines of a JSON Lines file into events
  (``trunk-trace show FILE.jsonl --format chrome``): millisecond times, as the
  file has them, so nested and consecutive blocks keep their order exactly.
* :class:`ChromeTraceExporter` (``TRUNK_TRACE_CHROME=path``) appends each
  process's events as they finish, with microsecond times. The file is
  ``[`` followed by events separated by ``,\\n``, and no closing bracket: the
  format allows it, so every process of a run appends to the same file, under
  an exclusive lock (``flock``), without rewriting it. The first element names
  the run (``process_labels`` metadata): the id prefix of the process that
  opened the chain, which every chain of the run's top process shares and its
  child processes inherit) and when it was written. At its first write, a
  process replaces a file of another run written before the process began (a
  new run starts afresh); fork and multiprocessing children never replace.
  :func:`load` reads it (it adds the ``]``).

Thread ids: Python's thread idents do not fit the 32 bits viewers read, so the
main thread's lane is the pid (as on Linux) and other threads get a stable
31-bit hash of (pid, ident).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import zlib
from typing import Any, Iterable, Optional, Sequence

from .._event import FinishedEvent
from .._report import count_drop, report_once

try:
    import fcntl
except ImportError:  # Windows: appends are not locked there
    fcntl = None  # type: ignore[assignment]

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
RUN_LABEL = "trunk_trace run "
# Ids made by trunk_trace (see _context) start with the 64-bit prefix of the process that made
# them: every chain the run's top process opens shares it, so it names the run.
_OWN_ID = re.compile(r"([0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3})-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def run_of(chain_id: str) -> str:
    """The run a chain belongs to: the id prefix of the process that opened it (else the chain id)."""
    match = _OWN_ID.fullmatch(chain_id)
    return match.group(1) if match else chain_id


def lane(pid: int, thread: int, main_thread: Optional[int]) -> int:
    """A viewer's ``tid`` for a Python thread ident (viewers read 32 bits)."""
    if thread == main_thread:
        return pid
    return (zlib.crc32(f"{pid}:{thread}".encode()) & 0x7FFFFFFF) or 1


def args_of(event: dict) -> dict:
    args: dict[str, Any] = {tag["k"]: tag["v"] for tag in event["payload"]["tags"]}
    args.update((metric["k"], metric["v"]) for metric in event["payload"]["metrics"])
    args["trunk.sequence.key"] = event["sequence"]["key"]
    args["trunk.conclusion"] = event["conclusion"]
    return args


def complete(event: dict, ts: int, end: int, pid: int, tid: int) -> dict:
    sequence = event["sequence"]
    return {"name": sequence["name"], "cat": sequence["kind"], "ph": "X", "ts": ts, "dur": end - ts,
            "pid": pid, "tid": tid, "args": args_of(event)}


def name_event(kind: str, pid: int, tid: int, name: str) -> dict:
    """``process_name`` or ``thread_name`` metadata."""
    return {"name": kind, "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}


def from_lines(items: Iterable[dict]) -> list[dict]:
    """Trace events for the lines of a JSON Lines file (``{"pid", "thread", "event"}``)."""
    # Outer blocks first: by start, the longer first (a parent starts in the same millisecond as its child).
    lines = sorted(items, key=lambda item: (item["event"]["createdAt"], -item["event"]["finishedAt"]))
    ids = {(item.get("pid", 0), item["event"]["id"]): item.get("thread", 0) for item in lines}
    main: dict[int, int] = {}
    for item in lines:  # the thread of a process's first outermost block is its main thread
        parent_id = (item["event"].get("parent") or {}).get("eventId")
        if (item.get("pid", 0), parent_id) not in ids:
            main.setdefault(item.get("pid", 0), item.get("thread", 0))
    events: list[dict] = []
    named: set[tuple[int, int]] = set()
    for item in lines:
        event, pid, thread = item["event"], item.get("pid", 0), item.get("thread", 0)
        tid = lane(pid, thread, main.get(pid))
        parent_id = (event.get("parent") or {}).get("eventId")
        parent_thread = ids.get((pid, parent_id)) if parent_id else None
        events.extend(_names(event["sequence"]["name"], pid, tid, parent_thread, thread, main.get(pid), named))
        events.append(complete(event, event["createdAt"] * 1000, event["finishedAt"] * 1000, pid, tid))
    return events


def _names(name: str, pid: int, tid: int, parent_thread: Optional[int], thread: int, main: Optional[int],
           named: set) -> list[dict]:
    """Lane names: a process after its outermost block, threads other than main after theirs."""
    found = []
    if parent_thread is None and (pid, 0) not in named:
        named.add((pid, 0))
        found.append(name_event("process_name", pid, pid, name))
    if parent_thread != thread and (pid, tid) not in named:
        named.add((pid, tid))
        found.append(name_event("thread_name", pid, tid, "main" if thread == main else name))
    return found


def dumps(events: Sequence[dict]) -> str:
    """A complete JSON array, one event per line."""
    return "[\n" + ",\n".join(_ENCODER.encode(event) for event in events) + "\n]\n"


def load(path: str) -> list[dict]:
    """The events of a trace file, closed (``]``) or still open for appending."""
    with open(path, encoding="utf-8") as file:
        text = file.read().strip()
    if not text:
        return []
    if not text.endswith("]"):
        text = text.rstrip(",") + "]"
    return json.loads(text)


def _header(fd: int) -> tuple[Optional[str], int]:
    """The run named by a trace file's first element and when it was written (ns; 0 when not ours)."""
    os.lseek(fd, 0, os.SEEK_SET)  # O_APPEND writes still go to the end
    head = os.read(fd, 4096).split(b"\n", 1)[0].decode("utf-8", "replace")
    if not head.startswith("["):
        return None, 0
    try:
        first = json.loads(head[1:].rstrip(",]"))
        run, written = first["args"]["run"], first["args"]["written"]
    except (ValueError, TypeError, KeyError):
        return None, 0
    return (run, written) if isinstance(run, str) and isinstance(written, int) else (None, 0)


def _stale(fd: int, run: str) -> bool:
    """Whether a trace file belongs to an earlier run: another run's, written before this process began.

    The run's own children write after the top process began, even when they
    name another run (a pool worker with chains of its own), so it keeps them.
    """
    from .._event import _WALL_ANCHOR_NS  # when this process loaded trunk_trace

    other, written = _header(fd)
    return other != run and written < _WALL_ANCHOR_NS


class ChromeTraceExporter:
    """Appends every finished event to a trace file shared by the run's processes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._run: Optional[str] = None  # set by the first write
        self._named: set[tuple[int, int]] = set()

    def __repr__(self) -> str:
        return f"ChromeTraceExporter({self.path!r})"

    def _elements(self, records: Sequence[FinishedEvent]) -> list[str]:
        main = threading.main_thread().ident
        elements = []
        for record in records:
            pid, thread = record.pid, record.thread_id
            tid = lane(pid, thread, main)
            for meta in _names(record.name, pid, tid, record.parent_thread, thread, main, self._named):
                elements.append(_ENCODER.encode(meta))
            event = complete(record.event, record.start_ns // 1000, record.end_ns // 1000, pid, tid)
            elements.append(_ENCODER.encode(event))
        return elements

    def export(self, records: Sequence[FinishedEvent]) -> None:
        if not records:
            return
        with self._lock:
            elements = self._elements(records)
            run = self._run or run_of(records[0].event["chainId"])
            # A fork or multiprocessing child belongs to its parent's run even when it opens
            # chains of its own (a pool started outside any block): it never replaces the file.
            from .._state import in_child_process

            first = self._run is None and not in_child_process()
            try:
                self._write(elements, run, first=first, pid=records[0].pid)
                self._run = run
            except OSError as exc:
                count_drop(len(records))
                report_once(f"chrome-write:{self.path}", "cannot write the trace file %s (%s); events are missing from it",
                            self.path, exc)

    def _write(self, elements: list[str], run: str, first: bool, pid: int) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)  # released by close
            if os.fstat(fd).st_size == 0 or (first and _stale(fd, run)):
                os.ftruncate(fd, 0)
                label = {"name": "process_labels", "ph": "M", "pid": pid, "tid": pid,
                         "args": {"labels": RUN_LABEL + run, "run": run, "written": time.time_ns()}}
                data = "[" + _ENCODER.encode(label) + "".join(",\n" + e for e in elements)
            else:
                data = "".join(",\n" + e for e in elements)
            view = memoryview(data.encode("utf-8"))
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    def force_flush(self, timeout: float | None = None) -> bool:
        return True  # every export is written at once

    def shutdown(self, timeout: float | None = None) -> None:
        pass


__all__ = ["ChromeTraceExporter", "dumps", "from_lines", "lane", "load", "run_of"]
