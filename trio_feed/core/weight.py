"""The REST weight budget: how much of the venue's per-minute request weight we have used,
and how long to wait before the next request fits.

Binance counts REST weight per IP in the **UTC clock minute** of exchange time (not a sliding
60 s), reports the running total in ``X-MBX-USED-WEIGHT-1M`` on every response, answers 429
past the limit and bans the IP (418, from 2 minutes up to 3 days) if the client carries on.
So the shell never sends a request that would take the minute over budget: it waits for the
next minute instead.

Two sources feed the count of the current window:

* `WeightBudget.spend`, when we are about to send a request: our own count includes the
  requests still in flight, which the venue's header cannot show yet;
* `WeightBudget.observe`, with the venue's header: it includes other processes on the same
  IP (and requests of ours that landed in the next minute), which our count cannot know.

The window's used weight is the larger of the two. We only use ``fraction`` (90 %) of the
venue's limit: the rest is headroom for those other processes, for requests that straddle a
minute boundary, and for the uncertainty of our estimate of the exchange's clock.

Pure: time comes in as ``now_ms``, exchange milliseconds since the epoch
(`trio_feed.core.clock.MarketClock.now_ms`).
"""

from __future__ import annotations

import math

__all__ = ["WINDOW_MS", "WeightBudget"]

#: Length of the venue's weight window: one clock minute.
WINDOW_MS = 60_000


class WeightBudget:
    """The REST weight used in the venue's current one-minute window, against our budget.

    ``budget = floor(limit_per_minute * fraction)``. `delay` says how long to wait before a
    request of a given weight fits. A request heavier than the whole budget can never fit;
    so that it does not wait forever, it is allowed alone at the start of a fresh window
    (nothing else used in it yet), and everything after it waits for the next window.
    """

    __slots__ = ("_used", "_window", "budget", "fraction", "limit", "margin")

    def __init__(
        self, limit_per_minute: int, *, fraction: float = 0.9, margin: float = 0.05
    ) -> None:
        if limit_per_minute < 1:
            raise ValueError(f"limit_per_minute must be at least 1, got {limit_per_minute}")
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        #: The venue's limit per window.
        self.limit = limit_per_minute
        self.fraction = fraction
        #: The weight we allow ourselves per window.
        self.budget = max(1, math.floor(limit_per_minute * fraction))
        #: Seconds added to a wait for the next window: our estimate of the exchange's clock
        #: is uncertain, and arriving a little late is cheap while arriving early is a 429.
        self.margin = margin
        self._window = -1  # index of the window _used belongs to (now_ms // WINDOW_MS)
        self._used = 0

    def _roll(self, now_ms: int) -> int:
        """Move to the window of ``now_ms`` if it is a later one; return the current window.

        The market clock may step back a little when it re-syncs; a reading from an earlier
        window is then counted in the current one, which errs on the safe side.
        """
        window = now_ms // WINDOW_MS
        if window > self._window:
            self._window, self._used = window, 0
        return self._window

    def used(self, now_ms: int) -> int:
        """The weight used in the window of ``now_ms`` (as far as we know)."""
        return self._used if now_ms // WINDOW_MS <= self._window else 0

    def remaining(self, now_ms: int) -> int:
        """The weight still in the budget of the window of ``now_ms`` (never negative)."""
        return max(0, self.budget - self.used(now_ms))

    def delay(self, weight: int, now_ms: int) -> float:
        """Seconds to wait before a request of ``weight`` fits; 0.0 if it fits now.

        Otherwise the time until the next window starts, plus ``margin``. An over-budget
        request fits in a window where nothing was used yet (see the class docstring).
        """
        used = self.used(now_ms)
        if used + weight <= self.budget or used == 0:
            return 0.0
        window = max(now_ms // WINDOW_MS, self._window)
        return ((window + 1) * WINDOW_MS - now_ms) / 1000 + self.margin

    def spend(self, weight: int, now_ms: int) -> None:
        """Count ``weight`` for a request about to be sent at ``now_ms``."""
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        self._roll(now_ms)
        self._used += weight

    def observe(self, used: int, now_ms: int) -> None:
        """The venue reported ``used`` weight in a response received at ``now_ms``.

        The window's count becomes the larger of ours and the venue's. A response that
        straddled a minute boundary may report the old minute's total; counting it in the
        new one can only make us wait longer, never get us a 429.
        """
        if used < 0:
            return
        self._roll(now_ms)
        self._used = max(self._used, used)
