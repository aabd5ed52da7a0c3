"""The live event a block fills in, the finished record exporters read, and validation.

The live :class:`Event` is what ``with track(...) as ev`` hands out: a
``__slots__`` object that only takes a few attribute writes on the hot path.
Ids, keys and the wire dict are made later, off the hot path, by
:func:`finish_record` (in the exporter thread, or at once under ``capture()``).
"""

from __future__ import annotations

import enum
import math
import numbers
import sys
from threading import get_ident
import time
from typing import Any, Iterator, Sequence, Union

from ._context import format_id

TagValue = Union[str, int, float]

MAX_KEY_LENGTH = 127  # the API wants keys shorter than 128 characters
MAX_TAG_VALUE_LENGTH = 1024
TRIM_MARKER = "...[trimmed]"
MAX_ERROR_MESSAGE_LENGTH = 500
DURATION_METRIC = "duration_ms"


class Conclusion(str, enum.Enum):
    """How a block ended, as the Trunk API names it."""

    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"
    SKIPPED = "SKIPPED"

    def __str__(self) -> str:
        return self.value


class Terminated(SystemExit):
    """Raised in the main thread when the process receives SIGTERM (a cancelled CI job).

    A ``SystemExit`` with the conventional status 143, so the process still
    exits the way a terminated one does; blocks it unwinds are ``CANCELLED``.
    """

    def __init__(self, code: int = 143) -> None:
        super().__init__(code)


# One wall-clock anchor per process, then the monotonic clock only: intervals
# nest and finishedAt >= createdAt even when the wall clock steps back.
_WALL_ANCHOR_NS = time.time_ns()
_MONOTONIC_ANCHOR_NS = time.perf_counter_ns()
_EPOCH_OFFSET_NS = _WALL_ANCHOR_NS - _MONOTONIC_ANCHOR_NS  # epoch ns = perf_counter_ns + this


def epoch_ms(monotonic_ns: int) -> int:
    """Epoch milliseconds of a ``time.perf_counter_ns()`` reading of this process."""
    return (monotonic_ns + _EPOCH_OFFSET_NS) // 1_000_000


def monotonic_ns_at(epoch_ns: int) -> int:
    """The ``time.perf_counter_ns()`` reading of this process that matches an epoch time."""
    return epoch_ns - _EPOCH_OFFSET_NS


# --- validation: called where the user passes a value, so errors point at the call ---


def encodable(text: str) -> str:
    """*text* as every output can write it: each character UTF-8 cannot encode (a lone
    surrogate, as ``os.listdir`` and ``os.environ`` make of bytes that are not UTF-8)
    becomes its backslash escape (``"\\udcff"``), as Python's ``backslashreplace`` writes it."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def check_name(value: object, what: str) -> str:
    if value.__class__ is str and value and not value.isspace() and value.isascii():  # type: ignore[attr-defined]
        return value  # type: ignore[return-value]
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a non-empty str, got {type(value).__name__}")
    if not value or value.isspace():
        raise ValueError(f"{what} must be a non-empty str, got {encodable(value)!r}")
    return encodable(str.__str__(value))  # a str subclass (e.g. a str enum) goes as plain str


def trim(text: str, limit: int = MAX_TAG_VALUE_LENGTH) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - len(TRIM_MARKER)] + TRIM_MARKER


# The rule for numbers (metrics, numeric tags): a finite value a 64-bit float can hold,
# which is what every JSON reader takes. Ints stay exact; beyond it even Python's own
# int-to-text limit (4,300 digits) is hit.
MAX_NUMBER = int(sys.float_info.max)


def check_tag(key: object, value: object, what: str = "tag") -> tuple[str, TagValue]:
    """A valid (key, value) for a tag; raises naming *what* ("tag", "track() argument 'tags'")."""
    if key.__class__ is not str or not key or key.isspace() or not key.isascii():  # type: ignore[attr-defined]
        key = check_name(key, f"{what} key")
    cls = value.__class__
    if cls is str and value.isascii():  # type: ignore[attr-defined]
        return key, value if len(value) <= MAX_TAG_VALUE_LENGTH else trim(value)  # type: ignore[arg-type,return-value]
    if cls is int and -MAX_NUMBER <= value <= MAX_NUMBER:  # type: ignore[operator]
        return key, value  # type: ignore[return-value]
    if cls is float and value - value == 0:  # type: ignore[operator]  # finite: inf - inf and nan - nan are nan
        return key, value  # type: ignore[return-value]
    return key, _convert_tag_value(key, value, what)  # type: ignore[arg-type]


def _convert_tag_value(key: str, value: object, what: str) -> TagValue:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return trim(encodable(str.__str__(value)))
    if isinstance(value, numbers.Real):
        return _number(key, value, what)
    raise TypeError(
        f"{what} {key!r}: value must be str, a real number (int, float, ...) or bool, got {type(value).__name__}"
    )


def _number(key: str, value: numbers.Real, what: str) -> int | float:
    """A real number (int, float, Fraction, numpy's, ...) as the int or float the wire carries,
    if it follows the rule for numbers (see MAX_NUMBER); else ValueError naming *key*."""
    try:
        number: int | float = int(value) if isinstance(value, numbers.Integral) else float(value)
    except (ArithmeticError, ValueError, TypeError):  # float(Fraction(10**400)) overflows
        number = math.inf
    if isinstance(number, int) and -MAX_NUMBER <= number <= MAX_NUMBER:
        return number
    if isinstance(number, float) and math.isfinite(number):
        return number
    # Not the value's repr: a huge int or Fraction cannot even be written out.
    exact = isinstance(value, numbers.Rational)  # int, Fraction, numpy's ints
    shown = f"{type(value).__name__} beyond 1.8e308" if exact else repr(number)
    raise ValueError(f"{what} {key!r}: value must be a finite number within the range of a 64-bit float, got {shown}")


def check_metric(key: object, value: object, what: str = "metric") -> tuple[str, float]:
    """A valid (key, value) for a metric: a finite real number (see MAX_NUMBER), never bool."""
    if key.__class__ is not str or not key or key.isspace() or not key.isascii():  # type: ignore[attr-defined]
        key = check_name(key, f"{what} key")
    if key == DURATION_METRIC:
        raise ValueError(f"{what} key {DURATION_METRIC!r} is measured by trunk_trace; use another key")
    cls = value.__class__
    if (cls is int and -MAX_NUMBER <= value <= MAX_NUMBER) or (cls is float and value - value == 0):  # type: ignore[operator]
        return key, value  # type: ignore[return-value]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} {key!r}: value must be a real number (int, float, ...; not bool), got {type(value).__name__}")
    return key, _number(key, value, what)


def check_mapping(items: object, argument: str, check: Any) -> dict:
    if items is None:
        return {}
    if not hasattr(items, "items"):
        raise TypeError(f"{argument} must be a mapping, got {type(items).__name__}")
    result = {}
    for key, value in items.items():  # type: ignore[attr-defined]
        key, value = check(key, value, argument)
        result[key] = value
    return result


def check_conclusion(value: object) -> Conclusion:
    if isinstance(value, Conclusion):
        return value
    try:
        return Conclusion(value)
    except ValueError:
        allowed = ", ".join(c.value for c in Conclusion)
        raise ValueError(f"conclusion must be a trunk_trace.Conclusion ({allowed}), got {value!r}") from None


def shorten_key(path: str) -> str:
    """The path itself when short enough; else a readable prefix and a hash of the whole."""
    if len(path) <= MAX_KEY_LENGTH:
        return path
    import hashlib  # only long keys need it

    digest = hashlib.sha256(path.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{path[: MAX_KEY_LENGTH - 18]}~{digest}"


def conclude(exc: BaseException) -> Conclusion:
    """The automatic conclusion of a block left by *exc*."""
    if isinstance(exc, Exception):
        if isinstance(exc, TimeoutError) or _is_timeout(exc):
            return Conclusion.TIMED_OUT
        return Conclusion.FAILURE
    if isinstance(exc, Terminated):
        return Conclusion.CANCELLED
    if isinstance(exc, SystemExit):
        return Conclusion.SUCCESS if exc.code in (0, None) else Conclusion.FAILURE
    if isinstance(exc, GeneratorExit):
        return Conclusion.SUCCESS  # the consumer stopped early: nothing failed
    if isinstance(exc, KeyboardInterrupt) or _is_cancel(exc):
        return Conclusion.CANCELLED
    return Conclusion.FAILURE


def _is_timeout(exc: BaseException) -> bool:
    # Looked up only when already imported: checking must not import them.
    for module, name in (("subprocess", "TimeoutExpired"), ("asyncio", "TimeoutError"),
                         ("concurrent.futures", "TimeoutError")):
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return True
    return False


def _is_cancel(exc: BaseException) -> bool:
    cls = getattr(sys.modules.get("asyncio"), "CancelledError", None)
    return cls is not None and isinstance(exc, cls)


def error_tags(exc: BaseException) -> tuple[str, str]:
    cls = type(exc)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not replace the user's exception
        message = "<unprintable>"
    return encodable(name), trim(encodable(message), MAX_ERROR_MESSAGE_LENGTH)


class RemoteParent:
    """An event open in another process (inherited through the environment)."""

    __slots__ = ("id", "key", "path", "chain_id")

    def __init__(self, event_id: str, key: str, chain_id: str) -> None:
        # From the environment, which may hold bytes that are not UTF-8.
        self.id = encodable(event_id)
        self.key = self.path = encodable(key)
        self.chain_id = encodable(chain_id)

    def __repr__(self) -> str:
        return f"RemoteParent(id={self.id!r}, key={self.key!r}, chain_id={self.chain_id!r})"


class Event:
    """The handle of an open (or finished) block: ``with track("x") as ev``.

    ``id``, ``chain_id``, ``name``, ``kind`` and ``key`` describe it; ``tag()``
    and ``metric()`` add to it; setting ``conclusion`` overrides the automatic one.
    """

    __slots__ = (
        "_spec", "parent", "_id", "_start", "_end", "_token",
        "_tags", "_metrics", "_conclusion", "_outcome", "_error", "_path", "_thread",
    )
    _spec: Any  # the Block describing the step
    parent: Event | RemoteParent | None
    _id: Any  # an int until first formatted, then its str
    _start: int  # perf_counter_ns
    _end: Any  # perf_counter_ns once finished, None while open
    _token: Any  # the ContextVar token while current
    _tags: dict[str, TagValue] | None
    _metrics: dict[str, float] | None
    _conclusion: Conclusion | None  # set by the user
    _outcome: Conclusion | None  # from the exception the block ended with
    _error: tuple[str, str] | None  # error.type and error.message
    _path: str | None
    _thread: int

    def __init__(self, spec: Any, parent: Event | RemoteParent | None) -> None:
        self._spec = spec
        self.parent = parent
        self._tags = self._metrics = self._conclusion = self._outcome = self._error = None
        self._path = self._end = self._token = None
        self._thread = get_ident()

    # -- identity (made on demand: the hot path only holds integers) --

    @property
    def id(self) -> str:
        event_id = self._id
        if event_id.__class__ is int:
            event_id = self._id = format_id(event_id)
        return event_id

    @property
    def chain_id(self) -> str:
        """The root's id: found by walking up the parents (the hot path keeps no chain field)."""
        ev = self
        parent = ev.parent
        while parent is not None:
            if parent.__class__ is RemoteParent:
                return parent.chain_id  # type: ignore[union-attr]
            ev, parent = parent, parent.parent  # type: ignore[union-attr,assignment]
        return ev.id

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def kind(self) -> str:
        kind = self._spec.kind
        if kind is None:
            return "pipeline" if self.parent is None else "step"
        return kind

    @property
    def path(self) -> str:
        """The full path of names from the root (what ``key`` is shortened from)."""
        path = self._path
        if path is None:
            # A loop, not recursion: blocks may nest deeper than Python's recursion limit.
            # Up to the nearest ancestor whose path is known (or needs no parent's) ...
            unknown: list[Event] = []
            ev: Event | RemoteParent | None = self
            while ev.__class__ is Event:
                if ev._path is not None:  # type: ignore[union-attr]
                    path = ev._path  # type: ignore[union-attr]
                    break
                unknown.append(ev)  # type: ignore[arg-type]
                if ev._spec.key is not None:  # type: ignore[union-attr]
                    break
                ev = ev.parent  # type: ignore[union-attr]
            else:
                path = None if ev is None else ev.path  # a RemoteParent's path is its key
            # ... then down again, each block's path from its parent's.
            for ev in reversed(unknown):
                spec = ev._spec
                if spec.key is not None:
                    path = spec.key
                else:
                    path = spec.name if path is None else f"{path}/{spec.name}"
                ev._path = path
        return path  # type: ignore[return-value]

    @property
    def key(self) -> str:
        return shorten_key(self.path)

    # -- what the block adds while it runs --

    def tag(self, key: str, value: TagValue) -> None:
        """Add a tag to this event's payload (replacing one of the same key)."""
        key, value = check_tag(key, value)
        if self._tags is None:
            self._tags = {}
        self._tags[key] = value

    def metric(self, key: str, value: float) -> None:
        """Add a numeric metric to this event's payload (replacing one of the same key)."""
        key, value = check_metric(key, value)
        if self._metrics is None:
            self._metrics = {}
        self._metrics[key] = value

    @property
    def conclusion(self) -> Conclusion | None:
        """The conclusion set by the user, or (once finished) the automatic one."""
        if self._conclusion is not None:
            return self._conclusion
        if self._end is None:
            return None
        return self._outcome or Conclusion.SUCCESS

    @conclusion.setter
    def conclusion(self, value: Conclusion | str) -> None:
        self._conclusion = check_conclusion(value)

    @property
    def finished(self) -> bool:
        return self._end is not None

    def __repr__(self) -> str:
        conclusion = self.conclusion
        state = "open" if conclusion is None else f"conclusion={conclusion.value}"
        return f"<trunk_trace.Event {self.name!r} key={self.key!r} id={self.id} {state}>"


class FinishedEvent:
    """What exporters receive: one finished event, read-only.

    ``event`` is the wire dict, exactly what goes into the request's
    ``"events"`` list; it is built on first access and kept, so an output that
    only needs a few fields never pays for it. ``live`` is the :class:`Event`
    it was made from (the summary folds its fields directly: it runs per event).
    """

    __slots__ = ("live", "_event", "_json", "pid", "thread_id", "_platform", "_common_tags")

    def __init__(self, live: Event, pid: int, platform: str, common_tags: Any = ()) -> None:
        self.live = live  # the Event handle: read-only from here on
        self._event: dict | None = None
        self._json: str | None = None
        self.pid = pid
        self.thread_id: int = live._thread
        self._platform = platform
        self._common_tags = common_tags

    @property
    def event(self) -> dict:
        event = self._event
        if event is None:
            event = self._event = wire_event(self.live, self._platform, self._common_tags)
        return event

    @property
    def json(self) -> str:
        """``event`` as compact JSON (what the API, the spool and JSON Lines files get), made once.

        Encoded straight from the live event (:func:`encode_wire`) without building the dict;
        when the dict was built already, from the dict, so both always agree.
        """
        text = self._json
        if text is None:
            event = self._event
            if event is None:
                text = encode_wire(self.live, self._platform, self._common_tags)
            else:
                text = wire_encoder().encode(event)
            self._json = text
        return text

    @property
    def name(self) -> str:
        return self.live._spec.name

    @property
    def key(self) -> str:
        return self.live.key

    @property
    def parent_key(self) -> str | None:
        parent = self.live.parent
        return None if parent is None else parent.key

    @property
    def start_ms(self) -> int:
        return epoch_ms(self.live._start)

    @property
    def end_ms(self) -> int:
        return epoch_ms(self.live._end)

    @property
    def duration_ms(self) -> float:
        return (self.live._end - self.live._start) / 1e6

    # Nanosecond epoch times for outputs finer than the wire's milliseconds (OTLP, trace files).
    @property
    def start_ns(self) -> int:
        return self.live._start + _EPOCH_OFFSET_NS

    @property
    def end_ns(self) -> int:
        return self.live._end + _EPOCH_OFFSET_NS

    @property
    def parent_thread(self) -> int | None:
        """The thread of the parent when it is a block of this process; None for a root or a remote parent."""
        parent = self.live.parent
        return parent._thread if isinstance(parent, Event) else None

    @property
    def root_name(self) -> str:
        """The name of the chain's root: the outermost block's when it is in this process, else
        the first segment of the inherited parent's key (keys are paths of names by default)."""
        ev: Event | RemoteParent = self.live
        while isinstance(ev, Event) and ev.parent is not None:
            ev = ev.parent
        if isinstance(ev, Event):
            return ev._spec.name
        return ev.key.split("/", 1)[0]

    @property
    def conclusion(self) -> str:
        return self.live.conclusion.value  # type: ignore[union-attr]

    def __repr__(self) -> str:
        return f"<FinishedEvent {self.key!r} {self.conclusion} pid={self.pid}>"


class Records(Sequence["FinishedEvent"]):
    """One batch of finished events as exporters receive it: a read-only sequence of
    :class:`FinishedEvent`, made on first access.

    ``events`` holds the live events themselves: an output that folds every
    event (the summary) reads those, and the batch never makes a record for
    it (that alone is about 0.25 us per event).
    """

    __slots__ = ("events", "_records", "_pid", "_platform", "_common_tags")

    def __init__(self, events: list[Event], pid: int, platform: str, common_tags: Any = ()) -> None:
        self.events = events
        self._records: list[FinishedEvent] | None = None
        self._pid, self._platform, self._common_tags = pid, platform, common_tags

    def records(self) -> list[FinishedEvent]:
        records = self._records
        if records is None:
            pid, platform, common_tags = self._pid, self._platform, self._common_tags
            records = self._records = [FinishedEvent(ev, pid, platform, common_tags) for ev in self.events]
        return records

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, index: Any) -> Any:
        return self.records()[index]

    def __iter__(self) -> Iterator[FinishedEvent]:
        return iter(self.records())

    def __repr__(self) -> str:
        return f"<Records of {len(self.events)} events>"


def wire_event(ev: Event, platform: str, common_tags: Any = ()) -> dict:
    """The event exactly as it goes into the request's ``"events"`` list."""
    spec = ev._spec
    start, end = ev._start, ev._end
    tags = dict(spec.tags) if spec.tags else {}
    if ev._tags:
        tags.update(ev._tags)
    if ev._error is not None:
        tags.setdefault("error.type", ev._error[0])
        tags.setdefault("error.message", ev._error[1])
    for key, value in common_tags:
        tags.setdefault(key, value)
    metrics = [{"k": DURATION_METRIC, "v": (end - start) / 1e6}]
    if spec.metrics:
        metrics.extend({"k": k, "v": v} for k, v in spec.metrics.items() if not (ev._metrics and k in ev._metrics))
    if ev._metrics:
        metrics.extend({"k": k, "v": v} for k, v in ev._metrics.items())
    key = ev.key
    record: dict[str, Any] = {"id": ev.id, "chainId": ev.chain_id}
    parent = ev.parent
    if parent is not None:
        record["parent"] = {"eventId": parent.id, "sequenceKey": parent.key}
    record["createdAt"] = epoch_ms(start)
    record["finishedAt"] = epoch_ms(end)
    record["conclusion"] = ev.conclusion.value  # type: ignore[union-attr]
    record["payload"] = {"metrics": metrics, "tags": [{"k": k, "v": v} for k, v in tags.items()]}
    record["sequence"] = {
        "platform": platform,
        "kind": ev.kind,
        "key": key,
        "name": spec.name,
        "payload": {"tags": []},  # what would describe the step across runs: nothing yet
    }
    return record


# --- the wire JSON, encoded straight from the live event ---
#
# ``encode_wire(ev, ...)`` is byte for byte ``wire_encoder().encode(wire_event(ev, ...))``
# (tests/test_encoding.py checks it over random events), at less than half the cost:
# it skips the ~20 small dicts and lists of the wire dict and json's generic
# walk over them, and encodes only the strings and numbers with json's own
# functions. Exporters that need JSON (Trunk HTTP, spool, JSON Lines) use it
# through ``FinishedEvent.json``; others (OTLP, trace files, tests) read the dict.
# json loads on first use: ``import trunk_trace`` stays free of it.

_WIRE_ENCODER: Any = None
_encode_str: Any = None  # json.encoder.encode_basestring: what the encoder uses for str (ensure_ascii=False)
_encode_any: Any = None  # the encoder's encode(), for every value not of an exact common type
_common_cache: Any = (None, None, None, ())  # (platform, common_tags, platform JSON, tag fragments)
_parent_cache: Any = (None, "", "")  # (parent, its "parent" fragment, its chain id's JSON)


def wire_encoder() -> Any:
    """The one ``json.JSONEncoder`` of the wire format: compact, UTF-8 text (``ensure_ascii=False``)."""
    global _WIRE_ENCODER, _encode_str, _encode_any
    if _WIRE_ENCODER is None:
        import json
        from json.encoder import encode_basestring

        encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
        _encode_str, _encode_any = encode_basestring, encoder.encode
        _WIRE_ENCODER = encoder
    return _WIRE_ENCODER


def _json_value(value: Any) -> str:
    """One JSON value as the wire encoder writes it (exact types first, the encoder for the rest)."""
    cls = value.__class__
    if cls is str:
        return _encode_str(value)
    if cls is int:
        return int.__repr__(value)
    if cls is float and value - value == 0:  # finite (inf and nan go through the encoder)
        return float.__repr__(value)
    return _encode_any(value)


def _common(platform: Any, common_tags: Any) -> tuple[str, tuple[tuple[Any, str], ...]]:
    """The platform's JSON and the common tags' fragments, kept for the last (platform, tags) seen."""
    global _common_cache
    cached = _common_cache
    if cached[0] is platform and cached[1] is common_tags:
        return cached[2], cached[3]
    fragments: dict = {}
    for key, value in common_tags:
        if key not in fragments:  # the first of a key wins, as with setdefault in wire_event
            fragments[key] = f'{{"k":{_json_value(key)},"v":{_json_value(value)}}}'
    result = (_json_value(platform), tuple(fragments.items()))
    if common_tags.__class__ is tuple:  # identity-cached only when it cannot change under us
        _common_cache = (platform, common_tags, *result)
    return result


_CONCLUSION_JSON = {conclusion: f'"{conclusion.value}"' for conclusion in Conclusion}


def _pair_json(key: Any, value: Any) -> str:
    """One ``{"k":...,"v":...}`` item; str keys with str or int values are written without calls."""
    cls = value.__class__
    if key.__class__ is str and (cls is str or cls is int):
        return f'{{"k":{_encode_str(key)},"v":{_encode_str(value) if cls is str else int.__repr__(value)}}}'
    return f'{{"k":{_json_value(key)},"v":{_json_value(value)}}}'


def encode_wire(ev: Event, platform: str, common_tags: Any = ()) -> str:
    """``wire_event(ev, platform, common_tags)`` as compact JSON, without building the dict.

    This runs once per event sent or written, so the fields whose type is known
    are written inline (a Python call costs as much as encoding a short string).
    """
    global _parent_cache
    if _encode_str is None:
        wire_encoder()
    string = _encode_str  # for fields that are always str (ids, keys, kinds, names)
    spec = ev._spec
    start, end = ev._start, ev._end
    own, error = ev._tags, ev._error
    # Tags merged exactly as in wire_event (same precedence, same order).
    if spec.tags or error is not None:
        tags = dict(spec.tags) if spec.tags else {}
        if own:
            tags.update(own)
        if error is not None:
            tags.setdefault("error.type", error[0])
            tags.setdefault("error.message", error[1])
    else:
        tags = own or {}  # only read below
    platform_json, common = _common(platform, common_tags)
    # Plain loops, not comprehensions: most of these are empty or hold one item, and
    # a comprehension's own frame costs more than that.
    parts = []
    for k, v in tags.items():
        parts.append(_pair_json(k, v))
    for key, fragment in common:
        if key not in tags:
            parts.append(fragment)
    tags_json = ",".join(parts)
    metrics_json = f'{{"k":"{DURATION_METRIC}","v":{(end - start) / 1e6!r}}}'  # a finite float: repr is its JSON
    own_metrics = ev._metrics
    if spec.metrics or own_metrics:
        parts = [metrics_json]
        if spec.metrics:
            for k, v in spec.metrics.items():
                if not (own_metrics and k in own_metrics):
                    parts.append(f'{{"k":{_json_value(k)},"v":{_json_value(v)}}}')
        if own_metrics:
            for k, v in own_metrics.items():
                parts.append(f'{{"k":{_json_value(k)},"v":{_json_value(v)}}}')
        metrics_json = ",".join(parts)
    parent = ev.parent
    if parent is None:
        parent_json = ""
        chain_json = string(ev.id)
    else:
        # Siblings share their parent (every test under the session, every step under the
        # build), and with it their chain: both fragments are kept for the last parent seen,
        # held by identity.
        cached = _parent_cache
        if cached[0] is parent:
            parent_json, chain_json = cached[1], cached[2]
        else:
            parent_json = f',"parent":{{"eventId":{string(parent.id)},"sequenceKey":{string(parent.key)}}}'
            chain_json = string(parent.chain_id)
            _parent_cache = (parent, parent_json, chain_json)
    conclusion = ev._conclusion or ev._outcome or Conclusion.SUCCESS  # ev.conclusion of a finished event
    return (
        f'{{"id":{string(ev.id)},"chainId":{chain_json}{parent_json}'
        f',"createdAt":{(start + _EPOCH_OFFSET_NS) // 1_000_000},"finishedAt":{(end + _EPOCH_OFFSET_NS) // 1_000_000}'
        f',"conclusion":{_CONCLUSION_JSON[conclusion]}'
        f',"payload":{{"metrics":[{metrics_json}],"tags":[{tags_json}]}}'
        f',"sequence":{{"platform":{platform_json},"kind":{string(ev.kind)},"key":{string(ev.key)}'
        f',"name":{string(spec.name)},"payload":{{"tags":[]}}}}}}'
    )


def record_json(record: Any) -> str:
    """The wire JSON of a record handed to an exporter: a FinishedEvent's own (encoded once,
    from the live event), or for any other record (exporters are duck-typed) its ``event`` dict's."""
    if record.__class__ is FinishedEvent:
        return record.json
    return wire_encoder().encode(record.event)
