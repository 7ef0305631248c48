"""The Trio shell of "nothing lost": REST fills, kline reconciliation, the build ticker.

`VenueIntegrity` wraps one venue's pure `~trio_feed.core.keeper.VenueData`. Connection
readers hand it every parsed batch (`VenueIntegrity.deliver`, synchronous: it never blocks a
reader); the gaps the sequencers report become fill tasks in the reconciliation nursery, one
per key at most, each paging through REST until its gap is closed. Inside the venue's REST
weight budget (the `RestClient` waits for it), so a reconnect of hundreds of keys queues its
fills instead of earning a 429.

Faults never lose data: a transient failure (5xx, timeout, rate limit, an unparsable body)
retries the same page after a capped, jittered backoff while the sequencer keeps holding live
items; only an error the venue will repeat forever (a 4xx such as "data older than 48 h")
gives the gap up, which is logged, counted in ``status()`` and releases what was held.

Subscriptions change while running (`VenueIntegrity.reconfigure`): the reconciliation loop
walks the kline keys tracked at the start of each round, the build ticker starts with the
first built interval, and a fill of a key that was removed ends at its next step. A fill
page that arrives after its key was removed (or removed and added again, with a fresh
sequencer) is dropped: it answered a gap that no longer exists.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable

import trio
from attrs import define

from ..config import ReconciliationConfig
from ..core.backoff import Backoff, BackoffPolicy
from ..core.clock import MarketClock
from ..core.intervals import bucket_open, interval_ms
from ..core.keeper import BookGap, DataKeys, Gap, VenueData
from ..core.sequence import KlineGap, KlineSequencer, TradeGap, TradeSequencer
from ..errors import MalformedFrame
from ..events import Event, StateChange
from ..venues.base import ParsedItem, StreamSpec, VenueAdapter
from .rest import RestClient, RestError, RestRateLimited

__all__ = ["IntegrityStats", "VenueIntegrity"]

log = logging.getLogger("trio_feed.integrity")

#: How far behind the exchange clock estimate a kline counts as surely closed, ms. The clock
#: offset is known to within half a round trip; this margin covers that with room to spare.
CLOSE_MARGIN_MS = 5_000
#: How long after a bucket's end, in exchange time, a built kline waits for late trades, ms.
BUILD_GRACE_MS = 2_000
#: Bounds of how often built klines of quiet buckets are closed, seconds: half the shortest
#: built interval, within these.
MIN_TICK = 0.25
MAX_TICK = 5.0
#: Retry pacing of a failed REST page (transient errors only).
FILL_RETRY = BackoffPolicy(base_delay=1.0, max_delay=60.0, jitter_ratio=0.2, max_retries=0)
#: A time-anchored trade fill asks for at most this much exchange time per request (the
#: venue's limit for a time-ranged aggTrades request is under an hour).
TRADE_TIME_WINDOW_MS = 3_600_000 - 1


@define
class IntegrityStats:
    """Counters behind ``status()`` for one venue's fills and reconciliation."""

    fills_started: int = 0
    klines_backfilled: int = 0
    trades_backfilled: int = 0
    fill_errors: int = 0
    gaps_abandoned: int = 0
    last_fill_error: str | None = None
    reconcile_checks: int = 0
    reconcile_mismatches: int = 0


MismatchReporter = Callable[[str, str, str, int, tuple[str, ...]], None]


class VenueIntegrity:
    """Fills, reconciliation and the build ticker of one venue."""

    def __init__(
        self,
        *,
        adapter: VenueAdapter,
        rest: RestClient,
        clock: MarketClock,
        data: VenueData,
        publish: Callable[[list[Event]], None],
        reconciliation: ReconciliationConfig,
        rng: random.Random,
        on_mismatch: MismatchReporter | None = None,
    ) -> None:
        self.adapter = adapter
        self.name = adapter.name
        self.rest = rest
        self.clock = clock
        self.data = data
        self._publish = publish
        self.reconciliation = reconciliation
        self._rng = rng
        self._on_mismatch = on_mismatch
        self.stats = IntegrityStats()
        self._nursery: trio.Nursery | None = None
        self._waiting: list[Gap] = []
        self._filling: set[tuple[str, str] | str] = set()
        #: Per symbol, the function telling whether its trade stream's connection is up.
        self._trade_stream_up: dict[str, Callable[[], bool]] = {}
        #: Where order-book gaps go (`~trio_feed.runtime.book_sync.VenueBookSync`).
        self.on_book_gap: Callable[[BookGap], None] | None = None
        #: Set (and replaced) by every `reconfigure`: wakes the loops idling without keys.
        self._keys_changed = trio.Event()
        self._ticking = False

    @property
    def fills_in_progress(self) -> int:
        """REST fills running now (one per kline key or trade symbol at most)."""
        return len(self._filling)

    # ---- the reader side (synchronous, never blocks) ---------------------------------------

    def deliver(self, items: list[ParsedItem]) -> None:
        """Route one parsed batch from a connection reader."""
        out: list[object] = []
        gaps = self.data.process(items, out)
        if out:
            self._publish(out)  # type: ignore[arg-type]
        if gaps:
            self.start_fills(gaps)

    def connection_state(self, event: StateChange, streams: Iterable[StreamSpec]) -> None:
        """A connection holding ``streams`` (what it holds now, streams subscribed since it
        opened included) changed state: once it is SUBSCRIBED (again), catch its trades up
        and check its klines against the exchange's clock. Streams of keys not tracked
        (any more) are passed over."""
        if event.state != "SUBSCRIBED":
            return
        kline_keys: list[tuple[str, str]] = []
        trade_symbols: list[str] = []
        for spec in streams:
            key = self.adapter.kline_key(spec.symbol, spec.channel)
            if key is not None:
                kline_keys.append(key)
            elif spec.channel == "aggTrade":
                trade_symbols.append(spec.symbol)
        gaps = self.data.after_reconnect(kline_keys, trade_symbols, self._horizon)
        if gaps:
            self.start_fills(gaps)

    def watch_trade_stream(self, symbol: str, up: Callable[[], bool]) -> None:
        """Register how to tell whether ``symbol``'s trade stream is connected (built klines
        of quiet buckets close only while it is)."""
        self._trade_stream_up[symbol] = up

    def unwatch_trade_stream(self, symbol: str) -> None:
        """Forget how to tell whether ``symbol``'s trade stream is connected (it was
        unsubscribed, or moved: watch it again then). Its quiet buckets stop closing."""
        self._trade_stream_up.pop(symbol, None)

    def reconfigure(self, keys: DataKeys) -> None:
        """Track ``keys`` from now on (see `VenueData.reconfigure`) and make the running
        tasks follow: the reconciliation loop checks the new kline keys from its next round
        and no longer checks removed ones, the build ticker starts with the first built
        interval, and fills of removed keys end at their next step."""
        self.data.reconfigure(keys)
        changed, self._keys_changed = self._keys_changed, trio.Event()
        changed.set()
        self._start_ticker()

    def _horizon(self, interval: str) -> int | None:
        if not self.clock.synced:
            return None
        return bucket_open(self.clock.now_ms() - CLOSE_MARGIN_MS, interval)

    # ---- fills ----------------------------------------------------------------------------

    def start_fills(self, gaps: Iterable[Gap | BookGap]) -> None:
        """Start a fill task for each gap's key that has none running (order-book gaps go to
        ``on_book_gap``: the book shell fetches their snapshots)."""
        kept: list[Gap] = []
        for gap in gaps:
            if isinstance(gap, BookGap):
                if self.on_book_gap is not None:
                    self.on_book_gap(gap)
            else:
                kept.append(gap)
        if self._nursery is None:
            self._waiting.extend(kept)
            return
        for gap in kept:
            key: tuple[str, str] | str
            key = (gap.symbol, gap.interval) if isinstance(gap, KlineGap) else gap.symbol
            if key in self._filling or self.data.gap(key) is None:
                continue  # one fill per key; none for a key no longer tracked
            self._filling.add(key)
            self.stats.fills_started += 1
            self._nursery.start_soon(self._fill, key, name=f"fill {self.name} {key}")

    def _sequencer(self, key: tuple[str, str] | str) -> KlineSequencer | TradeSequencer | None:
        if isinstance(key, tuple):
            return self.data.kline_seqs.get(key)
        return self.data.trade_seqs.get(key)

    async def _fill(self, key: tuple[str, str] | str) -> None:
        backoff = Backoff(FILL_RETRY, self._rng)
        try:
            # No gap: done, or the key was unsubscribed meanwhile.
            while (gap := self.data.gap(key)) is not None:
                seq = self._sequencer(key)
                out: list[object] = []
                try:
                    if isinstance(gap, KlineGap):
                        await self._fill_klines(gap, out)
                    else:
                        await self._fill_trades(gap, out)
                except (RestError, MalformedFrame) as exc:
                    if self._sequencer(key) is not seq:
                        continue  # unsubscribed meanwhile: the failure no longer matters
                    await self._fill_error(key, gap, exc, backoff, out)
                else:
                    backoff.retry = 0
                if out:
                    self._publish(out)  # type: ignore[arg-type]
        finally:
            self._filling.discard(key)

    async def _fill_error(
        self,
        key: tuple[str, str] | str,
        gap: Gap,
        exc: Exception,
        backoff: Backoff,
        out: list[object],
    ) -> None:
        """Pace (or give up) a fill after a failed page."""
        self._fill_failed(gap, exc)
        if isinstance(exc, RestRateLimited):
            await trio.sleep(max(1.0, exc.until - trio.current_time()))
        elif isinstance(exc, RestError) and _permanent(exc):
            self._abandon(key, gap, exc, out)
        else:
            # FILL_RETRY never gives up (max_retries 0): a delay always comes.
            await trio.sleep(backoff.next_delay(trio.current_time()) or 0.0)

    async def _fill_klines(self, gap: KlineGap, out: list[object]) -> None:
        adapter = self.adapter
        key = (gap.symbol, gap.interval)
        seq = self.data.kline_seqs.get(key)
        limit = adapter.max_klines_per_request
        req = adapter.klines_request(
            gap.symbol, gap.interval, start_time=gap.start, end_time=gap.end - 1, limit=limit
        )
        response = await self.rest.request(req)
        if self.data.kline_seqs.get(key) is not seq:
            return  # unsubscribed (and maybe subscribed again) while the page came
        klines = adapter.parse_klines(
            response.text, gap.symbol, gap.interval, self.clock.now_ms() - CLOSE_MARGIN_MS
        )
        before = len(out)
        self.data.apply_kline_page(key, klines, complete=len(klines) < limit, out=out)
        self.stats.klines_backfilled += len(out) - before
        if len(out) > before:
            log.info(
                "%s %s %s: backfilled %d closed klines from REST",
                self.name,
                gap.symbol,
                gap.interval,
                len(out) - before,
            )

    async def _fill_trades(self, gap: TradeGap, out: list[object]) -> None:
        adapter = self.adapter
        seq = self.data.trade_seqs.get(gap.symbol)
        if seq is None:
            return
        limit = adapter.max_trades_per_request
        if gap.from_id is not None:
            req = adapter.agg_trades_request(gap.symbol, from_id=gap.from_id, limit=limit)
        else:
            start = gap.start_time or 0
            req = adapter.agg_trades_request(
                gap.symbol, start_time=start, end_time=start + TRADE_TIME_WINDOW_MS, limit=limit
            )
        response = await self.rest.request(req)
        if self.data.trade_seqs.get(gap.symbol) is not seq:
            return  # unsubscribed (and maybe subscribed again) while the page came
        trades = adapter.parse_agg_trades(response.text, gap.symbol)
        before = seq.backfilled
        if gap.from_id is None:
            if not trades:
                window_end = (gap.start_time or 0) + TRADE_TIME_WINDOW_MS + 1
                caught_up = self.clock.synced and window_end >= self.clock.now_ms()
                if caught_up or (seq.pending and seq.pending[0].time < window_end):
                    self.data.apply_trade_page(gap.symbol, [], complete=True, out=out)
                else:
                    seq.advance_anchor(window_end)
                return
            self.data.apply_trade_page(gap.symbol, trades, complete=False, out=out)
        else:
            self.data.apply_trade_page(gap.symbol, trades, complete=len(trades) < limit, out=out)
        self.stats.trades_backfilled += seq.backfilled - before

    def _fill_failed(self, gap: Gap, exc: Exception) -> None:
        self.stats.fill_errors += 1
        self.stats.last_fill_error = f"{_describe_gap(gap)}: {exc}"
        log.warning("%s: fill of %s failed, will retry: %s", self.name, _describe_gap(gap), exc)

    def _abandon(
        self, key: tuple[str, str] | str, gap: Gap, exc: Exception, out: list[object]
    ) -> None:
        self.stats.gaps_abandoned += 1
        log.error(
            "%s: the exchange refuses %s (%s): that range is skipped",
            self.name,
            _describe_gap(gap),
            exc,
        )
        if isinstance(key, tuple):
            self.data.abandon_klines(key, out)
        else:
            self.data.abandon_trades(key, out)

    # ---- tasks ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the fills, the reconciliation checks and the build ticker until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                waiting, self._waiting = self._waiting, []
                self.start_fills(waiting)
                self._start_ticker()
                # Always running, idle while no kline key is streamed: one may be added.
                nursery.start_soon(self._reconcile_klines, name=f"reconcile {self.name}")
                task_status.started()
                await trio.sleep_forever()  # fills start here for the feed's whole life
        finally:
            # Closed: what comes later (a reconfigure during shutdown) must not start tasks.
            self._nursery = None
            self._ticking = False

    def _start_ticker(self) -> None:
        """Start the build ticker once there is something to build (it then stays)."""
        if self._nursery is None or self._ticking or not any(self.data.builders.values()):
            return
        self._ticking = True
        self._nursery.start_soon(self._tick, name=f"ticker {self.name}")

    def _tick_period(self) -> float | None:
        """Often enough to close the shortest built interval soon after its grace; None
        while nothing is built."""
        lengths = [_approx_ms(b.interval) for bs in self.data.builders.values() for b in bs]
        if not lengths:
            return None
        return min(max(min(lengths) / 2000, MIN_TICK), MAX_TICK)

    async def _tick(self) -> None:
        def stream_up(symbol: str) -> bool:
            up = self._trade_stream_up.get(symbol)
            return up is not None and up()

        while True:
            period = self._tick_period()
            if period is None:
                await self._keys_changed.wait()  # every built interval was removed
                continue
            await trio.sleep(period)
            if not self.clock.synced:
                continue
            out: list[object] = []
            self.data.tick(self.clock.now_ms() - BUILD_GRACE_MS, stream_up, out)
            if out:
                self._publish(out)  # type: ignore[arg-type]

    def _reconciled_keys(self) -> list[tuple[str, str]]:
        return [k for k, seq in self.data.kline_seqs.items() if not _built(seq.interval, self)]

    async def _reconcile_klines(self) -> None:
        """Check each streamed kline key's last closed kline once per ``kline_interval``,
        spread evenly over it so the checks never come in a burst.

        Each round walks the keys tracked when it starts, a step of ``kline_interval``
        divided by the number tracked now before each check: a key added is checked from
        the next round on, a key removed is passed over. Without keys the loop waits for
        a `reconfigure`.
        """
        while True:
            keys = self._reconciled_keys()
            if not keys:
                await self._keys_changed.wait()
                continue
            for key in keys:
                # Start after one step, not at once: the first check of each key then comes
                # when it has had time to deliver a closed kline.
                count = len(self._reconciled_keys())
                if key not in self.data.kline_seqs:
                    continue
                await trio.sleep(self.reconciliation.kline_interval / count)
                if key not in self.data.kline_seqs or not self.clock.synced:
                    continue
                await self._reconcile_one(*key)

    async def _reconcile_one(self, symbol: str, interval: str) -> None:
        adapter = self.adapter
        try:
            response = await self.rest.request(adapter.klines_request(symbol, interval, limit=3))
            klines = adapter.parse_klines(
                response.text, symbol, interval, self.clock.now_ms() - CLOSE_MARGIN_MS
            )
        except (RestError, MalformedFrame) as exc:
            log.warning("%s: reconciliation of %s %s skipped: %s", self.name, symbol, interval, exc)
            return
        closed = [k for k in klines if k.closed]
        if not closed:
            return
        self.stats.reconcile_checks += 1
        out: list[object] = []
        cfg = self.reconciliation
        found = self.data.reconcile(
            closed[-1],
            price_tolerance=cfg.price_tolerance,
            volume_tolerance=cfg.volume_tolerance,
            out=out,
        )
        if found:
            self.stats.reconcile_mismatches += 1
            log.warning(
                "%s %s %s @%d: REST disagrees with the stream (%s): revised",
                self.name,
                symbol,
                interval,
                closed[-1].open_time,
                "; ".join(found),
            )
            if self._on_mismatch is not None:
                self._on_mismatch(self.name, symbol, interval, closed[-1].open_time, found)
        if out:
            self._publish(out)  # type: ignore[arg-type]


def _approx_ms(interval: str) -> int:
    try:
        return interval_ms(interval)
    except ValueError:  # months
        return 28 * 86_400_000


def _built(interval: str, integrity: VenueIntegrity) -> bool:
    return integrity.adapter.built_interval(f"kline_{interval}") is not None


def _permanent(exc: RestError) -> bool:
    """A 4xx other than the rate limits: asking again gives the same answer."""
    return exc.status is not None and 400 <= exc.status < 500 and exc.status not in (418, 429)


def _describe_gap(gap: Gap) -> str:
    if isinstance(gap, KlineGap):
        return f"{gap.symbol} {gap.interval} klines {gap.start}..{gap.end - 1}"
    if gap.from_id is None:
        return f"{gap.symbol} trades from time {gap.start_time}"
    upto = "now" if gap.until_id is None else str(gap.until_id - 1)
    return f"{gap.symbol} trades {gap.from_id}..{upto}"
