"""The Bitget v2 adapters (``bitget-usdt-futures`` and ``bitget-spot``), all without I/O.

Both markets share one public WebSocket endpoint (``wss://ws.bitget.com/v2/ws/public``) and
one protocol; they differ in the ``instType`` of every subscription (``USDT-FUTURES`` /
``SPOT``), their REST paths and their listings. `BitgetUsdtFuturesAdapter` and
`BitgetSpotAdapter` are two small subclasses of one base.

Channels (the contract's names -> Bitget's):

* ``kline_<interval>``: ``candle1m``, ``candle5m``, ``candle15m``, ``candle30m``, ``candle1H``,
  ``candle4H`` and, for 6h and longer, the UTC-aligned ``candle6Hutc``, ``candle12Hutc``,
  ``candle1Dutc``, ``candle3Dutc``, ``candle1Wutc``, ``candle1Mutc`` (the plain ``candle1D``
  etc. are aligned to UTC+8). Every other valid interval (``1s``, ``3m``, ``2h``...) is built
  from trades.
* ``aggTrade``: the public ``trade`` channel (Bitget does not aggregate trades).
* ``depth``: ``books`` (every level: a snapshot on subscribe, then updates).
* ``bookTicker``: the ``ticker`` channel's best bid/ask; ``markPrice`` (futures only): the same
  ``ticker`` channel's mark, index and funding. Both channels are the one wire stream
  ``ticker:<symbol>``, so subscribing either delivers both event types.
* ``continuousKline_<interval>`` is not offered: Bitget has no continuous-contract candles
  (its USDT-FUTURES symbols are perpetual contracts already).

Candles carry no closed flag. A candle counts as closed when the frame's push time ``ts``
is at or past its end (the rows of a subscribe snapshot, and a final row the venue may push
after the bucket ended), or when an update frame of the same subscription brings a newer
candle: the last version seen is then re-emitted as closed. That version is final if the
venue pushed every change of it (pushes come every ~1 s while there are trades); if it missed
the last trades, the REST reconciliation finds the difference and revises the kline. This is
why the adapter holds a little state: per candle stream, the last open candle; reset by each
snapshot frame (a new subscription). Bitget candles have no trade count or taker volumes:
``trades``, ``taker_buy_volume`` and ``taker_buy_quote_volume`` are 0.

Trades. ``tradeId`` strings are numeric but not consecutive, so `trade_ids_consecutive` is
False: the feed cannot detect missed trades by id (no gap detection on ``aggTrade``; klines
built from trades have no completeness guarantee across disconnects either). Each `Trade`
has ``id = first_trade_id = last_trade_id = int(tradeId)``; ``buyer_is_maker`` is true when
the taker sold. The subscribe snapshot of the trade channel repeats recent trades: those
not newer than the last trade id seen on the symbol are dropped (assumes ``tradeId``
increases over time), which both avoids duplicates after a reconnect and recovers the
recent trades the snapshot holds.

Books. Every ``books`` frame has ``seq`` (documented: it increases with each change of the
book). Some third-party material also shows ``pseq`` (the previous frame's ``seq``): when
present it gives exact continuity (`BitgetBookRules`: ``pseq == previous seq``); when absent
the rules only check that ``seq`` increases, which catches duplicates and reordering but
not a lost frame: that is left to the CRC32 checksum (`book_checksum`, `checksum_mismatch`),
computed like OKX's over the top 25 levels with the original strings, verified only when the
frame's ``checksum`` is not 0 (a 0 checksum becomes ``DepthDiff.checksum = None``). A
``books`` frame without ``seq`` uses its ``ts`` as the id. REST depth has no sequence
number at all, so a REST snapshot is joined by time: its `DepthDiff` ids are ``-ts`` (a
negative id marks "a time, not a seq"), stream diffs at or before ``ts`` are contained in it
and the first later one bridges it. A ``book`` event right after such a join carries that
negative id until the next stream update.

Limits (Bitget's intro page): 10 messages per second per connection (pings included), at
most 1000 channels per connection but fewer than 50 recommended (the cap here), 240
subscribe requests per hour per connection (hence batching: one request carries as many
channels as fit in 4096 bytes), a text ``ping`` at least every 30 s (the server drops a
connection without one for 2 minutes), and a forced disconnect every 24 h.

Subscribe acknowledgements carry no request id: one ``{"event":"subscribe","arg":{...}}``
comes per channel. The adapter remembers which request each channel was part of and reports
`Ack` once every channel of a request is acknowledged (`RequestError` as soon as one fails).

Assumed where the documentation is silent: REST candle ``startTime`` is inclusive and a page
that would hold more than ``limit`` candles may be cut at either end (so requests never ask
for more buckets than ``limit``); ``fills-history`` answers newest first and cannot page
forward by id; the 3d and 1w UTC candles align like Binance's.
"""

from __future__ import annotations

import difflib
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, ClassVar

import orjson
from attrs import define, evolve

from ..core.intervals import next_open
from ..errors import MalformedFrame
from ..events import BookLevel, DepthDiff, Kline, MarkPrice, Source, Trade
from ..events import BookTicker as BookTickerEvent
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
from .book_rules import SequenceRules
from .fields import PARSE_ERRORS as _PARSE_ERRORS
from .fields import as_str as _str
from .fields import dec as _dec
from .fields import describe as _describe
from .fields import short as _short

__all__ = [
    "CANDLE_CHANNELS",
    "CHECKSUM_LEVELS",
    "KLINE_INTERVALS",
    "MAX_REQUEST_BYTES",
    "BitgetBookRules",
    "BitgetSpotAdapter",
    "BitgetUsdtFuturesAdapter",
    "book_checksum",
    "checksum_mismatch",
]

#: Contract kline interval -> Bitget candle channel (UTC-aligned variants from 6h on).
CANDLE_CHANNELS: dict[str, str] = {
    "1m": "candle1m",
    "5m": "candle5m",
    "15m": "candle15m",
    "30m": "candle30m",
    "1h": "candle1H",
    "4h": "candle4H",
    "6h": "candle6Hutc",
    "12h": "candle12Hutc",
    "1d": "candle1Dutc",
    "3d": "candle3Dutc",
    "1w": "candle1Wutc",
    "1M": "candle1Mutc",
}
#: The kline intervals Bitget streams (others are built from trades).
KLINE_INTERVALS: tuple[str, ...] = tuple(CANDLE_CHANNELS)
_INTERVAL_OF_CHANNEL = {channel: interval for interval, channel in CANDLE_CHANNELS.items()}
_INTERVAL_LIST = ", ".join(KLINE_INTERVALS)
#: REST ``granularity`` per interval: futures spell them like the channels, spot differently.
_FUTURES_GRANULARITY = {i: c.removeprefix("candle") for i, c in CANDLE_CHANNELS.items()}
_SPOT_GRANULARITY = {
    **_FUTURES_GRANULARITY,
    "1m": "1min",
    "5m": "5min",
    "15m": "15min",
    "30m": "30min",
    "1h": "1h",
    "4h": "4h",
}

#: Levels per side that the ``books`` checksum covers.
CHECKSUM_LEVELS = 25
#: Bitget: "the total length of multiple channels cannot exceed 4096 bytes at a time".
MAX_REQUEST_BYTES = 4096
_OK = "00000"  # REST success code
_ROUTE = "public"
_WS_PATH = "/v2/ws/public"
_MAX_KLINES = 1000
_MAX_TRADES = 1000
#: A month is at least 28 days: clamping a page of ``1M`` candles with it never asks for more.
_MIN_MONTH_MS = 28 * 86_400_000


# ---- field converters ------------------------------------------------------------------


def _dec_loose(x: object) -> Decimal:
    """A decimal string, or a JSON number (REST merge-depth prints numbers): via its repr,
    which is the shortest text of the same float, never the binary expansion."""
    if type(x) is int or type(x) is float:
        d = Decimal(repr(x))
        if d.is_finite():
            return d
        raise ValueError(f"not a finite number: {_short(x)}")
    return _dec(x)


def _int(x: object) -> int:
    """A JSON integer or a string of digits (Bitget prints times both ways)."""
    if type(x) is int:
        return x
    if type(x) is str and x.lstrip("-").isdigit():
        return int(x)
    raise TypeError(f"expected an integer, got {_short(x)}")


def _levels(raw: object, dec: Callable[[object], Decimal] = _dec) -> tuple[BookLevel, ...]:
    """``[[price, size], ...]`` -> tuple of ``(Decimal, Decimal)``."""
    if type(raw) is not list:
        raise TypeError(f"expected a list of [price, size] levels, got {type(raw).__name__}")
    out: list[BookLevel] = []
    for level in raw:
        if type(level) is not list or len(level) < 2:
            raise ValueError(f"expected a [price, size] level, got {_short(level)}")
        out.append((dec(level[0]), dec(level[1])))
    return tuple(out)


# ---- the order-book checksum and continuity -------------------------------------------


def _text(d: Decimal) -> str:
    # Fixed-point keeps the exchange's digits: str() would print 0.00000001 as 1E-8.
    return format(d, "f")


def book_checksum(
    bids: Sequence[BookLevel], asks: Sequence[BookLevel], levels: int = CHECKSUM_LEVELS
) -> int:
    """Bitget's (and OKX's) ``books`` checksum of a book, best levels first on each side:
    CRC32 of ``bid1px:bid1sz:ask1px:ask1sz:bid2px:...`` over the top ``levels`` of each side
    (a shorter side just ends early), as a signed 32-bit integer.

    Prices and sizes must be the Decimals parsed from the exchange's strings (their exponent
    keeps ``"0.5000"`` distinct from ``"0.5"``, which the checksum depends on).
    """
    parts: list[str] = []
    for i in range(min(levels, max(len(bids), len(asks)))):
        if i < len(bids):
            parts += (_text(bids[i][0]), _text(bids[i][1]))
        if i < len(asks):
            parts += (_text(asks[i][0]), _text(asks[i][1]))
    crc = zlib.crc32(":".join(parts).encode("ascii"))
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def checksum_mismatch(
    diff: DepthDiff, bids: Sequence[BookLevel], asks: Sequence[BookLevel]
) -> str | None:
    """Why the book (best levels first, after ``diff`` was applied) fails ``diff``'s checksum,
    or None if it matches or ``diff`` has none to verify (``checksum`` None: the frame said 0).
    """
    expected = diff.checksum
    if expected is None:
        return None
    got = book_checksum(bids, asks)
    if got == expected:
        return None
    return f"checksum {got} != {expected} at seq {diff.final_update_id}"


class BitgetBookRules:
    """Bitget ``books`` continuity (ids are ``seq``; a REST snapshot's id is ``-ts``).

    * After a stream snapshot (id ``L`` = its ``seq``): a diff with ``seq <= L`` is stale; the
      first applied has ``pseq == L`` (when ``pseq`` is present) or just ``seq > L``.
    * After a REST snapshot (id ``-T``, ``T`` its engine time): diffs with ``ts <= T`` are
      in it; the first with ``ts > T`` bridges it (quantities are absolute, so a diff whose
      window straddles ``T`` is still right to apply whole).
    * Then each diff follows its predecessor: ``pseq == previous seq`` when present, else
      ``seq > previous seq`` (a lost frame is then only caught by the checksum).
    """

    __slots__ = ()

    name = "bitget-seq"

    def stale(self, diff: DepthDiff, snapshot_id: int) -> bool:
        """The snapshot already contains ``diff``."""
        if snapshot_id < 0:
            return diff.time <= -snapshot_id
        return diff.final_update_id <= snapshot_id

    def bridges(self, diff: DepthDiff, snapshot_id: int) -> bool:
        """``diff`` may be the first applied on top of the snapshot."""
        if snapshot_id < 0:
            return diff.time > -snapshot_id
        if diff.prev_update_id is not None:
            return diff.prev_update_id == snapshot_id
        return diff.final_update_id > snapshot_id

    def follows(self, previous: DepthDiff, diff: DepthDiff) -> str | None:
        """None if ``diff`` continues right after ``previous``, else why not."""
        if diff.prev_update_id is not None:
            if diff.prev_update_id == previous.final_update_id:
                return None
            return f"pseq {diff.prev_update_id} != previous seq {previous.final_update_id}"
        if diff.final_update_id > previous.final_update_id:
            return None
        return f"seq {diff.final_update_id} not above previous seq {previous.final_update_id}"


_RULES: SequenceRules = BitgetBookRules()  # mypy proves the protocol is met


# ---- the adapters -----------------------------------------------------------------------


@define(slots=True, eq=False)
class _Batch:
    """One (un)subscribe request waiting for the per-channel acknowledgements."""

    request_id: int
    remaining: set[tuple[str, str]]


_Handler = Callable[[str, str, str | None, list[Any], int | None], list[ParsedItem]]


class _BitgetAdapter(VenueAdapter):
    """What both Bitget markets share (see the module docstring)."""

    #: ``instType`` of every subscription.
    inst_type: ClassVar[str]
    #: Bitget trade ids are not consecutive: no gap detection by id (see the module docstring).
    trade_ids_consecutive: ClassVar[bool] = False
    default_ws_url: ClassVar[str] = "wss://ws.bitget.com"
    default_rest_url: ClassVar[str] = "https://api.bitget.com"
    ping_style: ClassVar[PingStyle] = PingStyle.APPLICATION
    limits: ClassVar[VenueLimits] = VenueLimits(
        # 1000 allowed, "less than 50" recommended for stability: plan with the latter.
        max_streams_per_connection=50,
        max_outgoing_per_second=10,
        # A full-depth ``books`` snapshot of a busy symbol is a few hundred kB.
        max_message_size=4 * 1024 * 1024,
        connection_lifetime=24 * 3600.0,
    )
    rest_weight_header: ClassVar[str | None] = None
    #: Market endpoints allow 10-20 requests/s per IP; each request is weight 1 here, and
    #: 600 a minute keeps under the strictest (``fills-history``, 10/s).
    rest_weight_per_minute: ClassVar[int] = 600
    max_klines_per_request: ClassVar[int] = _MAX_KLINES
    max_trades_per_request: ClassVar[int] = _MAX_TRADES

    _has_mark_price: ClassVar[bool]
    _granularity: ClassVar[dict[str, str]]
    _candles_path: ClassVar[str]
    _fills_path: ClassVar[str]
    _depth_path: ClassVar[str]
    _listing_path: ClassVar[str]
    #: Extra query parameters of every market REST request (futures: ``productType``).
    _market_params: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self) -> None:
        self._handlers: dict[str, _Handler] = {
            "trade": self._trades,
            "books": self._books,
            "ticker": self._ticker,
        }
        for channel in CANDLE_CHANNELS.values():
            self._handlers[channel] = self._candles
        # Requests waiting for acknowledgements, by (event, channel, instId).
        self._pending: dict[tuple[str, str, str], _Batch] = {}
        # Per (symbol, interval): the last open candle seen on the current subscription.
        self._open_candles: dict[tuple[str, str], Kline] = {}
        # Per symbol: the newest trade id seen (to drop what a trade snapshot repeats).
        self._last_trade: dict[str, int] = {}
        self._plain: dict[str, str] = {
            "aggTrade": "trade",
            "depth": "books",
            "bookTicker": "ticker",
        }
        if self._has_mark_price:
            self._plain["markPrice"] = "ticker"

    # ---- streams ------------------------------------------------------------------------

    def channels(self) -> Sequence[ChannelInfo]:
        """The channels this Bitget market offers."""
        out = [
            ChannelInfo(
                "kline_<interval>",
                "candlesticks (other intervals, e.g. 1s or 3m, built from trades)",
                KLINE_INTERVALS,
            ),
            ChannelInfo("aggTrade", "public trades (not aggregated; ids not consecutive)"),
            ChannelInfo("depth", "full order book: snapshot, then updates (kept as a local book)"),
            ChannelInfo("bookTicker", "best bid and ask, from the ticker channel"),
        ]
        if self._has_mark_price:
            out.append(ChannelInfo("markPrice", "mark price, index and funding (ticker channel)"))
        return out

    def check_channel(self, channel: str) -> str | None:
        """None if ``channel`` is valid here, else a one-line reason."""
        if channel in self._plain:
            return None
        if channel.startswith("kline_"):
            interval = channel[len("kline_") :]
            if interval in CANDLE_CHANNELS or parse_interval(interval) is not None:
                return None  # streamed, or built from trades
            return (
                f"{channel}: {interval!r} is not a kline interval; "
                f"{self.name} streams {_INTERVAL_LIST}"
            )
        if channel.startswith("continuousKline_"):
            return (
                f"{channel}: {self.name} has no continuous-contract candles (use kline_<interval>)"
            )
        if channel == "markPrice":
            return f"markPrice: {self.name} is a spot market and has no mark price"
        known = [*self._plain, *(f"kline_{i}" for i in KLINE_INTERVALS)]
        reason = f"unknown channel {channel!r}; {self.name} offers kline_<interval>, " + ", ".join(
            self._plain
        )
        guess = difflib.get_close_matches(channel, known, n=1, cutoff=0.75)
        if guess:
            reason += f" (did you mean {guess[0]!r}?)"
        return reason

    def stream(self, symbol: str, channel: str) -> StreamSpec:
        """The wire stream ``<bitget channel>:<symbol>``; ValueError for an invalid channel."""
        wire = self._plain.get(channel)
        if wire is not None:
            # markPrice and bookTicker share one stream: its name must be the same for both.
            return StreamSpec(
                symbol, "bookTicker" if wire == "ticker" else channel, f"{wire}:{symbol}", _ROUTE
            )
        reason = self.check_channel(channel)
        if reason is not None:
            raise ValueError(reason)
        interval = channel[len("kline_") :]
        candle = CANDLE_CHANNELS.get(interval)
        if candle is None:
            return self.stream(symbol, "aggTrade")  # built from trades
        return StreamSpec(symbol, channel, f"{candle}:{symbol}", _ROUTE)

    def built_interval(self, channel: str) -> str | None:
        """The interval of a ``kline_<interval>`` channel Bitget does not stream, else None."""
        if channel.startswith("kline_"):
            interval = channel[len("kline_") :]
            if interval not in CANDLE_CHANNELS:
                return interval
        return None

    # ---- connections --------------------------------------------------------------------

    def connect_url(self, ws_url: str, route: str, streams: Sequence[StreamSpec]) -> str:
        """``<ws_url>/v2/ws/public`` (subscriptions are sent after connecting)."""
        wrong = [s.name for s in streams if s.route != route]
        if route != _ROUTE or wrong:
            raise ValueError(f"{self.name} has only the {_ROUTE!r} route: {', '.join(wrong)}")
        return ws_url.rstrip("/") + _WS_PATH

    def open_messages(
        self, streams: Sequence[StreamSpec], first_request_id: int
    ) -> list[OutgoingMessage]:
        """Subscribe requests for ``streams`` (see `subscribe`)."""
        return self.subscribe(streams, first_request_id)

    def subscribe(
        self, streams: Sequence[StreamSpec], first_request_id: int
    ) -> list[OutgoingMessage]:
        """``{"op":"subscribe","args":[...]}`` requests, each within `MAX_REQUEST_BYTES`."""
        return self._requests("subscribe", streams, first_request_id)

    def unsubscribe(
        self, streams: Sequence[StreamSpec], first_request_id: int
    ) -> list[OutgoingMessage]:
        """``{"op":"unsubscribe","args":[...]}`` requests, each within `MAX_REQUEST_BYTES`."""
        return self._requests("unsubscribe", streams, first_request_id)

    def _requests(
        self, op: str, streams: Sequence[StreamSpec], first_request_id: int
    ) -> list[OutgoingMessage]:
        out: list[OutgoingMessage] = []
        request_id = first_request_id
        batch: list[tuple[str, dict[str, str]]] = []

        def flush() -> None:
            nonlocal request_id, batch
            if not batch:
                return
            text = orjson.dumps({"op": op, "args": [arg for _, arg in batch]}).decode()
            names = tuple(name for name, _ in batch)
            keys = {(arg["channel"], arg["instId"]) for _, arg in batch}
            pending = _Batch(request_id, set(keys))
            for channel, inst in keys:
                self._pending[(op, channel, inst)] = pending
            out.append(OutgoingMessage(text, request_id, names))
            request_id += 1
            batch = []

        size = len(op) + 24  # {"op":"...","args":[]}
        for spec in streams:
            channel, _, inst = spec.name.partition(":")
            arg = {"instType": self.inst_type, "channel": channel, "instId": inst}
            cost = len(orjson.dumps(arg)) + 1
            if batch and size + cost > MAX_REQUEST_BYTES:
                flush()
                size = len(op) + 24
            batch.append((spec.name, arg))
            size += cost
        flush()
        return out

    def app_ping(self) -> str | None:
        """The text ``ping`` (answered by ``pong``)."""
        return "ping"

    # ---- frames -------------------------------------------------------------------------

    def parse(self, frame: str | bytes) -> list[ParsedItem]:
        """Parse a push (``{"action","arg","data","ts"}``), a control reply or ``pong``."""
        if frame == "pong" or frame == b"pong":
            return [Pong()]
        channel: str | None = None
        try:
            msg = orjson.loads(frame)
            if type(msg) is not dict:
                raise TypeError(f"expected a JSON object, got {type(msg).__name__}")
            if "event" in msg:
                return self._control(msg)
            if "op" in msg:
                # The documented unsubscribe answer echoes the request: each arg is an ack.
                out: list[ParsedItem] = []
                for arg in msg["args"]:
                    out += self._control({"event": _str(msg["op"]), "arg": arg})
                return out
            arg = msg["arg"]
            channel = _str(arg["channel"])
            handler = self._handlers.get(channel)
            if handler is None:
                raise MalformedFrame(f"{self.name}: unknown channel {_short(channel)}")
            data = msg["data"]
            if type(data) is not list:
                raise TypeError(f"'data' is not an array: {_short(data)}")
            ts = msg.get("ts")
            return handler(
                channel,
                _str(arg["instId"]),
                msg.get("action"),
                data,
                None if ts is None else _int(ts),
            )
        except MalformedFrame:
            raise
        except _PARSE_ERRORS as exc:
            where = f"{self.name} {channel}: " if channel else f"{self.name}: "
            raise MalformedFrame(where + _describe(exc)) from exc

    def _control(self, msg: dict[str, Any]) -> list[ParsedItem]:
        event = _str(msg["event"])
        arg = msg.get("arg")
        key: tuple[str, str] | None = None
        if type(arg) is dict:
            key = (_str(arg.get("channel", "")), _str(arg.get("instId", "")))
        if event in ("subscribe", "unsubscribe"):
            if key is None:
                raise ValueError(f"{event} acknowledgement without an arg")
            batch = self._pending.pop((event, *key), None)
            if batch is None:
                return []  # not ours to wait for (e.g. the request of a socket since closed)
            batch.remaining.discard(key)
            if batch.remaining:
                return []
            return [Ack(batch.request_id)]
        if event == "error":
            code, text = str(msg.get("code", "")), str(msg.get("msg", ""))
            batch = None
            if key is not None:
                for op in ("subscribe", "unsubscribe"):
                    batch = self._pending.pop((op, *key), None)
                    if batch is not None:
                        # The request failed: none of its channels is waited for any more.
                        for other in batch.remaining:
                            self._pending.pop((op, *other), None)
                        break
            return [RequestError(None if batch is None else batch.request_id, code, text)]
        return [Notice(f"{self.name} {event}: {_short(msg)}")]

    def _candles(
        self, channel: str, symbol: str, action: str | None, rows: list[Any], ts: int | None
    ) -> list[ParsedItem]:
        interval = _INTERVAL_OF_CHANNEL[channel]
        key = (symbol, interval)
        klines = sorted(
            (self._candle(symbol, interval, row, ts) for row in rows), key=lambda k: k.open_time
        )
        held = None if action == "snapshot" else self._open_candles.get(key)
        out: list[ParsedItem] = []
        for k in klines:
            if held is not None and k.open_time > held.open_time:
                # A newer candle proves the held one ended: its last version is the final one.
                out.append(evolve(held, closed=True))
                held = None
            if held is not None and k.open_time == held.open_time:
                held = None
            out.append(k)
            if not k.closed and (held is None or k.open_time >= held.open_time):
                held = k
        if held is None:
            self._open_candles.pop(key, None)
        else:
            self._open_candles[key] = held
        return out

    def _candle(self, symbol: str, interval: str, row: Any, ts: int | None) -> Kline:
        if type(row) is not list or len(row) < 7:
            raise ValueError(f"expected a candle row of at least 7 items: {_short(row)}")
        open_time = _int(row[0])
        end = next_open(open_time, interval)
        return Kline(
            self.name,
            symbol,
            interval,
            open_time,
            end - 1,
            _dec(row[1]),
            _dec(row[2]),
            _dec(row[3]),
            _dec(row[4]),
            _dec(row[5]),
            _dec(row[6]),
            0,
            _ZERO,
            _ZERO,
            ts is not None and ts >= end,
        )

    def _trades(
        self, channel: str, symbol: str, action: str | None, rows: list[Any], ts: int | None
    ) -> list[ParsedItem]:
        trades = sorted(
            (self._trade(symbol, row, "ws") for row in rows), key=lambda t: (t.time, t.id)
        )
        last = self._last_trade.get(symbol)
        if action == "snapshot" and last is not None:
            trades = [t for t in trades if t.id > last]
        if trades:
            newest = max(t.id for t in trades)
            if last is None or newest > last:
                self._last_trade[symbol] = newest
        return list(trades)

    def _trade(self, symbol: str, row: Any, source: Source) -> Trade:
        if type(row) is not dict:
            raise TypeError(f"expected a trade object: {_short(row)}")
        trade_id = _int(row["tradeId"])
        return Trade(
            self.name,
            symbol,
            trade_id,
            _dec(row["price"]),
            _dec(row["size"]),
            trade_id,
            trade_id,
            _int(row["ts"]),
            _str(row["side"]).lower() == "sell",
            source,
        )

    def _books(
        self, channel: str, symbol: str, action: str | None, rows: list[Any], ts: int | None
    ) -> list[ParsedItem]:
        out: list[ParsedItem] = []
        snapshot = action == "snapshot"
        for d in rows:
            if type(d) is not dict:
                raise TypeError(f"expected a book object: {_short(d)}")
            time = _int(d["ts"])
            seq = d.get("seq")
            uid = time if seq is None else _int(seq)
            pseq = d.get("pseq")
            checksum = d.get("checksum", 0)
            if type(checksum) is str:
                checksum = _int(checksum)
            elif type(checksum) is not int:
                raise TypeError(f"checksum is not an integer: {_short(checksum)}")
            out.append(
                DepthDiff(
                    self.name,
                    symbol,
                    uid,
                    uid,
                    None if pseq is None or snapshot else _int(pseq),
                    time,
                    _levels(d["bids"]),
                    _levels(d["asks"]),
                    snapshot,
                    checksum or None,
                )
            )
        return out

    def _ticker(
        self, channel: str, symbol: str, action: str | None, rows: list[Any], ts: int | None
    ) -> list[ParsedItem]:
        out: list[ParsedItem] = []
        for d in rows:
            if type(d) is not dict:
                raise TypeError(f"expected a ticker object: {_short(d)}")
            time = _int(d["ts"])
            if d.get("bidPr") and d.get("askPr"):
                out.append(
                    BookTickerEvent(
                        self.name,
                        symbol,
                        _dec(d["bidPr"]),
                        _dec(d["bidSz"]),
                        _dec(d["askPr"]),
                        _dec(d["askSz"]),
                        time,  # Bitget's ticker has no update id: its time stands in
                        time,
                    )
                )
            if self._has_mark_price and d.get("markPrice"):
                out.append(
                    MarkPrice(
                        self.name,
                        symbol,
                        _dec(d["markPrice"]),
                        _dec(d["indexPrice"]),
                        _dec(d["fundingRate"]),
                        _int(d["nextFundingTime"]),
                        time,
                    )
                )
        return out

    # ---- REST ---------------------------------------------------------------------------

    @contextmanager
    def _rest_errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except MalformedFrame:
            raise
        except _PARSE_ERRORS as exc:
            raise MalformedFrame(f"{self.name} {what}: {_describe(exc)}") from exc

    def _rest_data(self, body: str | bytes, what: str) -> Any:
        """The ``data`` of a Bitget envelope; `MalformedFrame` naming code and msg when the
        ``code`` is not ``"00000"``."""
        msg = orjson.loads(body)
        if type(msg) is not dict:
            raise TypeError(f"expected a JSON object, got {type(msg).__name__}")
        code = msg.get("code")
        if code != _OK:
            raise MalformedFrame(f"{self.name} {what}: error {code}: {msg.get('msg', '')}")
        return msg["data"]

    def server_time_request(self) -> RestRequest:
        """``GET /api/v2/public/time``."""
        return RestRequest("GET", "/api/v2/public/time")

    def parse_server_time(self, body: str | bytes) -> int:
        """``data.serverTime`` in ms."""
        with self._rest_errors("/api/v2/public/time"):
            return _int(self._rest_data(body, "/api/v2/public/time")["serverTime"])

    def klines_request(
        self,
        symbol: str,
        interval: str,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = _MAX_KLINES,
    ) -> RestRequest:
        """``GET .../market/candles``. With a ``start_time`` the range is clamped to ``limit``
        buckets, so a page never needs cutting: it is the first ``limit`` candles from
        ``start_time`` on, whichever end the venue would cut. Without times, the latest."""
        if not 1 <= limit <= _MAX_KLINES:
            raise ValueError(f"candles limit must be 1..{_MAX_KLINES}, got {limit}")
        granularity = self._granularity.get(interval)
        if granularity is None:
            raise ValueError(f"{self.name} has no {interval!r} candles over REST")
        params = [("symbol", symbol), *self._market_params, ("granularity", granularity)]
        if start_time is not None:
            step = _MIN_MONTH_MS if interval.endswith("M") else parse_interval(interval) or 0
            last_open = start_time + (limit - 1) * step
            # The end is the close of the last wanted bucket: inclusive or exclusive, the
            # venue then never counts the bucket after it.
            clamp = next_open(last_open, interval) - 1
            end_time = clamp if end_time is None else min(end_time, clamp)
            params.append(("startTime", str(start_time)))
        if end_time is not None:
            params.append(("endTime", str(end_time)))
        params.append(("limit", str(limit)))
        return RestRequest("GET", self._candles_path, tuple(params))

    def parse_klines(
        self, body: str | bytes, symbol: str, interval: str, server_time: int
    ) -> list[Kline]:
        """Candles oldest first (whatever order the body has), one per open time; closed when
        their close time is before ``server_time``."""
        what = self._candles_path
        with self._rest_errors(what):
            rows = self._rest_data(body, what)
            if type(rows) is not list:
                raise TypeError(f"'data' is not an array: {_short(rows)}")
            by_time: dict[int, Kline] = {}
            for row in rows:
                k = self._rest_candle(symbol, interval, row, server_time)
                by_time[k.open_time] = k
            return [by_time[t] for t in sorted(by_time)]

    def _rest_candle(self, symbol: str, interval: str, row: Any, server_time: int) -> Kline:
        k = self._candle(symbol, interval, row, None)
        return evolve(
            k,
            quote_volume=_dec(row[self._quote_column]),
            closed=k.close_time < server_time,
            source="rest",
        )

    #: Column of the quote-currency volume in a REST candle row.
    _quote_column: ClassVar[int] = 6

    def agg_trades_request(
        self,
        symbol: str,
        from_id: int | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = _MAX_TRADES,
    ) -> RestRequest:
        """``GET .../market/fills-history`` (last 90 days, a window of at most 7 days).

        Bitget pages only backwards (``idLessThan``): ``from_id`` cannot be sent, so it asks
        for the latest ``limit`` trades (what the caller already has is dropped by the
        sequencer). With times, the trades in that window; the venue answers newest first,
        so a full page may lack the window's oldest trades.
        """
        if not 1 <= limit <= _MAX_TRADES:
            raise ValueError(f"fills limit must be 1..{_MAX_TRADES}, got {limit}")
        if from_id is not None and (start_time is not None or end_time is not None):
            raise ValueError("fills: use from_id or start_time/end_time, not both")
        params = [("symbol", symbol), *self._market_params]
        if start_time is not None:
            params.append(("startTime", str(start_time)))
        if end_time is not None:
            params.append(("endTime", str(end_time)))
        params.append(("limit", str(limit)))
        return RestRequest("GET", self._fills_path, tuple(params))

    def parse_agg_trades(self, body: str | bytes, symbol: str) -> list[Trade]:
        """Trades (source ``rest``) oldest first, from a ``fills-history`` body."""
        what = self._fills_path
        with self._rest_errors(what):
            rows = self._rest_data(body, what)
            if type(rows) is not list:
                raise TypeError(f"'data' is not an array: {_short(rows)}")
            trades = [self._trade(symbol, row, "rest") for row in rows]
            return sorted(trades, key=lambda t: (t.time, t.id))

    def book_rules(self) -> SequenceRules:
        """`BitgetBookRules`."""
        return _RULES

    def parse_depth(self, body: str | bytes, symbol: str) -> DepthDiff:
        """A REST book as a `DepthDiff` snapshot whose ids are ``-ts`` (it has no ``seq``:
        `BitgetBookRules` joins it by time)."""
        what = self._depth_path
        with self._rest_errors(what):
            data = self._rest_data(body, what)
            time = _int(data["ts"])
            return DepthDiff(
                self.name,
                symbol,
                -time,
                -time,
                None,
                time,
                _levels(data["bids"], _dec_loose),
                _levels(data["asks"], _dec_loose),
                True,
            )

    def verify_book(
        self, diff: DepthDiff, bids: Sequence[BookLevel], asks: Sequence[BookLevel]
    ) -> str | None:
        """`checksum_mismatch` of the book after ``diff`` (for the book keeper's checks)."""
        return checksum_mismatch(diff, bids, asks)

    def exchange_info_request(self) -> RestRequest:
        """The venue's instrument list."""
        return RestRequest("GET", self._listing_path, self._market_params)

    def _listed(self, entry: dict[str, Any]) -> bool:
        raise NotImplementedError

    def parse_listed_symbols(self, body: str | bytes) -> list[str]:
        """The symbols trading now, in the body's order."""
        what = self._listing_path
        with self._rest_errors(what):
            rows = self._rest_data(body, what)
            if type(rows) is not list:
                raise TypeError(f"'data' is not an array: {_short(rows)}")
            out: list[str] = []
            for entry in rows:
                if type(entry) is not dict:
                    raise TypeError(f"expected a symbol object: {_short(entry)}")
                name = _str(entry["symbol"])
                if self._listed(entry):
                    out.append(name)
            return out


_ZERO = Decimal(0)


class BitgetUsdtFuturesAdapter(_BitgetAdapter):
    """Bitget USDT-M perpetual futures (``instType`` ``USDT-FUTURES``).

    Channels: ``kline_<interval>``, ``aggTrade`` (``trade``), ``depth`` (``books``),
    ``bookTicker`` and ``markPrice`` (both from ``ticker``). Gap detection: klines yes
    (open times), books yes (``seq``/``pseq``, checksum), trades no (ids not consecutive).
    """

    name: ClassVar[str] = "bitget-usdt-futures"
    inst_type: ClassVar[str] = "USDT-FUTURES"
    _has_mark_price: ClassVar[bool] = True
    _granularity: ClassVar[dict[str, str]] = _FUTURES_GRANULARITY
    _candles_path: ClassVar[str] = "/api/v2/mix/market/candles"
    _fills_path: ClassVar[str] = "/api/v2/mix/market/fills-history"
    _depth_path: ClassVar[str] = "/api/v2/mix/market/merge-depth"
    _listing_path: ClassVar[str] = "/api/v2/mix/market/contracts"
    _market_params: ClassVar[tuple[tuple[str, str], ...]] = (("productType", "USDT-FUTURES"),)

    def depth_request(self, symbol: str, limit: int = 1000) -> RestRequest:
        """``GET /api/v2/mix/market/merge-depth`` unmerged (``scale0``); ``limit`` 1, 5, 15,
        50 or, above 50, ``max`` (every level the venue serves)."""
        if limit < 1:
            raise ValueError(f"depth limit must be positive, got {limit}")
        size = next((str(n) for n in (1, 5, 15, 50) if limit <= n), "max")
        return RestRequest(
            "GET",
            self._depth_path,
            (("symbol", symbol), *self._market_params, ("precision", "scale0"), ("limit", size)),
        )

    def _listed(self, entry: dict[str, Any]) -> bool:
        # Perpetuals trading normally; delivery contracts and other states are left out.
        return _str(entry["symbolStatus"]) == "normal" and _str(entry["symbolType"]) == "perpetual"


class BitgetSpotAdapter(_BitgetAdapter):
    """Bitget spot (``instType`` ``SPOT``).

    Channels: ``kline_<interval>``, ``aggTrade`` (``trade``), ``depth`` (``books``) and
    ``bookTicker`` (``ticker``); no ``markPrice`` (spot has none). Gap detection as for
    futures: klines and books yes, trades no.
    """

    name: ClassVar[str] = "bitget-spot"
    inst_type: ClassVar[str] = "SPOT"
    _has_mark_price: ClassVar[bool] = False
    _granularity: ClassVar[dict[str, str]] = _SPOT_GRANULARITY
    _candles_path: ClassVar[str] = "/api/v2/spot/market/candles"
    _fills_path: ClassVar[str] = "/api/v2/spot/market/fills-history"
    _depth_path: ClassVar[str] = "/api/v2/spot/market/orderbook"
    _listing_path: ClassVar[str] = "/api/v2/spot/public/symbols"
    #: Spot rows are ``[ts, o, h, l, c, base vol, USDT vol, quote vol]``.
    _quote_column: ClassVar[int] = 7

    def depth_request(self, symbol: str, limit: int = 1000) -> RestRequest:
        """``GET /api/v2/spot/market/orderbook`` (``step0``, at most 150 levels)."""
        if limit < 1:
            raise ValueError(f"depth limit must be positive, got {limit}")
        return RestRequest(
            "GET",
            self._depth_path,
            (("symbol", symbol), ("type", "step0"), ("limit", str(min(limit, 150)))),
        )

    def _listed(self, entry: dict[str, Any]) -> bool:
        return _str(entry["status"]) == "online"
