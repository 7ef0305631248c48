"""SlidingWindowLimiter: exact delays, the sliding (not bucketed) window, forced records, time
going backwards, and the venue's own rule never broken by a client that waits as told."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from trio_feed.core.ratelimit import SlidingWindowLimiter

# The fake exchange's rule: two messages are in the same one-second window iff t2 - t1 < 1 - 1e-6.
FAKE_WINDOW = 1.0 - 1e-6


def fake_would_disconnect(times: list[float], limit: int) -> bool:
    """Whether some window [t, t + 1 - 1e-6) of the sent times holds more than ``limit``."""
    return any(times[i + limit] - times[i] < FAKE_WINDOW for i in range(len(times) - limit))


@pytest.mark.parametrize(("limit", "window"), [(0, 1.0), (-1, 1.0), (1, 0.0), (1, -1.0)])
def test_rejects_bad_numbers(limit: int, window: float) -> None:
    with pytest.raises(ValueError):
        SlidingWindowLimiter(limit, window)


def test_rejects_nan_window() -> None:
    with pytest.raises(ValueError):
        SlidingWindowLimiter(1, float("nan"))


def test_keeps_its_numbers() -> None:
    limiter = SlidingWindowLimiter(10, 1)
    assert (limiter.limit, limiter.window) == (10, 1.0)
    assert isinstance(limiter.window, float)
    assert repr(limiter) == "SlidingWindowLimiter(limit=10, window=1.0)"


def test_allows_limit_events_then_waits_for_the_oldest_to_leave() -> None:
    limiter = SlidingWindowLimiter(3, 1.0)
    assert limiter.try_acquire(0.0)
    assert limiter.try_acquire(0.25)
    assert limiter.try_acquire(0.5)
    assert limiter.delay(0.5) == 0.5  # the event at 0.0 leaves the window at 1.0
    assert not limiter.try_acquire(0.75)
    assert limiter.delay(0.75) == 0.25
    assert limiter.count(0.75) == 3  # the refused try was not recorded
    assert limiter.delay(1.0) == 0.0  # 1.0 - 0.0 is not < window: a new window
    assert limiter.try_acquire(1.0)
    assert limiter.delay(1.0) == 0.25  # now the event at 0.25 is the one to wait for


def test_delay_is_zero_below_the_limit() -> None:
    limiter = SlidingWindowLimiter(2, 1.0)
    assert limiter.delay(0.0) == 0.0
    limiter.record(0.0)
    assert limiter.delay(0.0) == 0.0
    limiter.record(0.0)
    assert limiter.delay(0.0) == 1.0


def test_window_slides_rather_than_resets_per_bucket() -> None:
    # A fixed one-second bucket would allow 2 at 0.9 and 2 more at 1.1: 4 within 0.2 s.
    limiter = SlidingWindowLimiter(2, 1.0)
    assert limiter.try_acquire(0.875)
    assert limiter.try_acquire(0.9375)
    assert not limiter.try_acquire(1.125)
    assert limiter.delay(1.125) == 0.75
    assert limiter.try_acquire(1.875)
    assert not limiter.try_acquire(1.9)  # 0.9375 is still inside
    assert limiter.try_acquire(1.9375)


def test_count_is_the_events_inside_the_window_ending_now() -> None:
    limiter = SlidingWindowLimiter(5, 1.0)
    for t in (0.0, 0.25, 0.5):
        limiter.record(t)
    assert limiter.count(0.5) == 3
    assert limiter.count(0.999) == 3
    assert limiter.count(1.0) == 2  # 1.0 - 0.0 is not < 1.0
    assert limiter.count(1.25) == 1
    assert limiter.count(10.0) == 0


def test_forced_records_count_and_memory_is_bounded() -> None:
    limiter = SlidingWindowLimiter(2, 1.0)
    for t in (0.0, 0.125, 0.25, 0.375):  # pongs the protocol sent on its own
        limiter.record(t)
    assert limiter.count(0.375) == 2  # only the last `limit` are kept
    assert len(limiter._times) == 2
    assert limiter.delay(0.375) == 0.875  # wait for 0.25 to leave, not 0.0
    assert not limiter.try_acquire(1.0)
    assert limiter.try_acquire(1.25)


def test_time_going_backwards_counts_as_the_latest_time() -> None:
    limiter = SlidingWindowLimiter(1, 1.0)
    assert limiter.try_acquire(5.0)
    assert limiter.delay(4.0) == 1.0  # treated as 5.0, not 2.0 s from 4.0
    assert not limiter.try_acquire(4.5)
    limiter.record(3.0)  # recorded at 5.0: never before an earlier event
    assert list(limiter._times) == [5.0]
    assert limiter.count(0.0) == 1
    assert limiter.try_acquire(6.0)


def test_one_event_per_window() -> None:
    limiter = SlidingWindowLimiter(1, 0.5)
    assert limiter.try_acquire(0.0)
    assert limiter.delay(0.1) == pytest.approx(0.4)
    assert limiter.delay(0.1) + 0.1 - 0.0 >= 0.5


def test_delay_rounds_up_where_floating_point_rounds_down() -> None:
    # In binary, (0.4 + 0.1) - 0.4 < 0.1: a wait of exactly 0.5 - now would end one ulp
    # inside the window, and the next try would be refused.
    assert (0.4 + 0.1) - 0.4 < 0.1
    limiter = SlidingWindowLimiter(1, 0.1)
    limiter.record(0.4)
    wait = limiter.delay(0.45)
    assert wait == pytest.approx(0.05)
    assert wait > 0.5 - 0.45
    assert limiter.delay(0.45 + wait) == 0.0
    assert limiter.try_acquire(0.45 + wait)


times = st.lists(
    st.floats(min_value=0.0, max_value=3.0, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=80,
).map(sorted)


@given(times, st.integers(min_value=1, max_value=12))
def test_acquire_when_allowed_never_breaks_the_venues_rule(
    requests: list[float], limit: int
) -> None:
    limiter = SlidingWindowLimiter(limit, 1.0)
    sent = [t for t in requests if limiter.try_acquire(t)]
    assert sent  # the first request is always allowed
    assert not fake_would_disconnect(sent, limit)
    assert all(sent[i + limit] - sent[i] >= 1.0 for i in range(len(sent) - limit))


@given(times, st.integers(min_value=1, max_value=12), st.floats(min_value=0.01, max_value=5.0))
def test_waiting_the_delay_always_succeeds(
    requests: list[float], limit: int, window: float
) -> None:
    """A client that sleeps delay(now) and tries again gets through, and the resulting send
    times keep the guarantee; the sends are as early as the rule allows."""
    limiter = SlidingWindowLimiter(limit, window)
    sent: list[float] = []
    now = 0.0
    for t in requests:
        now = max(now, t)
        wait = limiter.delay(now)
        if wait:
            assert wait > 0
            now = now + wait
        assert limiter.try_acquire(now)
        sent.append(now)
    assert all(sent[i + limit] - sent[i] >= window for i in range(len(sent) - limit))
    # No wait was longer than needed: each delayed send is (to rounding) exactly one window
    # after the event `limit` before it.
    for i in range(limit, len(sent)):
        if sent[i] > max(requests[i], sent[i - 1]):
            assert sent[i] - sent[i - limit] == pytest.approx(window, abs=1e-9)


@given(times, st.integers(min_value=1, max_value=5))
def test_count_never_exceeds_limit_for_allowed_events(requests: list[float], limit: int) -> None:
    limiter = SlidingWindowLimiter(limit, 1.0)
    for t in requests:
        limiter.try_acquire(t)
        assert 1 <= limiter.count(t) <= limit
