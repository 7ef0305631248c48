"""The monitoring endpoint: Prometheus metrics and a health check, served over HTTP/1.1 from
the feed's own Trio program.

``GET /metrics`` answers in the Prometheus text format (0.0.4), rendered by
``prometheus_client`` from one `FeedStatus` snapshot per scrape: nothing is counted twice,
the feed keeps its own counters and this module only translates them. ``GET /health``
answers JSON, 200 when healthy and 503 when not, for load balancers and ``curl``.

The server is h11 over Trio streams, as the fake exchange's REST is
(`trio_feed.testing.http`): no thread, no second event loop. A connection is served until
the client closes it, asks to close, sends something that is not HTTP (400, then closed)
or stays silent for longer than the idle timeout. Nothing raises out of a connection's
handler: an error there must never take the feed down with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from functools import partial
from http import HTTPStatus
from typing import Any

import h11
import orjson
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..config import MonitoringConfig
from ..core.state import ConnectionState
from .status import ConnectionStatus, FeedStatus, VenueStatus

__all__ = ["handle_http", "health", "metrics_text", "serve_monitoring"]

log = logging.getLogger("trio_feed.monitoring")

#: Largest request head (request line and headers) accepted; a scraper sends a few hundred
#: bytes, and anything bigger is not a client of ours.
MAX_REQUEST_HEAD = 8192
#: Largest request body read (and dropped); a GET has none.
MAX_REQUEST_BODY = 8192
#: Seconds a connection may take to send its next complete request (idle keep-alive time
#: included) before it is closed: a silent or trickling client must not hold a task forever.
IDLE_TIMEOUT = 60.0

#: The text format generate_latest writes (named here: older prometheus_client releases
#: have no constant for it).
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_PREFIX = "trio_feed_"
_STATES = tuple(state.value for state in ConnectionState)

#: Per connection: (name, help, value or None for no sample).
_CONNECTION_GAUGES: tuple[tuple[str, str, Callable[[ConnectionStatus], float | None]], ...] = (
    ("connection_streams", "Streams the connection carries.", lambda c: len(c.streams)),
    ("connection_retry", "Consecutive failed connect attempts.", lambda c: c.retry),
    (
        "connection_last_message_age_seconds",
        "Seconds since the connection's last frame (absent before the first).",
        lambda c: c.last_message_age,
    ),
    (
        "connection_stale_streams",
        "Streams of the connection silent for longer than the heartbeat timeout.",
        lambda c: len(c.stale_streams),
    ),
)
_CONNECTION_COUNTERS: tuple[tuple[str, str, Callable[[ConnectionStatus], float]], ...] = (
    ("connection_messages", "Frames received.", lambda c: c.messages),
    ("connection_bytes", "Bytes of frames received.", lambda c: c.bytes),
    ("connection_reconnects", "Reconnects after a lost connection.", lambda c: c.reconnects),
    ("connection_rotations", "Make-before-break socket replacements.", lambda c: c.rotations),
    ("connection_malformed", "Frames that could not be parsed.", lambda c: c.malformed),
)
_VENUE_GAUGES: tuple[tuple[str, str, Callable[[VenueStatus], float | None]], ...] = (
    (
        "venue_rest_used_weight",
        "REST weight used in the current minute, as the venue reports it.",
        lambda v: v.rest_used_weight,
    ),
    (
        "venue_rest_banned_seconds",
        "Seconds until the venue's Retry-After ends (0 when not rate limited).",
        lambda v: v.rest_banned_for or 0.0,
    ),
)
_VENUE_COUNTERS: tuple[tuple[str, str, Callable[[VenueStatus], float]], ...] = (
    ("venue_rest_requests", "REST requests sent.", lambda v: v.rest_requests),
    ("venue_rest_errors", "REST requests that failed.", lambda v: v.rest_errors),
    (
        "venue_klines_backfilled",
        "Klines fetched from REST to fill gaps.",
        lambda v: v.klines_backfilled,
    ),
    (
        "venue_trades_backfilled",
        "Trades fetched from REST to fill gaps.",
        lambda v: v.trades_backfilled,
    ),
)


class _SnapshotCollector:
    """A prometheus_client collector of one status snapshot."""

    def __init__(self, status: FeedStatus) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status
        labels = ["connection", "venue"]
        state = GaugeMetricFamily(
            _PREFIX + "connection_state",
            "1 for the connection's current state, 0 for the others.",
            labels=[*labels, "state"],
        )
        for c in status.connections:
            # Every state gets a sample, so that a query for one state never finds nothing.
            states = _STATES if c.state in _STATES else (*_STATES, c.state)
            for name in states:
                state.add_metric([c.id, c.venue, name], 1.0 if name == c.state else 0.0)
        yield state
        for name, doc, gauge_value in _CONNECTION_GAUGES:
            gauge = GaugeMetricFamily(_PREFIX + name, doc, labels=labels)
            for c in status.connections:
                value = gauge_value(c)
                if value is not None:
                    gauge.add_metric([c.id, c.venue], float(value))
            yield gauge
        for name, doc, counter_value in _CONNECTION_COUNTERS:
            counter = CounterMetricFamily(_PREFIX + name, doc, labels=labels)
            for c in status.connections:
                counter.add_metric([c.id, c.venue], float(counter_value(c)))
            yield counter

        quality = GaugeMetricFamily(
            _PREFIX + "symbol_quality", "Data quality score in [0, 1].", labels=["venue", "symbol"]
        )
        for s in status.symbols:
            quality.add_metric([s.venue, s.symbol], s.quality)
        yield quality

        for name, doc, venue_gauge in _VENUE_GAUGES:
            gauge = GaugeMetricFamily(_PREFIX + name, doc, labels=["venue"])
            for v in status.venues:
                value = venue_gauge(v)
                if value is not None:
                    gauge.add_metric([v.name], float(value))
            yield gauge
        for name, doc, venue_counter in _VENUE_COUNTERS:
            counter = CounterMetricFamily(_PREFIX + name, doc, labels=["venue"])
            for v in status.venues:
                counter.add_metric([v.name], float(venue_counter(v)))
            yield counter

        yield GaugeMetricFamily(
            _PREFIX + "subscriptions",
            "Open event subscriptions (feed.events()).",
            value=status.subscriptions,
        )
        sinks = GaugeMetricFamily(
            _PREFIX + "sink_failing",
            "1 while the sink cannot write (retrying, or stopped for good).",
            labels=["sink", "kind"],
        )
        for sink in status.sinks:
            sinks.add_metric([sink.name, sink.kind], 1.0 if sink.failing or sink.stopped else 0.0)
        yield sinks


def metrics_text(status: FeedStatus) -> bytes:
    """``status`` in the Prometheus text exposition format (0.0.4), every metric prefixed
    ``trio_feed_``."""
    # A registry of its own per snapshot: the process-wide default registry would also
    # export whatever else the embedding program registered there.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(status))
    return generate_latest(registry)


def health(status: FeedStatus, min_quality: float) -> tuple[bool, dict[str, Any]]:
    """Whether the feed is healthy, and the JSON body of ``/health``.

    Unhealthy when a connection gave up (FAILED), a symbol's quality is below
    ``min_quality``, or a sink is failing or stopped. A connection that is reconnecting is
    not a problem by itself: the feed is doing its job, and the symbols' quality says
    whether data is missing. ``problems`` lists one readable line per problem.
    """
    problems: list[str] = []
    for c in status.connections:
        if c.state == ConnectionState.FAILED.value:
            error = f": {c.last_error}" if c.last_error else ""
            problems.append(f"connection {c.id} FAILED{error}")
    for s in status.symbols:
        if s.quality < min_quality:
            reason = f" ({s.reason})" if s.reason else ""
            problems.append(
                f"{s.venue}:{s.symbol} quality {s.quality:.2f} is below {min_quality:.2f}{reason}"
            )
    for sink in status.sinks:
        if sink.stopped or sink.failing:
            error = f": {sink.last_error}" if sink.last_error else ""
            problems.append(f"sink {sink.name} {'stopped' if sink.stopped else 'failing'}{error}")
    body: dict[str, Any] = {
        "healthy": not problems,
        "problems": problems,
        "connections": {c.id: c.state for c in status.connections},
        "symbols": {f"{s.venue}:{s.symbol}": s.quality for s in status.symbols},
    }
    return not problems, body


# ---- the HTTP side -------------------------------------------------------------------------

_Response = tuple[int, list[tuple[str, str]], bytes]


class _BodyTooLarge(Exception):
    pass


def _answer(
    method: str, target: str, status: Callable[[], FeedStatus], min_quality: float
) -> _Response:
    path = target.split("?", 1)[0]
    if path not in ("/metrics", "/health"):
        return _plain(404, "not found: try /metrics or /health\n")
    if method != "GET":
        response = _plain(405, "only GET\n")
        response[1].append(("Allow", "GET"))
        return response
    snapshot = status()
    if path == "/metrics":
        return 200, [("Content-Type", METRICS_CONTENT_TYPE)], metrics_text(snapshot)
    ok, body = health(snapshot, min_quality)
    data = orjson.dumps(body, option=orjson.OPT_APPEND_NEWLINE)
    return (200 if ok else 503), [("Content-Type", "application/json")], data


def _plain(code: int, text: str) -> _Response:
    return code, [("Content-Type", "text/plain; charset=utf-8")], text.encode()


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(bytes(await stream.receive_some(65536)))


async def _receive_request(conn: h11.Connection, stream: trio.abc.Stream) -> h11.Request | None:
    """The next request, its body read and dropped; None when the client closed."""
    event = await _next_event(conn, stream)
    if not isinstance(event, h11.Request):
        return None  # ConnectionClosed (h11 raises on anything else)
    size = 0
    while True:
        part = await _next_event(conn, stream)
        if isinstance(part, h11.Data):
            size += len(part.data)
            if size > MAX_REQUEST_BODY:
                raise _BodyTooLarge
        elif isinstance(part, h11.EndOfMessage):
            return event
        else:
            return None  # closed in the middle of the body


async def _send(
    conn: h11.Connection,
    stream: trio.abc.Stream,
    response: _Response,
    *,
    close: bool = False,
    head: bool = False,
) -> None:
    """Send ``response``; ``head``: as the answer to a HEAD request, which has no body
    (h11 refuses one) but the same headers."""
    code, headers, body = response
    headers = [*headers, ("Content-Length", str(len(body)))]
    if close:
        headers.append(("Connection", "close"))
    out = conn.send(h11.Response(status_code=code, headers=headers, reason=HTTPStatus(code).phrase))
    if body and not head:
        out += conn.send(h11.Data(data=body))
    out += conn.send(h11.EndOfMessage())
    await stream.send_all(out)


async def handle_http(
    stream: trio.abc.Stream,
    status: Callable[[], FeedStatus],
    min_quality: float,
    *,
    idle_timeout: float = IDLE_TIMEOUT,
) -> None:
    """Serve one client on ``stream`` until it closes, then close ``stream``.

    ``GET /metrics`` (Prometheus text) and ``GET /health`` (JSON; 200 healthy, 503 not),
    with keep-alive; any other path is 404 and any other method 405. ``status`` is called
    once per request. A request that is not HTTP, or too large, gets 400 (431, 413) and the
    connection is closed; so is one that sends no complete request within
    ``idle_timeout`` seconds. Never raises (but lets cancellation through).
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
    try:
        while True:
            request: h11.Request | None = None
            with trio.move_on_after(idle_timeout):
                request = await _receive_request(conn, stream)
            if request is None:
                return  # closed by the client, or idle for too long
            method = request.method.decode("ascii", "replace")
            target = request.target.decode("latin-1")
            try:
                response = _answer(method, target, status, min_quality)
            except Exception:
                # A bug (in status() most likely): say so to the scraper and in the log,
                # which is where someone will look.
                log.warning("monitoring: %s %s failed", method, target, exc_info=True)
                await _send(conn, stream, _plain(500, "internal error\n"), close=True)
                return
            await _send(conn, stream, response, head=method == "HEAD")
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except h11.RemoteProtocolError as exc:
        log.debug("monitoring: bad request: %s", exc)
        await _send_error(conn, stream, exc.error_status_hint)
    except _BodyTooLarge:
        log.debug("monitoring: request body over %d bytes", MAX_REQUEST_BODY)
        await _send_error(conn, stream, 413)
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError) as exc:
        log.debug("monitoring: connection lost: %r", exc)
    except Exception:
        # serve_tcp would let this crash the feed's nursery: monitoring is not worth that.
        log.debug("monitoring: connection failed", exc_info=True)
    finally:
        await trio.aclose_forcefully(stream)


async def _send_error(conn: h11.Connection, stream: trio.abc.Stream, code: int) -> None:
    """Answer ``code`` and ask to close, if a response can still be sent at all."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    try:
        await _send(conn, stream, _plain(code, f"{HTTPStatus(code).phrase}\n"), close=True)
    except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def serve_monitoring(
    status: Callable[[], FeedStatus],
    config: MonitoringConfig,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `handle_http` on ``config.host`` and ``config.port`` until cancelled.

    ``task_status.started`` gets the port listened on (the one picked when
    ``config.port`` is 0; the first listener's, should the host resolve to several
    addresses). The caller decides whether to run it (``config.enabled``).
    """

    async def serve_one(stream: trio.SocketStream) -> None:
        await handle_http(stream, status, config.min_quality)

    async with trio.open_nursery() as nursery:
        listeners: list[trio.SocketListener] = await nursery.start(
            partial(trio.serve_tcp, serve_one, config.port, host=config.host)
        )
        port: int = listeners[0].socket.getsockname()[1]
        log.info("monitoring on http://%s:%d (/metrics, /health)", config.host, port)
        task_status.started(port)
