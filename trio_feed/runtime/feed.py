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
    │   └── VenueIntegrity per venue: REST fills of gaps (one task per key at most),
    │       kline reconciliation spread over ``kline_interval``, the build ticker
    └── (beside the root) sinks nursery: each sink drains after the connections close

One connection's failure stays inside its own supervisor: it reconnects (or ends FAILED)
without touching any other connection's streams. Leaving the ``async with`` cancels the
root nursery, which closes every socket and REST client.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
import httpx
import trio

from ..config import FeedConfig
from ..core.backoff import BackoffPolicy
from ..core.clock import MarketClock
from ..core.intervals import bucket_open, is_interval, next_open
from ..core.keeper import ResumePoint, VenueData
from ..core.state import ConnectionState
from ..errors import MalformedFrame, SlowConsumer
from ..events import Event, Kline, StateChange, Trade
from ..plan import VenuePlan, plan_feed
from ..venues.base import StreamSpec
from .connection import ConnectionSettings, ConnectionSupervisor
from .fanout import EventHub, Subscription
from .integrity import CLOSE_MARGIN_MS, VenueIntegrity
from .rest import RestClient, RestError
from .sinks import SINK_MAX_BUFFER, Sink, check_sinks, make_sink
from .sqlite_store import read_resume_points
from .status import ConnectionStatus, FeedStatus, VenueStatus
from .transport import Connector, TcpConnector, Transport, WebsocketsTransport

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


class _Venue:
    """A venue's runtime: its plan, clock, REST client, data keeper and connections."""

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
        self.clock = clock
        self.rest = rest
        self.data = data
        self.integrity = integrity
        self.connections: list[ConnectionSupervisor] = []


def venue_data(plan: VenuePlan, resume: ResumePoint | None = None) -> VenueData:
    """The data keeper of one planned venue: which kline keys are streamed, which built
    from trades, whose trades are published."""
    adapter, vc = plan.adapter, plan.config
    kline_keys: list[tuple[str, str]] = []
    built: dict[str, list[str]] = {}
    trade_symbols: set[str] = set()
    published: set[str] = set()
    for symbol in vc.symbols:
        for channel in vc.channels:
            interval = adapter.built_interval(channel)
            if interval is not None:
                built.setdefault(symbol, []).append(interval)
                trade_symbols.add(symbol)
                continue
            key = adapter.kline_key(symbol, channel)
            if key is not None:
                kline_keys.append(key)
            elif channel == "aggTrade":
                trade_symbols.add(symbol)
                published.add(symbol)
    cache = vc.cache
    return VenueData(
        adapter.name,
        kline_keys=kline_keys,
        built=built,
        trade_symbols=sorted(trade_symbols),
        published_trades=published,
        kline_max_size=cache.kline_max_size,
        trade_max_size=cache.aggtrade_max_size,
        trade_window_ms=round(cache.aggtrade_time_window * 1000),
        resume=resume,
    )


class Feed:
    """A running feed. Get one from ``open_feed()``."""

    def __init__(self, config: FeedConfig, hub: EventHub) -> None:
        self.config = config
        self._hub = hub
        self._venues: list[_Venue] = []
        self._sinks: list[Sink] = []
        #: The latest REST mismatches, newest last (see `_report_mismatch`).
        self._mismatches: list[tuple[str, str, str, int, tuple[str, ...]]] = []

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
                    klines_skipped=sum(q.skipped for q in data.kline_seqs.values()),
                    trade_ids_skipped=sum(q.skipped for q in data.trade_seqs.values()),
                    reconcile_checks=fills.reconcile_checks,
                    reconcile_mismatches=dict(data.mismatches),
                )
            )
        return FeedStatus(
            tuple(connections),
            tuple(venues),
            self._hub.subscriptions,
            tuple(sink.status() for sink in self._sinks),
        )

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
        """The one place a REST mismatch of a symbol's data is reported (the data-quality
        score of the live-operations work lowers the symbol's score here). It is already
        logged, counted in ``status()`` and published as a ``reconcile`` event."""
        self._mismatches.append((venue, symbol, interval, open_time, mismatches))
        del self._mismatches[:-100]


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
) -> AsyncIterator[Feed]:
    """Run a feed for ``config`` inside ``async with``; leaving the block stops it.

    Keyword arguments are seams for tests and embedding (all optional): ``connector``
    opens byte streams (default TCP/TLS; the fake exchange's ``connect`` in tests; a
    mapping gives one per venue name), ``transport`` speaks WebSocket over them
    (default `WebsocketsTransport`; `TrioWebsocketTransport` is the other),
    ``rest_transport`` is an httpx transport (or one per venue), ``wall_clock`` the
    local clock in epoch ms, ``seed`` seeds the backoff jitter.

    With a SQLite sink, the feed first reads where the store's last run stopped (the last
    closed kline per key, the last trade id per symbol) and fills from there, so a restart
    loses nothing either.

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
    resume = await _read_resume_points(config, plans)
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
                            )
                        )
                    await root.start(_run_reconciliation, feed, name="reconciliation")
                    root.start_soon(_run_connections, feed, name="connections")
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
) -> _Venue:
    vc = plan.config
    clock = MarketClock(wall)
    name = plan.adapter.name
    rest = RestClient(
        plan.adapter,
        vc.rest_url,
        transport=rest_transport,  # type: ignore[arg-type]
        proxy=vc.proxy,
        timeout=vc.reconnect.connect_timeout,
        clock=clock,
        rng=random.Random(f"{seed_text}/{name}/rest"),
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
    )
    for cp in plan.connections:
        conn = ConnectionSupervisor(
            connection_id=cp.id,
            route=cp.route,
            streams=cp.streams,
            adapter=plan.adapter,
            settings=settings,
            connector=connector or TcpConnector(),  # type: ignore[arg-type]
            transport=transport,
            clock=clock,
            publish=_state_publisher(hub, integrity, cp.streams),
            deliver=integrity.deliver,
            rng=random.Random(f"{seed_text}/{cp.id}"),
        )
        venue.connections.append(conn)
        for spec in cp.streams:
            if spec.channel == "aggTrade":
                integrity.watch_trade_stream(spec.symbol, _subscribed(conn))
    return venue


def _state_publisher(
    hub: EventHub, integrity: VenueIntegrity, streams: Sequence[StreamSpec]
) -> Callable[[Event], None]:
    """Publish a connection's events, telling the venue's integrity keeper of each state
    change (a connection SUBSCRIBED again triggers its catch-up fills)."""

    def publish(event: Event) -> None:
        hub.publish_one(event)
        if isinstance(event, StateChange):
            integrity.connection_state(event, streams)

    return publish


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
        for venue in feed._venues:
            for conn in venue.connections:
                nursery.start_soon(conn.run, name=f"connection {conn.id}")


async def _run_reconciliation(
    feed: Feed, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    async with trio.open_nursery() as nursery:
        for venue in feed._venues:
            nursery.start_soon(_track_server_time, venue, name=f"server time {venue.name}")
            await nursery.start(venue.integrity.run, name=f"integrity {venue.name}")
        task_status.started()


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
