"""The market simulator's records: symbols, trades, klines, book steps, quotes, mark prices.

Small frozen attrs classes, one per thing the simulated exchange publishes, with prices and
quantities as `decimal.Decimal` carrying the symbol's tick or lot-step exponent (tick ``0.10``
prints as ``"60000.10"``, as Binance prints it), and times as exchange milliseconds. Also the
kline intervals USD-M futures streams and how their buckets align.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from attrs import frozen

__all__ = [
    "KLINE_INTERVALS",
    "AggTrade",
    "BestQuote",
    "BookSnapshot",
    "DepthDistortion",
    "DepthStep",
    "KlineBar",
    "MarkSnapshot",
    "MarketEvent",
    "StaleSnapshot",
    "SymbolSpec",
    "kline_open_time",
]

_MINUTE = 60_000
_DAY = 1_440 * _MINUTE

#: Every kline interval USD-M futures streams, with its length in milliseconds. ``1M`` (calendar
#: month) is left out: its buckets are not of fixed length.
KLINE_INTERVALS: Mapping[str, int] = {
    "1m": _MINUTE,
    "3m": 3 * _MINUTE,
    "5m": 5 * _MINUTE,
    "15m": 15 * _MINUTE,
    "30m": 30 * _MINUTE,
    "1h": 60 * _MINUTE,
    "2h": 120 * _MINUTE,
    "4h": 240 * _MINUTE,
    "6h": 360 * _MINUTE,
    "8h": 480 * _MINUTE,
    "12h": 720 * _MINUTE,
    "1d": _DAY,
    "3d": 3 * _DAY,
    "1w": 7 * _DAY,
}

# Weekly klines open on Monday 00:00 UTC; the epoch was a Thursday, so the weekly grid is
# shifted by four days. Every other interval is aligned to the epoch (for 3d this is an
# assumption: the research notes do not say where Binance anchors it).
_WEEK_ORIGIN = 4 * _DAY


def kline_open_time(time_ms: int, interval: str) -> int:
    """The open time of the ``interval`` kline that contains ``time_ms`` (exchange time)."""
    length = KLINE_INTERVALS[interval]
    origin = _WEEK_ORIGIN if interval == "1w" else 0
    return time_ms - (time_ms - origin) % length


@frozen(slots=True)
class SymbolSpec:
    """A simulated perpetual contract: its name, start price, tick size and lot step.

    ``start_price`` must be a multiple of ``tick_size``. The exponents of ``tick_size`` and
    ``step_size`` fix how prices and quantities are printed (``Decimal("0.10")`` → two decimals).
    """

    symbol: str
    start_price: Decimal
    tick_size: Decimal
    step_size: Decimal

    def __attrs_post_init__(self) -> None:
        if not self.symbol.isupper() or not self.symbol.isalnum():
            raise ValueError(f"symbol must be upper-case alphanumeric: {self.symbol!r}")
        if self.tick_size <= 0 or self.step_size <= 0:
            raise ValueError(f"{self.symbol}: tick_size and step_size must be positive")
        if self.start_price <= 0 or self.start_price % self.tick_size != 0:
            raise ValueError(f"{self.symbol}: start_price must be a positive multiple of tick_size")

    @classmethod
    def default(cls, symbol: str) -> SymbolSpec:
        """The built-in spec: BTCUSDT 60000.00 (tick 0.10), ETHUSDT 3000.00 (tick 0.01),
        anything else 100.000 (tick 0.001); lot step 0.001 for the first two, 0.1 otherwise."""
        if symbol == "BTCUSDT":
            return cls(symbol, Decimal("60000.00"), Decimal("0.10"), Decimal("0.001"))
        if symbol == "ETHUSDT":
            return cls(symbol, Decimal("3000.00"), Decimal("0.01"), Decimal("0.001"))
        return cls(symbol, Decimal("100.000"), Decimal("0.001"), Decimal("0.1"))


@frozen(slots=True)
class AggTrade:
    """One aggregated trade, as ``<symbol>@aggTrade`` and ``/fapi/v1/aggTrades`` give it.

    ``agg_id`` (``a``) increases by one per trade; ``first_trade_id``..``last_trade_id``
    (``f``, ``l``) are the individual fills it aggregates; ``time`` is ``T``;
    ``buyer_is_maker`` is ``m`` (true when the taker sold).
    """

    symbol: str
    agg_id: int
    price: Decimal
    qty: Decimal
    first_trade_id: int
    last_trade_id: int
    time: int
    buyer_is_maker: bool


@frozen(slots=True)
class KlineBar:
    """A kline of one symbol and interval, open (``closed`` false) or final.

    Field meanings follow the Binance kline payload: ``trades`` is ``n`` (individual fills),
    the taker-buy volumes ``V``/``Q`` count trades whose buyer was the taker, and
    ``first_trade_id``/``last_trade_id`` (``f``/``L``) are -1 for a bucket without trades, whose
    open, high, low and close all equal the previous close.
    """

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
    first_trade_id: int
    last_trade_id: int
    closed: bool


@frozen(slots=True)
class DepthStep:
    """A change of the order book covering update ids ``first_update_id``..``last_update_id``.

    ``first_update_id`` is ``U``, ``last_update_id`` is ``u`` and ``prev_update_id`` is ``pu``
    of a ``depthUpdate`` message; ``bids``/``asks`` hold absolute quantities (``0`` removes the
    level), each side sorted by ascending price. ``time`` is the transaction time ``T``.
    """

    symbol: str
    first_update_id: int
    last_update_id: int
    prev_update_id: int
    time: int
    bids: tuple[tuple[Decimal, Decimal], ...]
    asks: tuple[tuple[Decimal, Decimal], ...]


@frozen(slots=True)
class DepthDistortion:
    """A diff the fake sent with a wrong quantity (`FakeExchange.distort_depth`).

    The message on ``stream`` with ids ``first_update_id``..``last_update_id`` (``U``..``u``,
    both right) set the ``side`` (``"bids"`` or ``"asks"``) level at ``price`` to
    ``sent_qty`` instead of ``true_qty`` (``0``: the truth removed the level). ``time`` is
    the message's event time ``E``.
    """

    symbol: str
    stream: str
    first_update_id: int
    last_update_id: int
    time: int
    side: str
    price: Decimal
    true_qty: Decimal
    sent_qty: Decimal


@frozen(slots=True)
class StaleSnapshot:
    """A REST depth snapshot the fake answered from the past (`FakeExchange.stale_depth_snapshot`).

    At exchange time ``time`` the book was at ``true_update_id``; the answer carried the book
    as of ``last_update_id``, ``steps_behind`` book steps earlier.
    """

    symbol: str
    time: int
    last_update_id: int
    true_update_id: int
    steps_behind: int


@frozen(slots=True)
class BestQuote:
    """The best bid and ask after a book step that changed them (a ``bookTicker`` update)."""

    symbol: str
    update_id: int
    time: int
    bid_price: Decimal
    bid_qty: Decimal
    ask_price: Decimal
    ask_qty: Decimal


@frozen(slots=True)
class BookSnapshot:
    """An order book at ``last_update_id``: bids best (highest) first, asks best (lowest) first."""

    symbol: str
    last_update_id: int
    time: int
    bids: tuple[tuple[Decimal, Decimal], ...]
    asks: tuple[tuple[Decimal, Decimal], ...]


@frozen(slots=True)
class MarkSnapshot:
    """Mark price, index price, funding rate and next funding time at ``time``."""

    symbol: str
    time: int
    mark_price: Decimal
    index_price: Decimal
    estimated_settle_price: Decimal
    funding_rate: Decimal
    next_funding_time: int


#: What `FakeMarket.advance_to` reports: trades, atomic book steps, best-quote changes and
#: klines that have just closed.
MarketEvent = AggTrade | DepthStep | BestQuote | KlineBar
