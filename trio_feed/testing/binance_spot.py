"""`FakeBinanceSpot`: the fake exchange speaking Binance spot instead of USD-M futures.

The same simulator as `trio_feed.testing.FakeExchange` (the same `FakeMarket` truth, faults,
observation and seams: `FakeExchange.connect`, ``rest_transport``, `FakeExchange.now_ms`),
with spot's differences:

* paths: ``/ws[/<names>]`` and ``/stream?streams=...`` carry every stream (no
  ``/public``/``/market`` split; those paths answer 404). The one route is ``"ws"``;
* streams: ``<symbol>@aggTrade`` (with spot's ``M``), ``<symbol>@kline_<interval>``,
  ``<symbol>@depth`` (1000 ms) and ``<symbol>@depth@100ms`` without ``pu`` or ``T``
  (``U`` is always the previous ``u + 1``), ``<symbol>@bookTicker`` with only
  ``u, s, b, B, a, A``. No mark price and no continuous klines (such names deliver nothing,
  like any unknown stream). The market simulates no ``1s`` klines, so ``@kline_1s`` delivers
  nothing either;
* limits: 5 incoming messages per second, a server ping every 20 s and a minute to answer
  it, REST weight 6000 per minute;
* REST under ``/api/v3``: ``ping``, ``time``, ``exchangeInfo`` (weight 20; a delisted symbol
  is ``BREAK``), ``klines`` (weight 2, limit up to 1000), ``aggTrades`` (weight 4, rows with
  ``M``) and ``depth`` (limit 1..5000, default 100, weight 5/25/50/250; the body is only
  ``lastUpdateId``, ``bids``, ``asks``). Oldest first, as on Binance.

Every fault of `FakeExchange` works here (``skip_depth_update`` breaks the ``U == u + 1``
chain, ``duplicate_depth_update`` repeats a diff...); route arguments take ``"ws"`` or None::

    async with FakeBinanceSpot(seed=1) as fake:
        config = ...  # exchange = "binance-spot"
        async with open_feed(config, connector=fake.connect,
                             rest_transport=fake.rest_transport, wall_clock=fake.now_ms):
            ...
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from .exchange import FakeExchange
from .market import FakeMarket
from .records import KLINE_INTERVALS, AggTrade, BestQuote, DepthStep
from .rest import FakeRestApi, _BadRequest, _fmt, _kline_row
from .wire import BinanceWire, StreamSpec, WsPath, aggtrade_payload

__all__ = ["SPOT_WIRE", "FakeBinanceSpot", "FakeSpotRestApi", "SpotWire"]

#: Diff-depth stream suffixes of spot and their push period in milliseconds.
SPOT_DEPTH_SPEEDS: dict[str, int] = {"": 1000, "@100ms": 100}

#: ``/api/v3/depth`` weights: (highest limit of the band, weight).
_DEPTH_WEIGHTS: tuple[tuple[int, int], ...] = ((100, 5), (500, 25), (1000, 50), (5000, 250))


class SpotWire(BinanceWire):
    """Binance spot's wire format (see the module docstring)."""

    routes: tuple[str, ...] = ("ws",)
    rest_prefix = "/api/"

    def parse_stream(self, name: str, symbols: frozenset[str] | set[str]) -> StreamSpec | None:
        """Recognise a spot stream of one of ``symbols``: ``btcusdt@aggTrade``,
        ``btcusdt@kline_1m``, ``btcusdt@depth[@100ms]``, ``btcusdt@bookTicker``."""
        head, sep, channel = name.partition("@")
        if not sep or not head.islower():
            return None
        symbol = head.upper()
        if symbol not in symbols:
            return None
        route: Literal["public"] = "public"  # unused: spot delivers every stream everywhere
        if channel == "aggTrade":
            return StreamSpec(name, "aggTrade", symbol, route)
        if channel.startswith("kline_"):
            interval = channel.removeprefix("kline_")
            if interval in KLINE_INTERVALS:
                return StreamSpec(name, "kline", symbol, route, interval=interval)
            return None
        if channel == "bookTicker":
            return StreamSpec(name, "bookTicker", symbol, route)
        if channel.startswith("depth"):
            speed = SPOT_DEPTH_SPEEDS.get(channel.removeprefix("depth"))
            if speed is not None:
                return StreamSpec(name, "depth", symbol, route, period_ms=speed)
        return None

    def deliverable(self, route: str, spec: StreamSpec | None) -> bool:
        """Every known stream, on every connection."""
        return spec is not None

    def parse_ws_path(self, path: str) -> WsPath | None:
        """``/stream?streams=a/b`` (combined) or ``/ws[/a/b]`` (raw); anything else None."""
        parts = urlsplit(path)
        segments = [s for s in parts.path.split("/") if s]
        if segments == ["stream"]:
            query = parse_qs(parts.query, keep_blank_values=True)
            names = query.get("streams", [""])[0]
            return WsPath("ws", True, tuple(n for n in names.split("/") if n))
        if segments and segments[0] == "ws":
            return WsPath("ws", False, tuple(segments[1:]))
        return None

    def aggtrade_payload(self, trade: AggTrade, event_time: int) -> dict[str, Any]:
        """USD-M's payload plus spot's ``"M": true`` (documented as "ignore")."""
        payload = aggtrade_payload(trade, event_time)
        payload["M"] = True
        return payload

    def depth_payload(self, diff: DepthStep, event_time: int) -> dict[str, Any]:
        """A spot ``depthUpdate``: ``e, E, s, U, u, b, a`` (no ``T``, no ``pu``)."""
        payload = super().depth_payload(diff, event_time)
        del payload["T"], payload["pu"]
        return payload

    def book_ticker_payload(self, quote: BestQuote, event_time: int) -> dict[str, Any]:
        """A spot ``bookTicker``: ``u, s, b, B, a, A`` only."""
        payload = super().book_ticker_payload(quote, event_time)
        for key in ("e", "T", "E"):
            del payload[key]
        return payload


#: The spot format (the `FakeBinanceSpot` default).
SPOT_WIRE = SpotWire()


class FakeSpotRestApi(FakeRestApi):
    """Binance spot's market-data REST endpoints under ``/api/v3`` (see the module docstring).

    Everything else (weight accounting in ``X-MBX-USED-WEIGHT-1M``, 429 then 418 bans,
    injected faults, stale snapshots) is `FakeRestApi`'s.
    """

    def __init__(
        self, market: FakeMarket, *, weight_limit: int = 6000, ban_seconds: float = 120.0
    ) -> None:
        super().__init__(market, weight_limit=weight_limit, ban_seconds=ban_seconds)
        self._routes = {
            "/api/v3/ping": (lambda p: 1, self._ping),
            "/api/v3/time": (lambda p: 1, self._time),
            "/api/v3/exchangeInfo": (lambda p: 20, self._spot_exchange_info),
            "/api/v3/klines": (lambda p: 2, self._spot_klines),
            "/api/v3/aggTrades": (lambda p: 4, self._spot_agg_trades),
            "/api/v3/depth": (self._spot_depth_weight, self._spot_depth),
        }

    def _spot_exchange_info(self, params: dict[str, str], now_ms: int) -> Any:
        symbols = []
        for name in self.market.symbols:
            spec = self.market.spec(name)
            base = name.removesuffix("USDT") if name.endswith("USDT") else name[:-3]
            symbols.append(
                {
                    "symbol": name,
                    "status": "BREAK" if name in self.delisted else "TRADING",
                    "baseAsset": base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": "USDT",
                    "quotePrecision": 8,
                    "orderTypes": ["LIMIT", "MARKET"],
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": _fmt(spec.tick_size),
                            "maxPrice": "1000000",
                            "tickSize": _fmt(spec.tick_size),
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": _fmt(spec.step_size),
                            "maxQty": "9000",
                            "stepSize": _fmt(spec.step_size),
                        },
                    ],
                    "permissions": ["SPOT"],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": now_ms,
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": self.weight_limit,
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 50},
                {
                    "rateLimitType": "RAW_REQUESTS",
                    "interval": "MINUTE",
                    "intervalNum": 5,
                    "limit": 61000,
                },
            ],
            "exchangeFilters": [],
            "symbols": symbols,
        }

    def _spot_klines(self, params: dict[str, str], now_ms: int) -> Any:
        symbol = self._symbol(params)
        interval = self._interval(params)
        limit = self._limit(params, 500, 1000)
        bars = self.market.klines(
            symbol,
            interval,
            start_time=self._int(params, "startTime"),
            end_time=self._int(params, "endTime"),
            limit=limit,
            include_open=True,
        )
        return [_kline_row(bar) for bar in bars]

    def _spot_agg_trades(self, params: dict[str, str], now_ms: int) -> Any:
        rows = self._agg_trades(params, now_ms)
        for row in rows:
            row["M"] = True
        return rows

    @staticmethod
    def _spot_depth_weight(params: dict[str, str]) -> int:
        value = params.get("limit")
        limit = int(value) if value is not None and value.isdigit() else 100
        return next((w for top, w in _DEPTH_WEIGHTS if limit <= top), 250)

    def _spot_depth(self, params: dict[str, str], now_ms: int) -> Any:
        symbol = self._symbol(params)
        limit = self._int(params, "limit")
        if limit is None:
            limit = 100
        if not 1 <= limit <= 5000:
            raise _BadRequest(-1130, "Data sent for parameter 'limit' is not valid.")
        book = self._snapshot(symbol, limit, now_ms)
        return {
            "lastUpdateId": book.last_update_id,
            "bids": [[_fmt(p), _fmt(q)] for p, q in book.bids],
            "asks": [[_fmt(p), _fmt(q)] for p, q in book.asks],
        }


class FakeBinanceSpot(FakeExchange):
    """A Binance spot compatible exchange simulator (see the module docstring).

    Takes `FakeExchange`'s arguments; the defaults differ where spot does:
    ``max_incoming_per_second=5``, ``server_ping_interval=20.0``, ``pong_timeout=60.0``,
    ``weight_limit=6000``.
    """

    wire: BinanceWire = SPOT_WIRE
    rest_api_class: type[FakeRestApi] = FakeSpotRestApi

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_incoming_per_second", 5)
        kwargs.setdefault("server_ping_interval", 20.0)
        kwargs.setdefault("pong_timeout", 60.0)
        kwargs.setdefault("weight_limit", 6000)
        super().__init__(**kwargs)
