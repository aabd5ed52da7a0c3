"""Carrying the chain into child processes, and joining the chain of a parent process.

A child process joins under the block that was open when it was started. The
context travels in environment variables, written only when a child is
actually started, never on block enter or exit: writing ``os.environ`` per
block costs microseconds and leaks memory in glibc.

- ``subprocess.Popen`` (and all that is built on it) is handed a copy of its
  environment with the context added; ``os.environ`` and the caller's ``env``
  are left as they are. So threads that start children at the same time each
  pass their own block.
- ``os.system``, ``os.exec*``, ``os.spawn*`` and ``os.posix_spawn`` (seen by an
  audit hook) get it in the mapping they are given, else in ``os.environ``,
  which threads share: a child started that way while another thread starts
  one may join under that thread's block.
- ``multiprocessing`` (spawn and forkserver start no process the audit hook
  sees) carries it on the ``Process`` object, which is pickled to the child.

Variables (also what ``trunk-trace begin`` prints):

``TRUNK_TRACE_CHAIN_ID``
    the chain (the root event's id)
``TRUNK_TRACE_PARENT_ID`` / ``TRUNK_TRACE_PARENT_KEY``
    the id and sequence key of the event the child's blocks nest under
``TRACEPARENT``
    W3C trace context of the same event, for OpenTelemetry-aware tools
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Mapping, MutableMapping

from ._context import current
from ._event import Event, RemoteParent
from ._report import report_once

ENV_CHAIN_ID = "TRUNK_TRACE_CHAIN_ID"
ENV_PARENT_ID = "TRUNK_TRACE_PARENT_ID"
ENV_PARENT_KEY = "TRUNK_TRACE_PARENT_KEY"
ENV_TRACEPARENT = "TRACEPARENT"
CONTEXT_VARIABLES = (ENV_CHAIN_ID, ENV_PARENT_ID, ENV_PARENT_KEY, ENV_TRACEPARENT)

_ID = re.compile(r"[A-Za-z0-9._:#@+/=-]{1,200}")
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_SPAWN_EVENTS = frozenset({"os.system", "os.exec", "os.posix_spawn", "os.spawn"})  # subprocess: see _patch_subprocess
_POPEN_ENV_INDEX = 10  # env's position among Popen()'s arguments (args, bufsize, executable, ..., cwd, env)


# --- ids for W3C trace context and OTLP: one documented, deterministic mapping ---


def trace_id(chain_id: str) -> str:
    """32 lowercase hex digits for a chain: the UUID's own digits, else a SHA-256 prefix."""
    import hashlib

    digits = chain_id.replace("-", "").lower()
    if len(digits) == 32 and all(c in "0123456789abcdef" for c in digits) and digits.strip("0"):
        return digits
    return hashlib.sha256(chain_id.encode()).hexdigest()[:32]


def span_id(event_id: str) -> str:
    """16 lowercase hex digits for an event: a SHA-256 prefix of its id (never all zero)."""
    import hashlib

    digest = hashlib.sha256(event_id.encode()).hexdigest()
    return digest[:16] if digest[:16].strip("0") else digest[16:32]


# --- reading what a parent process left ---


def parent_from_env(environ: Mapping[str, str]) -> RemoteParent | None:
    """The event a parent process (or ``trunk-trace begin``) left in the environment, if any."""
    chain, parent_id, key = (environ.get(name, "") for name in (ENV_CHAIN_ID, ENV_PARENT_ID, ENV_PARENT_KEY))
    if not (chain or parent_id or key):
        return None
    if not (_ID.fullmatch(chain) and _ID.fullmatch(parent_id) and key and len(key) < 128 and key.isprintable()):
        report_once(
            "inherited-context",
            "ignoring a malformed inherited context (%s, %s, %s); this process starts a new chain",
            ENV_CHAIN_ID, ENV_PARENT_ID, ENV_PARENT_KEY,
        )
        return None
    return RemoteParent(parent_id, key, chain)


def traceparent_from_env(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(trace id, parent span id) of an inherited W3C ``TRACEPARENT``, when well-formed."""
    value = environ.get(ENV_TRACEPARENT, "").strip().lower()
    match = _TRACEPARENT.fullmatch(value)
    if not match or not match.group(1).strip("0") or not match.group(2).strip("0"):
        if value:
            report_once("traceparent", "ignoring a malformed %s", ENV_TRACEPARENT)
        return None
    return match.group(1), match.group(2)


def inherited_parent() -> RemoteParent | None:
    """The parent this process's root blocks nest under: from multiprocessing, else the environment."""
    process = getattr(sys.modules.get("multiprocessing"), "current_process", None)
    if process is not None:
        carried = getattr(process(), "_trunk_trace_context", None)
        if carried:
            return parent_from_env(carried)
    return parent_from_env(os.environ)


# --- writing it for a child ---


def context_env(ev: Event | RemoteParent | None = None) -> dict[str, str]:
    """The variables that make a child process join under *ev* (default: the current event)."""
    if ev is None:
        ev = current()
        if ev is None:
            from ._state import STATE

            ev = STATE.inherited_parent
            if ev is None:
                return {}
    chain_id = ev.chain_id
    # An inherited W3C trace stays the trace: our chain nests inside the caller's.
    trace = _INHERITED_TRACE[0] if _INHERITED_TRACE else trace_id(chain_id)
    return {
        ENV_CHAIN_ID: chain_id,
        ENV_PARENT_ID: ev.id,
        ENV_PARENT_KEY: ev.key,
        ENV_TRACEPARENT: f"00-{trace}-{span_id(ev.id)}-01",
    }


_INHERITED_TRACE: tuple[str, str] | None = None
_original_environ: dict[str, str | None] = {}
_hook_installed = False
_subprocess_patched = False
_multiprocessing_patched = False


def inherit_trace(environ: Mapping[str, str]) -> None:
    """Keep the caller's W3C trace (a ``TRACEPARENT`` in *environ*): our chain nests inside it."""
    global _INHERITED_TRACE
    _INHERITED_TRACE = traceparent_from_env(environ)


def install() -> None:
    """At boot: remember what was inherited, and start carrying context to children."""
    global _hook_installed
    inherit_trace(os.environ)
    for name in CONTEXT_VARIABLES:
        _original_environ.setdefault(name, os.environ.get(name))
    _patch_subprocess()
    _patch_multiprocessing()
    if not _hook_installed:
        sys.addaudithook(_audit)  # cannot be removed: it checks its switch instead
        _hook_installed = True


def _write(env: MutableMapping[str, str]) -> None:
    context = context_env()
    if context:
        env.update(context)
        return
    # No block open: a child must not join a block that has ended, even when its
    # environment was copied from ours after an earlier child had been started.
    for name, value in _original_environ.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value


def _audit(event: str, args: tuple) -> None:
    if event not in _SPAWN_EVENTS:
        if event == "import" and not _multiprocessing_patched:
            _patch_multiprocessing()
        return
    from ._state import STATE

    if not STATE.enabled:
        return
    try:
        # the env argument: os.exec(path, args, env), os.posix_spawn(path, argv, env, ...),
        # os.spawn(mode, path, args, env); os.system has none
        index = 3 if event == "os.spawn" else 2
        env = args[index] if event != "os.system" and len(args) > index else None
        if isinstance(env, dict):
            _write(env)  # the mapping the child gets (os.environ is not read for it)
        else:
            _write(os.environ)
    except Exception:  # an audit hook that raises would stop the user's process from starting
        report_once("propagate", "could not pass the trace context to a child process", exc_info=True)


def _patch_subprocess() -> None:
    # Popen raises its audit event before it forks, and releases the GIL in between
    # (os.pipe): a context written to os.environ there could reach another thread's
    # child. A copy of the environment, passed as Popen's env, cannot.
    global _subprocess_patched
    if _subprocess_patched:
        return
    _subprocess_patched = True
    import subprocess

    original_init = subprocess.Popen.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        from ._state import STATE

        if STATE.enabled:
            try:
                if len(args) > _POPEN_ENV_INDEX:
                    args = (*args[:_POPEN_ENV_INDEX], _child_env(args[_POPEN_ENV_INDEX]), *args[_POPEN_ENV_INDEX + 1:])
                else:
                    kwargs["env"] = _child_env(kwargs.get("env"))
            except Exception:  # the child starts anyway, outside the chain
                report_once("propagate", "could not pass the trace context to a child process", exc_info=True)
        original_init(self, *args, **kwargs)

    __init__.__wrapped__ = original_init  # type: ignore[attr-defined]
    __init__.__doc__ = original_init.__doc__
    subprocess.Popen.__init__ = __init__  # type: ignore[method-assign]


def _child_env(env: Mapping[Any, Any] | None) -> dict[Any, Any]:
    """A child's environment: *env* (default ``os.environ``) with the context written in."""
    child = dict(os.environ if env is None else env)
    _write(child)
    return child


def _patch_multiprocessing() -> None:
    # Spawn and forkserver children start without an audit event we can see;
    # the Process object is pickled to them, so it carries the context.
    global _multiprocessing_patched
    module = sys.modules.get("multiprocessing.process")
    if module is None or _multiprocessing_patched:
        return
    _multiprocessing_patched = True
    original_start = module.BaseProcess.start

    def start(self: Any) -> None:
        try:
            self._trunk_trace_context = context_env()
        except Exception:
            report_once("propagate", "could not pass the trace context to a child process", exc_info=True)
        return original_start(self)

    start.__wrapped__ = original_start  # type: ignore[attr-defined]
    start.__doc__ = original_start.__doc__
    module.BaseProcess.start = start
