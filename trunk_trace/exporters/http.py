"""The Trunk API exporter: batches over urllib3, retried, and never lost (the spool keeps the rest).

The machinery (:class:`HttpClient`, :class:`Batch`, :class:`HttpExporter`,
:func:`replay_claim`) does not depend on the wire format: the OTLP exporter
(:mod:`trunk_trace.exporters.otlp`) runs on it too, with its own spool.

How the pieces fit:

* ``export()`` (called by the processor thread, or by the main thread at exit)
  encodes events to JSON once, cuts them into request-sized batches and
  appends them to a bounded queue; when the queue is full the batch goes to
  the spool instead. It never touches the network.
* Sender threads (started when the exporter is made, so that they already run
  at interpreter exit, where Python 3.12+ refuses new threads) take batches,
  POST them and retry transient failures with capped backoff. A batch that
  cannot be delivered goes to the spool. The first sender also replays the
  spool once its own queue is empty and a request has succeeded.
* ``force_flush()`` and ``shutdown()`` set a deadline. No retry may pass it, a
  refused connection is spooled at once, and at the deadline the calling thread
  writes whatever is still queued or in flight to the spool and returns: a
  sender stuck in name resolution (which urllib3's timeouts do not cover) is
  simply abandoned.
"""

from __future__ import annotations

import math
import random
import sys
import threading
import time
import urllib.parse
from collections import deque
from typing import Any, Callable, Iterable, NamedTuple, Optional, Sequence

from .._event import FinishedEvent, record_json
from .._report import count_drop, log, report_once
from .._retry import RetryPolicy, Verdict, classify_status, is_refused, next_delay, retry_after_seconds, should_give_up
from .._version import __version__
from .spool import Claim, Spool, encode_event, encode_repo, spool_line

TRACK_EVENTS_PATH = "/v1/metrics/trackEvents"
SOURCE = "trunk-trace-python"
MAX_BATCH_EVENTS = 512  # the processor hands over batches of up to 512
MAX_BATCH_BYTES = 512 * 1024  # the API documents no limit: keep requests modest
MAX_QUEUED_EVENTS = 16_384  # about 10 MB of encoded events; past it, batches spill to the spool
SENDERS = 2  # at exit, two connections deliver 10,000 events in a third of the time one takes
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
IDLE_BEFORE_REPLAY = 0.2  # seconds without own work before the spool is replayed
ABANDON_GRACE = 0.25  # at a deadline, how long to let a sender finish writing its batch to disk
REPLAY_POLICY = RetryPolicy(max_attempts=2)  # background replay gives up early: the next process retries

# States of a batch, guarded by the exporter's condition.
QUEUED, SENDING, WRITING, DONE, ABANDONED = range(5)

# One line per kind of problem, whatever the number of batches it hits.
_REASONS = {
    "unreachable": "cannot reach {url} ({detail}); events are kept in {spool} and sent later (or run `trunk-trace flush`)",
    "server": "{url} keeps failing ({detail}); events are kept in {spool} and sent later (or run `trunk-trace flush`)",
    "deadline": "delivery ran out of time ({detail}); undelivered events are kept in {spool} (`trunk-trace flush` sends them)",
    "unauthorized": "the Trunk API refused the token ({detail}): set TRUNK_API_TOKEN to a valid token, then run `trunk-trace flush`; events are kept in {spool}",
    "misdirected": "{url} answered {detail}, which is not the Trunk API (redirects are not followed): check TRUNK_PUBLIC_API_ADDRESS; events are kept in {spool}",
    "no-repo": "no repository known, so nothing can be sent: set TRUNK_REPO_URL; events are kept in {spool}",
    "full": "delivery fell behind; some events are kept in {spool} and sent later",
    "bad-token": "TRUNK_API_TOKEN holds characters not allowed in an HTTP header; nothing is sent; events are kept in {spool}",
    "bug": "delivery failed unexpectedly ({detail}); events are kept in {spool}",
}


class Outcome(NamedTuple):
    """One attempt's result. ``detail`` is short and never holds the token."""

    verdict: Verdict
    status: Optional[int] = None
    retry_after: Optional[float] = None
    detail: str = ""
    refused: bool = False


class HttpClient:
    """POSTs bodies to one URL over one reused connection pool; retrying is the caller's business.

    Shared by the Trunk API (:class:`Client`) and OTLP. *classify* says what a
    status means; *secrets* (header values) never appear in a message.
    """

    label = "the server"  # names the receiver in messages
    mask = "<redacted>"

    def __init__(
        self,
        url: str,
        headers: dict,
        *,
        connections: int = SENDERS,
        classify: Callable[[int], Verdict] = classify_status,
        secrets: Sequence[str] = (),
        gzip: bool = False,
        timeout: float = READ_TIMEOUT,
    ) -> None:
        import urllib3

        self._urllib3 = urllib3
        parts = urllib.parse.urlsplit(url)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path or '/'}"
        self._secrets = tuple(s for s in secrets if s)
        self._classify = classify
        self._gzip = gzip
        self._timeout = timeout
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": f"trunk-trace/{__version__} python/{'.'.join(map(str, sys.version_info[:3]))} urllib3/{urllib3.__version__}",
            **headers,
        }
        if gzip:
            self._headers["Content-Encoding"] = "gzip"
        manager = urllib3.PoolManager(
            num_pools=1,
            maxsize=connections,
            block=False,
            retries=False,  # the retry policy is ours (urllib3 would not retry a POST anyway)
            timeout=urllib3.Timeout(connect=min(CONNECT_TIMEOUT, timeout), read=timeout),
            cert_reqs="CERT_REQUIRED",
        )
        self._pool = manager.connection_from_url(self.url)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def post(self, body: bytes, limit: float = math.inf) -> Outcome:
        """One attempt, within *limit* seconds per phase (connect, read)."""
        urllib3 = self._urllib3
        limit = max(0.05, limit)
        timeout = urllib3.Timeout(connect=min(CONNECT_TIMEOUT, self._timeout, limit), read=min(self._timeout, limit))
        if self._gzip:
            import gzip

            body = gzip.compress(body, compresslevel=6)
        try:
            response = self._pool.urlopen(
                "POST", self.path, body=body, headers=self._headers,
                retries=False, redirect=False, timeout=timeout, preload_content=True,
            )
        except Exception as exc:  # connection refused or reset, timeouts, protocol errors
            return Outcome(Verdict.RETRY, detail=self._describe(exc), refused=is_refused(exc))
        status = response.status
        verdict = self._classify(status)
        if verdict is Verdict.DELIVERED:
            return Outcome(verdict, status)
        retry_after = None
        if verdict is Verdict.RETRY:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"), time.time())
        detail = f"HTTP {status}"
        if verdict is Verdict.MISDIRECTED and response.headers.get("Location"):
            detail += f" to {self._scrub(response.headers['Location'])[:200]}"
        elif verdict is not Verdict.DELIVERED:
            message = self._scrub(response.data[:300].decode("utf-8", "replace")).strip()
            if message:
                detail += f": {' '.join(message.split())}"
        return Outcome(verdict, status, retry_after, detail)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, self.mask)
        return text

    def _describe(self, exc: BaseException) -> str:
        """A few words on a network error (urllib3's own messages run over a line)."""
        if is_refused(exc):
            return "connection refused"
        if isinstance(exc, self._urllib3.exceptions.TimeoutError):
            return "timed out"
        for _ in range(8):  # the innermost cause names it best (ConnectionResetError, gaierror, ...)
            inner = getattr(exc, "reason", None) or exc.__cause__ or exc.__context__
            if not isinstance(inner, BaseException) or inner is exc:
                break
            exc = inner
        text = getattr(exc, "strerror", None) or str(exc)
        return self._scrub(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:120]

    def close(self) -> None:
        try:
            self._pool.close()
        except Exception:
            pass


class Client(HttpClient):
    """POSTs bodies to ``{origin}/v1/metrics/trackEvents`` with the token in ``x-api-token``."""

    label = "the Trunk API"
    mask = "<token>"

    def __init__(self, token: str, api_address: str, connections: int = SENDERS) -> None:
        parts = urllib.parse.urlsplit(api_address)
        url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}{TRACK_EVENTS_PATH}"
        self.token_ok = token.isascii() and token.isprintable() and token.strip() == token
        super().__init__(url, {"x-api-token": token, "x-source": SOURCE}, connections=connections, secrets=(token,))


class Batch:
    """Events of one repo, encoded once, sent as one request (or spooled as one file).

    The request body and the spool line are the Trunk API's; OTLP's batch
    (:class:`~trunk_trace.exporters.otlp.OtlpBatch`) overrides :meth:`body`,
    :meth:`line` and :meth:`group_of`. ``repo_json`` is the group a batch is
    sent under: the repo here, the OTLP resource there.
    """

    __slots__ = ("repo_json", "items", "size", "state")

    def __init__(self, repo_json: str, items: list[tuple[int, int, str]], size: int) -> None:
        self.repo_json = repo_json
        self.items = items  # (pid, thread, event JSON)
        self.size = size
        self.state = QUEUED

    def __len__(self) -> int:
        return len(self.items)

    def body(self) -> bytes:
        events = ",".join(event for _, _, event in self.items)
        return f'{{"repo":{self.repo_json},"events":[{events}]}}'.encode("utf-8")

    def lines(self) -> list[str]:
        repo = self.repo_json
        return [self.line(repo, pid, thread, event) for pid, thread, event in self.items]

    # How spool lines are written and read back (see replay_claim).
    line = staticmethod(spool_line)

    @staticmethod
    def group_of(item: dict) -> str:
        """The group (encoded repo, ``null`` when unknown) a spooled line was written under."""
        return encode_repo(item["repo"]) if isinstance(item.get("repo"), dict) else "null"

    def fits(self, other: Batch) -> bool:
        return (
            other.repo_json == self.repo_json
            and len(self.items) + len(other.items) <= MAX_BATCH_EVENTS
            and self.size + other.size <= MAX_BATCH_BYTES
        )


def make_batches(
    repo_json: str, encoded: Iterable[tuple[int, int, str]], batch_type: type[Batch] = Batch
) -> list[Batch]:
    """Cut encoded events into request-sized batches."""
    batches: list[Batch] = []
    items: list[tuple[int, int, str]] = []
    size = 0
    for item in encoded:
        length = len(item[2]) + 1
        if items and (len(items) >= MAX_BATCH_EVENTS or size + length > MAX_BATCH_BYTES):
            batches.append(batch_type(repo_json, items, size))
            items, size = [], 0
        items.append(item)
        size += length
    if items:
        batches.append(batch_type(repo_json, items, size))
    return batches


class ReplayResult(NamedTuple):
    sent: int
    unsent: list[str]
    rejected: list[str]
    last: Optional[Outcome]  # the failure that stopped the replay, if any


def _sleep_and_go_on(seconds: float) -> bool:
    time.sleep(seconds)
    return True


def replay_claim(
    client: HttpClient,
    spool: Spool,
    claim: Claim,
    *,
    fallback_repo: Optional[dict] = None,
    policy: RetryPolicy = RetryPolicy(),
    deadline: float = math.inf,
    wait: Callable[[float], bool] = _sleep_and_go_on,
    keep_going: Callable[[], bool] = lambda: True,
    batch_type: type[Batch] = Batch,
) -> ReplayResult:
    """Send the events of a claimed spool file, then settle it (see :meth:`Spool.finish`).

    Events keep their ids. *wait(seconds)* sleeps between retries and returns
    False to stop; *keep_going()* is asked before each request. Lines without
    a repo are sent under *fallback_repo* when given, else they stay unsent.
    """
    # (repo as spooled, repo to send under) -> encoded events
    groups: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
    fallback_json = None if fallback_repo is None else encode_repo(fallback_repo)
    unsent: list[str] = []
    line = batch_type.line
    for item in spool.read(claim):
        repo_json = batch_type.group_of(item)
        pid, thread = item.get("pid", 0), item.get("thread", 0)
        event_json = encode_event(item["event"])
        target = fallback_json if repo_json == "null" else repo_json
        if target is None:
            unsent.append(line(repo_json, pid, thread, event_json))
            continue
        groups.setdefault((repo_json, target), []).append((pid, thread, event_json))
    sent = 0
    rejected: list[str] = []
    last: Optional[Outcome] = None
    stopped = False
    for (spooled_repo, target), encoded in groups.items():
        for batch in make_batches(target, encoded, batch_type):
            lines = [line(spooled_repo, pid, thread, event) for pid, thread, event in batch.items]
            if last is not None or stopped or not keep_going():
                stopped = True
                unsent.extend(lines)
                continue
            outcome = send_with_retries(client, batch.body(), policy, deadline, wait)
            if outcome.verdict is Verdict.DELIVERED:
                sent += len(batch)
            elif outcome.verdict is Verdict.REJECTED:
                report_once(f"rejected:{client.label}:{outcome.detail}", "%s rejected a batch (%s); it is kept in %s",
                            client.label, outcome.detail, spool.rejected_dir)
                rejected.extend(lines)
            else:
                last = outcome
                unsent.extend(lines)
    spool.finish(claim, unsent, rejected)
    return ReplayResult(sent, unsent, rejected, last)


def send_with_retries(
    client: HttpClient, body: bytes, policy: RetryPolicy, deadline: float, wait: Callable[[float], bool]
) -> Outcome:
    attempt = 0
    while True:
        outcome = client.post(body, deadline - time.monotonic())
        attempt += 1
        if outcome.verdict is not Verdict.RETRY:
            return outcome
        delay = next_delay(policy, attempt, outcome.retry_after, random.random())
        if attempt >= policy.max_attempts or time.monotonic() + delay >= deadline or not wait(delay):
            return outcome


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class HttpExporter:
    """The delivery machinery (see the module's docstring), whatever the wire format.

    A subclass says how records become batches (:meth:`_encode`); its batch
    type says how a batch becomes a request body and spool lines. The Trunk
    API (:class:`TrunkHttpExporter`) and OTLP
    (:class:`~trunk_trace.exporters.otlp.OtlpHttpExporter`) share everything else:
    sender threads, retries, deadlines, the spool and its replay.
    """

    batch_type: type[Batch] = Batch
    reasons: dict = _REASONS  # one message per kind of problem
    report_key = "http"  # keeps one exporter's messages from silencing another's
    repo_known = True  # False: nothing can be sent, everything goes to the spool

    def __init__(
        self,
        client: HttpClient,
        spool: Spool,
        *,
        policy: RetryPolicy = RetryPolicy(),
        senders: int = SENDERS,
        max_queued_events: int = MAX_QUEUED_EVENTS,
        replay: bool = True,
        halted: Optional[str] = None,
    ) -> None:
        self._client = client
        self._spool = spool
        self._policy = policy
        self._max_queued = max_queued_events
        self._queue: deque[Batch] = deque()
        self._queued_events = 0
        self._inflight: set[Batch] = set()
        self._cond = threading.Condition(threading.Lock())
        self._deadlines: list[float] = []  # of the flushes in progress, and of shutdown
        self._closed = False
        self._shut_down = False
        self._halted: Optional[str] = halted
        self._unreachable = False  # a connection was refused and nothing succeeded since
        self._delivered_any = False
        self._replay = replay
        self._replay_idle = False  # the spool had nothing this process could send
        self._spooled = 0  # events this exporter wrote to the spool
        self._threads: list[threading.Thread] = []
        for number in range(senders):
            thread = threading.Thread(
                target=self._run_sender, args=(number == 0,), name=f"trunk_trace.{self.report_key}-sender-{number}",
                daemon=True,
            )
            try:
                thread.start()
            except RuntimeError:
                break  # at interpreter exit no thread may start: flush and shutdown send inline
            self._threads.append(thread)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._client.url!r}, spool={self._spool.directory!r})"

    @property
    def spool(self) -> Spool:
        return self._spool

    @property
    def _deadline(self) -> Optional[float]:
        return min(self._deadlines) if self._deadlines else None

    # -- the exporter protocol --

    def _encode(self, records: Sequence[FinishedEvent]) -> list[Batch]:
        """Records as request-sized batches (the part that knows the wire format)."""
        raise NotImplementedError

    def export(self, records: Sequence[FinishedEvent]) -> None:
        if not records:
            return
        batches = self._encode(records)
        if not self.repo_known:
            self._to_spool(batches, "no-repo")
            return
        overflow: list[Batch] = []
        with self._cond:
            for batch in batches:
                if self._halted or self._shut_down or self._queued_events + len(batch) > self._max_queued:
                    overflow.append(batch)
                else:
                    self._queue.append(batch)
                    self._queued_events += len(batch)
            self._cond.notify_all()
            reason = self._halted or ("deadline" if self._shut_down else "full")
        if overflow:
            self._to_spool(overflow, reason, "budget spent" if reason == "deadline" else "")

    def force_flush(self, timeout: Optional[float] = None) -> bool:
        """Deliver what was exported within *timeout*; what is left then is written to the spool.

        Returns True when everything queued so far was delivered.
        """
        deadline = math.inf if timeout is None else time.monotonic() + max(0.0, timeout)
        spooled_before = self._spooled
        with self._cond:
            self._deadlines.append(deadline)
            self._cond.notify_all()
        try:
            self._wait_until_sent(deadline)
        finally:
            with self._cond:
                self._deadlines.remove(deadline)
        return self._spooled == spooled_before

    def shutdown(self, timeout: Optional[float] = None) -> None:
        """Flush within *timeout* (what is left goes to the spool), then stop the senders. Idempotent."""
        with self._cond:
            if self._shut_down:
                return
            self._shut_down = True
            deadline = math.inf if timeout is None else time.monotonic() + max(0.0, timeout)
            self._deadlines.append(deadline)
            self._cond.notify_all()
        try:
            self._wait_until_sent(deadline)
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._client.close()

    # -- waiting at a deadline --

    def _wait_until_sent(self, deadline: float) -> None:
        if not any(thread.is_alive() for thread in self._threads):
            self._send_inline(deadline)
        with self._cond:
            while self._queue or self._inflight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(None if remaining == math.inf else remaining)  # wait(inf) overflows
            leftover = self._abandon()
        if leftover:
            self._to_spool(leftover, "deadline", detail="budget spent")

    def _send_inline(self, deadline: float) -> None:
        """No sender thread runs (none could start at interpreter exit): send on this thread."""
        while time.monotonic() < deadline:
            batch = self._take(block=False)
            if batch is None:
                return
            self._deliver_safely(batch)

    def _abandon(self) -> list[Batch]:
        """At a deadline (condition held): take back what is queued or still being sent."""
        leftover = list(self._queue)
        self._queue.clear()
        self._queued_events = 0
        grace_end = time.monotonic() + ABANDON_GRACE
        while any(b.state == WRITING for b in self._inflight) and time.monotonic() < grace_end:
            self._cond.wait(grace_end - time.monotonic())
        for batch in list(self._inflight):
            if batch.state == SENDING:
                batch.state = ABANDONED  # its sender, if it ever returns, leaves it alone
                self._inflight.discard(batch)
                leftover.append(batch)
        return leftover

    # -- the sender threads --

    def _run_sender(self, replayer: bool) -> None:
        while True:
            # The replayer wakes now and then to see whether replaying became due.
            batch = self._take(block=True, timeout=IDLE_BEFORE_REPLAY if replayer else None)
            if batch is not None:
                self._deliver_safely(batch)
            elif self._closed:
                return
            elif replayer and self._replay_due():
                try:
                    self._replay_spool()
                except Exception as exc:
                    self._replay_idle = True
                    report_once("replay-bug", "replaying the spool failed (%s); it stays for later", exc, exc_info=True)

    def _deliver_safely(self, batch: Batch) -> None:
        """Deliver one batch; whatever it raises costs that batch only, never the sender thread:
        logged once, its events spooled, and those that even the spool cannot take counted as lost."""
        try:
            self._deliver(batch)
        except Exception as exc:
            report_once(f"{self.report_key}-bug", "a bug in trunk_trace's sender: %s", exc, exc_info=True)
            try:
                self._give_up(batch, "bug", f"{type(exc).__name__}")
            except Exception:
                self._settle(batch)  # _write counted what it could not keep

    def _take(self, block: bool, timeout: Optional[float] = None) -> Optional[Batch]:
        with self._cond:
            while not self._queue:
                if not block or self._closed:
                    return None
                if not self._cond.wait(timeout) and timeout is not None:
                    return None
            batch = self._queue.popleft()
            # Small batches that arrived one by one go out as one request.
            while self._queue and batch.fits(self._queue[0]):
                more = self._queue.popleft()
                batch = type(batch)(batch.repo_json, batch.items + more.items, batch.size + more.size)
            self._queued_events -= len(batch)
            batch.state = SENDING
            self._inflight.add(batch)
            return batch

    def _deliver(self, batch: Batch) -> None:
        attempt = 0
        body = batch.body()
        while True:
            deadline = self._deadline
            if self._halted:
                return self._give_up(batch, self._halted)
            if deadline is not None and self._unreachable:
                return self._give_up(batch, "unreachable", "connection refused")
            limit = math.inf if deadline is None else deadline - time.monotonic()
            if limit <= 0:
                return self._give_up(batch, "deadline", "budget spent")
            outcome = self._client.post(body, limit)
            attempt += 1
            verdict = outcome.verdict
            if verdict is Verdict.DELIVERED:
                self._unreachable = False
                self._delivered_any = True
                return self._settle(batch)
            if verdict is Verdict.REJECTED:
                label = self._client.label
                report_once(f"rejected:{label}:{outcome.detail}", "%s rejected a batch (%s); it is kept in %s",
                            label, outcome.detail, self._spool.rejected_dir)
                return self._give_up(batch, None, area="rejected")
            if verdict is not Verdict.RETRY:  # the token or the address is wrong: nothing will get through
                kind = verdict.value
                self._halt(kind, outcome.detail)
                return self._give_up(batch, kind, outcome.detail)
            if outcome.refused:
                self._unreachable = True
            delay = next_delay(self._policy, attempt, outcome.retry_after, random.random())
            kind = "server" if outcome.status else "unreachable"
            retry_at = time.monotonic() + delay
            if should_give_up(self._policy, attempt, delay, time.monotonic(), self._deadline, outcome.refused):
                return self._give_up(batch, kind, outcome.detail)
            if not self._wait_to_retry(retry_at, outcome.refused):
                return self._give_up(batch, kind, outcome.detail)

    def _wait_to_retry(self, retry_at: float, refused: bool) -> bool:
        """Sleep until *retry_at*; False (give up) as soon as a deadline makes the retry pointless."""
        with self._cond:
            while True:
                deadline = self._deadline
                if deadline is not None and (refused or retry_at >= deadline):
                    return False
                remaining = retry_at - time.monotonic()
                if remaining <= 0:
                    return True
                self._cond.wait(remaining)

    def _settle(self, batch: Batch) -> None:
        with self._cond:
            self._inflight.discard(batch)
            if batch.state != ABANDONED:
                batch.state = DONE
            self._cond.notify_all()

    def _give_up(self, batch: Batch, kind: Optional[str], detail: str = "", area: str = "pending") -> None:
        """Write a batch this sender holds to the spool (unless a deadline already took it)."""
        with self._cond:
            if batch.state == ABANDONED:
                return
            batch.state = WRITING
        try:
            self._write(batch.lines(), len(batch), kind, detail, area)
        finally:
            self._settle(batch)

    def _halt(self, kind: str, detail: str) -> None:
        with self._cond:
            self._halted = kind
            queued = list(self._queue)
            self._queue.clear()
            self._queued_events = 0
            self._cond.notify_all()
        self._to_spool(queued, kind, detail)

    # -- the spool --

    def _to_spool(self, batches: list[Batch], kind: str, detail: str = "") -> None:
        if not batches:
            return
        lines = [line for batch in batches for line in batch.lines()]
        self._write(lines, len(lines), kind, detail, "pending")

    def _write(self, lines: list[str], count: int, kind: Optional[str], detail: str, area: str) -> None:
        try:
            written = self._spool.write(lines, area, self.repo_known)
        except Exception as exc:  # a bug, such as a line UTF-8 cannot encode: it alone is lost (counted)
            good = [line for line in lines if _encodes(line)]
            lost = count - len(good) if len(good) < len(lines) else count
            count_drop(lost)
            report_once(f"{self.report_key}:spool-bug", "cannot keep %d event(s) in the spool (%s: %s); they are lost",
                        lost, type(exc).__name__, exc, exc_info=True)
            if lost < count:
                self._write(good, count - lost, kind, detail, area)
            return
        if written is None:
            return  # the spool reported the loss
        self._spooled += count
        if kind == "full":
            self._replay_idle = False  # the replayer has work again
        if kind is not None:
            message = self.reasons[kind].format(url=self._client.url, detail=detail, spool=self._spool.directory)
            report_once(f"{self.report_key}:{kind}", "%s", message)

    # -- replaying the spool: after our own events, once the endpoint answered --

    def _replay_due(self) -> bool:
        return (
            self._replay and not self._replay_idle and self._delivered_any and not self._closed
            and not self._deadlines and not self._halted and not self._queue
        )

    def _replay_spool(self) -> None:
        spool = self._spool
        spool.recover()
        for name in spool.pending():
            if not self._replay_due():
                return
            claim = spool.claim(name)
            if claim is None:
                continue
            result = replay_claim(
                self._client, spool, claim, policy=REPLAY_POLICY, wait=self._replay_wait, keep_going=self._replay_due,
                batch_type=self.batch_type,
            )
            if result.sent:
                log.debug("trunk_trace: replayed %d spooled event(s) from %s", result.sent, name)
            if result.last is not None:
                if result.last.verdict in (Verdict.UNAUTHORIZED, Verdict.MISDIRECTED):
                    self._halt(result.last.verdict.value, result.last.detail)
                self._delivered_any = False  # wait for our own next success before trying again
                return
        self._replay_idle = True

    def _replay_wait(self, seconds: float) -> bool:
        """Sleep between replay retries; False as soon as own work, a flush or the exit comes."""
        end = time.monotonic() + seconds
        with self._cond:
            while True:
                if self._closed or self._deadlines or self._queue:
                    return False
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return True
                self._cond.wait(remaining)


class TrunkHttpExporter(HttpExporter):
    """Sends finished events to the Trunk CI Analytics API (see the module's docstring)."""

    def __init__(
        self,
        token: str,
        api_address: str,
        repo: Optional[dict],
        spool: Spool,
        *,
        policy: RetryPolicy = RetryPolicy(),
        senders: int = SENDERS,
        max_queued_events: int = MAX_QUEUED_EVENTS,
        replay: bool = True,
    ) -> None:
        client = Client(token, api_address, senders)
        self._repo = repo
        self._repo_json = encode_repo(repo)
        self.repo_known = repo is not None
        super().__init__(
            client, spool, policy=policy, senders=senders, max_queued_events=max_queued_events, replay=replay,
            halted=None if client.token_ok else "bad-token",
        )

    @classmethod
    def from_config(cls, config: Any, repo: Optional[dict]) -> TrunkHttpExporter:
        """*repo* as ``_config.event_context`` resolved it (``repo_url`` included)."""
        return cls(config.token, config.api_address, repo, Spool.from_config(config))

    def _encode(self, records: Sequence[FinishedEvent]) -> list[Batch]:
        # FinishedEvent.json encodes straight from the live event, without the wire dict.
        encoded = [(r.pid, r.thread_id, record_json(r)) for r in records]
        return make_batches(self._repo_json, encoded)
