"""Gap-free, duplicate-free output of closed klines and aggregated trades (pure).

One `KlineSequencer` per (symbol, interval) and one `TradeSequencer` per symbol stand
between the parsers and the consumers. They emit what is next in sequence at once, hold what
arrives ahead of a gap, and say which range the shell must fetch from REST (a `KlineGap` or
`TradeGap`). The shell pages through the gap, hands each page back, and the sequencer emits
the missing items first, then what it held, so every key comes out in order with no gap and
no duplicate. Neither class awaits or reads a clock: every time is the exchange's own (open
times, trade ids, and a *horizon*, the open time of a kline known to be still open).

Klines
    The sequence of a key is anchored by the first kline seen (or by the store at a
    restart). A kline, open or closed, that opens at ``t`` proves every kline before ``t``
    closed, so any expected closed kline before ``t`` that has not come is a gap: a
    reconnect is noticed by the first update after it, not by the next close. Open
    (``closed`` false) updates pass straight through; only closed klines are sequenced.
    A REST page answers for the buckets it covers: buckets it lacks are buckets the exchange
    itself has no kline for (a trading halt), skipped and counted, never waited on forever.

Trades
    Aggregated trade ids are consecutive, so a gap is simply an id that is not the next one.
    After a reconnect the shell calls `TradeSequencer.catch_up`: an open-ended fill from
    the next id, so an illiquid symbol's missed trades come back without waiting for its next
    live trade. With no id to start from (klines built from trades, resumed from a store that
    has no trades), a fill can start from an exchange time instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from attrs import frozen

from ..events import Kline, Trade
from .intervals import next_open

__all__ = ["KlineGap", "KlineSequencer", "TradeGap", "TradeSequencer"]

#: Closed klines (or trades) held behind one gap before the gap is given up as unfillable.
#: A day of one-minute klines is 1440; this is a week of REST outage for them.
DEFAULT_MAX_PENDING = 10_000


@frozen(slots=True)
class KlineGap:
    """Closed klines to fetch: open times from ``start`` up to but excluding ``end``."""

    symbol: str
    interval: str
    start: int
    end: int


@frozen(slots=True)
class TradeGap:
    """Trades to fetch: ids from ``from_id`` up to but excluding ``until_id`` (None: up to
    the present). Without a ``from_id``, start at exchange time ``start_time``."""

    symbol: str
    from_id: int | None
    until_id: int | None
    start_time: int | None = None


class KlineSequencer:
    """Closed klines of one (symbol, interval), in open-time order, no gap, no duplicate."""

    __slots__ = (
        "_fill_end",
        "_filling",
        "_open_seen",
        "backfilled",
        "duplicates",
        "horizon",
        "interval",
        "max_pending",
        "next_open_time",
        "pending",
        "skipped",
        "stale",
        "symbol",
    )

    def __init__(
        self,
        symbol: str,
        interval: str,
        *,
        next_open_time: int | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.symbol = symbol
        self.interval = interval
        #: Open time of the next closed kline to emit (None until anchored).
        self.next_open_time = next_open_time
        #: Open time of the newest kline seen live: every kline before it is closed.
        self.horizon: int | None = None
        #: Closed klines held behind a gap, by open time.
        self.pending: dict[int, Kline] = {}
        self.max_pending = max_pending
        self._filling = False
        self._fill_end = 0
        self._open_seen: int | None = None
        #: Closed klines dropped as already emitted.
        self.duplicates = 0
        #: Open-kline updates dropped because their kline had already closed.
        self.stale = 0
        #: Closed klines emitted from REST.
        self.backfilled = 0
        #: Buckets given up: the exchange had no kline for them, or a gap was abandoned.
        self.skipped = 0

    @property
    def filling(self) -> bool:
        """Whether a REST fill is in progress (closed klines are held meanwhile)."""
        return self._filling

    def gap(self) -> KlineGap | None:
        """What remains to fetch while filling, else None."""
        if not self._filling or self.next_open_time is None:
            return None
        return KlineGap(self.symbol, self.interval, self.next_open_time, self._fill_end)

    # ---- live input ----------------------------------------------------------------------

    def on_kline(self, kline: Kline, out: list[Kline]) -> KlineGap | None:
        """A kline from the stream. Appends what may go out now to ``out``; returns the gap
        to fetch if this kline revealed one (the shell starts a fill for it)."""
        t = kline.open_time
        nxt = self.next_open_time
        if nxt is None:
            # First sight anchors the sequence: output starts with this kline.
            self.horizon = t
            if kline.closed:
                self.next_open_time = next_open(t, self.interval)
            else:
                self.next_open_time = t
            out.append(kline)
            return None
        horizon = self.horizon
        if horizon is None or t > horizon:
            self.horizon = horizon = t
        if not kline.closed:
            if t < nxt:
                self.stale += 1
                return None
            out.append(kline)
            if t > nxt and not self._filling:
                return self._start_fill()
            return None
        if t < nxt or t in self.pending:
            self.duplicates += 1
            return None
        if t == nxt and not self._filling:
            out.append(kline)
            self.next_open_time = next_open(t, self.interval)
            return None
        self.pending[t] = kline
        if len(self.pending) > self.max_pending:
            self._abandon(out)
            return self._start_fill() if self._needs_fill() else None
        if not self._filling:
            return self._start_fill()
        return None

    def on_horizon(self, open_time: int) -> KlineGap | None:
        """The exchange's clock says the kline opening at ``open_time`` has begun (used after
        a reconnect, when a quiet stream may not speak for a while). Returns a gap to fill,
        if that reveals one."""
        if self.next_open_time is None:
            return None
        if self.horizon is None or open_time > self.horizon:
            self.horizon = open_time
        if not self._filling and self._needs_fill():
            return self._start_fill()
        return None

    # ---- REST input ----------------------------------------------------------------------

    def on_page(self, klines: Iterable[Kline], out: list[Kline], *, complete: bool) -> None:
        """One REST page of the current gap, oldest first. ``complete`` says the page reached
        the end of what the exchange has (fewer rows than the limit). Appends what may go out
        to ``out``; when the gap is done, releases what was held (`gap` then says whether a
        further fill is needed)."""
        if not self._filling or self.next_open_time is None:
            return
        end = self._fill_end
        nxt = self.next_open_time
        interval = self.interval
        for k in klines:
            t = k.open_time
            if t >= end:
                break
            if not k.closed:
                # Still open at the exchange: the gap must not be closed past it.
                if self._open_seen is None or t < self._open_seen:
                    self._open_seen = t
                break
            if t < nxt:
                continue
            if t > nxt:
                # The exchange has no kline for the buckets in between.
                self.skipped += _buckets_between(nxt, t, interval)
            out.append(k)
            self.backfilled += 1
            nxt = next_open(t, interval)
        self.next_open_time = nxt
        if complete or nxt >= end or self._open_seen is not None:
            self._finish(out)

    def abandon(self, out: list[Kline]) -> None:
        """Give the current gap up (the exchange refuses to serve it): release what was held,
        counting the buckets skipped."""
        if self._filling:
            self._abandon(out)

    # ---- internals -----------------------------------------------------------------------

    def _needs_fill(self) -> bool:
        nxt = self.next_open_time
        if nxt is None:
            return False
        if self.pending:
            return True
        return self.horizon is not None and self.horizon > nxt

    def _start_fill(self) -> KlineGap | None:
        assert self.next_open_time is not None
        end = min(self.pending) if self.pending else self.horizon
        if end is None or end <= self.next_open_time:
            return None
        self._filling = True
        self._fill_end = end
        self._open_seen = None
        return KlineGap(self.symbol, self.interval, self.next_open_time, end)

    def _finish(self, out: list[Kline]) -> None:
        nxt = self.next_open_time
        assert nxt is not None
        limit = self._fill_end
        if self._open_seen is not None:
            # The exchange says this kline is still open: whatever suggested otherwise (a
            # clock estimate) was early. Wait for the stream (or a later fill) to close it.
            limit = min(limit, self._open_seen)
            if self.horizon is not None and self.horizon > self._open_seen:
                self.horizon = self._open_seen
        if nxt < limit:
            # The exchange answered for this range and has nothing more in it.
            self.skipped += _buckets_between(nxt, limit, self.interval)
            nxt = limit
        self._filling = False
        self._open_seen = None
        self.next_open_time = self._release(nxt, out)
        if self._needs_fill():
            self._start_fill()

    def _abandon(self, out: list[Kline]) -> None:
        self._filling = False
        self._open_seen = None
        nxt = self.next_open_time
        assert nxt is not None
        if self.pending:
            first = min(self.pending)
            self.skipped += _buckets_between(nxt, first, self.interval)
            nxt = first
        elif self.horizon is not None and self.horizon > nxt:
            self.skipped += _buckets_between(nxt, self.horizon, self.interval)
            nxt = self.horizon
        self.next_open_time = self._release(nxt, out)

    def _release(self, nxt: int, out: list[Kline]) -> int:
        """Emit held klines that are next in sequence; drop held ones already covered."""
        pending = self.pending
        if not pending:
            return nxt
        for t in sorted(pending):
            if t < nxt:
                del pending[t]
                self.duplicates += 1
            elif t == nxt:
                out.append(pending.pop(t))
                nxt = next_open(t, self.interval)
            else:
                break
        return nxt


def _buckets_between(start: int, end: int, interval: str) -> int:
    n = 0
    t = start
    while t < end:
        n += 1
        t = next_open(t, interval)
    return n


class TradeSequencer:
    """Aggregated trades of one symbol, ids increasing, no gap, no duplicate."""

    __slots__ = (
        "_filling",
        "anchor_time",
        "backfilled",
        "consecutive",
        "duplicates",
        "max_pending",
        "next_id",
        "pending",
        "skipped",
        "symbol",
    )

    def __init__(
        self,
        symbol: str,
        *,
        next_id: int | None = None,
        anchor_time: int | None = None,
        max_pending: int = 100 * DEFAULT_MAX_PENDING,
        consecutive: bool = True,
    ) -> None:
        self.symbol = symbol
        #: False for venues whose trade ids increase but skip (OKX aggregates fills under the
        #: last fill's id): trades then pass through in id order, duplicates dropped, with no
        #: gap detection and no REST fill.
        self.consecutive = consecutive
        if not consecutive:
            anchor_time = None
        #: Id of the next trade to emit (None until anchored).
        self.next_id = next_id
        #: Without ``next_id``: the exchange time from which trades are wanted (a restart of
        #: klines built from trades). None: the first live trade anchors the sequence.
        self.anchor_time = anchor_time if next_id is None else None
        #: Live trades held behind a gap, in id order.
        self.pending: list[Trade] = []
        self.max_pending = max_pending
        self._filling = False
        self.duplicates = 0
        self.backfilled = 0
        #: Ids given up (a gap the exchange refused to serve).
        self.skipped = 0

    @property
    def filling(self) -> bool:
        return self._filling

    @property
    def in_sync(self) -> bool:
        """Anchored with nothing held and nothing being fetched: every trade up to the last
        one emitted has gone out."""
        return self.next_id is not None and not self._filling and not self.pending

    def gap(self) -> TradeGap | None:
        """What remains to fetch while filling, else None."""
        if not self._filling:
            return None
        until = self.pending[0].id if self.pending else None
        if self.next_id is None:
            return TradeGap(self.symbol, None, until, self.anchor_time)
        return TradeGap(self.symbol, self.next_id, until)

    def on_trade(self, trade: Trade, out: list[Trade]) -> TradeGap | None:
        """A trade from the stream. Appends what may go out now to ``out``; returns a gap to
        fetch if this trade revealed one."""
        nxt = self.next_id
        i = trade.id
        if nxt is None:
            if self.anchor_time is None:
                out.append(trade)
                self.next_id = i + 1
                return None
            self.pending.append(trade)
            if not self._filling:
                self._filling = True
                return self.gap()
            return None
        if i == nxt and not self._filling and not self.pending:
            out.append(trade)
            self.next_id = i + 1
            return None
        if not self.consecutive:
            if i < nxt:
                self.duplicates += 1
            else:
                out.append(trade)
                self.next_id = i + 1
            return None
        if i < nxt or (self.pending and i <= self.pending[-1].id):
            self.duplicates += 1
            return None
        self.pending.append(trade)
        if len(self.pending) > self.max_pending:
            self._abandon(out)
            return None
        if not self._filling:
            self._filling = True
            return self.gap()
        return None

    def catch_up(self) -> TradeGap | None:
        """Fetch whatever came after the last emitted trade (after a reconnect or at a
        restart). Returns the gap to fill, or None if a fill is already running or there is
        no anchor to start from."""
        if self._filling or not self.consecutive:
            return None
        if self.next_id is None and self.anchor_time is None:
            return None
        self._filling = True
        return self.gap()

    def on_page(self, trades: Iterable[Trade], out: list[Trade], *, complete: bool) -> None:
        """One REST page of the current gap, in id order; ``complete`` says it reached the
        present (fewer rows than the limit). When the gap is done, releases what was held."""
        if not self._filling:
            return
        until = self.pending[0].id if self.pending else None
        nxt = self.next_id
        anchor = self.anchor_time
        for t in trades:
            i = t.id
            if nxt is None:
                if anchor is not None and t.time < anchor:
                    continue
                nxt = i
            if until is not None and i >= until:
                break
            if i < nxt:
                continue
            if i > nxt:
                self.skipped += i - nxt
            out.append(t)
            self.backfilled += 1
            nxt = i + 1
        self.next_id = nxt
        if nxt is not None:
            self.anchor_time = None
        reached = until is not None and nxt is not None and nxt >= until
        if complete or reached:
            self._finish(out)

    def advance_anchor(self, start_time: int) -> None:
        """A time-anchored fill found no trade before ``start_time``: look from there on."""
        if self.next_id is None and self.anchor_time is not None:
            self.anchor_time = max(self.anchor_time, start_time)

    def abandon(self, out: list[Trade]) -> None:
        """Give the current gap up (e.g. the exchange refuses trades older than 48 h)."""
        if self._filling:
            self._abandon(out)

    def _finish(self, out: list[Trade]) -> None:
        self._filling = False
        if self.pending and (self.next_id is None or self.pending[0].id > self.next_id):
            # REST had nothing between: the exchange cannot serve these ids.
            if self.next_id is not None:
                self.skipped += self.pending[0].id - self.next_id
            self.next_id = self.pending[0].id
            self.anchor_time = None
        self._release(out)

    def _abandon(self, out: list[Trade]) -> None:
        self._filling = False
        if self.pending:
            first = self.pending[0].id
            if self.next_id is not None and first > self.next_id:
                self.skipped += first - self.next_id
            if self.next_id is None or first > self.next_id:
                self.next_id = first
        self.anchor_time = None
        self._release(out)

    def _release(self, out: list[Trade]) -> None:
        nxt = self.next_id
        pending = self.pending
        if not pending or nxt is None:
            return
        k = 0
        for t in pending:
            i = t.id
            if i < nxt:
                self.duplicates += 1
            elif i == nxt:
                out.append(t)
                nxt += 1
            else:
                break
            k += 1
        del pending[:k]
        self.next_id = nxt
        if pending:
            # A hole inside the held trades (cannot happen with in-order live ids, but the
            # rule stays exact): fetch it.
            self._filling = True
