"""`FakeGateway`: an in-process JSON gateway speaking the ``json-gateway`` protocol.

The counterpart of :mod:`trio_feed.venues.gateway` for tests, like `FakeExchange` is for
Binance USD-M: WebSocket over `trio.testing.memory_stream_pair` (`FakeGateway.connect` is a
feed's connector) under the mock clock, REST through an httpx transport
(`FakeGateway.rest_transport`), and a `FakeMarket` (``fake.market``) as the truth to compare
a feed's klines and trades with::

    async with FakeGateway(token="s3cret", market="perp") as gateway:
        async with open_feed(config, connector=gateway.connect,
                             rest_transport=gateway.rest_transport,
                             wall_clock=gateway.now_ms) as feed:
            ...

Each connection must send ``CONNECT`` first with the right token and market; a wrong token
or market is answered with a permanent ``ERROR`` and the socket closed (code 1008), and
`FakeGateway.reject_next` makes the next attempts fail with a transient one (``"retry":
true``, e.g. busy). After ``CONNECTED`` the gateway acknowledges SUBSCRIBE / UNSUBSCRIBE and
pushes, on a tick grid (``t0 + tick_offset + k * tick``, odd offsets keep its deadlines off
a client's round timers): every trade of a subscribed ``<SYMBOL>@aggTrade``, every closed
kline of a subscribed ``<SYMBOL>@kline_<interval>`` plus the open kline every
``kline_every`` ticks, and the best quote of a ``<SYMBOL>@bookTicker`` every ``quote_every``
ticks. `GatewayConnection` records what each connection did.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import orjson
import trio
import trio.testing
from attrs import define, field
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream
from wsproto.utilities import LocalProtocolError

from ._lifecycle import RunsItsOwnNursery
from .market import FakeMarket
from .records import AggTrade, BestQuote, KlineBar, SymbolSpec

__all__ = ["FakeGateway", "GatewayConnection"]

#: Errors that only mean "this connection is gone".
_GONE = (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError, LocalProtocolError)


@define(slots=True, eq=False)
class GatewayConnection:
    """What the fake gateway knows about one connection (for tests).

    ``market`` is what the CONNECT frame asked for; ``rejected`` the reason the gateway
    refused it with (None if it did not); ``connected_at`` when it answered ``CONNECTED``
    (trio time); ``streams`` what the connection is subscribed to (at the end: what it held
    when it closed); ``client_frames`` the ``type`` of every frame the client sent, in order
    (never their content: the CONNECT frame carries the token).
    """

    id: int
    opened_at: float
    market: str | None = None
    rejected: str | None = None
    connected_at: float | None = None
    closed_at: float | None = None
    streams: list[str] = field(factory=list)
    client_frames: list[str] = field(factory=list)
    frames_sent: int = 0


class _Live:
    """An accepted connection that the tick loop pushes to."""

    def __init__(
        self, ws: WebSocketConnection, stream: trio.abc.Stream, record: GatewayConnection
    ) -> None:
        self.ws = ws
        self.stream = stream
        self.record = record
        self.streams: set[str] = set()

    async def send(self, payload: Mapping[str, Any]) -> None:
        await self.ws.send_message(orjson.dumps(payload).decode())
        self.record.frames_sent += 1


class FakeGateway(RunsItsOwnNursery):
    """A JSON gateway with a token handshake (see the module docstring).

    Args:
      token: the token a client must send in CONNECT.
      market: the market type a client must ask for.
      symbols, seed, start_time_ms, trade_rate: the `FakeMarket`'s.
      tick, tick_offset: the push grid, in seconds.
      kline_every: ticks between pushes of each subscribed open kline.
      quote_every: ticks between pushes of each subscribed best quote.
      handshake_timeout: seconds a client gets to send CONNECT.
      connect_delay: seconds the gateway takes to answer a CONNECT (either way).
    """

    def __init__(
        self,
        *,
        token: str,
        market: str = "perp",
        symbols: Iterable[str | SymbolSpec] = ("BTCUSDT", "ETHUSDT"),
        seed: int = 0,
        start_time_ms: int = 1_767_225_600_000,
        trade_rate: float | Mapping[str, float] = 2.0,
        tick: float = 0.1,
        tick_offset: float = 0.0137,
        kline_every: int = 5,
        quote_every: int = 5,
        handshake_timeout: float = 10.0,
        connect_delay: float = 0.0,
    ) -> None:
        if tick <= 0 or kline_every < 1 or quote_every < 1:
            raise ValueError("tick must be positive and the *_every counts at least 1")
        self.token = token
        self.market_type = market
        self.tick = tick
        self.tick_offset = tick_offset
        self.kline_every = kline_every
        self.quote_every = quote_every
        self.handshake_timeout = handshake_timeout
        self.connect_delay = connect_delay
        self.start_time_ms = start_time_ms
        #: The simulated market: the truth behind every frame and REST answer.
        self.market = FakeMarket(
            symbols, seed=seed, start_time_ms=start_time_ms, trade_rate=trade_rate
        )
        #: An httpx transport answering the gateway's REST API in-process.
        self.rest_transport: httpx.AsyncBaseTransport = httpx.MockTransport(self._rest)
        #: Every connection attempt, in order.
        self.connections: list[GatewayConnection] = []
        #: REST request targets (``path?query``), in order.
        self.rest_requests: list[str] = []
        self._rejections: deque[str] = deque()
        self._live: dict[int, _Live] = {}
        self._pending: list[AggTrade | KlineBar] = []
        self._ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._t0: float | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def now_ms(self) -> int:
        """Gateway time in epoch milliseconds (``start_time_ms`` until entered)."""
        if self._t0 is None:
            return self.start_time_ms
        return self.start_time_ms + math.floor((trio.current_time() - self._t0) * 1000 + 1e-6)

    # ---- faults and observations -----------------------------------------------------------

    def reject_next(self, reason: str = "gateway busy", count: int = 1) -> None:
        """Refuse the next ``count`` handshakes with a transient ERROR (``"retry": true``),
        whatever their token."""
        self._rejections.extend([reason] * count)

    def drop_connections(self) -> None:
        """Close every live connection abruptly (no close frame)."""
        for live in list(self._live.values()):
            self._running().start_soon(trio.aclose_forcefully, live.stream)

    @property
    def accepted(self) -> list[GatewayConnection]:
        """The connections whose handshake was accepted."""
        return [c for c in self.connections if c.connected_at is not None]

    # ---- connecting ------------------------------------------------------------------------

    def _running(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("use the FakeGateway inside 'async with FakeGateway() as gw:'")
        return self._nursery

    async def connect(self, url: str) -> trio.abc.Stream:
        """Open an in-process connection; returns the client's end of the byte stream (a
        feed's ``connector``)."""
        nursery = self._running()
        await trio.lowlevel.checkpoint()
        client, server = trio.testing.memory_stream_pair()
        record = GatewayConnection(next(self._ids), trio.current_time())
        self.connections.append(record)
        nursery.start_soon(self._serve, server, record)
        return client

    async def _serve(self, stream: trio.abc.Stream, record: GatewayConnection) -> None:
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await self._serve_ws(nursery, stream, record)
                except* _GONE:
                    pass
                nursery.cancel_scope.cancel()
        except* _GONE:
            pass
        finally:
            self._live.pop(record.id, None)
            record.closed_at = trio.current_time()
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)

    async def _serve_ws(
        self, nursery: trio.Nursery, stream: trio.abc.Stream, record: GatewayConnection
    ) -> None:
        request = await wrap_server_stream(nursery, stream)
        ws = await request.accept()
        first: str | bytes | None = None
        with trio.move_on_after(self.handshake_timeout):
            first = await ws.get_message()
        if first is None:
            await ws.aclose(1008, "no CONNECT")
            return
        refusal = self._check_connect(first, record)
        await trio.sleep(self.connect_delay)
        if refusal is not None:
            record.rejected = refusal[0]
            await ws.send_message(
                orjson.dumps({"type": "ERROR", "reason": refusal[0], **refusal[1]}).decode()
            )
            await ws.aclose(1008, refusal[0])
            return
        live = _Live(ws, stream, record)
        await live.send({"type": "CONNECTED"})
        record.connected_at = trio.current_time()
        self._live[record.id] = live
        while True:
            await self._control(live, await ws.get_message())

    def _check_connect(
        self, frame: str | bytes, record: GatewayConnection
    ) -> tuple[str, dict[str, Any]] | None:
        """None to accept a first frame, else (reason, extra ERROR fields)."""
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            msg = None
        if not isinstance(msg, dict):
            record.client_frames.append("?")
            return "expected a JSON CONNECT frame", {}
        record.client_frames.append(str(msg.get("type")))
        if msg.get("type") != "CONNECT":
            return "CONNECT must come first", {}
        market = msg.get("market")
        record.market = market if isinstance(market, str) else None
        if self._rejections:
            return self._rejections.popleft(), {"retry": True}
        if msg.get("token") != self.token:
            return "invalid token", {}  # never echo what the client sent
        if market != self.market_type:
            return f"unknown market {market!r}", {}
        return None

    async def _control(self, live: _Live, frame: str | bytes) -> None:
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            msg = None
        if not isinstance(msg, dict):
            live.record.client_frames.append("?")
            await live.send({"type": "NOTICE", "message": "ignored a frame that is not JSON"})
            return
        kind, request_id = msg.get("type"), msg.get("id")
        live.record.client_frames.append(str(kind))
        streams = msg.get("streams")
        if kind not in ("SUBSCRIBE", "UNSUBSCRIBE") or not isinstance(streams, list):
            await live.send({"type": "ERROR", "id": request_id, "reason": "bad request"})
            return
        unknown = [s for s in streams if not self._known_stream(s)]
        if unknown:
            await live.send(
                {
                    "type": "ERROR",
                    "id": request_id,
                    "code": "UNKNOWN_STREAM",
                    "reason": "unknown streams: " + ", ".join(map(str, unknown)),
                }
            )
            return
        for name in streams:
            if kind == "SUBSCRIBE" and name not in live.streams:
                live.streams.add(name)
                live.record.streams.append(name)
            elif kind == "UNSUBSCRIBE" and name in live.streams:
                live.streams.discard(name)
                live.record.streams.remove(name)
        await live.send({"type": "ACK", "id": request_id})

    def _known_stream(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        symbol, _, channel = name.partition("@")
        if symbol not in self.market.symbols:
            return False
        return channel in ("aggTrade", "bookTicker") or (
            channel.startswith("kline_") and channel[len("kline_") :] in _INTERVALS
        )

    # ---- pushing ---------------------------------------------------------------------------

    def _advance(self) -> None:
        for event in self.market.advance_to(self.now_ms()):
            if isinstance(event, AggTrade | KlineBar):
                self._pending.append(event)

    async def _tick_loop(self) -> None:
        assert self._t0 is not None
        for k in itertools.count():
            await trio.sleep_until(self._t0 + self.tick_offset + k * self.tick)
            self._advance()
            events, self._pending = self._pending, []
            for live in list(self._live.values()):
                try:
                    await self._push(live, k, events)
                except _GONE:
                    self._live.pop(live.record.id, None)

    async def _push(self, live: _Live, k: int, events: list[AggTrade | KlineBar]) -> None:
        streams = live.streams
        for event in events:
            if isinstance(event, AggTrade):
                if f"{event.symbol}@aggTrade" in streams:
                    await live.send(_trade_frame(event))
            elif f"{event.symbol}@kline_{event.interval}" in streams:
                await live.send(_kline_frame(event))
        for name in sorted(streams):
            symbol, _, channel = name.partition("@")
            if channel.startswith("kline_") and k % self.kline_every == 0:
                bar = self.market.current_kline(symbol, channel[len("kline_") :])
                await live.send(_kline_frame(bar))
            elif channel == "bookTicker" and k % self.quote_every == 0:
                await live.send(_quote_frame(self.market.best_quote(symbol)))

    # ---- REST ------------------------------------------------------------------------------

    def _rest(self, request: httpx.Request) -> httpx.Response:
        self.rest_requests.append(request.url.raw_path.decode())
        self._advance()
        q = request.url.params
        path = request.url.path

        def number(name: str) -> int | None:
            value = q.get(name)
            return None if value is None else int(value)

        if path == "/api/v1/time":
            return httpx.Response(200, json={"server_time": self.now_ms()})
        symbol = q.get("symbol", "")
        if path in ("/api/v1/klines", "/api/v1/trades") and symbol not in self.market.symbols:
            return httpx.Response(400, json={"error": f"unknown symbol {symbol!r}"})
        if path == "/api/v1/klines":
            interval = q.get("interval", "")
            if interval not in _INTERVALS:
                return httpx.Response(400, json={"error": f"unknown interval {interval!r}"})
            bars = self.market.klines(
                symbol,
                interval,
                start_time=number("start_time"),
                end_time=number("end_time"),
                limit=number("limit") or 500,
                include_open=True,
            )
            return _json(200, [_kline_frame(b) for b in bars])
        if path == "/api/v1/trades":
            trades = self.market.trades(
                symbol,
                from_id=number("from_id"),
                start_time=number("start_time"),
                end_time=number("end_time"),
                limit=number("limit") or 500,
            )
            return _json(200, [_trade_frame(t) for t in trades])
        return httpx.Response(404, json={"error": f"no such endpoint {path}"})


#: The kline intervals the fake streams and serves (the adapter's streamed set).
_INTERVALS = frozenset({"1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d"})


def _json(status: int, data: object) -> httpx.Response:
    return httpx.Response(status, content=orjson.dumps(data), headers={"content-type": "json"})


def _trade_frame(t: AggTrade) -> dict[str, Any]:
    return {
        "type": "trade",
        "symbol": t.symbol,
        "id": t.agg_id,
        "price": str(t.price),
        "qty": str(t.qty),
        "first_trade_id": t.first_trade_id,
        "last_trade_id": t.last_trade_id,
        "time": t.time,
        "buyer_is_maker": t.buyer_is_maker,
    }


def _kline_frame(b: KlineBar) -> dict[str, Any]:
    return {
        "type": "kline",
        "symbol": b.symbol,
        "interval": b.interval,
        "open_time": b.open_time,
        "close_time": b.close_time,
        "open": str(b.open),
        "high": str(b.high),
        "low": str(b.low),
        "close": str(b.close),
        "volume": str(b.volume),
        "quote_volume": str(b.quote_volume),
        "trades": b.trades,
        "taker_buy_volume": str(b.taker_buy_volume),
        "taker_buy_quote_volume": str(b.taker_buy_quote_volume),
        "closed": b.closed,
    }


def _quote_frame(q: BestQuote) -> dict[str, Any]:
    return {
        "type": "book_ticker",
        "symbol": q.symbol,
        "bid_price": str(q.bid_price),
        "bid_qty": str(q.bid_qty),
        "ask_price": str(q.ask_price),
        "ask_qty": str(q.ask_qty),
        "update_id": q.update_id,
        "time": q.time,
    }
