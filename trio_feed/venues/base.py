"""The venue adapter interface: everything exchange-specific, with no I/O.

An adapter turns the feed's venue-neutral requests into the exchange's wire format and back:

* which wire stream serves a ``(symbol, channel)`` and on which *route* (the endpoint family:
  Binance USD-M ``public``/``market``, OKX ``public``/``business``, Bybit ``linear``...).
  Streams of different routes are never put on one connection;
* the URL of a connection holding some streams, and the messages to send once it is open
  (Binance puts streams in a combined-stream URL and sends nothing; Bybit, OKX and Bitget
  connect to a bare URL and send batched subscribe requests within the venue's limits);
* subscribe / unsubscribe requests with correlation ids, and their acknowledgements;
* liveness: WebSocket protocol pings (Binance) or application pings (OKX and Bitget text
  ``"ping"``, Bybit ``{"op":"ping"}``), recognised on the way back as `Pong`;
* parsing a frame into events and control items (`Ack`, `RequestError`, `Pong`,
  `ServerShutdown`, `Notice`), raising `MalformedFrame` when it cannot;
* REST requests (`RestRequest`) and the parsing of their bodies.

Adapters never read a clock, never sleep and import neither trio nor httpx. The shell
(:mod:`trio_feed.runtime`) executes what they build.
"""

from __future__ import annotations

import abc
import enum
import re
from collections.abc import Mapping, Sequence
from typing import ClassVar

from attrs import frozen

from ..core.book_sync import SequenceRules
from ..events import DepthDiff, Kline, MarketEvent, Trade

__all__ = [
    "Ack",
    "ChannelInfo",
    "Control",
    "Notice",
    "OutgoingMessage",
    "ParsedItem",
    "PingStyle",
    "Pong",
    "RequestError",
    "RestRequest",
    "ServerShutdown",
    "StreamSpec",
    "VenueAdapter",
    "VenueLimits",
    "parse_interval",
]


@frozen(slots=True)
class StreamSpec:
    """One subscribable stream of a venue.

    ``symbol`` and ``channel`` are the user's terms (``"BTCUSDT"``, ``"kline_1m"``);
    ``name`` is the venue's wire name (``"btcusdt@kline_1m"``) and is unique per venue;
    ``route`` names the endpoint family that serves it.
    """

    symbol: str
    channel: str
    name: str
    route: str


@frozen(slots=True)
class ChannelInfo:
    """A channel a venue offers, for validation and for ``check-config --list-venues``."""

    pattern: str  # e.g. "kline_<interval>"
    description: str
    intervals: tuple[str, ...] = ()  # for interval channels: the intervals the venue streams


@frozen(slots=True)
class VenueLimits:
    """Limits the venue imposes, which the pool planner and the shell respect."""

    #: Hard cap of streams on one connection (the config may ask for fewer, never more).
    max_streams_per_connection: int
    #: Messages we may send per connection per second (pings and control messages count).
    max_outgoing_per_second: float
    #: Largest frame we accept, in bytes/characters (trio-websocket closes with 1009 above it).
    max_message_size: int
    #: The server closes every connection after this many seconds.
    connection_lifetime: float


class PingStyle(enum.Enum):
    """How the client proves liveness to the venue and checks the venue is alive."""

    #: WebSocket protocol ping frames; the pong frame is the answer (Binance).
    PROTOCOL = "protocol"
    #: An application message from `VenueAdapter.app_ping`, answered by a frame that the
    #: adapter parses into `Pong` (OKX/Bitget text ``ping``/``pong``, Bybit JSON op ping).
    APPLICATION = "application"


@frozen(slots=True)
class OutgoingMessage:
    """A text frame to send. ``request_id`` is set when the venue acknowledges it."""

    text: str
    request_id: int | None = None
    #: The streams a (un)subscribe request covers, so the shell can track what each
    #: connection really holds.
    streams: tuple[str, ...] = ()


@frozen(slots=True)
class RestRequest:
    """A REST call for the shell to execute. ``weight`` is the venue's cost of it."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    weight: int = 1

    @property
    def target(self) -> str:
        """``path?query``, as recorded in captures."""
        if not self.params:
            return self.path
        return self.path + "?" + "&".join(f"{k}={v}" for k, v in self.params)


# ---- control items a frame can parse into, besides market events --------------------------


class Control:
    """Base class of the non-market items a frame can parse into."""

    __slots__ = ()


@frozen(slots=True)
class Ack(Control):
    """The venue accepted request ``request_id``. ``result`` is its payload, if any."""

    request_id: int
    result: object = None


@frozen(slots=True)
class RequestError(Control):
    """The venue rejected a request (``request_id`` is None when it could not tell which)."""

    request_id: int | None
    code: str
    message: str


@frozen(slots=True)
class Pong(Control):
    """The answer to an application-level ping."""


@frozen(slots=True)
class ServerShutdown(Control):
    """The venue announced that it will close this connection soon: reconnect now."""

    time: int | None
    reason: str


@frozen(slots=True)
class Notice(Control):
    """Anything else the venue said that is worth a log line."""

    message: str


#: What `VenueAdapter.parse` yields.
ParsedItem = MarketEvent | Control


_INTERVAL_RE = re.compile(r"^([1-9][0-9]*)([smhdwM])$")
_UNIT_MS: Mapping[str, int] = {
    "s": 1_000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
}


def parse_interval(interval: str) -> int | None:
    """Length of a kline interval in milliseconds (``"1m"`` -> 60000), or None if invalid.

    ``1M`` (a calendar month) has no fixed length; it returns 30 days, used only for
    planning, never for bucketing.
    """
    m = _INTERVAL_RE.match(interval)
    if m is None:
        return None
    n, unit = int(m.group(1)), m.group(2)
    if unit == "M":
        return n * 30 * 86_400_000
    return n * _UNIT_MS[unit]


class VenueAdapter(abc.ABC):
    """The sans-IO adapter of one exchange market. Subclass it to add a venue.

    An adapter instance is cheap and holds no connection state, except what a parser needs
    to be fast (lookup tables built once).
    """

    #: Registry key, also the ``exchange`` field of every event (``"binance-usdm"``).
    name: ClassVar[str]
    default_ws_url: ClassVar[str]
    default_rest_url: ClassVar[str]
    limits: ClassVar[VenueLimits]
    ping_style: ClassVar[PingStyle]
    #: Response header reporting the REST weight used in the venue's window, if any.
    rest_weight_header: ClassVar[str | None] = None
    #: The venue's REST weight budget per minute (the shell keeps under it).
    rest_weight_per_minute: ClassVar[int] = 1200
    #: True if consecutive trades have consecutive `Trade.id` values (Binance aggTrade), so
    #: that a skipped id is a gap to fill from REST; False passes trades through in id order
    #: without gap detection (OKX, whose ids skip by the fills aggregated).
    trade_ids_consecutive: ClassVar[bool] = True

    # ---- streams ------------------------------------------------------------------------

    @abc.abstractmethod
    def channels(self) -> Sequence[ChannelInfo]:
        """The channels this venue offers."""

    @abc.abstractmethod
    def check_channel(self, channel: str) -> str | None:
        """None if ``channel`` is valid here, else a one-line reason it is not."""

    @abc.abstractmethod
    def stream(self, symbol: str, channel: str) -> StreamSpec:
        """The wire stream for ``(symbol, channel)``. ``channel`` passed `check_channel`.

        For a kline channel built from trades (see `built_interval`) this is the trade
        stream the klines are built from.
        """

    def built_interval(self, channel: str) -> str | None:
        """The interval of a ``kline_<interval>`` channel this venue does not stream and the
        feed builds from its trades, else None. ``channel`` passed `check_channel`."""
        return None

    def kline_key(self, symbol: str, channel: str) -> tuple[str, str] | None:
        """The ``(symbol, interval)`` that the klines of a streamed kline channel carry in
        their events (None for other channels). Venues whose kline events name another
        symbol (e.g. a continuous contract) override this."""
        if channel.startswith("kline_") and self.built_interval(channel) is None:
            return symbol, channel[len("kline_") :]
        return None

    # ---- connections --------------------------------------------------------------------

    @abc.abstractmethod
    def connect_url(self, ws_url: str, route: str, streams: Sequence[StreamSpec]) -> str:
        """The URL to open for a connection on ``route`` that should hold ``streams``."""

    @abc.abstractmethod
    def open_messages(
        self, streams: Sequence[StreamSpec], first_request_id: int
    ) -> list[OutgoingMessage]:
        """Messages to send right after the connection opens so that it holds ``streams``
        (empty when the URL already subscribes them). Request ids count up from
        ``first_request_id``; batches respect the venue's per-request limits."""

    @abc.abstractmethod
    def subscribe(
        self, streams: Sequence[StreamSpec], first_request_id: int
    ) -> list[OutgoingMessage]:
        """Messages that add ``streams`` to a live connection."""

    @abc.abstractmethod
    def unsubscribe(
        self, streams: Sequence[StreamSpec], first_request_id: int
    ) -> list[OutgoingMessage]:
        """Messages that remove ``streams`` from a live connection."""

    def app_ping(self) -> str | None:
        """The application ping to send, for `PingStyle.APPLICATION` venues."""
        return None

    # ---- frames -------------------------------------------------------------------------

    @abc.abstractmethod
    def parse(self, frame: str | bytes) -> list[ParsedItem]:
        """Parse one frame into market events and control items.

        This is the per-frame hot path: keep it lean. Raise `MalformedFrame` (never
        anything else) for a frame that is not what the venue documents.
        """

    # ---- REST ---------------------------------------------------------------------------

    @abc.abstractmethod
    def server_time_request(self) -> RestRequest:
        """The request for the exchange's clock."""

    @abc.abstractmethod
    def parse_server_time(self, body: str | bytes) -> int:
        """The server time in ms from `server_time_request`'s body (`MalformedFrame` if not)."""

    #: Most klines one `klines_request` may ask for.
    max_klines_per_request: ClassVar[int] = 500
    #: Most trades one `agg_trades_request` may ask for.
    max_trades_per_request: ClassVar[int] = 500

    @abc.abstractmethod
    def klines_request(
        self,
        symbol: str,
        interval: str,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = 500,
    ) -> RestRequest:
        """Klines of ``symbol`` (as its kline events name it) opening between ``start_time``
        and ``end_time`` (inclusive, ms), oldest first; without times, the latest ones."""

    @abc.abstractmethod
    def parse_klines(
        self, body: str | bytes, symbol: str, interval: str, server_time: int
    ) -> list[Kline]:
        """Klines (source ``rest``) from a `klines_request` body, oldest first; a kline is
        closed when its close time is before ``server_time`` (`MalformedFrame` if the body
        is not what the venue documents)."""

    @abc.abstractmethod
    def agg_trades_request(
        self,
        symbol: str,
        from_id: int | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = 500,
    ) -> RestRequest:
        """Trades from id ``from_id`` on, or within ``start_time``..``end_time`` (inclusive,
        at most an hour apart), oldest first."""

    @abc.abstractmethod
    def parse_agg_trades(self, body: str | bytes, symbol: str) -> list[Trade]:
        """Trades (source ``rest``) from an `agg_trades_request` body, in id order."""

    # ---- listings -----------------------------------------------------------------------
    # Not abstract: adapters written before listings existed keep working; the shell treats
    # NotImplementedError as "this venue cannot report its listings".

    def exchange_info_request(self) -> RestRequest:
        """The request for the venue's list of instruments (its ``exchangeInfo``)."""
        raise NotImplementedError(f"{self.name}: exchange_info_request is not implemented")

    def parse_listed_symbols(self, body: str | bytes) -> list[str]:
        """The symbols a feed could subscribe now (currently trading, of the kind this
        adapter streams), in the venue's order, from an `exchange_info_request` body.
        Raises `MalformedFrame` if the body is not what the venue documents."""
        raise NotImplementedError(f"{self.name}: parse_listed_symbols is not implemented")

    # ---- order books --------------------------------------------------------------------
    # Not abstract either: a venue without a ``depth`` channel need not implement them.

    def book_rules(self) -> SequenceRules:
        """The venue's order-book continuity rules (see :mod:`trio_feed.venues.book_rules`)."""
        raise NotImplementedError(f"{self.name}: book_rules is not implemented")

    def depth_request(self, symbol: str, limit: int = 1000) -> RestRequest:
        """The request for a REST snapshot of ``symbol``'s book (``limit`` levels a side)."""
        raise NotImplementedError(f"{self.name}: depth_request is not implemented")

    def parse_depth(self, body: str | bytes, symbol: str) -> DepthDiff:
        """A `depth_request` body as a `DepthDiff` with ``snapshot=True`` whose first and final
        update id are the snapshot's last update id (`MalformedFrame` if the body is not what
        the venue documents)."""
        raise NotImplementedError(f"{self.name}: parse_depth is not implemented")
