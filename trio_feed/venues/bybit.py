"""The Bybit v5 public adapters: ``bybit-linear`` (USDT/USDC perpetuals) and ``bybit-spot``.

Both speak the same v5 protocol and differ in the category (the WebSocket path
``/v5/public/<category>`` and the REST ``category=`` parameter), in the subscribe batch
size (spot takes at most 10 args per request) and in the channels: spot has no mark price.

Channels.

* ``kline_<interval>``: ``kline.<i>.<SYMBOL>``, the contract's intervals mapped to Bybit's
  (``1m`` -> ``1``, ``1h`` -> ``60``, ``1d`` -> ``D``, ``1w`` -> ``W``, ``1M`` -> ``M``); other
  valid intervals (``1s``, ``8h``, ``3d``...) are built from trades. Bybit klines carry no trade
  count and no taker-buy volumes: those fields are 0. ``confirm`` is the closed flag.
* ``aggTrade``: ``publicTrade.<SYMBOL>``. Bybit has no aggregated trades; each trade is one
  `Trade` with ``first_trade_id == last_trade_id == id``. Trade ids (``i``) are strings: decimal
  digits on spot, UUIDs on derivatives (the 128-bit integer of the UUID becomes ``id``). They are
  not consecutive, so there is **no gap detection** for trades (``trade_ids_consecutive`` is
  False), and REST can only give the most recent trades (``/v5/market/recent-trade`` has no id
  or time paging: at most 1000 on linear, 60 on spot), so trade backfill after a disconnect is
  best effort.
* ``depth``: ``orderbook.1000.<SYMBOL>``, chosen over 200 levels because the REST book's ``u``
  lines up with the 1000-level stream's ``u`` only: a REST snapshot (a re-sync or a depth check)
  then joins the stream. See `BybitBookRules` for the sequence rules; the stream starts with
  a snapshot, and any later snapshot (or a message with ``u == 1``, a service restart) resets
  the book without REST.
* ``bookTicker``: ``orderbook.1.<SYMBOL>`` (Bybit sends only snapshots at depth 1, repeated
  unchanged every 3 s); a frame with an empty side gives nothing.
* ``markPrice`` (linear only): ``tickers.<SYMBOL>``. Tickers send a snapshot and then deltas
  holding only the fields that changed, so the adapter keeps the last mark price, index price,
  funding rate and next funding time per symbol (its only state) and emits a `MarkPrice` for
  each frame that carries one of them, once all four are known.
* ``continuousKline_<interval>``: not offered (Bybit has no continuous-contract klines).

Liveness: the client sends ``{"op":"ping"}`` (every 20 s is Bybit's advice); the answer
(``ret_msg`` ``"pong"``, or ``op`` ``"pong"``) parses to `Pong`. Request ids are sent as the
string ``req_id`` and read back as ints.

REST errors: Bybit answers most errors with HTTP 200 and ``retCode != 0``; every parser raises
`MalformedFrame` naming ``retCode`` and ``retMsg`` then.
"""

from __future__ import annotations

import calendar
import datetime
import difflib
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, ClassVar

import orjson

from ..core.book_sync import SequenceRules
from ..errors import MalformedFrame
from ..events import BookTicker, DepthDiff, Kline, MarkPrice, Trade

# The field converters are Binance's: same strictness (Decimal only from finite strings,
# integers that are not bools) and the same memo of decimal strings.
from ._binance import levels as _levels
from .base import (
    Ack,
    ChannelInfo,
    Notice,
    OutgoingMessage,
    ParsedItem,
    PingStyle,
    Pong,
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

__all__ = [
    "KLINE_INTERVALS",
    "BybitAdapter",
    "BybitBookRules",
    "BybitLinearAdapter",
    "BybitSpotAdapter",
]

#: The contract's kline intervals Bybit streams, with Bybit's name of each.
KLINE_INTERVALS: dict[str, str] = {
    "1m": "1",
    "3m": "3",
    "5m": "5",
    "15m": "15",
    "30m": "30",
    "1h": "60",
    "2h": "120",
    "4h": "240",
    "6h": "360",
    "12h": "720",
    "1d": "D",
    "1w": "W",
    "1M": "M",
}
_FROM_BYBIT: dict[str, str] = {v: k for k, v in KLINE_INTERVALS.items()}
_INTERVAL_LIST = ", ".join(KLINE_INTERVALS)

_DAY = 86_400_000
#: Shortest length of each interval, for paging (a month is at least 28 days).
_MIN_LENGTH: dict[str, int] = {
    k: (28 * _DAY if k == "1M" else parse_interval(k) or 0) for k in KLINE_INTERVALS
}

#: The ``depth`` channel's topic depth (the one REST's ``u`` lines up with).
DEPTH_LEVELS = 1000
#: Most args per subscribe request on spot (Bybit's documented limit).
SPOT_ARGS_PER_REQUEST = 10
#: Most args per subscribe request elsewhere (no count stated; keeps frames small).
LINEAR_ARGS_PER_REQUEST = 200
#: Bybit's limit on the characters of one ``args`` array.
MAX_ARGS_CHARS = 21_000

_ZERO = Decimal(0)
_SIDES = {"Buy": False, "Sell": True}  # taker side -> buyer_is_maker

_MARK_FIELDS = ("markPrice", "indexPrice", "fundingRate", "nextFundingTime")


class BybitBookRules:
    """Bybit ``orderbook.<depth>`` continuity: snapshot, then deltas with an update id ``u``.

    A `DepthDiff` carries ``u`` as both its first and final id. Bybit documents no rule on
    how ``u`` advances between deltas, only that a new snapshot resets the book and that
    ``u == 1`` is a restart (both arrive as ``snapshot`` diffs and reset the book without
    these rules). So the checks are what is safe to assume: ``u`` goes up. A delta whose ``u``
    is not above the previous one (a repeat, or one out of order) breaks the chain and the
    book is re-synced from REST (``/v5/market/orderbook``, whose ``u`` is the 1000-level
    stream's). Joining a REST snapshot ``L``: deltas with ``u <= L`` are stale, the first with
    ``u > L`` bridges.

    A delta that is lost while ``u`` still goes up cannot be seen from the ids; the periodic
    REST depth check catches the wrong levels it leaves behind.
    """

    __slots__ = ()

    name = "bybit-u"

    def stale(self, diff: DepthDiff, snapshot_id: int) -> bool:
        """``u <= L``: the snapshot already contains the delta."""
        return diff.final_update_id <= snapshot_id

    def bridges(self, diff: DepthDiff, snapshot_id: int) -> bool:
        """``u > L``."""
        return diff.final_update_id > snapshot_id

    def follows(self, previous: DepthDiff, diff: DepthDiff) -> str | None:
        """None if ``u`` is above the previous ``u``, else why not."""
        if diff.final_update_id > previous.final_update_id:
            return None
        if diff.final_update_id == previous.final_update_id:
            return f"delta u {diff.final_update_id} repeated"
        return f"delta u {diff.final_update_id} below previous u {previous.final_update_id}"


_RULES: SequenceRules = BybitBookRules()

_Handler = Callable[[dict[str, Any], list[str]], list[ParsedItem]]


class BybitAdapter(VenueAdapter):
    """The v5 public protocol for one category (see the module docstring).

    Subclasses set ``name``, ``category`` and the per-category limits.
    """

    category: ClassVar[str]
    default_ws_url: ClassVar[str] = "wss://stream.bybit.com"
    default_rest_url: ClassVar[str] = "https://api.bybit.com"
    ping_style: ClassVar[PingStyle] = PingStyle.APPLICATION
    limits: ClassVar[VenueLimits] = VenueLimits(
        # No count is documented for linear, but one ``args`` array must stay under 21,000
        # characters: 500 topics of up to ~40 characters each keep well inside it.
        max_streams_per_connection=500,
        # Not documented for public streams; Binance's 10 is a cautious stand-in.
        max_outgoing_per_second=10,
        # A 1000-level snapshot is about 60 kB; leave ample headroom.
        max_message_size=4 * 1024 * 1024,
        # No lifetime is documented; a day, as elsewhere, makes rotation a rare event.
        connection_lifetime=24 * 3600.0,
    )
    #: Bybit reports remaining requests (``X-Bapi-Limit-Status``), not weight used.
    rest_weight_header: ClassVar[str | None] = None
    #: 600 requests per 5 s per IP: keeping to 600 a minute never breaks any 5 s window
    #: (every request costs 1 here).
    rest_weight_per_minute: ClassVar[int] = 600
    max_klines_per_request: ClassVar[int] = 1000
    max_trades_per_request: ClassVar[int] = 1000
    #: Bybit's trade ids are strings (UUIDs on derivatives): never consecutive integers.
    trade_ids_consecutive: ClassVar[bool] = False
    #: Most args in one subscribe request.
    args_per_request: ClassVar[int] = LINEAR_ARGS_PER_REQUEST
    #: Whether the category has ``tickers`` with a mark price.
    has_mark_price: ClassVar[bool] = True

    def __init__(self) -> None:
        # Dispatch on the topic's first part: one dict lookup per frame.
        self._handlers: dict[str, _Handler] = {
            "kline": self._kline,
            "publicTrade": self._trades,
            "orderbook": self._orderbook,
            "tickers": self._tickers,
        }
        # The mark fields last seen per symbol (tickers deltas carry only what changed).
        self._marks: dict[str, dict[str, Any]] = {}
        self._plain: dict[str, str] = {
            "aggTrade": "publicTrade.",
            "depth": f"orderbook.{DEPTH_LEVELS}.",
            "bookTicker": "orderbook.1.",
        }
        if self.has_mark_price:
            self._plain["markPrice"] = "tickers."

    # ---- streams ------------------------------------------------------------------------

    def channels(self) -> Sequence[ChannelInfo]:
        """The channels of this category, with the kline intervals Bybit streams."""
        out = [
            ChannelInfo(
                "kline_<interval>",
                "candlesticks (other intervals, e.g. 1s or 8h, built from trades)",
                tuple(KLINE_INTERVALS),
            ),
            ChannelInfo("aggTrade", "public trades (no gap detection: ids not consecutive)"),
            ChannelInfo("depth", "order book orderbook.1000, snapshot + deltas (a local book)"),
            ChannelInfo("bookTicker", "best bid and ask (orderbook.1 snapshots)"),
        ]
        if self.has_mark_price:
            out.append(ChannelInfo("markPrice", "mark price, index price and funding (tickers)"))
        return tuple(out)

    def check_channel(self, channel: str) -> str | None:
        """None if ``channel`` is valid here, else a one-line reason."""
        if channel in self._plain:
            return None
        if channel.startswith("kline_"):
            interval = channel[len("kline_") :]
            if interval in KLINE_INTERVALS or parse_interval(interval) is not None:
                return None  # streamed, or built from trades
            return (
                f"{channel}: {interval!r} is not a kline interval; "
                f"{self.name} streams {_INTERVAL_LIST}"
            )
        if channel.startswith("continuousKline_"):
            return f"{channel}: {self.name} has no continuous-contract klines"
        if channel == "markPrice":
            return f"markPrice: {self.name} has no mark price (spot)"
        names = list(self._plain) + [f"kline_{i}" for i in KLINE_INTERVALS]
        reason = f"unknown channel {channel!r}; {self.name} offers kline_<interval>, " + ", ".join(
            self._plain
        )
        guess = difflib.get_close_matches(channel, names, n=1, cutoff=0.75)
        if guess:
            reason += f" (did you mean {guess[0]!r}?)"
        return reason

    def stream(self, symbol: str, channel: str) -> StreamSpec:
        """The topic for ``(symbol, channel)``; ValueError for an invalid channel."""
        prefix = self._plain.get(channel)
        if prefix is not None:
            return StreamSpec(symbol, channel, prefix + symbol, self.category)
        reason = self.check_channel(channel)
        if reason is not None:
            raise ValueError(reason)
        interval = channel[len("kline_") :]
        bybit = KLINE_INTERVALS.get(interval)
        if bybit is None:
            return self.stream(symbol, "aggTrade")  # built from trades
        return StreamSpec(symbol, channel, f"kline.{bybit}.{symbol}", self.category)

    def built_interval(self, channel: str) -> str | None:
        """Valid kline intervals Bybit does not stream (``1s``, ``8h``, ``3d``...)."""
        if channel.startswith("kline_"):
            interval = channel[len("kline_") :]
            if interval not in KLINE_INTERVALS:
                return interval
        return None

    # ---- connections --------------------------------------------------------------------

    def connect_url(self, ws_url: str, route: str, streams: Sequence[StreamSpec]) -> str:
        """``<ws_url>/v5/public/<category>``; the streams are subscribed by messages."""
        wrong = [s.name for s in streams if s.route != route]
        if wrong or route != self.category:
            raise ValueError(f"streams not on route {self.category!r}: {', '.join(wrong)}")
        return f"{ws_url.rstrip('/')}/v5/public/{self.category}"

    def open_messages(
        self, streams: Sequence[StreamSpec], first_request_id: int
    ) -> list[OutgoingMessage]:
        """Subscribe requests for ``streams`` (see `subscribe`)."""
        return self.subscribe(streams, first_request_id)

    def subscribe(
        self, streams: Sequence[StreamSpec], first_request_id: int
    ) -> list[OutgoingMessage]:
        """``op: subscribe`` requests, `args_per_request` topics and `MAX_ARGS_CHARS` each."""
        return self._requests("subscribe", streams, first_request_id)

    def unsubscribe(
        self, streams: Sequence[StreamSpec], first_request_id: int
    ) -> list[OutgoingMessage]:
        """``op: unsubscribe`` requests, batched like `subscribe`."""
        return self._requests("unsubscribe", streams, first_request_id)

    def _requests(
        self, op: str, streams: Sequence[StreamSpec], first_request_id: int
    ) -> list[OutgoingMessage]:
        out: list[OutgoingMessage] = []
        batch: list[str] = []
        chars = 2  # the brackets of the args array
        request_id = first_request_id

        def flush() -> None:
            nonlocal request_id
            text = orjson.dumps({"req_id": str(request_id), "op": op, "args": batch}).decode()
            out.append(OutgoingMessage(text, request_id, tuple(batch)))
            request_id += 1

        for spec in streams:
            size = len(spec.name) + 3  # quotes and a comma
            if batch and (len(batch) >= self.args_per_request or chars + size > MAX_ARGS_CHARS):
                flush()
                batch, chars = [], 2
            batch.append(spec.name)
            chars += size
        if batch:
            flush()
        return out

    def app_ping(self) -> str | None:
        """``{"op":"ping"}``."""
        return '{"op":"ping"}'

    # ---- frames -------------------------------------------------------------------------

    def parse(self, frame: str | bytes) -> list[ParsedItem]:
        """A topic frame (kline, publicTrade, orderbook, tickers) or a control reply.

        One ``orjson.loads``, one dict lookup on the topic's first part; field errors are
        caught once around the whole parse and turned into `MalformedFrame`.
        """
        topic: str | None = None
        try:
            msg = orjson.loads(frame)
            if type(msg) is not dict:
                raise TypeError(f"frame is not an object: {_short(msg)}")
            topic = msg.get("topic")
            if topic is None:
                return self._control(msg)
            parts = _str(topic).split(".")
            handler = self._handlers.get(parts[0])
            if handler is None:
                raise MalformedFrame(f"{self.name}: unknown topic {_short(topic)}")
            return handler(msg, parts)
        except MalformedFrame:
            raise
        except _PARSE_ERRORS as exc:
            where = f" topic {_short(topic)}" if topic is not None else ""
            raise MalformedFrame(f"{self.name}{where}: {_describe(exc)}") from exc

    def _kline(self, msg: dict[str, Any], parts: list[str]) -> list[ParsedItem]:
        _, bybit, symbol = parts
        interval = _FROM_BYBIT[bybit]
        data = msg["data"]
        if type(data) is not list:
            raise TypeError(f"kline data is not an array: {_short(data)}")
        return [
            Kline(
                self.name,
                symbol,
                interval,
                _int(k["start"]),
                _int(k["end"]),
                _dec(k["open"]),
                _dec(k["high"]),
                _dec(k["low"]),
                _dec(k["close"]),
                _dec(k["volume"]),
                _dec(k["turnover"]),
                0,  # Bybit gives no trade count
                _ZERO,  # nor taker-buy volumes
                _ZERO,
                _bool(k["confirm"]),
            )
            for k in data
        ]

    def _trades(self, msg: dict[str, Any], parts: list[str]) -> list[ParsedItem]:
        data = msg["data"]
        if type(data) is not list:
            raise TypeError(f"trade data is not an array: {_short(data)}")
        name = self.name
        out: list[ParsedItem] = []
        for t in data:
            trade_id = _trade_id(t["i"])
            out.append(
                Trade(
                    name,
                    _str(t["s"]),
                    trade_id,
                    _dec(t["p"]),
                    _dec(t["v"]),
                    trade_id,
                    trade_id,
                    _int(t["T"]),
                    _SIDES[t["S"]],
                    "ws",
                )
            )
        return out

    def _orderbook(self, msg: dict[str, Any], parts: list[str]) -> list[ParsedItem]:
        kind = msg["type"]
        if kind != "snapshot" and kind != "delta":
            raise ValueError(f"orderbook type {_short(kind)} is neither snapshot nor delta")
        data = msg["data"]
        update_id = _int(data["u"])
        time = _int(msg["ts"])
        bids = _levels(data["b"])
        asks = _levels(data["a"])
        symbol = _str(data["s"])
        if parts[1] == "1":
            # Depth 1 is the best bid and ask, always a snapshot; a side may be empty.
            if not bids or not asks:
                return []
            return [
                BookTicker(
                    self.name,
                    symbol,
                    bids[0][0],
                    bids[0][1],
                    asks[0][0],
                    asks[0][1],
                    update_id,
                    time,
                )
            ]
        # u == 1: the service restarted and this is a fresh book, whatever the type says.
        snapshot = kind == "snapshot" or update_id == 1
        return [
            DepthDiff(self.name, symbol, update_id, update_id, None, time, bids, asks, snapshot)
        ]

    def _tickers(self, msg: dict[str, Any], parts: list[str]) -> list[ParsedItem]:
        data = msg["data"]
        symbol = _str(data["symbol"])
        kind = msg["type"]
        if kind == "snapshot":
            known: dict[str, Any] = {}
            self._marks[symbol] = known
        elif kind == "delta":
            known = self._marks.setdefault(symbol, {})
        else:
            raise ValueError(f"tickers type {_short(kind)} is neither snapshot nor delta")
        changed = False
        for key in _MARK_FIELDS:
            value = data.get(key)
            if value is not None:
                known[key] = value
                changed = True
        if not changed or len(known) < len(_MARK_FIELDS):
            return []
        rate = known["fundingRate"]
        next_funding = known["nextFundingTime"]
        return [
            MarkPrice(
                self.name,
                symbol,
                _dec(known["markPrice"]),
                _dec(known["indexPrice"]),
                _ZERO if rate == "" else _dec(rate),
                0 if next_funding == "" else int(_str(next_funding)),
                _int(msg["ts"]),
            )
        ]

    def _control(self, msg: dict[str, Any]) -> list[ParsedItem]:
        """Replies to ``op`` requests: subscribe/unsubscribe acks, pongs."""
        op = msg.get("op")
        if op == "pong" or (op == "ping" and msg.get("ret_msg") == "pong"):
            return [Pong()]
        if msg.get("type") == "COMMAND_RESP":
            return [Notice(f"command response: {_short(msg.get('data'))}")]
        if op is None:
            raise ValueError(f"frame without topic or op, keys {sorted(msg)[:6]}")
        request_id = _request_id(msg.get("req_id"))
        success = _bool(msg["success"])
        if success:
            if request_id is None:
                return [Notice(f"{op} acknowledged without our req_id: {_short(msg)}")]
            return [Ack(request_id)]
        return [RequestError(request_id, str(op), str(msg.get("ret_msg", "")))]

    # ---- REST ---------------------------------------------------------------------------

    def server_time_request(self) -> RestRequest:
        """``GET /v5/market/time``."""
        return RestRequest("GET", "/v5/market/time")

    def parse_server_time(self, body: str | bytes) -> int:
        """The server time in ms (``timeNano`` / 10^6) from a ``/v5/market/time`` body."""
        with self._rest_errors("/v5/market/time") as result:
            return int(_str(result(body)["timeNano"])) // 1_000_000

    def klines_request(
        self,
        symbol: str,
        interval: str,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = 1000,
    ) -> RestRequest:
        """``GET /v5/market/kline`` (``start``/``end`` inclusive, by open time).

        Bybit answers newest first and, when the range holds more than ``limit`` klines,
        keeps the *newest* ``limit``. Paging forward from ``start_time`` would then skip the
        middle of the range, so with a start the end is pulled in to at most ``limit``
        intervals after it (a month counted as 28 days): a page is always the oldest part.
        """
        if not 1 <= limit <= 1000:
            raise ValueError(f"kline limit must be 1..1000, got {limit}")
        bybit = KLINE_INTERVALS.get(interval)
        if bybit is None:
            raise ValueError(f"{self.name} has no {interval!r} klines")
        params = [("category", self.category), ("symbol", symbol), ("interval", bybit)]
        if start_time is not None:
            last_open = start_time + (limit - 1) * _MIN_LENGTH[interval]
            end_time = last_open if end_time is None else min(end_time, last_open)
            params.append(("start", str(start_time)))
        if end_time is not None:
            params.append(("end", str(end_time)))
        params.append(("limit", str(limit)))
        return RestRequest("GET", "/v5/market/kline", tuple(params))

    def parse_klines(
        self, body: str | bytes, symbol: str, interval: str, server_time: int
    ) -> list[Kline]:
        """Klines (source ``rest``) from a ``/v5/market/kline`` body, oldest first.

        Rows are ``[start, open, high, low, close, volume, turnover]`` strings, newest first;
        a kline is closed when its close time (the next one's open - 1) is before
        ``server_time``.
        """
        with self._rest_errors("/v5/market/kline") as result:
            rows = result(body)["list"]
            if type(rows) is not list:
                raise TypeError(f"'list' is not an array: {_short(rows)}")
            out: list[Kline] = []
            for row in reversed(rows):
                if type(row) is not list or len(row) != 7:
                    raise ValueError(f"expected a kline row of 7 strings: {_short(row)}")
                open_time = int(_str(row[0]))
                close_time = _close_time(open_time, interval)
                out.append(
                    Kline(
                        self.name,
                        symbol,
                        interval,
                        open_time,
                        close_time,
                        _dec(row[1]),
                        _dec(row[2]),
                        _dec(row[3]),
                        _dec(row[4]),
                        _dec(row[5]),
                        _dec(row[6]),
                        0,
                        _ZERO,
                        _ZERO,
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
        """``GET /v5/market/recent-trade``: the latest ``limit`` trades.

        Bybit has no id or time selection for public trades: ``from_id``, ``start_time``
        and ``end_time`` are ignored, and only what is still among the latest trades can be
        recovered.
        """
        limit = min(limit, self.max_trades_per_request)
        if limit < 1:
            raise ValueError(f"trade limit must be at least 1, got {limit}")
        params = (("category", self.category), ("symbol", symbol), ("limit", str(limit)))
        return RestRequest("GET", "/v5/market/recent-trade", params)

    def parse_agg_trades(self, body: str | bytes, symbol: str) -> list[Trade]:
        """Trades (source ``rest``) from a ``/v5/market/recent-trade`` body, oldest first
        (Bybit lists them newest first)."""
        with self._rest_errors("/v5/market/recent-trade") as result:
            rows = result(body)["list"]
            if type(rows) is not list:
                raise TypeError(f"'list' is not an array: {_short(rows)}")
            out: list[Trade] = []
            for row in rows:
                trade_id = _trade_id(row["execId"])
                out.append(
                    Trade(
                        self.name,
                        _str(row["symbol"]),
                        trade_id,
                        _dec(row["price"]),
                        _dec(row["size"]),
                        trade_id,
                        trade_id,
                        int(_str(row["time"])),
                        _SIDES[row["side"]],
                        "rest",
                    )
                )
            # Stable: trades of one millisecond keep Bybit's (reversed) order.
            out.reverse()
            out.sort(key=_trade_time)
            return out

    def exchange_info_request(self) -> RestRequest:
        """``GET /v5/market/instruments-info`` of this category (up to 1000 instruments)."""
        params = (("category", self.category), ("limit", "1000"))
        return RestRequest("GET", "/v5/market/instruments-info", params)

    def parse_listed_symbols(self, body: str | bytes) -> list[str]:
        """The instruments with ``status`` ``Trading`` (on linear: perpetuals only), in the
        body's order."""
        with self._rest_errors("/v5/market/instruments-info") as result:
            rows = result(body)["list"]
            if type(rows) is not list:
                raise TypeError(f"'list' is not an array: {_short(rows)}")
            out: list[str] = []
            for row in rows:
                name = _str(row["symbol"])
                status = _str(row["status"])
                if status == "Trading" and self._listed(row):
                    out.append(name)
            return out

    def _listed(self, row: dict[str, Any]) -> bool:
        return True

    def book_rules(self) -> SequenceRules:
        """`BybitBookRules`."""
        return _RULES

    def depth_request(self, symbol: str, limit: int = 1000) -> RestRequest:
        """``GET /v5/market/orderbook`` (``limit`` 1..1000 levels a side)."""
        if not 1 <= limit <= 1000:
            raise ValueError(f"orderbook limit must be 1..1000, got {limit}")
        params = (("category", self.category), ("symbol", symbol), ("limit", str(limit)))
        return RestRequest("GET", "/v5/market/orderbook", params)

    def parse_depth(self, body: str | bytes, symbol: str) -> DepthDiff:
        """A ``/v5/market/orderbook`` body as a snapshot `DepthDiff` at its ``u``."""
        with self._rest_errors("/v5/market/orderbook") as result:
            data = result(body)
            update_id = _int(data["u"])
            return DepthDiff(
                self.name,
                _str(data["s"]),
                update_id,
                update_id,
                None,
                _int(data["ts"]),
                _levels(data["b"]),
                _levels(data["a"]),
                True,
            )

    @contextmanager
    def _rest_errors(self, what: str) -> Iterator[Callable[[str | bytes], Any]]:
        """Yield a decoder of v5 bodies (their ``result``) and turn any parse error, or a
        ``retCode`` other than 0, into `MalformedFrame` naming the endpoint."""

        def result(body: str | bytes) -> Any:
            data = orjson.loads(body)
            if type(data) is not dict:
                raise TypeError(f"expected a JSON object, got {type(data).__name__}")
            code = data["retCode"]
            if code != 0:
                raise MalformedFrame(
                    f"{self.name} {what}: retCode {code}: {data.get('retMsg', '')}"
                )
            res = data["result"]
            if type(res) is not dict:
                raise TypeError(f"'result' is not an object: {_short(res)}")
            return res

        try:
            yield result
        except MalformedFrame:
            raise
        except _PARSE_ERRORS as exc:
            raise MalformedFrame(f"{self.name} {what}: {_describe(exc)}") from exc


class BybitLinearAdapter(BybitAdapter):
    """Bybit v5 linear: USDT/USDC perpetuals and USDT futures (``/v5/public/linear``)."""

    name: ClassVar[str] = "bybit-linear"
    category: ClassVar[str] = "linear"

    def _listed(self, row: dict[str, Any]) -> bool:
        # Dated futures trade under other names; the feed streams perpetuals.
        return _str(row["contractType"]) == "LinearPerpetual"


class BybitSpotAdapter(BybitAdapter):
    """Bybit v5 spot (``/v5/public/spot``): no mark price, 10 args per subscribe request,
    at most 60 recent trades over REST."""

    name: ClassVar[str] = "bybit-spot"
    category: ClassVar[str] = "spot"
    args_per_request: ClassVar[int] = SPOT_ARGS_PER_REQUEST
    has_mark_price: ClassVar[bool] = False
    max_trades_per_request: ClassVar[int] = 60


# ---- helpers ---------------------------------------------------------------------------------


def _trade_id(raw: object) -> int:
    """A trade id string as an int: decimal digits as such, a UUID as its 128-bit value."""
    s = _str(raw)
    if s.isascii() and s.isdigit():
        return int(s)
    return uuid.UUID(s).int


def _trade_time(trade: Trade) -> int:
    return trade.time


def _request_id(raw: object) -> int | None:
    """Our request id back from ``req_id`` (None when absent, empty or not ours)."""
    if type(raw) is str and raw.isascii() and raw.isdigit():
        return int(raw)
    return None


def _close_time(open_time: int, interval: str) -> int:
    """The close time of the ``interval`` kline opening at ``open_time``."""
    if interval == "1M":
        # Calendar months: the next month's first millisecond - 1.
        days = open_time // _DAY
        year, month, _ = _ymd(days)
        month_days = calendar.monthrange(year, month)[1]
        return open_time + month_days * _DAY - 1
    length = parse_interval(interval)
    if length is None:
        raise ValueError(f"not a kline interval: {interval!r}")
    return open_time + length - 1


def _ymd(days: int) -> tuple[int, int, int]:
    d = datetime.date(1970, 1, 1) + datetime.timedelta(days=days)
    return d.year, d.month, d.day
