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
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, ClassVar

from ..events import BookTicker as BookTickerEvent
from ..events import DepthDiff, MarkPrice
from ._binance import (
    MAX_PARAMS_PER_REQUEST,
    BinanceAdapter,
    as_int,
    as_str,
    dec,
    ignore,
    levels,
    rest_errors,
)
from .base import (
    ChannelInfo,
    ParsedItem,
    PingStyle,
    RestRequest,
    StreamSpec,
    VenueLimits,
    parse_interval,
)
from .book_rules import PreviousIdRules, SequenceRules

__all__ = ["KLINE_INTERVALS", "MAX_PARAMS_PER_REQUEST", "BinanceUsdmAdapter"]

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

_DEPTH_WEIGHTS: dict[int, int] = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}
_ZERO = Decimal(0)


class BinanceUsdmAdapter(BinanceAdapter):
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

    _rest_prefix: ClassVar[str] = "/fapi/v1"

    def __init__(self) -> None:
        super().__init__()
        self._handlers.update(
            {
                "continuous_kline": self._continuous_kline,
                "depthUpdate": self._depth,
                "markPriceUpdate": self._mark_price,
                "bookTicker": self._book_ticker,
            }
        )
        for event_type in _UNUSED_EVENTS:
            self._handlers[event_type] = ignore

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

    # ---- frames -------------------------------------------------------------------------

    def _continuous_kline(self, data: dict[str, Any], stream: str | None) -> list[ParsedItem]:
        # "BTCUSDT" + "_" + "PERPETUAL": concatenation (not an f-string) so non-strings raise.
        return [self._kline_event(data["ps"] + "_" + data["ct"], data["k"])]

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
                as_str(data["s"]),
                as_int(data["U"]),
                as_int(data["u"]),
                as_int(data["pu"]),
                as_int(data["E"]),
                levels(data["b"]),
                levels(data["a"]),
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
                as_str(data["s"]),
                dec(data["p"]),
                dec(data["i"]),
                _ZERO if rate == "" else dec(rate),
                as_int(data["T"]),
                as_int(data["E"]),
            )
        ]

    def _book_ticker(self, data: dict[str, Any], stream: str | None) -> list[ParsedItem]:
        time = data.get("E")
        return [
            BookTickerEvent(
                _NAME,
                as_str(data["s"]),
                dec(data["b"]),
                dec(data["B"]),
                dec(data["a"]),
                dec(data["A"]),
                as_int(data["u"]),
                as_int(data["T"] if time is None else time),
            )
        ]

    # ---- REST ---------------------------------------------------------------------------

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
        params = self._agg_trades_params(symbol, from_id, start_time, end_time, limit)
        return RestRequest("GET", "/fapi/v1/aggTrades", params, 20)

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
        with rest_errors(_NAME, "/fapi/v1/exchangeInfo"):
            out: list[str] = []
            for entry in self._exchange_symbols(body):
                # Every entry is checked, not only the trading ones: a shape change in the
                # venue's answer should fail loudly rather than silently list nothing.
                name = as_str(entry["symbol"])
                status = as_str(entry["status"])
                contract_type = as_str(entry["contractType"])
                if status == "TRADING" and contract_type == "PERPETUAL":
                    out.append(name)
            return out


# ---- helpers of the parser ---------------------------------------------------------------


def _known_channel_names() -> list[str]:
    names = list(_PLAIN_CHANNELS)
    for i in KLINE_INTERVALS:
        names += (f"kline_{i}", f"continuousKline_{i}")
    return names
