"""The timing summary: a waterfall of the run's steps, printed to stderr at exit.

Events are folded into one node per sequence key as they arrive, so a step
repeated in a loop is one line (count, total, longest) and memory grows with
the number of distinct steps, not of events. Past ``max_nodes`` distinct
steps, new ones are folded into one "other steps" line under their parent.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import IO, Iterable, Sequence

from .._event import FinishedEvent

# Worst first: a line that folds several events shows the worst conclusion.
_SEVERITY = {"FAILURE": 4, "TIMED_OUT": 3, "CANCELLED": 2, "SUCCESS": 1, "SKIPPED": 0}
_COLOURS = {"FAILURE": "31", "TIMED_OUT": "33", "CANCELLED": "33", "SUCCESS": "32", "SKIPPED": "2"}
OTHER = "(other steps)"


class Node:
    __slots__ = ("key", "parent_key", "name", "count", "total_ms", "longest_ms", "start_ms", "end_ms",
                 "conclusion", "failures", "children")

    def __init__(self, key: str, parent_key: str | None, name: str) -> None:
        self.key, self.parent_key, self.name = key, parent_key, name
        self.count = 0
        self.total_ms = self.longest_ms = 0.0
        self.start_ms = self.end_ms = 0
        self.conclusion = "SKIPPED"
        self.failures = 0
        self.children: list[Node] = []

    def add(self, start_ms: int, end_ms: int, duration_ms: float, conclusion: str) -> None:
        if self.count == 0 or start_ms < self.start_ms:
            self.start_ms = start_ms
        if end_ms > self.end_ms:
            self.end_ms = end_ms
        self.count += 1
        self.total_ms += duration_ms
        if duration_ms > self.longest_ms:
            self.longest_ms = duration_ms
        if conclusion not in ("SUCCESS", "SKIPPED"):
            self.failures += 1
        if _SEVERITY.get(conclusion, 4) > _SEVERITY[self.conclusion] or self.count == 1:
            self.conclusion = conclusion


class Summary:
    """Folds wire events into the tree of steps, and renders it."""

    def __init__(self, max_nodes: int = 1000) -> None:
        self.max_nodes = max_nodes
        self.nodes: dict[str, Node] = {}
        self.parent_keys: set[str] = set()  # keys some node names as parent
        self.events = 0

    def add(self, record: FinishedEvent) -> None:
        """Fold one finished event in (reads a few fields; never builds its wire dict)."""
        self.fold(*record.timing())

    def add_wire(self, event: dict) -> None:
        """Fold one wire event in (from a JSON Lines file)."""
        parent = event.get("parent")
        duration = next((m["v"] for m in event["payload"]["metrics"] if m["k"] == "duration_ms"), 0.0)
        start = event["createdAt"]
        self.fold(event["sequence"]["key"], parent["sequenceKey"] if parent else None, event["sequence"]["name"],
                  start, event.get("finishedAt", start), duration, event.get("conclusion", "SUCCESS"))

    def fold(self, key: str, parent_key: str | None, name: str, start_ms: int, end_ms: int,
             duration_ms: float, conclusion: str) -> None:
        node = self.nodes.get(key)
        if node is None:
            # Past the bound, a new step is folded into "other steps", unless
            # it is the parent of steps already held (at most one per node).
            if len(self.nodes) >= self.max_nodes and key not in self.parent_keys:
                original, key = key, f"{parent_key}\0{OTHER}" if parent_key else OTHER
                name = OTHER if key != original else name
                node = self.nodes.get(key)
            if node is None:
                node = self.nodes[key] = Node(key, parent_key, name)
                if parent_key is not None:
                    self.parent_keys.add(parent_key)
        node.add(start_ms, end_ms, duration_ms, conclusion)
        self.events += 1

    def roots(self) -> list[Node]:
        for node in self.nodes.values():
            node.children = []
        roots = []
        for node in self.nodes.values():
            parent = self.nodes.get(node.parent_key) if node.parent_key is not None else None
            if parent is None or parent is node:
                roots.append(node)
            else:
                parent.children.append(node)
        return sorted(roots, key=_start)

    def render(self, colour: bool = False, unicode: bool = True, width: int = 32) -> str:
        roots = self.roots()
        if not roots:
            return ""
        run_start = min(n.start_ms for n in self.nodes.values())
        run_end = max(n.end_ms for n in self.nodes.values())
        span = max(run_end - run_start, 1)
        rows = list(_walk(roots, 0))
        label_width = min(max(len(_label(n, d)) for n, d in rows), 60)
        fill, empty = ("\u2588", " ") if unicode else ("#", " ")
        plural = "s" if self.events != 1 else ""
        lines = [f"trunk_trace: {self.events} event{plural} in {_seconds(run_end - run_start)}"]
        for node, depth in rows:
            label = _label(node, depth)
            if len(label) > label_width:
                label = label[: label_width - 3] + "..."
            first = int((node.start_ms - run_start) * width / span)
            last = max(first + 1, min(width, -(-(node.end_ms - run_start) * width // span)))
            bar = empty * first + fill * (last - first) + empty * (width - last)
            result = node.conclusion
            if node.count > 1 and node.failures:
                result += f" {node.failures}/{node.count}"
            extra = f"  x{node.count}, longest {_seconds(node.longest_ms)}" if node.count > 1 else ""
            if colour:
                code = _COLOURS.get(node.conclusion, "0")
                result = f"\x1b[{code}m{result:<9}\x1b[0m"
                bar = f"\x1b[{code}m{bar}\x1b[0m"
            lines.append(f"  {label:<{label_width}}  {_seconds(node.total_ms):>9}  {result:<9}  |{bar}|{extra}")
        return "\n".join(lines) + "\n"


def _walk(nodes: Iterable[Node], depth: int) -> Iterable[tuple[Node, int]]:
    for node in nodes:
        yield node, depth
        yield from _walk(sorted(node.children, key=_start), depth + 1)


def _start(node: Node) -> tuple[int, str]:
    return node.start_ms, node.name


def _label(node: Node, depth: int) -> str:
    return "  " * depth + node.name


def _seconds(ms: float) -> str:
    if ms < 1000:
        return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    minutes, seconds = divmod(ms / 1000, 60)
    return f"{int(minutes)} min {seconds:04.1f} s"


def wants_colour(stream: IO[str]) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


class ConsoleSummary:
    """Exporter that prints the timing summary when it shuts down (at exit)."""

    def __init__(self, stream: IO[str] | None = None, sent: bool = False, max_nodes: int = 1000) -> None:
        self._stream = stream
        self._sent = sent
        self._summary = Summary(max_nodes)
        self._lock = threading.Lock()
        self._done = False

    def export(self, records: Sequence[FinishedEvent]) -> None:
        with self._lock:
            add = self._summary.add
            for record in records:
                add(record)

    def force_flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self, timeout: float | None = None) -> None:
        with self._lock:
            if self._done or not self._summary.events:
                return
            self._done = True
            stream = self._stream or sys.stderr
            if stream is None:
                return
            encoding = (getattr(stream, "encoding", None) or "ascii").lower()
            text = self._summary.render(colour=wants_colour(stream), unicode=encoding.startswith("utf"))
            if not self._sent:
                text += "  (not sent to Trunk: TRUNK_API_TOKEN is not set)\n"
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):
                pass  # stderr closed or gone: the summary is a courtesy, never an error
