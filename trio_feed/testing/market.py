"""A deterministic, sans-IO Binance USD-M market: trades, klines, an order book, mark prices.

`FakeMarket` is the "truth" behind `trio_feed.testing.FakeExchange`. It owns no task and never
reads a clock: the caller moves it forward with ``advance_to(now_ms)`` (exchange milliseconds)
and gets back what happened in between, in time order. Everything is drawn from
``random.Random`` generators seeded from ``seed``, one per symbol and purpose, and every event
happens at a time fixed by the seed alone (trades at Poisson arrival times, book steps on a
fixed grid of exchange time), so the history does not depend on how often ``advance_to`` is
called: advancing in one call or in a thousand gives the same trades, klines and book.
Symbols can be added while the market runs (`FakeMarket.add_symbol`, a new listing); a
symbol's history then depends only on the seed, its name and the time it was listed.

Internally prices are integers counted in ticks and quantities integers counted in lot steps,
so sums are exact; the public records carry `decimal.Decimal` values with the symbol's tick or
step exponent, which is how Binance prints them (tick ``0.10`` gives ``"60000.10"``).
"""

from __future__ import annotations

import heapq
import math
import random
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from decimal import Decimal

from attrs import define, field

from ._book import BookSim, Step
from .records import (
    KLINE_INTERVALS,
    AggTrade,
    BestQuote,
    BookSnapshot,
    DepthStep,
    KlineBar,
    MarketEvent,
    MarkSnapshot,
    SymbolSpec,
    kline_open_time,
)

__all__ = ["FakeMarket"]

_MINUTE = 60_000
_FUNDING_PERIOD = 8 * 60 * _MINUTE
_EIGHT_DECIMALS = Decimal("1E-8")
_NEVER = 2**62


@define(slots=True)
class _Bucket:
    """A kline being built, in integer ticks and steps.

    The ``1m`` bucket takes every trade; a longer interval's bucket takes each closed minute
    (see `_merge`), so a trade costs one bucket update rather than fourteen.
    """

    open_time: int
    open: int
    high: int
    low: int
    close: int
    volume: int = 0
    quote: int = 0  # sum of price_ticks * qty_steps
    trades: int = 0
    taker_volume: int = 0
    taker_quote: int = 0
    first_id: int = -1
    last_id: int = -1

    def copy(self) -> _Bucket:
        return _Bucket(
            self.open_time,
            self.open,
            self.high,
            self.low,
            self.close,
            self.volume,
            self.quote,
            self.trades,
            self.taker_volume,
            self.taker_quote,
            self.first_id,
            self.last_id,
        )

    def merge(self, other: _Bucket) -> None:
        """Add ``other``, a later part of this bucket's interval."""
        if other.trades == 0:
            return  # an empty part changes nothing, not even the close
        if self.trades == 0:
            self.open, self.high, self.low = other.open, other.high, other.low
            self.first_id = other.first_id
        else:
            self.high = max(self.high, other.high)
            self.low = min(self.low, other.low)
        self.close = other.close
        self.volume += other.volume
        self.quote += other.quote
        self.trades += other.trades
        self.taker_volume += other.taker_volume
        self.taker_quote += other.taker_quote
        self.last_id = other.last_id


@define(slots=True)
class _SymbolState:
    spec: SymbolSpec
    index: int
    rng_trades: random.Random
    rng_book: random.Random
    rate: float
    price: int  # last trade price in ticks
    next_trade_at: float  # exchange ms, fractional
    first_agg_id: int
    next_trade_id: int
    buckets: dict[str, _Bucket]
    closed: dict[str, list[KlineBar]]
    closed_open_times: dict[str, list[int]]
    book: BookSim
    next_step_at: int
    activity: float = 1.0  # chance that a book step changes the book
    best: tuple[int, int, int, int] = (0, 0, 0, 0)
    # Trade history in parallel arrays (about 48 bytes a trade) rather than objects.
    t_time: array[int] = field(factory=lambda: array("q"))
    t_price: array[int] = field(factory=lambda: array("q"))
    t_qty: array[int] = field(factory=lambda: array("q"))
    t_first: array[int] = field(factory=lambda: array("q"))
    t_count: array[int] = field(factory=lambda: array("b"))
    t_maker: array[int] = field(factory=lambda: array("b"))


class FakeMarket:
    """A seeded simulation of a Binance USD-M market, driven by exchange time.

    Args:
      symbols: symbol names (built-in specs, see `SymbolSpec.default`) or `SymbolSpec` objects.
      seed: the seed of every random draw; the same seed gives the same history.
      start_time_ms: exchange time at which the market opens (no trade happens before it).
      trade_rate: mean aggregated trades per second, for all symbols or per symbol.
      depth_step_ms: the book changes every ``depth_step_ms`` of exchange time, on a grid
        aligned to the epoch.
      book_levels: levels kept on each side of the book.
      depth_history: how many book steps per symbol are kept for `depth_steps`,
        `depth_diff` and `book_at` (older ones are forgotten so that a 24 h run stays small;
        a step is a few hundred bytes).
      book_activity: the chance, for all symbols or per symbol (absent ones: 1.0), that a
        book step changes the book. Below 1 a symbol's book is quiet: at the other steps it
        stays as it is, uses no update id and the diff streams have nothing to send, as a
        Binance diff stream says nothing for 100 ms without changes. Meanwhile the book may
        lag the last trade price (it is never crossed). Quiet books make runs with hundreds
        of depth streams cheap (each diff frame costs wall time) with the update-id rules
        unchanged.
      book_events: also report every book step and best-quote change from `advance_to`.
        By default the book is computed lazily, when something looks at it: a book step costs
        about 10 µs, which adds up (a day of 100 ms steps is about 9 s per symbol), and a run
        that never looks at a book should not pay for it. The history is the same either way.

    Trades, klines (all of `KLINE_INTERVALS`) and their closed history are kept for the whole
    run; a trade costs about 48 bytes, so a day at 2 trades/s is about 8 MB per symbol.
    """

    def __init__(
        self,
        symbols: Iterable[str | SymbolSpec] = ("BTCUSDT", "ETHUSDT"),
        *,
        seed: int = 0,
        start_time_ms: int = 1_767_225_600_000,
        trade_rate: float | Mapping[str, float] = 2.0,
        depth_step_ms: int = 100,
        book_levels: int = 200,
        depth_history: int = 10_000,
        book_activity: float | Mapping[str, float] = 1.0,
        book_events: bool = False,
    ) -> None:
        specs = [s if isinstance(s, SymbolSpec) else SymbolSpec.default(s) for s in symbols]
        if not specs:
            raise ValueError("a market needs at least one symbol")
        if len({s.symbol for s in specs}) != len(specs):
            raise ValueError("duplicate symbol")
        if depth_step_ms <= 0 or book_levels <= 0 or depth_history < 2:
            raise ValueError("depth_step_ms and book_levels must be positive, depth_history >= 2")
        self.seed = seed
        self.start_time_ms = start_time_ms
        self.depth_step_ms = depth_step_ms
        self.book_levels = book_levels
        self.book_events = book_events
        self._now = start_time_ms
        self._trade_rate = trade_rate
        self._depth_history = depth_history
        self._book_activity = book_activity
        activities = (
            book_activity.values() if isinstance(book_activity, Mapping) else [book_activity]
        )
        if not all(0.0 <= a <= 1.0 for a in activities):
            raise ValueError("book_activity must be between 0 and 1")
        self._states: dict[str, _SymbolState] = {}
        self._listed_at: dict[str, int] = {}
        for spec in specs:
            self._add(spec, self._rate_of(spec.symbol, None))

    # ------------------------------------------------------------------ set-up

    def _rate_of(self, symbol: str, rate: float | None) -> float:
        if rate is not None:
            return float(rate)
        if isinstance(self._trade_rate, Mapping):
            return float(self._trade_rate.get(symbol, 0.0))
        return float(self._trade_rate)

    def _add(self, spec: SymbolSpec, rate: float) -> None:
        index = len(self._states)
        self._states[spec.symbol] = self._new_state(spec, index, rate, self._now)
        self._listed_at[spec.symbol] = self._now

    def add_symbol(self, symbol: str | SymbolSpec, trade_rate: float | None = None) -> SymbolSpec:
        """List a new symbol: it trades from `now_ms` on, like the others.

        Its first klines are the buckets containing `now_ms` (the first of each interval is
        partial, holding only what traded after the listing), its book starts fresh around
        ``start_price``, and its random draws are seeded from the market's seed and the
        symbol's name alone, so its history is the same whenever other symbols were listed.
        ``trade_rate`` None takes the rate the market's ``trade_rate`` gives this symbol.
        Returns its `SymbolSpec`; ValueError if the symbol is already in the market.
        """
        spec = symbol if isinstance(symbol, SymbolSpec) else SymbolSpec.default(symbol)
        if spec.symbol in self._states:
            raise ValueError(f"{spec.symbol} is already listed")
        self._add(spec, self._rate_of(spec.symbol, trade_rate))
        return spec

    def listed_at(self, symbol: str) -> int:
        """Exchange ms at which ``symbol`` was listed (``start_time_ms`` for the first ones)."""
        return self._listed_at[symbol]

    def _new_state(self, spec: SymbolSpec, index: int, rate: float, start: int) -> _SymbolState:
        # One generator per symbol and purpose, seeded from a string (hashed with SHA-512 by
        # `random`, so independent of PYTHONHASHSEED): adding a symbol or reading mark prices
        # never shifts another symbol's trades.
        rng_trades = random.Random(f"{self.seed}:{spec.symbol}:trades")
        rng_book = random.Random(f"{self.seed}:{spec.symbol}:book")
        price = int(spec.start_price / spec.tick_size)
        buckets = {
            name: _Bucket(kline_open_time(start, name), price, price, price, price)
            for name in KLINE_INTERVALS
        }
        first_agg_id = rng_trades.randrange(10_000_000, 90_000_000)
        next_trade_id = rng_trades.randrange(100_000_000, 900_000_000)
        next_trade_at = start + self._gap_ms(rng_trades, rate)
        base_id = rng_book.randrange(1_000_000_000, 9_000_000_000)
        state = _SymbolState(
            spec=spec,
            index=index,
            rng_trades=rng_trades,
            rng_book=rng_book,
            rate=rate,
            price=price,
            next_trade_at=next_trade_at,
            first_agg_id=first_agg_id,
            next_trade_id=next_trade_id,
            buckets=buckets,
            closed={name: [] for name in KLINE_INTERVALS},
            closed_open_times={name: [] for name in KLINE_INTERVALS},
            book=BookSim(
                price,
                start,
                levels=self.book_levels,
                history=self._depth_history,
                base_id=base_id,
                rng=rng_book,
            ),
            next_step_at=(start // self.depth_step_ms + 1) * self.depth_step_ms,
        )
        if isinstance(self._book_activity, Mapping):
            state.activity = float(self._book_activity.get(spec.symbol, 1.0))
        else:
            state.activity = float(self._book_activity)
        state.best = state.book.best()
        return state

    @staticmethod
    def _gap_ms(rng: random.Random, rate: float) -> float:
        if rate <= 0:
            return math.inf
        return rng.expovariate(rate) * 1000.0

    # ------------------------------------------------------------------ the clock

    @property
    def now_ms(self) -> int:
        """The exchange time the market has been advanced to."""
        return self._now

    @property
    def symbols(self) -> tuple[str, ...]:
        """The simulated symbols, in the order given."""
        return tuple(self._states)

    def spec(self, symbol: str) -> SymbolSpec:
        """The `SymbolSpec` of ``symbol`` (KeyError if unknown)."""
        return self._states[symbol].spec

    def advance_to(self, now_ms: int) -> list[MarketEvent]:
        """Run the market up to and including exchange time ``now_ms``.

        Returns what happened since the previous call, in time order: each `AggTrade` and a
        closed `KlineBar` for every kline bucket that ended (including buckets without trades);
        with ``book_events=True`` also each atomic `DepthStep` and a `BestQuote` when a step
        changed the best bid or ask. At equal times kline closes come first, then trades, then
        book steps, and symbols in the order given. Moving backwards is a no-op.
        """
        events: list[MarketEvent] = []
        if now_ms <= self._now:
            return events
        states = list(self._states.values())
        eager = self.book_events
        # A heap of each symbol's next kline close, trade and (eager) book step: the same
        # (time, kind, symbol index) order as scanning every symbol for the earliest, at
        # log(n) rather than n per event, which matters with hundreds of symbols. An event
        # only moves the time of its own kind of its own symbol.
        heap: list[tuple[int, int, int]] = []
        for st in states:
            heap.append((st.buckets["1m"].open_time + _MINUTE, 0, st.index))
            heap.append((self._trade_key(st), 1, st.index))
            if eager:
                heap.append((st.next_step_at, 2, st.index))
        heapq.heapify(heap)
        while heap[0][0] <= now_ms:
            time, kind, index = heap[0]
            st = states[index]
            if kind == 0:
                self._close_buckets(st, time, events)
                key = st.buckets["1m"].open_time + _MINUTE
            elif kind == 1:
                self._trade(st, time, events)
                key = self._trade_key(st)
            else:
                self._book_step(st, time, st.price, events)
                key = st.next_step_at
            heapq.heapreplace(heap, (key, kind, index))
        self._now = now_ms
        return events

    @staticmethod
    def _trade_key(st: _SymbolState) -> int:
        return math.floor(st.next_trade_at) if st.next_trade_at != math.inf else _NEVER

    def _sync_book(self, st: _SymbolState) -> None:
        """Catch the book of ``st`` up with `now_ms` (a no-op when book steps are eager).

        A lazy step uses the price of the last trade at or before its time, exactly the price
        an eager step would have seen, so both modes give the same book.
        """
        while st.next_step_at <= self._now:
            i = bisect_right(st.t_time, st.next_step_at) - 1
            price = st.t_price[i] if i >= 0 else int(st.spec.start_price / st.spec.tick_size)
            self._book_step(st, st.next_step_at, price, None)

    # ------------------------------------------------------------------ trades and klines

    def _trade(self, st: _SymbolState, time: int, events: list[MarketEvent]) -> None:
        rng = st.rng_trades
        move = rng.choice((-2, -1, -1, 0, 0, 0, 1, 1, 2))
        st.price = max(st.price + move, 100)
        if move > 0:
            maker = False  # the buyer lifted the ask: the buyer is the taker
        elif move < 0:
            maker = True
        else:
            maker = rng.random() < 0.5
        qty = rng.randint(1, 200)
        count = rng.randint(1, 3)
        first = st.next_trade_id
        st.next_trade_id += count
        index = len(st.t_time)
        st.t_time.append(time)
        st.t_price.append(st.price)
        st.t_qty.append(qty)
        st.t_first.append(first)
        st.t_count.append(count)
        st.t_maker.append(1 if maker else 0)
        st.next_trade_at += self._gap_ms(rng, st.rate)
        bucket = st.buckets["1m"]
        if bucket.trades == 0:
            bucket.open = bucket.high = bucket.low = st.price
            bucket.first_id = first
        elif st.price > bucket.high:
            bucket.high = st.price
        elif st.price < bucket.low:
            bucket.low = st.price
        bucket.close = st.price
        bucket.volume += qty
        bucket.quote += st.price * qty
        bucket.trades += count
        if not maker:
            bucket.taker_volume += qty
            bucket.taker_quote += st.price * qty
        bucket.last_id = first + count - 1
        events.append(self._trade_record(st, index))

    def _trade_record(self, st: _SymbolState, i: int) -> AggTrade:
        spec = st.spec
        first = st.t_first[i]
        return AggTrade(
            symbol=spec.symbol,
            agg_id=st.first_agg_id + i,
            price=Decimal(st.t_price[i]) * spec.tick_size,
            qty=Decimal(st.t_qty[i]) * spec.step_size,
            first_trade_id=first,
            last_trade_id=first + st.t_count[i] - 1,
            time=st.t_time[i],
            buyer_is_maker=bool(st.t_maker[i]),
        )

    def _close_buckets(self, st: _SymbolState, time: int, events: list[MarketEvent]) -> None:
        # Called at each minute boundary, in order: close the minute, fold it into every
        # longer interval, then close those that end at this boundary too.
        minute = st.buckets["1m"]
        for name, length in KLINE_INTERVALS.items():
            bucket = st.buckets[name]
            if name != "1m":
                bucket.merge(minute)
            if bucket.open_time + length <= time:
                bar = self._bar(st, name, bucket, closed=True)
                st.closed[name].append(bar)
                st.closed_open_times[name].append(bucket.open_time)
                events.append(bar)
                c = bucket.close
                st.buckets[name] = _Bucket(bucket.open_time + length, c, c, c, c)

    def _open_bucket(self, st: _SymbolState, interval: str) -> _Bucket:
        if interval == "1m":
            return st.buckets["1m"]
        bucket = st.buckets[interval].copy()
        bucket.merge(st.buckets["1m"])
        return bucket

    def _bar(self, st: _SymbolState, interval: str, b: _Bucket, *, closed: bool) -> KlineBar:
        tick, step = st.spec.tick_size, st.spec.step_size
        quote_unit = tick * step
        return KlineBar(
            symbol=st.spec.symbol,
            interval=interval,
            open_time=b.open_time,
            close_time=b.open_time + KLINE_INTERVALS[interval] - 1,
            open=Decimal(b.open) * tick,
            high=Decimal(b.high) * tick,
            low=Decimal(b.low) * tick,
            close=Decimal(b.close) * tick,
            volume=Decimal(b.volume) * step,
            quote_volume=Decimal(b.quote) * quote_unit,
            trades=b.trades,
            taker_buy_volume=Decimal(b.taker_volume) * step,
            taker_buy_quote_volume=Decimal(b.taker_quote) * quote_unit,
            first_trade_id=b.first_id,
            last_trade_id=b.last_id,
            closed=closed,
        )

    # ------------------------------------------------------------------ the order book

    def _book_step(
        self, st: _SymbolState, time: int, price: int, events: list[MarketEvent] | None
    ) -> None:
        st.next_step_at = time + self.depth_step_ms
        # A quiet book (book_activity < 1) skips most steps; a busy one draws nothing here,
        # so its history does not depend on the option.
        if st.activity < 1.0 and st.rng_book.random() >= st.activity:
            return
        prev = st.book.last_update_id
        step = st.book.step(time, price, st.rng_book)
        if events is None:
            return
        events.append(self._step_record(st, step, prev))
        best = st.book.best()
        if best != st.best:
            st.best = best
            events.append(self._best_record(st, best, step.last_id, time))

    def _best_record(
        self, st: _SymbolState, best: tuple[int, int, int, int], update_id: int, time: int
    ) -> BestQuote:
        tick, step = st.spec.tick_size, st.spec.step_size
        bid, bid_qty, ask, ask_qty = best
        return BestQuote(
            symbol=st.spec.symbol,
            update_id=update_id,
            time=time,
            bid_price=Decimal(bid) * tick,
            bid_qty=Decimal(bid_qty) * step,
            ask_price=Decimal(ask) * tick,
            ask_qty=Decimal(ask_qty) * step,
        )

    def _levels(
        self, st: _SymbolState, changes: dict[int, int]
    ) -> tuple[tuple[Decimal, Decimal], ...]:
        tick, step = st.spec.tick_size, st.spec.step_size
        return tuple((Decimal(p) * tick, Decimal(changes[p]) * step) for p in sorted(changes))

    def _step_record(self, st: _SymbolState, step: Step, prev: int) -> DepthStep:
        return DepthStep(
            symbol=st.spec.symbol,
            first_update_id=step.first_id,
            last_update_id=step.last_id,
            prev_update_id=prev,
            time=step.time,
            bids=self._levels(st, step.bids),
            asks=self._levels(st, step.asks),
        )

    # ------------------------------------------------------------------ truth for tests and REST

    def last_price(self, symbol: str) -> Decimal:
        """The price of the last trade (the start price before any trade)."""
        st = self._states[symbol]
        return Decimal(st.price) * st.spec.tick_size

    def next_trade_time(self, symbol: str) -> int | None:
        """Exchange ms of the next trade of ``symbol`` after `now_ms` (None: no more trades)."""
        at = self._states[symbol].next_trade_at
        return None if at == math.inf else math.floor(at)

    def next_book_step_time(self) -> int:
        """Exchange ms of the next book step after `now_ms` (steps lie on a fixed grid)."""
        return (self._now // self.depth_step_ms + 1) * self.depth_step_ms

    def next_kline_close_time(self) -> int:
        """Exchange ms at which the next kline closes (the next minute boundary after `now_ms`)."""
        return kline_open_time(self._now, "1m") + _MINUTE

    def trade_count(self, symbol: str) -> int:
        """How many aggregated trades ``symbol`` has had."""
        return len(self._states[symbol].t_time)

    def first_agg_id(self, symbol: str) -> int:
        """The agg id of the first trade of ``symbol`` (ids then increase by one)."""
        return self._states[symbol].first_agg_id

    def trades(
        self,
        symbol: str,
        *,
        from_id: int | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int | None = None,
    ) -> list[AggTrade]:
        """Aggregated trades, oldest first, with ``/fapi/v1/aggTrades`` selection rules.

        ``from_id`` starts at that agg id; ``start_time``/``end_time`` (both inclusive) filter
        by trade time. With ``from_id`` or ``start_time`` the first ``limit`` matching trades
        are returned, otherwise the last ``limit`` (``None``: all).
        """
        st = self._states[symbol]
        lo, hi = 0, len(st.t_time)
        if from_id is not None:
            lo = max(lo, min(hi, from_id - st.first_agg_id))
        if start_time is not None:
            lo = max(lo, bisect_left(st.t_time, start_time))
        if end_time is not None:
            hi = min(hi, bisect_right(st.t_time, end_time))
        if limit is not None and hi - lo > limit:
            if from_id is not None or start_time is not None:
                hi = lo + limit
            else:
                lo = hi - limit
        return [self._trade_record(st, i) for i in range(lo, hi)]

    def current_kline(self, symbol: str, interval: str) -> KlineBar:
        """The open kline of ``symbol`` and ``interval`` (``closed`` is false)."""
        st = self._states[symbol]
        return self._bar(st, interval, self._open_bucket(st, interval), closed=False)

    def klines(
        self,
        symbol: str,
        interval: str,
        *,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int | None = None,
        include_open: bool = False,
    ) -> list[KlineBar]:
        """Klines oldest first, selected by open time like ``/fapi/v1/klines``.

        Only closed klines unless ``include_open`` (then the still-open kline comes last).
        ``start_time``/``end_time`` bound the open time (inclusive); with ``start_time`` the
        first ``limit`` are returned, otherwise the last ``limit``.
        """
        st = self._states[symbol]
        closed = st.closed[interval]
        times = st.closed_open_times[interval]
        if include_open:
            times = [*times, st.buckets[interval].open_time]
        lo, hi = 0, len(times)
        if start_time is not None:
            lo = bisect_left(times, start_time)
        if end_time is not None:
            hi = bisect_right(times, end_time)
        if limit is not None and hi - lo > limit:
            if start_time is not None:
                hi = lo + limit
            else:
                lo = hi - limit
        result = closed[lo : min(hi, len(closed))]
        if hi > len(closed) and lo <= len(closed):
            result.append(self._bar(st, interval, self._open_bucket(st, interval), closed=False))
        return result

    def book(self, symbol: str, limit: int | None = None) -> BookSnapshot:
        """The current order book (after every step up to `now_ms`), ``limit`` levels a side."""
        st = self._states[symbol]
        self._sync_book(st)
        tick, step = st.spec.tick_size, st.spec.step_size
        book = st.book
        bids = book.bids.prices[::-1][:limit]
        asks = book.asks.prices[:limit]
        return BookSnapshot(
            symbol=symbol,
            last_update_id=book.last_update_id,
            time=book.time,
            bids=tuple((Decimal(p) * tick, Decimal(book.bids.qty[p]) * step) for p in bids),
            asks=tuple((Decimal(p) * tick, Decimal(book.asks.qty[p]) * step) for p in asks),
        )

    def book_at(self, symbol: str, update_id: int, limit: int | None = None) -> BookSnapshot:
        """The order book as it was right after update ``update_id``, ``limit`` levels a side.

        ``update_id`` must be a retained step boundary: the ``u`` of any diff the streams
        published (or `last_update_id`) within the last ``depth_history`` steps, so that a
        test can compare each ``book`` event a client emits with the exchange's book at the
        event's ``last_update_id``. LookupError otherwise. The snapshot's ``time`` is the time
        of that step. Rebuilt by replaying the retained steps, forward from the previous
        call's book when the ids asked for go up (cheap when walking a stream's ids).
        """
        st = self._states[symbol]
        self._sync_book(st)
        if update_id == st.book.last_update_id:
            return self.book(symbol, limit)
        try:
            bids_qty, asks_qty, time = st.book.book_at(update_id)
        except LookupError as exc:
            raise LookupError(f"{symbol}: {exc}") from None
        tick, step = st.spec.tick_size, st.spec.step_size
        bids = sorted(bids_qty, reverse=True)[:limit]
        asks = sorted(asks_qty)[:limit]
        return BookSnapshot(
            symbol=symbol,
            last_update_id=update_id,
            time=time,
            bids=tuple((Decimal(p) * tick, Decimal(bids_qty[p]) * step) for p in bids),
            asks=tuple((Decimal(p) * tick, Decimal(asks_qty[p]) * step) for p in asks),
        )

    def update_id_steps_ago(self, symbol: str, steps: int) -> int:
        """The last update id of the book ``steps`` book steps ago (0: `last_update_id`; the
        oldest retained boundary if fewer steps are retained); `book_at` accepts it."""
        st = self._states[symbol]
        self._sync_book(st)
        return st.book.boundary_before(steps)

    def last_update_id(self, symbol: str) -> int:
        """The book's last update id (``lastUpdateId`` of a snapshot taken now)."""
        st = self._states[symbol]
        self._sync_book(st)
        return st.book.last_update_id

    def published_update_id(self, symbol: str) -> int:
        """The last update id the diff streams may publish: all but the newest book step.

        The streams run one book step behind the book, so a REST snapshot taken at any moment
        is at or ahead of everything already streamed. A client that subscribed a moment ago
        therefore always receives a diff with ``U <= lastUpdateId <= u`` (the USD-M sync rule)
        instead of finding that the diff covering its snapshot went out before it subscribed.
        """
        st = self._states[symbol]
        self._sync_book(st)
        return st.book.published_id()

    def depth_steps(self, symbol: str) -> list[DepthStep]:
        """The retained atomic book steps of ``symbol``, oldest first."""
        st = self._states[symbol]
        self._sync_book(st)
        out: list[DepthStep] = []
        for step in st.book.steps:
            out.append(self._step_record(st, step, step.first_id - 1))
        return out

    def depth_diff(self, symbol: str, after_id: int, up_to_id: int) -> DepthStep | None:
        """The merged change from update ``after_id + 1`` to ``up_to_id`` (None if empty).

        Later changes of a price override earlier ones, as a diff-stream message aggregates
        them. ``after_id`` and ``up_to_id`` must be step boundaries still retained.
        """
        if up_to_id <= after_id:
            return None
        st = self._states[symbol]
        self._sync_book(st)
        try:
            bids, asks, time = st.book.merged(after_id, up_to_id)
        except LookupError as exc:
            raise LookupError(f"{symbol}: {exc}") from None
        return DepthStep(
            symbol=symbol,
            first_update_id=after_id + 1,
            last_update_id=up_to_id,
            prev_update_id=after_id,
            time=time,
            bids=self._levels(st, bids),
            asks=self._levels(st, asks),
        )

    def best_quote(self, symbol: str) -> BestQuote:
        """The current best bid and ask."""
        st = self._states[symbol]
        self._sync_book(st)
        return self._best_record(st, st.book.best(), st.book.last_update_id, st.book.time)

    def mark_price(self, symbol: str, now_ms: int | None = None) -> MarkSnapshot:
        """Mark price, index, funding rate and next funding time of ``symbol`` at ``now_ms``.

        Derived from the last trade price plus noise drawn from a generator seeded by
        (seed, symbol, second), so reading it never disturbs the rest of the market.
        """
        now = self._now if now_ms is None else now_ms
        st = self._states[symbol]
        rng = random.Random(f"{self.seed}:{symbol}:mark:{now // 1000}")
        tick = st.spec.tick_size
        mark = (Decimal(st.price + rng.randint(-3, 3)) * tick).quantize(_EIGHT_DECIMALS)
        index = (Decimal(st.price + rng.randint(-3, 3)) * tick).quantize(_EIGHT_DECIMALS)
        funding = (Decimal(100 + rng.randint(-50, 50)) * Decimal("1E-6")).quantize(_EIGHT_DECIMALS)
        return MarkSnapshot(
            symbol=symbol,
            time=now,
            mark_price=mark,
            index_price=index,
            estimated_settle_price=index,
            funding_rate=funding,
            next_funding_time=(now // _FUNDING_PERIOD + 1) * _FUNDING_PERIOD,
        )
