"""What the Binance adapters share: field converters, the frame parser, control messages and
the REST body parsers.

Binance USD-M futures (:mod:`trio_feed.venues.binance_usdm`) and Binance spot
(:mod:`trio_feed.venues.binance_spot`) speak the same protocol with different paths, limits and
a few different payload fields. `BinanceAdapter` holds everything that is the same, so the
two adapters only state their differences: stream names and routes, which event types exist,
REST paths and weights, and the order-book rules.

Numbers. Prices and quantities come as JSON strings and become `Decimal` straight from the
string (never through a float); non-finite values (``"NaN"``, ``"Infinity"``) and numbers in
place of strings are rejected. Anything not as documented raises `MalformedFrame`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import orjson

from ..errors import MalformedFrame
from ..events import BookLevel, DepthDiff, Kline, Source, Trade
from .base import (
    Ack,
    OutgoingMessage,
    ParsedItem,
    RequestError,
    RestRequest,
    ServerShutdown,
    StreamSpec,
    VenueAdapter,
)
from .fields import PARSE_ERRORS, as_bool, as_int, as_str, dec, describe, short

__all__ = [
    "MAX_PARAMS_PER_REQUEST",
    "PARSE_ERRORS",
    "BinanceAdapter",
    "Handler",
    "as_bool",
    "as_int",
    "as_str",
    "dec",
    "describe",
    "ignore",
    "levels",
    "rest_body",
    "rest_errors",
    "short",
]

#: SUBSCRIBE/UNSUBSCRIBE requests carry at most this many stream names. Binance counts
#: messages, not params, against its per-connection message rate, so big batches are cheap
#: on that budget; 200 keeps each frame a few kB and is the smallest per-connection stream cap
#: any Binance page has stated, so one request never asks for more than a connection may hold.
MAX_PARAMS_PER_REQUEST = 200

_KLINE_ROW_LEN = 12

# ---- field converters (shared by every venue: `trio_feed.venues.fields`) --------------


def levels(raw: object) -> tuple[BookLevel, ...]:
    """``[[price, qty], ...]`` -> tuple of ``(Decimal, Decimal)``."""
    if type(raw) is not list:
        raise TypeError(f"expected a list of [price, qty] levels, got {type(raw).__name__}")
    out: list[BookLevel] = []
    append = out.append
    for level in raw:
        # The type test stops a 2-character string from unpacking into a "level".
        if type(level) is not list or len(level) != 2:
            raise ValueError(f"expected a [price, qty] level, got {short(level)}")
        append((dec(level[0]), dec(level[1])))
    return tuple(out)


@contextmanager
def rest_errors(venue: str, what: str) -> Iterator[None]:
    """Turn any parse error in a REST body into `MalformedFrame` naming the endpoint."""
    try:
        yield
    except MalformedFrame:
        raise
    except PARSE_ERRORS as exc:
        raise MalformedFrame(f"{venue} {what}: {describe(exc)}") from exc


def rest_body(venue: str, body: str | bytes, expected: type, what: str) -> Any:
    """Decode a REST body that should be a JSON ``expected`` (list or dict).

    An error body (``{"code":-1121,"msg":"Invalid symbol."}``) says so in the exception.
    """
    data = orjson.loads(body)
    # No success body of these endpoints has both "code" and "msg": an object body with
    # them is an error even where an object is expected (depth, exchangeInfo, time).
    if type(data) is dict and "code" in data and (expected is not dict or "msg" in data):
        raise MalformedFrame(f"{venue} {what}: error {data.get('code')}: {data.get('msg', '')}")
    if type(data) is not expected:
        raise TypeError(f"expected a JSON {expected.__name__}, got {type(data).__name__}")
    return data


#: A payload handler: ``(payload, combined stream name or None) -> items``.
Handler = Callable[[dict[str, Any], str | None], list[ParsedItem]]


def ignore(data: dict[str, Any], stream: str | None) -> list[ParsedItem]:
    """The handler of valid event types that feed no contract channel."""
    return []


class BinanceAdapter(VenueAdapter):
    """The part of a Binance adapter that USD-M and spot share (not registered itself).

    Subclasses set ``name``, ``_rest_prefix`` (``"/fapi/v1"``, ``"/api/v3"``), add their
    payload handlers to ``self._handlers`` (keyed by the payload's ``e``) and may override
    `_untyped` for payloads without an event type.
    """

    #: Path prefix of the REST market-data endpoints.
    _rest_prefix: ClassVar[str]

    def __init__(self) -> None:
        # Dispatch on the payload's "e": one dict lookup per frame.
        self._handlers: dict[str, Handler] = {
            "kline": self._kline,
            "aggTrade": self._agg_trade,
            "serverShutdown": self._server_shutdown,
        }

    # ---- connections --------------------------------------------------------------------

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
                    as_str(stream)
                    data = msg["data"]
                elif "e" in msg:
                    data = msg
                else:
                    untyped = self._untyped(msg, None)
                    return _control(msg) if untyped is None else untyped
            else:
                data = msg  # a raw array stream (``!markPrice@arr``)
            if type(data) is dict:
                if "e" not in data:
                    untyped = self._untyped(data, stream)
                    if untyped is not None:
                        return untyped
                handler = self._handlers.get(data["e"])
                if handler is None:
                    raise MalformedFrame(
                        self._where(stream) + f"unknown event type {short(data['e'])}"
                    )
                return handler(data, stream)
            if type(data) is list:
                # Array streams: every element is a payload of its own.
                out: list[ParsedItem] = []
                for item in data:
                    if type(item) is not dict:
                        raise TypeError(f"array element is not an object: {short(item)}")
                    handler = self._handlers.get(item["e"])
                    if handler is None:
                        raise MalformedFrame(
                            self._where(stream) + f"unknown event type {short(item['e'])}"
                        )
                    out += handler(item, stream)
                return out
            raise TypeError(f"payload is not an object or array: {short(data)}")
        except MalformedFrame:
            raise
        except PARSE_ERRORS as exc:
            raise MalformedFrame(self._where(stream) + describe(exc)) from exc

    def _untyped(self, data: dict[str, Any], stream: str | None) -> list[ParsedItem] | None:
        """Items of a payload without ``e`` (``stream`` None: a raw, non-combined frame), or
        None if it is no payload (a control reply, or a missing ``e``)."""
        return None

    def _where(self, stream: str | None) -> str:
        return f"{self.name} stream {short(stream)}: " if stream is not None else f"{self.name}: "

    def _kline(self, data: dict[str, Any], stream: str | None) -> list[ParsedItem]:
        return [self._kline_event(as_str(data["s"]), data["k"])]

    def _kline_event(self, symbol: str, k: dict[str, Any]) -> Kline:
        return Kline(
            self.name,
            symbol,
            as_str(k["i"]),
            as_int(k["t"]),
            as_int(k["T"]),
            dec(k["o"]),
            dec(k["h"]),
            dec(k["l"]),
            dec(k["c"]),
            dec(k["v"]),
            dec(k["q"]),
            as_int(k["n"]),
            dec(k["V"]),
            dec(k["Q"]),
            as_bool(k["x"]),
        )

    def _agg_trade(self, data: dict[str, Any], stream: str | None) -> list[ParsedItem]:
        return [self._trade(as_str(data["s"]), data, "ws")]

    def _trade(self, symbol: str, d: dict[str, Any], source: Source) -> Trade:
        return Trade(
            self.name,
            symbol,
            as_int(d["a"]),
            dec(d["p"]),
            dec(d["q"]),
            as_int(d["f"]),
            as_int(d["l"]),
            as_int(d["T"]),
            as_bool(d["m"]),
            source,
        )

    def _server_shutdown(self, data: dict[str, Any], stream: str | None) -> list[ParsedItem]:
        time = data.get("E")
        return [ServerShutdown(None if time is None else as_int(time), "serverShutdown")]

    # ---- REST ---------------------------------------------------------------------------

    def server_time_request(self) -> RestRequest:
        """``GET <prefix>/time`` (weight 1)."""
        return RestRequest("GET", f"{self._rest_prefix}/time", weight=1)

    def parse_server_time(self, body: str | bytes) -> int:
        """``serverTime`` in ms from a ``<prefix>/time`` body."""
        what = f"{self._rest_prefix}/time"
        with rest_errors(self.name, what):
            return as_int(rest_body(self.name, body, dict, what)["serverTime"])

    def parse_klines(
        self, body: str | bytes, symbol: str, interval: str, server_time: int
    ) -> list[Kline]:
        """Klines from a ``<prefix>/klines`` body, oldest first (as Binance sends them).

        REST rows carry no closed flag: a kline is closed when its close time is before
        ``server_time`` (the exchange's clock, never the local one).
        """
        what = f"{self._rest_prefix}/klines"
        name = self.name
        with rest_errors(name, what):
            rows = rest_body(name, body, list, what)
            out: list[Kline] = []
            for row in rows:
                if type(row) is not list or len(row) != _KLINE_ROW_LEN:
                    raise ValueError(
                        f"expected a kline row of {_KLINE_ROW_LEN} items: {short(row)}"
                    )
                close_time = as_int(row[6])
                out.append(
                    Kline(
                        name,
                        symbol,
                        interval,
                        as_int(row[0]),
                        close_time,
                        dec(row[1]),
                        dec(row[2]),
                        dec(row[3]),
                        dec(row[4]),
                        dec(row[5]),
                        dec(row[7]),
                        as_int(row[8]),
                        dec(row[9]),
                        dec(row[10]),
                        close_time < server_time,
                        "rest",
                    )
                )
            return out

    def _agg_trades_params(
        self,
        symbol: str,
        from_id: int | None,
        start_time: int | None,
        end_time: int | None,
        limit: int,
    ) -> tuple[tuple[str, str], ...]:
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
        return tuple(params)

    def parse_agg_trades(self, body: str | bytes, symbol: str) -> list[Trade]:
        """Trades (source ``rest``) from a ``<prefix>/aggTrades`` body, in id order."""
        what = f"{self._rest_prefix}/aggTrades"
        with rest_errors(self.name, what):
            rows = rest_body(self.name, body, list, what)
            out: list[Trade] = []
            for row in rows:
                if type(row) is not dict:
                    raise TypeError(f"expected an aggTrade object: {short(row)}")
                out.append(self._trade(symbol, row, "rest"))
            return out

    def parse_depth(self, body: str | bytes, symbol: str) -> DepthDiff:
        """A ``<prefix>/depth`` snapshot as a `DepthDiff` with ``snapshot=True`` whose first
        and final update id are ``lastUpdateId`` (the body does not name the symbol). Its time
        is the body's ``E`` (else ``T``, else 0: spot snapshots carry no time)."""
        what = f"{self._rest_prefix}/depth"
        with rest_errors(self.name, what):
            data = rest_body(self.name, body, dict, what)
            last = as_int(data["lastUpdateId"])
            time = data.get("E", data.get("T", 0))
            return DepthDiff(
                self.name,
                symbol,
                last,
                last,
                None,
                as_int(time),
                levels(data["bids"]),
                levels(data["asks"]),
                True,
            )

    def _exchange_symbols(self, body: str | bytes) -> list[dict[str, Any]]:
        """The ``symbols`` array of an exchangeInfo body, every entry an object."""
        what = f"{self._rest_prefix}/exchangeInfo"
        symbols = rest_body(self.name, body, dict, what)["symbols"]
        if type(symbols) is not list:
            raise TypeError(f"'symbols' is not an array: {short(symbols)}")
        for entry in symbols:
            if type(entry) is not dict:
                raise TypeError(f"expected a symbol object: {short(entry)}")
        return symbols


def _control(msg: dict[str, Any]) -> list[ParsedItem]:
    """A reply to a control request: ``{"result":..., "id":N}`` or ``{"code":n,"msg":...}``."""
    if "result" in msg:
        return [Ack(as_int(msg["id"]), msg["result"])]
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
