"""The Binance spot adapter (``binance-spot``): stream names, combined-stream URLs,
SUBSCRIBE/UNSUBSCRIBE messages, frame parsing and REST requests, all without I/O.

Spot speaks the USD-M protocol (:mod:`trio_feed.venues._binance` holds what they share) with
these differences:

* one route: spot has no ``/public``/``/market`` split, every stream is served on
  ``<ws_url>/stream?streams=...``;
* limits: 5 incoming messages per second per connection (pings and control messages
  included), 1024 streams per connection; the server pings every 20 s and drops a connection
  that leaves a ping unanswered for a minute (trio-websocket answers pings by itself);
* klines: ``1s`` is streamed too; other intervals (``7m``...) are built from trades;
* diff depth (``@depth@100ms``) has no ``pu`` and no ``T``: continuity is ``U == previous u +
  1`` (`ConsecutiveIdRules`), and a REST snapshot (``/api/v3/depth``) has no time at all, so
  a snapshot's `DepthDiff` has time 0;
* ``bookTicker`` payloads carry only ``u, s, b, B, a, A`` (no ``e``, ``E`` or ``T``): the
  event's ``time`` is 0, since the frame has no exchange time and the arrival time would make
  the event depend on the local clock (which the contract keeps out of market data);
* partial depth (``@depth5``...) is ``{"lastUpdateId", "bids", "asks"}`` without symbol or
  event type: it parses to a snapshot `DepthDiff` (time 0) only in a combined frame, whose
  stream name gives the symbol;
* REST under ``/api/v3`` with spot weights (klines 2, aggTrades 4, depth 5/25/50/250 by limit,
  exchangeInfo 20) and a budget of 6000 weight per minute.

Channels: ``kline_<interval>``, ``aggTrade``, ``depth``, ``bookTicker``. Not offered:
``markPrice`` and ``continuousKline_<interval>`` (futures concepts: spot has no mark price,
funding or contracts); `check_channel` says so. Aggregated trade ids are consecutive, so trades
get gap detection and REST backfill as on USD-M.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any, ClassVar

from ..events import BookTicker as BookTickerEvent
from ..events import DepthDiff
from ._binance import BinanceAdapter, as_int, as_str, dec, ignore, levels, rest_errors, short
from .base import (
    ChannelInfo,
    ParsedItem,
    PingStyle,
    RestRequest,
    StreamSpec,
    VenueLimits,
    parse_interval,
)
from .book_rules import ConsecutiveIdRules, SequenceRules

__all__ = ["KLINE_INTERVALS", "ROUTE", "BinanceSpotAdapter"]

#: The kline intervals spot streams and serves over REST (``1s`` included, unlike futures).
KLINE_INTERVALS: tuple[str, ...] = (
    "1s",
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

_NAME = "binance-spot"
#: The only route: spot serves every public stream on one endpoint.
ROUTE = "spot"

#: Channels without an interval: channel -> stream name suffix.
_PLAIN_CHANNELS: dict[str, str] = {
    "aggTrade": "@aggTrade",
    "depth": "@depth@100ms",
    "bookTicker": "@bookTicker",
}
_CHANNEL_LIST = "kline_<interval>, " + ", ".join(_PLAIN_CHANNELS)

#: Contract channels that spot does not have, and why.
_MISSING_CHANNELS: dict[str, str] = {
    "markPrice": "spot markets have no mark price or funding (a futures stream)",
    "continuousKline_": "spot has no futures contracts to follow (use kline_<interval>)",
}

#: Public event types that are valid frames but feed no contract channel: parsed to nothing.
_UNUSED_EVENTS = frozenset(
    {"24hrMiniTicker", "24hrTicker", "1hTicker", "4hTicker", "1dTicker", "trade", "avgPrice"}
)

#: ``/api/v3/depth`` weights: (highest limit of the band, weight).
_DEPTH_WEIGHTS: tuple[tuple[int, int], ...] = ((100, 5), (500, 25), (1000, 50), (5000, 250))


class BinanceSpotAdapter(BinanceAdapter):
    """Binance spot (``stream.binance.com:9443`` / ``api.binance.com``).

    Channels: ``kline_<interval>`` (``1s`` to ``1M``; other intervals built from trades),
    ``aggTrade``, ``depth`` (``@depth@100ms`` diffs) and ``bookTicker`` (time 0: spot sends
    none). No ``markPrice`` and no ``continuousKline_<interval>``.
    """

    name: ClassVar[str] = _NAME
    default_ws_url: ClassVar[str] = "wss://stream.binance.com:9443"
    default_rest_url: ClassVar[str] = "https://api.binance.com"
    ping_style: ClassVar[PingStyle] = PingStyle.PROTOCOL  # server pings every 20 s
    limits: ClassVar[VenueLimits] = VenueLimits(
        max_streams_per_connection=1024,
        # Incoming to Binance, pings, pongs and control messages included; over it the
        # server disconnects (spot allows half of what futures does).
        max_outgoing_per_second=5,
        # As USD-M: a 5000-level depth frame or an all-market array stream is large.
        max_message_size=4 * 1024 * 1024,
        connection_lifetime=24 * 3600.0,
    )
    rest_weight_header: ClassVar[str | None] = "X-MBX-USED-WEIGHT-1M"
    #: REQUEST_WEIGHT limit of spot (enums.md); 2021 recordings still showed 1200.
    rest_weight_per_minute: ClassVar[int] = 6000
    max_klines_per_request: ClassVar[int] = 1000
    max_trades_per_request: ClassVar[int] = 1000
    _rest_prefix: ClassVar[str] = "/api/v3"

    def __init__(self) -> None:
        super().__init__()
        self._handlers["depthUpdate"] = self._depth
        for event_type in _UNUSED_EVENTS:
            self._handlers[event_type] = ignore

    # ---- streams ------------------------------------------------------------------------

    def channels(self) -> Sequence[ChannelInfo]:
        """The channels Binance spot offers, with the kline intervals it streams."""
        return (
            ChannelInfo(
                "kline_<interval>",
                "candlesticks of a symbol (other intervals, e.g. 7m, built from trades)",
                KLINE_INTERVALS,
            ),
            ChannelInfo("aggTrade", "aggregated trades"),
            ChannelInfo("depth", "order-book diffs every 100 ms (kept as a local book)"),
            ChannelInfo("bookTicker", "best bid and ask in real time (no exchange time)"),
        )

    def check_channel(self, channel: str) -> str | None:
        """None if ``channel`` is valid on Binance spot, else a one-line reason."""
        if channel in _PLAIN_CHANNELS:
            return None
        if channel.startswith("kline_"):
            interval = channel[len("kline_") :]
            if interval in _KLINE_INTERVAL_SET or parse_interval(interval) is not None:
                return None  # streamed, or built from aggregated trades
            return (
                f"{channel}: {interval!r} is not a kline interval; "
                f"{_NAME} streams kline intervals {_INTERVAL_LIST}"
            )
        for prefix, why in _MISSING_CHANNELS.items():
            if channel == prefix or (prefix.endswith("_") and channel.startswith(prefix)):
                return f"{channel}: {_NAME} does not offer it: {why}"
        reason = f"unknown channel {channel!r}; {_NAME} offers {_CHANNEL_LIST}"
        guess = difflib.get_close_matches(channel, _known_channel_names(), n=1, cutoff=0.75)
        if guess:
            reason += f" (did you mean {guess[0]!r}?)"
        return reason

    def stream(self, symbol: str, channel: str) -> StreamSpec:
        """The wire stream for ``(symbol, channel)``; ValueError for an invalid channel."""
        sym = symbol.lower()
        suffix = _PLAIN_CHANNELS.get(channel)
        if suffix is not None:
            return StreamSpec(symbol, channel, sym + suffix, ROUTE)
        reason = self.check_channel(channel)
        if reason is not None:
            raise ValueError(reason)
        if self.built_interval(channel) is not None:
            return self.stream(symbol, "aggTrade")
        return StreamSpec(symbol, channel, f"{sym}@{channel}", ROUTE)

    def built_interval(self, channel: str) -> str | None:
        """``kline_<interval>`` channels whose interval spot does not stream (``7m``,
        ``2d``...) are built from aggregated trades: their interval, else None."""
        if channel.startswith("kline_"):
            interval = channel[len("kline_") :]
            if interval not in _KLINE_INTERVAL_SET:
                return interval
        return None

    # ---- connections --------------------------------------------------------------------

    def connect_url(self, ws_url: str, route: str, streams: Sequence[StreamSpec]) -> str:
        """A combined-stream URL (``<ws_url>/stream?streams=a/b``) subscribing ``streams``.

        Combined streams wrap each payload as ``{"stream": name, "data": payload}``; the
        name is the only place a partial-depth frame names its symbol. ValueError for a
        route other than `ROUTE`.
        """
        if route != ROUTE:
            raise ValueError(f"{_NAME} has one route, {ROUTE!r}, not {route!r}")
        wrong = [s.name for s in streams if s.route != ROUTE]
        if wrong:
            raise ValueError(f"streams not on route {ROUTE!r}: {', '.join(wrong)}")
        base = f"{ws_url.rstrip('/')}/stream"
        if not streams:
            return base
        return base + "?streams=" + "/".join(s.name for s in streams)

    # ---- frames -------------------------------------------------------------------------

    def _untyped(self, data: dict[str, Any], stream: str | None) -> list[ParsedItem] | None:
        # Spot's bookTicker and partial-depth payloads have no "e".
        if "u" in data and "b" in data:
            return [
                BookTickerEvent(
                    _NAME,
                    as_str(data["s"]),
                    dec(data["b"]),
                    dec(data["B"]),
                    dec(data["a"]),
                    dec(data["A"]),
                    as_int(data["u"]),
                    0,  # spot's bookTicker carries no time (see the module docstring)
                )
            ]
        if "lastUpdateId" in data:
            if stream is None:
                raise ValueError("partial depth outside a combined stream: no symbol to name")
            # "bnbbtc@depth5@100ms" -> "BNBBTC": the payload itself names no symbol.
            symbol, at, _ = stream.partition("@")
            if not at or not symbol:
                raise ValueError(f"cannot tell the symbol of partial depth on {short(stream)}")
            last = as_int(data["lastUpdateId"])
            return [
                DepthDiff(
                    _NAME,
                    symbol.upper(),
                    last,
                    last,
                    None,
                    0,
                    levels(data["bids"]),
                    levels(data["asks"]),
                    True,
                )
            ]
        return None

    def _depth(self, data: dict[str, Any], stream: str | None) -> list[ParsedItem]:
        return [
            DepthDiff(
                _NAME,
                as_str(data["s"]),
                as_int(data["U"]),
                as_int(data["u"]),
                None,  # spot has no "pu": continuity is U == previous u + 1
                as_int(data["E"]),
                levels(data["b"]),
                levels(data["a"]),
                False,
            )
        ]

    # ---- REST ---------------------------------------------------------------------------

    def klines_request(
        self,
        symbol: str,
        interval: str,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = 1000,
    ) -> RestRequest:
        """``GET /api/v3/klines`` (inclusive ``startTime``/``endTime`` in ms; weight 2).

        Spot answers oldest first, so with a start time a full page ends early and the next
        page starts after its last row; nothing is ever cut from the wrong end.
        """
        if not 1 <= limit <= 1000:
            raise ValueError(f"klines limit must be 1..1000, got {limit}")
        params = [("symbol", symbol), ("interval", interval)]
        if start_time is not None:
            params.append(("startTime", str(start_time)))
        if end_time is not None:
            params.append(("endTime", str(end_time)))
        params.append(("limit", str(limit)))
        return RestRequest("GET", "/api/v3/klines", tuple(params), 2)

    def agg_trades_request(
        self,
        symbol: str,
        from_id: int | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = 1000,
    ) -> RestRequest:
        """``GET /api/v3/aggTrades`` (weight 4). Page either by ``from_id`` or by times
        (at most an hour apart), never both."""
        params = self._agg_trades_params(symbol, from_id, start_time, end_time, limit)
        return RestRequest("GET", "/api/v3/aggTrades", params, 4)

    def book_rules(self) -> SequenceRules:
        """Spot's consecutive ids (`ConsecutiveIdRules`)."""
        return ConsecutiveIdRules()

    def depth_request(self, symbol: str, limit: int = 1000) -> RestRequest:
        """``GET /api/v3/depth``; ``limit`` 1..5000, weight 5 (to 100), 25 (to 500), 50 (to
        1000) or 250 (to 5000)."""
        weight = next((w for top, w in _DEPTH_WEIGHTS if 1 <= limit <= top), None)
        if weight is None:
            raise ValueError(f"depth limit must be 1..5000, got {limit}")
        return RestRequest(
            "GET", "/api/v3/depth", (("symbol", symbol), ("limit", str(limit))), weight
        )

    def exchange_info_request(self) -> RestRequest:
        """``GET /api/v3/exchangeInfo`` (weight 20)."""
        return RestRequest("GET", "/api/v3/exchangeInfo", weight=20)

    def parse_listed_symbols(self, body: str | bytes) -> list[str]:
        """The symbols now trading (``status`` ``TRADING``), in the body's order, from an
        ``/api/v3/exchangeInfo`` body. Every entry must be an object with string ``symbol``
        and ``status``, else `MalformedFrame`; ``isSpotTradingAllowed`` false (a symbol only
        tradable on margin) leaves a symbol out."""
        with rest_errors(_NAME, "/api/v3/exchangeInfo"):
            out: list[str] = []
            for entry in self._exchange_symbols(body):
                name = as_str(entry["symbol"])
                status = as_str(entry["status"])
                if status == "TRADING" and entry.get("isSpotTradingAllowed", True) is not False:
                    out.append(name)
            return out


def _known_channel_names() -> list[str]:
    return list(_PLAIN_CHANNELS) + [f"kline_{i}" for i in KLINE_INTERVALS]
