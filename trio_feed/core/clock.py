"""Market time: the exchange's clock, estimated from ours plus a measured offset.

Which kline is closed and which range to backfill are decided in exchange time, never
local time: the local clock may be minutes off. The offset comes from the venue's server
time endpoint, measured Cristian-style (the server read its clock, on average, half-way
through the round trip). Pure: the local wall clock comes in as a function.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["MarketClock"]


class MarketClock:
    """Exchange time in ms = local wall ms + ``offset_ms``."""

    __slots__ = ("_wall_ms", "offset_ms", "round_trip_ms", "synced")

    def __init__(self, wall_ms: Callable[[], int]) -> None:
        self._wall_ms = wall_ms
        #: Exchange clock minus local clock, in ms (0 until the first sync).
        self.offset_ms = 0
        #: Round trip of the measurement that set the offset (its uncertainty is half this).
        self.round_trip_ms: int | None = None
        self.synced = False

    def local_ms(self) -> int:
        """The local wall clock, in ms since the epoch."""
        return self._wall_ms()

    def now_ms(self) -> int:
        """Best estimate of the exchange's clock, in ms since the epoch."""
        return self._wall_ms() + self.offset_ms

    def observe(self, server_ms: int, sent_local_ms: int, received_local_ms: int) -> None:
        """Record a server-time reading taken between two local clock readings."""
        round_trip = max(0, received_local_ms - sent_local_ms)
        # Prefer tighter measurements: a slow round trip says less about the offset.
        if (
            self.synced
            and self.round_trip_ms is not None
            and round_trip > 4 * max(self.round_trip_ms, 50)
        ):
            return
        self.offset_ms = server_ms - (sent_local_ms + round_trip // 2)
        self.round_trip_ms = round_trip
        self.synced = True
