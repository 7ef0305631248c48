"""Kline interval arithmetic in exchange time (pure).

Binance aligns every fixed-length interval to the Unix epoch except ``1w``, whose klines
open on Mondays at 00:00 UTC (the epoch was a Thursday, so weeks are counted from
1970-01-05), and ``1M``, whose klines open on the first day of each calendar month at
00:00 UTC. Every helper here takes and returns integer milliseconds since the epoch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

__all__ = [
    "bucket_open",
    "close_time",
    "interval_ms",
    "is_interval",
    "next_open",
    "open_times",
]

_RE = re.compile(r"^([1-9][0-9]*)([smhdwM])$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DAY = 86_400_000
#: Monday 1970-01-05 00:00 UTC: the origin of weekly buckets.
_WEEK_ORIGIN = 4 * _DAY


def _split(interval: str) -> tuple[int, str]:
    m = _RE.match(interval)
    if m is None:
        raise ValueError(f"not a kline interval: {interval!r}")
    return int(m.group(1)), m.group(2)


def is_interval(interval: str) -> bool:
    """Whether ``interval`` is spelled like a kline interval (``1s``, ``7m``, ``1M``...)."""
    return _RE.match(interval) is not None


def interval_ms(interval: str) -> int:
    """The fixed length of ``interval`` in ms. Raises ValueError for months (``1M``), whose
    length varies; use `next_open` for those."""
    n, unit = _split(interval)
    if unit == "M":
        raise ValueError(f"{interval!r} has no fixed length")
    return n * _UNIT_MS[unit]


def _month_index(time_ms: int) -> int:
    d = datetime.fromtimestamp(time_ms / 1000, UTC)
    return d.year * 12 + d.month - 1


def _month_start(index: int) -> int:
    year, month0 = divmod(index, 12)
    return int(datetime(year, month0 + 1, 1, tzinfo=UTC).timestamp()) * 1000


def bucket_open(time_ms: int, interval: str) -> int:
    """The open time of the ``interval`` kline that contains ``time_ms``."""
    n, unit = _split(interval)
    if unit == "M":
        index = _month_index(time_ms)
        return _month_start(index - index % n)
    length = n * _UNIT_MS[unit]
    origin = _WEEK_ORIGIN if unit == "w" else 0
    return time_ms - (time_ms - origin) % length


def next_open(open_time: int, interval: str) -> int:
    """The open time of the kline after the one opening at ``open_time``."""
    n, unit = _split(interval)
    if unit == "M":
        return _month_start(_month_index(open_time) + n)
    return open_time + n * _UNIT_MS[unit]


def close_time(open_time: int, interval: str) -> int:
    """The close time of the kline opening at ``open_time`` (its last ms, as Binance gives it)."""
    return next_open(open_time, interval) - 1


def open_times(first: int, end: int, interval: str) -> Iterator[int]:
    """Open times from ``first`` (an open time) up to but excluding ``end``."""
    t = first
    while t < end:
        yield t
        t = next_open(t, interval)
