"""The json-gateway adapter (trio_feed/venues/gateway.py) and the handshake hook, end to end
against the fake gateway (trio_feed/testing/gateway.py) in virtual time."""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import orjson
import pytest
import trio
from trio_feed import Feed, FeedConfig, config_from_dict, open_feed
from trio_feed.errors import ConfigError, MalformedFrame
from trio_feed.events import BookTicker, Kline, StateChange, Trade
from trio_feed.plan import plan_feed
from trio_feed.testing.gateway import FakeGateway
from trio_feed.venues import get_adapter, known_venues
from trio_feed.venues.base import (
    Ack,
    HandshakeAccepted,
    HandshakeRejected,
    Notice,
    RequestError,
)
from trio_feed.venues.gateway import MAX_STREAMS_PER_REQUEST, JsonGatewayAdapter

TOKEN = "tok-9f3a77c1-never-print-me"
TOKEN_ENV = "TEST_GATEWAY_TOKEN"
WS = "wss://gateway.test/feed"
REST = "https://gateway.test"


def gateway_config(
    channels: Sequence[str] = ("aggTrade", "kline_1m", "bookTicker"),
    symbols: Sequence[str] = ("BTCUSDT", "ETHUSDT"),
    **sections: Any,
) -> FeedConfig:
    sections.setdefault("sinks", [])
    venue: dict[str, Any] = {
        "exchange": "json-gateway",
        "ws_url": WS,
        "rest_url": REST,
        "symbols": list(symbols),
        "channels": list(channels),
        "gateway": {"token_env": TOKEN_ENV, "market": "perp"},
    }
    return config_from_dict({"venues": [venue], **sections}, environ={})


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return TOKEN


@asynccontextmanager
async def feed_on_gateway(gateway: FakeGateway, config: FeedConfig) -> AsyncIterator[Feed]:
    async with open_feed(
        config,
        connector=gateway.connect,
        rest_transport=gateway.rest_transport,
        wall_clock=gateway.now_ms,
        seed=3,
    ) as feed:
        yield feed


async def collect(feed: Feed, seconds: float) -> list[Any]:
    events: list[Any] = []
    with trio.move_on_after(seconds):
        async for event in feed.events():
            events.append(event)
    return events


def states(events: Sequence[Any]) -> list[str]:
    return [e.state for e in events if isinstance(e, StateChange)]


# ---- the end-to-end path -------------------------------------------------------------------


async def test_connected_only_after_the_gateway_accepts_then_data_flows(
    autojump_clock: trio.abc.Clock, token_env: str
) -> None:
    async with FakeGateway(token=TOKEN, connect_delay=2.5) as gateway:
        start = gateway.now_ms()
        async with feed_on_gateway(gateway, gateway_config()) as feed:
            events = await collect(feed, 150.3)
            status = feed.status()
    changes = [e for e in events if isinstance(e, StateChange)]
    assert [c.state for c in changes] == ["CONNECTING", "CONNECTED", "SUBSCRIBED"]
    # CONNECTED waited for the gateway's CONNECTED (2.5 s after the CONNECT frame).
    assert changes[0].time < start + 2500 <= changes[1].time
    (record,) = gateway.connections
    assert record.connected_at is not None and record.market == "perp"
    # CONNECT first, then the subscriptions, on the one connection.
    assert record.client_frames[0] == "CONNECT"
    assert set(record.client_frames[1:]) == {"SUBSCRIBE"}
    assert sorted(record.streams) == sorted(
        f"{s}@{c}" for s in ("BTCUSDT", "ETHUSDT") for c in ("aggTrade", "kline_1m", "bookTicker")
    )
    # Data: every trade of the market from the first one seen, gap-free, exact.
    trades = [e for e in events if isinstance(e, Trade) and e.symbol == "BTCUSDT"]
    assert len(trades) > 100
    truth = gateway.market.trades("BTCUSDT", from_id=trades[0].id, limit=len(trades))
    assert [(t.id, t.price, t.qty, t.time) for t in trades] == [
        (a.agg_id, a.price, a.qty, a.time) for a in truth
    ]
    assert {t.exchange for t in trades} == {"json-gateway"}
    closed = [e for e in events if isinstance(e, Kline) and e.closed and e.symbol == "BTCUSDT"]
    assert len(closed) >= 2
    bars = gateway.market.klines(
        "BTCUSDT", "1m", start_time=closed[0].open_time, end_time=closed[-1].open_time
    )
    assert [(k.open_time, k.close, k.volume, k.trades) for k in closed] == [
        (b.open_time, b.close, b.volume, b.trades) for b in bars
    ]
    quotes = [e for e in events if isinstance(e, BookTicker)]
    assert quotes and all(q.bid_price < q.ask_price for q in quotes)
    assert status.connections[0].state == "SUBSCRIBED"
    assert status.connections[0].last_error is None


async def test_a_drop_reconnects_with_a_new_handshake_and_backfills(
    autojump_clock: trio.abc.Clock, token_env: str
) -> None:
    async with FakeGateway(token=TOKEN) as gateway:
        async with feed_on_gateway(gateway, gateway_config(channels=("aggTrade",))) as feed:
            events: list[Any] = []

            async def gather() -> None:
                async for event in feed.events():
                    events.append(event)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(gather)
                await trio.sleep(20.1)
                gateway.drop_connections()
                await trio.sleep(40.2)
                nursery.cancel_scope.cancel()
    assert len(gateway.accepted) == 2
    assert all(c.client_frames[0] == "CONNECT" for c in gateway.connections)
    assert states(events).count("SUBSCRIBED") == 2
    trades = [e for e in events if isinstance(e, Trade) and e.symbol == "ETHUSDT"]
    ids = [t.id for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # the drop left no gap
    assert any(t.source == "rest" for t in trades)


async def test_a_rotation_handshakes_on_the_replacement_first(
    autojump_clock: trio.abc.Clock, token_env: str
) -> None:
    # The first replacement is refused (busy): the old socket serves on, the next try works.
    config = gateway_config(channels=("aggTrade",), connection_pool={"rotate_after": 30.0})
    async with FakeGateway(token=TOKEN) as gateway:
        async with feed_on_gateway(gateway, config) as feed:
            events: list[Any] = []

            async def gather() -> None:
                async for event in feed.events():
                    events.append(event)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(gather)
                await trio.sleep(29.9)
                gateway.reject_next("busy")
                await trio.sleep(10.3)
                nursery.cancel_scope.cancel()
            status = feed.status()
    assert [c.rejected for c in gateway.connections] == [None, "busy", None]
    assert all(c.client_frames[0] == "CONNECT" for c in gateway.connections)
    assert status.connections[0].rotations == 1
    # A rotation is invisible in the state machine, and loses or doubles nothing.
    assert states(events) == ["CONNECTING", "CONNECTED", "SUBSCRIBED"]
    trades = [e for e in events if isinstance(e, Trade) and e.symbol == "BTCUSDT"]
    ids = [t.id for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))


async def test_a_wrong_token_fails_at_once_with_the_gateways_reason(
    autojump_clock: trio.abc.Clock, token_env: str
) -> None:
    async with FakeGateway(token="the-right-one") as gateway:
        async with feed_on_gateway(gateway, gateway_config()) as feed:
            events = await collect(feed, 600.7)
            status = feed.status()
    assert states(events) == ["CONNECTING", "LOST", "FAILED"]
    # Exactly one attempt: no retry storm against a gateway that said no.
    assert len(gateway.connections) == 1
    assert gateway.connections[0].rejected == "invalid token"
    (conn,) = status.connections
    assert conn.state == "FAILED"
    assert conn.last_error is not None and "invalid token" in conn.last_error
    assert conn.reconnects == 0


async def test_a_transient_rejection_is_retried_with_backoff(
    autojump_clock: trio.abc.Clock, token_env: str
) -> None:
    config = gateway_config(reconnect={"base_delay": 1.0, "jitter_ratio": 0.1})
    async with FakeGateway(token=TOKEN) as gateway:
        gateway.reject_next("gateway busy", count=3)
        async with feed_on_gateway(gateway, config) as feed:
            events = await collect(feed, 30.3)
            status = feed.status()
    assert states(events) == [
        "CONNECTING",
        *["LOST", "RECONNECTING", "CONNECTING"] * 3,
        "CONNECTED",
        "SUBSCRIBED",
    ]
    assert [c.rejected for c in gateway.connections] == ["gateway busy"] * 3 + [None]
    opened = [c.opened_at for c in gateway.connections]
    gaps = [b - a for a, b in itertools.pairwise(opened)]
    # 1 s, 2 s, 4 s, each +-10 %: the normal backoff.
    for gap, nominal in zip(gaps, (1.0, 2.0, 4.0), strict=True):
        assert nominal * 0.9 <= gap <= nominal * 1.1 + 0.01
    assert status.connections[0].state == "SUBSCRIBED"
    assert any(isinstance(e, Trade) for e in events)


async def test_a_gateway_that_never_answers_connect_times_out_and_retries(
    autojump_clock: trio.abc.Clock, token_env: str
) -> None:
    config = gateway_config(reconnect={"connect_timeout": 3.0, "base_delay": 1.0})
    async with FakeGateway(token=TOKEN, connect_delay=5.0) as gateway:
        async with feed_on_gateway(gateway, config) as feed:
            events = await collect(feed, 12.9)
            status = feed.status()
    # Never CONNECTED: the handshake's wait counts against the connect timeout.
    assert "CONNECTED" not in states(events)
    assert states(events)[:4] == ["CONNECTING", "LOST", "RECONNECTING", "CONNECTING"]
    assert len(gateway.connections) >= 2
    assert "timed out" in (status.connections[0].last_error or "")


async def token_leaks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Run the feed against a gateway that accepts the token and one that refuses it (each
    after a transient refusal) and return every text where the token shows up: logs,
    status(), the config, events, the adapters' reprs."""
    seen: list[str] = []
    for right in (TOKEN, "another"):
        async with FakeGateway(token=right) as gateway:
            gateway.reject_next("busy", count=1)
            async with feed_on_gateway(gateway, gateway_config()) as feed:
                events = await collect(feed, 20.1)
                seen.append(repr(feed.status()))
                seen.append(repr(feed.config))
                seen.append(repr(events))
                seen += [repr(plan.adapter) for plan in plan_feed(feed.config)]
    seen.append(caplog.text)
    assert "invalid token" in caplog.text  # the logs did capture the run
    return [text for text in seen if TOKEN in text]


async def test_the_token_never_appears_in_logs_status_or_events(
    autojump_clock: trio.abc.Clock, token_env: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="trio_feed")
    assert await token_leaks(caplog) == []
    assert "handshake accepted" in caplog.text


async def test_the_token_stays_out_of_websockets_debug_logs(
    autojump_clock: trio.abc.Clock, token_env: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert await token_leaks(caplog) == []


# ---- configuration -------------------------------------------------------------------------


async def test_a_missing_token_variable_is_a_config_error_naming_it(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    config = gateway_config()
    async with FakeGateway(token=TOKEN) as gateway:
        with pytest.raises(ConfigError) as info:
            async with feed_on_gateway(gateway, config):
                pass  # pragma: no cover - never started
    assert info.value.problems == [
        f"venues[0].gateway.token_env: the environment variable {TOKEN_ENV} is not set "
        "(it must hold the gateway token)"
    ]
    assert gateway.connections == []
    monkeypatch.setenv(TOKEN_ENV, "")
    with pytest.raises(ConfigError, match=f"{TOKEN_ENV} is empty"):
        plan_feed(config)


def test_gateway_section_validation() -> None:
    def problems(section: object, exchange: str = "json-gateway", **top: Any) -> list[str]:
        venue: dict[str, Any] = {"exchange": exchange, "symbols": ["X"], "channels": ["aggTrade"]}
        if section is not None:
            venue["gateway"] = section
        with pytest.raises(ConfigError) as info:
            config_from_dict({"venues": [venue], **top}, environ={})
        return info.value.problems

    assert problems(None) == [
        "venues[0].gateway: missing (json-gateway needs [venues.gateway] with token_env and market)"
    ]
    assert problems({"token_env": "MY-TOKEN", "market": 3, "tokn": "x"}) == [
        "venues[0].gateway.tokn: unknown key",
        "venues[0].gateway.token_env: 'MY-TOKEN' is not an environment variable name "
        "(letters, digits and _; the file names the variable, never the token itself)",
        "venues[0].gateway.market: expected a string, got 3",
    ]
    assert problems({"market": "perp"}) == ["venues[0].gateway.token_env: missing"]
    assert problems("perp") == ["venues[0].gateway: expected a table, got 'perp'"]
    assert problems({"token_env": "T", "market": "perp"}, exchange="binance-usdm") == [
        "venues[0].gateway: binance-usdm takes no gateway section (it is for json-gateway)"
    ]
    assert problems(
        {"token_env": "T", "market": "perp"}, gateway={"token_env": "T", "market": "perp"}
    ) == ["gateway: allowed inside a venue only ([venues.gateway])"]
    ok = config_from_dict(
        {
            "venues": [
                {
                    "exchange": "json-gateway",
                    "symbols": ["X"],
                    "channels": ["kline_1m"],
                    "gateway": {"token_env": "T", "market": "spot"},
                }
            ]
        },
        environ={},
    )
    assert ok.venues[0].gateway is not None and ok.venues[0].gateway.market == "spot"


def test_registered_as_a_builtin() -> None:
    assert "json-gateway" in known_venues()
    assert isinstance(get_adapter("json-gateway"), JsonGatewayAdapter)


# ---- the adapter, frame by frame -----------------------------------------------------------


def configured() -> JsonGatewayAdapter:
    adapter = JsonGatewayAdapter()
    venue = gateway_config().venues[0]
    adapter.configure(venue, environ={TOKEN_ENV: TOKEN})
    return adapter


def test_handshake_and_subscription_messages() -> None:
    adapter = configured()
    (connect,) = adapter.handshake_messages()
    assert orjson.loads(connect.text) == {"type": "CONNECT", "token": TOKEN, "market": "perp"}
    assert connect.request_id is None
    specs = [adapter.stream(f"S{i}", "aggTrade") for i in range(MAX_STREAMS_PER_REQUEST + 1)]
    first, second = adapter.open_messages(specs, 7)
    assert orjson.loads(first.text)["type"] == "SUBSCRIBE"
    assert (first.request_id, second.request_id) == (7, 8)
    assert orjson.loads(second.text) == {"type": "SUBSCRIBE", "id": 8, "streams": ["S100@aggTrade"]}
    (unsub,) = adapter.unsubscribe(specs[:1], 9)
    assert orjson.loads(unsub.text) == {"type": "UNSUBSCRIBE", "id": 9, "streams": ["S0@aggTrade"]}
    with pytest.raises(RuntimeError):
        JsonGatewayAdapter().handshake_messages()


def test_control_frames() -> None:
    adapter = configured()
    assert adapter.parse('{"type":"CONNECTED"}') == [HandshakeAccepted()]
    assert adapter.parse('{"type":"ERROR","reason":"invalid token"}') == [
        HandshakeRejected("invalid token", permanent=True)
    ]
    assert adapter.parse('{"type":"ERROR","reason":"busy","retry":true}') == [
        HandshakeRejected("busy", permanent=False)
    ]
    # A gateway that echoes the token does not get it into our logs.
    echo = orjson.dumps({"type": "ERROR", "reason": f"bad token {TOKEN}"})
    assert adapter.parse(echo) == [HandshakeRejected("bad token ***")]
    assert adapter.parse('{"type":"ACK","id":4}') == [Ack(4)]
    assert adapter.parse('{"type":"ERROR","id":4,"code":"X","reason":"no"}') == [
        RequestError(4, "X", "no")
    ]
    assert adapter.parse('{"type":"NOTICE","message":"maintenance at 2am"}') == [
        Notice("maintenance at 2am")
    ]


def test_data_frames() -> None:
    adapter = configured()
    kline = {
        "type": "kline",
        "symbol": "BTCUSDT",
        "interval": "1m",
        "open_time": 60_000,
        "close_time": 119_999,
        "open": "1.5",
        "high": "2",
        "low": "1",
        "close": "1.75",
        "volume": "10",
        "quote_volume": "15",
        "trades": 3,
        "taker_buy_volume": "4",
        "taker_buy_quote_volume": "6",
        "closed": True,
    }
    (k,) = adapter.parse(orjson.dumps(kline))
    assert isinstance(k, Kline)
    assert (k.exchange, k.close, k.closed, k.source) == (
        "json-gateway",
        Decimal("1.75"),
        True,
        "ws",
    )
    trade = {
        "type": "trade",
        "symbol": "BTCUSDT",
        "id": 9,
        "price": "100.10",
        "qty": "0.5",
        "first_trade_id": 20,
        "last_trade_id": 21,
        "time": 5,
        "buyer_is_maker": False,
    }
    (t,) = adapter.parse(orjson.dumps(trade))
    assert t == Trade(
        "json-gateway", "BTCUSDT", 9, Decimal("100.10"), Decimal("0.5"), 20, 21, 5, False
    )
    quote = {
        "type": "book_ticker",
        "symbol": "BTCUSDT",
        "bid_price": "1",
        "bid_qty": "2",
        "ask_price": "3",
        "ask_qty": "4",
        "update_id": 8,
        "time": 9,
    }
    (q,) = adapter.parse(orjson.dumps(quote))
    assert q == BookTicker(
        "json-gateway", "BTCUSDT", Decimal(1), Decimal(2), Decimal(3), Decimal(4), 8, 9
    )
    for bad in (
        b"not json",
        b"[1]",
        b'{"type":"WHAT"}',
        orjson.dumps({**trade, "price": 100.1}),  # a float price
        orjson.dumps({**trade, "price": "NaN"}),
        orjson.dumps({k: v for k, v in kline.items() if k != "closed"}),
    ):
        with pytest.raises(MalformedFrame):
            adapter.parse(bad)


def test_channels_and_streams() -> None:
    adapter = JsonGatewayAdapter()
    assert adapter.check_channel("kline_1m") is None
    assert adapter.check_channel("kline_7m") is None  # built from trades
    assert adapter.built_interval("kline_7m") == "7m"
    assert adapter.stream("BTCUSDT", "kline_7m").name == "BTCUSDT@aggTrade"
    assert adapter.stream("BTCUSDT", "bookTicker").name == "BTCUSDT@bookTicker"
    assert "did you mean 'aggTrade'" in (adapter.check_channel("aggTrades") or "")
    assert adapter.check_channel("depth") is not None
    assert adapter.connect_url(WS, "gateway", []) == WS


def test_rest_requests_and_bodies() -> None:
    adapter = JsonGatewayAdapter()
    assert adapter.klines_request("BTCUSDT", "1m", 1, 2, 10).target == (
        "/api/v1/klines?symbol=BTCUSDT&interval=1m&start_time=1&end_time=2&limit=10"
    )
    assert adapter.agg_trades_request("BTCUSDT", from_id=5, limit=3).target == (
        "/api/v1/trades?symbol=BTCUSDT&from_id=5&limit=3"
    )
    assert adapter.parse_server_time('{"server_time": 123}') == 123
    row = {
        "symbol": "BTCUSDT",
        "interval": "1m",
        "open_time": 0,
        "close_time": 59_999,
        "open": "1",
        "high": "1",
        "low": "1",
        "close": "1",
        "volume": "0",
        "quote_volume": "0",
        "trades": 0,
        "taker_buy_volume": "0",
        "taker_buy_quote_volume": "0",
    }
    (open_,) = adapter.parse_klines(orjson.dumps([row]), "BTCUSDT", "1m", 59_999)
    (closed,) = adapter.parse_klines(orjson.dumps([row]), "BTCUSDT", "1m", 60_000)
    assert (open_.closed, closed.closed, closed.source) == (False, True, "rest")
    with pytest.raises(MalformedFrame, match="gateway error"):
        adapter.parse_agg_trades('{"error": "unknown symbol"}', "BTCUSDT")
    with pytest.raises(MalformedFrame, match="/api/v1/time"):
        adapter.parse_server_time("[]")
