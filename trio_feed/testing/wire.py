"""Binance USD-M wire formats for the fake exchange: stream names, routes and payloads.

Pure functions, no I/O (gathered in `BinanceWire`, which the fake of another Binance market
subclasses to change what differs): `parse_stream` recognises the stream names the simulator
serves and says which route (``public`` or ``market``) carries them, `parse_ws_path` reads
a WebSocket request path, and the ``*_payload`` functions turn `trio_feed.testing.market`
records into the exact JSON objects Binance sends (same keys, same order, numbers as strings
where Binance uses strings).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from attrs import frozen

from .records import KLINE_INTERVALS, AggTrade, BestQuote, DepthStep, KlineBar, MarkSnapshot

__all__ = [
    "DEPTH_SPEEDS",
    "ROUTES",
    "USDM_WIRE",
    "BinanceWire",
    "ControlRequest",
    "StreamKind",
    "StreamSpec",
    "WsPath",
    "aggtrade_payload",
    "book_ticker_payload",
    "continuous_kline_payload",
    "deliverable",
    "depth_payload",
    "kline_payload",
    "malformed_frames",
    "mark_price_payload",
    "parse_control",
    "parse_stream",
    "parse_ws_path",
    "server_shutdown_payload",
]

StreamKind = Literal["aggTrade", "kline", "continuousKline", "depth", "markPrice", "bookTicker"]

#: Connection routes: ``public`` (book data), ``market`` (everything else public) and
#: ``ws`` for the legacy unrouted paths (``/ws/...``, ``/stream?...``), which only carry
#: what ``public`` carries.
ROUTES = ("public", "market", "ws")

#: Diff-depth stream suffixes and their push period in milliseconds.
DEPTH_SPEEDS: dict[str, int] = {"": 250, "@100ms": 100, "@500ms": 500}

_MARK_SPEEDS: dict[str, int] = {"": 3000, "@1s": 1000}


@frozen(slots=True)
class StreamSpec:
    """A recognised stream name: what it carries, for which symbol, on which route."""

    name: str
    kind: StreamKind
    symbol: str  # upper case, e.g. "BTCUSDT"
    route: Literal["public", "market"]
    interval: str | None = None  # klines
    period_ms: int | None = None  # depth and mark price push period


def parse_stream(name: str, symbols: frozenset[str] | set[str]) -> StreamSpec | None:
    """Recognise ``name`` as a stream of one of ``symbols`` (upper case), or return None.

    Stream names are case-sensitive like Binance's: a lower-case symbol, then the channel
    (``btcusdt@aggTrade``, ``btcusdt@kline_1m``, ``btcusdt_perpetual@continuousKline_1m``,
    ``btcusdt@depth@100ms``, ``btcusdt@markPrice@1s``, ``btcusdt@bookTicker``).
    """
    head, sep, channel = name.partition("@")
    if not sep or not head.islower():
        return None
    if channel.startswith("continuousKline_"):
        pair, underscore, contract = head.partition("_")
        interval = channel.removeprefix("continuousKline_")
        symbol = pair.upper()
        known = symbol in symbols and interval in KLINE_INTERVALS
        if underscore and contract == "perpetual" and known:
            return StreamSpec(name, "continuousKline", symbol, "market", interval=interval)
        return None
    symbol = head.upper()
    if symbol not in symbols:
        return None
    if channel == "aggTrade":
        return StreamSpec(name, "aggTrade", symbol, "market")
    if channel.startswith("kline_"):
        interval = channel.removeprefix("kline_")
        if interval in KLINE_INTERVALS:
            return StreamSpec(name, "kline", symbol, "market", interval=interval)
        return None
    if channel == "bookTicker":
        return StreamSpec(name, "bookTicker", symbol, "public")
    if channel.startswith("depth"):
        speed = DEPTH_SPEEDS.get(channel.removeprefix("depth"))
        if speed is not None:
            return StreamSpec(name, "depth", symbol, "public", period_ms=speed)
        return None
    if channel.startswith("markPrice"):
        speed = _MARK_SPEEDS.get(channel.removeprefix("markPrice"))
        if speed is not None:
            return StreamSpec(name, "markPrice", symbol, "market", period_ms=speed)
    return None


def deliverable(route: str, spec: StreamSpec | None) -> bool:
    """Whether a connection on ``route`` delivers ``spec`` (unknown streams: never).

    A stream subscribed on the wrong route is accepted but silently delivers nothing, and the
    unrouted legacy paths only deliver ``public`` streams, as on the real exchange.
    """
    if spec is None:
        return False
    if route == "ws":
        return spec.route == "public"
    return spec.route == route


@frozen(slots=True)
class WsPath:
    """A parsed WebSocket request path."""

    route: str  # one of ROUTES
    combined: bool  # combined-stream envelope {"stream", "data"}
    streams: tuple[str, ...]


def parse_ws_path(path: str) -> WsPath | None:
    """Parse a request path such as ``/market/stream?streams=a/b`` or ``/public/ws/a/b``.

    Accepted: ``/<route>/stream?streams=...``, ``/<route>/ws[/<names>]`` for route
    ``public`` or ``market``, and the unrouted ``/stream?streams=...`` and ``/ws[/<names>]``.
    Anything else (including ``/private/...``) returns None.
    """
    parts = urlsplit(path)
    segments = [s for s in parts.path.split("/") if s]
    route = "ws"
    if segments and segments[0] in ("public", "market"):
        route = segments[0]
        segments = segments[1:]
    if not segments:
        return None
    if segments[0] == "stream" and len(segments) == 1:
        query = parse_qs(parts.query, keep_blank_values=True)
        names = query.get("streams", [""])[0]
        return WsPath(route, True, tuple(n for n in names.split("/") if n))
    if segments[0] == "ws":
        return WsPath(route, False, tuple(segments[1:]))
    return None


def _s(value: Decimal) -> str:
    return format(value, "f")


def aggtrade_payload(trade: AggTrade, event_time: int) -> dict[str, Any]:
    """The ``<symbol>@aggTrade`` payload."""
    return {
        "e": "aggTrade",
        "E": event_time,
        "s": trade.symbol,
        "a": trade.agg_id,
        "p": _s(trade.price),
        "q": _s(trade.qty),
        "f": trade.first_trade_id,
        "l": trade.last_trade_id,
        "T": trade.time,
        "m": trade.buyer_is_maker,
    }


def _kline_body(bar: KlineBar, *, with_symbol: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"t": bar.open_time, "T": bar.close_time}
    if with_symbol:
        body["s"] = bar.symbol
    body.update(
        {
            "i": bar.interval,
            "f": bar.first_trade_id,
            "L": bar.last_trade_id,
            "o": _s(bar.open),
            "c": _s(bar.close),
            "h": _s(bar.high),
            "l": _s(bar.low),
            "v": _s(bar.volume),
            "n": bar.trades,
            "x": bar.closed,
            "q": _s(bar.quote_volume),
            "V": _s(bar.taker_buy_volume),
            "Q": _s(bar.taker_buy_quote_volume),
            "B": "0",
        }
    )
    return body


def kline_payload(bar: KlineBar, event_time: int) -> dict[str, Any]:
    """The ``<symbol>@kline_<interval>`` payload."""
    return {"e": "kline", "E": event_time, "s": bar.symbol, "k": _kline_body(bar, with_symbol=True)}


def continuous_kline_payload(bar: KlineBar, event_time: int) -> dict[str, Any]:
    """The ``<pair>_perpetual@continuousKline_<interval>`` payload (no ``s`` inside ``k``)."""
    return {
        "e": "continuous_kline",
        "E": event_time,
        "ps": bar.symbol,
        "ct": "PERPETUAL",
        "k": _kline_body(bar, with_symbol=False),
    }


def _levels(levels: tuple[tuple[Decimal, Decimal], ...]) -> list[list[str]]:
    return [[_s(p), _s(q)] for p, q in levels]


def depth_payload(diff: DepthStep, event_time: int) -> dict[str, Any]:
    """A diff-depth ``depthUpdate`` payload (``U``, ``u``, ``pu``, levels ascending)."""
    return {
        "e": "depthUpdate",
        "E": event_time,
        "T": diff.time,
        "s": diff.symbol,
        "U": diff.first_update_id,
        "u": diff.last_update_id,
        "pu": diff.prev_update_id,
        "b": _levels(diff.bids),
        "a": _levels(diff.asks),
    }


def book_ticker_payload(quote: BestQuote, event_time: int) -> dict[str, Any]:
    """The ``<symbol>@bookTicker`` payload."""
    return {
        "e": "bookTicker",
        "u": quote.update_id,
        "s": quote.symbol,
        "b": _s(quote.bid_price),
        "B": _s(quote.bid_qty),
        "a": _s(quote.ask_price),
        "A": _s(quote.ask_qty),
        "T": quote.time,
        "E": event_time,
    }


def mark_price_payload(mark: MarkSnapshot, event_time: int) -> dict[str, Any]:
    """The ``<symbol>@markPrice[@1s]`` payload."""
    return {
        "e": "markPriceUpdate",
        "E": event_time,
        "s": mark.symbol,
        "p": _s(mark.mark_price),
        "i": _s(mark.index_price),
        "P": _s(mark.estimated_settle_price),
        "r": _s(mark.funding_rate),
        "T": mark.next_funding_time,
    }


def server_shutdown_payload(event_time: int) -> dict[str, Any]:
    """The ``serverShutdown`` event (stream name ``!serverShutdown`` in the envelope)."""
    return {"e": "serverShutdown", "E": event_time}


# --------------------------------------------------------------------- one market's format


class BinanceWire:
    """The wire format of one Binance market as the fake serves it: USD-M futures here.

    `trio_feed.testing.FakeExchange` and its stream hub call these methods rather than the
    module's functions, so that a fake of another Binance market (spot:
    `trio_feed.testing.binance_spot`) overrides only what differs. Stateless.
    """

    #: Connection routes of `parse_ws_path` (for the ``route`` arguments of the faults).
    routes: tuple[str, ...] = ROUTES
    #: Request paths under this prefix are REST on the fake's loopback port.
    rest_prefix = "/fapi/"

    def parse_stream(self, name: str, symbols: frozenset[str] | set[str]) -> StreamSpec | None:
        """See `parse_stream`."""
        return parse_stream(name, symbols)

    def deliverable(self, route: str, spec: StreamSpec | None) -> bool:
        """See `deliverable`."""
        return deliverable(route, spec)

    def parse_ws_path(self, path: str) -> WsPath | None:
        """See `parse_ws_path`."""
        return parse_ws_path(path)

    def aggtrade_payload(self, trade: AggTrade, event_time: int) -> dict[str, Any]:
        """See `aggtrade_payload`."""
        return aggtrade_payload(trade, event_time)

    def kline_payload(self, bar: KlineBar, event_time: int) -> dict[str, Any]:
        """See `kline_payload`."""
        return kline_payload(bar, event_time)

    def continuous_kline_payload(self, bar: KlineBar, event_time: int) -> dict[str, Any]:
        """See `continuous_kline_payload`."""
        return continuous_kline_payload(bar, event_time)

    def depth_payload(self, diff: DepthStep, event_time: int) -> dict[str, Any]:
        """See `depth_payload`."""
        return depth_payload(diff, event_time)

    def book_ticker_payload(self, quote: BestQuote, event_time: int) -> dict[str, Any]:
        """See `book_ticker_payload`."""
        return book_ticker_payload(quote, event_time)

    def mark_price_payload(self, mark: MarkSnapshot, event_time: int) -> dict[str, Any]:
        """See `mark_price_payload`."""
        return mark_price_payload(mark, event_time)


#: The USD-M format (the default of `trio_feed.testing.FakeExchange`).
USDM_WIRE = BinanceWire()


# --------------------------------------------------------------------- control messages

_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


@frozen(slots=True)
class ControlRequest:
    """A well-formed live-subscription request (``params`` already validated)."""

    method: str
    params: tuple[Any, ...]
    id: int | None


def _error(code: int, msg: str, request_id: Any = None) -> dict[str, Any]:
    return {"code": code, "msg": msg, "id": request_id}


def parse_control(text: str) -> ControlRequest | dict[str, Any]:
    """Validate a client text message as a live-subscription request.

    Returns the `ControlRequest`, or the exact error reply to send, with the codes of the
    Binance error table: 0 unknown property, 1 wrong value type, 2 invalid request, 3 invalid
    JSON. An ``id`` may be absent or null (the reply then carries ``"id": null``).
    """
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return _error(3, f"Invalid JSON: expected value at line {exc.lineno} column {exc.colno}")
    if not isinstance(obj, dict):
        return _error(2, "Invalid request: expected a JSON object")
    request_id = obj.get("id")
    if request_id is not None and (
        isinstance(request_id, bool) or not isinstance(request_id, int) or request_id < 0
    ):
        return _error(2, "Invalid request: request ID must be an unsigned integer")
    if "method" not in obj:
        return _error(2, "Invalid request: missing field `method`", request_id)
    method = obj["method"]
    if method not in _METHODS:
        expected = ", ".join(f"`{m}`" for m in _METHODS)
        return _error(
            2,
            f"Invalid request: unknown variant `{method}`, expected one of {expected}",
            request_id,
        )
    params = obj.get("params", [])
    if params is None:
        params = []
    if not isinstance(params, list):
        return _error(2, "Invalid request: invalid type: expected a sequence", request_id)
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        if not all(isinstance(p, str) for p in params):
            return _error(2, "Invalid request: invalid type: expected a string", request_id)
    elif method == "LIST_SUBSCRIPTIONS":
        if params:
            return _error(2, "Invalid request: too many parameters", request_id)
    else:
        wanted = 2 if method == "SET_PROPERTY" else 1
        if len(params) > wanted:
            return _error(2, "Invalid request: too many parameters", request_id)
        if len(params) < wanted:
            return _error(2, "Invalid request: missing parameters", request_id)
        if not isinstance(params[0], str):
            return _error(2, "Invalid request: property name must be a string", request_id)
        if params[0] != "combined":
            return _error(0, "Unknown property", request_id)
        if method == "SET_PROPERTY" and not isinstance(params[1], bool):
            return _error(1, "Invalid value type: expected Boolean", request_id)
    return ControlRequest(method, tuple(params), request_id)


# --------------------------------------------------------------------- malformed frames

_EVENT_TYPES: dict[str, str] = {
    "aggTrade": "aggTrade",
    "kline": "kline",
    "continuousKline": "continuous_kline",
    "depth": "depthUpdate",
    "markPrice": "markPriceUpdate",
    "bookTicker": "bookTicker",
}


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def malformed_frames(
    stream: str, kind: str | None, *, combined: bool, event_time: int
) -> list[str]:
    """The malformed frames `FakeExchange.send_malformed` cycles through, for one stream.

    In order: truncated JSON; the right event type with fields of the wrong types; a JSON
    array; text that is not JSON; and (combined connections) an envelope whose ``data`` is not
    an object (raw connections: an object without ``e``).
    """
    event = _EVENT_TYPES.get(kind or "", "aggTrade")
    good = _compact({"e": event, "E": event_time, "s": "BTCUSDT"})
    wrong = _compact(
        {
            "e": event,
            "E": "soon",
            "s": 42,
            "p": 1.5,
            "q": None,
            "U": [],
            "u": {},
            "T": -1.5,
            "m": "yes",
        }
    )
    name = json.dumps(stream)
    if combined:
        full = f'{{"stream":{name},"data":{good}}}'
        return [
            full[: len(full) // 2],
            f'{{"stream":{name},"data":{wrong}}}',
            "[1,2,3]",
            "this is not json",
            f'{{"stream":{name},"data":"oops"}}',
        ]
    return [good[: len(good) // 2], wrong, "[1,2,3]", "this is not json", '{"E":1,"data":null}']
