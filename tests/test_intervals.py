"""Kline interval arithmetic: epoch alignment, Monday weeks, calendar months."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from trio_feed.core.intervals import (
    bucket_open,
    close_time,
    interval_ms,
    is_interval,
    next_open,
    open_times,
)

SECOND = 1_000
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000
WEEK = 7 * DAY


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    """Epoch ms of a UTC date and time."""
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()) * 1000


def test_interval_lengths() -> None:
    assert interval_ms("1s") == SECOND
    assert interval_ms("7m") == 7 * MINUTE
    assert interval_ms("4h") == 4 * HOUR
    assert interval_ms("3d") == 3 * DAY
    assert interval_ms("1w") == WEEK


@pytest.mark.parametrize("bad", ["", "1", "m", "0m", "01m", "1x", "1H", "1 m", "-1m", "1.5m"])
def test_invalid_intervals_raise(bad: str) -> None:
    assert not is_interval(bad)
    with pytest.raises(ValueError, match="not a kline interval"):
        bucket_open(0, bad)
    with pytest.raises(ValueError, match="not a kline interval"):
        next_open(0, bad)
    with pytest.raises(ValueError, match="not a kline interval"):
        interval_ms(bad)


def test_months_have_no_fixed_length() -> None:
    assert is_interval("1M")
    with pytest.raises(ValueError, match="no fixed length"):
        interval_ms("1M")


@pytest.mark.parametrize("interval", ["1s", "1m", "7m", "15m", "1h", "4h", "1d", "3d"])
def test_fixed_intervals_align_to_the_epoch(interval: str) -> None:
    length = interval_ms(interval)
    assert bucket_open(0, interval) == 0
    assert bucket_open(length - 1, interval) == 0
    assert bucket_open(length, interval) == length
    t = 1_767_225_600_000 + 123_456_789
    assert bucket_open(t, interval) == t - t % length


@given(st.integers(0, 4_102_444_800_000), st.sampled_from(["1s", "7m", "1h", "1d", "1w", "1M"]))
def test_bucket_contains_the_time_and_is_stable(t: int, interval: str) -> None:
    start = bucket_open(t, interval)
    end = next_open(start, interval)
    assert start <= t < end
    assert bucket_open(start, interval) == start
    assert bucket_open(end - 1, interval) == start
    assert bucket_open(end, interval) == end
    assert close_time(start, interval) == end - 1


def test_weeks_open_on_monday() -> None:
    # The epoch was a Thursday: its week opened on Monday 1969-12-29.
    assert bucket_open(0, "1w") == -3 * DAY
    assert bucket_open(ms(1970, 1, 5), "1w") == ms(1970, 1, 5)
    monday = ms(2024, 1, 1)  # a Monday
    assert bucket_open(monday, "1w") == monday
    assert bucket_open(monday - 1, "1w") == monday - WEEK
    assert bucket_open(ms(2024, 1, 7, 23, 59, 59), "1w") == monday  # Sunday night
    assert bucket_open(ms(2026, 1, 1, 12), "1w") == ms(2025, 12, 29)  # a Thursday
    assert next_open(monday, "1w") == ms(2024, 1, 8)
    assert close_time(monday, "1w") == ms(2024, 1, 8) - 1


@given(st.integers(0, 4_102_444_800_000))
def test_every_week_opens_on_a_monday_midnight(t: int) -> None:
    opened = datetime.fromtimestamp(bucket_open(t, "1w") / 1000, UTC)
    assert opened.weekday() == 0
    assert (opened.hour, opened.minute, opened.second, opened.microsecond) == (0, 0, 0, 0)
    assert timedelta(0) <= datetime.fromtimestamp(t / 1000, UTC) - opened < timedelta(days=7)


def test_two_week_intervals_count_from_the_monday_origin() -> None:
    origin = ms(1970, 1, 5)
    assert bucket_open(origin + WEEK, "2w") == origin
    assert bucket_open(origin + 2 * WEEK, "2w") == origin + 2 * WEEK


@pytest.mark.parametrize(
    ("year", "month", "days"),
    [
        (2023, 1, 31),
        (2023, 2, 28),
        (2024, 2, 29),  # leap year
        (2000, 2, 29),  # divisible by 400: leap
        (2100, 2, 28),  # divisible by 100: not leap
        (2024, 4, 30),
        (2024, 12, 31),  # into the next year
    ],
)
def test_month_lengths(year: int, month: int, days: int) -> None:
    start = ms(year, month, 1)
    assert next_open(start, "1M") == start + days * DAY
    assert close_time(start, "1M") == start + days * DAY - 1
    assert bucket_open(start, "1M") == start
    assert bucket_open(start - 1, "1M") < start
    assert bucket_open(start + days * DAY - 1, "1M") == start
    assert bucket_open(start + days * DAY, "1M") == start + days * DAY


def test_months_open_at_midnight_on_the_first() -> None:
    assert bucket_open(ms(2024, 2, 29, 23, 59, 59) + 999, "1M") == ms(2024, 2, 1)
    assert bucket_open(ms(2024, 3, 1), "1M") == ms(2024, 3, 1)
    assert next_open(ms(2024, 12, 1), "1M") == ms(2025, 1, 1)


def test_multi_month_intervals_are_aligned_to_the_year() -> None:
    assert bucket_open(ms(2024, 5, 17), "3M") == ms(2024, 4, 1)
    assert next_open(ms(2024, 10, 1), "3M") == ms(2025, 1, 1)


@given(st.integers(1970 * 12, 2100 * 12))
def test_month_boundaries_are_exact_to_the_millisecond(index: int) -> None:
    year, month0 = divmod(index, 12)
    start = ms(year, month0 + 1, 1)
    assert bucket_open(start, "1M") == start
    assert bucket_open(start - 1, "1M") != start
    assert next_open(bucket_open(start - 1, "1M"), "1M") == start


def test_next_open_and_close_time_of_fixed_intervals() -> None:
    assert next_open(0, "1s") == SECOND
    assert close_time(0, "1m") == MINUTE - 1
    assert next_open(7 * MINUTE, "7m") == 14 * MINUTE
    assert close_time(HOUR, "1h") == 2 * HOUR - 1


def test_open_times_lists_the_buckets_in_a_range() -> None:
    assert list(open_times(0, 3 * MINUTE, "1m")) == [0, MINUTE, 2 * MINUTE]
    assert list(open_times(0, 3 * MINUTE + 1, "1m")) == [0, MINUTE, 2 * MINUTE, 3 * MINUTE]
    assert list(open_times(MINUTE, MINUTE, "1m")) == []
    assert list(open_times(ms(2024, 1, 1), ms(2024, 4, 1), "1M")) == [
        ms(2024, 1, 1),
        ms(2024, 2, 1),
        ms(2024, 3, 1),
    ]
