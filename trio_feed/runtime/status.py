"""Snapshots of a running feed's health, returned by ``feed.status()``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import cattrs
from attrs import frozen

from .sinks import SinkStatus

__all__ = ["ConnectionStatus", "FeedStatus", "SymbolStatus", "VenueStatus"]

_converter = cattrs.Converter()


@frozen(slots=True)
class ConnectionStatus:
    """One connection: where its state machine is and how its traffic looks."""

    id: str
    venue: str
    route: str
    state: str
    streams: tuple[str, ...]
    retry: int
    #: Seconds since its last frame (None before the first).
    last_message_age: float | None
    messages: int
    bytes: int
    malformed: int
    reconnects: int
    last_error: str | None
    #: Streams of this connection that the heartbeat found silent for too long.
    stale_streams: tuple[str, ...] = ()
    #: Make-before-break replacements of the socket (lifetime limit, ``serverShutdown``).
    rotations: int = 0
    #: Messages sent to the venue (control messages and pings), over the feed's life.
    sent: int = 0


@frozen(slots=True)
class VenueStatus:
    """One venue: its clock and its REST budget."""

    name: str
    #: Exchange clock minus local clock, ms (None until the first server-time reading).
    clock_offset_ms: int | None
    rest_requests: int
    rest_errors: int
    rest_used_weight: int | None
    #: Seconds until the venue's Retry-After ends (None when not rate limited).
    rest_banned_for: float | None
    rest_last_error: str | None
    #: REST calls retried after a 5xx, a timeout or a transport error.
    rest_retries: int = 0
    #: REST calls waiting for the weight budget or the end of a Retry-After.
    rest_waiting: int = 0
    #: The weight per minute the feed allows itself on this venue.
    rest_budget: int | None = None
    #: REST fills running (one per kline key or trade symbol at most).
    fills_in_progress: int = 0
    klines_backfilled: int = 0
    trades_backfilled: int = 0
    fill_errors: int = 0
    last_fill_error: str | None = None
    #: Ranges the exchange refused to serve (logged as errors), and the buckets or trade
    #: ids it had no data for.
    gaps_abandoned: int = 0
    klines_skipped: int = 0
    trade_ids_skipped: int = 0
    reconcile_checks: int = 0
    #: Per symbol, klines and books corrected by REST reconciliation.
    reconcile_mismatches: dict[str, int] | None = None
    #: Order books kept, and how many are in sync with the exchange now.
    books: int = 0
    books_synced: int = 0
    #: Snapshots fetched to (re-)sync books; sequence breaks and other re-syncs.
    book_snapshots: int = 0
    book_resyncs: int = 0
    #: REST depth checks made, and books found different from the exchange's.
    book_checks: int = 0
    book_mismatches: int = 0


@frozen(slots=True)
class SymbolStatus:
    """One symbol of one venue: its data-quality score and latest price."""

    venue: str
    symbol: str
    #: Data quality in [0, 1] (see :mod:`trio_feed.core.quality`).
    quality: float
    #: Why the score last changed.
    reason: str
    #: This symbol's streams that are down or silent for too long now.
    missing_streams: tuple[str, ...] = ()
    #: The close of the newest kline of its shortest interval (open or closed), else the
    #: price of its newest trade; None before either arrived.
    last_close: Decimal | None = None
    #: Whether its order book is in sync now (None: no book kept for it).
    book_synced: bool | None = None


@frozen(slots=True)
class FeedStatus:
    """Everything ``feed.status()`` reports."""

    connections: tuple[ConnectionStatus, ...]
    venues: tuple[VenueStatus, ...]
    #: Open event subscriptions (``feed.events()``).
    subscriptions: int
    #: Each ``[[sinks]]`` table's writer.
    sinks: tuple[SinkStatus, ...] = ()
    #: Every subscribed symbol, per venue.
    symbols: tuple[SymbolStatus, ...] = ()

    @property
    def healthy(self) -> bool:
        """Every connection SUBSCRIBED and every sink writing."""
        return all(c.state == "SUBSCRIBED" for c in self.connections) and not any(
            s.failing or s.stopped for s in self.sinks
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        data: dict[str, Any] = _converter.unstructure(self)
        return data
