"""The Binance USD-M futures adapter (``binance-usdm``): stream names, routes, combined-stream
URLs, SUBSCRIBE/UNSUBSCRIBE messages, frame parsing and REST requests, all without I/O.

Routes. Binance split its USD-M WebSocket host by path: ``/public`` serves the book streams
(diff and partial depth, bookTicker), ``/market`` everything else public (klines, aggTrade,
markPrice, tickers). A connection on the wrong path connects fine and then silently delivers
nothing, so every stream carries its route and `connect_url` refuses to mix routes.

Continuous klines. ``continuousKline_<interval>`` on symbol ``BTCUSDT`` streams the
*perpetual* contract of the pair (``btcusdt_perpetual@continuousKline_1m``). Its events are
`Kline` events whose ``symbol`` is ``"<PAIR>_<CONTRACT TYPE>"`` (``"BTCUSDT_PERPETUAL"``),
built from the payload's ``ps`` and ``ct``, so that their ``(exchange, symbol, interval)`` key
never collides with the plain ``kline_<interval>`` of the same pair: the two series are
different instruments' candles (the continuous series also spans contract rolls) and each
keeps its own gap-free sequence. `klines_request` understands such a symbol and asks
``/fapi/v1/continuousKlines`` for it.

Numbers. Prices and quantities come as JSON strings and become `Decimal` straight from the
string (never through a float); non-finite values (``"NaN"``, ``"Infinity"``) and numbers in
place of strings are rejected. Anything not as documented raises `MalformedFrame`.
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, ClassVar

import orjson

from ..errors import MalformedFrame
from ..events import BookLevel, DepthDiff, Kline, MarkPrice, Source, Trade
from ..events import BookTicker as BookTickerEvent
from .base import (
    Ack,
    ChannelInfo,
    OutgoingMessage,
    ParsedItem,
    PingStyle,
    RequestError,
    RestRequest,
    ServerShutdown,
    StreamSpec,
    VenueAdapter,
    VenueLimits,
    parse_interval,
)
from .book_rules import PreviousIdRules, SequenceRules

__all__ = ["KLINE_INTERVALS", "BinanceUsdmAdapter"]

#: The kline intervals USD-M streams and serves over REST (no ``1s`` on futures).
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
    "3d",
    "1w",
    "1M",
)
_KLINE_INTERVAL_SET = frozenset(KLINE_INTERVALS)
_INTERVAL_LIST = ", ".join(KLINE_INTERVALS)

_NAME = "binance-usdm"
_PUBLIC = "public"  # book data: depth, bookTicker
_MARKET = "market"  # everything else public

#: Channels without an interval: channel -> (stream name suffix, route).
_PLAIN_CHANNELS: dict[str, tuple[str, str]] = {
    "aggTrade": ("@aggTrade", _MARKET),
    "depth": ("@depth@100ms", _PUBLIC),
    "markPrice": ("@markPrice@1s", _MARKET),
    "bookTicker": ("@bookTicker", _PUBLIC),
}
_CHANNEL_LIST = "kline_<interval>, continuousKline_<interval>, " + ", ".join(_PLAIN_CHANNELS)

#: Contract types of continuous klines (``ct``); a kline symbol ``<PAIR>_<type>`` is one.
_CONTRACT_TYPES = frozenset({"PERPETUAL", "CURRENT_QUARTER", "NEXT_QUARTER"})

#: Public event types that are valid frames but feed no contract channel: parsed to nothing.
_UNUSED_EVENTS = frozenset(
    {"24hrMiniTicker", "24hrTicker", "forceOrder", "compositeIndex", "contractInfo"}
)

#: SUBSCRIBE/UNSUBSCRIBE requests carry at most this many stream names. Binance counts
#: messages, not params, against its 10 messages/s per connection, so big batches are cheap
#: on that budget; 200 keeps each frame a few kB and is the smallest per-connection stream cap
#: any Binance page has stated, so one request never asks for more than a connection may hold.
MAX_PARAMS_PER_REQUEST = 200

_KLINE_ROW_LEN = 12
_DEPTH_WEIGHTS: dict[int, int] = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}
_ZERO = Decimal(0)

#: Memo of `_dec`: decimal string -> its Decimal; only finite values from strings get in.
_DEC_CACHE: dict[object, Decimal] = {}
_DEC_CACHE_SIZE = 4096
_DEC_CACHE_MAX_LEN = 40  # real prices are short; do not let odd long strings pin memory

#: What a parse of bad input may raise before we turn it into `MalformedFrame`.
#: ``orjson.JSONDecodeError`` is a ValueError; ``decimal.InvalidOperation`` an ArithmeticError;
#: LookupError covers missing keys and short arrays; AttributeError a ``.get`` on a non-object.
_PARSE_ERRORS = (LookupError, TypeError, ValueError, ArithmeticError, AttributeError)


# ---- field converters ------------------------------------------------------------------
# Plain functions: on the happy path each costs one call plus a type test. The type tests
# matter: ``Decimal(1.1)`` would silently carry a binary-float error into a price, and a
# string where an integer time belongs would only blow up far away, in a cache or a sink.


def _dec(s: object) -> Decimal:
    """A finite `Decimal` from a JSON string, else ValueError."""
    # Prices and sizes repeat a lot (the same open kline is re-sent four times a second, book
    # levels sit near the touch), and building a Decimal costs several times a dict lookup,
    # so validated strings are memoised. Decimals are immutable: sharing one is safe.
    d = _DEC_CACHE.get(s)
    if d is not None:
        return d
    if type(s) is str:
        try:
            d = Decimal(s)
        except ArithmeticError:  # decimal.InvalidOperation: not a number at all
            pass
        else:
            # Decimal accepts "NaN", "sNaN", "Infinity"; a price never is one of those.
            if d.is_finite():
                if len(s) <= _DEC_CACHE_MAX_LEN:
                    if len(_DEC_CACHE) >= _DEC_CACHE_SIZE:
                        # Crude, but amortised O(1) per insert; an LRU would cost on every hit.
                        _DEC_CACHE.clear()
                    _DEC_CACHE[s] = d
                return d
    raise ValueError(f"not a finite decimal string: {_short(s)}")


def _int(x: object) -> int:
    """A JSON integer (not a bool, float or string), else TypeError."""
    if type(x) is int:
        return x
    raise TypeError(f"expected an integer, got {_short(x)}")


def _str(x: object) -> str:
    if type(x) is str:
        return x
    raise TypeError(f"expected a string, got {_short(x)}")


def _bool(x: object) -> bool:
    if type(x) is bool:
        return x
    raise TypeError(f"expected true or false, got {_short(x)}")


def _levels(raw: object) -> tuple[BookLevel, ...]:
    """``[[price, qty], ...]`` -> tuple of ``(Decimal, Decimal)``."""
    if type(raw) is not list:
        raise TypeError(f"expected a list of [price, qty] levels, got {type(raw).__name__}")
    out: list[BookLevel] = []
    append = out.append
    for level in raw:
        # The type test stops a 2-character string from unpacking into a "level".
        if type(level) is not list or len(level) != 2:
            raise ValueError(f"expected a [price, qty] level, got {_short(level)}")
        append((_dec(level[0]), _dec(level[1])))
    return tuple(out)


def _short(value: object) -> str:
    """A repr cut to a log-line size (error path only)."""
    return reprlib.repr(value)


def _describe(exc: BaseException) -> str:
    """A short reason for a parse failure (only runs on the error path)."""
    if isinstance(exc, orjson.JSONDecodeError):
        return f"invalid JSON ({exc})"
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}" if exc.args else "missing field"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def _rest_errors(what: str) -> Iterator[None]:
    """Turn any parse error in a REST body into `MalformedFrame` naming the endpoint."""
    try:
        yield
    except MalformedFrame:
        raise
    except _PARSE_ERRORS as exc:
        raise MalformedFrame(f"{_NAME} {what}: {_describe(exc)}") from exc


def _rest_body(body: str | bytes, expected: type, what: str) -> Any:
    """Decode a REST body that should be a JSON ``expected`` (list or dict).

    An error body (``{"code":-1121,"msg":"Invalid symbol."}``) says so in the exception.
    """
    data = orjson.loads(body)
    if type(data) is not expected:
        if type(data) is dict and "code" in data:
            raise MalformedFrame(f"{_NAME} {what}: error {data.get('code')}: {data.get('msg', '')}")
        raise TypeError(f"expected a JSON {expected.__name__}, got {type(data).__name__}")
    return data


_Handler = Callable[[dict[str, Any], str | None], list[ParsedItem]]


class BinanceUsdmAdapter(VenueAdapter):
    """Binance USD-M futures (``fstream.binance.com`` / ``fapi.binance.com``).

    Channels: ``kline_<interval>``, ``continuousKline_<interval>`` (perpetual contract; see
    the module docstring for its ``"<PAIR>_PERPETUAL"`` symbol), ``aggTrade``, ``depth``
    (``@depth@100ms`` diffs), ``markPrice`` (``@markPrice@1s``) and ``bookTicker``.
    """

    name: ClassVar[str] = _NAME
    default_ws_url: ClassVar[str] = "wss://fstream.binance.com"
    default_rest_url: ClassVar[str] = "https://fapi.binance.com"
    ping_style: ClassVar[PingStyle] = PingStyle.PROTOCOL  # server pings every 3 min
    limits: ClassVar[VenueLimits] = VenueLimits(
        # The current docs say 1024, older copies 200 (UNSURE): 1024 is the hard cap here,
        # the config's default of 200 is the safe choice.
        max_streams_per_connection=1024,
        # Incoming to Binance, pings, pongs and control messages included; over it the
        # server disconnects, and repeated disconnects get the IP banned.
        max_outgoing_per_second=10,
        # trio-websocket's default of 1 MiB is too tight: all-market array streams
        # (``!markPrice@arr``, ``!ticker@arr``) carry every symbol in one frame, a busy
        # diff-depth frame can carry thousands of levels, and a WebSocket-API depth snapshot
        # is a 1000-level book (~60 kB per side of text). 4 MiB keeps ample headroom over
        # those while still bounding what one connection can make us buffer.
        max_message_size=4 * 1024 * 1024,
        connection_lifetime=24 * 3600.0,  # the server drops every connection after 24 h
    )
    #: Every REST response reports the weight used in the current UTC clock minute.
    rest_weight_header: ClassVar[str | None] = "X-MBX-USED-WEIGHT-1M"
    #: REQUEST_WEIGHT limit of ``/fapi/v1/exchangeInfo`` (2400 per minute per IP).
    rest_weight_per_minute: ClassVar[int] = 2400
    max_klines_per_request: ClassVar[int] = 1500
    max_trades_per_request: ClassVar[int] = 1000

    def __init__(self) -> None:
        # Dispatch on the payload's "e": one dict lookup per frame.
        self._handlers: dict[str, _Handler] = {
            "kline": self._kline,
            "continuous_kline": self._continuous_kline,
            "aggTrade": self._agg_trade,
            "depthUpdate": self._depth,
            "markPriceUpdate": self._mark_price,
            "bookTicker": self._book_ticker,
            "serverShutdown": self._server_shutdown,
        }
        for event_type in _UNUSED_EVENTS:
            self._handlers[event_type] = _ignore

    # ---- streams ------------------------------------------------------------------------

    def channels(self) -> Sequence[ChannelInfo]:
        """The channels Binance USD-M offers, with the kline intervals it streams."""
        return (
            ChannelInfo(
                "kline_<interval>",
                "candlesticks of a symbol (other intervals, e.g. 1s or 7m, built from trades)",
                KLINE_INTERVALS,
            ),
            ChannelInfo(
                "continuousKline_<interval>",
                "candlesticks of a pair's perpetual contract (symbol '<PAIR>_PERPETUAL')",
                KLINE_INTERVALS,
            ),
            ChannelInfo("aggTrade", "aggregated trades"),
            ChannelInfo("depth", "order-book diffs every 100 ms (kept as a local book)"),
            ChannelInfo("markPrice", "mark price, index price and funding, every second"),
            ChannelInfo("bookTicker", "best bid and ask in real time"),
        )

    def check_channel(self, channel: str) -> str | None:
        """None if ``channel`` is valid on Binance USD-M, else a one-line reason."""
        if channel in _PLAIN_CHANNELS:
            return None
        for prefix, what in (("kline_", "kline"), ("continuousKline_", "continuous kline")):
            if channel.startswith(prefix):
                interval = channel[len(prefix) :]
                if interval in _KLINE_INTERVAL_SET:
                    return None
                if parse_interval(interval) is None:
                    return (
                        f"{channel}: {interval!r} is not a kline interval; "
                        f"{_NAME} streams {what} intervals {_INTERVAL_LIST}"
                    )
                if prefix == "kline_":
                    return None  # built from aggregated trades
                return (
                    f"{channel}: {_NAME} streams {what} intervals {_INTERVAL_LIST} "
                    "(only plain klines of other intervals can be built from trades)"
                )
        reason = f"unknown channel {channel!r}; {_NAME} offers {_CHANNEL_LIST}"
        guess = difflib.get_close_matches(channel, _known_channel_names(), n=1, cutoff=0.75)
        if guess:
            reason += f" (did you mean {guess[0]!r}?)"
        return reason

    def stream(self, symbol: str, channel: str) -> StreamSpec:
        """The wire stream for ``(symbol, channel)``; ValueError for an invalid channel."""
        sym = symbol.lower()
        plain = _PLAIN_CHANNELS.get(channel)
        if plain is not None:
            suffix, route = plain
            return StreamSpec(symbol, channel, sym + suffix, route)
        reason = self.check_channel(channel)
        if reason is not None:
            raise ValueError(reason)
        if channel.startswith("kline_"):
            if channel[len("kline_") :] not in _KLINE_INTERVAL_SET:
                # Not streamed: built from the symbol's aggregated trades.
                return self.stream(symbol, "aggTrade")
            return StreamSpec(symbol, channel, f"{sym}@{channel}", _MARKET)
        # continuousKline_<interval>: the perpetual contract of the pair ``symbol``.
        return StreamSpec(symbol, channel, f"{sym}_perpetual@{channel}", _MARKET)

    def built_interval(self, channel: str) -> str | None:
        """``kline_<interval>`` channels whose interval USD-M does not stream (``1s``,
        ``7m``...) are built from aggregated trades: their interval, else None."""
        if channel.startswith("kline_"):
            interval = channel[len("kline_") :]
            if interval not in _KLINE_INTERVAL_SET:
                return interval
        return None

    def kline_key(self, symbol: str, channel: str) -> tuple[str, str] | None:
        """Continuous klines carry the symbol ``<PAIR>_PERPETUAL``; plain ones the symbol."""
        if channel.startswith("continuousKline_"):
            return f"{symbol}_PERPETUAL", channel[len("continuousKline_") :]
        return super().kline_key(symbol, channel)

    # ---- connections --------------------------------------------------------------------

    def connect_url(self, ws_url: str, route: str, streams: Sequence[StreamSpec]) -> str:
        """A combined-stream URL on ``route`` that subscribes ``streams`` by itself.

        Combined streams wrap each payload as ``{"stream": name, "data": payload}``, which is
        what tells the parser a partial-depth frame from a diff. ValueError if a stream
        belongs to another route (it would connect and then deliver nothing).
        """
        wrong = [s.name for s in streams if s.route != route]
        if wrong:
            raise ValueError(f"streams not on route {route!r}: {', '.join(wrong)}")
        base = f"{ws_url.rstrip('/')}/{route}/stream"
        if not streams:
            return base
        return base + "?streams=" + "/".join(s.name for s in streams)

    def open_messages(
        self, streams: Sequence[StreamSpec], first_request_id: int
    ) -> list[OutgoingMessage]:
        """Nothing: `connect_url` already subscribes the streams."""
        return []

    def subscribe(
        self, streams: Sequence[StreamSpec], first_request_id: int
    ) -> list[OutgoingMessage]:
        """SUBSCRIBE requests, at most `MAX_PARAMS_PER_REQUEST` streams each."""
        return _control_messages("SUBSCRIBE", streams, first_request_id)

    def unsubscribe(
        self, streams: Sequence[StreamSpec], first_request_id: int
    ) -> list[OutgoingMessage]:
        """UNSUBSCRIBE requests, at most `MAX_PARAMS_PER_REQUEST` streams each."""
        return _control_messages("UNSUBSCRIBE", streams, first_request_id)

    # ---- frames -------------------------------------------------------------------------

    def parse(self, frame: str | bytes) -> list[ParsedItem]:
        """Parse a combined-stream frame, a raw payload or a control reply.

        One ``orjson.loads`` and one dict lookup on the payload's ``e``; field errors are not
        checked one by one but caught once around the whole parse (free on the happy path)
        and turned into `MalformedFrame`.
        """
        stream: str | None = None
        try:
            msg = orjson.loads(frame)
            if type(msg) is dict:
                stream = msg.get("stream")
                if stream is not None:
                    _str(stream)
                    data = msg["data"]
                elif "e" in msg:
                    data = msg
                else:
                    return _control(msg)
            else:
                data = msg  # a raw array stream (``!markPrice@arr``)
            if type(data) is dict:
                handler = self._handlers.get(data["e"])
                if handler is None:
                    raise MalformedFrame(_where(stream) + f"unknown event type {_short(data['e'])}")
                return handler(data, stream)
            if type(data) is list:
                # Array streams: every element is a payload of its own.
                out: list[ParsedItem] = []
                for item in data:
                    if type(item) is not dict:
                        raise TypeError(f"array element is not an object: {_short(item)}")
                    handler = self._handlers.get(item["e"])
                    if handler is None:
                        raise MalformedFrame(
                            _where(stream) + f"unknown event type {_short(item['e'])}"
                        )
                    out += handler(item, stream)
                return out
            raise TypeError(f"payload is not an object or array: {_short(data)}")
        except MalformedFrame:
            raise
        except _PARSE_ERRORS as exc:
            raise MalformedFrame(_where(stream) + _describe(exc)) from exc

    def _kline(self, data: dict[str, Any], stream: str | None) -> list[ParsedItem]:
        return [_kline_event(_str(data["s"]), data["k"])]

    def _continuous_kline(self, data: dict[str, Any], stream: str | None) -> list[ParsedItem]:
        # "BTCUSDT" + "_" + "PERPETUAL": concatenation (not an f-string) so non-strings raise.
        return [_kline_event(data["ps"] + "_" + data["ct"], data["k"])]

    def _agg_trade(self, data: dict[str, Any], stream: str | None) -> list[ParsedItem]:
        return [_trade(_str(data["s"]), data, "ws")]

    def _depth(self, data: dict[str, Any], stream: str | None) -> list[ParsedItem]:
        # Partial depth (``@depth5``, ``@depth10``, ``@depth20``, optional ``@100ms``) has the
        # same depthUpdate shape as the diff stream but holds a full top-N picture; only the
        # stream name tells them apart. A raw (non-combined) frame is taken for a diff.
        snapshot = False
        if stream is not None:
            at = stream.find("@depth")
            snapshot = at >= 0 and stream[at + 6 : at + 7].isdigit()
        return [
            DepthDiff(
                _NAME,
                _str(data["s"]),
                _int(data["U"]),
                _int(data["u"]),
                _int(data["pu"]),
                _int(data["E"]),
                _levels(data["b"]),
                _levels(data["a"]),
                snapshot,
            )
        ]

    def _mark_price(self, data: dict[str, Any], stream: str | None) -> list[ParsedItem]:
        # Delivery (quarterly) contracts have no funding: they send "r":"" and "T":0. That
        # comes out as funding rate 0 with next_funding_time 0, the marker of "no funding".
        rate = data["r"]
        return [
            MarkPrice(
                _NAME,
                _str(data["s"]),
                _dec(data["p"]),
                _dec(data["i"]),
                _ZERO if rate == "" else _dec(rate),
                _int(data["T"]),
                _int(data["E"]),
            )
        ]

    def _book_ticker(self, data: dict[str, Any], stream: str | None) -> list[ParsedItem]:
        time = data.get("E")
        return [
            BookTickerEvent(
                _NAME,
                _str(data["s"]),
                _dec(data["b"]),
                _dec(data["B"]),
                _dec(data["a"]),
                _dec(data["A"]),
                _int(data["u"]),
                _int(data["T"] if time is None else time),
            )
        ]

    def _server_shutdown(self, data: dict[str, Any], stream: str | None) -> list[ParsedItem]:
        time = data.get("E")
        return [ServerShutdown(None if time is None else _int(time), "serverShutdown")]

    # ---- REST ---------------------------------------------------------------------------

    def server_time_request(self) -> RestRequest:
        """``GET /fapi/v1/time`` (weight 1)."""
        return RestRequest("GET", "/fapi/v1/time", weight=1)

    def parse_server_time(self, body: str | bytes) -> int:
        """``serverTime`` in ms from a ``/fapi/v1/time`` body."""
        with _rest_errors("/fapi/v1/time"):
            return _int(_rest_body(body, dict, "/fapi/v1/time")["serverTime"])

    def klines_request(
        self,
        symbol: str,
        interval: str,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = 1500,
    ) -> RestRequest:
        """``GET /fapi/v1/klines`` (inclusive ``startTime``/``endTime`` in ms).

        A continuous-kline symbol (``"BTCUSDT_PERPETUAL"``, as the ``continuousKline_*``
        events carry) asks ``/fapi/v1/continuousKlines`` for that pair and contract type.
        Weight per the documented bands (limit <100: 1, <500: 2, <=1000: 5, else 10); they
        are at or above the measured cost at every limit, so the budget never undercounts.
        """
        if not 1 <= limit <= 1500:
            raise ValueError(f"klines limit must be 1..1500, got {limit}")
        pair, _, contract_type = symbol.partition("_")
        params: list[tuple[str, str]]
        if contract_type in _CONTRACT_TYPES:
            path = "/fapi/v1/continuousKlines"
            params = [("pair", pair), ("contractType", contract_type)]
        else:
            path = "/fapi/v1/klines"
            params = [("symbol", symbol)]
        params.append(("interval", interval))
        if start_time is not None:
            params.append(("startTime", str(start_time)))
        if end_time is not None:
            params.append(("endTime", str(end_time)))
        params.append(("limit", str(limit)))
        weight = 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
        return RestRequest("GET", path, tuple(params), weight)

    def parse_klines(
        self, body: str | bytes, symbol: str, interval: str, server_time: int
    ) -> list[Kline]:
        """Klines from a ``/fapi/v1/klines`` (or ``continuousKlines``) body, oldest first.

        REST rows carry no closed flag: a kline is closed when its close time is before
        ``server_time`` (the exchange's clock, never the local one).
        """
        what = "/fapi/v1/klines"
        with _rest_errors(what):
            rows = _rest_body(body, list, what)
            out: list[Kline] = []
            for row in rows:
                if type(row) is not list or len(row) != _KLINE_ROW_LEN:
                    raise ValueError(
                        f"expected a kline row of {_KLINE_ROW_LEN} items: {_short(row)}"
                    )
                close_time = _int(row[6])
                out.append(
                    Kline(
                        _NAME,
                        symbol,
                        interval,
                        _int(row[0]),
                        close_time,
                        _dec(row[1]),
                        _dec(row[2]),
                        _dec(row[3]),
                        _dec(row[4]),
                        _dec(row[5]),
                        _dec(row[7]),
                        _int(row[8]),
                        _dec(row[9]),
                        _dec(row[10]),
                        close_time < server_time,
                        "rest",
                    )
                )
            return out

    def agg_trades_request(
        self,
        symbol: str,
        from_id: int | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = 1000,
    ) -> RestRequest:
        """``GET /fapi/v1/aggTrades`` (weight 20). Page either by ``from_id`` or by times:
        Binance warns that combining them may time out. Data older than 48 h is refused."""
        if not 1 <= limit <= 1000:
            raise ValueError(f"aggTrades limit must be 1..1000, got {limit}")
        if from_id is not None and (start_time is not None or end_time is not None):
            raise ValueError("aggTrades: use from_id or start_time/end_time, not both")
        params = [("symbol", symbol)]
        if from_id is not None:
            params.append(("fromId", str(from_id)))
        if start_time is not None:
            params.append(("startTime", str(start_time)))
        if end_time is not None:
            params.append(("endTime", str(end_time)))
        params.append(("limit", str(limit)))
        return RestRequest("GET", "/fapi/v1/aggTrades", tuple(params), 20)

    def parse_agg_trades(self, body: str | bytes, symbol: str) -> list[Trade]:
        """Trades (source ``rest``) from a ``/fapi/v1/aggTrades`` body, in id order."""
        what = "/fapi/v1/aggTrades"
        with _rest_errors(what):
            rows = _rest_body(body, list, what)
            out: list[Trade] = []
            for row in rows:
                if type(row) is not dict:
                    raise TypeError(f"expected an aggTrade object: {_short(row)}")
                out.append(_trade(symbol, row, "rest"))
            return out

    def book_rules(self) -> SequenceRules:
        """USD-M's ``pu`` chain (`PreviousIdRules`)."""
        return PreviousIdRules()

    def depth_request(self, symbol: str, limit: int = 1000) -> RestRequest:
        """``GET /fapi/v1/depth``; ``limit`` one of 5, 10, 20, 50, 100, 500, 1000."""
        weight = _DEPTH_WEIGHTS.get(limit)
        if weight is None:
            raise ValueError(f"depth limit must be one of {sorted(_DEPTH_WEIGHTS)}, got {limit}")
        return RestRequest(
            "GET", "/fapi/v1/depth", (("symbol", symbol), ("limit", str(limit))), weight
        )

    def parse_depth(self, body: str | bytes, symbol: str) -> DepthDiff:
        """A ``/fapi/v1/depth`` snapshot as a `DepthDiff` with ``snapshot=True`` whose first
        and final update id are ``lastUpdateId`` (the body does not name the symbol)."""
        what = "/fapi/v1/depth"
        with _rest_errors(what):
            data = _rest_body(body, dict, what)
            last = _int(data["lastUpdateId"])
            time = data.get("E", data.get("T", 0))
            return DepthDiff(
                _NAME,
                symbol,
                last,
                last,
                None,
                _int(time),
                _levels(data["bids"]),
                _levels(data["asks"]),
                True,
            )

    def exchange_info_request(self) -> RestRequest:
        """``GET /fapi/v1/exchangeInfo`` (weight 1)."""
        return RestRequest("GET", "/fapi/v1/exchangeInfo", weight=1)

    def parse_listed_symbols(self, body: str | bytes) -> list[str]:
        """The perpetual contracts now trading (``status`` ``TRADING`` and ``contractType``
        ``PERPETUAL``), in the body's order, from a ``/fapi/v1/exchangeInfo`` body.

        Delivery (quarterly) contracts are left out: this adapter's streams name a symbol's
        perpetual contract. Symbols not trading (``PENDING_TRADING``, ``SETTLING``, ``CLOSE``,
        ...) are left out too. Every entry must be an object with string ``symbol``,
        ``status`` and ``contractType``, else `MalformedFrame`.
        """
        what = "/fapi/v1/exchangeInfo"
        with _rest_errors(what):
            symbols = _rest_body(body, dict, what)["symbols"]
            if type(symbols) is not list:
                raise TypeError(f"'symbols' is not an array: {_short(symbols)}")
            out: list[str] = []
            for entry in symbols:
                if type(entry) is not dict:
                    raise TypeError(f"expected a symbol object: {_short(entry)}")
                # Every entry is checked, not only the trading ones: a shape change in the
                # venue's answer should fail loudly rather than silently list nothing.
                name = _str(entry["symbol"])
                status = _str(entry["status"])
                contract_type = _str(entry["contractType"])
                if status == "TRADING" and contract_type == "PERPETUAL":
                    out.append(name)
            return out


# ---- helpers of the parser ---------------------------------------------------------------


def _ignore(data: dict[str, Any], stream: str | None) -> list[ParsedItem]:
    return []


def _where(stream: str | None) -> str:
    return f"{_NAME} stream {_short(stream)}: " if stream is not None else f"{_NAME}: "


def _kline_event(symbol: str, k: dict[str, Any]) -> Kline:
    return Kline(
        _NAME,
        symbol,
        _str(k["i"]),
        _int(k["t"]),
        _int(k["T"]),
        _dec(k["o"]),
        _dec(k["h"]),
        _dec(k["l"]),
        _dec(k["c"]),
        _dec(k["v"]),
        _dec(k["q"]),
        _int(k["n"]),
        _dec(k["V"]),
        _dec(k["Q"]),
        _bool(k["x"]),
    )


def _trade(symbol: str, d: dict[str, Any], source: Source) -> Trade:
    return Trade(
        _NAME,
        symbol,
        _int(d["a"]),
        _dec(d["p"]),
        _dec(d["q"]),
        _int(d["f"]),
        _int(d["l"]),
        _int(d["T"]),
        _bool(d["m"]),
        source,
    )


def _control(msg: dict[str, Any]) -> list[ParsedItem]:
    """A reply to a control request: ``{"result":..., "id":N}`` or ``{"code":n,"msg":...}``."""
    if "result" in msg:
        return [Ack(_int(msg["id"]), msg["result"])]
    if "code" in msg:
        request_id = msg.get("id")
        return [
            RequestError(
                request_id if type(request_id) is int else None,
                str(msg["code"]),
                str(msg.get("msg", "")),
            )
        ]
    raise ValueError(f"unrecognised frame with keys {sorted(msg)[:6]}")


def _control_messages(
    method: str, streams: Sequence[StreamSpec], first_request_id: int
) -> list[OutgoingMessage]:
    out: list[OutgoingMessage] = []
    request_id = first_request_id
    for start in range(0, len(streams), MAX_PARAMS_PER_REQUEST):
        names = tuple(s.name for s in streams[start : start + MAX_PARAMS_PER_REQUEST])
        text = orjson.dumps({"method": method, "params": names, "id": request_id}).decode()
        out.append(OutgoingMessage(text, request_id, names))
        request_id += 1
    return out


def _known_channel_names() -> list[str]:
    names = list(_PLAIN_CHANNELS)
    for i in KLINE_INTERVALS:
        names += (f"kline_{i}", f"continuousKline_{i}")
    return names
