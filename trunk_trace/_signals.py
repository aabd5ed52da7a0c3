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


def _on_sigterm(signum: int, frame: Any) -> None:
    global _terminating
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
    global _installed
    if _installed:
        return signal.getsignal(signal.SIGTERM) is _on_sigterm
    if not hasattr(signal, "SIGTERM") or threading.current_thread() is not threading.main_thread():
        return False  # only the main thread may set handlers; the next configure() tries again
    if in_multiprocessing_child():
        return False
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return False  # the program handles SIGTERM itself: leave it alone
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


def after_fork_in_child() -> None:
    # The forking thread is the child's main thread, so this may set handlers.
    uninstall()
