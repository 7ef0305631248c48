"""One venue's klines and trades between the parser and the consumers (pure).

`VenueData` owns the sequencers (:mod:`trio_feed.core.sequence`), the caches
(:mod:`trio_feed.core.caches`) and the klines built from trades
(:mod:`trio_feed.core.trade_klines`) of one venue. The shell hands it every parsed batch
(`process`), every REST page of a fill (`apply_kline_page`, `apply_trade_page`), every REST
kline of a reconciliation check (`reconcile`) and a periodic exchange-time watermark (`tick`);
it appends what may go out, in order, to a list the shell publishes, and returns the gaps the
shell must fetch. It never awaits and never reads a clock.

Restart: `ResumePoint` values (read from the store) anchor each key where the last run
stopped, so the first live item of a key reveals exactly what the restart missed.

Subscriptions change while running: `VenueData.reconfigure` takes the new `DataKeys`. Keys
in both the old and the new set keep their sequencers untouched; new keys start fresh, as at
a first start without a store; removed keys are forgotten entirely (sequencer, builders,
what they held and their cache entries), so a later re-subscribe starts clean. Late input
for a removed key (a frame in flight when it was unsubscribed, a fill page still on the
wire) is dropped, never published unsequenced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal

from attrs import evolve, field, frozen

from ..events import DepthDiff, Kline, Reconcile, Trade
from .books import VenueBooks
from .caches import KlineCache, TradeCache
from .intervals import next_open
from .sequence import KlineGap, KlineSequencer, TradeGap, TradeSequencer
from .trade_klines import TradeKlineBuilder

__all__ = ["BookGap", "DataKeys", "Gap", "ResumePoint", "VenueData", "kline_mismatches"]

Gap = KlineGap | TradeGap


@frozen(slots=True)
class BookGap:
    """A symbol's order book is out of sync (at start, after a sequence break, after its
    connection was lost): the shell fetches a snapshot for it."""

    symbol: str
    reason: str


# Concrete converters (mypy's attrs plugin types the constructor from them). Each keeps the
# first of duplicates, in order: a key named twice (two channels needing one trade stream)
# is tracked once.
def _kline_keys(items: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple(dict.fromkeys(items))


def _names(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _name_set(items: Iterable[str]) -> frozenset[str]:
    return frozenset(items)


def _built_map(built: Mapping[str, Iterable[str]]) -> Mapping[str, tuple[str, ...]]:
    # A symbol without intervals builds nothing: left out, so it compares as absent.
    out = {symbol: _names(intervals) for symbol, intervals in built.items()}
    return {symbol: intervals for symbol, intervals in out.items() if intervals}


@frozen(slots=True)
class DataKeys:
    """What one venue's keeper tracks, derived from its (symbols x channels).

    Every symbol with built intervals or published trades must be among ``trade_symbols``
    (their klines and events come from its trade stream); ValueError otherwise. Duplicates
    are dropped, the first kept.
    """

    #: The streamed kline keys, as their events name them (``BTCUSDT_PERPETUAL`` for
    #: continuous klines).
    kline_keys: tuple[tuple[str, str], ...] = field(converter=_kline_keys)
    #: Per symbol, the intervals built from its trades.
    built: Mapping[str, tuple[str, ...]] = field(converter=_built_map, hash=False)
    #: Symbols whose trade stream is subscribed (for publishing, for building, or both).
    trade_symbols: tuple[str, ...] = field(converter=_names)
    #: Symbols whose trades go out as events (the others only feed builders and the cache).
    published_trades: frozenset[str] = field(converter=_name_set)

    def __attrs_post_init__(self) -> None:
        missing = (set(self.built) | self.published_trades) - set(self.trade_symbols)
        if missing:
            raise ValueError(f"symbols {sorted(missing)} need their trade stream")


@frozen(slots=True)
class ResumePoint:
    """Where a previous run stopped: per (symbol, interval) the last closed kline it emitted,
    per symbol the last trade id."""

    klines: Mapping[tuple[str, str], Kline]
    trade_ids: Mapping[str, int]


def kline_mismatches(
    ours: Kline, theirs: Kline, *, price_tolerance: float, volume_tolerance: float
) -> tuple[str, ...]:
    """The fields in which ``ours`` differs from the exchange's record ``theirs`` by more than
    the relative tolerances (close, high, low by price; volume by volume), as
    ``"close: ours != theirs"`` strings."""
    out: list[str] = []
    price_tol = Decimal(repr(price_tolerance))
    volume_tol = Decimal(repr(volume_tolerance))
    for name, tol in (
        ("close", price_tol),
        ("high", price_tol),
        ("low", price_tol),
        ("volume", volume_tol),
    ):
        a: Decimal = getattr(ours, name)
        b: Decimal = getattr(theirs, name)
        if a == b:
            continue
        scale = max(abs(a), abs(b))
        if abs(a - b) > tol * scale:
            out.append(f"{name}: {a} != {b}")
    return tuple(out)


class VenueData:
    """Sequencers, caches and trade-built klines of one venue.

    Args:
      exchange: the venue's name (the ``exchange`` field of its events).
      kline_keys: the (symbol, interval) keys of streamed klines, as their events name them.
      built: per symbol, the intervals built from its trades.
      trade_symbols: symbols whose trades are streamed (for publishing or for building).
      published_trades: symbols whose trades go out as events (the others only feed builders
        and the trade cache).
      resume: where the previous run stopped, if a store says so.

    `from_keys` takes the same keys as one `DataKeys`; `reconfigure` changes them later.
    """

    def __init__(
        self,
        exchange: str,
        *,
        kline_keys: Iterable[tuple[str, str]],
        built: Mapping[str, Sequence[str]],
        trade_symbols: Iterable[str],
        published_trades: Iterable[str],
        kline_max_size: int = 500,
        trade_max_size: int = 1000,
        trade_window_ms: int = 60_000,
        resume: ResumePoint | None = None,
        trade_ids_consecutive: bool = True,
    ) -> None:
        self.exchange = exchange
        #: False: the venue's trade ids skip, trades pass through without gap detection.
        self.trade_ids_consecutive = trade_ids_consecutive
        keys = DataKeys(kline_keys, built, trade_symbols, published_trades)
        self._keys = keys
        self.klines = KlineCache(kline_max_size)
        self.trades = TradeCache(trade_max_size, trade_window_ms)
        resume = resume or ResumePoint({}, {})
        self.kline_seqs: dict[tuple[str, str], KlineSequencer] = {}
        for key in keys.kline_keys:
            last = resume.klines.get(key)
            anchor = None
            if last is not None:
                anchor = next_open(last.open_time, last.interval)
                self.klines.update(last)
            self.kline_seqs[key] = KlineSequencer(*key, next_open_time=anchor)
        self.builders: dict[str, list[TradeKlineBuilder]] = {}
        build_from: dict[str, int] = {}
        for symbol, intervals in keys.built.items():
            builders = []
            for interval in intervals:
                last = resume.klines.get((symbol, interval))
                if last is None:
                    builders.append(TradeKlineBuilder(exchange, symbol, interval))
                    continue
                start = next_open(last.open_time, interval)
                builders.append(
                    TradeKlineBuilder(
                        exchange, symbol, interval, next_open_time=start, previous_close=last.close
                    )
                )
                self.klines.update(last)
                build_from[symbol] = min(build_from.get(symbol, start), start)
            self.builders[symbol] = builders
        self.published_trades = keys.published_trades
        #: Per symbol, the first trade id that goes out as an event: a restart that rebuilds
        #: klines from an earlier time replays older trades to the builders only.
        self._publish_from: dict[str, int] = {}
        self.trade_seqs: dict[str, TradeSequencer] = {}
        for symbol in keys.trade_symbols:
            stored = resume.trade_ids.get(symbol)
            if symbol in build_from:
                # Rebuild from the first unfinished bucket; publish only what is new.
                seq = TradeSequencer(
                    symbol, anchor_time=build_from[symbol], consecutive=trade_ids_consecutive
                )
                if stored is not None:
                    self._publish_from[symbol] = stored + 1
            else:
                seq = TradeSequencer(
                    symbol,
                    next_id=None if stored is None else stored + 1,
                    consecutive=trade_ids_consecutive,
                )
            self.trade_seqs[symbol] = seq
        self._emitted: list[Trade] = []
        #: Keys removed by `reconfigure` (and not added back): their late live items are
        #: dropped instead of passed on unsequenced.
        self._removed_klines: set[tuple[str, str]] = set()
        self._removed_trades: set[str] = set()
        # What the sequencers of removed keys had skipped, so the totals never go down.
        self._retired_kline_skips = 0
        self._retired_trade_skips = 0
        #: Order-book diffs received.
        self.depth_diffs = 0
        #: The venue's order books, when it keeps them (`trio_feed.core.books`); the shell
        #: sets it. Without, depth diffs are counted and dropped.
        self.books: VenueBooks | None = None
        #: REST reconciliation mismatches found, per symbol.
        self.mismatches: dict[str, int] = {}

    @classmethod
    def from_keys(
        cls,
        exchange: str,
        keys: DataKeys,
        *,
        kline_max_size: int = 500,
        trade_max_size: int = 1000,
        trade_window_ms: int = 60_000,
        resume: ResumePoint | None = None,
        trade_ids_consecutive: bool = True,
    ) -> VenueData:
        """A keeper tracking ``keys`` (see the class for the other arguments)."""
        return cls(
            exchange,
            kline_keys=keys.kline_keys,
            built=keys.built,
            trade_symbols=keys.trade_symbols,
            published_trades=keys.published_trades,
            kline_max_size=kline_max_size,
            trade_max_size=trade_max_size,
            trade_window_ms=trade_window_ms,
            resume=resume,
            trade_ids_consecutive=trade_ids_consecutive,
        )

    # ---- what is tracked ------------------------------------------------------------------

    @property
    def keys(self) -> DataKeys:
        """What this keeper tracks now."""
        return self._keys

    @property
    def klines_skipped(self) -> int:
        """Kline buckets given up over the keeper's life (removed keys' included)."""
        return self._retired_kline_skips + sum(q.skipped for q in self.kline_seqs.values())

    @property
    def trade_ids_skipped(self) -> int:
        """Trade ids given up over the keeper's life (removed symbols' included)."""
        return self._retired_trade_skips + sum(q.skipped for q in self.trade_seqs.values())

    def reconfigure(self, keys: DataKeys) -> None:
        """Track ``keys`` from now on.

        Keys in both the old and the new set are untouched: their sequencers and builders
        keep their state and what they hold, so nothing is lost or emitted twice. New kline
        keys and trade symbols get fresh sequencers without an anchor (their first live item
        starts them, as at a first start without a store); new built intervals get fresh
        builders, which start from the next trade their symbol's sequencer emits. Removed
        keys are forgotten: sequencers, builders, held items and cache entries, so that
        ``history()`` never stitches across the time a key was unsubscribed. Publishing of
        a kept symbol's trades starts or stops with its next trade.
        """
        old = self._keys
        if keys == old:
            return
        exchange = self.exchange
        # Kline keys. The dicts are rebuilt, not mutated: whoever iterates the old one
        # (across an await in the shell) is not disturbed.
        seqs: dict[tuple[str, str], KlineSequencer] = {}
        for key in keys.kline_keys:
            seq = self.kline_seqs.get(key)
            if seq is None:
                seq = KlineSequencer(*key)
                self._removed_klines.discard(key)
            seqs[key] = seq
        for key, seq in self.kline_seqs.items():
            if key not in seqs:
                self._retired_kline_skips += seq.skipped
                self.klines.discard(*key)
                self._removed_klines.add(key)
        self.kline_seqs = seqs
        # Built intervals, matched by interval so a kept one keeps its bucket.
        builders: dict[str, list[TradeKlineBuilder]] = {}
        for symbol, intervals in keys.built.items():
            kept = {b.interval: b for b in self.builders.get(symbol, ())}
            new_builders = builders[symbol] = []
            for interval in intervals:
                builder = kept.get(interval)
                if builder is None:
                    builder = TradeKlineBuilder(exchange, symbol, interval)
                new_builders.append(builder)
        for symbol, old_builders in self.builders.items():
            wanted = keys.built.get(symbol, ())
            for b in old_builders:
                if b.interval not in wanted:
                    self.klines.discard(symbol, b.interval)
        self.builders = builders
        # Trade symbols: kept while any channel needs the stream (DataKeys checks that).
        trade_seqs: dict[str, TradeSequencer] = {}
        for symbol in keys.trade_symbols:
            tseq = self.trade_seqs.get(symbol)
            if tseq is None:
                tseq = TradeSequencer(symbol, consecutive=self.trade_ids_consecutive)
                self._removed_trades.discard(symbol)
            trade_seqs[symbol] = tseq
        for symbol, tseq in self.trade_seqs.items():
            if symbol not in trade_seqs:
                self._retired_trade_skips += tseq.skipped
                self.trades.discard(symbol)
                self._publish_from.pop(symbol, None)
                self._removed_trades.add(symbol)
        self.trade_seqs = trade_seqs
        self.published_trades = keys.published_trades
        self._keys = keys

    # ---- live data (the per-frame path) ---------------------------------------------------

    def process(self, items: Iterable[object], out: list[object]) -> list[Gap | BookGap] | None:
        """Route one parsed batch: klines and trades through their sequencers, everything
        else straight to ``out``. Returns the gaps revealed, if any."""
        gaps: list[Gap | BookGap] | None = None
        kline_seqs = self.kline_seqs
        trade_seqs = self.trade_seqs
        for item in items:
            cls = item.__class__
            if cls is Kline:
                kline: Kline = item  # type: ignore[assignment]
                kseq = kline_seqs.get((kline.symbol, kline.interval))
                if kseq is None:
                    if (kline.symbol, kline.interval) not in self._removed_klines:
                        out.append(item)
                    continue
                n = len(out)
                gap: Gap | BookGap | None = kseq.on_kline(kline, out)  # type: ignore[arg-type]
                if len(out) > n:
                    self._cache_from(out, n)
            elif cls is Trade:
                trade: Trade = item  # type: ignore[assignment]
                tseq = trade_seqs.get(trade.symbol)
                if tseq is None:
                    if trade.symbol not in self._removed_trades:
                        out.append(item)
                    continue
                emitted = self._emitted  # reused: no list per trade on this path
                gap = tseq.on_trade(trade, emitted)
                if emitted:
                    self._emit_trades(trade.symbol, emitted, out)
                    emitted.clear()
            elif cls is DepthDiff:
                # Diffs become ``book`` events through the books; never passed on raw.
                self.depth_diffs += 1
                books = self.books
                if books is None:
                    continue
                reason = books.on_diff(item, out)  # type: ignore[arg-type]
                if reason is None:
                    continue
                gap = BookGap(item.symbol, reason)  # type: ignore[attr-defined]
            else:
                out.append(item)
                continue
            if gap is not None:
                if gaps is None:
                    gaps = []
                gaps.append(gap)
        return gaps

    def _emit_trades(self, symbol: str, trades: list[Trade], out: list[object]) -> None:
        cache_trade = self.trades.add
        builders = self.builders.get(symbol, ())
        publish = symbol in self.published_trades
        publish_from = self._publish_from.get(symbol)
        cache_kline = self.klines.update
        for t in trades:
            cache_trade(t)
            for builder in builders:
                for k in builder.add(t):
                    cache_kline(k)
                    out.append(k)
            if publish and (publish_from is None or t.id >= publish_from):
                out.append(t)

    # ---- REST fills ------------------------------------------------------------------------

    def apply_kline_page(
        self, key: tuple[str, str], klines: Sequence[Kline], *, complete: bool, out: list[object]
    ) -> None:
        """One REST page of a kline fill (ignored if ``key`` is no longer tracked)."""
        seq = self.kline_seqs.get(key)
        if seq is None:
            return
        n = len(out)
        seq.on_page(klines, out, complete=complete)  # type: ignore[arg-type]
        self._cache_from(out, n)

    def abandon_klines(self, key: tuple[str, str], out: list[object]) -> None:
        """Give a kline fill up (the exchange refuses it): release what was held (nothing
        if ``key`` is no longer tracked)."""
        seq = self.kline_seqs.get(key)
        if seq is None:
            return
        n = len(out)
        seq.abandon(out)  # type: ignore[arg-type]
        self._cache_from(out, n)

    def _cache_from(self, out: list[object], start: int) -> None:
        """Cache the klines a sequencer appended to ``out`` from index ``start`` on."""
        update = self.klines.update
        for i in range(start, len(out)):
            update(out[i])  # type: ignore[arg-type]

    def apply_trade_page(
        self, symbol: str, trades: Sequence[Trade], *, complete: bool, out: list[object]
    ) -> None:
        """One REST page of a trade fill (ignored if ``symbol`` is no longer tracked)."""
        seq = self.trade_seqs.get(symbol)
        if seq is None:
            return
        emitted: list[Trade] = []
        seq.on_page(trades, emitted, complete=complete)
        if emitted:
            self._emit_trades(symbol, emitted, out)

    def abandon_trades(self, symbol: str, out: list[object]) -> None:
        """Give a trade fill up: release what was held (nothing if ``symbol`` is no longer
        tracked)."""
        seq = self.trade_seqs.get(symbol)
        if seq is None:
            return
        emitted: list[Trade] = []
        seq.abandon(emitted)
        if emitted:
            self._emit_trades(symbol, emitted, out)

    def gap(self, key: tuple[str, str] | str) -> Gap | None:
        """What remains to fetch for a kline key or a trade symbol (None if it is not
        tracked, e.g. unsubscribed while its fill ran)."""
        seq = self.kline_seqs.get(key) if isinstance(key, tuple) else self.trade_seqs.get(key)
        return None if seq is None else seq.gap()

    # ---- reconnects and time ------------------------------------------------------------

    def after_reconnect(
        self,
        kline_keys: Iterable[tuple[str, str]],
        trade_symbols: Iterable[str],
        horizon: Callable[[str], int | None],
    ) -> list[Gap]:
        """A connection holding these keys is subscribed again: catch trades up from the last
        id, and tell each kline key which kline the exchange's clock says is open now
        (``horizon(interval)``, None when the clock is not known), so quiet keys fill too."""
        gaps: list[Gap] = []
        for key in kline_keys:
            seq = self.kline_seqs.get(key)
            if seq is None:
                continue
            open_time = horizon(key[1])
            if open_time is not None:
                gap = seq.on_horizon(open_time)
                if gap is not None:
                    gaps.append(gap)
        for symbol in trade_symbols:
            tseq = self.trade_seqs.get(symbol)
            if tseq is not None:
                tgap = tseq.catch_up()
                if tgap is not None:
                    gaps.append(tgap)
        return gaps

    def tick(self, watermark_ms: int, in_sync: Callable[[str], bool], out: list[object]) -> None:
        """Exchange time has reached ``watermark_ms`` with every trade before it delivered
        where ``in_sync(symbol)`` says the symbol's trade stream is connected: close quiet
        built buckets, and expire the trade cache."""
        for symbol, builders in self.builders.items():
            seq = self.trade_seqs.get(symbol)
            if seq is None or not seq.in_sync or not in_sync(symbol):
                continue
            for builder in builders:
                for k in builder.advance(watermark_ms):
                    self.klines.update(k)
                    out.append(k)
        self.trades.advance(watermark_ms)

    # ---- reconciliation ---------------------------------------------------------------------

    def reconcile(
        self,
        rest: Kline,
        *,
        price_tolerance: float,
        volume_tolerance: float,
        out: list[object],
    ) -> tuple[str, ...] | None:
        """Compare the exchange's record of a closed kline with the one we emitted. On a
        mismatch, append a `Reconcile` event and the REST kline as the next revision (also
        replacing it in the cache) and return the mismatches; None if there was nothing to
        compare (not emitted yet, or no longer cached), () if it agreed."""
        key = (rest.symbol, rest.interval)
        seq = self.kline_seqs.get(key)
        if not rest.closed or seq is None or seq.next_open_time is None:
            return None
        if rest.open_time >= seq.next_open_time:
            return None  # not emitted yet: the sequencer will emit the exchange's version
        ours = self.klines.get(rest.symbol, rest.interval, rest.open_time)
        if ours is None or not ours.closed:
            return None
        found = kline_mismatches(
            ours, rest, price_tolerance=price_tolerance, volume_tolerance=volume_tolerance
        )
        if not found:
            return found
        revised = evolve(rest, source="rest", revision=ours.revision + 1)
        self.klines.update(revised)
        self.mismatches[rest.symbol] = self.mismatches.get(rest.symbol, 0) + 1
        out.append(Reconcile(rest.symbol, rest.interval, rest.open_time, found, "revised"))
        out.append(revised)
        return found
