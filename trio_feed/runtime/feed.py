"""``open_feed()``: the root of the nursery tree, and the `Feed` handle it yields.

::

    open_feed (root nursery)
    ├── connections nursery
    │   ├── ConnectionSupervisor binance-usdm/market/0   (backoff-restart loop)
    │   │   └── attempt nursery: trio-websocket reader, our reader, pinger
    │   └── ConnectionSupervisor binance-usdm/public/1
    │       └── attempt nursery: ...
    ├── reconciliation nursery (started first: fills may be needed from the first frame)
    │   ├── server-time tracker per venue (REST /fapi/v1/time -> market clock)
    │   ├── VenueIntegrity per venue: REST fills of gaps (one task per key at most),
    │   │   kline reconciliation spread over ``kline_interval``, the build ticker
    │   ├── data-quality recovery ticker per venue
    │   └── new-listings watcher per venue (``[new_listings] enabled``)
    ├── monitoring endpoint (``[monitoring] enabled``): Prometheus metrics and /health
    └── (beside the root) sinks nursery: each sink drains after the connections close

One connection's failure stays inside its own supervisor: it reconnects (or ends FAILED)
without touching any other connection's streams. Subscription changes while running
(`Feed.subscribe`, `Feed.unsubscribe`, `Feed.update_subscription`) re-plan the pool, send
SUBSCRIBE/UNSUBSCRIBE on the connections whose streams change, open connections for streams
that do not fit and close connections left without streams; nothing else is touched.
Leaving the ``async with`` cancels the root nursery, which closes every socket and REST
client.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from decimal import Decimal
from typing import Any

import attrs
import httpx
import trio

from ..config import FeedConfig
from ..core.backoff import BackoffPolicy
from ..core.book import BookView
from ..core.books import VenueBooks
from ..core.clock import MarketClock
from ..core.intervals import bucket_open, interval_ms, is_interval, next_open
from ..core.keeper import DataKeys, ResumePoint, VenueData
from ..core.quality import QualityBoard, QualityUpdate
from ..core.state import ConnectionState
from ..errors import ConfigError, MalformedFrame, SlowConsumer
from ..events import Event, Kline, QualityChange, StateChange, Trade
from ..plan import VenuePlan, data_keys, plan_feed
from ..venues.base import StreamSpec
from .book_sync import VenueBookSync
from .connection import ConnectionSettings, ConnectionSupervisor, SubscriptionRejected
from .fanout import EventHub, Subscription
from .integrity import CLOSE_MARGIN_MS, VenueIntegrity
from .limits import AttemptLimits
from .proxy import connector_for
from .recording import Recorder
from .rest import ResponseHook, RestClient, RestError
from .sinks import SINK_MAX_BUFFER, Sink, check_sinks, make_sink
from .sqlite_store import read_resume_points
from .status import ConnectionStatus, FeedStatus, SymbolStatus, VenueStatus
from .transport import Connector, Transport, WebsocketsTransport

__all__ = ["DEFAULT_MAX_BUFFER", "Feed", "open_feed"]

log = logging.getLogger("trio_feed.feed")

#: Default bound of one ``feed.events()`` subscription.
DEFAULT_MAX_BUFFER = 10_000
#: How often each venue's clock offset is re-measured (weight 1 per call on Binance).
#: Clocks drift by milliseconds per hour; five minutes keeps the offset fresh.
SERVER_TIME_INTERVAL = 300.0
#: Retry delay of a failed server-time reading.
SERVER_TIME_RETRY = 5.0
#: How long shutdown waits for sinks to write what they hold.
SINK_DRAIN_TIMEOUT = 10.0
#: How long ``feed.history()`` waits for the REST budget or a Retry-After before raising.
HISTORY_MAX_WAIT = 30.0


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


#: Klines looked back through for the newest one with trades (quiet-market evidence).
EVIDENCE_DEPTH = 5

#: What a venue is subscribed to: per symbol, its channels (in the order asked).
SymbolChannels = dict[str, tuple[str, ...]]


class _Venue:
    """A venue's runtime: its plan, clock, REST client, data keeper, quality board and
    connections, and what it is subscribed to now."""

    def __init__(
        self,
        plan: VenuePlan,
        clock: MarketClock,
        rest: RestClient,
        data: VenueData,
        integrity: VenueIntegrity,
    ) -> None:
        self.plan = plan
        self.name = plan.adapter.name
        self.adapter = plan.adapter
        self.clock = clock
        self.rest = rest
        self.data = data
        self.integrity = integrity
        self.connections: list[ConnectionSupervisor] = []
        #: Each connection's cancel scope (closing it when its last stream is unsubscribed).
        self.scopes: dict[str, trio.CancelScope] = {}
        self.subscription: SymbolChannels = {
            symbol: tuple(plan.config.channels) for symbol in plan.config.symbols
        }
        self.quality = QualityBoard()
        #: Serialises subscription changes of this venue.
        self.changing = trio.Lock()
        self.make_connection: Callable[[str, str, Sequence[StreamSpec]], ConnectionSupervisor]
        #: The order books' shell, when the venue keeps books.
        self.book_sync: VenueBookSync | None = None

    def streams(self, subscription: SymbolChannels | None = None) -> list[StreamSpec]:
        """Every wire stream of ``subscription`` (default: the current one), each once."""
        out: dict[str, StreamSpec] = {}
        for symbol, channels in (subscription or self.subscription).items():
            for channel in channels:
                spec = self.adapter.stream(symbol, channel)
                out.setdefault(spec.name, spec)
        return list(out.values())

    def keys(self, subscription: SymbolChannels) -> DataKeys:
        """What the data keeper tracks for ``subscription``."""
        return _merge_keys(
            data_keys(self.adapter, [symbol], channels) for symbol, channels in subscription.items()
        )

    def track_books(self) -> None:
        """Keep a book for exactly the symbols subscribed to ``depth``."""
        books = self.data.books
        if books is None:
            return
        wanted = [s for s, channels in self.subscription.items() if "depth" in channels]
        for symbol in books.symbols():
            if symbol not in wanted:
                books.untrack(symbol)
        for symbol in wanted:
            if symbol not in books.symbols():
                books.track(symbol)

    def track_quality(self, now: float) -> None:
        """Give the quality board the current streams of every symbol."""
        by_symbol: dict[str, list[str]] = {}
        for spec in self.streams():
            by_symbol.setdefault(spec.symbol, []).append(spec.name)
        for symbol in self.quality.symbols():
            if symbol not in by_symbol:
                self.quality.untrack(symbol)
        for symbol, names in by_symbol.items():
            self.quality.track(symbol, names, now)

    def evidence(self, symbol: str) -> Hashable | None:
        """The newest kline with trades of ``symbol``'s shortest streamed interval, as
        ``(open_time, trades)``: it changes when, and only when, the symbol trades (a new
        bucket without trades leaves it as it was), whatever the trade stream says; see the
        connection heartbeat."""
        intervals = [i for (s, i) in self.data.kline_seqs if s == symbol]
        if not intervals:
            return None
        interval = min(intervals, key=_interval_sort_key)
        for kline in reversed(self.data.klines.klines(symbol, interval, EVIDENCE_DEPTH)):
            if kline.trades:
                return (kline.open_time, kline.trades)
        return None

    def last_close(self, symbol: str) -> Decimal | None:
        cached = self.data.klines.keys()
        intervals = [i for (s, i) in cached if s == symbol]
        if intervals:
            newest = self.data.klines.klines(symbol, min(intervals, key=_interval_sort_key), 1)
            if newest:
                return newest[0].close
        trades = self.data.trades.trades(symbol)
        return trades[-1].price if trades else None


def _interval_sort_key(interval: str) -> int:
    try:
        return interval_ms(interval)
    except ValueError:  # months
        return 28 * 86_400_000


def _merge_keys(parts: Iterable[DataKeys]) -> DataKeys:
    kline_keys: dict[tuple[str, str], None] = {}
    built: dict[str, tuple[str, ...]] = {}
    trade_symbols: dict[str, None] = {}
    published: set[str] = set()
    for part in parts:
        kline_keys.update(dict.fromkeys(part.kline_keys))
        for symbol, intervals in part.built.items():
            built[symbol] = tuple(dict.fromkeys((*built.get(symbol, ()), *intervals)))
        trade_symbols.update(dict.fromkeys(part.trade_symbols))
        published |= part.published_trades
    return DataKeys(
        kline_keys=tuple(kline_keys),
        built=built,
        trade_symbols=tuple(trade_symbols),
        published_trades=frozenset(published),
    )


def venue_data(plan: VenuePlan, resume: ResumePoint | None = None) -> VenueData:
    """The data keeper of one planned venue (see `~trio_feed.plan.data_keys`)."""
    adapter, vc = plan.adapter, plan.config
    cache = vc.cache
    return VenueData.from_keys(
        adapter.name,
        data_keys(adapter, vc.symbols, vc.channels),
        kline_max_size=cache.kline_max_size,
        trade_max_size=cache.aggtrade_max_size,
        trade_window_ms=round(cache.aggtrade_time_window * 1000),
        resume=resume,
        sequence_trades=adapter.trade_ids_consecutive,
    )


class Feed:
    """A running feed. Get one from ``open_feed()``."""

    def __init__(self, config: FeedConfig, hub: EventHub) -> None:
        self.config = config
        self._hub = hub
        self._venues: list[_Venue] = []
        self._sinks: list[Sink] = []
        #: Where connections run (set once the connections nursery is open).
        self._connections: trio.Nursery | None = None
        #: The monitoring endpoint's port, once it listens.
        self.monitoring_port: int | None = None

    def events(self, *, max_buffer: int = DEFAULT_MAX_BUFFER) -> Subscription:
        """A new bounded subscription to every event published from now on.

        Iterate it with ``async for``. If its consumer falls more than ``max_buffer``
        events behind, it ends with `~trio_feed.errors.SlowConsumer` (after delivering
        everything buffered before the overflow) while the feed and every other
        subscription go on; see :mod:`trio_feed.runtime.fanout`.
        """
        return self._hub.subscribe(max_buffer)

    def status(self) -> FeedStatus:
        """Every connection's state, streams, retries and traffic, and each venue's clock
        and REST budget."""
        now = trio.current_time()
        connections = []
        venues = []
        for venue in self._venues:
            for conn in venue.connections:
                stats = conn.stats
                connections.append(
                    ConnectionStatus(
                        id=conn.id,
                        venue=venue.name,
                        route=conn.route,
                        state=conn.state.value,
                        streams=tuple(s.name for s in conn.streams),
                        retry=conn.backoff.retry,
                        last_message_age=conn.last_message_age(),
                        messages=stats.messages,
                        bytes=stats.bytes,
                        malformed=stats.malformed,
                        reconnects=stats.reconnects,
                        last_error=stats.last_error,
                        stale_streams=conn.stale_streams(),
                        rotations=stats.rotations,
                        sent=stats.sent,
                    )
                )
            rest = venue.rest
            banned = rest.banned_until
            fills = venue.integrity.stats
            data = venue.data
            venues.append(
                VenueStatus(
                    name=venue.name,
                    clock_offset_ms=venue.clock.offset_ms if venue.clock.synced else None,
                    rest_requests=rest.requests,
                    rest_errors=rest.errors,
                    rest_used_weight=rest.used_weight,
                    rest_banned_for=(banned - now) if banned is not None and banned > now else None,
                    rest_last_error=rest.last_error,
                    rest_retries=rest.retries,
                    rest_waiting=rest.waiting,
                    rest_budget=rest.budget,
                    fills_in_progress=venue.integrity.fills_in_progress,
                    klines_backfilled=fills.klines_backfilled,
                    trades_backfilled=fills.trades_backfilled,
                    fill_errors=fills.fill_errors,
                    last_fill_error=fills.last_fill_error,
                    gaps_abandoned=fills.gaps_abandoned,
                    klines_skipped=data.klines_skipped,
                    trade_ids_skipped=data.trade_ids_skipped,
                    reconcile_checks=fills.reconcile_checks,
                    reconcile_mismatches=dict(data.mismatches),
                    **_book_status(venue),
                )
            )
        symbols = [
            SymbolStatus(
                venue=venue.name,
                symbol=symbol,
                quality=venue.quality.score(symbol),
                reason=venue.quality.reason(symbol),
                missing_streams=venue.quality.missing(symbol),
                last_close=venue.last_close(symbol),
                book_synced=_book_synced(venue, symbol),
            )
            for venue in self._venues
            for symbol in venue.quality.symbols()
        ]
        return FeedStatus(
            tuple(connections),
            tuple(venues),
            self._hub.subscriptions,
            tuple(sink.status() for sink in self._sinks),
            tuple(symbols),
        )

    def book(
        self, symbol: str, depth: int | None = None, *, exchange: str | None = None
    ) -> BookView | None:
        """An immutable view of ``symbol``'s local order book (best bid and ask, spread, mid,
        ``depth`` levels per side, all when None), or None while the book is not in sync
        with the exchange (never a book that may be wrong). KeyError if the venue keeps no
        book of ``symbol`` (not subscribed to ``depth``)."""
        books = self._venue(exchange).data.books
        if books is None or symbol not in books.symbols():
            raise KeyError(f"no order book of {symbol!r}: subscribe it to 'depth'")
        return books.view(symbol, depth)

    def quality(self, symbol: str, *, exchange: str | None = None) -> float:
        """The data-quality score of ``symbol`` in [0, 1] (see :mod:`trio_feed.core.quality`):
        1.0 while every stream of it delivers; KeyError if it is not subscribed."""
        return self._venue(exchange).quality.score(symbol)

    # ---- subscriptions while running --------------------------------------------------------

    def subscriptions(self, *, exchange: str | None = None) -> dict[str, tuple[str, ...]]:
        """What the venue (the first, unless named) is subscribed to now: channels per symbol."""
        return dict(self._venue(exchange).subscription)

    async def subscribe(
        self, symbols: Sequence[str], channels: Sequence[str], *, exchange: str | None = None
    ) -> None:
        """Add ``channels`` for each of ``symbols`` (new symbols included), keeping everything
        else. Streams already subscribed are not touched."""
        symbols, channels = list(symbols), tuple(channels)

        def add(current: SymbolChannels) -> SymbolChannels:
            new = dict(current)
            for symbol in symbols:
                new[symbol] = tuple(dict.fromkeys((*new.get(symbol, ()), *channels)))
            return new

        await self._change(self._venue(exchange), add)

    async def unsubscribe(
        self,
        symbols: Sequence[str] | None = None,
        channels: Sequence[str] | None = None,
        *,
        exchange: str | None = None,
    ) -> None:
        """Drop ``channels`` (all, if None) of ``symbols`` (all, if None). A symbol left with
        no channel is dropped; a connection left with no stream is closed."""

        def drop(current: SymbolChannels) -> SymbolChannels:
            new: SymbolChannels = {}
            for symbol, have in current.items():
                if symbols is not None and symbol not in symbols:
                    new[symbol] = have
                    continue
                kept = () if channels is None else tuple(c for c in have if c not in channels)
                if kept:
                    new[symbol] = kept
            return new

        await self._change(self._venue(exchange), drop)

    async def update_subscription(
        self,
        symbols: Sequence[str] | None = None,
        channels: Sequence[str] | None = None,
        *,
        exchange: str | None = None,
    ) -> None:
        """Make the venue's subscription exactly ``symbols`` x ``channels`` (None keeps the
        current symbols, or the configured channels). Only streams that change are
        subscribed or unsubscribed; the rest are not touched.

        Raises `~trio_feed.errors.ConfigError` (and changes nothing) for an unknown channel or
        a set of streams that does not fit the connection pool, and
        `~trio_feed.runtime.connection.SubscriptionRejected` for streams the venue refused
        (those are left out; everything else took effect).
        """
        venue = self._venue(exchange)
        chans = tuple(venue.plan.config.channels if channels is None else channels)

        def replace(current: SymbolChannels) -> SymbolChannels:
            syms = list(current) if symbols is None else list(symbols)
            return {symbol: chans for symbol in syms}

        await self._change(venue, replace)

    async def _change(
        self, venue: _Venue, change: Callable[[SymbolChannels], SymbolChannels]
    ) -> None:
        # Changes of one venue apply one at a time, each to the result of the one before.
        async with venue.changing:
            wanted = change(venue.subscription)
            _check_subscription(venue, wanted)
            rejections = await _apply_subscription(self, venue, wanted)
        if rejections:
            names = [n for r in rejections for n in r.streams]
            raise SubscriptionRejected(names, "; ".join(r.message for r in rejections))

    def market_time(self, venue: str | None = None) -> int:
        """The exchange's clock in ms (the first venue's, unless named)."""
        for v in self._venues:
            if venue is None or v.name == venue:
                return v.clock.now_ms()
        raise KeyError(venue)

    # ---- caches and history ---------------------------------------------------------------

    def _venue(self, exchange: str | None) -> _Venue:
        for v in self._venues:
            if exchange is None or v.name == exchange:
                return v
        raise KeyError(f"no venue {exchange!r} in this feed")

    def klines(
        self, symbol: str, interval: str, limit: int | None = None, *, exchange: str | None = None
    ) -> list[Kline]:
        """The cached klines of ``symbol`` and ``interval`` (at most ``kline_max_size``),
        oldest first, the last ``limit`` of them; the newest may still be open (``closed``
        false). Klines built from trades are cached closed only."""
        return self._venue(exchange).data.klines.klines(symbol, interval, limit)

    def trades(
        self, symbol: str, seconds: float | None = None, *, exchange: str | None = None
    ) -> list[Trade]:
        """The cached aggregated trades of ``symbol`` (at most ``aggtrade_max_size``, within
        ``aggtrade_time_window`` of exchange time), oldest first; with ``seconds``, only the
        trades of that many seconds before the newest."""
        venue = self._venue(exchange)
        if venue.clock.synced:
            venue.data.trades.advance(venue.clock.now_ms())
        return venue.data.trades.trades(symbol, seconds)

    async def history(
        self,
        symbol: str,
        interval: str,
        count: int,
        *,
        exchange: str | None = None,
        as_frame: bool = False,
    ) -> Any:
        """The last ``count`` closed klines of ``symbol`` and ``interval``, oldest first, in
        open-time order without gap or duplicate: from the cache first, from REST for what
        the cache lacks (REST calls share the venue's weight budget and give up with
        `~trio_feed.runtime.rest.RestRateLimited` rather than wait more than 30 s for it).

        Any symbol and interval the venue serves may be asked, subscribed or not. Intervals
        built from trades (``1s``, ``7m`` on USD-M) come from the cache alone: REST cannot
        serve them. With ``as_frame=True`` the result is a pandas DataFrame (the ``pandas``
        extra) indexed by open time, with `~decimal.Decimal` values (lossless; convert with
        ``.astype(float)`` for numeric work).
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        if not is_interval(interval):
            raise ValueError(f"not a kline interval: {interval!r}")
        venue = self._venue(exchange)
        bars = await _history(venue, symbol, interval, count)
        if as_frame:
            return _frame(bars)
        return bars

    def _report_mismatch(
        self, venue: str, symbol: str, interval: str, open_time: int, mismatches: tuple[str, ...]
    ) -> None:
        """A kline REST mismatch (already logged, counted in ``status()`` and published as a
        ``reconcile`` event) lowers the symbol's data-quality score."""
        what = f"kline {interval} @{open_time}: {'; '.join(mismatches)}"
        _lower_quality(self._hub, self._venue(venue), symbol, what)


def _pick(value: object, venue: str) -> object:
    if isinstance(value, Mapping):
        return value.get(venue)
    return value


@asynccontextmanager
async def open_feed(
    config: FeedConfig,
    *,
    connector: Connector | Mapping[str, Connector] | None = None,
    transport: Transport | None = None,
    rest_transport: httpx.AsyncBaseTransport | Mapping[str, httpx.AsyncBaseTransport] | None = None,
    wall_clock: Callable[[], int] | None = None,
    seed: int | str | None = None,
    recorder: Recorder | None = None,
) -> AsyncIterator[Feed]:
    """Run a feed for ``config`` inside ``async with``; leaving the block stops it.

    Keyword arguments are seams for tests and embedding (all optional): ``connector``
    opens byte streams (default TCP/TLS; the fake exchange's ``connect`` in tests; a
    mapping gives one per venue name), ``transport`` speaks WebSocket over them
    (default `WebsocketsTransport`; `TrioWebsocketTransport` is the other),
    ``rest_transport`` is an httpx transport (or one per venue), ``wall_clock`` the
    local clock in epoch ms, ``seed`` seeds the backoff jitter, ``recorder`` (a
    `~trio_feed.runtime.recording.Recorder`) is handed every raw frame, REST response and
    connection state change, stamped with the local clock (``trio-feed record``).

    With a SQLite sink, the feed first reads where the store's last run stopped (the last
    closed kline per key, the last trade id per symbol) and fills from there, so a restart
    loses nothing either. A recorded feed does not: it starts from the live streams, so that
    the capture alone says everything its replay needs.

    Raises `~trio_feed.errors.ConfigError` before starting anything if the streams do not
    fit the connection pool.
    """
    plans = plan_feed(config)
    check_sinks(config.sinks)
    hub = EventHub()
    feed = Feed(config, hub)
    transport = transport or WebsocketsTransport()
    wall = wall_clock or _wall_ms
    seed_text = str(seed) if seed is not None else os.urandom(16).hex()
    resume = await _read_resume_points(config, plans) if recorder is None else {}
    # Connection attempts are limited per host across the whole feed.
    attempts = AttemptLimits()
    # Subscribe sinks before anything runs, so they see every event from the first one.
    feed._sinks = [make_sink(s) for s in config.sinks]
    sinks = [(sink, hub.subscribe(SINK_MAX_BUFFER)) for sink in feed._sinks]
    sinks_done = trio.Event()
    try:
        sinks_scope = trio.CancelScope(shield=True)
        async with trio.open_nursery() as sink_nursery:
            sink_nursery.start_soon(_run_sinks, sinks, sinks_done, sinks_scope, name="sinks")
            try:
                async with AsyncExitStack() as stack, trio.open_nursery() as root:
                    for plan in plans:
                        feed._venues.append(
                            _build_venue(
                                plan,
                                stack=stack,
                                feed=feed,
                                hub=hub,
                                connector=_pick(connector, plan.config.exchange),
                                transport=transport,
                                rest_transport=_pick(rest_transport, plan.config.exchange),
                                wall=wall,
                                seed_text=seed_text,
                                resume=resume.get(plan.config.exchange),
                                attempts=attempts,
                                recorder=recorder,
                            )
                        )
                    await root.start(_run_reconciliation, feed, name="reconciliation")
                    # Started soon, not awaited: the caller subscribes to events before the
                    # first state change is published.
                    root.start_soon(_run_connections, feed, name="connections")
                    if config.monitoring.enabled:
                        feed.monitoring_port = await root.start(
                            _serve_monitoring, feed, name="monitoring"
                        )
                    try:
                        yield feed
                    finally:
                        root.cancel_scope.cancel()
            finally:
                # Connections are down: let the sinks drain what they hold, then close.
                hub.close()
                with trio.CancelScope(shield=True):
                    await _drain(feed._sinks, sinks_done)
                sinks_scope.cancel()
    finally:
        hub.close()


async def _read_resume_points(config: FeedConfig, plans: list[VenuePlan]) -> dict[str, ResumePoint]:
    """Where the first SQLite sink's store says the last run stopped, per venue."""
    path = next((s.path for s in config.sinks if s.kind == "sqlite"), None)
    if path is None:
        return {}
    out: dict[str, ResumePoint] = {}
    for plan in plans:
        name = plan.adapter.name
        try:
            points = await trio.to_thread.run_sync(read_resume_points, path, name)
        except (OSError, sqlite3.DatabaseError) as exc:
            # The sink reports the same problem when it opens the file; start without.
            log.error("%s: cannot read where the last run stopped from %s: %s", name, path, exc)
            continue
        out[name] = ResumePoint(points.klines, points.trade_ids)
        if points.klines or points.trade_ids:
            log.info(
                "%s: resuming from %s: %d kline keys, %d trade symbols",
                name,
                path,
                len(points.klines),
                len(points.trade_ids),
            )
    return out


def _build_venue(
    plan: VenuePlan,
    *,
    stack: AsyncExitStack,
    feed: Feed,
    hub: EventHub,
    connector: object,
    transport: Transport,
    rest_transport: object,
    wall: Callable[[], int],
    seed_text: str,
    resume: ResumePoint | None,
    attempts: AttemptLimits,
    recorder: Recorder | None = None,
) -> _Venue:
    vc = plan.config
    clock = MarketClock(wall)
    name = plan.adapter.name
    on_response: ResponseHook | None = None
    if recorder is not None:
        record_response = recorder.response

        def record(target: str, status: int, text: str) -> None:
            record_response(wall(), name, target, status, text)

        on_response = record
    rest = RestClient(
        plan.adapter,
        vc.rest_url,
        transport=rest_transport,  # type: ignore[arg-type]
        proxy=vc.proxy,
        timeout=vc.reconnect.connect_timeout,
        clock=clock,
        rng=random.Random(f"{seed_text}/{name}/rest"),
        on_response=on_response,
    )
    stack.push_async_callback(rest.aclose)
    data = venue_data(plan, resume)
    integrity = VenueIntegrity(
        adapter=plan.adapter,
        rest=rest,
        clock=clock,
        data=data,
        publish=hub.publish,
        reconciliation=vc.reconciliation,
        rng=random.Random(f"{seed_text}/{name}/fills"),
        on_mismatch=feed._report_mismatch,
    )
    venue = _Venue(plan, clock, rest, data, integrity)
    _build_books(venue, hub, seed_text)
    pool = vc.connection_pool
    settings = ConnectionSettings(
        ws_url=vc.ws_url,
        connect_timeout=vc.reconnect.connect_timeout,
        ping_interval=vc.ping.interval,
        ping_timeout=vc.ping.timeout,
        backoff=BackoffPolicy(
            base_delay=vc.reconnect.base_delay,
            max_delay=vc.reconnect.max_delay,
            jitter_ratio=vc.reconnect.jitter_ratio,
            max_retries=vc.reconnect.max_retries,
            stable_after=max(vc.reconnect.max_delay, 2 * vc.ping.interval),
        ),
        close_timeout=feed.config.shutdown.timeout,
        heartbeat_interval=vc.heartbeat.check_interval,
        heartbeat_timeout=vc.heartbeat.timeout,
        rotate_after=pool.rotate_after,
        rotation_timeout=pool.rotation_timeout,
    )
    attempt_throttle = attempts.for_url(vc.ws_url)

    def make_connection(
        connection_id: str, route: str, streams: Sequence[StreamSpec]
    ) -> ConnectionSupervisor:
        conn = ConnectionSupervisor(
            connection_id=connection_id,
            route=route,
            streams=streams,
            adapter=plan.adapter,
            settings=settings,
            connector=connector or connector_for(vc.proxy),  # type: ignore[arg-type]
            transport=transport,
            clock=clock,
            publish=hub.publish_one,
            deliver=integrity.deliver,
            rng=random.Random(f"{seed_text}/{connection_id}"),
            attempts=attempt_throttle,
            on_streams=lambda specs, missing, why: _streams_changed(
                hub, venue, specs, missing, why
            ),
            evidence=venue.evidence,
            on_rejected=lambda rejection: _drop_rejected(venue, rejection),
        )
        # Publish through the connection so the keeper sees each state change with the
        # streams the connection holds at that moment.
        conn._publish = _state_publisher(hub, venue, conn, recorder, wall)
        if recorder is not None:
            conn.on_frames = _frame_tap(recorder, wall, name, connection_id)
        for spec in streams:
            if spec.channel == "aggTrade":
                integrity.watch_trade_stream(spec.symbol, _subscribed(conn))
        return conn

    venue.make_connection = make_connection
    for cp in plan.connections:
        venue.connections.append(make_connection(cp.id, cp.route, cp.streams))
    venue.track_quality(trio.current_time())
    return venue


def _frame_tap(
    recorder: Recorder, wall: Callable[[], int], venue: str, connection_id: str
) -> Callable[[list[str | bytes]], None]:
    record = recorder.frames
    return lambda frames: record(wall(), venue, connection_id, frames)


def _state_publisher(
    hub: EventHub,
    venue: _Venue,
    conn: ConnectionSupervisor,
    recorder: Recorder | None = None,
    wall: Callable[[], int] | None = None,
) -> Callable[[Event], None]:
    """Publish a connection's events, telling the venue's integrity keeper of each state
    change (a connection SUBSCRIBED again triggers its catch-up fills) and its books (a
    connection lost takes its books out of sync), and the recorder, if any."""
    integrity = venue.integrity

    def publish(event: Event) -> None:
        hub.publish_one(event)
        if isinstance(event, StateChange):
            if recorder is not None and wall is not None:
                recorder.state(wall(), venue.name, event)
            integrity.connection_state(event, conn.streams)
            if venue.book_sync is not None:
                venue.book_sync.connection_state(event, conn.streams)

    return publish


def _build_books(venue: _Venue, hub: EventHub, seed_text: str) -> None:
    """Order books for a venue whose adapter has book rules."""
    try:
        rules = venue.adapter.book_rules()
    except NotImplementedError:
        return
    cache = venue.plan.config.cache

    def mismatch(symbol: str, what: str) -> None:
        venue.data.mismatches[symbol] = venue.data.mismatches.get(symbol, 0) + 1
        log.warning("%s %s: REST depth disagrees with the local book: %s", venue.name, symbol, what)
        _lower_quality(hub, venue, symbol, f"depth: {what}")

    books = VenueBooks(
        venue.name,
        rules,
        depth=cache.book_depth,
        min_interval_ms=round(cache.book_interval * 1000),
        on_mismatch=mismatch,
    )
    venue.data.books = books
    venue.book_sync = VenueBookSync(
        adapter=venue.adapter,
        rest=venue.rest,
        books=books,
        publish=hub.publish,
        reconciliation=venue.plan.config.reconciliation,
        rng=random.Random(f"{seed_text}/{venue.name}/books"),
    )
    venue.integrity.on_book_gap = venue.book_sync.request_snapshot
    venue.track_books()


def _book_synced(venue: _Venue, symbol: str) -> bool | None:
    books = venue.data.books
    if books is None or symbol not in books.symbols():
        return None
    return books.synced(symbol)


def _book_status(venue: _Venue) -> dict[str, Any]:
    books, sync = venue.data.books, venue.book_sync
    if books is None or sync is None:
        return {}
    symbols = books.symbols()
    return {
        "books": len(symbols),
        "books_synced": sum(books.synced(s) for s in symbols),
        "book_snapshots": sync.stats.snapshots,
        "book_resyncs": books.resyncs,
        "book_checks": sync.stats.checks,
        "book_mismatches": books.mismatches,
    }


def _publish_quality(hub: EventHub, venue: _Venue, update: QualityUpdate | None) -> None:
    if update is not None:
        hub.publish_one(
            QualityChange(update.symbol, update.score, update.reason, venue.clock.now_ms())
        )


def _lower_quality(hub: EventHub, venue: _Venue, symbol: str, what: str) -> None:
    """A REST mismatch (kline or depth) lowers the symbol's data-quality score."""
    _publish_quality(hub, venue, venue.quality.mismatch(symbol, what, trio.current_time()))


def _streams_changed(
    hub: EventHub, venue: _Venue, specs: Sequence[StreamSpec], missing: bool, why: str
) -> None:
    """A connection lost or regained streams: the symbols' quality follows."""
    now = trio.current_time()
    by_symbol: dict[str, list[str]] = {}
    for spec in specs:
        by_symbol.setdefault(spec.symbol, []).append(spec.name)
    for symbol, names in by_symbol.items():
        update = venue.quality.set_missing_streams(symbol, names, missing, why, now)
        _publish_quality(hub, venue, update)


def _check_subscription(venue: _Venue, wanted: SymbolChannels) -> None:
    """Refuse (as `ConfigError`, before changing anything) symbols and channels that cannot be
    subscribed."""
    problems: list[str] = []
    for symbol, channels in wanted.items():
        if not isinstance(symbol, str) or not symbol or symbol != symbol.strip():
            problems.append(f"symbols: {symbol!r} is not a symbol name")
        for channel in channels:
            reason = venue.adapter.check_channel(channel)
            if reason is not None:
                problems.append(f"channels: {reason}")
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    trial = copy.deepcopy(venue.plan.planner)
    now = {spec.name for spec in venue.streams()}
    want = venue.streams(wanted)
    names = {spec.name for spec in want}
    trial.remove([n for n in now if n not in names])
    trial.add(want)  # PoolCapacityError (a ConfigError) if it cannot fit


async def _apply_subscription(
    feed: Feed, venue: _Venue, wanted: SymbolChannels
) -> list[SubscriptionRejected]:
    """Re-plan ``venue`` for ``wanted`` and make every connection follow."""
    planner = venue.plan.planner
    before = {spec.name for spec in venue.streams()}
    want = venue.streams(wanted)
    names = {spec.name for spec in want}
    removed = [n for n in before if n not in names]
    added = [spec for spec in want if spec.name not in before]
    if not removed and not added and wanted == venue.subscription:
        return []
    # The keeper first learns the union (new keys ready before their first frame; removed ones
    # kept until their streams are gone), then exactly what is wanted.
    union: SymbolChannels = dict(venue.subscription)
    for symbol, channels in wanted.items():
        union[symbol] = tuple(dict.fromkeys((*union.get(symbol, ()), *channels)))
    venue.integrity.reconfigure(venue.keys(union))
    planner.remove(removed)
    planner.add(added)
    venue.subscription = dict(wanted)
    log.info(
        "%s: subscription change: +%d -%d streams (%d symbols)",
        venue.name,
        len(added),
        len(removed),
        len(wanted),
    )
    plans = {p.id: p for p in planner.plans()}
    rejections: list[SubscriptionRejected] = []
    async with trio.open_nursery() as nursery:
        for conn in list(venue.connections):
            plan = plans.get(conn.id)
            if plan is None:
                _close_connection(venue, conn)
            elif [s.name for s in conn.streams] != [s.name for s in plan.streams]:

                async def change(c: ConnectionSupervisor, streams: Sequence[StreamSpec]) -> None:
                    rejections.extend(await c.set_streams(streams))

                nursery.start_soon(change, conn, plan.streams)
    existing = {c.id for c in venue.connections}
    for plan_id, plan in plans.items():
        if plan_id not in existing:
            conn = venue.make_connection(plan.id, plan.route, plan.streams)
            venue.connections.append(conn)
            _start_connection(feed, venue, conn)
    for spec in added:
        holder = next((c for c in venue.connections if spec in c.streams), None)
        if spec.channel == "aggTrade" and holder is not None:
            venue.integrity.watch_trade_stream(spec.symbol, _subscribed(holder))
    trade_symbols = {s.symbol for s in venue.streams() if s.channel == "aggTrade"}
    for symbol in union:
        if symbol not in trade_symbols:
            venue.integrity.unwatch_trade_stream(symbol)
    venue.integrity.reconfigure(venue.keys(venue.subscription))
    venue.track_books()
    venue.track_quality(trio.current_time())
    return rejections


def _drop_rejected(venue: _Venue, rejection: SubscriptionRejected) -> None:
    """The venue refused streams: leave them out of the subscription and the plan."""
    refused = set(rejection.streams)
    subscription: SymbolChannels = {}
    for symbol, channels in venue.subscription.items():
        kept = tuple(c for c in channels if venue.adapter.stream(symbol, c).name not in refused)
        if kept:
            subscription[symbol] = kept
    venue.subscription = subscription
    venue.plan.planner.remove(refused)
    venue.integrity.reconfigure(venue.keys(subscription))
    venue.track_quality(trio.current_time())


def _close_connection(venue: _Venue, conn: ConnectionSupervisor) -> None:
    """Stop a connection whose streams were all unsubscribed."""
    venue.connections.remove(conn)
    scope = venue.scopes.pop(conn.id, None)
    if scope is not None:
        scope.cancel()
    log.info("%s: closing %s: no streams left", venue.name, conn.id)


def _start_connection(feed: Feed, venue: _Venue, conn: ConnectionSupervisor) -> None:
    if feed._connections is None:
        return  # not running yet: `_run_connections` starts every connection of the venue
    scope = trio.CancelScope()
    venue.scopes[conn.id] = scope
    feed._connections.start_soon(_run_connection, conn, scope, name=f"connection {conn.id}")


async def _run_connection(conn: ConnectionSupervisor, scope: trio.CancelScope) -> None:
    with scope:
        await conn.run()


def _subscribed(conn: ConnectionSupervisor) -> Callable[[], bool]:
    return lambda: conn.state is ConnectionState.SUBSCRIBED


async def _drain(sinks: list[Sink], done: trio.Event) -> None:
    """Wait for the sinks to finish, giving up after `SINK_DRAIN_TIMEOUT` without progress.

    A sink that is writing (a worker-thread call in flight) is never cut off in the middle;
    one stuck retrying a locked or full disk is, and the log says so. Progress is observed
    through the sinks' thread calls rather than timed: a write's duration is real time,
    which a virtual clock in tests does not see.
    """
    progress = [trio.Event()]

    def poke() -> None:
        progress[0].set()

    for sink in sinks:
        sink.on_thread_activity = poke
    while not done.is_set():
        progress[0] = trio.Event()
        if any(s.threads_in_flight for s in sinks):
            await _first_of(done, progress[0])
            continue
        with trio.move_on_after(SINK_DRAIN_TIMEOUT):
            await _first_of(done, progress[0])
        if not done.is_set() and not progress[0].is_set():
            log.error("sinks did not drain within %.0f s of shutdown", SINK_DRAIN_TIMEOUT)
            return


async def _first_of(*events: trio.Event) -> None:
    """Return when any of ``events`` is set."""
    async with trio.open_nursery() as nursery:

        async def wait(event: trio.Event) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        for event in events:
            nursery.start_soon(wait, event)


async def _run_sinks(
    sinks: list[tuple[Sink, Subscription]], done: trio.Event, scope: trio.CancelScope
) -> None:
    """Run every sink inside ``scope``, which is shielded: a cancellation of the code
    around the feed (a user's timeout, Ctrl+C) must not cut a sink off before it has
    written what it holds. The feed cancels ``scope`` itself once the drain is over."""
    try:
        with scope:
            async with trio.open_nursery() as nursery:
                for sink, sub in sinks:
                    nursery.start_soon(_run_sink, sink, sub, name=sink.name)
    finally:
        done.set()


async def _run_sink(sink: Sink, sub: Subscription) -> None:
    try:
        await sink.run(sub)
    except SlowConsumer as exc:
        # Loud, and confined to this sink: the feed and other consumers go on.
        log.error("sink %s fell behind and stopped: %s", sink.name, exc)
    except OSError as exc:
        log.error("sink %s failed and stopped: %s", sink.name, exc)


async def _run_connections(feed: Feed) -> None:
    async with trio.open_nursery() as nursery:
        feed._connections = nursery
        for venue in feed._venues:
            for conn in venue.connections:
                _start_connection(feed, venue, conn)
        await trio.sleep_forever()  # connections come and go with subscription changes


async def _serve_monitoring(
    feed: Feed, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    from .monitoring import serve_monitoring

    await serve_monitoring(feed.status, feed.config.monitoring, task_status=task_status)


async def _run_reconciliation(
    feed: Feed, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    async with trio.open_nursery() as nursery:
        for venue in feed._venues:
            nursery.start_soon(_track_server_time, venue, name=f"server time {venue.name}")
            await nursery.start(venue.integrity.run, name=f"integrity {venue.name}")
            if venue.book_sync is not None:
                await nursery.start(venue.book_sync.run, name=f"books {venue.name}")
            nursery.start_soon(_recover_quality, feed, venue, name=f"quality {venue.name}")
            if venue.plan.config.new_listings.enabled:
                nursery.start_soon(_watch_listings, feed, venue, name=f"listings {venue.name}")
        task_status.started()


async def _recover_quality(feed: Feed, venue: _Venue) -> None:
    """Raise recovering symbols' scores step by step (one step per heartbeat period)."""
    while True:
        await trio.sleep(venue.plan.config.heartbeat.check_interval)
        for update in venue.quality.tick(trio.current_time()):
            _publish_quality(feed._hub, venue, update)


async def _watch_listings(feed: Feed, venue: _Venue) -> None:
    """Poll the venue's listings; subscribe symbols listed since the feed started to the
    ``[new_listings]`` channels (what was listed at the first poll is not new)."""
    cfg = venue.plan.config.new_listings
    adapter = venue.adapter
    known: set[str] | None = None
    try:
        adapter.exchange_info_request()
    except NotImplementedError as exc:
        log.error("%s: new_listings is enabled but %s", venue.name, exc)
        return
    while True:
        try:
            response = await venue.rest.request(adapter.exchange_info_request())
            listed = adapter.parse_listed_symbols(response.text)
        except (RestError, MalformedFrame) as exc:
            log.warning("%s: listings not read: %s", venue.name, exc)
            await trio.sleep(cfg.poll_interval)
            continue
        if known is None:
            known = set(listed)
        else:
            fresh = [s for s in listed if s not in known and s not in venue.subscription]
            known.update(listed)
            if fresh:
                log.info("%s: new listings %s: subscribing %s", venue.name, fresh, cfg.channels)
                try:
                    await feed.subscribe(fresh, cfg.channels, exchange=venue.name)
                except (ConfigError, SubscriptionRejected) as exc:
                    log.error("%s: new listings not subscribed: %s", venue.name, exc)
        await trio.sleep(cfg.poll_interval)


async def _track_server_time(venue: _Venue) -> None:
    """Keep the venue's market clock in step with its server time."""
    adapter, clock = venue.plan.adapter, venue.clock
    while True:
        sent = clock.local_ms()
        try:
            response = await venue.rest.request(adapter.server_time_request())
            server_ms = adapter.parse_server_time(response.text)
        except (RestError, MalformedFrame) as exc:
            log.warning("%s: server time not read: %s", venue.name, exc)
            await trio.sleep(SERVER_TIME_RETRY)
            continue
        clock.observe(server_ms, sent, clock.local_ms())
        await trio.sleep(SERVER_TIME_INTERVAL)


# ---- history ------------------------------------------------------------------------------


async def _server_now(venue: _Venue) -> int:
    """The exchange's clock, reading it first if it has not been read yet."""
    clock = venue.clock
    if not clock.synced:
        adapter = venue.plan.adapter
        sent = clock.local_ms()
        response = await venue.rest.request(
            adapter.server_time_request(), max_wait=HISTORY_MAX_WAIT
        )
        clock.observe(adapter.parse_server_time(response.text), sent, clock.local_ms())
    return clock.now_ms()


async def _history(venue: _Venue, symbol: str, interval: str, count: int) -> list[Kline]:
    adapter = venue.plan.adapter
    cached = [k for k in venue.data.klines.klines(symbol, interval) if k.closed]
    if adapter.built_interval(f"kline_{interval}") is not None:
        return cached[-count:]
    now = await _server_now(venue) - CLOSE_MARGIN_MS
    current = bucket_open(now, interval)  # still open: the history ends before it
    # The open times wanted: ``count`` buckets ending just before ``current``.
    start = current
    for _ in range(count):
        start = _previous_open(start, interval)
    by_time: dict[int, Kline] = {}
    # The cache's contiguous tail is trusted; REST fills everything before it.
    tail: list[Kline] = []
    for k in reversed(cached):
        if k.open_time >= current:
            continue
        expected = tail[-1].open_time if tail else None
        if expected is not None and next_open(k.open_time, interval) != expected:
            break
        tail.append(k)
    rest_end = tail[-1].open_time if tail else current
    if not tail or tail[0].open_time < _previous_open(current, interval):
        # The cache stops short of the last closed kline (a fill may be running): ask REST
        # for the whole range instead of stitching around the missing piece.
        rest_end = current
    t = start
    limit = adapter.max_klines_per_request
    while t < rest_end:
        req = adapter.klines_request(
            symbol, interval, start_time=t, end_time=rest_end - 1, limit=limit
        )
        response = await venue.rest.request(req, max_wait=HISTORY_MAX_WAIT)
        page = adapter.parse_klines(response.text, symbol, interval, now)
        for k in page:
            if k.closed and start <= k.open_time < rest_end:
                by_time[k.open_time] = k
        if len(page) < limit:
            break
        t = next_open(page[-1].open_time, interval)
    for k in tail:
        if start <= k.open_time:
            by_time[k.open_time] = k  # the cache has revisions REST does not know of
    return [by_time[t] for t in sorted(by_time)][-count:]


def _previous_open(open_time: int, interval: str) -> int:
    return bucket_open(open_time - 1, interval)


def _frame(bars: list[Kline]) -> Any:
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "feed.history(..., as_frame=True) needs pandas: pip install 'trio-feed[pandas]'"
        ) from exc
    columns = [a for a in attrs.fields(Kline) if a.name != "open_time"]
    frame = pd.DataFrame(
        {a.name: [getattr(k, a.name) for k in bars] for a in columns},
        index=pd.to_datetime([k.open_time for k in bars], unit="ms", utc=True),
    )
    frame.index.name = "open_time"
    return frame
