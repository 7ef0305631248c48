"""A sliding-window rate limit for messages we send: at most ``limit`` in any ``window``.

Venues cap what a client may send on one WebSocket (Binance: 10 messages per second on USD-M
futures, 5 on spot, where pings and pongs count too) and disconnect a client that goes over.
They judge by the messages' own times, not by fixed one-second buckets: two messages at
``t1 <= t2`` fall in the same window iff ``t2 - t1 < window``. Fixed buckets are not enough
(``limit`` messages at the end of one bucket and ``limit`` at the start of the next would be
``2 * limit`` within one window), so `SlidingWindowLimiter` keeps the times of the last
``limit`` events and allows one more only when the oldest of them has left the window:

    for every i:  t[i + limit] - t[i] >= window

which holds whenever every event is recorded only while `SlidingWindowLimiter.delay` is 0.
Memory is bounded by ``limit`` (older times can never matter again).

Pure: time comes in as ``now`` (seconds, any monotonic origin, e.g. ``trio.current_time()``).
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["SlidingWindowLimiter"]


class SlidingWindowLimiter:
    """At most `limit` events in any window of `window` seconds (a true sliding window over the
    event times, not fixed buckets).

    Ask `delay` before sending and wait that long (then ask again: a wait can end a hair early
    on a real clock); `record` what was sent, or use `try_acquire` to do both at once.
    Events the limiter did not allow (a pong the protocol sends by itself) are recorded too,
    so that the next allowed event still keeps the window's count.

    Times must not go backwards; a ``now`` earlier than the latest time seen is treated as
    that latest time, so a clock hiccup delays an event rather than breaking the guarantee.
    """

    __slots__ = ("_latest", "_times", "limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if not window > 0:  # also refuses NaN
            raise ValueError(f"window must be > 0 seconds, got {window}")
        #: The most events allowed in one window.
        self.limit = limit
        #: The window's length, in seconds.
        self.window = float(window)
        # The times of the last `limit` events, oldest first; older ones cannot matter.
        self._times: deque[float] = deque(maxlen=limit)
        self._latest = -math.inf

    def _clamp(self, now: float) -> float:
        """``now``, or the latest time seen if ``now`` went backwards."""
        if now > self._latest:
            self._latest = now
        return self._latest

    def delay(self, now: float) -> float:
        """Seconds from ``now`` until one more event is allowed; 0.0 if it is allowed now.

        The answer is exact in floating point: ``delay(now + delay(now)) == 0.0``.
        """
        now = self._clamp(now)
        times = self._times
        if len(times) < self.limit:
            return 0.0
        # The new event would be the `limit`-th after the oldest kept one: it must come at
        # least `window` after it.
        oldest = times[0]
        if now - oldest >= self.window:
            return 0.0
        # Round up wherever floating point rounds down, so that waiting the answer is
        # always enough (`now + d - oldest >= window` when computed the same way).
        target = oldest + self.window
        while target - oldest < self.window:
            target = math.nextafter(target, math.inf)
        wait = target - now
        while now + wait < target:
            wait = math.nextafter(wait, math.inf)
        return wait

    def record(self, now: float) -> None:
        """An event happened at ``now`` (also one nobody asked leave for)."""
        self._times.append(self._clamp(now))

    def try_acquire(self, now: float) -> bool:
        """Record an event at ``now`` and return True if it is allowed now, else False."""
        if self.delay(now) > 0.0:
            return False
        self.record(now)
        return True

    def count(self, now: float) -> int:
        """The events within the window ending at ``now``: those at ``t`` with
        ``now - t < window`` (at most `limit`: older ones are not kept)."""
        now = self._clamp(now)
        inside = 0
        for t in reversed(self._times):
            if now - t >= self.window:
                break
            inside += 1
        return inside

    def __repr__(self) -> str:
        return f"SlidingWindowLimiter(limit={self.limit}, window={self.window})"
