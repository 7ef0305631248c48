"""`FakeOkx`: an OKX v5 public market-data simulator for tests, in-process under the mock clock.

It speaks OKX's protocol over `trio.testing` memory streams (trio-websocket's server side):
``/ws/v5/business`` serves ``candle<bar>``, ``/ws/v5/public`` serves ``trades``, ``books``
(snapshot on subscribe, then updates with ``seqId``/``prevSeqId`` and a CRC32 ``checksum`` of
the top 25 levels, or ``0`` with ``checksum=False``, as OKX sends since June 2026) and
``bbo-tbt``; the other route answers error ``60018``. Subscriptions are acknowledged per arg
with the request's ``id``. The text ``ping`` is answered with ``pong``; a connection that has
received nothing from its client for ``idle_timeout`` seconds (30, as on OKX) is closed, so a
client that does not ping loses it. REST (an httpx transport) answers
``/api/v5/public/time``, ``/api/v5/market/candles`` (newest first, the latest 1440 rows),
``/api/v5/market/history-candles``, ``/api/v5/market/trades``, ``/api/v5/market/books`` and
``/api/v5/public/instruments`` with OKX's ``{"code","msg","data"}`` bodies; errors come with
HTTP 200 and a non-zero ``code`` (`FakeOkx.rest_fault` injects them, e.g. ``50011``).

The truth is a `FakeMarket` (``fake.market``): instrument ``BTC-USDT-SWAP`` is market symbol
``BTCUSDTSWAP`` (`FakeOkx.market_symbol`); OKX's ``tradeId`` is the market trade's
``last_trade_id`` and ``count`` its number of fills; ``seqId`` is the market's book update id,
so a client's book at ``seqId`` compares with ``fake.market.book_at(fake.market_symbol(inst),
seqId)``. Derivatives report ``vol`` = ``volCcy`` (one contract is one coin).

Faults: `drop_connections`, `refuse_next`, `skip_book_update`, `duplicate_book_update`,
`corrupt_checksum`, `resend_snapshot` (a new full snapshot on the live stream),
`ignore_pings` and `rest_fault`. Usage::

    async def test_x(autojump_clock):
        async with FakeOkx(symbols=["BTC-USDT-SWAP"]) as fake:
            async with open_feed(config, connector=fake.connect,
                                 rest_transport=fake.rest_transport,
                                 wall_clock=fake.now_ms) as feed:
                ...
"""

from __future__ import annotations

import errno
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import orjson
import trio
from attrs import define, field
from trio_websocket import WebSocketConnection, wrap_server_stream

from ..venues.okx import CHECKSUM_LEVELS, KLINE_BARS, book_checksum
from ._connection import GONE
from ._lifecycle import RunsItsOwnNursery
from ._transport import ServerStream, memory_connection
from .market import FakeMarket
from .records import KLINE_INTERVALS, AggTrade, KlineBar, SymbolSpec

__all__ = ["FakeOkx", "OkxConnectionRecord"]

_ROUTES = {"/ws/v5/public": "public", "/ws/v5/business": "business"}
#: Contract interval -> OKX bar, for the intervals the market builds.
_BARS = {i: bar for i, bar in KLINE_BARS.items() if i in KLINE_INTERVALS}
_CANDLE_INTERVAL = {"candle" + bar: i for i, bar in _BARS.items()}
_PUBLIC_CHANNELS = frozenset({"trades", "books", "bbo-tbt"})
#: Rows ``/api/v5/market/candles`` serves (older ones only from history-candles).
_RECENT_ROWS = 1440
_CLOSE_TIMEOUT = 5.0


def _s(d: Decimal) -> str:
    return format(d, "f")


@define(slots=True, eq=False)
class OkxConnectionRecord:
    """What the fake knows about one accepted connection (for tests).

    ``close_reason``: ``"client"``, ``"dropped"``, ``"idle"`` (nothing from the client for
    ``idle_timeout``), ``"slow-client"`` or ``"exchange-closed"``.
    """

    id: int
    route: str
    opened_at: float
    subscriptions: list[str] = field(factory=list)  # "channel:instId", in order
    messages_received: list[str] = field(factory=list)
    pings_received: int = 0
    pongs_sent: int = 0
    frames_sent: int = 0
    closed_at: float | None = None
    close_reason: str | None = None

    @property
    def is_open(self) -> bool:
        """True until the connection has ended."""
        return self.closed_at is None


@define(slots=True, eq=False)
class _BookSub:
    seq: int  # the last seqId sent on this subscription
    last_push: float


class _Conn:
    """One accepted connection: its subscriptions, outgoing queue and tasks."""

    def __init__(self, fake: FakeOkx, record: OkxConnectionRecord, ws: WebSocketConnection):
        self.fake = fake
        self.record = record
        self.ws = ws
        self.subs: set[tuple[str, str]] = set()  # (okx channel, instId)
        self.books: dict[str, _BookSub] = {}  # instId -> state
        self.last_in = trio.current_time()
        self.scope = trio.CancelScope()
        self.close: tuple[str, int | None, str] | None = None
        self._send, self._recv = trio.open_memory_channel[str](fake.send_queue_size)

    def enqueue(self, text: str) -> None:
        if self.close is not None:
            return
        try:
            self._send.send_nowait(text)
        except trio.WouldBlock:
            self.request_close("slow-client")
        except trio.ClosedResourceError:
            pass

    def request_close(self, reason: str, code: int | None = None, text: str = "") -> None:
        """Close: with a close frame when ``code`` is given, else abruptly."""
        if self.close is None:
            self.close = (reason, code, text)
            self.record.close_reason = reason
            self.scope.cancel()

    async def run(self) -> None:
        with self.scope:
            async with trio.open_nursery() as tasks:
                tasks.start_soon(self._writer)
                tasks.start_soon(self._reader)
                tasks.start_soon(self._idle)
        if self.close is not None and self.close[1] is not None:
            with trio.move_on_after(_CLOSE_TIMEOUT):
                try:
                    await self.ws.aclose(self.close[1], self.close[2])
                except GONE:
                    pass

    async def _writer(self) -> None:
        try:
            async for text in self._recv:
                await self.ws.send_message(text)
                self.record.frames_sent += 1
        except GONE:
            self.request_close("client")

    async def _reader(self) -> None:
        try:
            while True:
                message = await self.ws.get_message()
                if isinstance(message, bytes):
                    message = message.decode("utf-8", "replace")
                self.record.messages_received.append(message)
                if message == "ping":
                    self.record.pings_received += 1
                    if not self.fake.pings_ignored:
                        self.record.pongs_sent += 1
                        self.enqueue("pong")
                    continue
                self.fake._on_request(self, message)
        except GONE:
            self.request_close("client")

    async def _idle(self) -> None:
        timeout = self.fake.idle_timeout
        while True:
            deadline = self.last_in + timeout + self.fake.timer_offset
            if trio.current_time() >= deadline:
                self.request_close("idle", 4004, "No data received in 30s.")
                return
            await trio.sleep_until(deadline)


class FakeOkx(RunsItsOwnNursery):
    """An OKX v5 public market-data simulator (see the module docstring).

    Args:
      symbols: OKX instrument ids (``BTC-USDT-SWAP``, ``ETH-USDT``...).
      seed, start_time_ms, trade_rate, book_levels, book_activity: as for `FakeMarket`
        (below 1, books stay unchanged at most steps: heartbeats then go out).
      tick: seconds between pushes (the book changes once a tick).
      checksum: send real checksums (True) or ``0`` (OKX since June 2026).
      idle_timeout: a connection that received nothing from its client for this long is
        closed (code 4004).
      book_heartbeat: seconds without a book change after which an empty update with
        ``prevSeqId == seqId`` is sent, as OKX does after about a minute.
      rest_latency: virtual seconds each REST request takes.
    """

    def __init__(
        self,
        *,
        symbols: Iterable[str] = ("BTC-USDT-SWAP", "ETH-USDT-SWAP"),
        seed: int = 0,
        start_time_ms: int = 1_767_225_600_000,
        trade_rate: float | Mapping[str, float] = 2.0,
        tick: float = 0.1,
        tick_offset: float = 0.0137,
        book_levels: int = 50,
        book_activity: float = 1.0,
        checksum: bool = True,
        idle_timeout: float = 30.0,
        book_heartbeat: float = 60.0,
        rest_latency: float = 0.005,
        timer_offset: float = 0.0031,
        send_queue_size: int = 5000,
        socket_buffer_bytes: int = 1024 * 1024,
    ) -> None:
        self.instruments = tuple(symbols)
        self._market_of = {inst: _market_name(inst) for inst in self.instruments}
        self._inst_of = {m: inst for inst, m in self._market_of.items()}
        if isinstance(trade_rate, Mapping):
            trade_rate = {self._market_of[k]: v for k, v in trade_rate.items()}
        #: The truth (market symbols: `market_symbol`).
        self.market = FakeMarket(
            [_spec(inst) for inst in self.instruments],
            seed=seed,
            start_time_ms=start_time_ms,
            trade_rate=trade_rate,
            depth_step_ms=max(1, round(tick * 1000)),
            book_levels=book_levels,
            book_activity=book_activity,
        )
        self.start_time_ms = start_time_ms
        self.tick = tick
        self.tick_offset = tick_offset
        self.checksum = checksum
        self.idle_timeout = idle_timeout
        self.book_heartbeat = book_heartbeat
        self.rest_latency = rest_latency
        self.timer_offset = timer_offset
        self.send_queue_size = send_queue_size
        self.socket_buffer_bytes = socket_buffer_bytes
        #: An httpx transport answering REST in-process.
        self.rest_transport: httpx.AsyncBaseTransport = httpx.MockTransport(self._rest_handler)
        #: Every accepted connection, in order.
        self.connections: list[OkxConnectionRecord] = []
        #: REST requests, ``path?query``, in order; and counts per path.
        self.rest_requests: list[str] = []
        self.rest_calls: Counter[str] = Counter()
        self.attempts = 0
        self.refused = 0
        self.pings_ignored = False
        #: Empty book updates sent because a book did not change for ``book_heartbeat``.
        self.heartbeats_sent = 0
        #: Book updates generated but not sent (`skip_book_update`), as (instId, seqId).
        self.skipped_updates: list[tuple[str, int]] = []
        self._conns: list[_Conn] = []
        self._ids = itertools.count(1)
        self._refusals = 0
        self._faults: Counter[tuple[str, str]] = Counter()
        self._rest_faults: dict[str, list[tuple[str, str, int]]] = {}
        self._pending: list[AggTrade | KlineBar] = []
        self._checksums: dict[tuple[str, int], int] = {}
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: Any = None
        self._t0: float | None = None
        self._wake = trio.Event()

    # ------------------------------------------------------------------ lifecycle

    def now_ms(self) -> int:
        """Exchange time in milliseconds."""
        if self._t0 is None:
            return self.start_time_ms
        return self.start_time_ms + math.floor((trio.current_time() - self._t0) * 1000 + 1e-6)

    def market_symbol(self, inst_id: str) -> str:
        """The `FakeMarket` symbol behind an OKX instrument id."""
        return self._market_of[inst_id]

    @property
    def live_connections(self) -> list[OkxConnectionRecord]:
        """The connections still open."""
        return [c.record for c in self._conns if c.record.is_open]

    # ------------------------------------------------------------------ faults

    def drop_connections(self, route: str | None = None) -> int:
        """End the live connections on ``route`` (all if None) without a close frame."""
        count = 0
        for conn in list(self._conns):
            if conn.close is None and route in (None, conn.record.route):
                conn.request_close("dropped")
                count += 1
        return count

    def refuse_next(self, n: int = 1) -> None:
        """Make the next ``n`` `connect` calls fail with ECONNREFUSED."""
        self._refusals += n

    def skip_book_update(self, inst_id: str) -> None:
        """Generate but do not send the next book update of ``inst_id`` (a ``prevSeqId`` gap)."""
        self._faults["skip", inst_id] += 1

    def duplicate_book_update(self, inst_id: str) -> None:
        """Send the next book update of ``inst_id`` twice."""
        self._faults["duplicate", inst_id] += 1

    def corrupt_checksum(self, inst_id: str) -> None:
        """Send the next book update of ``inst_id`` with a wrong (non-zero) checksum."""
        self._faults["corrupt", inst_id] += 1

    def resend_snapshot(self, inst_id: str) -> None:
        """Send a fresh ``snapshot`` of ``inst_id`` on every live books subscription."""
        for conn in self._conns:
            if inst_id in conn.books and conn.close is None:
                self._send_snapshot(conn, inst_id)

    def ignore_pings(self, on: bool = True) -> None:
        """While on, ``ping`` gets no ``pong``."""
        self.pings_ignored = on

    def rest_fault(
        self,
        path: str,
        code: str = "50011",
        msg: str = "Too Many Requests",
        *,
        count: int = 1,
        status: int = 200,
    ) -> None:
        """Answer the next ``count`` requests to ``path`` with ``{"code": code, "msg": msg}``
        (HTTP ``status``, 200 as OKX does for most errors)."""
        self._rest_faults.setdefault(path, []).extend([(code, msg, status)] * count)

    # ------------------------------------------------------------------ connecting

    async def connect(self, url: str) -> trio.abc.Stream:
        """The connector for tests: the client's end of a new in-process connection."""
        if self._nursery is None:
            raise RuntimeError("use the FakeOkx inside 'async with FakeOkx() as fake:'")
        await trio.lowlevel.checkpoint()
        self.attempts += 1
        if self._refusals:
            self._refusals -= 1
            self.refused += 1
            raise OSError(errno.ECONNREFUSED, f"connection refused: {url}")
        client, server, account = memory_connection(self.socket_buffer_bytes)
        self._nursery.start_soon(self._serve, server, account)
        return client

    async def _serve(self, stream: trio.abc.Stream, account: Any) -> None:
        holder: list[_Conn] = []

        def on_client_message() -> None:
            if holder:
                holder[0].last_in = trio.current_time()

        server = ServerStream(stream, on_client_message=on_client_message, account=account)
        try:
            async with trio.open_nursery() as nursery:
                try:
                    accepted = await self._accept(nursery, server)
                    if accepted is not None:
                        route, ws = accepted
                        record = OkxConnectionRecord(next(self._ids), route, trio.current_time())
                        conn = _Conn(self, record, ws)
                        holder.append(conn)
                        self.connections.append(record)
                        self._conns.append(conn)
                        await conn.run()
                except* GONE:
                    pass
                nursery.cancel_scope.cancel()
        except* GONE:
            pass
        finally:
            with trio.CancelScope(shield=True):
                await server.abort()
            if holder:
                conn = holder[0]
                conn.record.closed_at = trio.current_time()
                if conn.record.close_reason is None:
                    conn.record.close_reason = "exchange-closed"
                self._conns.remove(conn)

    async def _accept(
        self, nursery: trio.Nursery, server: ServerStream
    ) -> tuple[str, WebSocketConnection] | None:
        """The upgrade: the route and the accepted WebSocket, or None (refused, too slow)."""
        with trio.move_on_after(10.0 + self.timer_offset):
            request = await wrap_server_stream(nursery, server)
            route = _ROUTES.get(urlsplit(request.path).path)
            if route is None:
                await request.reject(404, body=b"unknown path")
                return None
            return route, await request.accept()
        return None

    # ------------------------------------------------------------------ requests

    def _on_request(self, conn: _Conn, text: str) -> None:
        request_id: Any = None
        try:
            msg = orjson.loads(text)
            request_id = msg.get("id")
            op = msg["op"]
            args = msg["args"]
            if op not in ("subscribe", "unsubscribe") or type(args) is not list:
                raise ValueError(op)
            pairs = [(str(a["channel"]), str(a["instId"])) for a in args]
        except (ValueError, KeyError, TypeError, AttributeError):
            self._reply(
                conn, request_id, event="error", code="60012", msg=f"Invalid request: {text[:200]}"
            )
            return
        self._advance()
        for channel, inst in pairs:
            arg = {"channel": channel, "instId": inst}
            reason = self._refusal(conn.record.route, channel, inst)
            if reason is not None:
                self._reply(conn, request_id, event="error", code="60018", msg=reason)
                continue
            self._reply(conn, request_id, event=op, arg=arg)
            name = f"{channel}:{inst}"
            if op == "subscribe" and (channel, inst) not in conn.subs:
                conn.subs.add((channel, inst))
                self._wake.set()
                conn.record.subscriptions.append(name)
                if channel == "books":
                    self._send_snapshot(conn, inst)
            elif op == "unsubscribe" and (channel, inst) in conn.subs:
                conn.subs.discard((channel, inst))
                conn.record.subscriptions.remove(name)
                if channel == "books":
                    del conn.books[inst]

    def _refusal(self, route: str, channel: str, inst: str) -> str | None:
        wrong = f"Wrong URL or channel:{channel},instId:{inst} doesn't exist."
        if inst not in self._market_of:
            return wrong
        if channel in _CANDLE_INTERVAL:
            return None if route == "business" else wrong
        if channel in _PUBLIC_CHANNELS:
            return None if route == "public" else wrong
        return wrong

    def _reply(self, conn: _Conn, request_id: Any, **fields: Any) -> None:
        body: dict[str, Any] = {}
        if request_id is not None:
            body["id"] = request_id
        body.update(fields)
        body["connId"] = f"{conn.record.id:08x}"
        conn.enqueue(orjson.dumps(body).decode())

    # ------------------------------------------------------------------ pushing

    def _advance(self) -> int:
        now = self.now_ms()
        for event in self.market.advance_to(now):
            if isinstance(event, AggTrade | KlineBar):
                self._pending.append(event)
        return now

    async def _tick_loop(self) -> None:
        assert self._t0 is not None
        per_second = max(1, round(1.0 / self.tick))
        k = 0
        while True:
            k += 1
            await trio.sleep_until(self._t0 + self.tick_offset + k * self.tick)
            conns = [c for c in self._conns if c.close is None and c.subs]
            if not conns:
                # Nothing to push: sleep until a subscription, then go on at the next tick
                # (the market's history does not depend on how often it is advanced).
                self._pending.clear()
                self._wake = trio.Event()
                await self._wake.wait()
                k = math.floor((trio.current_time() - self._t0 - self.tick_offset) / self.tick)
                continue
            now = self._advance()
            events, self._pending = self._pending, []
            second = k % per_second == 0
            for conn in conns:
                self._push(conn, events, second, now)

    def _push(self, conn: _Conn, events: list[AggTrade | KlineBar], second: bool, now: int) -> None:
        subs = conn.subs
        for event in events:
            inst = self._inst_of[event.symbol]
            if isinstance(event, AggTrade):
                if ("trades", inst) in subs:
                    conn.enqueue(_trade_frame(inst, event))
                continue
            bar = _BARS.get(event.interval)
            if bar is not None and ("candle" + bar, inst) in subs:
                conn.enqueue(_candle_frame(inst, bar, event))
        for channel, inst in subs:
            if second and channel in _CANDLE_INTERVAL:
                interval = _CANDLE_INTERVAL[channel]
                kline = self.market.current_kline(self._market_of[inst], interval)
                conn.enqueue(_candle_frame(inst, channel[len("candle") :], kline))
            elif channel == "books":
                self._push_book(conn, inst)
            elif channel == "bbo-tbt":
                self._push_bbo(conn, inst)

    def _book_frame(
        self,
        inst: str,
        action: str,
        prev: int,
        seq: int,
        bids: Any,
        asks: Any,
        time: int,
        checksum: int,
    ) -> str:
        data = {
            "asks": [[_s(p), _s(q), "0", "1"] for p, q in asks],
            "bids": [[_s(p), _s(q), "0", "1"] for p, q in bids],
            "ts": str(time),
            "checksum": checksum,
            "prevSeqId": prev,
            "seqId": seq,
        }
        msg = {"arg": {"channel": "books", "instId": inst}, "action": action, "data": [data]}
        return orjson.dumps(msg).decode()

    def _checksum(self, inst: str, seq: int) -> int:
        if not self.checksum:
            return 0
        key = (inst, seq)
        value = self._checksums.get(key)
        if value is None:
            book = self.market.book_at(self._market_of[inst], seq, CHECKSUM_LEVELS)
            value = book_checksum(book.bids, book.asks)
            if len(self._checksums) > 10_000:
                self._checksums.clear()
            self._checksums[key] = value
        return value

    def _send_snapshot(self, conn: _Conn, inst: str) -> None:
        symbol = self._market_of[inst]
        seq = self.market.published_update_id(symbol)
        try:
            book = self.market.book_at(symbol, seq)
        except LookupError:
            # Right after the start nothing is published yet: the opening book.
            seq = self.market.last_update_id(symbol)
            book = self.market.book_at(symbol, seq)
        conn.enqueue(
            self._book_frame(
                inst,
                "snapshot",
                -1,
                seq,
                book.bids,
                book.asks,
                book.time,
                self._checksum(inst, seq),
            )
        )
        conn.books[inst] = _BookSub(seq, trio.current_time())

    def _push_book(self, conn: _Conn, inst: str) -> None:
        sub = conn.books.get(inst)
        if sub is None:
            return
        symbol = self._market_of[inst]
        seq = self.market.published_update_id(symbol)
        if seq <= sub.seq:
            if trio.current_time() - sub.last_push >= self.book_heartbeat:
                book_time = self.market.book_at(symbol, sub.seq, 0).time
                conn.enqueue(
                    self._book_frame(
                        inst,
                        "update",
                        sub.seq,
                        sub.seq,
                        (),
                        (),
                        book_time,
                        self._checksum(inst, sub.seq),
                    )
                )
                sub.last_push = trio.current_time()
                self.heartbeats_sent += 1
            return
        prev, sub.seq, sub.last_push = sub.seq, seq, trio.current_time()
        if self._take("skip", inst):
            self.skipped_updates.append((inst, seq))
            return
        diff = self.market.depth_diff(symbol, prev, seq)
        bids = diff.bids[::-1] if diff is not None else ()  # best first, as OKX sends them
        asks = diff.asks if diff is not None else ()
        time = diff.time if diff is not None else 0
        checksum = self._checksum(inst, seq)
        if self._take("corrupt", inst):
            checksum = checksum + 1 if checksum not in (0, -1) else 7
        frame = self._book_frame(inst, "update", prev, seq, bids, asks, time, checksum)
        conn.enqueue(frame)
        if self._take("duplicate", inst):
            conn.enqueue(frame)

    def _push_bbo(self, conn: _Conn, inst: str) -> None:
        quote = self.market.best_quote(self._market_of[inst])
        data = {
            "asks": [[_s(quote.ask_price), _s(quote.ask_qty), "0", "1"]],
            "bids": [[_s(quote.bid_price), _s(quote.bid_qty), "0", "1"]],
            "ts": str(quote.time),
            "seqId": quote.update_id,
        }
        msg = {"arg": {"channel": "bbo-tbt", "instId": inst}, "data": [data]}
        conn.enqueue(orjson.dumps(msg).decode())

    def _take(self, kind: str, inst: str) -> bool:
        key = (kind, inst)
        if self._faults[key] > 0:
            self._faults[key] -= 1
            return True
        return False

    # ------------------------------------------------------------------ REST

    async def _rest_handler(self, request: httpx.Request) -> httpx.Response:
        await trio.sleep(self.rest_latency)
        status, body = self.rest_call(request.url.raw_path.decode("ascii"))
        return httpx.Response(status, content=body, headers={"Content-Type": "application/json"})

    def rest_call(self, target: str) -> tuple[int, bytes]:
        """Answer one REST request now (``target``: path and query): (HTTP status, body)."""
        self.rest_requests.append(target)
        parts = urlsplit(target)
        path = parts.path
        self.rest_calls[path] += 1
        faults = self._rest_faults.get(path)
        if faults:
            code, msg, status = faults.pop(0)
            return status, _body(code, msg, [])
        params = dict(parse_qsl(parts.query))
        now = self._advance()
        handler = {
            "/api/v5/public/time": self._time,
            "/api/v5/market/candles": self._candles,
            "/api/v5/market/history-candles": self._history_candles,
            "/api/v5/market/trades": self._trades,
            "/api/v5/market/books": self._books,
            "/api/v5/public/instruments": self._instruments,
        }.get(path)
        if handler is None:
            return 404, b'{"msg":"Not Found","code":"404"}'
        try:
            return 200, _body("0", "", handler(params, now))
        except _OkxError as exc:
            return 200, _body(exc.code, exc.msg, [])

    def _inst(self, params: dict[str, str]) -> str:
        inst = params.get("instId", "")
        if inst not in self._market_of:
            raise _OkxError("51001", "Instrument ID does not exist")
        return self._market_of[inst]

    def _time(self, params: dict[str, str], now: int) -> Any:
        return [{"ts": str(now)}]

    def _candle_rows(self, params: dict[str, str], max_limit: int, recent: bool) -> Any:
        symbol = self._inst(params)
        bar = params.get("bar", "1m")
        interval = next((i for i, b in _BARS.items() if b == bar), None)
        if interval is None:
            raise _OkxError("51000", "Parameter bar error")
        limit = int(params.get("limit", "100"))
        if not 1 <= limit <= max_limit:
            raise _OkxError("51000", "Parameter limit error")
        bars = self.market.klines(symbol, interval, include_open=True)
        if recent:
            bars = bars[-_RECENT_ROWS:]
        after = int(params["after"]) if "after" in params else None
        before = int(params["before"]) if "before" in params else None
        rows = [
            b
            for b in reversed(bars)  # newest first
            if (after is None or b.open_time < after) and (before is None or b.open_time > before)
        ]
        # OKX's quirk: the newest ``limit`` rows of the range, whatever the range.
        return [_candle_row(self._inst_of[symbol], b) for b in rows[:limit]]

    def _candles(self, params: dict[str, str], now: int) -> Any:
        return self._candle_rows(params, 300, recent=True)

    def _history_candles(self, params: dict[str, str], now: int) -> Any:
        return self._candle_rows(params, 100, recent=False)

    def _trades(self, params: dict[str, str], now: int) -> Any:
        symbol = self._inst(params)
        limit = int(params.get("limit", "100"))
        inst = self._inst_of[symbol]
        trades = self.market.trades(symbol, limit=max(1, min(limit, 500)))
        return [_trade_data(inst, t) for t in reversed(trades)]

    def _books(self, params: dict[str, str], now: int) -> Any:
        symbol = self._inst(params)
        size = max(1, min(int(params.get("sz", "1")), 400))
        book = self.market.book(symbol, size)
        return [
            {
                "asks": [[_s(p), _s(q), "0", "1"] for p, q in book.asks],
                "bids": [[_s(p), _s(q), "0", "1"] for p, q in book.bids],
                "ts": str(book.time),
                "seqId": book.last_update_id,
            }
        ]

    def _instruments(self, params: dict[str, str], now: int) -> Any:
        kind = params.get("instType")
        out = []
        for inst in self.instruments:
            swap = inst.endswith("-SWAP")
            if (kind == "SWAP" and swap) or (kind == "SPOT" and inst.count("-") == 1):
                out.append({"instId": inst, "instType": kind, "state": "live"})
        return out


class _OkxError(Exception):
    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def _body(code: str, msg: str, data: Any) -> bytes:
    return orjson.dumps({"code": code, "msg": msg, "data": data})


def _market_name(inst: str) -> str:
    return inst.replace("-", "").upper()


def _spec(inst: str) -> SymbolSpec:
    """BTC-* and ETH-* trade like the market's BTCUSDT and ETHUSDT, the rest at 100."""
    base = SymbolSpec.default(inst.split("-")[0] + "USDT")
    return SymbolSpec(_market_name(inst), base.start_price, base.tick_size, base.step_size)


def _trade_data(inst: str, t: AggTrade) -> dict[str, Any]:
    return {
        "instId": inst,
        "tradeId": str(t.last_trade_id),
        "px": _s(t.price),
        "sz": _s(t.qty),
        "side": "sell" if t.buyer_is_maker else "buy",
        "ts": str(t.time),
        "count": str(t.last_trade_id - t.first_trade_id + 1),
        "source": "0",
        "seqId": t.agg_id,
    }


def _trade_frame(inst: str, t: AggTrade) -> str:
    msg = {"arg": {"channel": "trades", "instId": inst}, "data": [_trade_data(inst, t)]}
    return orjson.dumps(msg).decode()


def _candle_row(inst: str, b: KlineBar) -> list[str]:
    volume, quote = _s(b.volume), _s(b.quote_volume)
    # Derivatives: vol counts contracts (one coin each here), volCcy is the base currency;
    # spot: vol is the base currency, volCcy the quote.
    vol_ccy = volume if inst.count("-") >= 2 else quote
    return [
        str(b.open_time),
        _s(b.open),
        _s(b.high),
        _s(b.low),
        _s(b.close),
        volume,
        vol_ccy,
        quote,
        "1" if b.closed else "0",
    ]


def _candle_frame(inst: str, bar: str, b: KlineBar) -> str:
    msg = {"arg": {"channel": "candle" + bar, "instId": inst}, "data": [_candle_row(inst, b)]}
    return orjson.dumps(msg).decode()
