"""A generic JSON-gateway adapter (``json-gateway``): for in-house gateways that want a
CONNECT frame with a token before anything else. Sans-IO like every adapter.

Configuration (a ``[[venues]]`` table)::

    [[venues]]
    exchange = "json-gateway"
    ws_url = "wss://gateway.internal/feed"     # opened as given (path included)
    rest_url = "https://gateway.internal"
    symbols = ["BTCUSDT"]
    channels = ["kline_1m", "aggTrade", "bookTicker"]
    [venues.gateway]
    token_env = "GATEWAY_TOKEN"    # the variable holding the token (never the token itself)
    market = "perp"                # passed in the CONNECT frame

The token is read from the environment when the feed starts (`JsonGatewayAdapter.configure`;
a variable that is not set is a `~trio_feed.errors.ConfigError` naming it). It goes into the
CONNECT frame and nowhere else: not into logs, errors, ``status()`` or ``state`` events, and a
gateway reason that echoes it is redacted.

Protocol. Every frame is a JSON object with a ``type``. Control types are upper case:

* client -> gateway, first on every socket: ``{"type":"CONNECT","token":T,"market":M}``;
  gateway -> client: ``{"type":"CONNECTED"}``, or ``{"type":"ERROR","reason":R}`` (a
  permanent refusal: the connection goes FAILED with ``R`` as its last error, no retries)
  or ``{"type":"ERROR","reason":R,"retry":true}`` (transient, e.g. busy: retried with the
  normal backoff);
* ``{"type":"SUBSCRIBE","id":n,"streams":[...]}`` and ``{"type":"UNSUBSCRIBE",...}``, at most
  `MAX_STREAMS_PER_REQUEST` streams each, answered by ``{"type":"ACK","id":n}`` or
  ``{"type":"ERROR","id":n,"reason":R}`` (optionally with a ``"code"``);
* ``{"type":"NOTICE","message":S}``: logged.

Stream names are ``<SYMBOL>@<channel>`` with the contract's channel names
(``BTCUSDT@kline_1m``, ``BTCUSDT@aggTrade``, ``BTCUSDT@bookTicker``). Data frames carry one
event each, typed with the contract's lower-case event type and the contract's field names
(its JSON lines without ``exchange``, ``source`` and ``revision``); prices and quantities
are decimal strings, times integer milliseconds::

    {"type":"kline","symbol":"BTCUSDT","interval":"1m","open_time":..,"close_time":..,
     "open":"1.0","high":"..","low":"..","close":"..","volume":"..","quote_volume":"..",
     "trades":12,"taker_buy_volume":"..","taker_buy_quote_volume":"..","closed":false}
    {"type":"trade","symbol":"BTCUSDT","id":7,"price":"..","qty":"..","first_trade_id":..,
     "last_trade_id":..,"time":..,"buyer_is_maker":true}
    {"type":"book_ticker","symbol":"BTCUSDT","bid_price":"..","bid_qty":"..",
     "ask_price":"..","ask_qty":"..","update_id":..,"time":..}

Liveness uses WebSocket protocol pings. Kline intervals the gateway does not stream (see
`KLINE_INTERVALS`) are built from its trades. There is no ``depth`` (order book) or
``markPrice`` channel.

REST (for backfills and the server clock), on ``rest_url``, answering JSON:
``GET /api/v1/time`` -> ``{"server_time": ms}``;
``GET /api/v1/klines?symbol=&interval=[&start_time=&end_time=]&limit=`` -> an array of kline
objects as above (``type`` and ``closed`` optional: a kline is closed when its close time is
before the server time), oldest first; ``GET /api/v1/trades?symbol=[&from_id=]
[&start_time=&end_time=]&limit=`` -> an array of trade objects, in id order. An error is any
non-array body, e.g. ``{"error": "..."}``. REST calls carry no token.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from ..errors import ConfigError, MalformedFrame
from ..events import BookTicker, Kline, Source, Trade
from .base import (
    Ack,
    ChannelInfo,
    HandshakeAccepted,
    HandshakeRejected,
    Notice,
    OutgoingMessage,
    ParsedItem,
    PingStyle,
    RequestError,
    RestRequest,
    StreamSpec,
    VenueAdapter,
    VenueLimits,
    parse_interval,
)
from .fields import PARSE_ERRORS as _PARSE_ERRORS
from .fields import as_bool as _bool
from .fields import as_int as _int
from .fields import as_str as _str
from .fields import dec as _dec
from .fields import describe as _describe
from .fields import short as _short

if TYPE_CHECKING:
    from ..config import VenueConfig

__all__ = ["KLINE_INTERVALS", "MAX_STREAMS_PER_REQUEST", "JsonGatewayAdapter"]

_NAME = "json-gateway"
_ROUTE = "gateway"

#: The kline intervals the gateway streams; other ``kline_<interval>`` channels are built
#: from its trades.
KLINE_INTERVALS: tuple[str, ...] = (
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
)
_KLINE_INTERVAL_SET = frozenset(KLINE_INTERVALS)
_PLAIN_CHANNELS = ("aggTrade", "bookTicker")

#: Streams per SUBSCRIBE/UNSUBSCRIBE request.
MAX_STREAMS_PER_REQUEST = 100

#: What a parse of bad input may raise before it becomes `MalformedFrame`.


def _kline(d: Mapping[str, Any], closed: bool, source: Source) -> Kline:
    return Kline(
        _NAME,
        _str(d["symbol"]),
        _str(d["interval"]),
        _int(d["open_time"]),
        _int(d["close_time"]),
        _dec(d["open"]),
        _dec(d["high"]),
        _dec(d["low"]),
        _dec(d["close"]),
        _dec(d["volume"]),
        _dec(d["quote_volume"]),
        _int(d["trades"]),
        _dec(d["taker_buy_volume"]),
        _dec(d["taker_buy_quote_volume"]),
        closed,
        source,
    )


def _trade(d: Mapping[str, Any], source: Source) -> Trade:
    return Trade(
        _NAME,
        _str(d["symbol"]),
        _int(d["id"]),
        _dec(d["price"]),
        _dec(d["qty"]),
        _int(d["first_trade_id"]),
        _int(d["last_trade_id"]),
        _int(d["time"]),
        _bool(d["buyer_is_maker"]),
        source,
    )


def _book_ticker(d: Mapping[str, Any]) -> BookTicker:
    return BookTicker(
        _NAME,
        _str(d["symbol"]),
        _dec(d["bid_price"]),
        _dec(d["bid_qty"]),
        _dec(d["ask_price"]),
        _dec(d["ask_qty"]),
        _int(d["update_id"]),
        _int(d["time"]),
    )


class JsonGatewayAdapter(VenueAdapter):
    """A JSON gateway with a CONNECT handshake (see the module docstring for the protocol)."""

    name: ClassVar[str] = _NAME
    #: A gateway on this host; in-house gateways set ``ws_url`` and ``rest_url``.
    default_ws_url: ClassVar[str] = "ws://127.0.0.1:8765/ws"
    default_rest_url: ClassVar[str] = "http://127.0.0.1:8765"
    ping_style: ClassVar[PingStyle] = PingStyle.PROTOCOL
    limits: ClassVar[VenueLimits] = VenueLimits(
        max_streams_per_connection=1000,
        max_outgoing_per_second=10,
        max_message_size=1024 * 1024,
        connection_lifetime=24 * 3600.0,
    )
    rest_weight_per_minute: ClassVar[int] = 1200
    max_klines_per_request: ClassVar[int] = 1000
    max_trades_per_request: ClassVar[int] = 1000
    uses_gateway_config: ClassVar[bool] = True

    def __init__(self) -> None:
        self._token: str | None = None
        self._market: str | None = None
        self._handlers: dict[str, Callable[[dict[str, Any]], list[ParsedItem]]] = {
            "kline": lambda d: [_kline(d, _bool(d["closed"]), "ws")],
            "trade": lambda d: [_trade(d, "ws")],
            "book_ticker": lambda d: [_book_ticker(d)],
            "CONNECTED": lambda d: [HandshakeAccepted()],
            "ACK": lambda d: [Ack(_int(d["id"]))],
            "ERROR": self._error,
            "NOTICE": lambda d: [Notice(self._redact(_str(d["message"])))],
        }

    def __repr__(self) -> str:
        # Never the token.
        return f"JsonGatewayAdapter(market={self._market!r})"

    # ---- configuration ------------------------------------------------------------------

    def configure(self, venue: VenueConfig, environ: Mapping[str, str] | None = None) -> None:
        """Read the token from the variable ``gateway.token_env`` names (of ``environ``,
        default `os.environ`); `ConfigError` naming the variable if it is not set or empty."""
        gateway = venue.gateway
        if gateway is None:
            raise ConfigError("gateway: missing (json-gateway needs token_env and market)")
        env = os.environ if environ is None else environ
        token = env.get(gateway.token_env, "")
        if not token:
            state = "is empty" if gateway.token_env in env else "is not set"
            raise ConfigError(
                f"gateway.token_env: the environment variable {gateway.token_env} {state} "
                "(it must hold the gateway token)"
            )
        self._token, self._market = token, gateway.market

    def _redact(self, text: str) -> str:
        """``text`` without the token (a gateway might echo it in a reason)."""
        if self._token:
            return text.replace(self._token, "***")
        return text

    # ---- streams ------------------------------------------------------------------------

    def channels(self) -> Sequence[ChannelInfo]:
        """``kline_<interval>``, ``aggTrade`` and ``bookTicker``."""
        return (
            ChannelInfo(
                "kline_<interval>",
                "candlesticks (other intervals built from trades)",
                KLINE_INTERVALS,
            ),
            ChannelInfo("aggTrade", "trades, with consecutive ids"),
            ChannelInfo("bookTicker", "best bid and ask"),
        )

    def check_channel(self, channel: str) -> str | None:
        """None if the gateway offers ``channel``, else why not."""
        if channel in _PLAIN_CHANNELS:
            return None
        if channel.startswith("kline_"):
            interval = channel[len("kline_") :]
            if parse_interval(interval) is None or interval.endswith("M"):
                return f"{channel}: {interval!r} is not a kline interval {_NAME} can serve"
            return None
        reason = (
            f"unknown channel {channel!r}; {_NAME} offers kline_<interval>, aggTrade, bookTicker"
        )
        names = [*_PLAIN_CHANNELS, *(f"kline_{i}" for i in KLINE_INTERVALS)]
        guess = difflib.get_close_matches(channel, names, n=1, cutoff=0.75)
        if guess:
            reason += f" (did you mean {guess[0]!r}?)"
        return reason

    def stream(self, symbol: str, channel: str) -> StreamSpec:
        """``<SYMBOL>@<channel>``; a kline interval the gateway does not stream maps to the
        symbol's trade stream (the feed builds those klines)."""
        reason = self.check_channel(channel)
        if reason is not None:
            raise ValueError(reason)
        if self.built_interval(channel) is not None:
            channel = "aggTrade"
        return StreamSpec(symbol, channel, f"{symbol}@{channel}", _ROUTE)

    def built_interval(self, channel: str) -> str | None:
        """The interval of a kline channel the gateway does not stream, else None."""
        if channel.startswith("kline_"):
            interval = channel[len("kline_") :]
            if interval not in _KLINE_INTERVAL_SET:
                return interval
        return None

    # ---- connections --------------------------------------------------------------------

    def connect_url(self, ws_url: str, route: str, streams: Sequence[StreamSpec]) -> str:
        """``ws_url`` as configured: streams are subscribed after the handshake."""
        return ws_url

    def handshake_messages(self) -> list[OutgoingMessage]:
        """The CONNECT frame with the token and the market."""
        if self._token is None:
            # plan_feed configures every adapter before a connection opens.
            raise RuntimeError(f"{_NAME}: configure() was not called")
        frame = {"type": "CONNECT", "token": self._token, "market": self._market}
        return [OutgoingMessage(orjson.dumps(frame).decode())]

    def open_messages(
        self, streams: Sequence[StreamSpec], first_request_id: int
    ) -> list[OutgoingMessage]:
        """SUBSCRIBE requests for ``streams`` (sent once the handshake is accepted)."""
        return self.subscribe(streams, first_request_id)

    def subscribe(
        self, streams: Sequence[StreamSpec], first_request_id: int
    ) -> list[OutgoingMessage]:
        """SUBSCRIBE requests, at most `MAX_STREAMS_PER_REQUEST` streams each."""
        return _requests("SUBSCRIBE", streams, first_request_id)

    def unsubscribe(
        self, streams: Sequence[StreamSpec], first_request_id: int
    ) -> list[OutgoingMessage]:
        """UNSUBSCRIBE requests, at most `MAX_STREAMS_PER_REQUEST` streams each."""
        return _requests("UNSUBSCRIBE", streams, first_request_id)

    # ---- frames -------------------------------------------------------------------------

    def parse(self, frame: str | bytes) -> list[ParsedItem]:
        """One frame: an event, or a control reply; `MalformedFrame` for anything else."""
        try:
            msg = orjson.loads(frame)
            if type(msg) is not dict:
                raise TypeError(f"frame is not an object: {_short(msg)}")
            handler = self._handlers.get(msg["type"])
            if handler is None:
                raise MalformedFrame(f"{_NAME}: unknown frame type {_short(msg['type'])}")
            return handler(msg)
        except MalformedFrame:
            raise
        except _PARSE_ERRORS as exc:
            raise MalformedFrame(f"{_NAME}: {_describe(exc)}") from exc

    def _error(self, msg: dict[str, Any]) -> list[ParsedItem]:
        reason = self._redact(_str(msg.get("reason", "")) or "no reason given")
        request_id = msg.get("id")
        if request_id is None:
            # No request named: the answer to CONNECT.
            return [HandshakeRejected(reason, permanent=msg.get("retry") is not True)]
        return [RequestError(_int(request_id), str(msg.get("code", "ERROR")), reason)]

    # ---- REST ---------------------------------------------------------------------------

    def server_time_request(self) -> RestRequest:
        """``GET /api/v1/time``."""
        return RestRequest("GET", "/api/v1/time")

    def parse_server_time(self, body: str | bytes) -> int:
        """``server_time`` from a ``/api/v1/time`` body."""
        with _rest_errors("/api/v1/time"):
            data = orjson.loads(body)
            if type(data) is not dict:
                raise TypeError(f"expected a JSON object, got {_short(data)}")
            return _int(data["server_time"])

    def klines_request(
        self,
        symbol: str,
        interval: str,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = 1000,
    ) -> RestRequest:
        """``GET /api/v1/klines`` (open times ``start_time``..``end_time`` inclusive)."""
        params = [("symbol", symbol), ("interval", interval)]
        if start_time is not None:
            params.append(("start_time", str(start_time)))
        if end_time is not None:
            params.append(("end_time", str(end_time)))
        params.append(("limit", str(limit)))
        return RestRequest("GET", "/api/v1/klines", tuple(params))

    def parse_klines(
        self, body: str | bytes, symbol: str, interval: str, server_time: int
    ) -> list[Kline]:
        """Klines (source ``rest``), closed when their close time is before ``server_time``."""
        with _rest_errors("/api/v1/klines"):
            out: list[Kline] = []
            for row in _rest_rows(body):
                close_time = _int(row["close_time"])
                out.append(_kline(row, close_time < server_time, "rest"))
            return out

    def agg_trades_request(
        self,
        symbol: str,
        from_id: int | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = 1000,
    ) -> RestRequest:
        """``GET /api/v1/trades``, from an id or within times."""
        params = [("symbol", symbol)]
        if from_id is not None:
            params.append(("from_id", str(from_id)))
        if start_time is not None:
            params.append(("start_time", str(start_time)))
        if end_time is not None:
            params.append(("end_time", str(end_time)))
        params.append(("limit", str(limit)))
        return RestRequest("GET", "/api/v1/trades", tuple(params))

    def parse_agg_trades(self, body: str | bytes, symbol: str) -> list[Trade]:
        """Trades (source ``rest``) from a ``/api/v1/trades`` body."""
        with _rest_errors("/api/v1/trades"):
            return [_trade(row, "rest") for row in _rest_rows(body)]


@contextmanager
def _rest_errors(what: str) -> Iterator[None]:
    """Turn a parse error of a REST body into `MalformedFrame` naming the endpoint."""
    try:
        yield
    except MalformedFrame:
        raise
    except _PARSE_ERRORS as exc:
        raise MalformedFrame(f"{_NAME} {what}: {_describe(exc)}") from exc


def _rest_rows(body: str | bytes) -> list[dict[str, Any]]:
    data = orjson.loads(body)
    if type(data) is not list:
        if type(data) is dict and "error" in data:
            raise MalformedFrame(f"{_NAME}: gateway error: {_short(data['error'])}")
        raise TypeError(f"expected a JSON array, got {_short(data)}")
    for row in data:
        if type(row) is not dict:
            raise TypeError(f"expected an object, got {_short(row)}")
    return data


def _requests(
    kind: str, streams: Sequence[StreamSpec], first_request_id: int
) -> list[OutgoingMessage]:
    out: list[OutgoingMessage] = []
    request_id = first_request_id
    for start in range(0, len(streams), MAX_STREAMS_PER_REQUEST):
        names = tuple(s.name for s in streams[start : start + MAX_STREAMS_PER_REQUEST])
        text = orjson.dumps({"type": kind, "id": request_id, "streams": names}).decode()
        out.append(OutgoingMessage(text, request_id, names))
        request_id += 1
    return out
