"""The events a feed publishes: small frozen attrs classes, one per contract event type.

Prices and quantities are `decimal.Decimal` (lossless); times are integer milliseconds since
the epoch, as the exchange gives them. Each class carries its contract name in ``TYPE``
(the ``"type"`` of its JSON line, see :mod:`trio_feed.codec`).

`DepthDiff` is not a contract event: it is the parsed form of a venue's order-book diff
stream, which the book keeper turns into `BookUpdate` events once the book is in sync.
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar, Literal

from attrs import frozen

__all__ = [
    "BookLevel",
    "BookTicker",
    "BookUpdate",
    "DepthDiff",
    "Event",
    "Kline",
    "MarkPrice",
    "MarketEvent",
    "QualityChange",
    "Reconcile",
    "StateChange",
    "Trade",
]

#: Where a kline or trade came from: the live stream, a REST backfill, or built from trades.
Source = Literal["ws", "rest", "trades"]

#: One price level: ``(price, quantity)``.
BookLevel = tuple[Decimal, Decimal]


@frozen(slots=True)
class Kline:
    """One candlestick. ``closed`` is the exchange's own final flag; ``revision`` is 0 for the
    first closed version and one higher for each correction found by REST reconciliation."""

    TYPE: ClassVar[str] = "kline"

    exchange: str
    symbol: str
    interval: str
    open_time: int
    close_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trades: int
    taker_buy_volume: Decimal
    taker_buy_quote_volume: Decimal
    closed: bool
    source: Source = "ws"
    revision: int = 0


@frozen(slots=True)
class Trade:
    """One aggregated trade (Binance ``aggTrade``; the venue's trade where it has no aggregate)."""

    TYPE: ClassVar[str] = "trade"

    exchange: str
    symbol: str
    id: int
    price: Decimal
    qty: Decimal
    first_trade_id: int
    last_trade_id: int
    time: int
    buyer_is_maker: bool
    source: Source = "ws"


@frozen(slots=True)
class BookUpdate:
    """The top ``book_depth`` levels of a local order book that is in sync with the exchange."""

    TYPE: ClassVar[str] = "book"

    exchange: str
    symbol: str
    last_update_id: int
    time: int
    bids: tuple[BookLevel, ...]
    asks: tuple[BookLevel, ...]


@frozen(slots=True)
class MarkPrice:
    """Mark price, index price and funding of a perpetual contract."""

    TYPE: ClassVar[str] = "mark_price"

    exchange: str
    symbol: str
    mark_price: Decimal
    index_price: Decimal
    funding_rate: Decimal
    next_funding_time: int
    time: int


@frozen(slots=True)
class BookTicker:
    """Best bid and ask, exactly as the exchange sends them."""

    TYPE: ClassVar[str] = "book_ticker"

    exchange: str
    symbol: str
    bid_price: Decimal
    bid_qty: Decimal
    ask_price: Decimal
    ask_qty: Decimal
    update_id: int
    time: int


@frozen(slots=True)
class StateChange:
    """A transition of one connection's state machine (see :mod:`trio_feed.core.state`)."""

    TYPE: ClassVar[str] = "state"

    connection: str
    state: str
    previous: str
    time: int
    streams: tuple[str, ...]
    retry: int


@frozen(slots=True)
class QualityChange:
    """A change of one symbol's data-quality score, in [0, 1], with the reason."""

    TYPE: ClassVar[str] = "quality"

    symbol: str
    score: float
    reason: str
    time: int


@frozen(slots=True)
class Reconcile:
    """A REST reconciliation found the live data different from the exchange's record.

    ``mismatches`` names each field that differed, with both values
    (``"close: 100.1 != 100.2"``, ours first); ``action`` says what the feed did about it
    (``"revised"``: the REST version went out right after this event as the kline's next
    revision, which also carries the ``exchange``).
    """

    TYPE: ClassVar[str] = "reconcile"

    symbol: str
    interval: str
    open_time: int
    mismatches: tuple[str, ...]
    action: str


@frozen(slots=True)
class DepthDiff:
    """One parsed order-book diff (or snapshot) message, before sequencing.

    The id fields are venue-neutral: ``first_update_id``/``final_update_id`` span the updates
    in the message and ``prev_update_id`` is the final id of the previous message where the
    venue gives it (Binance USD-M ``pu``, OKX ``prevSeqId``); ``None`` where it does not
    (Binance spot, whose rule is ``U == previous u + 1``). ``snapshot`` is true for a full
    picture (Bybit/OKX snapshots, Binance partial depth) rather than a diff.
    """

    TYPE: ClassVar[str] = "depth_diff"

    exchange: str
    symbol: str
    first_update_id: int
    final_update_id: int
    prev_update_id: int | None
    time: int
    bids: tuple[BookLevel, ...]
    asks: tuple[BookLevel, ...]
    snapshot: bool = False
    checksum: int | None = None


#: Events that come from the market (as opposed to the feed's own state/quality/reconcile).
MarketEvent = Kline | Trade | BookUpdate | MarkPrice | BookTicker | DepthDiff

#: Everything `Feed.events()` can yield.
Event = (
    Kline | Trade | BookUpdate | MarkPrice | BookTicker | StateChange | QualityChange | Reconcile
)
