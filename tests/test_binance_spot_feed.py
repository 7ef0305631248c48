"""Binance spot end to end: `open_feed` on `FakeBinanceSpot`, in virtual time.

Klines and trades complete across drops and a long outage (REST backfill from ``/api/v3``),
books kept in sync under ``U == previous u + 1`` and re-synced after a break, the server's
20 s pings answered past its one-minute timeout, and the fake's spot wire format itself.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import trio
from trio_feed import Feed
from trio_feed.events import BookTicker, BookUpdate, Event, Kline, Trade
from trio_feed.testing.binance_spot import FakeBinanceSpot
from trio_websocket import ConnectionRejected, wrap_client_stream

from support import (
    FAKE_WS,
    assert_klines_complete,
    assert_trades_complete,
    feed_on,
    make_config,
)

DEPTH = "/api/v3/depth"


class Recorder:
    def __init__(self, feed: Feed) -> None:
        self.sub = feed.events(max_buffer=10_000_000)
        self.events: list[Event] = []

    async def run(self) -> None:
        async for event in self.sub:
            self.events.append(event)

    def of(self, cls: type[Any], symbol: str | None = None) -> list[Any]:
        return [
            e
            for e in self.events
            if isinstance(e, cls) and (symbol is None or getattr(e, "symbol", None) == symbol)
        ]


def spot_config(channels: tuple[str, ...], **sections: Any) -> Any:
    sections.setdefault("reconciliation", {"depth_interval": 3600, "kline_interval": 3600})
    return make_config(exchange="binance-spot", channels=channels, **sections)


def assert_books_true(rec: Recorder, fake: FakeBinanceSpot, symbol: str, depth: int = 20) -> int:
    books: list[BookUpdate] = rec.of(BookUpdate, symbol)
    assert books, f"no book events of {symbol}"
    for event in books:
        truth = fake.market.book_at(symbol, event.last_update_id, depth)
        assert event.bids == tuple(truth.bids[:depth]), (symbol, event.last_update_id)
        assert event.asks == tuple(truth.asks[:depth]), (symbol, event.last_update_id)
    ids = [e.last_update_id for e in books]
    assert ids == sorted(ids)
    return len(books)


def snapshots(fake: FakeBinanceSpot, symbol: str) -> int:
    return sum(1 for r in fake.rest_requests if r.path == DEPTH and r.params["symbol"] == symbol)


async def test_klines_trades_and_tickers_are_delivered(autojump_clock: Any) -> None:
    cfg = spot_config(("aggTrade", "kline_1m", "bookTicker"))
    async with FakeBinanceSpot(seed=1) as fake, feed_on(fake, cfg) as feed:
        rec = Recorder(feed)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rec.run)
            await trio.sleep(185)
            nursery.cancel_scope.cancel()
        [conn] = fake.connections
        assert conn.path.startswith("/stream?streams=btcusdt@aggTrade/")
        for symbol in ("BTCUSDT", "ETHUSDT"):
            trades = rec.of(Trade, symbol)
            assert all(t.exchange == "binance-spot" and t.source == "ws" for t in trades)
            assert_trades_complete(trades, fake, symbol)
            assert len(assert_klines_complete(rec.of(Kline), fake, symbol, "1m")) >= 2
            tickers: list[BookTicker] = rec.of(BookTicker, symbol)
            assert tickers and all(t.time == 0 for t in tickers)
            quote = fake.market.best_quote(symbol)
            assert (tickers[-1].bid_price, tickers[-1].ask_price) == (
                quote.bid_price,
                quote.ask_price,
            )


async def test_a_drop_and_reconnect_loses_nothing(autojump_clock: Any) -> None:
    cfg = spot_config(("aggTrade", "kline_1m"), reconnect={"base_delay": 2.0, "jitter_ratio": 0})
    async with FakeBinanceSpot(seed=2) as fake, feed_on(fake, cfg) as feed:
        rec = Recorder(feed)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rec.run)
            await trio.sleep(30.3)
            assert fake.drop_connections(route="ws") == 1
            await trio.sleep(50.7)
            assert fake.drop_connections() == 1
            await trio.sleep(100)
            nursery.cancel_scope.cancel()
        assert len(fake.connections) == 3
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert_trades_complete(rec.of(Trade, symbol), fake, symbol)
            assert len(assert_klines_complete(rec.of(Kline), fake, symbol, "1m")) >= 2


async def test_a_long_outage_is_backfilled_from_rest(autojump_clock: Any) -> None:
    cfg = spot_config(
        ("aggTrade", "kline_1m"),
        reconnect={"base_delay": 30.0, "max_delay": 60.0, "jitter_ratio": 0, "max_retries": 0},
    )
    async with FakeBinanceSpot(seed=3) as fake, feed_on(fake, cfg) as feed:
        rec = Recorder(feed)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rec.run)
            await trio.sleep(70.3)
            fake.refuse_next(3)  # about 3.5 minutes without a connection
            fake.drop_connections()
            await trio.sleep(400)
            nursery.cancel_scope.cancel()
        assert fake.rest_calls["/api/v3/klines"] >= 1
        assert fake.rest_calls["/api/v3/aggTrades"] >= 1
        for symbol in ("BTCUSDT", "ETHUSDT"):
            klines = assert_klines_complete(rec.of(Kline), fake, symbol, "1m")
            assert len(klines) >= 6
            assert any(k.source == "rest" for k in klines)  # the minutes of the outage
            trades = rec.of(Trade, symbol)
            assert_trades_complete(trades, fake, symbol)
            assert any(t.source == "rest" for t in trades)
        status = feed.status().venues[0]
        assert status.klines_backfilled >= 6 and status.trades_backfilled > 0
        assert fake.rest_weight_requested_max <= 6000


async def test_books_follow_the_exchange_and_a_break_resyncs(autojump_clock: Any) -> None:
    cfg = spot_config(("depth",))
    async with FakeBinanceSpot(seed=4) as fake, feed_on(fake, cfg) as feed:
        rec = Recorder(feed)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rec.run)
            await trio.sleep(20.3)
            assert snapshots(fake, "BTCUSDT") == 1
            fake.skip_depth_update("BTCUSDT")
            await trio.sleep(20.1)
            fake.duplicate_depth_update("ETHUSDT")  # a repeat breaks the chain too
            await trio.sleep(20.2)
            view = feed.book("BTCUSDT", 5)
            nursery.cancel_scope.cancel()
        assert fake.depth_skipped and "pu" not in fake.depth_skipped[0]
        # The start and the re-sync (for ETHUSDT as on USD-M: the repeat is a break).
        assert snapshots(fake, "BTCUSDT") == snapshots(fake, "ETHUSDT") == 2
        assert fake.rest_requests[0].weight in (1, 50)  # time (1) or a 1000-level depth (50)
        assert {r.weight for r in fake.rest_requests if r.path == DEPTH} == {50}
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert assert_books_true(rec, fake, symbol) > 300
        assert view is not None
        truth = fake.market.book_at("BTCUSDT", view.last_update_id, 5)
        assert view.bids == tuple(truth.bids[:5]) and view.asks == tuple(truth.asks[:5])
        assert feed.status().venues[0].book_resyncs >= 1


async def test_a_stale_snapshot_is_fetched_again(autojump_clock: Any) -> None:
    async with FakeBinanceSpot(seed=5) as fake, feed_on(fake, spot_config(("depth",))) as feed:
        rec = Recorder(feed)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rec.run)
            await trio.sleep(20.3)
            # The re-sync after this break is first answered with a book 50 steps old.
            fake.stale_depth_snapshot("BTCUSDT", updates_behind=50)
            fake.skip_depth_update("BTCUSDT")
            await trio.sleep(20.1)
            nursery.cancel_scope.cancel()
        [stale] = fake.stale_snapshots
        assert stale.true_update_id - stale.last_update_id > 10
        assert snapshots(fake, "BTCUSDT") == 3  # the start, the stale one, a fresh one
        assert_books_true(rec, fake, "BTCUSDT")


async def test_server_pings_keep_the_connection_past_its_idle_timeout(autojump_clock: Any) -> None:
    cfg = spot_config(("kline_1m",))
    async with FakeBinanceSpot(seed=6) as fake, feed_on(fake, cfg) as feed:
        rec = Recorder(feed)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rec.run)
            await trio.sleep(300.5)  # five pong timeouts of 60 s
            nursery.cancel_scope.cancel()
        [conn] = fake.connections
        assert conn.is_open and conn.close_reason is None
        assert conn.pings_sent >= 14  # every 20 s, each answered
        assert conn.max_messages_in_window <= 5 and not conn.incoming_limit_exceeded
        assert fake.incoming_limit_violations == 0
        assert feed.status().connections[0].state == "SUBSCRIBED"
        assert len(assert_klines_complete(rec.of(Kline), fake, "BTCUSDT", "1m")) >= 4


async def test_a_silent_client_is_dropped_after_a_minute(autojump_clock: Any) -> None:
    # The other side of the keep-alive: a peer that never reads (so never answers a ping).
    async with FakeBinanceSpot(seed=7) as fake:
        stream = await fake.connect(FAKE_WS + "/ws/btcusdt@kline_1m")
        await stream.send_all(
            b"GET /ws/btcusdt@kline_1m HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        await trio.sleep(100)
        [conn] = fake.connections
        assert conn.close_reason == "pong-timeout"
        assert 80 <= conn.closed_at - conn.opened_at <= 81  # first ping at 20 s + 60 s


async def test_the_fake_speaks_spot(autojump_clock: Any) -> None:
    async with FakeBinanceSpot(seed=8) as fake, trio.open_nursery() as nursery:
        names = "btcusdt@depth/btcusdt@bookTicker/btcusdt@aggTrade/btcusdt@markPrice"
        path = "/stream?streams=" + names
        ws = await wrap_client_stream(nursery, await fake.connect(FAKE_WS + path), "x", path)
        seen: dict[str, dict[str, Any]] = {}
        with trio.move_on_after(5):
            while len(seen) < 3:
                msg = orjson.loads(await ws.get_message())
                seen.setdefault(msg["stream"], msg["data"])
        assert set(seen) == {"btcusdt@depth", "btcusdt@bookTicker", "btcusdt@aggTrade"}
        assert set(seen["btcusdt@depth"]) == {"e", "E", "s", "U", "u", "b", "a"}
        assert set(seen["btcusdt@bookTicker"]) == {"u", "s", "b", "B", "a", "A"}
        assert seen["btcusdt@aggTrade"]["M"] is True
        # The futures paths do not exist on spot.
        routed = "/market/stream?streams=btcusdt@aggTrade"
        with pytest.RaisesGroup(ConnectionRejected, flatten_subgroups=True) as rejected:
            async with trio.open_nursery() as inner:
                stream = await fake.connect(FAKE_WS + routed)
                await wrap_client_stream(inner, stream, "x", routed)
        assert "404" in str(rejected.value.exceptions[0])
        async with httpx.AsyncClient(transport=fake.rest_transport, base_url="https://x") as client:
            depth = await client.get("/api/v3/depth?symbol=BTCUSDT&limit=1000")
            assert set(depth.json()) == {"lastUpdateId", "bids", "asks"}
            assert depth.headers["X-MBX-USED-WEIGHT-1M"] == "50"
            info = (await client.get("/api/v3/exchangeInfo")).json()
            assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "ETHUSDT"]
            assert info["rateLimits"][0]["limit"] == 6000
            fake.delist_symbol("ETHUSDT")
            info = (await client.get("/api/v3/exchangeInfo")).json()
            assert info["symbols"][1]["status"] == "BREAK"
            rows = (await client.get("/api/v3/aggTrades?symbol=BTCUSDT&limit=3")).json()
            assert rows and all(r["M"] is True for r in rows)
            assert (
                await client.get("/api/v3/klines?symbol=BTCUSDT&interval=1m")
            ).status_code == 200
            assert (
                await client.get("/fapi/v1/klines?symbol=BTCUSDT&interval=1m")
            ).status_code == 404
            bad = await client.get("/api/v3/depth?symbol=BTCUSDT&limit=5001")
            assert bad.status_code == 400
        nursery.cancel_scope.cancel()
