"""`FakeBitget`: an in-process Bitget v2 simulator (public WebSocket and market REST).

It serves the same `FakeMarket` truth as the Binance fake, in Bitget's protocol, through
the same seams: ``connect(url) -> trio.abc.Stream`` (one end of an in-memory stream pair,
served with trio-websocket's server side), an httpx ``rest_transport`` and ``now_ms()``, so
``open_feed(config, connector=fake.connect, rest_transport=fake.rest_transport,
wall_clock=fake.now_ms)`` runs a feed against it in virtual time::

    async with FakeBitget(seed=1) as fake:
        async with open_feed(config, connector=fake.connect,
                             rest_transport=fake.rest_transport, wall_clock=fake.now_ms):
            ...
            fake.drop_connections()

What it speaks (one ``instType`` per fake, ``USDT-FUTURES`` by default or ``SPOT``):

* WebSocket ``/v2/ws/public``: ``{"op":"subscribe"|"unsubscribe","args":[...]}`` answered per
  channel (``{"event":"subscribe","arg":...}``, or ``{"event":"error",...}`` for an unknown
  channel or symbol); text ``ping`` -> ``pong``; a connection that sends no ``ping`` for
  ``idle_timeout`` seconds (2 minutes, as Bitget) or more than ``max_incoming_per_second``
  messages in a second is closed.
* Channels ``candle<...>`` (a snapshot of the last ``snapshot_candles`` candles, the open one
  last; an update with the open candle every ``candle_every`` ticks; at each bucket end an
  update with the final row of the closed candle, pushed at or after its end), ``trade`` (a
  snapshot of the last ``trade_snapshot`` trades, then every new trade), ``books`` (a full
  snapshot, then one update per book change, with ``seq``, ``pseq`` unless ``send_pseq`` is
  false, and the checksum of the top 25 levels unless ``send_checksum`` is false) and
  ``ticker`` (best bid/ask, and mark/index/funding on futures, every ``ticker_every`` ticks).
* REST ``/api/v2/public/time``, candles (oldest first; a page over ``limit`` is cut at the
  *old* end, the worst case for a client), ``fills-history`` (newest first), the depth
  (``merge-depth`` prints JSON numbers as Bitget's docs show; spot ``orderbook`` strings,
  with the book's engine time ``ts``) and the listings, in Bitget's envelope
  (``code`` ``"00000"``; errors ``40034`` for an unknown symbol).

The market's trade ids happen to be consecutive (they are `FakeMarket`'s aggregate ids);
real Bitget ids are not, which the adapter declares. Book ``seq`` values are the market's
update ids, so ``fake.market.book_at(symbol, seq)`` is the truth for a ``book`` event.

Faults: `drop_connections`, `refuse_next`, `skip_book_update`, `duplicate_book_update`,
`resend_book_snapshot`, `rest_error`. Deterministic: the market is seeded, pushes happen on
a grid of ticks ``t0 + tick_offset + k * tick`` (an odd offset keeps them off a client's
round-numbered timers).
"""

from __future__ import annotations

import errno
import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from decimal import Decimal
from typing import Any

import httpx
import orjson
import trio
import trio.testing
from attrs import define, field
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream

from ..venues.bitget import CANDLE_CHANNELS, book_checksum
from ._lifecycle import RunsItsOwnNursery
from .market import FakeMarket
from .records import KLINE_INTERVALS, AggTrade, KlineBar, SymbolSpec

__all__ = ["BitgetConnectionRecord", "FakeBitget"]

_GONE = (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError)
_INTERVAL_OF = {c: i for i, c in CANDLE_CHANNELS.items() if i in KLINE_INTERVALS}
_FUTURES_GRANULARITY = {c.removeprefix("candle"): i for c, i in _INTERVAL_OF.items()}
_SPOT_GRANULARITY = {
    **_FUTURES_GRANULARITY,
    "1min": "1m",
    "5min": "5m",
    "15min": "15m",
    "30min": "30m",
    "1h": "1h",
    "4h": "4h",
}


@define(slots=True, eq=False)
class BitgetConnectionRecord:
    """What the fake knows about one accepted connection (for tests).

    ``subscriptions`` are ``"<channel>:<instId>"`` names, in subscription order;
    ``close_reason`` is ``"client"``, ``"dropped"``, ``"idle"`` (no ping for
    ``idle_timeout``), ``"incoming-limit"``, ``"slow-client"`` or ``"exchange-closed"``.
    """

    id: int
    opened_at: float
    subscriptions: list[str] = field(factory=list)
    messages_received: list[str] = field(factory=list)
    pings_received: int = 0
    frames_sent: int = 0
    closed_at: float | None = None
    close_reason: str | None = None

    @property
    def is_open(self) -> bool:
        """True until the connection has ended."""
        return self.closed_at is None


@define(slots=True, eq=False)
class _Sub:
    channel: str
    symbol: str
    seq: int = 0  # books: the last seq sent; trades: the last trade id sent


class _Conn:
    def __init__(self, record: BitgetConnectionRecord, ws: WebSocketConnection) -> None:
        self.record = record
        self.ws = ws
        self.subs: dict[str, _Sub] = {}
        self.send, self.recv = trio.open_memory_channel[str](10_000)
        self.scope = trio.CancelScope()
        self.idle = trio.CancelScope()
        self.incoming: deque[float] = deque()

    def push(self, text: str) -> None:
        try:
            self.send.send_nowait(text)
        except trio.WouldBlock:
            self.close("slow-client")  # the client does not read: drop it, never stall
        except trio.ClosedResourceError:
            pass

    def close(self, reason: str) -> None:
        if self.record.close_reason is None:
            self.record.close_reason = reason
        self.scope.cancel()


class FakeBitget(RunsItsOwnNursery):
    """A Bitget v2 public-API simulator (see the module docstring).

    Args:
      symbols, seed, start_time_ms, trade_rate: the `FakeMarket` (its book changes every tick).
      inst_type: ``"USDT-FUTURES"`` or ``"SPOT"``: the market served (WS and REST).
      tick, tick_offset: the push grid (seconds).
      candle_every, ticker_every: ticks between pushes of the open candle / the ticker.
      snapshot_candles: candles in a candle subscription's snapshot (the open one included).
      trade_snapshot: trades in a trade subscription's snapshot.
      idle_timeout: seconds without a client ``ping`` after which a connection is closed.
      max_incoming_per_second: more client messages than this within a second close it.
      book_levels: levels each side of the simulated books.
      send_pseq, send_checksum: whether ``books`` frames carry ``pseq`` and a checksum
        (else 0).
      rest_latency: virtual seconds per REST request.
    """

    def __init__(
        self,
        *,
        symbols: Iterable[str | SymbolSpec] = ("BTCUSDT", "ETHUSDT"),
        seed: int = 0,
        start_time_ms: int = 1_767_225_600_000,
        trade_rate: float | Mapping[str, float] = 2.0,
        inst_type: str = "USDT-FUTURES",
        tick: float = 0.1,
        tick_offset: float = 0.0137,
        candle_every: int = 10,
        ticker_every: int = 10,
        snapshot_candles: int = 3,
        trade_snapshot: int = 20,
        idle_timeout: float = 120.0,
        max_incoming_per_second: int = 10,
        book_levels: int = 60,
        send_pseq: bool = True,
        send_checksum: bool = True,
        rest_latency: float = 0.005,
    ) -> None:
        if inst_type not in ("USDT-FUTURES", "SPOT"):
            raise ValueError(f"inst_type must be USDT-FUTURES or SPOT, not {inst_type!r}")
        self.inst_type = inst_type
        self.futures = inst_type == "USDT-FUTURES"
        self.tick = tick
        self.tick_offset = tick_offset
        self.candle_every = candle_every
        self.ticker_every = ticker_every
        self.snapshot_candles = snapshot_candles
        self.trade_snapshot = trade_snapshot
        self.idle_timeout = idle_timeout
        self.max_incoming_per_second = max_incoming_per_second
        self.send_pseq = send_pseq
        self.send_checksum = send_checksum
        self.rest_latency = rest_latency
        self.start_time_ms = start_time_ms
        #: The simulated market: the truth to compare a client's output with.
        self.market = FakeMarket(
            symbols,
            seed=seed,
            start_time_ms=start_time_ms,
            trade_rate=trade_rate,
            depth_step_ms=max(1, round(tick * 1000)),
            book_levels=book_levels,
        )
        #: An httpx transport answering REST requests in-process.
        self.rest_transport: httpx.AsyncBaseTransport = httpx.MockTransport(self._rest_handler)
        #: Every accepted connection, in order.
        self.connections: list[BitgetConnectionRecord] = []
        #: REST requests handled: (path, query parameters).
        self.rest_requests: list[tuple[str, dict[str, str]]] = []
        #: REST requests per path.
        self.rest_calls: Counter[str] = Counter()
        #: Book updates generated but not sent (`skip_book_update`), as (symbol, seq).
        self.books_skipped: list[tuple[str, int]] = []
        self._conns: list[_Conn] = []
        self._refusals = 0
        self._skip: Counter[str] = Counter()
        self._duplicate: Counter[str] = Counter()
        self._resend: set[str] = set()
        self._rest_faults: dict[str, deque[tuple[int, str, str]]] = {}
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._t0: float | None = None
        self._live = trio.Event()
        self._pending: list[Any] = []

    # ------------------------------------------------------------------ lifecycle and time

    def now_ms(self) -> int:
        """Exchange time in ms (``start_time_ms`` until the fake is entered)."""
        if self._t0 is None:
            return self.start_time_ms
        return self.start_time_ms + math.floor((trio.current_time() - self._t0) * 1000 + 1e-6)

    def _advance(self) -> None:
        # Whatever moves the market (a tick, a REST call, a subscribe) keeps what happened
        # for the next tick to push: a kline close seen first by a REST call is not lost.
        self._pending.extend(self.market.advance_to(self.now_ms()))

    # ------------------------------------------------------------------ faults

    def drop_connections(self) -> int:
        """Close every live connection abruptly (the client sees 1006); returns how many."""
        live = [c for c in self._conns if c.record.is_open and c.record.close_reason is None]
        for conn in live:
            conn.close("dropped")
        return len(live)

    def refuse_next(self, n: int = 1) -> None:
        """Make the next ``n`` `connect` calls raise ``OSError`` (connection refused)."""
        self._refusals += n

    def skip_book_update(self, symbol: str) -> None:
        """Generate but do not send the next ``books`` update of ``symbol`` (a seq gap)."""
        self._skip[symbol] += 1

    def duplicate_book_update(self, symbol: str) -> None:
        """Send the next ``books`` update of ``symbol`` twice."""
        self._duplicate[symbol] += 1

    def resend_book_snapshot(self, symbol: str) -> None:
        """Send a fresh ``books`` snapshot of ``symbol`` at the next tick, as Bitget does
        when it resets a subscription's book."""
        self._resend.add(symbol)

    def rest_error(
        self, path: str, code: str = "40001", msg: str = "error", count: int = 1, status: int = 200
    ) -> None:
        """Answer the next ``count`` requests to ``path`` with a Bitget error envelope."""
        self._rest_faults.setdefault(path, deque()).extend([(status, code, msg)] * count)

    # ------------------------------------------------------------------ connections

    async def connect(self, url: str) -> trio.abc.Stream:
        """Open an in-process connection; returns the client's end of the byte stream."""
        if self._nursery is None:
            raise RuntimeError("use the FakeBitget inside 'async with FakeBitget() as fake:'")
        await trio.lowlevel.checkpoint()
        if self._refusals:
            self._refusals -= 1
            raise OSError(errno.ECONNREFUSED, f"connection refused: {url}")
        client, server = trio.testing.memory_stream_pair()
        self._nursery.start_soon(self._serve, server)
        return client

    async def _serve(self, stream: trio.abc.Stream) -> None:
        conn: _Conn | None = None
        try:
            async with trio.open_nursery() as nursery:
                request = await wrap_server_stream(nursery, stream)
                if request.path != "/v2/ws/public":
                    await request.reject(404, body=b"unknown path")
                    nursery.cancel_scope.cancel()
                    return
                ws = await request.accept()
                record = BitgetConnectionRecord(len(self.connections) + 1, trio.current_time())
                self.connections.append(record)
                conn = _Conn(record, ws)
                self._conns.append(conn)
                self._live.set()
                with conn.scope:
                    async with trio.open_nursery() as tasks:
                        tasks.start_soon(self._reader, conn)
                        tasks.start_soon(self._writer, conn)
                        tasks.start_soon(self._idle_watch, conn)
                nursery.cancel_scope.cancel()
        except* _GONE:
            pass
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)  # abrupt: no close frame
            if conn is not None:
                if conn.record.close_reason is None:
                    conn.record.close_reason = "exchange-closed"
                conn.record.closed_at = trio.current_time()
                self._conns.remove(conn)

    async def _writer(self, conn: _Conn) -> None:
        try:
            async for text in conn.recv:
                await conn.ws.send_message(text)
                conn.record.frames_sent += 1
        except _GONE:
            conn.close("client")

    async def _idle_watch(self, conn: _Conn) -> None:
        while True:
            conn.idle = trio.CancelScope(deadline=trio.current_time() + self.idle_timeout)
            with conn.idle:
                await trio.sleep_forever()
            if conn.idle.cancelled_caught and trio.current_time() >= conn.idle.deadline:
                conn.close("idle")
                return

    async def _reader(self, conn: _Conn) -> None:
        try:
            while True:
                message = await conn.ws.get_message()
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                conn.record.messages_received.append(text)
                now = trio.current_time()
                conn.incoming.append(now)
                while conn.incoming and conn.incoming[0] <= now - 1.0 + 1e-6:
                    conn.incoming.popleft()
                if len(conn.incoming) > self.max_incoming_per_second:
                    conn.close("incoming-limit")
                    return
                if text == "ping":
                    conn.record.pings_received += 1
                    conn.idle.cancel()  # restarts the idle timer
                    conn.push("pong")
                    continue
                self._control(conn, text)
        except _GONE:
            conn.close("client")

    def _control(self, conn: _Conn, text: str) -> None:
        try:
            msg = orjson.loads(text)
            op, args = msg["op"], msg["args"]
            if op not in ("subscribe", "unsubscribe") or type(args) is not list:
                raise ValueError(op)
        except (ValueError, KeyError, TypeError):
            conn.push(_dumps({"event": "error", "code": 30016, "msg": "param error"}))
            return
        self._advance()  # the market catches up: snapshots are of now
        for arg in args:
            reason = self._check_arg(arg)
            if reason is not None:
                conn.push(_dumps({"event": "error", "arg": arg, "code": 30001, "msg": reason}))
                continue
            name = f"{arg['channel']}:{arg['instId']}"
            conn.push(_dumps({"event": op, "arg": arg}))
            if op == "unsubscribe":
                conn.subs.pop(name, None)
                continue
            if name in conn.subs:
                continue
            sub = _Sub(arg["channel"], arg["instId"])
            conn.subs[name] = sub
            conn.record.subscriptions.append(name)
            self._snapshot(conn, sub)

    def _check_arg(self, arg: Any) -> str | None:
        if type(arg) is not dict:
            return "param error"
        channel, inst = arg.get("channel"), arg.get("instId")
        known = channel in ("trade", "books", "ticker") or channel in _INTERVAL_OF
        if arg.get("instType") != self.inst_type or not known or inst not in self.market.symbols:
            return f"instType:{arg.get('instType')},channel:{channel},instId:{inst} doesn't exist"
        return None

    # ------------------------------------------------------------------ pushes

    def _frame(self, sub: _Sub, action: str, data: list[Any], ts: int) -> str:
        arg = {"instType": self.inst_type, "channel": sub.channel, "instId": sub.symbol}
        return _dumps({"action": action, "arg": arg, "data": data, "ts": ts})

    def _snapshot(self, conn: _Conn, sub: _Sub) -> None:
        now = self.now_ms()
        market, symbol = self.market, sub.symbol
        if sub.channel in _INTERVAL_OF:
            bars = market.klines(
                symbol, _INTERVAL_OF[sub.channel], limit=self.snapshot_candles, include_open=True
            )
            conn.push(self._frame(sub, "snapshot", [_candle_row(b) for b in bars], now))
        elif sub.channel == "trade":
            trades = market.trades(symbol, limit=self.trade_snapshot)
            sub.seq = trades[-1].agg_id if trades else 0  # updates start after these
            conn.push(self._frame(sub, "snapshot", [_trade_row(t) for t in reversed(trades)], now))
        elif sub.channel == "books":
            self._book_snapshot(conn, sub, now)
        else:
            conn.push(self._frame(sub, "snapshot", [self._ticker(symbol, now)], now))

    def _book_snapshot(self, conn: _Conn, sub: _Sub, now: int) -> None:
        # The book as it is now; its updates then follow as the stream publishes them.
        book = self.market.book(sub.symbol)
        seq = book.last_update_id
        data = {
            "asks": _levels(book.asks),
            "bids": _levels(book.bids),
            "checksum": book_checksum(book.bids, book.asks) if self.send_checksum else 0,
            "seq": seq,
            "ts": str(book.time),
        }
        sub.seq = seq
        conn.push(self._frame(sub, "snapshot", [data], now))

    def _book_update(self, conn: _Conn, sub: _Sub, now: int) -> None:
        symbol = sub.symbol
        if symbol in self._resend:
            self._book_snapshot(conn, sub, now)
            return
        seq = self.market.published_update_id(symbol)
        if seq <= sub.seq:
            return
        diff = self.market.depth_diff(symbol, sub.seq, seq)
        prev, sub.seq = sub.seq, seq
        if diff is None:
            return
        if self._skip[symbol]:
            self._skip[symbol] -= 1
            self.books_skipped.append((symbol, seq))
            return
        data: dict[str, Any] = {
            "asks": _levels(diff.asks),
            "bids": _levels(diff.bids),
            "checksum": 0,
            "seq": seq,
            "ts": str(diff.time),
        }
        if self.send_pseq:
            data["pseq"] = prev
        if self.send_checksum:
            book = self.market.book_at(symbol, seq, 25)
            data["checksum"] = book_checksum(book.bids, book.asks)
        text = self._frame(sub, "update", [data], now)
        conn.push(text)
        if self._duplicate[symbol]:
            self._duplicate[symbol] -= 1
            conn.push(text)

    def _ticker(self, symbol: str, now: int) -> dict[str, Any]:
        q = self.market.best_quote(symbol)
        data: dict[str, Any] = {
            "instId": symbol,
            "lastPr": str(self.market.last_price(symbol)),
            "bidPr": str(q.bid_price),
            "askPr": str(q.ask_price),
            "bidSz": str(q.bid_qty),
            "askSz": str(q.ask_qty),
            "ts": str(now),
        }
        if self.futures:
            m = self.market.mark_price(symbol, now)
            data |= {
                "markPrice": str(m.mark_price),
                "indexPrice": str(m.index_price),
                "fundingRate": str(m.funding_rate),
                "nextFundingTime": str(m.next_funding_time),
            }
        return data

    async def _tick_loop(self) -> None:
        assert self._t0 is not None
        k = 0
        while True:
            if not self._conns:
                # Nothing to push: sleep until a connection comes, then resume on the grid.
                self._live = trio.Event()
                await self._live.wait()
                k = max(
                    k, math.ceil((trio.current_time() - self._t0 - self.tick_offset) / self.tick)
                )
            await trio.sleep_until(self._t0 + self.tick_offset + k * self.tick)
            self._tick(k)
            self._resend.clear()
            k += 1

    def _tick(self, k: int) -> None:
        self._advance()
        events, self._pending = self._pending, []
        now = self.now_ms()
        trades: dict[str, list[AggTrade]] = {}
        closed: dict[tuple[str, str], KlineBar] = {}
        for e in events:
            if isinstance(e, AggTrade):
                trades.setdefault(e.symbol, []).append(e)
            elif isinstance(e, KlineBar):
                closed[(e.symbol, e.interval)] = e
        for conn in list(self._conns):
            if conn.record.close_reason is not None:
                continue
            for sub in list(conn.subs.values()):
                channel, symbol = sub.channel, sub.symbol
                interval = _INTERVAL_OF.get(channel)
                if interval is not None:
                    bar = closed.get((symbol, interval))
                    if bar is not None:
                        conn.push(self._frame(sub, "update", [_candle_row(bar)], now))
                    if k % self.candle_every == 0:
                        current = self.market.current_kline(symbol, interval)
                        conn.push(self._frame(sub, "update", [_candle_row(current)], now))
                elif channel == "trade":
                    new = [t for t in trades.get(symbol, ()) if t.agg_id > sub.seq]
                    if new:
                        sub.seq = new[-1].agg_id
                        rows = [_trade_row(t) for t in reversed(new)]  # newest first
                        conn.push(self._frame(sub, "update", rows, now))
                elif channel == "books":
                    self._book_update(conn, sub, now)
                elif k % self.ticker_every == 0:
                    conn.push(self._frame(sub, "snapshot", [self._ticker(symbol, now)], now))

    # ------------------------------------------------------------------ REST

    async def _rest_handler(self, request: httpx.Request) -> httpx.Response:
        await trio.sleep(self.rest_latency)
        path = request.url.path
        params = dict(request.url.params)
        self.rest_requests.append((path, params))
        self.rest_calls[path] += 1
        self._advance()
        faults = self._rest_faults.get(path)
        if faults:
            status, code, msg = faults.popleft()
            return _envelope(None, code=code, msg=msg, status=status)
        prefix = "/api/v2/mix/market/" if self.futures else "/api/v2/spot/market/"
        routes = {
            "/api/v2/public/time": self._time,
            prefix + "candles": self._candles,
            prefix + "fills-history": self._fills,
            (prefix + "merge-depth" if self.futures else prefix + "orderbook"): self._depth,
            (prefix + "contracts" if self.futures else "/api/v2/spot/public/symbols"): self._list,
        }
        handler = routes.get(path)
        if handler is None:
            return _envelope(None, code="40404", msg="Request URL NOT FOUND", status=404)
        product = params.get("productType", "").upper()
        if self.futures and path != "/api/v2/public/time" and product != "USDT-FUTURES":
            return _envelope(None, code="40020", msg="Parameter productType error", status=400)
        if handler not in (self._time, self._list) and params.get("symbol") not in set(
            self.market.symbols
        ):
            return _envelope(None, code="40034", msg="Parameter symbol does not exist", status=400)
        return handler(params)

    def _time(self, params: dict[str, str]) -> httpx.Response:
        return _envelope({"serverTime": str(self.now_ms())})

    def _candles(self, params: dict[str, str]) -> httpx.Response:
        names = _FUTURES_GRANULARITY if self.futures else _SPOT_GRANULARITY
        interval = names.get(params.get("granularity", ""))
        if interval is None:
            return _envelope(None, code="40808", msg="Parameter granularity error", status=400)
        limit = int(params.get("limit", "100"))
        if not 1 <= limit <= 1000:
            return _envelope(None, code="40808", msg="Parameter limit error", status=400)
        start = int(params["startTime"]) if "startTime" in params else None
        end = int(params["endTime"]) if "endTime" in params else None
        # All matching candles, then the newest ``limit``: the old end is what gets cut.
        bars = self.market.klines(
            params["symbol"], interval, start_time=start, end_time=end, include_open=True
        )[-limit:]
        rows = [_candle_row(b)[: 8 if not self.futures else 7] for b in bars]
        return _envelope(rows)

    def _fills(self, params: dict[str, str]) -> httpx.Response:
        limit = int(params.get("limit", "500"))
        start = int(params["startTime"]) if "startTime" in params else None
        end = int(params["endTime"]) if "endTime" in params else None
        trades = self.market.trades(params["symbol"], start_time=start, end_time=end)
        if "idLessThan" in params:
            trades = [t for t in trades if t.agg_id < int(params["idLessThan"])]
        rows = [_trade_row(t) | {"symbol": t.symbol} for t in reversed(trades[-limit:])]
        return _envelope(rows)

    def _depth(self, params: dict[str, str]) -> httpx.Response:
        raw = params.get("limit", "100")
        limit = None if raw == "max" else int(raw)
        book = self.market.book(params["symbol"], limit)
        if self.futures:
            # Bitget's merge-depth example prints numbers, not strings.
            bids: list[Any] = [[float(p), float(q)] for p, q in book.bids]
            asks: list[Any] = [[float(p), float(q)] for p, q in book.asks]
        else:
            bids, asks = _levels(book.bids), _levels(book.asks)
        return _envelope({"asks": asks, "bids": bids, "ts": str(book.time)})

    def _list(self, params: dict[str, str]) -> httpx.Response:
        if self.futures:
            rows = [
                {"symbol": s, "symbolStatus": "normal", "symbolType": "perpetual"}
                for s in self.market.symbols
            ]
        else:
            rows = [{"symbol": s, "status": "online"} for s in self.market.symbols]
        return _envelope(rows)


# ---- wire helpers -------------------------------------------------------------------------


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _levels(levels: Iterable[tuple[Decimal, Decimal]]) -> list[list[str]]:
    return [[str(p), str(q)] for p, q in levels]


def _candle_row(bar: KlineBar) -> list[str]:
    """``[ts, o, h, l, c, base volume, quote volume, USDT volume]``."""
    quote = str(bar.quote_volume)
    return [
        str(bar.open_time),
        str(bar.open),
        str(bar.high),
        str(bar.low),
        str(bar.close),
        str(bar.volume),
        quote,
        quote,
    ]


def _trade_row(t: AggTrade) -> dict[str, str]:
    return {
        "ts": str(t.time),
        "price": str(t.price),
        "size": str(t.qty),
        "side": "sell" if t.buyer_is_maker else "buy",
        "tradeId": str(t.agg_id),
    }


def _envelope(
    data: Any, *, code: str = "00000", msg: str = "success", status: int = 200
) -> httpx.Response:
    body = {"code": code, "msg": msg, "requestTime": 0, "data": data}
    return httpx.Response(status, content=orjson.dumps(body))
