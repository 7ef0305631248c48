"""The exchange's limits on what we send, enforced in the shell.

Two limits from the venues' rules, each a pure `~trio_feed.core.ratelimit.SlidingWindowLimiter`
behind an async gate:

* **outgoing messages per connection** (10/s on Binance USD-M, 5/s on spot): every frame we
  send counts, control messages and pings alike, and the venue disconnects a connection that
  breaks it (repeatedly: an IP ban). One `Throttle` per socket. Two slots of the venue's rate are
  left free for what the WebSocket layer sends on its own (the pong that answers a server ping,
  the close frame), which we cannot delay.
* **connection attempts per IP** (300 per 5 minutes on Binance): one `Throttle` shared by every
  connection of the feed to the same host, so a reconnect storm of many connections queues
  instead of earning a ban.

Waiters are served in arrival order (`trio.Lock` is fair), so a burst of subscription changes
is sent in the order it was asked for.
"""

from __future__ import annotations

import math
import urllib.parse

import trio

from ..core.ratelimit import SlidingWindowLimiter

__all__ = ["AttemptLimits", "Throttle", "outgoing_throttle"]

#: Connection attempts allowed per window, per host (Binance: 300 per 5 minutes per IP).
CONNECTION_ATTEMPTS = 300
CONNECTION_ATTEMPT_WINDOW = 300.0


class Throttle:
    """Waits until the limiter allows one more event, then records it."""

    def __init__(self, limiter: SlidingWindowLimiter) -> None:
        self.limiter = limiter
        self._lock = trio.Lock()
        #: How many acquisitions had to wait, and for how long in all (for status and tests).
        self.waits = 0
        self.waited = 0.0

    async def acquire(self) -> None:
        """Return once one more event fits in the window (and count it)."""
        async with self._lock:
            delay = self.limiter.delay(trio.current_time())
            if delay > 0:
                self.waits += 1
                self.waited += delay
                while delay > 0:
                    await trio.sleep(delay)
                    delay = self.limiter.delay(trio.current_time())
            self.limiter.record(trio.current_time())


def outgoing_throttle(max_per_second: float) -> Throttle:
    """The gate for one socket of a venue allowing ``max_per_second`` incoming messages: two
    slots below it (kept for a pong and the close frame, which the WebSocket layer sends on
    its own), at least one."""
    allowed = max(1, math.floor(max_per_second) - 2)
    return Throttle(SlidingWindowLimiter(allowed, 1.0))


class AttemptLimits:
    """One connection-attempt `Throttle` per host, shared by the whole feed."""

    def __init__(
        self, limit: int = CONNECTION_ATTEMPTS, window: float = CONNECTION_ATTEMPT_WINDOW
    ) -> None:
        self.limit = limit
        self.window = window
        self._by_host: dict[str, Throttle] = {}

    def for_url(self, url: str) -> Throttle:
        """The throttle of ``url``'s host."""
        host = urllib.parse.urlsplit(url).hostname or url
        throttle = self._by_host.get(host)
        if throttle is None:
            throttle = Throttle(SlidingWindowLimiter(self.limit, self.window))
            self._by_host[host] = throttle
        return throttle
