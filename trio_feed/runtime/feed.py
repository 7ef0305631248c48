"""``open_feed()``: the root of the nursery tree, and the `Feed` handle it yields.

::

    open_feed (root nursery)
    ├── connections nursery
    │   ├── ConnectionSupervisor binance-usdm/market/0   (backoff-restart loop)
    │   │   └── attempt nursery: trio-websocket reader, our reader, pinger
    │   └── ConnectionSupervisor binance-usdm/public/1
    │       └── attempt nursery: ...
    └── reconciliation nursery
        └── server-time tracker per venue (REST /fapi/v1/time -> market clock)

One connection's failure stays inside its own supervisor: it reconnects (or ends FAILED)
without touching any other connection's streams. Leaving the ``async with`` cancels the
root nursery, which closes every socket and REST client.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import trio

from ..config import FeedConfig
from ..core.backoff import BackoffPolicy
from ..core.clock import MarketClock
from ..errors import MalformedFrame, SlowConsumer
from ..events import DepthDiff, Event
from ..plan import VenuePlan, plan_feed
from ..venues.base import ParsedItem
from .connection import ConnectionSettings, ConnectionSupervisor
from .fanout import EventHub, Subscription
from .rest import RestClient, RestError
from .sinks import SINK_MAX_BUFFER, Sink, check_sinks, make_sink
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


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class _Venue:
    """A venue's runtime: its plan, clock, REST client and connections."""

    def __init__(self, plan: VenuePlan, clock: MarketClock, rest: RestClient) -> None:
        self.plan = plan
        self.name = plan.adapter.name
        self.clock = clock
        self.rest = rest
        self.connections: list[ConnectionSupervisor] = []
        #: Order-book diffs parsed (they become ``book`` events once books are kept).
        self.depth_diffs = 0
        self.has_depth = any(s.channel == "depth" for c in plan.connections for s in c.streams)


class Feed:
    """A running feed. Get one from ``open_feed()``."""

    def __init__(self, config: FeedConfig, hub: EventHub) -> None:
        self.config = config
        self._hub = hub
        self._venues: list[_Venue] = []

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
            venues.append(
                VenueStatus(
                    name=venue.name,
                    clock_offset_ms=venue.clock.offset_ms if venue.clock.synced else None,
                    rest_requests=rest.requests,
                    rest_errors=rest.errors,
                    rest_used_weight=rest.used_weight,
                    rest_banned_for=(banned - now) if banned is not None and banned > now else None,
                    rest_last_error=rest.last_error,
                )
            )
        return FeedStatus(tuple(connections), tuple(venues), self._hub.subscriptions)

    def market_time(self, venue: str | None = None) -> int:
        """The exchange's clock in ms (the first venue's, unless named)."""
        for v in self._venues:
            if venue is None or v.name == venue:
                return v.clock.now_ms()
        raise KeyError(venue)

    # ---- wiring (used by open_feed) -----------------------------------------------------

    def _router(self, venue: _Venue) -> Callable[[list[ParsedItem]], None]:
        publish = self._hub.publish

        def deliver(items: list[ParsedItem]) -> None:
            # Fast path: a batch holds no order-book diffs unless depth is subscribed.
            if not venue.has_depth:
                publish(items)  # type: ignore[arg-type]
                return
            events: list[Event] = []
            for item in items:
                if item.__class__ is DepthDiff:
                    venue.depth_diffs += 1
                else:
                    events.append(item)  # type: ignore[arg-type]
            if events:
                publish(events)

        return deliver


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
    # Subscribe sinks before anything runs, so they see every event from the first one.
    sinks = [(make_sink(s), hub.subscribe(SINK_MAX_BUFFER)) for s in config.sinks]
    sinks_done = trio.Event()
    try:
        async with trio.open_nursery() as sink_nursery:
            sink_nursery.start_soon(_run_sinks, sinks, sinks_done, name="sinks")
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
                            )
                        )
                    root.start_soon(_run_connections, feed, name="connections")
                    root.start_soon(_run_reconciliation, feed, name="reconciliation")
                    try:
                        yield feed
                    finally:
                        root.cancel_scope.cancel()
            finally:
                # Connections are down: let the sinks drain what they hold, then close.
                hub.close()
                with trio.move_on_after(SINK_DRAIN_TIMEOUT, shield=True):
                    await sinks_done.wait()
                sink_nursery.cancel_scope.cancel()
    finally:
        hub.close()


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
) -> _Venue:
    vc = plan.config
    rest = RestClient(
        plan.adapter,
        vc.rest_url,
        transport=rest_transport,  # type: ignore[arg-type]
        proxy=vc.proxy,
        timeout=vc.reconnect.connect_timeout,
    )
    stack.push_async_callback(rest.aclose)
    venue = _Venue(plan, MarketClock(wall), rest)
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
    deliver = feed._router(venue)
    for cp in plan.connections:
        venue.connections.append(
            ConnectionSupervisor(
                connection_id=cp.id,
                route=cp.route,
                streams=cp.streams,
                adapter=plan.adapter,
                settings=settings,
                connector=connector or TcpConnector(),  # type: ignore[arg-type]
                transport=transport,
                clock=venue.clock,
                publish=hub.publish_one,
                deliver=deliver,
                rng=random.Random(f"{seed_text}/{cp.id}"),
            )
        )
    return venue


async def _run_sinks(sinks: list[tuple[Sink, Subscription]], done: trio.Event) -> None:
    try:
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


async def _run_reconciliation(feed: Feed) -> None:
    async with trio.open_nursery() as nursery:
        for venue in feed._venues:
            nursery.start_soon(_track_server_time, venue, name=f"server time {venue.name}")


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
