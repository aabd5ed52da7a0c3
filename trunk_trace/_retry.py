"""The retry policy as pure functions: what an answer means and how long to wait.

Nothing here sleeps, reads a clock or draws random numbers by itself: the
sender passes ``now`` and a random fraction in, so tests never wait and every
rule can be checked with exact numbers (as urllib3's ``util/retry.py`` does).
"""

from __future__ import annotations

import email.utils
import enum
import math
from typing import Callable, Optional

import attrs


class Verdict(enum.Enum):
    """What to do with a batch after one attempt to send it."""

    DELIVERED = "delivered"  # 2xx
    RETRY = "retry"  # 408, 429, 5xx, network errors: try again later, then spool
    REJECTED = "rejected"  # 400 and other 4xx: the batch itself is bad; keep it aside for inspection
    UNAUTHORIZED = "unauthorized"  # 401/403: the token was refused; stop sending in this process
    MISDIRECTED = "misdirected"  # 3xx, 404, 405: wrong address; stop sending, keep everything


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Capped exponential backoff with jitter, for one batch."""

    initial: float = 0.5  # seconds before the first retry
    multiplier: float = 2.0
    cap: float = 30.0  # longest wait between two attempts
    jitter: float = 0.2  # a wait is shortened by up to this fraction, so senders spread out
    max_attempts: int = 6  # then the batch goes to the spool, to be replayed later
    max_retry_after: float = 120.0  # a server asking for longer is capped (ddtrace caps at 120 s too)


def trunk_retryable(status: int) -> bool:
    """The Trunk API: timeouts, rate limits and every server error are worth another try."""
    return status == 408 or status == 429 or status >= 500


def otlp_retryable(status: int) -> bool:
    """OTLP/HTTP: only the codes its specification names as retryable."""
    return status in (429, 502, 503, 504)


def classify_status(status: int, retryable: Callable[[int], bool] = trunk_retryable) -> Verdict:
    """What an answer means; *retryable* says which failures are transient."""
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if retryable(status):
        return Verdict.RETRY
    if status in (401, 403):
        return Verdict.UNAUTHORIZED
    if 300 <= status < 400 or status in (404, 405):
        return Verdict.MISDIRECTED
    return Verdict.REJECTED


def backoff_delay(policy: RetryPolicy, attempt: int, rand: float) -> float:
    """Seconds to wait after failed attempt number *attempt* (1-based); *rand* is in [0, 1)."""
    exponent = min(attempt - 1, 64)  # no float overflow for absurd attempt counts
    base = min(policy.cap, policy.initial * policy.multiplier**exponent)
    return base * (1.0 - policy.jitter * rand)


def retry_after_seconds(value: Optional[str], now: float) -> Optional[float]:
    """A ``Retry-After`` header as seconds from *now* (epoch seconds); None when absent or unreadable.

    Both forms are accepted: delta-seconds (``"3"``) and an HTTP date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``). A date in the past means "now" (0).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:  # RFC 9110 dates are GMT; a naive one is malformed
        return None
    return max(0.0, when.timestamp() - now)


def next_delay(policy: RetryPolicy, attempt: int, retry_after: Optional[float], rand: float) -> float:
    """Seconds before the next attempt: the server's ``Retry-After`` (capped) when given, else backoff."""
    if retry_after is not None:
        return min(retry_after, policy.max_retry_after)
    return backoff_delay(policy, attempt, rand)


def should_give_up(
    policy: RetryPolicy,
    attempt: int,
    delay: float,
    now: float,
    deadline: Optional[float],
    refused: bool,
) -> bool:
    """After a transient failure: spool the batch now instead of waiting *delay* and trying again?

    Yes when the attempts are used up, or when a deadline (a flush, the exit)
    would pass before the next attempt, or when a deadline is set and the
    connection was refused: a refused connection answers at once, so waiting
    for it only spends the exit budget.
    """
    if attempt >= policy.max_attempts:
        return True
    if deadline is None:
        return False
    return refused or now + delay >= deadline


def is_refused(exc: BaseException) -> bool:
    """Whether a connection error was a refused connection (known at once: nothing listens)."""
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ConnectionRefusedError):
            return True
        seen.add(id(current))
        # urllib3 keeps the socket error in .reason (MaxRetryError) or in the chain.
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException) and id(reason) not in seen:
            current = reason
            continue
        current = current.__cause__ or current.__context__
    return False
