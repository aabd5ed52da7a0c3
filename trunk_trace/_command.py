"""``trunk_trace.run``: ``subprocess.run`` recorded as an event of kind ``command``."""

from __future__ import annotations

import shlex
import subprocess
import os
from typing import Any, Mapping, Sequence, Union

from ._event import Conclusion, TagValue
from ._track import track

MAX_COMMAND_NAME = 200

Command = Union[str, bytes, "os.PathLike[str]", Sequence[Union[str, bytes, "os.PathLike[str]"]]]


def command_name(args: Any) -> str:
    """The command line as a readable, trimmed name."""
    if isinstance(args, (str, bytes)):
        text = args.decode(errors="replace") if isinstance(args, bytes) else args
    else:
        try:
            parts = [a.decode(errors="replace") if isinstance(a, bytes) else str(a) for a in args]
        except TypeError:
            parts = [str(args)]
        text = shlex.join(parts)
    text = " ".join(text.split()) or "command"
    return text if len(text) <= MAX_COMMAND_NAME else text[: MAX_COMMAND_NAME - 3] + "..."


def run(
    args: Command,
    *,
    name: str | None = None,
    kind: str = "command",
    tags: Mapping[str, TagValue] | None = None,
    **kwargs: Any,
) -> subprocess.CompletedProcess:
    """Run a command like ``subprocess.run`` and record it as an event.

    The event (kind ``command``, named after the command line unless *name* is
    given) carries the exit code in the tag ``exit_code``; a non-zero exit is
    ``FAILURE``, a timeout ``TIMED_OUT``. The child process joins the chain
    under it. All other arguments go to ``subprocess.run`` unchanged, and so
    do its results and exceptions.
    """
    with track(name or command_name(args), kind=kind, tags=tags) as ev:
        try:
            result = subprocess.run(args, **kwargs)
        except subprocess.CalledProcessError as exc:  # check=True
            ev.tag("exit_code", exc.returncode)
            raise
        ev.tag("exit_code", result.returncode)
        if result.returncode != 0:
            ev.conclusion = Conclusion.FAILURE
        return result
