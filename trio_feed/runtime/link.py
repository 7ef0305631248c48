"""One socket of a connection, and the small types the supervisor and the feed share.

A connection (`~trio_feed.runtime.connection.ConnectionSupervisor`) owns a *link* per socket:
one most of the time, two for a moment while a rotation replaces the socket. A `Link` holds
what that socket is subscribed to, the per-stream counters its reader bumps, the pending
acknowledgements of its requests, its outgoing-message throttle, and where its items go.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import trio
from attrs import frozen

from ..core.backoff import BackoffPolicy
from ..core.overlap import OverlapFilter
from ..core.staleness import StreamActivity
from ..events import BookTicker, DepthDiff, Kline, MarkPrice, Trade
from ..venues.base import ParsedItem, StreamSpec, VenueAdapter
from .limits import Throttle
from .transport import WebSocketSession

__all__ = [
    "ConnectionSettings",
    "ConnectionStats",
    "Deliver",
    "Link",
    "LinkLost",
    "StreamsNotice",
    "SubscribeRejected",
    "SubscriptionRejected",
    "TradingEvidence",
    "activity_key",
    "drop_items",
]


class LinkLost(Exception):
    """The current socket is gone (or must go) and no replacement is ready."""

    def __init__(self, reason: str, *, immediate: bool = False) -> None:
        super().__init__(reason)
        self.immediate = immediate


class SubscribeRejected(Exception):
    """The venue refused a subscription request."""

    def __init__(self, streams: tuple[str, ...], message: str) -> None:
        super().__init__(f"venue rejected subscribing {', '.join(streams)}: {message}")
        self.streams = streams
        self.message = message


class SubscriptionRejected(Exception):
    """The venue refused streams of a subscription change (they were left out; every other
    stream is untouched)."""

    def __init__(self, streams: Sequence[str], message: str) -> None:
        super().__init__(f"the venue rejected {', '.join(streams)}: {message}")
        self.streams = tuple(streams)
        self.message = message


@frozen(slots=True)
class ConnectionSettings:
    """What a supervisor needs from the venue's configuration."""

    ws_url: str
    connect_timeout: float
    ping_interval: float
    ping_timeout: float
    backoff: BackoffPolicy
    #: Longest wait for a close handshake (the peer may never answer).
    close_timeout: float = 2.0
    #: Per-stream staleness: how often to look, and the base silence allowed.
    heartbeat_interval: float = 30.0
    heartbeat_timeout: float = 60.0
    #: Replace the socket make-before-break after this many seconds (0: never).
    rotate_after: float = 0.0
    #: Longest wait for a replacement to deliver on every stream before switching anyway.
    rotation_timeout: float = 30.0


class ConnectionStats:
    """Counters of one connection, for ``status()`` (mutated in place: cheap on the hot path)."""

    __slots__ = (
        "bytes",
        "connected_at",
        "last_error",
        "last_message_at",
        "malformed",
        "messages",
        "reconnects",
        "resubscribes",
        "rotation_failures",
        "rotations",
        "sent",
    )

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.malformed = 0
        self.reconnects = 0
        self.rotations = 0
        self.rotation_failures = 0
        self.resubscribes = 0
        self.sent = 0
        self.last_message_at: float | None = None
        self.connected_at: float | None = None
        self.last_error: str | None = None


#: Called with the parsed market events of each batch of frames: the feed's router.
Deliver = Callable[[list[ParsedItem]], None]
#: Told when streams go missing (connection lost, stale) or come back: ``(streams, missing,
#: why)``. The feed's data-quality board listens.
StreamsNotice = Callable[[Sequence[StreamSpec], bool, str], None]
#: A token that changes whenever the market shows ``symbol`` traded (the kline stream's trade
#: count), or None when nothing is known: evidence that a quiet trade stream is broken.
TradingEvidence = Callable[[str], Hashable | None]


def activity_key(adapter: VenueAdapter, spec: StreamSpec) -> Hashable | None:
    """The key the events of ``spec`` carry, as the reader computes it per event:
    ``(Kline, symbol, interval)`` for klines, ``(class, symbol)`` for the rest."""
    channel = spec.channel
    if channel == "aggTrade":
        return (Trade, spec.symbol)
    if channel == "bookTicker":
        return (BookTicker, spec.symbol)
    if channel.startswith("markPrice"):
        return (MarkPrice, spec.symbol)
    if channel.startswith("depth"):
        return (DepthDiff, spec.symbol)
    key = adapter.kline_key(spec.symbol, channel)
    if key is not None:
        return (Kline, *key)
    return None


def drop_items(items: list[ParsedItem]) -> None:
    """Where a retired socket's items go: nowhere."""


class Link:
    """One socket of the connection and what it holds."""

    def __init__(self, number: int, streams: Sequence[StreamSpec], throttle: Throttle) -> None:
        self.number = number
        #: The streams this socket is subscribed to (by name).
        self.held: dict[str, StreamSpec] = {s.name: s for s in streams}
        self.throttle = throttle
        self.scope = trio.CancelScope()
        self.session: WebSocketSession | None = None
        self.opened_at: float | None = None
        self.subscribed_at: float | None = None
        self.retired = False
        #: The venue announced it will close this socket (serverShutdown).
        self.announced = False
        #: Per event key, the counters the reader bumps (see `activity_key`).
        self.activity: dict[Hashable, StreamActivity] = {}
        self.waiters: dict[int, trio.Event] = {}
        self.rejected: dict[int, str] = {}
        self.pong: trio.Event | None = None
        self.deliver: Deliver = drop_items
        #: While this socket is a rotation's replacement: its buffered items and the filter
        #: that holds what the old socket delivered.
        self.buffer: list[ParsedItem] = []
        self.overlap: OverlapFilter | None = None
