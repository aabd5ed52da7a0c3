"""nox: one event per nox run, per session and per command.

Trace every session with one line at the end of the noxfile::

    import trunk_trace.integrations.nox

    trunk_trace.integrations.nox.instrument()

or one session, stacked under ``@nox.session`` (and ``@nox.parametrize``)::

    @nox.session
    @trunk_trace.integrations.nox.traced
    def tests(session): ...

Events: the run is kind ``pipeline`` named ``nox`` (the selected sessions in
the tag ``sessions``), concluded as nox's exit code says (a failed, aborted or
prerequisite-aborted session makes it ``FAILURE``, an interrupt
``CANCELLED``). Each traced session is kind ``session``, named as nox names it
(``tests(python='3.12')``), from before its environment is made to its result:
success ``SUCCESS``, skip ``SKIPPED``, failure or ``session.error()``
``FAILURE``, interrupt ``CANCELLED``. Each ``session.run``, ``install``,
``run_install`` (``run_always``) and ``conda_install`` is kind ``command``
(tag ``exit_code``; ``SKIPPED`` when nox skips it, as ``run`` under
``--install-only``); its process joins the chain under it.

With ``nox -j N`` (nox 2026.10 and later) each session runs in a child nox
process: the parent holds the ``nox`` event, and the children's sessions nest
under it through the environment they inherit.

nox has no hooks: this module wraps ``SessionRunner.execute`` (and, for
``-j``, the function that starts a child) once per process, and gives traced
sessions a ``Session`` subclass (``Session`` has ``__slots__``, so methods
cannot be replaced on the instance).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import re
import threading
from typing import Any, Callable, Iterator, List, Optional, TypeVar

import nox
import nox.command
import nox.registry
import nox.sessions
from nox.sessions import Session, SessionRunner, Status

from .._command import command_name
from .._context import _CURRENT
from .._event import Conclusion, Event
from .._track import end_event, start_event, track

__all__ = ["instrument", "traced"]

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__trunk_trace_nox__"

_STATUS_CONCLUSION = {
    Status.SUCCESS: Conclusion.SUCCESS,
    Status.SKIPPED: Conclusion.SKIPPED,
    Status.FAILED: Conclusion.FAILURE,
    Status.ABORTED: Conclusion.FAILURE,  # session.error() and a failed prerequisite
}


def traced(func: F) -> F:
    """Trace one session: put it under ``@nox.session`` (and any ``@nox.parametrize``)."""
    _hook_nox()
    if getattr(func, _MARK, False):
        return func

    @functools.wraps(func)  # keeps __dict__ (nox.parametrize's marks) and the signature
    def run_session(session: Session, *args: Any, **kwargs: Any) -> Any:
        original = session.__class__
        if original is Session:
            session.__class__ = _TracedSession
        try:
            return func(session, *args, **kwargs)
        finally:
            session.__class__ = original

    setattr(run_session, _MARK, True)
    return run_session  # type: ignore[return-value]


def instrument() -> None:
    """Trace every session registered so far: call it once, at the end of the noxfile."""
    _hook_nox()
    for func in nox.registry.get().values():
        if not getattr(func, _MARK, False):
            func.func = traced(func.func)
            # Parametrized copies (made later) copy this mark with the rest of __dict__.
            setattr(func, _MARK, True)


def _is_traced(func: Any) -> bool:
    # A session's func is nox's Func (or Call) around the user's function, around ours.
    for _ in range(4):
        if func is None:
            return False
        if getattr(func, _MARK, False):
            return True
        func = getattr(func, "func", None)
    return False


# --- commands ---


_RETURNED_CODE = re.compile(r"Returned code (-?\d+)")


def _exit_code_of(exc: nox.command.CommandFailed) -> Optional[int]:
    code = getattr(exc, "return_code", None)  # nox 2024.10 and earlier: only in the message
    if code is None:
        match = _RETURNED_CODE.search(str(getattr(exc, "reason", "") or ""))
        code = int(match.group(1)) if match else None
    return code


class _TracedSession(Session):
    """What a traced session's function receives: each command is an event of kind ``command``."""

    __slots__ = ()  # the same layout as Session, so an instance's class can be swapped

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return _command(self, "run", command_name(args), super().run, args, kwargs)

    def run_install(self, *args: Any, **kwargs: Any) -> Any:
        return _command(self, "run_install", command_name(args), super().run_install, args, kwargs)

    def install(self, *args: Any, **kwargs: Any) -> Any:
        return _command(self, "install", command_name(("install", *args)), super().install, args, kwargs)

    def conda_install(self, *args: Any, **kwargs: Any) -> Any:
        name = command_name(("conda", "install", *args))
        return _command(self, "conda_install", name, super().conda_install, args, kwargs)


def _command(session: Session, method: str, name: str, call: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    with track(name, kind="command") as ev:
        try:
            result = call(*args, **kwargs)
        except nox.command.CommandFailed as exc:
            code = _exit_code_of(exc)
            if code is not None:
                ev.tag("exit_code", code)
            raise
        if _was_skipped(session, method, result):
            ev.conclusion = Conclusion.SKIPPED
        elif kwargs.get("success_codes") in (None, [0], (0,)):
            ev.tag("exit_code", 0)  # with other success codes nox does not say which one it was
        return result


def _was_skipped(session: Session, method: str, result: Any) -> bool:
    config = session._runner.global_config
    if method == "run":
        return result is None and bool(getattr(config, "install_only", False))
    if method == "run_install":
        return result is None and bool(getattr(config, "no_install", False))
    # install: nox returns early with --no-install on a reused (or no) environment
    venv = session._runner.venv
    return bool(getattr(config, "no_install", False)) and (getattr(venv, "_reused", False) or type(venv).__name__ == "PassthroughEnv")


# --- the run: one root per nox process that runs sessions, except -j's children ---


class _NoxRun:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.root: Optional[Event] = None
        self.started = False
        self.results: List[Any] = []
        self.interrupted = False

    def root_for(self, runner: SessionRunner) -> Optional[Event]:
        """The run's event, opened by the first session; ``None`` in a ``-j`` child (its parent has it)."""
        if self.started:
            return self.root
        with self.lock:  # -j starts sessions from several threads at once
            if not self.started:
                if not getattr(runner.global_config, "parallel_worker", False):
                    self.root = start_event(track("nox", kind="pipeline", tags={"sessions": _selected(runner)}))
                    if self.root is not None:
                        # Registered after trunk_trace's own exit handler, so it runs before it.
                        atexit.register(self.finish)
                self.started = True  # only once the root is there: other threads read it unlocked
        return self.root

    def finish(self) -> None:
        root, self.root = self.root, None
        if root is None:
            return
        if self.interrupted:
            root.conclusion = Conclusion.CANCELLED
        else:  # what nox's exit code says: every result a success or a skip
            root.conclusion = Conclusion.SUCCESS if all(self.results) else Conclusion.FAILURE
        end_event(root, None)


_RUN = _NoxRun()


@contextlib.contextmanager
def _under_root(runner: SessionRunner) -> Iterator[None]:
    """Make the run's event current while *runner*'s session runs (or its worker starts)."""
    root = _RUN.root_for(runner)
    token = _CURRENT.set(root) if root is not None else None
    try:
        yield
    except KeyboardInterrupt:
        _RUN.interrupted = True
        raise
    finally:
        if token is not None:
            _CURRENT.reset(token)


def _selected(runner: SessionRunner) -> str:
    manifest = getattr(runner, "manifest", None)
    try:  # the sessions run so far and those still queued: what nox was asked to run
        sessions = [*manifest._consumed, *manifest._queue]  # type: ignore[union-attr]
    except Exception:
        sessions = [runner]
    return " ".join(s.friendly_name for s in sessions) or runner.friendly_name


_hooked = False


def _hook_nox() -> None:
    """Wrap SessionRunner.execute (and -j's child starter) once per process."""
    global _hooked
    if _hooked:
        return
    _hooked = True
    original_execute = SessionRunner.execute

    @functools.wraps(original_execute)
    def execute(self: SessionRunner) -> Any:
        with _under_root(self):
            if _is_traced(self.func):
                with track(self.friendly_name, kind="session") as ev:
                    result = original_execute(self)
                    ev.conclusion = _STATUS_CONCLUSION.get(result.status, Conclusion.FAILURE)
                    if result.reason:
                        ev.tag("reason", str(result.reason))
            else:
                result = original_execute(self)
        _RUN.results.append(result)
        return result

    SessionRunner.execute = execute  # type: ignore[method-assign]

    try:
        from nox import _parallel  # nox 2026.10 and later: -j / --parallel
    except ImportError:
        return
    original_run_session = _parallel._run_session

    @functools.wraps(original_run_session)
    def run_session(session: SessionRunner, *args: Any, **kwargs: Any) -> Any:
        # Called in a pool thread, which has no current event of its own: make the
        # run's event current while the child starts, so the child joins under it.
        with _under_root(session):
            result, output = original_run_session(session, *args, **kwargs)
        _RUN.results.append(result)
        return result, output

    _parallel._run_session = run_session
