"""The spool: events that could not be delivered yet, kept on disk until they are.

Layout of the spool directory (``0700``; every file ``0600``)::

    pending/<ns>-<pid>-<n>.jsonl           waiting to be sent, oldest name first
    pending/<ns>-<pid>-<n>.norepo.jsonl    same, but no repository was known (sent by
                                           ``trunk-trace flush`` with TRUNK_REPO_URL set)
    claimed/<name>.<pid>.claim             being sent by process <pid>
    rejected/<name>                        refused by the server (HTTP 400): kept for inspection
    tmp/                                   files being written

Files are JSON Lines in the format of :mod:`trunk_trace.exporters.jsonl`
(``{"repo", "pid", "thread", "event"}``), never holding the token. A file is
written in ``tmp/`` and renamed into place, so a crash leaves either a whole
file or none. A sender claims a file by renaming it into ``claimed/``: only one
process can win that rename. A claim whose process is gone goes back to
``pending/``, so a crash mid-replay loses nothing (at worst some events are
sent twice, with the same ids: the server keeps the last copy).

The total size is capped; past the cap the oldest files are removed, counted
and reported: the only loss the library permits itself.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
import time
from typing import Any, Iterable, Iterator, NamedTuple, Optional

from .._event import wire_encoder
from .._report import count_drop, report_once
from .jsonl import format_line, read_lines

DEFAULT_MAX_BYTES = 100 * 1024 * 1024
STALE_CLAIM_SECONDS = 3600.0  # a claim this old is taken back even if its pid looks alive (pid reuse)
NO_REPO_SUFFIX = ".norepo.jsonl"
_AREAS = ("pending", "claimed", "rejected")


def default_spool_dir() -> str:
    """The per-user cache directory's ``trunk_trace/spool``."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.join(os.path.expanduser("~"), "AppData", "Local")
    elif sys.platform == "darwin":
        base = os.path.join(os.path.expanduser("~"), "Library", "Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "trunk_trace", "spool")


# One spool line from already-encoded parts: byte for byte what ``jsonl.encode_line`` writes.
spool_line = format_line

# One encoder for all (the wire format's, shared with FinishedEvent.json and JSON Lines):
# json.dumps with arguments builds a new one per call (a few us per event).
_ENCODER = wire_encoder()


def encode_repo(repo: Optional[dict]) -> str:
    return _ENCODER.encode(repo)


def encode_event(event: dict) -> str:
    return _ENCODER.encode(event)


class Claim(NamedTuple):
    """A pending file this process renamed into ``claimed/``: only it sends those events now."""

    name: str  # the file's name in pending/
    path: str  # where it is now


class SpoolStats(NamedTuple):
    files: int
    events: int
    bytes: int


class Spool:
    """One spool directory. Thread-safe; several processes may share it."""

    def __init__(self, directory: Optional[str] = None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.directory = os.path.abspath(directory or default_spool_dir())
        self.max_bytes = max_bytes
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._ready = False

    @classmethod
    def from_config(cls, config: Any, subdirectory: str = "") -> Spool:
        """The spool a configuration names (``spool_dir``, capped at ``spool_max_mb``)."""
        directory = os.path.abspath(config.spool_dir or default_spool_dir())
        if subdirectory:
            directory = os.path.join(directory, subdirectory)
        return cls(directory, int(config.spool_max_mb * 1024 * 1024))

    def __repr__(self) -> str:
        return f"Spool({self.directory!r})"

    @property
    def rejected_dir(self) -> str:
        return self._area("rejected")

    def _area(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _prepare(self) -> None:
        if self._ready:
            return
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        for area in (*_AREAS, "tmp"):
            path = self._area(area)
            os.makedirs(path, mode=0o700, exist_ok=True)
            os.chmod(path, 0o700)  # makedirs leaves an existing directory's mode alone
        self._ready = True

    # -- writing --

    def write(self, lines: Iterable[str], area: str = "pending", repo_known: bool = True) -> Optional[str]:
        """Write *lines* (each ending in a newline) as one new file in *area*; returns its path.

        Returns None (after reporting once and counting the loss) when the disk refuses.
        """
        data = "".join(lines).encode("utf-8")
        if not data:
            return None
        with self._lock:
            number = next(self._counter)
        suffix = ".jsonl" if repo_known else NO_REPO_SUFFIX
        name = f"{time.time_ns():020d}-{os.getpid()}-{number}{suffix}"
        try:
            self._prepare()
            temp = os.path.join(self._area("tmp"), name)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            target = os.path.join(self._area(area), name)
            os.replace(temp, target)  # atomic: readers see the whole file or nothing
        except OSError as exc:
            count_drop(data.count(b"\n"))
            report_once(f"spool-write:{self.directory}", "cannot write to the spool %s (%s); events are lost", self.directory, exc)
            return None
        self.enforce_cap()
        return target

    def enforce_cap(self) -> int:
        """Remove the oldest files until the spool fits its cap; returns how many events went."""
        entries = self._entries()
        total = sum(size for _, _, size in entries)
        if total <= self.max_bytes:
            return 0
        lost = 0
        for name, path, size in sorted(entries):  # names start with the write time: oldest first
            if total <= self.max_bytes:
                break
            try:
                with open(path, "rb") as file:
                    events = file.read().count(b"\n")
                os.unlink(path)
            except OSError:
                continue  # another process took or removed it
            total -= size
            lost += events
        if lost:
            count_drop(lost)  # the total is reported at exit
            # Loud on purpose (an error, not a warning): the only loss the library permits itself.
            report_once(
                f"spool-cap:{self.directory}",
                "the spool %s is over its cap of %g MB: removing the oldest undelivered events (%d so far); "
                "run `trunk-trace flush` or raise TRUNK_TRACE_SPOOL_MAX_MB",
                self.directory, self.max_bytes / (1024 * 1024), lost, level=logging.ERROR,
            )
        return lost

    def _entries(self) -> list[tuple[str, str, int]]:
        entries = []
        for area in _AREAS:
            try:
                with os.scandir(self._area(area)) as it:
                    for entry in it:
                        try:
                            entries.append((entry.name, entry.path, entry.stat().st_size))
                        except OSError:
                            continue
            except OSError:
                continue
        return entries

    # -- replaying --

    def pending(self, include_no_repo: bool = False) -> list[str]:
        """Names of the pending files, oldest first."""
        try:
            names = os.listdir(self._area("pending"))
        except OSError:
            return []
        names = [n for n in names if n.endswith(".jsonl") and (include_no_repo or not n.endswith(NO_REPO_SUFFIX))]
        return sorted(names)

    def claim(self, name: str) -> Optional[Claim]:
        """Take a pending file for this process; None when another process took it first."""
        target = os.path.join(self._area("claimed"), f"{name}.{os.getpid()}.claim")
        try:
            os.rename(os.path.join(self._area("pending"), name), target)
        except OSError:
            return None
        return Claim(name, target)

    def read(self, claim: Claim) -> list[dict]:
        return list(read_lines(claim.path))

    def finish(self, claim: Claim, unsent: Iterable[str] = (), rejected: Iterable[str] = ()) -> None:
        """Done with a claimed file: what was not sent goes back to pending, what was refused aside."""
        unsent, rejected = list(unsent), list(rejected)
        if unsent:
            repo_known = not all(line.startswith('{"repo":null') for line in unsent)
            if self.write(unsent, "pending", repo_known) is None:
                return  # keep the claim: it still holds everything, and is recovered later
        if rejected:
            self.write(rejected, "rejected")
        try:
            os.unlink(claim.path)
        except OSError:
            pass

    def release(self, claim: Claim) -> None:
        """Give a claimed file back untouched."""
        try:
            os.rename(claim.path, os.path.join(self._area("pending"), claim.name))
        except OSError:
            pass

    def recover(self) -> int:
        """Give back the claims of processes that are gone; returns how many files came back."""
        try:
            names = os.listdir(self._area("claimed"))
        except OSError:
            return 0
        recovered = 0
        now = time.time()
        for claim_name in names:
            original, _, rest = claim_name.rpartition(".claim")[0].rpartition(".")
            path = os.path.join(self._area("claimed"), claim_name)
            try:
                pid = int(rest)
                old = now - os.stat(path).st_ctime > STALE_CLAIM_SECONDS  # rename sets ctime
            except (ValueError, OSError):
                continue
            if pid == os.getpid() and not old:
                continue
            if not old and _alive(pid):
                continue
            try:
                os.rename(path, os.path.join(self._area("pending"), original))
                recovered += 1
            except OSError:
                continue
        self._remove_stale_temps(now)
        return recovered

    def _remove_stale_temps(self, now: float) -> None:
        # A process that died while writing leaves a partial file in tmp/; nothing reads it.
        try:
            with os.scandir(self._area("tmp")) as it:
                for entry in it:
                    try:
                        if now - entry.stat().st_mtime > STALE_CLAIM_SECONDS:
                            os.unlink(entry.path)
                    except OSError:
                        continue
        except OSError:
            pass

    # -- looking --

    def stats(self, area: str = "pending") -> SpoolStats:
        files = events = size = 0
        try:
            with os.scandir(self._area(area)) as it:
                for entry in it:
                    try:
                        with open(entry.path, "rb") as file:
                            data = file.read()
                    except OSError:
                        continue
                    files += 1
                    events += data.count(b"\n")
                    size += len(data)
        except OSError:
            pass
        return SpoolStats(files, events, size)

    def lines(self, area: str = "pending") -> Iterator[dict]:
        """Every parsed line of an area (for tests and inspection)."""
        try:
            names = sorted(os.listdir(self._area(area)))
        except OSError:
            return
        for name in names:
            try:
                yield from read_lines(os.path.join(self._area(area), name))
            except OSError:
                continue


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return True  # os.kill there terminates the process: rely on the claim's age instead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return False
    return True


__all__ = ["Claim", "Spool", "SpoolStats", "default_spool_dir", "encode_event", "encode_repo", "spool_line"]
