"""The retry policy: pure functions, checked with exact numbers (nothing sleeps)."""

from __future__ import annotations

import email.utils

import pytest
import urllib3
from sink import closed_port

from trunk_trace._retry import (
    RetryPolicy,
    Verdict,
    backoff_delay,
    classify_status,
    is_refused,
    next_delay,
    retry_after_seconds,
    should_give_up,
)


@pytest.mark.parametrize(
    "status, verdict",
    [
        (200, Verdict.DELIVERED), (202, Verdict.DELIVERED),
        (408, Verdict.RETRY), (429, Verdict.RETRY), (500, Verdict.RETRY), (502, Verdict.RETRY), (503, Verdict.RETRY),
        (504, Verdict.RETRY),
        (400, Verdict.REJECTED), (413, Verdict.REJECTED), (422, Verdict.REJECTED),
        (401, Verdict.UNAUTHORIZED), (403, Verdict.UNAUTHORIZED),
        (301, Verdict.MISDIRECTED), (302, Verdict.MISDIRECTED), (307, Verdict.MISDIRECTED), (308, Verdict.MISDIRECTED),
        (404, Verdict.MISDIRECTED),
    ],
)
def test_classify_status(status, verdict):
    assert classify_status(status) is verdict


def test_backoff_grows_is_capped_and_jittered_downwards():
    policy = RetryPolicy(initial=0.5, multiplier=2.0, cap=4.0, jitter=0.2)
    assert [backoff_delay(policy, n, 0.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert backoff_delay(policy, 2, 0.5) == pytest.approx(0.9)
    assert backoff_delay(policy, 1000, 0.999) == pytest.approx(4.0 * (1 - 0.2 * 0.999))


def test_retry_after_in_seconds_and_as_an_http_date():
    now = 1_700_000_000.0
    assert retry_after_seconds("3", now) == 3.0
    assert retry_after_seconds(" 0 ", now) == 0.0
    assert retry_after_seconds("1.5", now) == 1.5
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_seconds(date, now) == pytest.approx(30.0)
    assert retry_after_seconds(email.utils.formatdate(now - 60, usegmt=True), now) == 0.0
    for bad in (None, "", "soon", "-5", "nan", "inf"):
        assert retry_after_seconds(bad, now) is None


def test_next_delay_honours_retry_after_within_a_cap():
    policy = RetryPolicy(initial=0.5, max_retry_after=120.0)
    assert next_delay(policy, 1, 7.0, 0.0) == 7.0
    assert next_delay(policy, 1, 3600.0, 0.0) == 120.0
    assert next_delay(policy, 3, None, 0.0) == 2.0


def test_when_to_give_up_and_spool():
    policy = RetryPolicy(max_attempts=3)
    assert not should_give_up(policy, 1, 1.0, now=100.0, deadline=None, refused=True)  # live: refused is transient
    assert should_give_up(policy, 3, 1.0, now=100.0, deadline=None, refused=False)  # attempts used up
    assert should_give_up(policy, 1, 0.01, now=100.0, deadline=101.0, refused=True)  # at exit: no retries on refused
    assert should_give_up(policy, 1, 2.0, now=100.0, deadline=101.0, refused=False)  # would pass the deadline
    assert not should_give_up(policy, 1, 0.5, now=100.0, deadline=101.0, refused=False)


def test_a_refused_connection_is_recognised_through_urllib3():
    pool = urllib3.HTTPConnectionPool("127.0.0.1", closed_port(), retries=False)
    with pytest.raises(urllib3.exceptions.HTTPError) as info:
        pool.urlopen("POST", "/", body=b"{}")
    assert is_refused(info.value)
    assert not is_refused(urllib3.exceptions.ReadTimeoutError(pool, "/", "read timed out"))
    assert not is_refused(ValueError("x"))


@pytest.mark.parametrize("status, verdict", [(408, "REJECTED"), (500, "REJECTED"), (429, "RETRY"), (502, "RETRY"), (404, "MISDIRECTED"), (403, "UNAUTHORIZED")])
def test_otlp_retries_only_what_its_specification_names(status, verdict):
    from trunk_trace.exporters.otlp import classify_otlp_status

    assert classify_otlp_status(status) is Verdict[verdict]
