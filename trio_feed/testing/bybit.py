"""`FakeBybit`: a Bybit v5 public market-data simulator (linear and spot), in-process.

Driven by the same deterministic `FakeMarket` as the Binance fake (the truth: trades, klines,
the order book at every update id), it speaks Bybit's v5 protocol over memory streams under
the mock clock, with the same seams, so a feed runs on it as on the real venue::

    async with FakeBybit(seed=1) as fake, open_feed(
        config,  # exchange = "bybit-linear" (or "bybit-spot")
        connector=fake.connect,
        rest_transport=fake.rest_transport,
        wall_clock=fake.now_ms,
    ) as feed:
        ...

WebSocket (``/v5/public/linear`` and ``/v5/public/spot``): ``op`` ``subscribe`` /
``unsubscribe`` acknowledged with the category's reply shape and the ``req_id`` echoed (spot
refuses more than 10 args per request), ``op`` ``ping`` answered by a pong, and a connection
that sent no ping for ``idle_timeout`` seconds is closed (Bybit's 10 minutes). Topics:

* ``kline.<i>.<SYMBOL>`` (``1 3 5 15 30 60 120 240 360 720 D W``): the open kline every
  ``kline_every`` ticks, and each closed one with ``confirm: true`` once, at its close;
* ``publicTrade.<SYMBOL>``: the market's trades each tick, ``i`` the decimal trade id (the
  market's trade ids, which happen to be consecutive; real linear ids are UUIDs);
* ``orderbook.<depth>.<SYMBOL>`` (1, 50, 200, 1000): a snapshot of the top ``depth`` levels on
  subscribe, then a delta (changed levels of that window, ``"0"`` for a removed one) whenever
  the book's published update id moved; ``u`` is the market's update id, so
  ``fake.market.book_at(symbol, u)`` is the book after it. Depth 1 sends snapshots only;
* ``tickers.<SYMBOL>`` (linear): a snapshot, then every ``ticker_every`` ticks a delta with the
  mark fields that changed.

REST (`rest_transport`, httpx): ``/v5/market/time``, ``kline`` (newest first, the newest
``limit`` of the range, the open kline included), ``recent-trade`` (the latest ``limit``,
newest first), ``orderbook`` (at the update id the streams have published, as the 1000-level
stream's ``u``), ``instruments-info``. Errors are HTTP 200 with ``retCode`` != 0.

Faults: `FakeBybit.drop_connections`, `FakeBybit.refuse_next`,
`FakeBybit.skip_depth_update` (the delta is lost, ``u`` still increases: only a REST depth
check can notice), `FakeBybit.duplicate_depth_update` (the same delta twice: ``u`` not
increasing, a sequence break), `FakeBybit.resend_snapshot` (Bybit re-sends a snapshot after
internal problems), `FakeBybit.rest_error`.

Timing as in `FakeExchange`: exchange time is ``start_time_ms + elapsed``; the stream loop
runs on ticks at ``tick_offset + k * tick``, odd offsets that keep off a client's round timers.
"""

from __future__ import annotations

import errno
import itertools
import math
from collections import deque
from collections.abc import Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from decimal import Decimal
from typing import Any

import httpx
import orjson
import trio
import trio.testing
from attrs import define, field
from trio_websocket import WebSocketConnection, wrap_server_stream

from ._connection import GONE, ConnectionRecord
from ._lifecycle import RunsItsOwnNursery
from .market import FakeMarket
from .records import AggTrade, KlineBar, SymbolSpec

__all__ = ["FakeBybit"]

#: Bybit kline interval -> the market's interval name.
_INTERVALS: Mapping[str, str] = {
    "1": "1m",
    "3": "3m",
    "5": "5m",
    "15": "15m",
    "30": "30m",
    "60": "1h",
    "120": "2h",
    "240": "4h",
    "360": "6h",
    "720": "12h",
    "D": "1d",
    "W": "1w",
}
_TO_BYBIT = {v: k for k, v in _INTERVALS.items()}
_DEPTHS = frozenset({1, 50, 200, 1000})
_CATEGORIES = ("linear", "spot")
_PATHS = {f"/v5/public/{c}": c for c in _CATEGORIES}
_SPOT_MAX_ARGS = 10
_Levels = dict[Decimal, Decimal]


@define(slots=True, eq=False)
class _Book:
    """What one ``orderbook`` subscription has sent: its window of the book at ``u``."""

    depth: int
    u: int = -1
    bids: _Levels = field(factory=dict)
    asks: _Levels = field(factory=dict)
    skip: int = 0
    duplicate: int = 0
    resend: bool = False


@define(slots=True, eq=False)
class _Conn:
    record: ConnectionRecord
    category: str
    ws: WebSocketConnection
    send: trio.MemorySendChannel[str]
    scope: trio.CancelScope = field(factory=trio.CancelScope)
    topics: dict[str, _Book | None] = field(factory=dict)
    marks: dict[str, dict[str, str]] = field(factory=dict)
    last_ping: float = 0.0
    abrupt: bool = True

    def enqueue(self, text: str) -> None:
        try:
            self.send.send_nowait(text)
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.close("slow-client")

    def close(self, reason: str, *, abrupt: bool = True) -> None:
        if self.record.close_reason is None:
            self.record.close_reason = reason
            self.abrupt = abrupt
        self.scope.cancel()


def _s(value: Decimal) -> str:
    return str(value)


def _side(levels: Iterable[tuple[Decimal, Decimal]]) -> list[list[str]]:
    return [[_s(p), _s(q)] for p, q in levels]


class FakeBybit(RunsItsOwnNursery):
    """A Bybit v5 public simulator (see the module docstring).

    Args:
      symbols, seed, start_time_ms, trade_rate, book_levels, depth_history: as for
        `FakeMarket`.
      tick: seconds between ticks of the stream loop; tick_offset: time of the first one.
      depth_every: ticks per book step (the book changes every ``tick * depth_every``;
        200 ms by default, the 1000-level stream's speed).
      kline_every / ticker_every: ticks between pushes of open klines / ticker deltas.
      idle_timeout: seconds without a client ping after which a connection is closed.
      rest_latency: virtual seconds each REST request takes.
    """

    def __init__(
        self,
        *,
        symbols: Iterable[str | SymbolSpec] = ("BTCUSDT", "ETHUSDT"),
        seed: int = 0,
        start_time_ms: int = 1_767_225_600_000,
        trade_rate: float | Mapping[str, float] = 2.0,
        tick: float = 0.1,
        tick_offset: float = 0.0137,
        depth_every: int = 2,
        book_levels: int = 200,
        depth_history: int = 10_000,
        kline_every: int = 10,
        ticker_every: int = 10,
        idle_timeout: float = 600.0,
        rest_latency: float = 0.005,
        send_queue_size: int = 10_000,
    ) -> None:
        self.tick = tick
        self.tick_offset = tick_offset
        self.kline_every = kline_every
        self.ticker_every = ticker_every
        self.idle_timeout = idle_timeout
        self.rest_latency = rest_latency
        self.send_queue_size = send_queue_size
        self.start_time_ms = start_time_ms
        #: The simulated market: the truth to compare a client's output with.
        self.market = FakeMarket(
            symbols,
            seed=seed,
            start_time_ms=start_time_ms,
            trade_rate=trade_rate,
            depth_step_ms=max(1, round(tick * depth_every * 1000)),
            book_levels=book_levels,
            depth_history=depth_history,
        )
        #: An httpx transport answering the REST API in-process, after ``rest_latency``.
        self.rest_transport: httpx.AsyncBaseTransport = httpx.MockTransport(self._rest_handler)
        #: Every accepted connection, in order (``route`` is the category).
        self.connections: list[ConnectionRecord] = []
        #: Every REST request: ``(path, params)``.
        self.rest_requests: list[tuple[str, dict[str, str]]] = []
        #: Connection attempts, and those refused by `refuse_next`.
        self.attempts = 0
        self.refused = 0
        #: Depth payloads not sent (`skip_depth_update`) and sent twice (`duplicate_...`).
        self.depth_skipped: list[dict[str, Any]] = []
        self.depth_duplicated: list[dict[str, Any]] = []
        self._conns: list[_Conn] = []
        self._ids = itertools.count(1)
        self._refusals = 0
        self._rest_errors: dict[str, deque[tuple[int, str]]] = {}
        self._trades: list[AggTrade] = []
        self._closed: list[KlineBar] = []
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._t0: float | None = None

    # ------------------------------------------------------------------ lifecycle and time

    def now_ms(self) -> int:
        """Exchange time in milliseconds (``start_time_ms`` until the fake is entered)."""
        if self._t0 is None:
            return self.start_time_ms
        return self.start_time_ms + math.floor((trio.current_time() - self._t0) * 1000 + 1e-6)

    def _advance(self) -> int:
        now = self.now_ms()
        for event in self.market.advance_to(now):
            if isinstance(event, AggTrade):
                self._trades.append(event)
            elif isinstance(event, KlineBar):
                self._closed.append(event)
        return now

    async def _tick_loop(self) -> None:
        assert self._t0 is not None
        for k in itertools.count():
            await trio.sleep_until(self._t0 + self.tick_offset + k * self.tick)
            now = self._advance()
            trades, self._trades = self._trades, []
            closed, self._closed = self._closed, []
            for conn in list(self._conns):
                self._push(conn, k, now, trades, closed)

    # ------------------------------------------------------------------ connections

    async def connect(self, url: str) -> trio.abc.Stream:
        """Open an in-process connection and return the client's end of the byte stream
        (hand it to ``trio_websocket.wrap_client_stream``). ``OSError`` if refused."""
        if self._nursery is None:
            raise RuntimeError("use the FakeBybit inside 'async with FakeBybit() as fake:'")
        await trio.lowlevel.checkpoint()
        self.attempts += 1
        if self._refusals:
            self._refusals -= 1
            self.refused += 1
            raise OSError(errno.ECONNREFUSED, f"connection refused: {url}")
        client, server = trio.testing.memory_stream_pair()
        self._nursery.start_soon(self._serve, server)
        return client

    async def _serve(self, stream: trio.abc.Stream) -> None:
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await self._run_connection(nursery, stream)
                except* GONE:
                    pass
                nursery.cancel_scope.cancel()
        except* GONE:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def _run_connection(self, nursery: trio.Nursery, stream: trio.abc.Stream) -> None:
        request = await wrap_server_stream(nursery, stream)
        category = _PATHS.get(request.path.partition("?")[0])
        if category is None:
            await request.reject(404, body=b"unknown path")
            return
        ws = await request.accept()
        now = trio.current_time()
        record = ConnectionRecord(next(self._ids), request.path, category, False, now, 0)
        record.opened_at_ms = self.now_ms()
        send, recv = trio.open_memory_channel[str](self.send_queue_size)
        conn = _Conn(record, category, ws, send, last_ping=now)
        self.connections.append(record)
        self._conns.append(conn)
        try:
            with conn.scope:
                async with trio.open_nursery() as tasks:
                    tasks.start_soon(self._writer, conn, recv)
                    tasks.start_soon(self._reader, conn)
                    tasks.start_soon(self._idle_watch, conn)
            if not conn.abrupt and ws.closed is None:
                with trio.move_on_after(5):
                    await ws.aclose(1000, record.close_reason or "")
        finally:
            self._conns.remove(conn)
            record.streams = list(conn.topics)
            record.closed_at = trio.current_time()
            record.closed_at_ms = self.now_ms()
            if record.close_reason is None:
                record.close_reason = "exchange-closed"

    async def _writer(self, conn: _Conn, recv: trio.MemoryReceiveChannel[str]) -> None:
        try:
            async for text in recv:
                await conn.ws.send_message(text)
                conn.record.frames_sent += 1
        except GONE:
            conn.close("client")

    async def _reader(self, conn: _Conn) -> None:
        try:
            while True:
                message = await conn.ws.get_message()
                if isinstance(message, bytes):
                    message = message.decode("utf-8", "replace")
                conn.record.messages_received += 1
                conn.record.control_messages.append(message)
                self._on_message(conn, message)
        except GONE:
            conn.close("client")

    async def _idle_watch(self, conn: _Conn) -> None:
        # Bybit cuts a connection that has not pinged for a while; the offset keeps this
        # deadline off the client's 20 s ping grid.
        while True:
            deadline = conn.last_ping + self.idle_timeout + 0.0031
            await trio.sleep_until(deadline)
            if conn.last_ping + self.idle_timeout + 0.0031 <= trio.current_time():
                conn.close("idle", abrupt=False)
                return

    def _on_message(self, conn: _Conn, text: str) -> None:
        try:
            msg = orjson.loads(text)
            op = msg["op"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            conn.enqueue(
                orjson.dumps({"success": False, "ret_msg": "invalid request", "op": ""}).decode()
            )
            return
        req_id = msg.get("req_id", "")
        if op == "ping":
            conn.last_ping = trio.current_time()
            reply: dict[str, Any] = {"success": True, "ret_msg": "pong", "conn_id": "fake"}
            if conn.category != "spot":
                reply["req_id"] = req_id
            reply["op"] = "ping"
            conn.enqueue(orjson.dumps(reply).decode())
            return
        if op not in ("subscribe", "unsubscribe"):
            self._reply(conn, op, req_id, f"unknown op {op}")
            return
        args = msg.get("args")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            self._reply(conn, op, req_id, "args must be a list of topics")
            return
        if conn.category == "spot" and len(args) > _SPOT_MAX_ARGS:
            self._reply(conn, op, req_id, f"args size >{_SPOT_MAX_ARGS}")
            return
        now = self._advance()
        if op == "unsubscribe":
            for topic in args:
                conn.topics.pop(topic, None)
            self._reply(conn, op, req_id, None)
            return
        bad = [t for t in args if not self._valid(conn.category, t) or t in conn.topics]
        if bad:
            self._reply(conn, op, req_id, f"error:handler not found,topic:{','.join(bad)}")
            return
        self._reply(conn, op, req_id, None)
        for topic in args:
            parts = topic.split(".")
            book = _Book(int(parts[1])) if parts[0] == "orderbook" else None
            conn.topics[topic] = book
            if book is not None:
                self._push_book(conn, topic, parts[2], book, now)  # the opening snapshot

    def _reply(self, conn: _Conn, op: str, req_id: str, error: str | None) -> None:
        reply: dict[str, Any] = {"success": error is None}
        if conn.category == "spot":
            reply["ret_msg"] = op if error is None else error
        else:
            reply["ret_msg"] = "" if error is None else error
        reply.update({"conn_id": "fake", "req_id": req_id, "op": op})
        conn.enqueue(orjson.dumps(reply).decode())

    def _valid(self, category: str, topic: str) -> bool:
        parts = topic.split(".")
        if parts[-1] not in self.market.symbols:
            return False
        if parts[0] == "kline":
            return len(parts) == 3 and parts[1] in _INTERVALS
        if parts[0] == "orderbook":
            return len(parts) == 3 and parts[1].isdigit() and int(parts[1]) in _DEPTHS
        if parts[0] == "tickers":
            return len(parts) == 2 and category == "linear"
        return len(parts) == 2 and parts[0] == "publicTrade"

    # ------------------------------------------------------------------ pushing

    def _frame(self, conn: _Conn, payload: dict[str, Any]) -> None:
        conn.enqueue(orjson.dumps(payload).decode())

    def _push(
        self, conn: _Conn, k: int, now: int, trades: list[AggTrade], closed: list[KlineBar]
    ) -> None:
        for topic, book in list(conn.topics.items()):
            kind, _, rest = topic.partition(".")
            if book is not None:
                self._push_book(conn, topic, rest.partition(".")[2], book, now)
            elif kind == "publicTrade":
                data = [self._trade(conn, t) for t in trades if t.symbol == rest]
                if data:
                    self._frame(conn, {"topic": topic, "type": "snapshot", "ts": now, "data": data})
            elif kind == "kline":
                bybit, _, symbol = rest.partition(".")
                interval = _INTERVALS[bybit]
                bars = [b for b in closed if b.symbol == symbol and b.interval == interval]
                if k % self.kline_every == 0:
                    bars.append(self.market.current_kline(symbol, interval))
                for bar in bars:
                    self._frame(
                        conn,
                        {
                            "topic": topic,
                            "data": [_kline(bar, bybit, now)],
                            "ts": now,
                            "type": "snapshot",
                        },
                    )
            elif kind == "tickers" and (k % self.ticker_every == 0 or rest not in conn.marks):
                self._push_ticker(conn, topic, rest, now)

    def _trade(self, conn: _Conn, t: AggTrade) -> dict[str, Any]:
        out: dict[str, Any] = {
            "T": t.time,
            "s": t.symbol,
            "S": "Sell" if t.buyer_is_maker else "Buy",
            "v": _s(t.qty),
            "p": _s(t.price),
        }
        if conn.category == "linear":
            out["L"] = "PlusTick"
        out.update({"i": str(t.agg_id), "BT": False, "seq": t.agg_id})
        return out

    def _push_book(self, conn: _Conn, topic: str, symbol: str, book: _Book, now: int) -> None:
        market = self.market
        u = market.published_update_id(symbol)
        if u == book.u and not book.resend:
            return
        try:
            truth = market.book_at(symbol, u, book.depth)
        except LookupError:
            return  # the market's opening step is not published yet: no book to show
        bids, asks = dict(truth.bids), dict(truth.asks)
        snapshot = book.u < 0 or book.resend or book.depth == 1
        if snapshot:
            b, a = _side(truth.bids), _side(truth.asks)
        else:
            b, a = _delta(book.bids, bids, reverse=True), _delta(book.asks, asks, reverse=False)
        book.u, book.bids, book.asks, book.resend = u, bids, asks, False
        payload = {
            "topic": topic,
            "type": "snapshot" if snapshot else "delta",
            "ts": now,
            "data": {"s": symbol, "b": b, "a": a, "u": u, "seq": u},
            "cts": truth.time,
        }
        if not snapshot and book.skip:
            book.skip -= 1
            self.depth_skipped.append(payload)
            return
        self._frame(conn, payload)
        if not snapshot and book.duplicate:
            book.duplicate -= 1
            self.depth_duplicated.append(payload)
            self._frame(conn, payload)

    def _push_ticker(self, conn: _Conn, topic: str, symbol: str, now: int) -> None:
        mark = self.market.mark_price(symbol, now)
        fields = {
            "markPrice": _s(mark.mark_price),
            "indexPrice": _s(mark.index_price),
            "fundingRate": _s(mark.funding_rate),
            "nextFundingTime": str(mark.next_funding_time),
        }
        last = conn.marks.get(symbol)
        conn.marks[symbol] = fields
        if last is None:
            data = {"symbol": symbol, "lastPrice": _s(self.market.last_price(symbol)), **fields}
            kind = "snapshot"
        else:
            data = {"symbol": symbol, **{k: v for k, v in fields.items() if last.get(k) != v}}
            if len(data) == 1:
                return
            kind = "delta"
        self._frame(conn, {"topic": topic, "type": kind, "data": data, "cs": now, "ts": now})

    # ------------------------------------------------------------------ faults

    def _books(self, symbol: str) -> list[_Book]:
        if symbol not in self.market.symbols:
            raise ValueError(f"unknown symbol {symbol!r}")
        return [
            book
            for conn in self._conns
            for topic, book in conn.topics.items()
            if book is not None and topic.endswith("." + symbol) and book.depth > 1
        ]

    def drop_connections(self, category: str | None = None) -> int:
        """End the live connections (of ``category``, or all) without a close frame; the
        client sees code 1006. Returns how many."""
        count = 0
        for conn in list(self._conns):
            if category is None or conn.category == category:
                conn.close("dropped")
                count += 1
        return count

    def refuse_next(self, n: int = 1) -> None:
        """Make the next ``n`` `connect` calls raise ``OSError`` (connection refused)."""
        self._refusals += n

    def skip_depth_update(self, symbol: str, n: int = 1) -> None:
        """Do not send the next ``n`` deltas of every live ``orderbook`` stream of ``symbol``
        (deeper than 1). Their ``u`` is skipped too, so the ids cannot tell: the client's
        book is wrong until a REST depth check or a snapshot repairs it."""
        for book in self._books(symbol):
            book.skip += n

    def duplicate_depth_update(self, symbol: str, n: int = 1) -> None:
        """Send each of the next ``n`` deltas of every live ``orderbook`` stream of ``symbol``
        twice: the copy's ``u`` does not increase, a sequence break."""
        for book in self._books(symbol):
            book.duplicate += n

    def resend_snapshot(self, symbol: str) -> None:
        """Send a fresh snapshot as the next message of every live ``orderbook`` stream of
        ``symbol``, as Bybit does after an internal problem."""
        for book in self._books(symbol):
            book.resend = True

    def rest_error(self, path: str, ret_code: int, ret_msg: str, count: int = 1) -> None:
        """Answer the next ``count`` requests to ``path`` (``/v5/market/kline``...) with
        HTTP 200 and ``retCode`` ``ret_code`` (e.g. 10006 "Too many visits!")."""
        self._rest_errors.setdefault(path, deque()).extend([(ret_code, ret_msg)] * count)

    @property
    def live_connections(self) -> list[ConnectionRecord]:
        """The connections still open."""
        return [c.record for c in self._conns]

    # ------------------------------------------------------------------ REST

    async def _rest_handler(self, request: httpx.Request) -> httpx.Response:
        await trio.sleep(self.rest_latency)
        now = self._advance()
        path = request.url.path
        params = dict(request.url.params)
        self.rest_requests.append((path, params))
        body: dict[str, Any]
        errors = self._rest_errors.get(path)
        if errors:
            code, msg = errors.popleft()
            body = _envelope(code, msg, {}, now)
        else:
            handler = self._routes.get(path)
            if handler is None:
                return httpx.Response(404, content=b"not found")
            try:
                body = _envelope(0, "OK", handler(self, params, now), now)
            except _ParamError as exc:
                body = _envelope(10001, str(exc), {}, now)
        return httpx.Response(200, content=orjson.dumps(body))

    def _symbol(self, params: dict[str, str]) -> str:
        symbol = params.get("symbol", "")
        if symbol not in self.market.symbols:
            raise _ParamError("params error: symbol invalid")
        if params.get("category", "linear") not in _CATEGORIES:
            raise _ParamError("params error: category invalid")
        return symbol

    def _time(self, params: dict[str, str], now: int) -> dict[str, Any]:
        return {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}

    def _kline_rest(self, params: dict[str, str], now: int) -> dict[str, Any]:
        symbol = self._symbol(params)
        interval = _INTERVALS.get(params.get("interval", ""))
        if interval is None:
            raise _ParamError("params error: interval invalid")
        limit = _limit(params, 200, 1000)
        start = params.get("start")
        end = params.get("end")
        bars = self.market.klines(
            symbol,
            interval,
            start_time=None if start is None else int(start),
            end_time=None if end is None else int(end),
            include_open=True,
        )[-limit:]  # Bybit keeps the newest ``limit`` of the range
        rows = [
            [
                str(b.open_time),
                _s(b.open),
                _s(b.high),
                _s(b.low),
                _s(b.close),
                _s(b.volume),
                _s(b.quote_volume),
            ]
            for b in reversed(bars)
        ]
        return {"symbol": symbol, "category": params.get("category", "linear"), "list": rows}

    def _recent_trades(self, params: dict[str, str], now: int) -> dict[str, Any]:
        symbol = self._symbol(params)
        spot = params.get("category") == "spot"
        limit = _limit(params, 60 if spot else 500, 60 if spot else 1000)
        rows = [
            {
                "execId": str(t.agg_id),
                "symbol": symbol,
                "price": _s(t.price),
                "size": _s(t.qty),
                "side": "Sell" if t.buyer_is_maker else "Buy",
                "time": str(t.time),
                "isBlockTrade": False,
            }
            for t in reversed(self.market.trades(symbol, limit=limit))
        ]
        return {"category": params.get("category", "linear"), "list": rows}

    def _orderbook_rest(self, params: dict[str, str], now: int) -> dict[str, Any]:
        symbol = self._symbol(params)
        limit = _limit(params, 1 if params.get("category") == "spot" else 25, 1000)
        # The book at the id the streams have published: the 1000-level stream's u.
        try:
            book = self.market.book_at(symbol, self.market.published_update_id(symbol), limit)
        except LookupError:  # right after the opening: only the current book exists
            book = self.market.book(symbol, limit)
        u = book.last_update_id
        return {
            "s": symbol,
            "a": _side(book.asks),
            "b": _side(book.bids),
            "ts": now,
            "u": u,
            "seq": u,
            "cts": book.time,
        }

    def _instruments(self, params: dict[str, str], now: int) -> dict[str, Any]:
        category = params.get("category", "")
        if category not in _CATEGORIES:
            raise _ParamError("params error: category invalid")
        rows: list[dict[str, Any]] = []
        for symbol in self.market.symbols:
            row: dict[str, Any] = {"symbol": symbol, "status": "Trading"}
            if category == "linear":
                row["contractType"] = "LinearPerpetual"
            rows.append(row)
        return {"category": category, "list": rows, "nextPageCursor": ""}

    _routes = {
        "/v5/market/time": _time,
        "/v5/market/kline": _kline_rest,
        "/v5/market/recent-trade": _recent_trades,
        "/v5/market/orderbook": _orderbook_rest,
        "/v5/market/instruments-info": _instruments,
    }


class _ParamError(Exception):
    pass


def _limit(params: dict[str, str], default: int, maximum: int) -> int:
    raw = params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise _ParamError(f"params error: limit must be 1..{maximum}")
    return int(raw)


def _envelope(code: int, msg: str, result: dict[str, Any], now: int) -> dict[str, Any]:
    return {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": now}


def _kline(bar: KlineBar, bybit: str, now: int) -> dict[str, Any]:
    return {
        "start": bar.open_time,
        "end": bar.close_time,
        "interval": bybit,
        "open": _s(bar.open),
        "close": _s(bar.close),
        "high": _s(bar.high),
        "low": _s(bar.low),
        "volume": _s(bar.volume),
        "turnover": _s(bar.quote_volume),
        "confirm": bar.closed,
        "timestamp": now,
    }


def _delta(old: _Levels, new: _Levels, *, reverse: bool) -> list[list[str]]:
    """The levels that changed from ``old`` to ``new`` (``"0"`` for a removed one), best
    first like Bybit's deltas."""
    changed = {p: q for p, q in new.items() if old.get(p) != q}
    for p in old:
        if p not in new:
            changed[p] = Decimal(0)
    return [[_s(p), _s(changed[p])] for p in sorted(changed, reverse=reverse)]
