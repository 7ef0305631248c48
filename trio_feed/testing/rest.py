"""The fake exchange's REST API: Binance USD-M market-data endpoints, weights and bans.

`FakeRestApi` is sans-IO: ``handle(method, target, now_ms)`` returns a `RestResponse`
(status, headers, body bytes). The httpx `MockTransport` of `trio_feed.testing.FakeExchange`
and its loopback HTTP server both call it, so in-process and loopback tests see the same
answers.

Weight accounting follows the facts collected from Binance: every response carries
``X-MBX-USED-WEIGHT-1M``, the window is the UTC clock minute of exchange time, a request that
would take the minute over the limit gets ``429`` with ``Retry-After`` (seconds to the next
minute), and another request in that same minute gets ``418`` and a ban (two minutes by
default) during which every request gets ``418`` with the remaining ban in ``Retry-After``.
Requests rejected with 400 still cost weight, as on Binance; 404, 418, 429 and injected
faults cost nothing. Depth weights are Binance's: limit 5 to 50 cost 2, 100 costs 5, 500
costs 10, 1000 costs 20, and no ``limit`` (500 levels) costs 1, as measured.

For tests of a client's budget, `FakeRestApi.max_used_weight` is the most weight granted in
any minute and `FakeRestApi.max_requested_weight` the most asked for, 429s and 418s included:
a client that never went over the limit has ``max_requested_weight <= weight_limit``.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from attrs import define, frozen

from .market import FakeMarket
from .records import KLINE_INTERVALS, BookSnapshot, KlineBar, StaleSnapshot

__all__ = ["FakeRestApi", "RestRequestRecord", "RestResponse"]

#: ``onboardDate`` of the symbols the market starts with (BTCUSDT's real one, 2019-09-25).
_ONBOARD_DATE = 1_569_398_400_000

_DEPTH_LIMITS = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}

_DEFAULT_BODIES: dict[int, dict[str, Any]] = {
    400: {"code": -1100, "msg": "Illegal characters found in a parameter."},
    403: {"code": -1000, "msg": "WAF limit violated."},
    418: {"code": -1003, "msg": "Way too many requests; IP banned."},
    429: {
        "code": -1003,
        "msg": "Too many requests; current limit is 2400 request weight per 1 MINUTE.",
    },
    500: {"code": -1000, "msg": "An unknown error occurred while processing the request."},
    502: {
        "code": -1001,
        "msg": "Internal error; unable to process your request. Please try again.",
    },
    503: {
        "code": -1001,
        "msg": "Internal error; unable to process your request. Please try again.",
    },
    504: {"code": -1007, "msg": "Timeout waiting for response from backend server."},
}


@frozen(slots=True)
class RestResponse:
    """An HTTP answer: status, headers (name, value) and the body bytes."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.body)


@frozen(slots=True)
class RestRequestRecord:
    """One REST request as the fake saw it.

    ``time`` is exchange ms; ``params`` the query parameters (first value of each);
    ``weight`` what it cost; ``used_weight`` the minute's total after it.
    """

    time: int
    method: str
    path: str
    params: Mapping[str, str]
    status: int
    weight: int
    used_weight: int


@define(slots=True)
class _Fault:
    status: int
    retry_after: float | None
    count: int
    body: bytes | None


class _BadRequest(Exception):
    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def _fmt(value: Any) -> str:
    return format(value, "f")


def _kline_row(bar: KlineBar) -> list[Any]:
    return [
        bar.open_time,
        _fmt(bar.open),
        _fmt(bar.high),
        _fmt(bar.low),
        _fmt(bar.close),
        _fmt(bar.volume),
        bar.close_time,
        _fmt(bar.quote_volume),
        bar.trades,
        _fmt(bar.taker_buy_volume),
        _fmt(bar.taker_buy_quote_volume),
        "0",
    ]


def _klines_weight(limit: str | None) -> int:
    # Binance's bands, measured: no limit costs 5 although it returns 500 rows, and the
    # bands are inclusive at the top (limit=100 costs 1, limit=500 costs 2).
    if limit is None:
        return 5
    try:
        n = int(limit)
    except ValueError:
        return 1
    if n <= 100:
        return 1
    if n <= 500:
        return 2
    if n <= 1000:
        return 5
    return 10


class FakeRestApi:
    """Binance USD-M market-data REST endpoints served from a `FakeMarket`.

    Endpoints: ``/fapi/v1/ping``, ``/fapi/v1/time``, ``/fapi/v1/exchangeInfo``,
    ``/fapi/v1/klines``, ``/fapi/v1/continuousKlines``, ``/fapi/v1/aggTrades`` and
    ``/fapi/v1/depth``. The caller advances the market to ``now_ms`` before calling `handle`.

    ``/fapi/v1/exchangeInfo`` lists every symbol of the market, in listing order: status
    ``TRADING``, or ``SETTLING`` once in `delisted`; its ``onboardDate`` is the listing time
    for symbols listed while the market ran (`FakeMarket.add_symbol`).

    Attributes:
      requests: every request handled, in order (`RestRequestRecord`).
      calls: number of requests per path.
      weight_limit: REQUEST_WEIGHT per minute (2400).
      ban_ms: length of a 418 ban in milliseconds.
      delisted: symbols exchangeInfo reports as ``SETTLING`` (`FakeExchange.delist_symbol`).
      weight_by_minute: weight granted per UTC minute (keyed by the minute's start, ms).
      requested_weight_by_minute: weight asked for per UTC minute: what every request to an
        endpoint would cost, whatever the answer (200, 400, 429 or 418; injected faults
        aside).
      weight_limit_hits: requests answered 429 for going over the minute's limit.
      stale_snapshots: the depth snapshots answered from the past (`stale_depth`), in order.
    """

    def __init__(
        self, market: FakeMarket, *, weight_limit: int = 2400, ban_seconds: float = 120.0
    ) -> None:
        self.market = market
        self.weight_limit = weight_limit
        self.ban_ms = int(ban_seconds * 1000)
        self.requests: list[RestRequestRecord] = []
        self.calls: Counter[str] = Counter()
        self.delisted: set[str] = set()
        self.weight_by_minute: dict[int, int] = {}
        self.requested_weight_by_minute: Counter[int] = Counter()
        self.weight_limit_hits = 0
        self.stale_snapshots: list[StaleSnapshot] = []
        self._faults: dict[str, deque[_Fault]] = {}
        self._stale: dict[str, deque[int]] = {}
        self._minute = -1
        self._used = 0
        self._limited_minute = -1  # the minute in which a 429 was answered
        self._banned_until = 0
        self._routes: dict[str, tuple[Callable[[dict[str, str]], int], _Handler]] = {
            "/fapi/v1/ping": (lambda p: 1, self._ping),
            "/fapi/v1/time": (lambda p: 1, self._time),
            "/fapi/v1/exchangeInfo": (lambda p: 1, self._exchange_info),
            "/fapi/v1/klines": (lambda p: _klines_weight(p.get("limit")), self._klines),
            "/fapi/v1/continuousKlines": (
                lambda p: _klines_weight(p.get("limit")),
                self._continuous_klines,
            ),
            "/fapi/v1/aggTrades": (lambda p: 20, self._agg_trades),
            "/fapi/v1/depth": (self._depth_weight, self._depth),
        }

    # ------------------------------------------------------------------ faults and state

    def add_fault(
        self,
        path: str,
        status: int,
        *,
        retry_after: float | None = None,
        count: int = 1,
        body: bytes | str | Mapping[str, Any] | None = None,
    ) -> None:
        """Answer the next ``count`` requests to ``path`` with ``status`` (see
        `FakeExchange.rest_fault`). Faults for one path are used in the order added."""
        if count < 1:
            raise ValueError("count must be at least 1")
        raw: bytes | None
        if body is None or isinstance(body, bytes):
            raw = body
        elif isinstance(body, str):
            raw = body.encode()
        else:
            raw = orjson.dumps(dict(body))
        self._faults.setdefault(path, deque()).append(_Fault(status, retry_after, count, raw))

    def stale_depth(self, symbol: str, steps_behind: int = 50, count: int = 1) -> None:
        """Answer the next ``count`` successful ``/fapi/v1/depth`` requests for ``symbol``
        with the book as it was ``steps_behind`` book steps ago (see
        `FakeExchange.stale_depth_snapshot`); each is recorded in `stale_snapshots`."""
        if symbol not in self.market.symbols:
            raise ValueError(f"unknown symbol {symbol!r}")
        if steps_behind < 1 or count < 1:
            raise ValueError("steps_behind and count must be at least 1")
        self._stale.setdefault(symbol, deque()).extend([steps_behind] * count)

    @property
    def max_used_weight(self) -> int:
        """The most weight granted in any one minute so far (never above `weight_limit`)."""
        return max(self.weight_by_minute.values(), default=0)

    @property
    def max_requested_weight(self) -> int:
        """The most weight asked for in any one minute so far (see
        ``requested_weight_by_minute``); above `weight_limit` iff the client broke it."""
        return max(self.requested_weight_by_minute.values(), default=0)

    def used_weight(self, now_ms: int) -> int:
        """The weight used in the UTC minute containing ``now_ms``."""
        return self._used if now_ms // 60_000 == self._minute else 0

    def banned_until(self) -> int:
        """Exchange ms at which the current 418 ban ends (0 or past: not banned)."""
        return self._banned_until

    # ------------------------------------------------------------------ dispatch

    def handle(self, method: str, target: str, now_ms: int) -> RestResponse:
        """Answer one request; ``target`` is the path with its query string."""
        parts = urlsplit(target)
        path = parts.path
        params = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self.calls[path] += 1
        minute = now_ms // 60_000
        if minute != self._minute:
            self._minute, self._used = minute, 0
        status, weight, headers, body = self._dispatch(method, path, params, now_ms)
        headers = [("X-MBX-USED-WEIGHT-1M", str(self._used)), *headers]
        headers.insert(0, ("Content-Type", "application/json"))
        self.requests.append(
            RestRequestRecord(now_ms, method, path, params, status, weight, self._used)
        )
        return RestResponse(status, tuple(headers), body)

    def _dispatch(
        self, method: str, path: str, params: dict[str, str], now_ms: int
    ) -> tuple[int, int, list[tuple[str, str]], bytes]:
        faults = self._faults.get(path)
        if faults:
            fault = faults[0]
            fault.count -= 1
            if fault.count == 0:
                faults.popleft()
            headers = []
            if fault.retry_after is not None:
                headers.append(("Retry-After", _seconds(fault.retry_after * 1000)))
            body = fault.body if fault.body is not None else _error_body(fault.status)
            return fault.status, 0, headers, body
        route = self._routes.get(path)
        if route is not None and method == "GET":
            self.requested_weight_by_minute[now_ms // 60_000 * 60_000] += route[0](params)
        if now_ms < self._banned_until:
            retry = _seconds(self._banned_until - now_ms)
            return 418, 0, [("Retry-After", retry)], _ban_body(self._banned_until)
        if route is None:
            return 404, 0, [], b""
        if method != "GET":
            return 405, 0, [], _error_json(-1000, f"Request method '{method}' not supported")
        if self._limited_minute == now_ms // 60_000:
            # Carrying on after a 429 gets the IP banned.
            self._banned_until = now_ms + self.ban_ms
            retry = _seconds(self.ban_ms)
            return 418, 0, [("Retry-After", retry)], _ban_body(self._banned_until)
        weight_of, handler = route
        weight = weight_of(params)
        if self._used + weight > self.weight_limit:
            self.weight_limit_hits += 1
            self._limited_minute = now_ms // 60_000
            retry = _seconds((now_ms // 60_000 + 1) * 60_000 - now_ms)
            body = _error_json(
                -1003,
                f"Too many requests; current limit is {self.weight_limit} request weight per "
                "1 MINUTE. Please use the websocket for live updates to avoid polling the API.",
            )
            return 429, 0, [("Retry-After", retry)], body
        self._used += weight
        self.weight_by_minute[now_ms // 60_000 * 60_000] = self._used
        try:
            payload = handler(params, now_ms)
        except _BadRequest as exc:
            return exc.status, weight, [], _error_json(exc.code, exc.msg)
        return 200, weight, [], orjson.dumps(payload)

    # ------------------------------------------------------------------ parameters

    def _symbol(self, params: dict[str, str], name: str = "symbol") -> str:
        value = params.get(name)
        if not value:
            raise _BadRequest(-1102, _mandatory(name))
        if value not in self.market.symbols:
            raise _BadRequest(-1121, "Invalid symbol.")
        return value

    @staticmethod
    def _interval(params: dict[str, str]) -> str:
        value = params.get("interval")
        if not value:
            raise _BadRequest(-1102, _mandatory("interval"))
        if value not in KLINE_INTERVALS:
            raise _BadRequest(-1120, "Invalid interval.")
        return value

    @staticmethod
    def _int(params: dict[str, str], name: str) -> int | None:
        value = params.get(name)
        if value is None or value == "":
            return None
        if not value.isdigit() or len(value) > 20:
            raise _BadRequest(
                -1100,
                f"Illegal characters found in parameter '{name}'; legal range is "
                "'^[0-9]{1,20}$'.",
            )
        return int(value)

    def _limit(self, params: dict[str, str], default: int, maximum: int) -> int:
        limit = self._int(params, "limit")
        if limit is None:
            return default
        if limit < 1 or limit > maximum:
            raise _BadRequest(-1130, "Data sent for parameter 'limit' is not valid.")
        return limit

    # ------------------------------------------------------------------ endpoints

    def _ping(self, params: dict[str, str], now_ms: int) -> Any:
        return {}

    def _time(self, params: dict[str, str], now_ms: int) -> Any:
        return {"serverTime": now_ms}

    def _exchange_info(self, params: dict[str, str], now_ms: int) -> Any:
        symbols = []
        for name in self.market.symbols:
            spec = self.market.spec(name)
            base = name.removesuffix("USDT") if name.endswith("USDT") else name[:-3]
            tick_decimals = max(0, -int(spec.tick_size.as_tuple().exponent))
            step_decimals = max(0, -int(spec.step_size.as_tuple().exponent))
            listed_at = self.market.listed_at(name)
            onboard = _ONBOARD_DATE if listed_at == self.market.start_time_ms else listed_at
            symbols.append(
                {
                    "symbol": name,
                    "pair": name,
                    "contractType": "PERPETUAL",
                    "deliveryDate": 4133404800000,
                    "onboardDate": onboard,
                    "status": "SETTLING" if name in self.delisted else "TRADING",
                    "baseAsset": base,
                    "quoteAsset": "USDT",
                    "marginAsset": "USDT",
                    "pricePrecision": tick_decimals,
                    "quantityPrecision": step_decimals,
                    "baseAssetPrecision": 8,
                    "quotePrecision": 8,
                    "underlyingType": "COIN",
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": _fmt(spec.tick_size),
                            "maxPrice": "1000000",
                            "tickSize": _fmt(spec.tick_size),
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "stepSize": _fmt(spec.step_size),
                            "minQty": _fmt(spec.step_size),
                            "maxQty": "1000",
                        },
                    ],
                    "orderTypes": ["LIMIT", "MARKET"],
                    "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": now_ms,
            "futuresType": "U_MARGINED",
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": self.weight_limit,
                },
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
            ],
            "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": symbols,
        }

    def _kline_rows(self, symbol: str, params: dict[str, str]) -> list[list[Any]]:
        interval = self._interval(params)
        limit = self._limit(params, 500, 1500)
        bars = self.market.klines(
            symbol,
            interval,
            start_time=self._int(params, "startTime"),
            end_time=self._int(params, "endTime"),
            limit=limit,
            include_open=True,
        )
        return [_kline_row(bar) for bar in bars]

    def _klines(self, params: dict[str, str], now_ms: int) -> Any:
        return self._kline_rows(self._symbol(params), params)

    def _continuous_klines(self, params: dict[str, str], now_ms: int) -> Any:
        pair = self._symbol(params, "pair")
        contract = params.get("contractType")
        if not contract:
            raise _BadRequest(-1102, _mandatory("contractType"))
        if contract != "PERPETUAL":
            raise _BadRequest(-1130, "Data sent for parameter 'contractType' is not valid.")
        return self._kline_rows(pair, params)

    def _agg_trades(self, params: dict[str, str], now_ms: int) -> Any:
        symbol = self._symbol(params)
        limit = self._limit(params, 500, 1000)
        trades = self.market.trades(
            symbol,
            from_id=self._int(params, "fromId"),
            start_time=self._int(params, "startTime"),
            end_time=self._int(params, "endTime"),
            limit=limit,
        )
        return [
            {
                "a": t.agg_id,
                "p": _fmt(t.price),
                "q": _fmt(t.qty),
                "f": t.first_trade_id,
                "l": t.last_trade_id,
                "T": t.time,
                "m": t.buyer_is_maker,
            }
            for t in trades
        ]

    def _depth_weight(self, params: dict[str, str]) -> int:
        value = params.get("limit")
        if value is None:
            return 1  # measured: no limit costs 1 although 500 levels come back
        try:
            limit = int(value)
        except ValueError:
            return 2
        return _DEPTH_LIMITS.get(limit, 2)

    def _depth(self, params: dict[str, str], now_ms: int) -> Any:
        symbol = self._symbol(params)
        limit = self._int(params, "limit")
        if limit is None:
            limit = 500
        if limit not in _DEPTH_LIMITS:
            raise _BadRequest(-4021, f"{limit} is not valid depth limit")
        book = self._snapshot(symbol, limit, now_ms)
        return {
            "lastUpdateId": book.last_update_id,
            "E": now_ms,
            "T": book.time,
            "bids": [[_fmt(p), _fmt(q)] for p, q in book.bids],
            "asks": [[_fmt(p), _fmt(q)] for p, q in book.asks],
        }

    def _snapshot(self, symbol: str, limit: int, now_ms: int) -> BookSnapshot:
        """The book a depth request for ``symbol`` gets: the current one, or an old one if
        `stale_depth` asked for it."""
        stale = self._stale.get(symbol)
        if stale:
            # A snapshot from the past: an older lastUpdateId with the levels of that time.
            behind = stale.popleft()
            past = self.market.update_id_steps_ago(symbol, behind)
            book = self.market.book_at(symbol, past, limit)
            self.stale_snapshots.append(
                StaleSnapshot(symbol, now_ms, past, self.market.last_update_id(symbol), behind)
            )
        else:
            book = self.market.book(symbol, limit)
        return book


_Handler = Callable[[dict[str, str], int], Any]


def _seconds(ms: float) -> str:
    return str(max(1, math.ceil(ms / 1000)))


def _mandatory(name: str) -> str:
    return f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."


def _error_json(code: int, msg: str) -> bytes:
    return orjson.dumps({"code": code, "msg": msg})


def _error_body(status: int) -> bytes:
    body = _DEFAULT_BODIES.get(status)
    if body is None:
        body = {"code": -1000, "msg": f"HTTP {status}"}
    return orjson.dumps(body)


def _ban_body(until: int) -> bytes:
    return _error_json(
        -1003,
        f"Way too many requests; IP banned until {until}. "
        "Please use the websocket for live updates to avoid bans.",
    )
