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

from .._event import DURATION_METRIC, Conclusion, Event, FinishedEvent, Records, monotonic_ns_at

# Worst first: a line that folds several events shows the worst conclusion.
_SEVERITY = {"FAILURE": 4, "TIMED_OUT": 3, "CANCELLED": 2, "SUCCESS": 1, "SKIPPED": 0}
_COLOURS = {"FAILURE": "31", "TIMED_OUT": "33", "CANCELLED": "33", "SUCCESS": "32", "SKIPPED": "2"}
OTHER = "(other steps)"


class Node:
    """One line of the summary: every event of one step (sequence key) folded together.

    Times are ``perf_counter_ns`` readings of this process (wire events' epoch
    times are converted on the way in), so folding a live event is plain integer work.
    """

    __slots__ = ("key", "parent_key", "name", "count", "total_ns", "longest_ns", "start_ns", "end_ns",
                 "worst", "failures", "skipped", "children")

    def __init__(self, key: str, parent_key: str | None, name: str, start_ns: int) -> None:
        self.key, self.parent_key, self.name = key, parent_key, name
        self.count = self.total_ns = self.longest_ns = 0
        self.start_ns = self.end_ns = start_ns
        self.worst: str | None = None  # the most severe conclusion other than SUCCESS
        self.failures = self.skipped = 0
        self.children: list[Node] = []

    def conclude(self, conclusion: str) -> None:
        """Count one event that did not end in SUCCESS (those are only counted)."""
        if conclusion == "SKIPPED":
            self.skipped += 1
        else:
            self.failures += 1
        if self.worst is None or _SEVERITY.get(conclusion, 4) > _SEVERITY[self.worst]:
            self.worst = conclusion

    @property
    def conclusion(self) -> str:
        worst = self.worst
        if worst is not None and _SEVERITY.get(worst, 4) > _SEVERITY["SUCCESS"]:
            return worst
        return "SKIPPED" if self.skipped == self.count else "SUCCESS"


class Summary:
    """Folds finished events into the tree of steps, and renders it."""

    def __init__(self, max_nodes: int = 1000) -> None:
        self.max_nodes = max_nodes
        self.nodes: dict[str, Node] = {}
        self.parent_keys: set[str] = set()  # keys some node names as parent
        self.events = 0

    def add(self, events: Iterable[Event]) -> None:
        """Fold finished (live) events in.

        This runs once per event of the build, so it reads the event's fields
        directly rather than through properties, and a step already seen costs
        one dict lookup and a few integer updates.
        """
        nodes = self.nodes
        count = 0
        for ev in events:
            count += 1
            path = ev._path
            if path is None:
                path = ev.path
            start, end = ev._start, ev._end
            node = nodes.get(path)
            if node is None:
                parent = ev.parent
                node = self._node(path, None if parent is None else parent.path, ev.name, start)
            duration = end - start
            node.count += 1
            node.total_ns += duration
            if duration > node.longest_ns:
                node.longest_ns = duration
            if start < node.start_ns:
                node.start_ns = start
            if end > node.end_ns:
                node.end_ns = end
            conclusion = ev._conclusion or ev._outcome
            if conclusion is not None and conclusion is not Conclusion.SUCCESS:
                node.conclude(conclusion.value)
        self.events += count

    def add_wire(self, event: dict) -> None:
        """Fold one wire event in (from a JSON Lines file)."""
        parent = event.get("parent")
        sequence = event["sequence"]
        duration_ms = next((m["v"] for m in event["payload"]["metrics"] if m["k"] == DURATION_METRIC), 0.0)
        start = monotonic_ns_at(event["createdAt"] * 1_000_000)
        end = monotonic_ns_at(event.get("finishedAt", event["createdAt"]) * 1_000_000)
        node = self.nodes.get(sequence["key"])
        if node is None:
            node = self._node(sequence["key"], parent["sequenceKey"] if parent else None, sequence["name"], start)
        duration = int(duration_ms * 1_000_000)
        node.count += 1
        node.total_ns += duration
        node.longest_ns = max(node.longest_ns, duration)
        node.start_ns = min(node.start_ns, start)
        node.end_ns = max(node.end_ns, end)
        conclusion = event.get("conclusion", "SUCCESS")
        if conclusion != "SUCCESS":
            node.conclude(conclusion)
        self.events += 1

    def _node(self, key: str, parent_key: str | None, name: str, start_ns: int) -> Node:
        """The node a step not seen yet folds into: its own, or past the bound "other steps"
        under its parent (unless it is the parent of steps already held)."""
        if len(self.nodes) >= self.max_nodes and key not in self.parent_keys:
            original, key = key, f"{parent_key}\0{OTHER}" if parent_key else OTHER
            name = OTHER if key != original else name
            node = self.nodes.get(key)
            if node is not None:
                return node
        node = self.nodes[key] = Node(key, parent_key, name, start_ns)
        if parent_key is not None:
            self.parent_keys.add(parent_key)
        return node

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
        run_start = min(n.start_ns for n in self.nodes.values())
        run_end = max(n.end_ns for n in self.nodes.values())
        span = max(run_end - run_start, 1)
        rows = list(_walk(roots, 0))
        label_width = min(max(len(_label(n, d)) for n, d in rows), 60)
        fill, empty = ("\u2588", " ") if unicode else ("#", " ")
        plural = "s" if self.events != 1 else ""
        lines = [f"trunk_trace: {self.events} event{plural} in {_seconds((run_end - run_start) / 1e6)}"]
        for node, depth in rows:
            label = _label(node, depth)
            if len(label) > label_width:
                label = label[: label_width - 3] + "..."
            first = (node.start_ns - run_start) * width // span
            last = max(first + 1, min(width, -(-(node.end_ns - run_start) * width // span)))
            bar = empty * first + fill * (last - first) + empty * (width - last)
            result = node.conclusion
            if node.count > 1 and node.failures:
                result += f" {node.failures}/{node.count}"
            extra = f"  x{node.count}, longest {_seconds(node.longest_ns / 1e6)}" if node.count > 1 else ""
            if colour:
                code = _COLOURS.get(node.conclusion, "0")
                result = f"\x1b[{code}m{result:<9}\x1b[0m"
                bar = f"\x1b[{code}m{bar}\x1b[0m"
            lines.append(f"  {label:<{label_width}}  {_seconds(node.total_ns / 1e6):>9}  {result:<9}  |{bar}|{extra}")
        return "\n".join(lines) + "\n"


def _walk(nodes: Iterable[Node], depth: int) -> Iterable[tuple[Node, int]]:
    """Each node, then its children (by start), depth first: with a stack, not recursion,
    as steps may nest deeper than Python's recursion limit."""
    stack = [(node, depth) for node in reversed(list(nodes))]
    while stack:
        node, depth = stack.pop()
        yield node, depth
        stack.extend((child, depth + 1) for child in reversed(sorted(node.children, key=_start)))


def _start(node: Node) -> tuple[int, str]:
    return node.start_ns, node.name


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
        # The processor's batches carry the live events: fold those, make no records.
        events = records.events if isinstance(records, Records) else [record.live for record in records]
        with self._lock:
            self._summary.add(events)

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
