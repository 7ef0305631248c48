"""`FakeExchange`: a Binance USD-M compatible exchange simulator, in-process or on loopback.

The Trio shell around `FakeMarket` (the truth), `FakeRestApi` (REST) and the wire formats of
`trio_feed.testing.wire`. It speaks the real protocol: a feed under test connects with
trio-websocket exactly as it would to ``wss://fstream.binance.com``, either over
`FakeExchange.connect` (memory streams, for virtual-time tests under ``autojump_clock``) or
over a real TCP port opened by `FakeExchange.serve` (the demo and benchmarks).

Timing. Exchange time is ``start_time_ms + (trio.current_time() - t0) * 1000`` where ``t0`` is
when the ``async with`` block was entered. Streams are pushed on a grid of ticks,
``t0 + tick_offset + k * tick`` (``tick_offset`` is 0.0137 s by default): odd offsets keep the
fake's deadlines from coinciding with a client's round-numbered timers, because trio orders
equal deadlines arbitrarily and a test would then see a different history from run to run.
Per-connection timers (server pings, the lifetime limit) carry a similar offset,
``timer_offset``. The loop only wakes for ticks at which a live stream has something to send,
so an idle fake costs nothing, even over a 24 h run in virtual time.

Cost. In virtual time each frame delivered to a trio-websocket client costs roughly 0.1 ms of
wall time (mostly task switches on both ends); a 24 h run therefore wants modest rates
(``trade_rate``, ``kline_every``, fewer depth streams) or a larger ``tick``. Depth streams
send a frame per change: 200 ``@depth@100ms`` streams are 2000 frames a second, about 13 s of
wall time per virtual minute for a client that only reads them. ``book_activity`` makes such
runs cheap without touching the update-id rules: with 0.1 a book changes at one step in ten
on average (the other streams stay quiet), about 2 s per virtual minute for 200 streams.

Every fault injection and observation method is documented on the class; the faults act at
once on live connections and the closing itself completes at the next scheduling point.
In short, for tests of a feed's live operation:

* listings: `FakeExchange.list_symbol` and `FakeExchange.delist_symbol` change what the
  market trades and what ``/fapi/v1/exchangeInfo`` lists;
* connections: `FakeExchange.drop_connections`, `FakeExchange.refuse_next`,
  `FakeExchange.black_hole`, `FakeExchange.ignore_close_handshake` (a peer that never
  answers a close), the ``max_attempts_per_window`` limit (`FakeExchange.attempt_times`);
* streams: `FakeExchange.silence` (optionally healed by a re-subscription),
  `FakeExchange.stall_connection_streams` (only a new connection helps),
  `FakeExchange.distort_closed_klines`, `FakeExchange.send_malformed`;
* order books: `FakeExchange.skip_depth_update`, `FakeExchange.duplicate_depth_update`,
  `FakeExchange.reorder_depth_updates`, `FakeExchange.distort_depth` (the stream lies, REST
  keeps the truth), `FakeExchange.stale_depth_snapshot` (a snapshot older than the stream);
  the truth to compare a client's books with is ``fake.market.book_at(symbol, u)``;
* rotation: `FakeExchange.announce_shutdown` sends ``serverShutdown`` and closes the
  connection ``shutdown_grace`` seconds later, as Binance does;
* limits: ``max_incoming_per_second`` (see `ConnectionRecord.max_messages_in_window`),
  REST weights and bans (`FakeExchange.rest_weight_requested_max` tells whether a client
  kept to its budget), `FakeExchange.rest_fault`.
"""

from __future__ import annotations

import bisect
import errno
import itertools
import math
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import orjson
import trio

from ._connection import Connection, ConnectionRecord, serve_websocket
from ._hub import StreamHub
from ._lifecycle import RunsItsOwnNursery
from ._transport import PrefixedStream, memory_connection
from .http import read_request_head, request_target, serve_http
from .market import FakeMarket
from .records import AggTrade, DepthDistortion, KlineBar, StaleSnapshot, SymbolSpec
from .rest import FakeRestApi, RestRequestRecord, RestResponse
from .wire import USDM_WIRE, BinanceWire, WsPath, malformed_frames, server_shutdown_payload

__all__ = ["ConnectionRecord", "FakeExchange"]

_SHUTDOWN_STREAM = "!serverShutdown"


class FakeExchange(RunsItsOwnNursery):
    """A Binance USD-M compatible exchange simulator (see the module docstring).

    Use it as ``async with FakeExchange(...) as fake:``; it runs its market clock and every
    connection in its own nursery and cancels them all on exit.

    Args:
      symbols: simulated symbols (names or `SymbolSpec`).
      seed: seed of the market's random draws.
      start_time_ms: exchange time when the block is entered (default 2026-01-01T00:00Z).
      trade_rate: mean aggregated trades per second per symbol (or a mapping per symbol).
      tick: seconds between ticks of the stream loop.
      tick_offset: time of the first tick after entering.
      depth_every: the book changes every ``depth_every`` ticks; diff streams push at
        their nominal speed (``@depth@100ms`` every 100 ms, ``@depth`` 250 ms,
        ``@depth@500ms`` 500 ms of exchange time, at most once a tick).
      book_levels: levels kept on each side of every book (REST depth answers at most these).
      book_activity: chance that a book step changes a symbol's book, for all symbols or per
        symbol (absent ones: 1.0); below 1 the book is quiet at the other steps and its diff
        streams send nothing then (see `FakeMarket`). The cheap way to run hundreds of depth
        streams.
      depth_history: book steps kept per symbol (for `FakeMarket.book_at`,
        `stale_depth_snapshot` and diffs of streams that fell behind); a few hundred bytes a
        step.
      kline_every: ticks between pushes of the open kline on kline streams.
      mark_every: ticks between ``@markPrice@1s`` pushes (``@markPrice``: three times that).
      lifetime: seconds after which a connection is closed (code 1001).
      shutdown_grace: seconds a connection stays open and delivering after
        `announce_shutdown` before the fake closes it (code 1001).
      max_incoming_per_second: a connection receiving more client messages (text, binary,
        ping, pong, close) than this within any one-second window is closed (code 1008).
      max_attempts_per_window: ``(n, seconds)``: a connection attempt that would be the
        ``n + 1``-th within ``seconds`` (every attempt counts, refused ones too) is
        rejected with HTTP 429 and a ``Retry-After``, and counted in
        `attempt_limit_violations`. Binance allows 300 attempts per 5 minutes per IP:
        ``(300, 300.0)``. None (the default): no limit.
      server_ping_interval: seconds between WebSocket pings from the fake.
      pong_timeout: a connection that leaves a ping unanswered this long is dropped.
      rest_latency: virtual seconds each `rest_transport` request takes.
      send_queue_size: frames a connection may have waiting; a client that does not read
        long enough to overflow it is disconnected ("slow-client") rather than stalling the
        market.
      socket_buffer_bytes: bytes an in-process connection buffers for a client that does not
        read, before writes block (a kernel socket buffer).
      max_streams_per_connection: SUBSCRIBE beyond this answers an error.
      weight_limit: REST request weight per minute.
      ban_seconds: length of a 418 ban.
      sent_history: payloads kept per stream for `sent` (oldest forgotten first; None keeps
        all, which a long run with many streams should not do).
      timer_offset: offset added to per-connection timers (pings, lifetime).
      handshake_timeout: seconds a client gets to send its upgrade request.

    A fake of another Binance market subclasses it and sets `wire` (stream names, paths and
    payloads) and `rest_api_class` (see `trio_feed.testing.binance_spot`).
    """

    #: The market's wire format (USD-M futures).
    wire: BinanceWire = USDM_WIRE
    #: The REST API class serving the market.
    rest_api_class: type[FakeRestApi] = FakeRestApi

    def __init__(
        self,
        *,
        symbols: Iterable[str | SymbolSpec] = ("BTCUSDT", "ETHUSDT"),
        seed: int = 0,
        start_time_ms: int = 1_767_225_600_000,
        trade_rate: float | Mapping[str, float] = 2.0,
        tick: float = 0.1,
        tick_offset: float = 0.0137,
        depth_every: int = 1,
        book_levels: int = 200,
        book_activity: float | Mapping[str, float] = 1.0,
        depth_history: int = 10_000,
        kline_every: int = 2,
        mark_every: int = 10,
        lifetime: float = 24 * 3600.0,
        shutdown_grace: float = 30.0,
        max_incoming_per_second: int = 10,
        max_attempts_per_window: tuple[int, float] | None = None,
        server_ping_interval: float = 180.0,
        pong_timeout: float = 600.0,
        rest_latency: float = 0.005,
        send_queue_size: int = 1000,
        socket_buffer_bytes: int = 256 * 1024,
        max_streams_per_connection: int = 1024,
        weight_limit: int = 2400,
        ban_seconds: float = 120.0,
        sent_history: int | None = 100_000,
        timer_offset: float = 0.0031,
        handshake_timeout: float = 10.0,
    ) -> None:
        if tick <= 0 or depth_every < 1 or kline_every < 1 or mark_every < 1:
            raise ValueError("tick must be positive and the *_every counts at least 1")
        if shutdown_grace < 0:
            raise ValueError("shutdown_grace must not be negative")
        if max_attempts_per_window is not None:
            count, window = max_attempts_per_window
            if count < 1 or window <= 0:
                raise ValueError("max_attempts_per_window needs n >= 1 and a positive window")
        self.tick = tick
        self.tick_offset = tick_offset
        self.lifetime = lifetime
        self.shutdown_grace = shutdown_grace
        self.max_incoming_per_second = max_incoming_per_second
        self.max_attempts_per_window = max_attempts_per_window
        self.server_ping_interval = server_ping_interval
        self.pong_timeout = pong_timeout
        self.rest_latency = rest_latency
        self.send_queue_size = send_queue_size
        self.socket_buffer_bytes = socket_buffer_bytes
        self.timer_offset = timer_offset
        self.handshake_timeout = handshake_timeout
        self.start_time_ms = start_time_ms
        #: The simulated market (the truth: trades, klines, book, mark prices).
        self.market = FakeMarket(
            symbols,
            seed=seed,
            start_time_ms=start_time_ms,
            trade_rate=trade_rate,
            depth_step_ms=max(1, round(tick * depth_every * 1000)),
            book_levels=book_levels,
            book_activity=book_activity,
            depth_history=depth_history,
        )
        #: The REST API (its ``requests`` list records every request).
        self.rest = self.rest_api_class(
            self.market, weight_limit=weight_limit, ban_seconds=ban_seconds
        )
        #: An httpx transport answering REST requests in-process, after ``rest_latency``.
        self.rest_transport: httpx.AsyncBaseTransport = httpx.MockTransport(self._rest_handler)
        #: Every accepted connection, open or closed, in order.
        self.connections: list[ConnectionRecord] = []
        #: Connection attempts (``connect()`` calls and loopback WebSocket requests).
        self.attempts = 0
        #: ``trio.current_time()`` of every connection attempt, refused ones included.
        self.attempt_times: list[float] = []
        #: Attempts refused by `refuse_next`.
        self.refused = 0
        #: Attempts rejected with 429 for breaking ``max_attempts_per_window``.
        self.attempt_limit_violations = 0
        #: Malformed frames queued by `send_malformed`, over all connections.
        self.malformed_sent = 0
        #: Connections closed for breaking the incoming-message limit.
        self.incoming_limit_violations = 0
        #: Connections closed because their outgoing queue overflowed.
        self.slow_client_drops = 0
        self._hub = StreamHub(
            self.market,
            kline_every=kline_every,
            mark_every=mark_every,
            max_streams_per_connection=max_streams_per_connection,
            sent_history=sent_history,
            wire=self.wire,
        )
        self._conns: dict[int, Connection] = {}
        self._ids = itertools.count(1)
        self._refusals: deque[tuple[int | None, float | None]] = deque()
        self._pending: list[AggTrade | KlineBar] = []
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._t0: float | None = None
        self._wake = trio.Event()
        self._ignore_close = False

    # ------------------------------------------------------------------ lifecycle

    def _running(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("use the FakeExchange inside 'async with FakeExchange() as fake:'")
        return self._nursery

    def now_ms(self) -> int:
        """Exchange time in milliseconds (``start_time_ms`` until the fake is entered)."""
        if self._t0 is None:
            return self.start_time_ms
        # The epsilon keeps e.g. 0.3 s from becoming 299 ms through float rounding.
        return self.start_time_ms + math.floor((trio.current_time() - self._t0) * 1000 + 1e-6)

    def _advance(self) -> int:
        now = self.now_ms()
        for event in self.market.advance_to(now):
            # Only what a live stream could carry is kept for the next tick (with no live
            # stream, no tick runs to drain it).
            if self._hub.live and isinstance(event, AggTrade | KlineBar):
                self._pending.append(event)
                self._wake.set()  # e.g. a REST call made news: the tick loop should look
        return now

    # ------------------------------------------------------------------ the tick loop

    def _tick_ms(self, k: int) -> int:
        """Exchange time of tick ``k`` (as `now_ms` reads it at that tick)."""
        return self.start_time_ms + math.floor((self.tick_offset + k * self.tick) * 1000 + 1e-6)

    def _tick_at(self, ms: int) -> int:
        """The first tick whose exchange time is at or after ``ms``."""
        k = max(0, math.ceil(((ms - self.start_time_ms) / 1000 - self.tick_offset) / self.tick))
        while self._tick_ms(k) < ms:
            k += 1
        while k > 0 and self._tick_ms(k - 1) >= ms:
            k -= 1
        return k

    def _next_due(self, k: int) -> int | None:
        if self._pending:
            return k + 1
        return self._hub.next_due(k, self._tick_at)

    async def _tick_loop(self) -> None:
        # Wakes only for the ticks at which something is due (see StreamHub.next_due); what
        # it sends is exactly what a loop waking at every tick would send.
        assert self._t0 is not None
        k: int | None = 0
        while True:
            deadline = math.inf if k is None else self._t0 + self.tick_offset + k * self.tick
            self._wake = trio.Event()
            with trio.move_on_at(deadline):
                await self._wake.wait()
            if k is None or trio.current_time() < deadline:
                # Woken early (a new stream, or news from a REST call): plan again from the
                # last tick that has passed.
                passed = math.floor((trio.current_time() - self._t0 - self.tick_offset) / self.tick)
                k = self._next_due(passed)
                continue
            now = self._advance()
            events, self._pending = self._pending, []
            self._hub.tick(k, now, events)
            k = self._next_due(k)

    # ------------------------------------------------------------------ connecting

    async def connect(self, url: str) -> trio.abc.Stream:
        """Open an in-process connection; returns the client's end of the byte stream.

        The connector for tests: hand the result to ``trio_websocket.wrap_client_stream``
        with the path of ``url``. Raises ``OSError`` (ECONNREFUSED) when `refuse_next` says
        so. The stream is one end of `trio.testing.memory_stream_pair` (its halves are
        ``.send_stream`` and ``.receive_stream``), wrapped to count what the client reads.
        """
        nursery = self._running()
        await trio.lowlevel.checkpoint()
        refusal = self._attempt()
        if refusal is not None and refusal[0] is None:
            raise OSError(errno.ECONNREFUSED, f"connection refused: {url}")
        client, server, account = memory_connection(self.socket_buffer_bytes)
        nursery.start_soon(serve_websocket, self, server, account, refusal)
        return client

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[tuple[str, str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on a real TCP port serving WebSocket upgrades and REST on the same port.

        Request paths under ``/fapi/`` (`BinanceWire.rest_prefix`) are REST (HTTP/1.1 via
        h11); everything else is a WebSocket upgrade. Reports ``(ws_url, rest_url)`` through
        ``task_status``, e.g. ``("ws://127.0.0.1:PORT", "http://127.0.0.1:PORT")``. Use with
        ``nursery.start``, inside the ``async with`` block, on the real clock (never under
        autojump). A refusal without status closes the accepted socket before answering.
        """
        nursery = self._running()
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        task_status.started((f"ws://{host}:{bound}", f"http://{host}:{bound}"))
        await trio.serve_listeners(self._serve_tcp, listeners, handler_nursery=nursery)

    async def _serve_tcp(self, stream: trio.SocketStream) -> None:
        head = None
        with trio.move_on_after(self.handshake_timeout):
            try:
                head = await read_request_head(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                head = None
        if head is None:
            await trio.aclose_forcefully(stream)
            return
        replay = PrefixedStream(stream, head)
        if request_target(head).startswith(self.wire.rest_prefix):
            await serve_http(replay, self._http_handler)
            return
        refusal = self._attempt()
        if refusal is not None and refusal[0] is None:
            await trio.aclose_forcefully(stream)
            return
        await serve_websocket(self, replay, None, refusal)

    def _attempt(self) -> tuple[int | None, float | None] | None:
        """Count a connection attempt; return how to refuse it, or None to accept it."""
        now = trio.current_time()
        self.attempts += 1
        self.attempt_times.append(now)
        if self.max_attempts_per_window is not None:
            limit, window = self.max_attempts_per_window
            # Attempts exactly ``window`` apart are not in the same window (as for the
            # incoming-message limit; the epsilon absorbs float sums).
            first = bisect.bisect_right(self.attempt_times, now - window + 1e-6)
            if len(self.attempt_times) - first > limit:
                self.attempt_limit_violations += 1
                # A new attempt is accepted once at most limit - 1 of the attempts so far
                # (this one included) are in its window: once the attempt `limit` places
                # from the end has left it.
                oldest = self.attempt_times[len(self.attempt_times) - limit]
                return (429, oldest + window - now)
        refusal = self._refusals.popleft() if self._refusals else None
        if refusal is not None:
            self.refused += 1
        return refusal

    # ------------------------------------------------------------------ ConnectionOwner (private)

    def _ignores_close(self) -> bool:
        """Whether client close frames are ignored now (used by the connection code)."""
        return self._ignore_close

    def _next_connection_id(self) -> int:
        """The id of the next accepted connection (used by the connection code)."""
        return next(self._ids)

    def _opened(self, conn: Connection, parsed: WsPath) -> None:
        """A connection was accepted (used by the connection code)."""
        self.connections.append(conn.record)
        self._conns[conn.record.id] = conn
        now = self._advance()
        self._hub.subscribe(conn, parsed.streams, now)
        self._wake.set()  # a stream may have gone live: the tick loop should plan again

    def _closed(self, conn: Connection) -> None:
        """A connection ended (used by the connection code)."""
        self._hub.unsubscribe(conn, list(conn.record.streams), forget=False)
        self._conns.pop(conn.record.id, None)

    def _close_requested(self, conn: Connection, kind: str) -> None:
        """A connection decided to close (used by the connection code, for the counters)."""
        if kind == "incoming-limit":
            self.incoming_limit_violations += 1
        elif kind == "slow-client":
            self.slow_client_drops += 1

    def _control_reply(self, conn: Connection, text: str) -> dict[str, Any]:
        """Answer a client's control message (used by the connection code)."""
        self._advance()
        reply = self._hub.control_reply(conn, text)
        self._wake.set()  # a stream may have gone live: the tick loop should plan again
        return reply

    def _record_sent(self, stream: str, connection_id: int, payload: str) -> None:
        """Log a written payload (used by the connection code)."""
        self._hub.record_sent(stream, connection_id, payload)

    # ------------------------------------------------------------------ REST

    def rest_call(self, method: str, target: str) -> RestResponse:
        """Answer one REST request now (``target``: path and query), without latency."""
        now = self._advance()
        return self.rest.handle(method, target, now)

    async def _rest_handler(self, request: httpx.Request) -> httpx.Response:
        await trio.sleep(self.rest_latency)
        response = self.rest_call(request.method, request.url.raw_path.decode("ascii"))
        return httpx.Response(
            response.status, headers=list(response.headers), content=response.body
        )

    async def _http_handler(self, method: str, target: str) -> RestResponse:
        await trio.lowlevel.checkpoint()
        return self.rest_call(method, target)

    # ------------------------------------------------------------------ fault injection

    def _matching(self, route: str | None) -> Iterator[Connection]:
        routes = self.wire.routes
        if route is not None and route not in routes:
            raise ValueError(f"route must be one of {routes} or None, not {route!r}")
        for conn in list(self._conns.values()):
            if not conn.closing and (route is None or conn.record.route == route):
                yield conn

    def drop_connections(
        self,
        route: str | None = None,
        *,
        abrupt: bool = True,
        code: int = 1001,
        reason: str = "dropped by FakeExchange",
    ) -> int:
        """Close the live connections on ``route`` (all if None); returns how many.

        ``abrupt`` (the default) ends the transport without a close frame: what was already
        written is delivered, then the client sees the connection end with code 1006, so
        `sent` equals what the client could read. Otherwise a close frame with ``code`` and
        ``reason`` is sent. Frames still queued are discarded (and not recorded as sent).
        """
        count = 0
        for conn in self._matching(route):
            conn.request_close("dropped", code=code, reason=reason, abrupt=abrupt)
            count += 1
        return count

    def refuse_next(
        self, n: int = 1, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        """Make the next ``n`` connection attempts fail.

        ``status`` None: `connect` raises ``OSError`` ("connection refused"; on loopback the
        socket is closed unanswered). An HTTP status (503, 429, ...): the WebSocket handshake
        is rejected with it (``ConnectionRejected`` on the client), with a ``Retry-After``
        header if ``retry_after`` is given.
        """
        self._refusals.extend([(status, retry_after)] * n)

    def black_hole(self, route: str | None = None) -> int:
        """Freeze the live connections on ``route``: they stop reading, writing and answering
        pings, so the client's ping times out. Frames meanwhile are discarded (not recorded
        as sent). The fake drops such a connection when its own ping has gone unanswered for
        ``pong_timeout`` (or at ``lifetime``). Returns how many were frozen."""
        count = 0
        for conn in self._matching(route):
            if not conn.server.frozen:
                conn.server.frozen = True
                conn.record.black_holed = True
                count += 1
        return count

    def silence(
        self, stream_name: str, on: bool = True, *, resubscribe_heals: bool = False
    ) -> None:
        """Stop (or, with ``on=False``, resume) sending frames of ``stream_name`` on every
        connection; connections stay alive and answer pings and control messages. Depth
        streams keep advancing their update ids while silenced, so the client sees a ``pu``
        gap afterwards.

        By default the silence holds until ``on=False``, whatever the client does:
        re-subscribing (UNSUBSCRIBE then SUBSCRIBE) or a new connection does not help.
        With ``resubscribe_heals=True`` the next subscription of the stream (a SUBSCRIBE
        of it on a connection that does not hold it, after an UNSUBSCRIBE for instance, or
        a new connection subscribing it) ends the silence for every connection: a stuck
        stream that a re-subscribe fixes. A SUBSCRIBE of a stream the connection already
        holds changes nothing, as on Binance.
        """
        if on:
            self._hub.silenced[stream_name] = resubscribe_heals
        else:
            self._hub.silenced.pop(stream_name, None)

    def stall_connection_streams(self, connection_id: int) -> None:
        """Silence every stream of connection ``connection_id`` (a `ConnectionRecord.id`),
        including streams it subscribes later, for as long as it lives.

        The socket stays open, answers pings and control messages (re-subscribing is
        acknowledged, and does not help); frames meanwhile are not sent (nor recorded as
        sent). Other connections, new ones included, are unaffected: only a new connection
        helps. ValueError if no live connection has that id.
        """
        conn = self._conns.get(connection_id)
        if conn is None or conn.closing:
            raise ValueError(f"no live connection with id {connection_id}")
        conn.record.streams_stalled = True

    def send_malformed(self, n: int = 1, route: str | None = None) -> int:
        """Send ``n`` malformed frames on each live connection on ``route``.

        They cycle through truncated JSON, a payload with fields of the wrong types, a JSON
        array, non-JSON text and an envelope whose ``data`` is not an object (see
        `trio_feed.testing.wire.malformed_frames`), named after the connection's first
        stream. Returns the number of frames queued.
        """
        queued = 0
        now = self.now_ms()
        for conn in self._matching(route):
            stream = conn.record.streams[0] if conn.record.streams else "btcusdt@aggTrade"
            spec = self._hub.parse(stream)
            frames = malformed_frames(
                stream, spec.kind if spec else None, combined=conn.record.combined, event_time=now
            )
            for _ in range(n):
                text = frames[conn.malformed_index % len(frames)]
                conn.malformed_index += 1
                conn.enqueue(None, None, text)
                conn.record.malformed_sent += 1
                self.malformed_sent += 1
                queued += 1
        return queued

    def _known(self, symbol: str) -> None:
        if symbol not in self.market.symbols:
            raise ValueError(f"unknown symbol {symbol!r}")

    def skip_depth_update(self, symbol: str) -> None:
        """Generate but do not send the next diff of each ``symbol`` depth stream (or of the
        first one to start, if none is live): the client then sees ``pu`` != previous ``u``.
        Skipped payloads are kept in `depth_skipped`."""
        self._known(symbol)
        self._hub.depth_fault(symbol, skip=1)

    def duplicate_depth_update(self, symbol: str, n: int = 1) -> None:
        """Send each of the next ``n`` diffs of each ``symbol`` depth stream (or of the first
        one to start, if none is live) twice in a row, as identical frames: the copy's ``u``
        is not above the ``u`` just applied, which a client must ignore rather than apply or
        treat as a gap. The duplicated payloads are kept in `depth_duplicated`.

        Like every depth fault, it counts the diffs as generated: a diff that nobody
        receives (a silenced stream) uses it up too, and a skipped diff is only skipped.
        """
        self._known(symbol)
        self._hub.depth_fault(symbol, duplicate=n)

    def distort_depth(self, symbol: str, n: int = 1) -> None:
        """Send the next ``n`` diffs of each ``symbol`` depth stream (or of the first one to
        start, if none is live) with a wrong quantity for one of their levels, ids intact:
        the stream lies while REST snapshots and `FakeMarket.book_at` keep the truth, which
        is what a client's depth reconciliation is there to catch.

        The level nearest the touch that the diff sets (its highest bid, else its lowest ask)
        gets twice its quantity plus one lot step; a diff that only removes levels turns its
        first removal into a phantom level. Each distortion is recorded in
        `depth_distorted` (a `DepthDistortion`). The client's book stays wrong at that price
        until a later diff sets the price again.
        """
        self._known(symbol)
        self._hub.depth_fault(symbol, distort=n)

    def reorder_depth_updates(self, symbol: str) -> None:
        """Send the next two diffs of each ``symbol`` depth stream (or of the first one to
        start, if none is live) in swapped order: the second (whose ``pu`` is the first's
        ``u``) arrives, then the first. Each pair is recorded in `depth_reordered`. Calling
        it again swaps the following pair too.

        The first diff is held until the second is generated (a stream whose book does not
        change holds it meanwhile); unsubscribing the stream drops it.
        """
        self._known(symbol)
        self._hub.depth_fault(symbol, reorder=1)

    def stale_depth_snapshot(self, symbol: str, updates_behind: int = 50, count: int = 1) -> None:
        """Answer the next ``count`` successful REST depth snapshots of ``symbol`` with the
        book as it was ``updates_behind`` book steps ago: an older ``lastUpdateId`` with the
        levels of that time (at most ``depth_history`` steps back; with a shorter history,
        the oldest retained book). With the default 50 (5 s of 100 ms steps), a client that
        subscribed a moment ago gets "a snapshot older than the first buffered event" and
        must fetch again. Each answer is recorded in `stale_snapshots`. Requests answered
        otherwise (faults, 429, bad parameters) do not use it up.
        """
        self.rest.stale_depth(symbol, updates_behind, count)

    def distort_closed_klines(self, symbol: str, interval: str, count: int = 1) -> None:
        """Send the next ``count`` closed klines of ``symbol`` and ``interval`` (plain and
        continuous streams alike) with a wrong close and volume, while REST keeps serving
        the truth: what a client's REST reconciliation is there to catch."""
        if symbol not in self.market.symbols:
            raise ValueError(f"unknown symbol {symbol!r}")
        self._hub.distort_closed_klines(symbol, interval, count)

    def list_symbol(self, symbol: str | SymbolSpec, trade_rate: float | None = None) -> SymbolSpec:
        """List a new symbol now: from the current exchange time the market trades it.

        It gets trades, klines (the first of each interval partial), a book and mark prices
        like every other symbol (see `FakeMarket.add_symbol`; its history depends only on
        ``seed``, its name and this moment, not on when other symbols were listed). Its
        streams can be subscribed from now on, REST answers for it, and
        ``/fapi/v1/exchangeInfo`` lists it (``onboardDate`` = now). Before, its streams are
        accepted and deliver nothing, as for any unknown stream, and REST answers
        ``Invalid symbol``; connections that subscribed its streams before the listing
        receive them from now on. ``trade_rate`` None takes the constructor's rate for it.
        ValueError if the symbol is already listed (or was delisted).
        """
        self._advance()  # the market catches up, so the new symbol starts trading now
        spec = self.market.add_symbol(symbol, trade_rate)
        self._hub.add_symbol(spec.symbol, list(self._conns.values()), self.market.now_ms)
        self._wake.set()  # a stream may have gone live: the tick loop should plan again
        return spec

    def delist_symbol(self, symbol: str) -> None:
        """Report ``symbol`` as ``SETTLING`` (not trading) in ``/fapi/v1/exchangeInfo``.

        Nothing else changes: the market keeps simulating it and its streams and REST
        answers continue, so a test sees exactly what a feed does with the listing alone.
        """
        if symbol not in self.market.symbols:
            raise ValueError(f"unknown symbol {symbol!r}")
        self.rest.delisted.add(symbol)

    def announce_shutdown(self, route: str | None = None) -> int:
        """Send the ``serverShutdown`` event (stream ``!serverShutdown``) on the live
        connections on ``route`` (all if None); returns how many.

        As on Binance, an announced connection stays open and keeps delivering for
        ``shutdown_grace`` seconds (plus ``timer_offset``), then the fake closes it with
        code 1001 (`ConnectionRecord.close_reason` ``"shutdown"``; the time is in
        `ConnectionRecord.shutdown_at`), unless the client has left before. A client is
        expected to open a new connection in the meantime and move its streams over.
        """
        now = self.now_ms()
        data = orjson.dumps(server_shutdown_payload(now)).decode()
        close_at = trio.current_time() + self.shutdown_grace + self.timer_offset
        count = 0
        for conn in self._matching(route):
            text = data
            if conn.record.combined:
                text = f'{{"stream":"{_SHUTDOWN_STREAM}","data":{data}}}'
            conn.enqueue(_SHUTDOWN_STREAM, data, text)
            conn.schedule_shutdown(close_at)
            count += 1
        return count

    def ignore_close_handshake(self, on: bool = True) -> None:
        """While on, the fake never answers a client's WebSocket close frame and never
        closes the transport itself afterwards: a peer that hangs.

        A connection whose client starts a close meanwhile hangs for good (turning this
        off later does not revive it): the close frame is withheld from the server's
        WebSocket (`ConnectionRecord.close_frame_ignored` is set), nothing more is
        written, pings stop and the lifetime and shutdown timers no longer close it. The
        client's close therefore waits until the client gives up and closes the transport
        itself, which the fake notices (``close_reason`` ``"client"``, ``close_code``
        None). Faults such as `drop_connections` and the fake's exit still end it. Closes
        the fake starts itself (lifetime, limits, shutdown) still complete: the client's
        answering close frame goes through.
        """
        self._ignore_close = on

    def rest_fault(
        self,
        path: str,
        status: int,
        *,
        retry_after: float | None = None,
        count: int = 1,
        body: bytes | str | dict[str, Any] | None = None,
    ) -> None:
        """Answer the next ``count`` REST requests to ``path`` (e.g. ``/fapi/v1/depth``) with
        ``status``, a ``Retry-After`` header if ``retry_after`` is given, and ``body`` (a
        Binance-style error body by default). Faulted requests cost no weight."""
        self.rest.add_fault(path, status, retry_after=retry_after, count=count, body=body)

    def set_incoming_limit(self, per_second: int) -> None:
        """Change the incoming-messages-per-second limit, for live connections too."""
        self.max_incoming_per_second = per_second

    # ------------------------------------------------------------------ observation

    @property
    def depth_skipped(self) -> list[dict[str, Any]]:
        """Depth diffs generated but not sent because of `skip_depth_update`, in order."""
        return self._hub.depth_skipped

    @property
    def depth_duplicated(self) -> list[dict[str, Any]]:
        """Depth diffs sent twice because of `duplicate_depth_update`, in order."""
        return self._hub.depth_duplicated

    @property
    def depth_distorted(self) -> list[DepthDistortion]:
        """The wrong quantities sent because of `distort_depth`, in order."""
        return self._hub.depth_distorted

    @property
    def depth_reordered(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Pairs of diffs (first generated, second generated) sent swapped because of
        `reorder_depth_updates`, in order."""
        return self._hub.depth_reordered

    @property
    def stale_snapshots(self) -> list[StaleSnapshot]:
        """The REST depth snapshots answered from the past (`stale_depth_snapshot`)."""
        return self.rest.stale_snapshots

    @property
    def rest_weight_used_max(self) -> int:
        """The most REST weight granted in any one UTC minute (never above
        ``weight_limit``: a request that would go over it gets 429 instead)."""
        return self.rest.max_used_weight

    @property
    def rest_weight_requested_max(self) -> int:
        """The most REST weight asked for in any one UTC minute, whatever the answers (429s
        and 418s included, injected `rest_fault` answers not): a client that kept to the
        budget has ``rest_weight_requested_max <= weight_limit``. Per minute:
        ``fake.rest.requested_weight_by_minute`` and ``fake.rest.weight_by_minute``."""
        return self.rest.max_requested_weight

    @property
    def live_connections(self) -> list[ConnectionRecord]:
        """The connections still open."""
        return [r for r in self.connections if r.is_open]

    def sent(self, stream_name: str, connection: int | None = None) -> list[dict[str, Any]]:
        """The payloads (the ``data`` part) written on ``stream_name``, in order.

        Over all connections (a payload appears once per connection that carried it), or only
        connection id ``connection``. Only frames actually written count: queued frames lost
        in a drop, silenced or skipped frames are not here. At most ``sent_history`` recent
        payloads per stream are kept; `sent_count` counts them all.
        """
        return self._hub.sent(stream_name, connection)

    def sent_count(self, stream_name: str) -> int:
        """How many payloads were written on ``stream_name`` (over all connections)."""
        return self._hub.sent_count(stream_name)

    @property
    def rest_requests(self) -> list[RestRequestRecord]:
        """Every REST request handled, in order."""
        return self.rest.requests

    @property
    def rest_calls(self) -> Counter[str]:
        """REST requests per path."""
        return self.rest.calls
