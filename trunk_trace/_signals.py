"""SIGTERM, the way CI systems cancel a job: unwind open blocks as CANCELLED and deliver.

Python's default for SIGTERM kills the process on the spot: no ``finally``, no
``atexit``, every event of the job lost. When the program has no handler of
its own, ours raises :class:`~trunk_trace._event.Terminated` (a ``SystemExit``
with status 143) in the main thread, so blocks unwind as ``CANCELLED``,
``atexit`` delivers within the exit budget, and the process still exits 143.

It is installed when the first block opens (a job cancelled during its first
long step has finished nothing yet), only in the main thread, and never in a
``multiprocessing`` child: ``Pool.terminate()`` sends SIGTERM to its workers
and a Python handler there can hang it. After ``fork`` the default comes back.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

_installed = False
_terminating = False
_installed_by = 0  # the pid that installed the handler: a forked child inherits it


def _on_sigterm(signum: int, frame: Any) -> None:
    global _terminating
    if os.getpid() != _installed_by:
        # A forked child, before its at-fork hook ran (or while it runs): the default action.
        # Raising here would be swallowed by the hook and the signal lost: Pool.terminate() hangs.
        _default_in_child(signum, frame)
        return
    if _exiting():
        return  # already exiting, delivering within the exit budget: that ends soon by itself
    if _terminating:
        # The program swallowed the first one (``except BaseException``): a second one kills.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    _terminating = True
    from ._event import Terminated

    raise Terminated()


def _exiting() -> bool:
    # threading marks the main thread stopped before atexit handlers run
    return sys.is_finalizing() or not threading.main_thread().is_alive()


def in_multiprocessing_child() -> bool:
    process = sys.modules.get("multiprocessing.process")
    return process is not None and process.parent_process() is not None  # type: ignore[attr-defined]


def install() -> bool:
    """Install the handler if SIGTERM still has its default action; True when ours is in place."""
    global _installed, _installed_by
    if _installed:
        return signal.getsignal(signal.SIGTERM) is _on_sigterm
    if not hasattr(signal, "SIGTERM") or threading.current_thread() is not threading.main_thread():
        return False  # only the main thread may set handlers; the next configure() tries again
    if in_multiprocessing_child():
        return False
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return False  # the program handles SIGTERM itself: leave it alone
        _installed_by = os.getpid()
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):
        return False
    _installed = True
    return True


def uninstall() -> None:
    """Give SIGTERM its default action back, if our handler is the one in place."""
    global _installed, _terminating
    if not _installed:
        return
    _installed = False
    _terminating = False
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except (ValueError, OSError):
        pass  # not the main thread: the handler stays, and still only raises Terminated


def _default_in_child(signum: int, frame: Any) -> None:
    # The default action: a SIGTERM that came between the fork and our hook was tripped for
    # the inherited Python handler; with SIG_DFL set outright, Python would silently drop it
    # and Pool.terminate() would wait forever for that worker.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


# Around fork, SIGTERM is blocked in the forking thread (the child inherits the mask). A SIGTERM
# reaching the child before its hooks ran would otherwise trip the inherited Python handler and
# be dropped (CPython clears tripped signals after fork, and an exception raised from an at-fork
# hook is swallowed): Pool.terminate() then waits forever for that worker. Blocked, it stays
# pending in the kernel until the child has the default action back; the parent gets its own.
_blocked_for_fork = False


def _before_fork() -> None:
    global _blocked_for_fork
    if _installed and hasattr(signal, "pthread_sigmask"):
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            _blocked_for_fork = True
        except (ValueError, OSError):
            pass


def _unblock_after_fork() -> None:
    global _blocked_for_fork
    if _blocked_for_fork:
        _blocked_for_fork = False
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        except (ValueError, OSError):
            pass


def after_fork_in_child() -> None:
    """In a forked child: SIGTERM terminates at once (never unwinds), as by default."""
    global _installed, _terminating
    if _installed:
        _installed = _terminating = False
        try:
            # The forking thread is the child's main thread, so this may set handlers.
            if signal.getsignal(signal.SIGTERM) is _on_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except (ValueError, OSError):
            pass
    _unblock_after_fork()  # a SIGTERM that came meanwhile is delivered now, with the default action


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_unblock_after_fork)
