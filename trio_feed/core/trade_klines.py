"""Klines built from aggregated trades, for intervals a venue does not stream (pure).

USD-M futures streams no ``1s`` and no ``7m`` klines; the contract still offers them, built
locally from the venue's aggregated trades with the guarantees of streamed klines (``source``
``"trades"``). `TradeKlineBuilder` does the bucketing for one symbol and interval: trades go in
in id order (the caller keeps the trade stream gap-free, backfilling from REST), closed klines
come out in open-time order with no gap.

The numbers follow Binance's own klines, so a kline built here equals the exchange's kline of
the same bucket: buckets are aligned by `bucket_open` on the trade's *exchange* time;
``trades`` counts individual fills (``last_trade_id - first_trade_id + 1`` per aggregate);
the taker-buy volumes sum the aggregates whose buyer was the taker (``buyer_is_maker`` false);
a bucket without trades is a zero-volume kline whose open, high, low and close are the
previous close. Sums are exact: `decimal.Decimal` arithmetic runs in an unbounded-precision
context, not the caller's (28 digits by default would round a long quote-volume sum).

A bucket closes when a trade of a later bucket arrives, or when the caller says, with
`TradeKlineBuilder.advance`, that exchange time has passed its end with the trade stream in
sync (a quiet market must still get its klines).
"""

from __future__ import annotations

from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal

from ..events import Kline, Trade
from .intervals import bucket_open, interval_ms, next_open, open_times

__all__ = ["TradeKlineBuilder"]

# Precision large enough that adding and multiplying finite decimals never rounds. The bound
# methods are looked up once: they run for every trade.
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
_add = _EXACT.add
_mul = _EXACT.multiply
_ZERO = Decimal(0)


class TradeKlineBuilder:
    """Builds one symbol's closed ``interval`` klines from its aggregated trades.

    Args:
      exchange, symbol, interval: copied into the klines (``interval`` as in ``1s``, ``7m``,
        ``1h``, ``1w``, ``1M``; ValueError if it is not one).
      next_open_time: an anchor for a restart: the open time of the next kline to emit
        (a bucket boundary). Buckets from it to the first trade's bucket are emitted empty.
      previous_close: the close of the last kline emitted before ``next_open_time``, the
        price of those empty buckets. Without it they cannot be priced: the builder then
        starts at the first trade's bucket and counts the buckets it left out in
        `skipped_buckets`. Only meaningful with ``next_open_time``.

    Without an anchor nothing is emitted before the first trade: the first kline is the one of
    the first trade's bucket.

    A *late* trade, one whose exchange time lies before the bucket being built (the bucket it
    belongs to was already emitted: a time tie or jitter across a boundary, or a trade older
    than ``advance``'s watermark promised), is counted in `late_trades` and folded into the
    bucket being built, so the volume totals over all klines stay exact. A trade whose id is
    not greater than the last one seen is counted in `duplicates` and otherwise ignored.
    """

    __slots__ = (
        "_close",
        "_count",
        "_high",
        "_length",
        "_low",
        "_next_open",
        "_open",
        "_open_time",
        "_previous_close",
        "_quote",
        "_started",
        "_taker_quote",
        "_taker_volume",
        "_trades",
        "_volume",
        "check_ids",
        "duplicates",
        "exchange",
        "interval",
        "last_id",
        "late_trades",
        "skipped_buckets",
        "symbol",
    )

    # The bucket being built, as running sums (declared here: `_reset_sums` assigns them).
    _count: int  # aggregated trades
    _trades: int  # individual fills
    _open: Decimal
    _high: Decimal
    _low: Decimal
    _close: Decimal
    _volume: Decimal
    _quote: Decimal
    _taker_volume: Decimal
    _taker_quote: Decimal

    def __init__(
        self,
        exchange: str,
        symbol: str,
        interval: str,
        *,
        next_open_time: int | None = None,
        previous_close: Decimal | None = None,
    ) -> None:
        bucket_open(0, interval)  # ValueError for a bad interval, before anything else
        if next_open_time is not None and bucket_open(next_open_time, interval) != next_open_time:
            raise ValueError(f"next_open_time {next_open_time} is not a {interval} boundary")
        if previous_close is not None and next_open_time is None:
            raise ValueError("previous_close needs next_open_time (the bucket it precedes)")
        self.exchange = exchange
        self.symbol = symbol
        self.interval = interval
        #: The id of the last trade taken (None before the first).
        self.last_id: int | None = None
        #: Whether a trade whose id is not above `last_id` is a repeat to ignore; off for
        #: venues whose trade ids are not consecutive (the keeper de-duplicates those).
        self.check_ids = True
        #: Trades ignored because their id was not greater than `last_id`.
        self.duplicates = 0
        #: Trades whose bucket had already been emitted, folded into the bucket being built.
        self.late_trades = 0
        #: Buckets left out because they could not be priced (anchor without previous close).
        self.skipped_buckets = 0
        # Months have no fixed length; every other interval steps by a constant.
        self._length: int | None = None if interval.endswith("M") else interval_ms(interval)
        self._previous_close = previous_close
        self._started = False
        self._open_time = 0
        # While not started, -1 sends every trade down `_roll`, which starts the first bucket:
        # the hot path of `add` then needs a single comparison.
        self._next_open = -1
        self._reset_sums()
        if next_open_time is not None:
            self._start(next_open_time)

    # ------------------------------------------------------------------ public API

    @property
    def next_open_time(self) -> int | None:
        """The open time of the bucket being built, i.e. of the next kline to be emitted
        (None before the first trade of an unanchored builder). With `previous_close`, the
        anchor to restart from."""
        return self._open_time if self._started else None

    @property
    def previous_close(self) -> Decimal | None:
        """The close of the last kline emitted (or of the anchor), None if none is known."""
        return self._previous_close

    def add(self, trade: Trade) -> list[Kline]:
        """Take the next trade; return the klines it closes, in open-time order.

        A trade in a later bucket closes the bucket being built and every empty bucket
        between the two.
        """
        last = self.last_id
        if last is not None and trade.id <= last and self.check_ids:
            self.duplicates += 1
            return []
        self.last_id = trade.id
        time = trade.time
        if time >= self._next_open:
            out = self._roll(time)
        else:
            out = []
            if time < self._open_time:
                self.late_trades += 1
        # Running sums in plain attributes: no per-trade allocation but the Decimals.
        price = trade.price
        qty = trade.qty
        quote = _mul(price, qty)
        if self._count:
            if price > self._high:
                self._high = price
            elif price < self._low:
                self._low = price
        else:
            self._open = self._high = self._low = price
        self._close = price
        self._volume = _add(self._volume, qty)
        self._quote = _add(self._quote, quote)
        if not trade.buyer_is_maker:  # the buyer was the taker
            self._taker_volume = _add(self._taker_volume, qty)
            self._taker_quote = _add(self._taker_quote, quote)
        self._trades += trade.last_trade_id - trade.first_trade_id + 1
        self._count += 1
        return out

    def advance(self, watermark_ms: int) -> list[Kline]:
        """Every trade with exchange time before ``watermark_ms`` has been seen: close each
        bucket whose close time is before it, empty ones included (when a previous close is
        known to price them). Returns those klines in open-time order."""
        out: list[Kline] = []
        if self._started:
            self._close_through(watermark_ms, out)
        return out

    def current(self) -> Kline | None:
        """The bucket being built as an open kline (``closed`` false), for caches; None
        before the first trade (or while it cannot be priced)."""
        if not self._started:
            return None
        if self._count:
            return self._kline(closed=False)
        if self._previous_close is not None:
            return self._empty(self._previous_close, closed=False)
        return None

    # ------------------------------------------------------------------ internals

    def _roll(self, time: int) -> list[Kline]:
        """``time`` lies at or past the end of the bucket being built (or nothing started)."""
        if not self._started:
            self._start(bucket_open(time, self.interval))
            return []
        out: list[Kline] = []
        self._close_through(time, out)
        if self._next_open <= time:
            # Stopped at an unpriceable empty bucket (anchored without previous close, no
            # trade yet): start at this trade's bucket and count what was left out.
            first = bucket_open(time, self.interval)
            self.skipped_buckets += sum(
                1 for _ in open_times(self._open_time, first, self.interval)
            )
            self._start(first)
        return out

    def _close_through(self, limit: int, out: list[Kline]) -> None:
        """Close buckets while they end before ``limit`` (next open time <= ``limit``).

        Stops early at an empty bucket with no previous close to price it.
        """
        while self._next_open <= limit:
            if self._count:
                out.append(self._kline(closed=True))
                self._previous_close = self._close
            elif self._previous_close is not None:
                out.append(self._empty(self._previous_close, closed=True))
            else:
                return
            self._start(self._next_open)

    def _start(self, open_time: int) -> None:
        """Begin an empty bucket opening at ``open_time``."""
        self._started = True
        self._open_time = open_time
        length = self._length
        self._next_open = (
            open_time + length if length is not None else next_open(open_time, self.interval)
        )
        self._reset_sums()

    def _reset_sums(self) -> None:
        self._count = 0
        self._trades = 0
        self._open = _ZERO
        self._high = _ZERO
        self._low = _ZERO
        self._close = _ZERO
        self._volume = _ZERO
        self._quote = _ZERO
        self._taker_volume = _ZERO
        self._taker_quote = _ZERO

    def _kline(self, *, closed: bool) -> Kline:
        return Kline(
            exchange=self.exchange,
            symbol=self.symbol,
            interval=self.interval,
            open_time=self._open_time,
            close_time=self._next_open - 1,
            open=self._open,
            high=self._high,
            low=self._low,
            close=self._close,
            volume=self._volume,
            quote_volume=self._quote,
            trades=self._trades,
            taker_buy_volume=self._taker_volume,
            taker_buy_quote_volume=self._taker_quote,
            closed=closed,
            source="trades",
            revision=0,
        )

    def _empty(self, price: Decimal, *, closed: bool) -> Kline:
        return Kline(
            exchange=self.exchange,
            symbol=self.symbol,
            interval=self.interval,
            open_time=self._open_time,
            close_time=self._next_open - 1,
            open=price,
            high=price,
            low=price,
            close=price,
            volume=_ZERO,
            quote_volume=_ZERO,
            trades=0,
            taker_buy_volume=_ZERO,
            taker_buy_quote_volume=_ZERO,
            closed=closed,
            source="trades",
            revision=0,
        )
