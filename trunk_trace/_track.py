"""``track``: one object for ``with``, ``async with`` and decorators.

A :class:`Block` only describes a step (name, kind, key, tags, metrics) and is
never changed after it is made; everything about one run of the step lives on
the :class:`~trunk_trace._event.Event` opened for it, which sits in the
``ContextVar``. So one decorated function may run in many threads and tasks at
once, and a ``Block`` may be entered again while open.
"""

from __future__ import annotations

from threading import get_ident
from time import perf_counter_ns
from typing import Any, Callable, Literal, Mapping, TypeVar, overload

from . import _context, _state
from ._state import STATE
from ._context import _CURRENT
from ._event import (
    MAX_NUMBER,
    MAX_TAG_VALUE_LENGTH,
    Conclusion,
    Event,
    RemoteParent,
    TagValue,
    check_conclusion,
    check_mapping,
    check_metric,
    check_name,
    check_tag,
    conclude,
    error_tags,
    monotonic_ns_at,
)

F = TypeVar("F", bound=Callable[..., Any])

# The hot paths take ids as new_id() does, without its call: _context._prefix | this().
_next_sequence_number = _context._sequence.__next__
# ...and, once per batch of ids, let the processor know (see BatchProcessor.on_batch).
_BATCH_MASK = _state.BATCH_SIZE - 1
# Events and blocks on the hot paths are allocated without an __init__, and filled in inline.
_new_event = _new_block = object.__new__


class DisabledEvent(Event):
    """What blocks hand out while tracing is disabled: checks arguments, keeps nothing."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(track("disabled"), None)
        self._id = "00000000-0000-0000-0000-000000000000"

    def tag(self, key: str, value: TagValue) -> None:
        check_tag(key, value)

    def metric(self, key: str, value: float) -> None:
        check_metric(key, value)

    @property
    def conclusion(self) -> Conclusion | None:
        return None

    @conclusion.setter
    def conclusion(self, value: Conclusion | str) -> None:
        check_conclusion(value)


class Block:
    """A step to time, made by :func:`track` (its only constructor). Use it with ``with``,
    ``async with`` or as a decorator."""

    __slots__ = ("name", "kind", "key", "tags", "metrics")
    name: str | None  # None only on a bare decorator's Block, until it names a function
    kind: str | None
    key: str | None
    tags: dict[str, TagValue] | None
    metrics: dict[str, float] | None

    def __repr__(self) -> str:
        return f"track({self.name!r}, kind={self.kind!r}, key={self.key!r})"

    # -- with / async with --

    # The enter/exit of the enabled path is written out here rather than
    # calling open_event/close_event, and the Event is filled in here rather
    # than by Event.__init__ (the same fields): each saved call is ~50 ns per block.

    def __enter__(self) -> Event:
        state = STATE
        if not state.enabled or self.name is None:
            if self.name is None:
                raise TypeError("track() needs a name when used with 'with': with track(\"compile\"): ...")
            return open_event(self)  # booting, or disabled
        parent: Event | RemoteParent | None = _CURRENT.get()
        if parent is None:
            parent = state.inherited_parent
        ev = _new_event(Event)
        ev._spec = self
        ev.parent = parent
        ev._tags = ev._metrics = ev._conclusion = ev._outcome = ev._error = ev._path = ev._end = None
        ev._thread = get_ident()
        number = _next_sequence_number()
        ev._id = _context._prefix | number
        if not number & _BATCH_MASK:
            _state.every_batch()
        ev._token = _CURRENT.set(ev)
        ev._start = perf_counter_ns()
        return ev

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        end = perf_counter_ns()
        ev = _CURRENT.get()
        # The event this block opened is the current one, unless tracing was
        # disabled when it was entered (then there is none to close).
        if ev is None or ev._spec is not self:
            return False
        ev._end = end
        try:
            _CURRENT.reset(ev._token)
        except ValueError:
            pass  # exited in another context than entered in: leave that one alone
        ev._token = None
        if exc is not None:
            _conclude(ev, exc)
        STATE.on_end(ev)
        return False

    async def __aenter__(self) -> Event:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        return self.__exit__(exc_type, exc, tb)

    # -- decorator --

    def __call__(self, func: F) -> F:
        if not callable(func) and not isinstance(func, (classmethod, staticmethod)):
            raise TypeError(f"track() can decorate a function or method, got {type(func).__name__}")
        import inspect

        target = func.__func__ if isinstance(func, (classmethod, staticmethod)) else func
        spec = self
        if spec.name is None:
            name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
            if not isinstance(name, str) or not name:
                raise TypeError(f"track(): {func!r} has no __qualname__; pass a name: @track('name')")
            spec = track(name, kind=self.kind, key=self.key)
            spec.tags, spec.metrics = self.tags, self.metrics
        if inspect.isasyncgenfunction(target):
            wrapper = _async_generator_wrapper(spec)
        elif inspect.iscoroutinefunction(target):
            wrapper = _coroutine_wrapper(spec)
        elif inspect.isgeneratorfunction(target):
            wrapper = _generator_wrapper(spec)
        elif inspect.isfunction(func):
            # The common case, and the one on hot paths: a plain closure costs
            # ~0.1 us per call where wrapt's proxy costs ~0.5 us.
            return _traced_function(spec, func)  # type: ignore[return-value]
        else:
            wrapper = _function_wrapper(spec)
        # wrapt keeps the rest transparent: a coroutine or generator function
        # stays one for inspect (its proxy forwards __code__), descriptors bind
        # as before, and a decorated callable object keeps its type and attributes.
        import wrapt  # imported on first such decoration: it costs 20-60 ms

        return wrapt.FunctionWrapper(func, wrapper)  # type: ignore[return-value]


@overload
def track(name: F, /) -> F: ...


@overload
def track(
    name: str | None = None,
    /,
    *,
    kind: str | None = None,
    key: str | None = None,
    tags: Mapping[str, TagValue] | None = None,
    metrics: Mapping[str, float] | None = None,
) -> Block: ...


def track(
    name: Any = None,
    /,
    *,
    kind: str | None = None,
    key: str | None = None,
    tags: Mapping[str, TagValue] | None = None,
    metrics: Mapping[str, float] | None = None,
) -> Any:
    """Time a step of the build.

    ``with track("compile") as ev:`` / ``async with track(...)`` times a block;
    ``@track`` (named after the function's ``__qualname__``) or
    ``@track("lint", kind="task")`` times every call of a function, coroutine,
    generator or async generator. Blocks nest: an event opened inside another
    is its child and shares its chain.

    *kind* is the sequence kind (default ``pipeline`` for a root, ``step``
    nested); *key* replaces the block's sequence key (children extend it);
    *tags* and *metrics* start the event's payload.
    """
    # Written out rather than in a Block.__init__: a Python __init__ frame is ~15%
    # of a block's cost, and the common case (a plain, non-blank str name, short
    # str or int tag values under str keys) passes on exact type checks alone (and an ASCII
    # check: other text may hold what UTF-8 cannot encode, see _event.encodable).
    block = _new_block(Block)
    if name.__class__ is str and name and not name.isspace() and name.isascii():
        block.name = name
    elif name is None:
        block.name = None
    elif callable(name) or isinstance(name, (classmethod, staticmethod)):
        block.name = block.kind = block.key = block.tags = block.metrics = None
        return block(name)  # bare @track
    else:
        block.name = check_name(name, "track() argument 'name'")
    block.kind = None if kind is None else check_name(kind, "track() argument 'kind'")
    block.key = None if key is None else check_name(key, "track() argument 'key'")
    plain_tags = None
    if tags:
        if tags.__class__ is dict:
            for tag_key, value in tags.items():
                cls = value.__class__
                if tag_key.__class__ is not str or not tag_key or tag_key.isspace() or not tag_key.isascii() or not (
                    (cls is int and -MAX_NUMBER <= value <= MAX_NUMBER)
                    or (cls is str and len(value) <= MAX_TAG_VALUE_LENGTH and value.isascii())
                ):
                    break
            else:
                plain_tags = tags.copy()
        if plain_tags is None:
            plain_tags = check_mapping(tags, "track() argument 'tags'", check_tag)
    block.tags = plain_tags
    block.metrics = check_mapping(metrics, "track() argument 'metrics'", check_metric) if metrics else None
    return block


# --- the hot path ---

_DISABLED: DisabledEvent | None = None


def start_event(spec: Block, parent: Event | RemoteParent | None = None) -> Event | None:
    """A started event under *parent* (default: the current one), not made current; ``None`` when disabled."""
    state = STATE
    if not state.enabled:
        if state.enabled is None:
            _state.boot()
        if not state.enabled:
            return None
    if parent is None:
        parent = _CURRENT.get()
        if parent is None:
            parent = state.inherited_parent
    ev = Event(spec, parent)
    number = _next_sequence_number()
    ev._id = _context._prefix | number
    if not number & _BATCH_MASK:
        _state.every_batch()
    ev._start = perf_counter_ns()
    return ev


def open_event(spec: Block) -> Event:
    """Start an event and make it the current one (the ``with`` form)."""
    ev = start_event(spec)
    if ev is None:
        global _DISABLED
        if _DISABLED is None:
            _DISABLED = DisabledEvent()
        return _DISABLED
    ev._token = _CURRENT.set(ev)
    return ev


def end_event(ev: Event, exc: BaseException | None) -> None:
    """Finish a started event: stop its clock, conclude it, hand it to the processor."""
    ev._end = perf_counter_ns()
    if exc is not None:
        _conclude(ev, exc)
    STATE.on_end(ev)


def _conclude(ev: Event, exc: BaseException) -> None:
    outcome = ev._outcome = conclude(exc)
    if outcome is not Conclusion.SUCCESS:
        ev._error = error_tags(exc)


def close_event(ev: Event, exc: BaseException | None) -> None:
    """End the current event opened by :func:`open_event` and restore its parent as current."""
    try:
        _CURRENT.reset(ev._token)
    except ValueError:
        # Exited in another context than it was entered in (a context manager
        # handed between tasks): leave that context's current event alone.
        pass
    ev._token = None
    end_event(ev, exc)


def record_event(
    spec: Block,
    *,
    start_epoch_ns: int,
    end_epoch_ns: int,
    conclusion: Conclusion | str,
    parent: Event | RemoteParent | None = None,
    event_id: str | None = None,
    tags: Mapping[str, TagValue] | None = None,
    metrics: Mapping[str, float] | None = None,
    root: bool = False,
) -> Event | None:
    """Record a step that ran elsewhere or earlier, with known times (integrations, CLI).

    The event goes to the outputs like any other; *event_id* keeps an id chosen
    before (for example by the process the step ran in, whose own blocks
    already point at it). *parent* defaults to the current event; *root*
    makes a root whatever is current or inherited. Returns ``None`` when
    tracing is disabled.
    """
    ev = start_event(spec, parent)
    if ev is None:
        return None
    if root:
        ev.parent = None
    if event_id is not None:
        ev._id = check_name(event_id, "record_event() argument 'event_id'")
    ev._start = monotonic_ns_at(start_epoch_ns)
    ev._end = max(ev._start, monotonic_ns_at(end_epoch_ns))
    ev.conclusion = conclusion
    if tags:
        for key, value in tags.items():
            ev.tag(key, value)
    if metrics:
        for key, value in metrics.items():
            ev.metric(key, value)
    STATE.on_end(ev)
    return ev


# --- decorator wrappers: chosen once, at decoration ---


def _traced_function(spec: Block, func: Callable[..., Any]) -> Callable[..., Any]:
    def traced(*args: Any, **kwargs: Any) -> Any:
        state = STATE
        if state.enabled:
            # As Block.__enter__, written out (a call here is ~10% of the whole).
            parent: Event | RemoteParent | None = _CURRENT.get()
            if parent is None:
                parent = state.inherited_parent
            ev = _new_event(Event)
            ev._spec = spec
            ev.parent = parent
            ev._tags = ev._metrics = ev._conclusion = ev._outcome = ev._error = ev._path = ev._end = ev._token = None
            ev._thread = get_ident()
            number = _next_sequence_number()
            ev._id = _context._prefix | number
            if not number & _BATCH_MASK:
                _state.every_batch()
            token = _CURRENT.set(ev)
            ev._start = perf_counter_ns()
        else:
            ev = open_event(spec)  # boots the state on first use
            if ev is _DISABLED:
                return func(*args, **kwargs)
            token = ev._token
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            ev._token = token
            close_event(ev, exc)
            raise
        ev._end = perf_counter_ns()
        _CURRENT.reset(token)
        state.on_end(ev)
        return result

    import functools

    return functools.update_wrapper(traced, func)


def _function_wrapper(spec: Block) -> Callable[..., Any]:
    def call(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        ev = open_event(spec)
        if ev is _DISABLED:
            return wrapped(*args, **kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            close_event(ev, exc)
            raise
        close_event(ev, None)
        return result

    return call


def _coroutine_wrapper(spec: Block) -> Callable[..., Any]:
    async def call(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        ev = open_event(spec)
        if ev is _DISABLED:
            return await wrapped(*args, **kwargs)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            close_event(ev, exc)
            raise
        close_event(ev, None)
        return result

    return call


def _generator_wrapper(spec: Block) -> Callable[..., Any]:
    def call(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        return _traced_generator(spec, wrapped(*args, **kwargs))

    return call


def _traced_generator(spec: Block, gen: Any) -> Any:
    # The event spans the whole iteration. Each step runs with the generator's
    # own current event set and the consumer's restored after it, so between
    # steps current() is the consumer's block, and blocks the generator keeps
    # open across a yield are current again when it resumes.
    ev = start_event(spec)
    if ev is None:
        return (yield from gen)
    inside: Event = ev
    method, arg = gen.send, None
    try:
        while True:
            token = _CURRENT.set(inside)
            try:
                value = method(arg)
            finally:
                inside = _CURRENT.get()  # type: ignore[assignment]
                _CURRENT.reset(token)
            try:
                arg = yield value
            except GeneratorExit:
                token = _CURRENT.set(inside)
                try:
                    gen.close()
                finally:
                    _CURRENT.reset(token)
                raise
            except BaseException as exc:
                method, arg = gen.throw, exc
            else:
                method = gen.send
    except StopIteration as stop:
        end_event(ev, None)
        return stop.value
    except BaseException as exc:
        end_event(ev, exc)
        raise


def _async_generator_wrapper(spec: Block) -> Callable[..., Any]:
    def call(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        return _traced_async_generator(spec, wrapped(*args, **kwargs))

    return call


async def _traced_async_generator(spec: Block, agen: Any) -> Any:
    # As _traced_generator; there is no "yield from" for async generators, so
    # the disabled case takes the same loop and only skips the event.
    ev = start_event(spec)
    inside = ev if ev is not None else _CURRENT.get()
    method, arg = agen.asend, None
    try:
        while True:
            token = _CURRENT.set(inside)
            try:
                value = await method(arg)
            finally:
                inside = _CURRENT.get()
                _CURRENT.reset(token)
            try:
                arg = yield value
            except GeneratorExit:
                token = _CURRENT.set(inside)
                try:
                    await agen.aclose()
                finally:
                    _CURRENT.reset(token)
                raise
            except BaseException as exc:
                method, arg = agen.athrow, exc
            else:
                method = agen.asend
    except StopAsyncIteration:
        if ev is not None:
            end_event(ev, None)
    except BaseException as exc:
        if ev is not None:
            end_event(ev, exc)
        raise
