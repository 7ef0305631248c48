"""Tests of trio_feed.runtime.monitoring: the metrics text, the health verdict, and the HTTP
server spoken to in raw bytes over memory streams (one loopback test of the TCP server)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families
from trio_feed.config import MonitoringConfig
from trio_feed.runtime.monitoring import (
    IDLE_TIMEOUT,
    MAX_REQUEST_HEAD,
    handle_http,
    health,
    metrics_text,
    serve_monitoring,
)
from trio_feed.runtime.sinks import SinkStatus
from trio_feed.runtime.status import ConnectionStatus, FeedStatus, SymbolStatus, VenueStatus

VENUE = "binance-usdm"
MARKET = "binance-usdm/market/0"
PUBLIC = "binance-usdm/public/1"


def connection(id: str = MARKET, **kw: Any) -> ConnectionStatus:
    values: dict[str, Any] = {
        "id": id,
        "venue": VENUE,
        "route": id.split("/")[1],
        "state": "SUBSCRIBED",
        "streams": ("btcusdt@aggTrade", "ethusdt@aggTrade"),
        "retry": 0,
        "last_message_age": 0.25,
        "messages": 1200,
        "bytes": 345_678,
        "malformed": 1,
        "reconnects": 2,
        "last_error": None,
        "stale_streams": ("ethusdt@aggTrade",),
        "rotations": 3,
        "sent": 4,
    }
    values.update(kw)
    return ConnectionStatus(**values)


def venue(**kw: Any) -> VenueStatus:
    values: dict[str, Any] = {
        "name": VENUE,
        "clock_offset_ms": -12,
        "rest_requests": 40,
        "rest_errors": 5,
        "rest_used_weight": 321,
        "rest_banned_for": 12.5,
        "rest_last_error": "HTTP 429",
        "klines_backfilled": 60,
        "trades_backfilled": 700,
    }
    values.update(kw)
    return VenueStatus(**values)


def sink(**kw: Any) -> SinkStatus:
    values: dict[str, Any] = {
        "name": "sqlite:data/feed.sqlite",
        "kind": "sqlite",
        "path": "data/feed.sqlite",
        "written": 10,
        "batches": 2,
        "errors": 0,
        "last_error": None,
        "failing": False,
        "stopped": False,
    }
    values.update(kw)
    return SinkStatus(**values)


def symbol(name: str = "BTCUSDT", quality: float = 1.0, reason: str = "ok") -> SymbolStatus:
    return SymbolStatus(venue=VENUE, symbol=name, quality=quality, reason=reason)


def feed_status(**kw: Any) -> FeedStatus:
    values: dict[str, Any] = {
        "connections": (connection(), connection(PUBLIC, state="RECONNECTING", retry=4)),
        "venues": (venue(),),
        "subscriptions": 2,
        "sinks": (sink(),),
        "symbols": (symbol("BTCUSDT", 0.95), symbol("ETHUSDT", 0.5)),
    }
    values.update(kw)
    return FeedStatus(**values)


# ---- metrics_text --------------------------------------------------------------------------


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, by (sample name, labels); also checks the HELP/TYPE."""
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text.decode()):
        assert family.name.startswith("trio_feed_")
        assert family.documentation
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in found
            found[key] = sample.value
    return found


def at(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


def test_metrics_text_parses_back_with_the_values_of_the_snapshot() -> None:
    found = samples(metrics_text(feed_status()))
    market = at(connection=MARKET, venue=VENUE)
    public = at(connection=PUBLIC, venue=VENUE)
    assert found["trio_feed_connection_streams", market] == 2
    assert found["trio_feed_connection_retry", market] == 0
    assert found["trio_feed_connection_retry", public] == 4
    assert found["trio_feed_connection_last_message_age_seconds", market] == 0.25
    assert found["trio_feed_connection_messages_total", market] == 1200
    assert found["trio_feed_connection_bytes_total", market] == 345_678
    assert found["trio_feed_connection_reconnects_total", market] == 2
    assert found["trio_feed_connection_rotations_total", market] == 3
    assert found["trio_feed_connection_malformed_total", market] == 1
    assert found["trio_feed_connection_stale_streams", market] == 1
    assert found["trio_feed_symbol_quality", at(venue=VENUE, symbol="BTCUSDT")] == 0.95
    assert found["trio_feed_symbol_quality", at(venue=VENUE, symbol="ETHUSDT")] == 0.5
    assert found["trio_feed_venue_rest_used_weight", at(venue=VENUE)] == 321
    assert found["trio_feed_venue_rest_banned_seconds", at(venue=VENUE)] == 12.5
    assert found["trio_feed_venue_rest_requests_total", at(venue=VENUE)] == 40
    assert found["trio_feed_venue_rest_errors_total", at(venue=VENUE)] == 5
    assert found["trio_feed_venue_klines_backfilled_total", at(venue=VENUE)] == 60
    assert found["trio_feed_venue_trades_backfilled_total", at(venue=VENUE)] == 700
    assert found["trio_feed_subscriptions", at()] == 2
    assert found["trio_feed_sink_failing", at(sink="sqlite:data/feed.sqlite", kind="sqlite")] == 0


def test_connection_state_is_one_for_the_current_state_only() -> None:
    found = samples(metrics_text(feed_status()))
    states = {
        dict(labels)["state"]: value
        for (name, labels), value in found.items()
        if name == "trio_feed_connection_state" and dict(labels)["connection"] == PUBLIC
    }
    assert states == {
        "DISCONNECTED": 0,
        "CONNECTING": 0,
        "CONNECTED": 0,
        "SUBSCRIBED": 0,
        "LOST": 0,
        "RECONNECTING": 1,
        "FAILED": 0,
    }
    assert found[
        "trio_feed_connection_state", at(connection=MARKET, venue=VENUE, state="SUBSCRIBED")
    ]


def test_counters_are_typed_as_counters() -> None:
    families = {
        f.name: f.type for f in text_string_to_metric_families(metrics_text(feed_status()).decode())
    }
    assert families["trio_feed_connection_messages"] == "counter"
    assert families["trio_feed_venue_rest_requests"] == "counter"
    assert families["trio_feed_connection_state"] == "gauge"
    assert families["trio_feed_symbol_quality"] == "gauge"


def test_unknown_values_have_no_sample_and_no_ban_is_zero() -> None:
    status = feed_status(
        connections=(connection(last_message_age=None),),
        venues=(venue(rest_used_weight=None, rest_banned_for=None),),
    )
    found = samples(metrics_text(status))
    names = {name for name, _ in found}
    assert "trio_feed_connection_last_message_age_seconds" not in names
    assert "trio_feed_venue_rest_used_weight" not in names
    assert found["trio_feed_venue_rest_banned_seconds", at(venue=VENUE)] == 0
    assert found["trio_feed_connection_streams", at(connection=MARKET, venue=VENUE)] == 2


@pytest.mark.parametrize(("failing", "stopped"), [(True, False), (False, True)])
def test_a_failing_or_stopped_sink_is_one(failing: bool, stopped: bool) -> None:
    status = feed_status(sinks=(sink(failing=failing, stopped=stopped),))
    found = samples(metrics_text(status))
    assert found["trio_feed_sink_failing", at(sink="sqlite:data/feed.sqlite", kind="sqlite")] == 1


def test_metrics_of_an_empty_feed() -> None:
    found = samples(metrics_text(FeedStatus(connections=(), venues=(), subscriptions=0)))
    assert found == {("trio_feed_subscriptions", at()): 0}


def test_label_values_are_escaped() -> None:
    status = feed_status(symbols=(symbol('we"ird\\name'),))
    found = samples(metrics_text(status))
    assert found["trio_feed_symbol_quality", at(venue=VENUE, symbol='we"ird\\name')] == 1.0


# ---- health --------------------------------------------------------------------------------


def test_health_all_good() -> None:
    ok, body = health(feed_status(), 0.5)
    assert ok is True
    assert body == {
        "healthy": True,
        "problems": [],
        # Reconnecting is the feed doing its job: not a problem by itself.
        "connections": {MARKET: "SUBSCRIBED", PUBLIC: "RECONNECTING"},
        "symbols": {"binance-usdm:BTCUSDT": 0.95, "binance-usdm:ETHUSDT": 0.5},
    }


def test_health_failed_connection() -> None:
    status = feed_status(connections=(connection(state="FAILED", last_error="refused"),))
    ok, body = health(status, 0.5)
    assert ok is False and body["healthy"] is False
    assert body["problems"] == [f"connection {MARKET} FAILED: refused"]
    assert body["connections"] == {MARKET: "FAILED"}


def test_health_low_quality() -> None:
    status = feed_status(symbols=(symbol("BTCUSDT", 0.95), symbol("ETHUSDT", 0.3, "gap")))
    ok, body = health(status, 0.5)
    assert not ok
    assert body["problems"] == ["binance-usdm:ETHUSDT quality 0.30 is below 0.50 (gap)"]
    # The threshold is the caller's.
    assert health(status, 0.25)[0] is True
    assert health(status, 0.96)[1]["problems"] == [
        "binance-usdm:BTCUSDT quality 0.95 is below 0.96 (ok)",
        "binance-usdm:ETHUSDT quality 0.30 is below 0.96 (gap)",
    ]


@pytest.mark.parametrize(
    ("kw", "problem"),
    [
        (
            {"failing": True, "last_error": "disk full"},
            "sink sqlite:data/feed.sqlite failing: disk full",
        ),
        ({"stopped": True}, "sink sqlite:data/feed.sqlite stopped"),
    ],
)
def test_health_failing_sink(kw: dict[str, Any], problem: str) -> None:
    ok, body = health(feed_status(sinks=(sink(**kw),)), 0.5)
    assert not ok
    assert body["problems"] == [problem]


def test_health_lists_every_problem() -> None:
    status = feed_status(
        connections=(connection(state="FAILED"),),
        symbols=(symbol("BTCUSDT", 0.0, "down"),),
        sinks=(sink(stopped=True),),
    )
    ok, body = health(status, 0.5)
    assert not ok
    assert len(body["problems"]) == 3


# ---- handle_http ---------------------------------------------------------------------------


class Client:
    """The client end of a memory stream pair, reading raw HTTP/1.1 responses."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = b""

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.buf += data
        return bool(data)

    async def response(self, *, head: bool = False) -> tuple[int, dict[str, str], bytes]:
        """The next response; ``head``: to a HEAD request (no body after the head)."""
        while b"\r\n\r\n" not in self.buf:
            assert await self._fill(), f"closed before a response head: {self.buf!r}"
        top, self.buf = self.buf.split(b"\r\n\r\n", 1)
        line, *lines = top.decode("latin-1").split("\r\n")
        version, code, _reason = line.split(" ", 2)
        assert version == "HTTP/1.1"
        headers = {}
        for header in lines:
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head else int(headers["content-length"])
        while len(self.buf) < length:
            assert await self._fill(), "closed in the middle of a body"
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(code), headers, body

    async def closed(self) -> bool:
        """True once the server closed its end (and nothing more came)."""
        return not self.buf and not await self._fill()


def get(target: str, *extra: str) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: localhost", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Server:
    """Runs handle_http on the server end; the snapshot it serves may be swapped."""

    def __init__(self, status: FeedStatus) -> None:
        self.status = status
        self.calls = 0
        self.returned = False

    def snapshot(self) -> FeedStatus:
        self.calls += 1
        return self.status

    async def run(self, stream: trio.abc.Stream, **kw: Any) -> None:
        await handle_http(stream, self.snapshot, 0.5, **kw)
        self.returned = True


async def serving(
    nursery: trio.Nursery,
    status: FeedStatus | None = None,
    snapshot: Callable[[], FeedStatus] | None = None,
    **kw: Any,
) -> tuple[Client, Server]:
    """A client connected to handle_http running in ``nursery``."""
    client_end, server_end = trio.testing.memory_stream_pair()
    server = Server(status or feed_status())
    if snapshot is not None:
        server.snapshot = snapshot  # type: ignore[method-assign]
    nursery.start_soon(partial(server.run, server_end, **kw))
    return Client(client_end), server


async def test_health_200_with_its_json_body() -> None:
    async with trio.open_nursery() as nursery:
        client, _ = await serving(nursery)
        await client.send(get("/health"))
        code, headers, body = await client.response()
        assert code == 200
        assert headers["content-type"] == "application/json"
        assert orjson.loads(body) == health(feed_status(), 0.5)[1]
        await client.stream.aclose()


async def test_health_503_when_unhealthy() -> None:
    status = feed_status(connections=(connection(state="FAILED", last_error="refused"),))
    async with trio.open_nursery() as nursery:
        client, _ = await serving(nursery, status)
        await client.send(get("/health"))
        code, _, body = await client.response()
        assert code == 503
        data = orjson.loads(body)
        assert data["healthy"] is False
        assert data["problems"] == [f"connection {MARKET} FAILED: refused"]
        await client.stream.aclose()


async def test_metrics_over_http() -> None:
    async with trio.open_nursery() as nursery:
        client, _ = await serving(nursery)
        await client.send(get("/metrics"))
        code, headers, body = await client.response()
        assert code == 200
        assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert body == metrics_text(feed_status())
        assert samples(body)["trio_feed_subscriptions", at()] == 2
        await client.stream.aclose()


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (get("/"), 404),
        (get("/metricsx"), 404),
        (get("/health/"), 404),
        (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 405),
        (b"DELETE /health HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    ],
)
async def test_not_found_and_method_not_allowed_keep_the_connection(
    request_bytes: bytes, code: int
) -> None:
    async with trio.open_nursery() as nursery:
        client, server = await serving(nursery)
        await client.send(request_bytes)
        got, headers, _ = await client.response(head=request_bytes.startswith(b"HEAD"))
        assert got == code
        if code == 405:
            assert headers["allow"] == "GET"
        assert server.calls == 0  # no snapshot taken for a request that needs none
        # Still usable afterwards.
        await client.send(get("/health"))
        assert (await client.response())[0] == 200
        await client.stream.aclose()


async def test_query_string_is_ignored() -> None:
    async with trio.open_nursery() as nursery:
        client, _ = await serving(nursery)
        await client.send(get("/health?verbose=1"))
        assert (await client.response())[0] == 200
        await client.stream.aclose()


@pytest.mark.parametrize(
    "garbage",
    [
        b"hello there\r\n\r\n",
        b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",  # a TLS hello, more or less
    ],
)
async def test_garbage_gets_400_and_is_closed(garbage: bytes) -> None:
    async with trio.open_nursery() as nursery:
        client, server = await serving(nursery)
        await client.send(garbage)
        code, headers, _ = await client.response()
        assert code == 400
        assert headers["connection"] == "close"
        assert await client.closed()
    assert server.returned


async def test_oversized_head_gets_431_and_is_closed() -> None:
    async with trio.open_nursery() as nursery:
        client, server = await serving(nursery)
        await client.send(b"GET /health HTTP/1.1\r\nX-Pad: " + b"a" * (MAX_REQUEST_HEAD + 1))
        code, _, _ = await client.response()
        assert code == 431
        assert await client.closed()
    assert server.returned


async def test_oversized_body_gets_413_and_is_closed() -> None:
    async with trio.open_nursery() as nursery:
        client, server = await serving(nursery)
        body = b"x" * 100_000
        head = f"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        await client.send(head.encode() + body)
        code, _, _ = await client.response()
        assert code == 413
        assert await client.closed()
    assert server.returned


async def test_two_requests_on_one_keep_alive_connection_see_fresh_snapshots() -> None:
    async with trio.open_nursery() as nursery:
        client, server = await serving(nursery)
        await client.send(get("/health"))
        assert (await client.response())[0] == 200
        server.status = feed_status(sinks=(sink(stopped=True),))
        await client.send(get("/health"))
        code, _, body = await client.response()
        assert code == 503
        assert orjson.loads(body)["problems"] == ["sink sqlite:data/feed.sqlite stopped"]
        assert server.calls == 2
        await client.stream.aclose()
    assert server.returned


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with trio.open_nursery() as nursery:
        client, _ = await serving(nursery)
        await client.send(get("/metrics") + get("/nope") + get("/health"))
        assert [(await client.response())[0] for _ in range(3)] == [200, 404, 200]
        await client.stream.aclose()


async def test_connection_close_is_honoured() -> None:
    async with trio.open_nursery() as nursery:
        client, server = await serving(nursery)
        await client.send(get("/health", "Connection: close"))
        code, headers, _ = await client.response()
        assert code == 200
        assert headers["connection"] == "close"
        assert await client.closed()
    assert server.returned


async def test_http_1_0_client_is_answered_and_closed() -> None:
    async with trio.open_nursery() as nursery:
        client, server = await serving(nursery)
        await client.send(b"GET /health HTTP/1.0\r\n\r\n")
        assert (await client.response())[0] == 200
        assert await client.closed()
    assert server.returned


async def test_idle_client_is_closed_after_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        client, server = await serving(nursery)
        await client.send(get("/health"))
        assert (await client.response())[0] == 200
        answered = trio.current_time()
        await client.send(b"GET /hea")  # and then nothing more
        assert await client.closed()
        assert trio.current_time() - answered == pytest.approx(IDLE_TIMEOUT)
    assert server.returned


async def test_idle_timeout_is_adjustable(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        client, server = await serving(nursery, idle_timeout=5.0)
        start = trio.current_time()
        assert await client.closed()
        assert trio.current_time() - start == pytest.approx(5.0)
    assert server.returned


async def test_client_that_goes_away_does_not_raise() -> None:
    async with trio.open_nursery() as nursery:
        client, server = await serving(nursery)
        await client.send(get("/metrics"))
        await client.stream.aclose()  # before reading the answer
    assert server.returned


async def test_a_failing_snapshot_gets_500_and_does_not_raise() -> None:
    def broken() -> FeedStatus:
        raise RuntimeError("bug")

    async with trio.open_nursery() as nursery:
        client, server = await serving(nursery, snapshot=broken)
        await client.send(get("/health"))
        code, headers, _ = await client.response()
        assert code == 500
        assert headers["connection"] == "close"
        assert await client.closed()
    assert server.returned


# ---- serve_monitoring ----------------------------------------------------------------------


async def test_serve_monitoring_on_loopback_any_port() -> None:
    # Real sockets: no autojump clock here; bounded instead of sleeping. The config's
    # min_quality is above BTCUSDT's 0.95, so /health must say 503.
    status = feed_status()
    config = MonitoringConfig(enabled=True, host="127.0.0.1", port=0, min_quality=0.96)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_monitoring, lambda: status, config)
            assert isinstance(port, int) and port > 0
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            client = Client(stream)
            await client.send(get("/health") + get("/metrics"))
            code, _, body = await client.response()
            assert code == 503
            assert orjson.loads(body) == health(status, 0.96)[1]
            code, _, body = await client.response()
            assert code == 200 and body == metrics_text(status)
            await stream.aclose()
            nursery.cancel_scope.cancel()
