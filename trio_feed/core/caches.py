"""In-memory caches of recent klines and trades (pure: no clock, no I/O, no trio).

`KlineCache` keeps, per (symbol, interval), the last ``max_size`` klines of one venue keyed by
open time, so ``feed.history()`` can answer from memory and REST is asked only for the rest.
Klines do not always arrive in open-time order: a REST backfill of what was missed while
disconnected lands after the live stream has already cached the current open kline, and a
reconciliation re-sends an old closed kline with a higher revision. The cache therefore
inserts in order (O(log n) in a `SortedDict`) and decides between two versions of the same
kline by rules that never let stale data win (see `KlineCache.update`).

`TradeCache` keeps, per symbol, the last ``max_size`` aggregated trades that lie within
``window_ms`` of the newest exchange time seen. Trades arrive in id order, so a `deque`
(append right, expire left, both O(1)) is all it needs. Time is exchange time only: the
newest trade time, or what the feed passes to `TradeCache.advance`; never the local clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

# sortedcontainers ships no type information: without `sortedcontainers-stubs` installed the
# import is untyped (hence the ignore), with them it is typed (hence ``unused-ignore``). Every
# value taken out of the SortedDict is bound to an annotated name, so the code is checked
# the same either way.
from sortedcontainers import SortedDict  # type: ignore[import-untyped, unused-ignore]

from ..events import Kline, Trade

__all__ = ["KlineCache", "TradeCache"]


def _replaces(new: Kline, old: Kline) -> bool:
    """Whether ``new`` may replace ``old``, a cached kline with the same open time.

    Stale data must never win: a closed kline is final, so an open version of it (a late or
    replayed stream update) is refused; a reconciliation correction carries a higher
    revision, so a lower revision (an old REST answer arriving late) is refused. Anything
    else (the open kline moving on, its closed version, a same-revision re-send) replaces.
    """
    if old.closed and not new.closed:
        return False
    return new.revision >= old.revision


class KlineCache:
    """The last ``max_size`` klines of each (symbol, interval) of one venue, by open time.

    Updates cost O(log n); reads of the last ``limit`` klines cost O(limit) (plus the open
    klines skipped with ``closed_only``, normally at most one).
    """

    __slots__ = ("_series", "max_size")

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, not {max_size}")
        #: How many klines are kept per (symbol, interval).
        self.max_size = max_size
        # (symbol, interval) -> its klines by open time
        self._series: dict[tuple[str, str], SortedDict[int, Kline]] = {}

    def update(self, kline: Kline) -> None:
        """Cache ``kline``, replacing the cached kline with the same open time if allowed.

        A same-open-time kline is replaced unless that would be a step back: an open version
        never replaces a closed one, and a lower revision never replaces a higher one. A kline
        older than the cached ones (a backfill) is inserted in order; then the oldest are
        trimmed beyond ``max_size``, so an insert older than everything in a full cache is
        simply dropped.
        """
        key = (kline.symbol, kline.interval)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = SortedDict()
        old: Kline | None = series.get(kline.open_time)
        if old is not None:
            if _replaces(kline, old):
                series[kline.open_time] = kline
            return  # same size: nothing to trim
        series[kline.open_time] = kline
        if len(series) > self.max_size:
            series.popitem(0)

    def klines(
        self,
        symbol: str,
        interval: str,
        limit: int | None = None,
        *,
        closed_only: bool = False,
    ) -> list[Kline]:
        """The last ``limit`` cached klines (all if None), oldest first.

        With ``closed_only`` the open klines are left out and ``limit`` counts closed ones.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must not be negative, not {limit}")
        series = self._series.get((symbol, interval))
        if series is None or limit == 0:
            return []
        if not closed_only:
            start = 0 if limit is None else max(0, len(series) - limit)
            # Slicing the keys is O(log n + limit); each value lookup is a plain dict hit.
            keys: list[int] = series.keys()[start:]
            return [series[k] for k in keys]
        out: list[Kline] = []
        for kline in self._newest_first(series):
            if kline.closed:
                out.append(kline)
                if len(out) == limit:
                    break
        out.reverse()
        return out

    def last_closed(self, symbol: str, interval: str) -> Kline | None:
        """The newest closed kline cached for (symbol, interval), or None."""
        series = self._series.get((symbol, interval))
        if series is None:
            return None
        for kline in self._newest_first(series):
            if kline.closed:
                return kline
        return None

    def get(self, symbol: str, interval: str, open_time: int) -> Kline | None:
        """The cached kline opening at ``open_time``, or None."""
        series = self._series.get((symbol, interval))
        if series is None:
            return None
        kline: Kline | None = series.get(open_time)
        return kline

    def keys(self) -> list[tuple[str, str]]:
        """The (symbol, interval) pairs with at least one cached kline."""
        return list(self._series)

    def size(self, symbol: str, interval: str) -> int:
        """How many klines are cached for (symbol, interval)."""
        series = self._series.get((symbol, interval))
        return 0 if series is None else len(series)

    def discard(self, symbol: str, interval: str) -> None:
        """Forget (symbol, interval), e.g. after it was unsubscribed."""
        self._series.pop((symbol, interval), None)

    def __len__(self) -> int:
        """How many klines are cached in all."""
        return sum(len(series) for series in self._series.values())

    @staticmethod
    def _newest_first(series: SortedDict[int, Kline]) -> Iterator[Kline]:
        key: int
        for key in series.irange(reverse=True):
            kline: Kline = series[key]
            yield kline


class _TradeSeries:
    """One symbol's cached trades and what the cache must remember after they expire."""

    __slots__ = ("last_id", "newest", "trades")

    def __init__(self) -> None:
        self.trades: deque[Trade] = deque()
        # Kept apart from ``trades``: expiry may empty the deque, but an old id must still be
        # recognised as a duplicate and the window must not slide back.
        self.last_id = -1
        self.newest = -1  # the newest trade time seen


class TradeCache:
    """The last ``max_size`` trades of each symbol within ``window_ms`` of exchange time.

    The window ends at the symbol's *newest* time: the latest of its trade times and of the
    times given to `advance`. A quiet symbol's trades therefore expire as the exchange clock
    moves on, not only when a newer trade pushes them out. The window assumes trade times do
    not decrease with ids (true of aggregated trades): expiry stops at the first trade still
    inside it.
    """

    __slots__ = ("_now", "_series", "max_size", "window_ms")

    def __init__(self, max_size: int, window_ms: int) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, not {max_size}")
        if window_ms < 0:
            raise ValueError(f"window_ms must not be negative, not {window_ms}")
        #: How many trades are kept per symbol.
        self.max_size = max_size
        #: How far back from the newest exchange time trades are kept, in ms.
        self.window_ms = window_ms
        self._now = -1  # the latest time given to advance()
        self._series: dict[str, _TradeSeries] = {}

    def add(self, trade: Trade, *, ordered: bool = True) -> bool:
        """Cache ``trade``; returns False (and ignores it) if its id is not newer than the
        last one cached for its symbol (a duplicate, e.g. a REST backfill overlapping the
        stream). With ``ordered`` false (venues whose ids are not consecutive, already
        de-duplicated by the keeper) every trade is kept in arrival order."""
        series = self._series.get(trade.symbol)
        if series is None:
            series = self._series[trade.symbol] = _TradeSeries()
        elif ordered and trade.id <= series.last_id:
            return False
        series.last_id = max(series.last_id, trade.id) if ordered else trade.id
        if trade.time > series.newest:
            series.newest = trade.time
        trades = series.trades
        trades.append(trade)
        if len(trades) > self.max_size:
            trades.popleft()
        self._expire(series)
        return True

    def advance(self, now_ms: int) -> None:
        """Exchange time moved on to ``now_ms``: expire, for every symbol, the trades that
        fell out of the window. Earlier times than already seen change nothing."""
        if now_ms <= self._now:
            return
        self._now = now_ms
        for series in self._series.values():
            self._expire(series)

    def trades(self, symbol: str, seconds: float | None = None) -> list[Trade]:
        """The cached trades of ``symbol``, oldest first; with ``seconds``, only those at most
        that many seconds older than the symbol's newest time."""
        series = self._series.get(symbol)
        if series is None:
            return []
        if seconds is None:
            return list(series.trades)
        cutoff = max(series.newest, self._now) - seconds * 1000
        return [t for t in series.trades if t.time >= cutoff]

    def last_id(self, symbol: str) -> int | None:
        """The id of the last trade cached for ``symbol`` (even if it has since expired
        from the window), or None if none was."""
        series = self._series.get(symbol)
        return None if series is None else series.last_id

    def symbols(self) -> list[str]:
        """The symbols that have had a trade."""
        return list(self._series)

    def discard(self, symbol: str) -> None:
        """Forget ``symbol``, e.g. after it was unsubscribed."""
        self._series.pop(symbol, None)

    def _expire(self, series: _TradeSeries) -> None:
        cutoff = max(series.newest, self._now) - self.window_ms
        trades = series.trades
        while trades and trades[0].time < cutoff:
            trades.popleft()
