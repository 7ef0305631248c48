"""The OKX v5 adapter (``okx``): spot (``BTC-USDT``), perpetual swaps (``BTC-USDT-SWAP``) and
futures (``BTC-USD-250627``) on one adapter, all without I/O.

Routes. OKX serves candles on ``/ws/v5/business`` and trades and order books on
``/ws/v5/public``; a candle subscription on ``/public`` is refused. Every stream carries its
route (``business`` or ``public``) and `connect_url` refuses to mix them, so the pool planner
never puts both on one connection.

Subscriptions. ``{"id":"7","op":"subscribe","args":[{"channel":"candle1m","instId":...}]}``,
acknowledged by one ``{"event":"subscribe","arg":{...},"id":"7"}`` per arg (the first one
acknowledges the request; a rejected request answers ``{"event":"error","code":...,"id":"7"}``).
Request ids are the shell's integers as strings. OKX allows 64 KB of ``args`` per request and
only **480 subscribe/unsubscribe requests per connection per hour**: we respect both by
batching, every stream of a connection (or of one live change) in as few requests as the
64 KB allow, normally one.

Liveness. OKX closes a connection that has been quiet for 30 s: the client sends the text
``ping`` and the server answers the text ``pong`` (`PingStyle.APPLICATION`). The shell pings
every ``[ping] interval`` seconds (default 20): keep it **below 30** (`MAX_PING_INTERVAL`)
for OKX. The ``64008`` notice (a service upgrade closes the connection in about 60 s) is a
`ServerShutdown`: the shell moves to a new connection at once.

Channels. ``kline_<interval>`` (``candle<bar>``; 1s 1m 3m 5m 15m 30m 1H 2H 4H and, for 6 h and
longer, the UTC-aligned bars ``6Hutc 12Hutc 1Dutc 2Dutc 3Dutc 5Dutc 1Wutc 1Mutc 3Mutc``, so
buckets match the contract's UTC intervals; other valid intervals are built from trades),
``aggTrade`` (``trades``), ``depth`` (``books``: 400 levels, snapshot then updates every
100 ms) and ``bookTicker`` (``bbo-tbt``). Not offered: ``markPrice`` (OKX spreads mark price,
index and funding over three channels, ``mark-price``, ``index-tickers`` and
``funding-rate``, with no single event the contract's `MarkPrice` could come from) and
``continuousKline_<interval>`` (OKX has no continuous-contract candles).

Candles carry no trade count and no taker volumes: those `Kline` fields are 0. ``volume`` is
in the base currency (``vol`` for spot, ``volCcy`` for derivatives, whose ``vol`` counts
contracts), ``quote_volume`` is ``volCcyQuote``.

Trades. ``tradeId`` increases per instrument but one message aggregates ``count`` fills
under the id of the last, so ids skip: ``trade_ids_consecutive`` is False and trades pass
through the keeper without gap detection (and without REST fills: OKX pages its trade
history only backwards). ``first_trade_id`` is ``tradeId - count + 1``, ``last_trade_id``
``tradeId``. Gap detection on OKX therefore covers klines (closed candles and REST backfill)
and books (``seqId``/``prevSeqId``), not trades.

Books. A `DepthDiff` per message: ``first_update_id == final_update_id == seqId``,
``prev_update_id`` the ``prevSeqId`` (None in snapshots), ``checksum`` as sent. `OkxBookRules`
chains ``prevSeqId`` on the previous ``seqId`` (a heartbeat with ``prevSeqId == seqId`` and a
sequence reset after maintenance, ``seqId < prevSeqId``, both chain) and verifies the CRC32 of
the top 25 levels when the checksum is not 0 (OKX sends 0 since June 2026).

Numbers. Prices and sizes become `Decimal` straight from their strings, which keeps the
exact text (``Decimal("7.6110")`` prints as ``7.6110`` with format ``f``), as the checksum
needs; times and ids come as strings of digits. Anything not as documented raises
`MalformedFrame`; REST answers with ``code != "0"`` (HTTP 200 included) raise it naming the
code and message (``50011``: rate limited).
"""

from __future__ import annotations

import difflib
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from ..core.book import OrderBook
from ..core.intervals import close_time
from ..errors import ConfigError, MalformedFrame
from ..events import BookLevel, BookTicker, DepthDiff, Kline, Source, Trade
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
    ServerShutdown,
    StreamSpec,
    VenueAdapter,
    VenueLimits,
    parse_interval,
)
from .book_rules import SequenceRules
from .fields import PARSE_ERRORS as _PARSE_ERRORS
from .fields import as_int as _int
from .fields import as_str as _str
from .fields import dec as _dec
from .fields import describe as _describe
from .fields import short as _short

if TYPE_CHECKING:
    from ..config import VenueConfig

__all__ = [
    "CHECKSUM_LEVELS",
    "KLINE_BARS",
    "MAX_ARGS_BYTES",
    "MAX_PING_INTERVAL",
    "OkxAdapter",
    "OkxBookRules",
    "book_checksum",
    "checksum_string",
]

_NAME = "okx"
_PUBLIC = "public"  # trades, books, bbo-tbt
_BUSINESS = "business"  # candles

#: Contract interval -> OKX bar. UTC-aligned bars from 6 h up (OKX's plain ``6H``/``1D``...
#: open at UTC+8 midnight, which would not match the contract's UTC buckets).
KLINE_BARS: dict[str, str] = {
    "1s": "1s",
    "1m": "1m",
    "3m": "3m",
    "5m": "5m",
    "15m": "15m",
    "30m": "30m",
    "1h": "1H",
    "2h": "2H",
    "4h": "4H",
    "6h": "6Hutc",
    "12h": "12Hutc",
    "1d": "1Dutc",
    "2d": "2Dutc",
    "3d": "3Dutc",
    "5d": "5Dutc",
    "1w": "1Wutc",
    "1M": "1Mutc",
    "3M": "3Mutc",
}
_INTERVAL_LIST = ", ".join(KLINE_BARS)
#: ``candle<bar>`` -> contract interval.
_CANDLE_CHANNELS: dict[str, str] = {"candle" + bar: i for i, bar in KLINE_BARS.items()}
# OKX's UTC+8 bars (``candle1D``...: the docs' examples) parse too, as klines of the interval
# of the same length; we never subscribe them (their buckets open at 16:00 UTC).
for _interval, _bar in KLINE_BARS.items():
    if _bar.endswith("utc"):
        _CANDLE_CHANNELS.setdefault("candle" + _bar[: -len("utc")], _interval)

#: Channels without an interval: channel -> (OKX channel, route).
_PLAIN_CHANNELS: dict[str, tuple[str, str]] = {
    "aggTrade": ("trades", _PUBLIC),
    "depth": ("books", _PUBLIC),
    "bookTicker": ("bbo-tbt", _PUBLIC),
}
_CHANNEL_LIST = "kline_<interval>, " + ", ".join(_PLAIN_CHANNELS)
_UNSUPPORTED: dict[str, str] = {
    "markPrice": (
        "markPrice: okx has no single mark-price event (mark price, index and funding come "
        "from three channels); not supported"
    ),
}

#: OKX closes a connection quiet for 30 s: ``[ping] interval`` must stay below this.
MAX_PING_INTERVAL = 30.0
#: OKX limits the ``args`` of one request to 64 KB; batches stay under it.
MAX_ARGS_BYTES = 64 * 1024 - 1024
#: Levels per side the checksum covers.
CHECKSUM_LEVELS = 25
#: Deepest REST book (``/api/v5/market/books?sz=``).
_MAX_BOOK_SIZE = 400
_CANDLE_ROW_MIN = 9

#: REST "weights" on a 1200-per-minute budget, from OKX's per-endpoint limits per 2 s:
#: candles, books and trades 40+ (1), history-candles and instruments 20 (2), time 10 (4).
_WEIGHT_CANDLES = 1
_WEIGHT_HISTORY_CANDLES = 2
_WEIGHT_TIME = 4

_PONG: list[ParsedItem] = [Pong()]
_ZERO = Decimal(0)


# ---- field converters --------------------------------------------------------------------


def _int_str(x: object) -> int:
    """An integer from a string of digits (OKX sends times and ids as strings)."""
    if type(x) is str and x.isdigit():
        return int(x)
    raise ValueError(f"expected a string of digits, got {_short(x)}")


def _list(x: object) -> list[Any]:
    if type(x) is list:
        return x
    raise TypeError(f"expected an array, got {_short(x)}")


def _levels(raw: object) -> tuple[BookLevel, ...]:
    """``[[price, size, "0", orders], ...]`` -> ``((price, size), ...)``."""
    out: list[BookLevel] = []
    append = out.append
    for level in _list(raw):
        if type(level) is not list or len(level) < 2:
            raise ValueError(f"expected a [price, size, ...] level, got {_short(level)}")
        append((_dec(level[0]), _dec(level[1])))
    return tuple(out)


@contextmanager
def _rest_errors(what: str) -> Iterator[None]:
    try:
        yield
    except MalformedFrame:
        raise
    except _PARSE_ERRORS as exc:
        raise MalformedFrame(f"{_NAME} {what}: {_describe(exc)}") from exc


def _rest_data(body: str | bytes, what: str) -> list[Any]:
    """The ``data`` array of a REST answer; `MalformedFrame` naming code and msg when
    ``code`` is not ``"0"`` (OKX answers most errors with HTTP 200)."""
    msg = orjson.loads(body)
    if type(msg) is not dict:
        raise TypeError(f"expected a JSON object, got {type(msg).__name__}")
    code = msg["code"]
    if code != "0":
        raise MalformedFrame(f"{_NAME} {what}: error {code}: {msg.get('msg', '')}")
    return _list(msg["data"])


def _is_derivative(inst_id: str) -> bool:
    """``BTC-USDT-SWAP``, ``BTC-USD-250627``... (spot ids have two parts)."""
    return inst_id.count("-") >= 2


# ---- checksum ----------------------------------------------------------------------------


def checksum_string(bids: Sequence[BookLevel], asks: Sequence[BookLevel]) -> str:
    """OKX's checksum input: ``bid1px:bid1sz:ask1px:ask1sz:bid2px:...`` over the best
    `CHECKSUM_LEVELS` levels a side (best first), skipping a shorter side's missing
    entries; numbers printed as they were received (``format(d, "f")`` of the Decimal)."""
    parts: list[str] = []
    for i in range(min(CHECKSUM_LEVELS, max(len(bids), len(asks)))):
        if i < len(bids):
            parts += (format(bids[i][0], "f"), format(bids[i][1], "f"))
        if i < len(asks):
            parts += (format(asks[i][0], "f"), format(asks[i][1], "f"))
    return ":".join(parts)


def book_checksum(bids: Sequence[BookLevel], asks: Sequence[BookLevel]) -> int:
    """CRC32 of `checksum_string` as a signed 32-bit integer, as OKX sends it."""
    crc = zlib.crc32(checksum_string(bids, asks).encode("ascii"))
    return crc - (1 << 32) if crc >= 1 << 31 else crc


class OkxBookRules:
    """OKX ``books``: each update's ``prevSeqId`` equals the previous message's ``seqId``;
    the CRC32 checksum of the top 25 levels is checked when it is not 0.

    Joining a REST snapshot (``seqId`` ``L``): an update with ``seqId < L`` is stale (unless
    it is a sequence reset, ``seqId < prevSeqId``, which is never stale); the first applied
    has ``prevSeqId <= L <= seqId`` (re-applying absolute sizes the snapshot already holds
    changes nothing), or, for a reset, ``prevSeqId == L``. Stream snapshots need no join.
    """

    __slots__ = ()

    name = "okx-seq"

    def stale(self, diff: DepthDiff, snapshot_id: int) -> bool:
        """``seqId < L`` for an update that is not a sequence reset."""
        prev = diff.prev_update_id
        seq = diff.final_update_id
        return seq < snapshot_id and (prev is None or prev <= seq)

    def bridges(self, diff: DepthDiff, snapshot_id: int) -> bool:
        """``prevSeqId <= L <= seqId`` (``prevSeqId == L`` for a reset)."""
        prev = diff.prev_update_id
        if prev is None:
            return False
        seq = diff.final_update_id
        if seq < prev:
            return prev == snapshot_id
        return prev <= snapshot_id <= seq

    def follows(self, previous: DepthDiff, diff: DepthDiff) -> str | None:
        """None if ``prevSeqId`` is the previous ``seqId``, else why not."""
        if diff.prev_update_id == previous.final_update_id:
            return None
        if (
            diff.prev_update_id == previous.prev_update_id
            and diff.final_update_id == previous.final_update_id
        ):
            return f"update seqId {diff.final_update_id} repeated"
        return f"prevSeqId {diff.prev_update_id} != previous seqId {previous.final_update_id}"

    def verify(self, book: OrderBook, diff: DepthDiff) -> str | None:
        """None if the checksum is absent or 0, or equals the book's; else why not."""
        expected = diff.checksum
        if not expected:
            return None
        bids, asks = book.top(CHECKSUM_LEVELS)
        got = book_checksum(bids, asks)
        if got == expected:
            return None
        return f"checksum {got} != {expected} at seqId {diff.final_update_id}"


_Handler = Callable[[dict[str, Any], dict[str, Any]], list[ParsedItem]]


class OkxAdapter(VenueAdapter):
    """OKX v5 public market data (``ws.okx.com:8443`` / ``www.okx.com``), spot and derivatives.

    Channels: ``kline_<interval>``, ``aggTrade``, ``depth`` and ``bookTicker`` (see the module
    docstring for what each maps to and why ``markPrice`` and ``continuousKline_*`` are not
    offered). Keep ``[ping] interval`` below 30 s.
    """

    name: ClassVar[str] = _NAME
    default_ws_url: ClassVar[str] = "wss://ws.okx.com:8443"
    default_rest_url: ClassVar[str] = "https://www.okx.com"
    ping_style: ClassVar[PingStyle] = PingStyle.APPLICATION
    limits: ClassVar[VenueLimits] = VenueLimits(
        # OKX states no hard cap per connection; it advises fewer than 30 channels per
        # connection for 400-level books (set [connection_pool] max_streams_per_connection
        # lower for many depth streams).
        max_streams_per_connection=1000,
        # No per-second cap is documented for public connections; subscribe requests are
        # limited to 480 per hour, which batching keeps to one per connection or change.
        max_outgoing_per_second=10,
        # A 400-level snapshot is ~40 kB; batched pushes stay far below this.
        max_message_size=4 * 1024 * 1024,
        # OKX documents no forced lifetime; rotate daily all the same.
        connection_lifetime=24 * 3600.0,
    )
    rest_weight_header: ClassVar[str | None] = None
    rest_weight_per_minute: ClassVar[int] = 1200
    #: ``history-candles`` pages of 100 (older copies of the docs cap it at 100).
    max_klines_per_request: ClassVar[int] = 100
    max_trades_per_request: ClassVar[int] = 500
    #: See the module docstring: tradeId skips by the fills a message aggregates.
    trade_ids_consecutive: ClassVar[bool] = False
    #: ``[ping] interval`` must stay below this (seconds).
    max_ping_interval: ClassVar[float] = MAX_PING_INTERVAL

    def configure(self, venue: VenueConfig) -> None:
        """OKX closes a connection that has been silent for 30 s: the application ping must
        come sooner, so a ``[ping] interval`` of 30 s or more is a config error."""
        interval = venue.ping.interval
        if interval >= self.max_ping_interval:
            raise ConfigError(
                f"ping.interval: okx closes a connection silent for "
                f"{self.max_ping_interval:g} s, so pings must come sooner (got {interval:g})"
            )

    def __init__(self) -> None:
        # Dispatch on ``arg.channel``: one dict lookup per frame.
        self._handlers: dict[str, _Handler] = {
            "trades": self._trades,
            "books": self._books,
            "bbo-tbt": self._bbo,
        }
        for channel, interval in _CANDLE_CHANNELS.items():
            self._handlers[channel] = self._candle_handler(interval)

    # ---- streams ------------------------------------------------------------------------

    def channels(self) -> Sequence[ChannelInfo]:
        """The channels OKX offers here, with the kline intervals it streams."""
        return (
            ChannelInfo(
                "kline_<interval>",
                "candles on /ws/v5/business (UTC bars from 6h; other intervals built from "
                "trades, without trade gap detection)",
                tuple(KLINE_BARS),
            ),
            ChannelInfo("aggTrade", "trades (tradeId skips: no gap detection)"),
            ChannelInfo("depth", "400-level book, snapshot then 100 ms updates (seqId chain)"),
            ChannelInfo("bookTicker", "best bid and ask (bbo-tbt, every 10 ms when changed)"),
        )

    def check_channel(self, channel: str) -> str | None:
        """None if ``channel`` is valid on OKX, else a one-line reason."""
        if channel in _PLAIN_CHANNELS:
            return None
        if channel.startswith("kline_"):
            interval = channel[len("kline_") :]
            if interval in KLINE_BARS or parse_interval(interval) is not None:
                return None  # streamed, or built from trades
            return (
                f"{channel}: {interval!r} is not a kline interval; {_NAME} streams {_INTERVAL_LIST}"
            )
        if channel.startswith("continuousKline_"):
            return f"{channel}: {_NAME} has no continuous-contract candles; use kline_<interval>"
        reason = _UNSUPPORTED.get(channel)
        if reason is not None:
            return reason
        reason = f"unknown channel {channel!r}; {_NAME} offers {_CHANNEL_LIST}"
        guess = difflib.get_close_matches(channel, [*_PLAIN_CHANNELS, "kline_1m"], n=1)
        if guess:
            reason += f" (did you mean {guess[0]!r}?)"
        return reason

    def stream(self, symbol: str, channel: str) -> StreamSpec:
        """The wire stream (``"<okx channel>:<instId>"``); ValueError for an invalid channel."""
        plain = _PLAIN_CHANNELS.get(channel)
        if plain is not None:
            okx_channel, route = plain
            return StreamSpec(symbol, channel, f"{okx_channel}:{symbol}", route)
        reason = self.check_channel(channel)
        if reason is not None:
            raise ValueError(reason)
        bar = KLINE_BARS.get(channel[len("kline_") :])
        if bar is None:
            return self.stream(symbol, "aggTrade")  # built from trades
        return StreamSpec(symbol, channel, f"candle{bar}:{symbol}", _BUSINESS)

    def built_interval(self, channel: str) -> str | None:
        """``kline_<interval>`` channels OKX has no bar for (``7m``, ``8h``...): their
        interval, built from trades; else None."""
        if channel.startswith("kline_"):
            interval = channel[len("kline_") :]
            if interval not in KLINE_BARS:
                return interval
        return None

    # ---- connections --------------------------------------------------------------------

    def connect_url(self, ws_url: str, route: str, streams: Sequence[StreamSpec]) -> str:
        """``<ws_url>/ws/v5/<route>``; ValueError if a stream belongs to another route."""
        wrong = [s.name for s in streams if s.route != route]
        if wrong:
            raise ValueError(f"streams not on route {route!r}: {', '.join(wrong)}")
        if route not in (_PUBLIC, _BUSINESS):
            raise ValueError(f"unknown okx route {route!r}")
        return f"{ws_url.rstrip('/')}/ws/v5/{route}"

    def open_messages(
        self, streams: Sequence[StreamSpec], first_request_id: int
    ) -> list[OutgoingMessage]:
        """Subscribe requests for ``streams`` (OKX's URL subscribes nothing by itself)."""
        return _requests("subscribe", streams, first_request_id)

    def subscribe(
        self, streams: Sequence[StreamSpec], first_request_id: int
    ) -> list[OutgoingMessage]:
        """Subscribe requests, as few as the 64 KB ``args`` limit allows."""
        return _requests("subscribe", streams, first_request_id)

    def unsubscribe(
        self, streams: Sequence[StreamSpec], first_request_id: int
    ) -> list[OutgoingMessage]:
        """Unsubscribe requests, as few as the 64 KB ``args`` limit allows."""
        return _requests("unsubscribe", streams, first_request_id)

    def app_ping(self) -> str | None:
        """The text ``ping`` (answered by the text ``pong``)."""
        return "ping"

    # ---- frames -------------------------------------------------------------------------

    def parse(self, frame: str | bytes) -> list[ParsedItem]:
        """Parse a push (``{"arg":..., "data":[...]}``), an event reply or ``pong``."""
        if frame == "pong" or frame == b"pong":
            return _PONG
        arg: Any = None
        try:
            msg = orjson.loads(frame)
            if type(msg) is not dict:
                raise TypeError(f"expected a JSON object, got {_short(msg)}")
            if "data" in msg:
                arg = msg["arg"]
                handler = self._handlers.get(arg["channel"])
                if handler is None:
                    raise MalformedFrame(f"{_NAME}: unknown channel {_short(arg['channel'])}")
                return handler(arg, msg)
            return _control(msg)
        except MalformedFrame:
            raise
        except _PARSE_ERRORS as exc:
            where = f"{_NAME} {_short(arg)}: " if arg is not None else f"{_NAME}: "
            raise MalformedFrame(where + _describe(exc)) from exc

    def _candle_handler(self, interval: str) -> _Handler:
        length = parse_interval(interval) if not interval.endswith("M") else None

        def candle(arg: dict[str, Any], msg: dict[str, Any]) -> list[ParsedItem]:
            inst = _str(arg["instId"])
            return [_kline(inst, interval, length, row, "ws", None) for row in _list(msg["data"])]

        return candle

    def _trades(self, arg: dict[str, Any], msg: dict[str, Any]) -> list[ParsedItem]:
        return [_trade(d, "ws") for d in _list(msg["data"])]

    def _books(self, arg: dict[str, Any], msg: dict[str, Any]) -> list[ParsedItem]:
        inst = _str(arg["instId"])
        action = msg["action"]
        if action == "snapshot":
            snapshot = True
        elif action == "update":
            snapshot = False
        else:
            raise ValueError(f"unknown books action {_short(action)}")
        out: list[ParsedItem] = []
        for d in _list(msg["data"]):
            seq = _int(d["seqId"])
            checksum = d.get("checksum")
            out.append(
                DepthDiff(
                    _NAME,
                    inst,
                    seq,
                    seq,
                    None if snapshot else _int(d["prevSeqId"]),
                    _int_str(d["ts"]),
                    _levels(d["bids"]),
                    _levels(d["asks"]),
                    snapshot,
                    None if checksum is None else _int(checksum),
                )
            )
        return out

    def _bbo(self, arg: dict[str, Any], msg: dict[str, Any]) -> list[ParsedItem]:
        inst = _str(arg["instId"])
        out: list[ParsedItem] = []
        for d in _list(msg["data"]):
            bids = _levels(d["bids"])
            asks = _levels(d["asks"])
            if not bids or not asks:
                continue  # a side without orders: nothing a BookTicker can say
            (bid, bid_qty), (ask, ask_qty) = bids[0], asks[0]
            out.append(
                BookTicker(
                    _NAME, inst, bid, bid_qty, ask, ask_qty, _int(d["seqId"]), _int_str(d["ts"])
                )
            )
        return out

    # ---- REST ---------------------------------------------------------------------------

    def server_time_request(self) -> RestRequest:
        """``GET /api/v5/public/time`` (10 requests per 2 s)."""
        return RestRequest("GET", "/api/v5/public/time", weight=_WEIGHT_TIME)

    def parse_server_time(self, body: str | bytes) -> int:
        """``ts`` in ms from a ``/api/v5/public/time`` body."""
        what = "/api/v5/public/time"
        with _rest_errors(what):
            return _int_str(_rest_data(body, what)[0]["ts"])

    def klines_request(
        self,
        symbol: str,
        interval: str,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = 100,
    ) -> RestRequest:
        """Candles of ``symbol`` opening in ``start_time..end_time`` (inclusive), or the
        latest ``limit`` without a start.

        OKX answers newest first and, when a range holds more than ``limit`` rows, the
        newest ``limit`` of them: a page from ``start_time`` would lose its oldest rows.
        So the range is cut to the ``limit`` buckets from ``start_time`` on before it is
        asked for (``before = start - 1``, ``after = end + 1``: both bounds are exclusive),
        and the page always holds the oldest rows of the gap. With a start the request goes
        to ``/api/v5/market/history-candles`` (any age; 100 rows), else to
        ``/api/v5/market/candles`` (the latest 1440 rows; up to 300).
        """
        bar = KLINE_BARS.get(interval)
        if bar is None:
            raise ValueError(f"okx has no {interval!r} candles; it streams {_INTERVAL_LIST}")
        params = [("instId", symbol), ("bar", bar)]
        if start_time is None:
            if not 1 <= limit <= 300:
                raise ValueError(f"candles limit must be 1..300, got {limit}")
            if end_time is not None:
                params.append(("after", str(end_time + 1)))
            params.append(("limit", str(limit)))
            return RestRequest("GET", "/api/v5/market/candles", tuple(params), _WEIGHT_CANDLES)
        if not 1 <= limit <= self.max_klines_per_request:
            raise ValueError(
                f"history-candles limit must be 1..{self.max_klines_per_request}, got {limit}"
            )
        # The open time of the ``limit``-th bucket from start_time: the page's last row.
        last = start_time
        for _ in range(limit - 1):
            last = close_time(last, interval) + 1
        end = last if end_time is None else min(end_time, last)
        params += [("after", str(end + 1)), ("before", str(start_time - 1))]
        params.append(("limit", str(limit)))
        return RestRequest(
            "GET", "/api/v5/market/history-candles", tuple(params), _WEIGHT_HISTORY_CANDLES
        )

    def parse_klines(
        self, body: str | bytes, symbol: str, interval: str, server_time: int
    ) -> list[Kline]:
        """Klines (source ``rest``) from a candles or history-candles body, oldest first.

        A row is closed when OKX marks it confirmed (``confirm`` ``"1"``) and its close time
        is before ``server_time``.
        """
        what = "/api/v5/market/candles"
        with _rest_errors(what):
            rows = _rest_data(body, what)
            length = parse_interval(interval) if not interval.endswith("M") else None
            out = [_kline(symbol, interval, length, row, "rest", server_time) for row in rows]
            out.sort(key=_open_time)
            return out

    def agg_trades_request(
        self,
        symbol: str,
        from_id: int | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = 500,
    ) -> RestRequest:
        """``GET /api/v5/market/trades``: the latest ``limit`` trades (up to 500).

        OKX cannot page trades forward from an id or a time (history-trades pages only
        backwards from the newest), so ``from_id`` and times raise ValueError; the keeper
        never asks (``trade_ids_consecutive`` is False).
        """
        if from_id is not None or start_time is not None or end_time is not None:
            raise ValueError("okx serves only the latest trades; it cannot page from an id/time")
        if not 1 <= limit <= 500:
            raise ValueError(f"trades limit must be 1..500, got {limit}")
        params = (("instId", symbol), ("limit", str(limit)))
        return RestRequest("GET", "/api/v5/market/trades", params, 1)

    def parse_agg_trades(self, body: str | bytes, symbol: str) -> list[Trade]:
        """Trades (source ``rest``) from a ``/api/v5/market/trades`` body, in id order."""
        what = "/api/v5/market/trades"
        with _rest_errors(what):
            trades = [_trade(d, "rest") for d in _rest_data(body, what)]
            trades.sort(key=_trade_id)
            return trades

    def exchange_info_request(self) -> RestRequest:
        """``GET /api/v5/public/instruments?instType=SWAP`` (the perpetual swaps)."""
        return RestRequest("GET", "/api/v5/public/instruments", (("instType", "SWAP"),), 2)

    def parse_listed_symbols(self, body: str | bytes) -> list[str]:
        """The instruments now trading (``state`` ``live``), in the body's order."""
        what = "/api/v5/public/instruments"
        with _rest_errors(what):
            out: list[str] = []
            for entry in _rest_data(body, what):
                if type(entry) is not dict:
                    raise TypeError(f"expected an instrument object: {_short(entry)}")
                name = _str(entry["instId"])
                if _str(entry["state"]) == "live":
                    out.append(name)
            return out

    # ---- order books --------------------------------------------------------------------

    def book_rules(self) -> SequenceRules:
        """The ``seqId``/``prevSeqId`` chain and the checksum (`OkxBookRules`)."""
        return OkxBookRules()

    def depth_request(self, symbol: str, limit: int = 400) -> RestRequest:
        """``GET /api/v5/market/books?sz=`` (at most 400 levels a side: larger asks get 400)."""
        size = max(1, min(limit, _MAX_BOOK_SIZE))
        return RestRequest(
            "GET", "/api/v5/market/books", (("instId", symbol), ("sz", str(size))), 1
        )

    def parse_depth(self, body: str | bytes, symbol: str) -> DepthDiff:
        """A ``/api/v5/market/books`` snapshot as a `DepthDiff` (``snapshot=True``) at its
        ``seqId``."""
        what = "/api/v5/market/books"
        with _rest_errors(what):
            d = _rest_data(body, what)[0]
            seq = _int(d["seqId"])
            return DepthDiff(
                _NAME,
                symbol,
                seq,
                seq,
                None,
                _int_str(d["ts"]),
                _levels(d["bids"]),
                _levels(d["asks"]),
                True,
            )


# ---- helpers of the parser ---------------------------------------------------------------


def _open_time(k: Kline) -> int:
    return k.open_time


def _trade_id(t: Trade) -> int:
    return t.id


def _kline(
    inst: str,
    interval: str,
    length: int | None,
    row: object,
    source: Source,
    server_time: int | None,
) -> Kline:
    """A candle row ``[ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm]``.

    ``server_time`` None (the stream): ``confirm`` alone says closed."""
    if type(row) is not list or len(row) < _CANDLE_ROW_MIN:
        raise ValueError(f"expected a candle row of {_CANDLE_ROW_MIN} items: {_short(row)}")
    open_time = _int_str(row[0])
    close = open_time + length - 1 if length is not None else close_time(open_time, interval)
    confirm = row[8]
    if confirm == "1":
        closed = server_time is None or close < server_time
    elif confirm == "0":
        closed = False
    else:
        raise ValueError(f"confirm must be '0' or '1', got {_short(confirm)}")
    vol, vol_ccy = _dec(row[5]), _dec(row[6])
    # Derivatives count ``vol`` in contracts; ``volCcy`` is their base-currency volume.
    volume = vol_ccy if _is_derivative(inst) else vol
    return Kline(
        _NAME,
        inst,
        interval,
        open_time,
        close,
        _dec(row[1]),
        _dec(row[2]),
        _dec(row[3]),
        _dec(row[4]),
        volume,
        _dec(row[7]),
        0,
        _ZERO,
        _ZERO,
        closed,
        source,
    )


def _trade(d: object, source: Source) -> Trade:
    if type(d) is not dict:
        raise TypeError(f"expected a trade object: {_short(d)}")
    trade_id = _int_str(d["tradeId"])
    count_raw = d.get("count")
    # The 2022 recording predates ``count``: one fill per message then.
    count = 1 if count_raw is None else _int_str(count_raw)
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    side = d["side"]
    if side == "buy":
        buyer_is_maker = False  # the taker bought
    elif side == "sell":
        buyer_is_maker = True
    else:
        raise ValueError(f"side must be 'buy' or 'sell', got {_short(side)}")
    return Trade(
        _NAME,
        _str(d["instId"]),
        trade_id,
        _dec(d["px"]),
        _dec(d["sz"]),
        trade_id - count + 1,
        trade_id,
        _int_str(d["ts"]),
        buyer_is_maker,
        source,
    )


def _request_id(raw: object) -> int | None:
    return int(raw) if type(raw) is str and raw.isdigit() else None


def _control(msg: dict[str, Any]) -> list[ParsedItem]:
    """An ``event`` reply: subscribe/unsubscribe acks, errors, notices."""
    event = _str(msg["event"])
    if event in ("subscribe", "unsubscribe"):
        request_id = _request_id(msg.get("id"))
        arg = msg.get("arg")
        if request_id is None:
            # Without an id (we always send one) nothing waits for it.
            return [Notice(f"{event}d {_short(arg)}")]
        return [Ack(request_id, arg)]
    if event == "error":
        return [RequestError(_request_id(msg.get("id")), str(msg["code"]), str(msg.get("msg", "")))]
    if event == "notice":
        code = str(msg.get("code", ""))
        text = str(msg.get("msg", ""))
        if code == "64008":
            return [ServerShutdown(None, f"{code}: {text}")]
        return [Notice(f"notice {code}: {text}")]
    return [Notice(f"{event}: {_short(msg)}")]


def _requests(
    op: str, streams: Sequence[StreamSpec], first_request_id: int
) -> list[OutgoingMessage]:
    """Requests carrying every stream, each with at most `MAX_ARGS_BYTES` of ``args``."""
    out: list[OutgoingMessage] = []
    request_id = first_request_id
    batch: list[dict[str, str]] = []
    names: list[str] = []
    size = 2  # the brackets of the args array

    def flush() -> None:
        nonlocal request_id, size
        text = orjson.dumps({"id": str(request_id), "op": op, "args": batch}).decode()
        out.append(OutgoingMessage(text, request_id, tuple(names)))
        request_id += 1
        batch.clear()
        names.clear()
        size = 2

    for spec in streams:
        channel, _, inst = spec.name.partition(":")
        arg = {"channel": channel, "instId": inst}
        arg_size = len(orjson.dumps(arg)) + 1  # and its comma
        if batch and size + arg_size > MAX_ARGS_BYTES:
            flush()
        batch.append(arg)
        names.append(spec.name)
        size += arg_size
    if batch:
        flush()
    return out
