"""The Bitget adapters end to end on `FakeBitget`, in virtual time: klines, trades and books
delivered and true to the fake market, reconnects and REST backfill, book re-syncs, and the
text pings that keep a connection past Bitget's two-minute idle close."""

from __future__ import annotations

from typing import Any

import trio
from trio_feed import Feed
from trio_feed.events import BookTicker, BookUpdate, Event, Kline, MarkPrice, Trade
from trio_feed.testing.bitget import FakeBitget
from trio_websocket import ConnectionClosed, wrap_client_stream

from support import feed_on, make_config

FUT = "bitget-usdt-futures"


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


def config(channels: tuple[str, ...], exchange: str = FUT, **sections: Any) -> Any:
    sections.setdefault("reconciliation", {"depth_interval": 3600, "kline_interval": 3600})
    return make_config(
        symbols=("BTCUSDT", "ETHUSDT"), channels=channels, exchange=exchange, **sections
    )


async def record(fake: FakeBitget, cfg: Any, body: Any) -> Recorder:
    async with feed_on(fake, cfg) as feed:  # type: ignore[arg-type]
        recorder = Recorder(feed)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(recorder.run)
            await body(feed)
            await trio.sleep(0.5)  # let the last events through
            nursery.cancel_scope.cancel()
    return recorder


def assert_klines_true(rec: Recorder, fake: FakeBitget, symbol: str, interval: str) -> list[Kline]:
    """The closed klines (last revision of each) are the market's closed klines from the
    first one on: no gap, no duplicate, every field Bitget carries equal."""
    closed = [k for k in rec.of(Kline, symbol) if k.closed and k.interval == interval]
    assert closed, f"no closed {symbol} {interval} klines"
    first = [k for k in closed if k.revision == 0]
    times = [k.open_time for k in first]
    assert times == sorted(set(times)), "closed klines out of order or duplicated"
    final = {k.open_time: k for k in closed}
    truth = fake.market.klines(symbol, interval, start_time=times[0], end_time=times[-1])
    assert [b.open_time for b in truth] == times, "closed klines have a gap"
    for bar in truth:
        k = final[bar.open_time]
        assert (k.close_time, k.open, k.high, k.low, k.close, k.volume, k.quote_volume) == (
            bar.close_time,
            bar.open,
            bar.high,
            bar.low,
            bar.close,
            bar.volume,
            bar.quote_volume,
        ), bar.open_time
    return first


def assert_trades_true(rec: Recorder, fake: FakeBitget, symbol: str) -> list[Trade]:
    """Trades are the market's, each once, in id order (no completeness claim: Bitget ids
    do not allow gap detection)."""
    trades = rec.of(Trade, symbol)
    assert trades, f"no trades of {symbol}"
    ids = [t.id for t in trades]
    assert ids == sorted(set(ids)), "trades duplicated or out of order"
    truth = {a.agg_id: a for a in fake.market.trades(symbol)}
    for t in trades:
        a = truth[t.id]
        assert (t.price, t.qty, t.time, t.buyer_is_maker) == (
            a.price,
            a.qty,
            a.time,
            a.buyer_is_maker,
        )
    return trades


def assert_books_true(rec: Recorder, fake: FakeBitget, symbol: str, depth: int = 20) -> int:
    """Every ``book`` event is the market's book at its seq (after a REST join, whose id is
    ``-ts``, at the book step of that time)."""
    events = rec.of(BookUpdate, symbol)
    assert events, f"no book events of {symbol}"
    steps = {s.time: s.last_update_id for s in fake.market.depth_steps(symbol)}
    for event in events:
        uid = event.last_update_id
        if uid < 0:
            uid = steps[-uid]
        truth = fake.market.book_at(symbol, uid, depth)
        assert event.bids == tuple(truth.bids[:depth]), (symbol, event.last_update_id)
        assert event.asks == tuple(truth.asks[:depth]), (symbol, event.last_update_id)
    return len(events)


async def test_klines_trades_and_tickers_delivered(autojump_clock):
    channels = ("kline_1m", "kline_5m", "aggTrade", "bookTicker", "markPrice")
    async with FakeBitget(seed=1) as fake:

        async def body(feed: Feed) -> None:
            await trio.sleep(11 * 60)

        rec = await record(fake, config(channels), body)
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert len(assert_klines_true(rec, fake, symbol, "1m")) >= 10
            assert len(assert_klines_true(rec, fake, symbol, "5m")) >= 2
            assert len(assert_trades_true(rec, fake, symbol)) > 1000
            assert rec.of(BookTicker, symbol) and rec.of(MarkPrice, symbol)
        assert all(k.source == "ws" for k in rec.of(Kline))  # nothing needed REST
        assert len(fake.connections) == 1  # 50 streams per connection: one is enough
        # One subscribe request for all 8 channels, acknowledged channel by channel.
        subscribes = [m for m in fake.connections[0].messages_received if m != "ping"]
        assert len(subscribes) == 1


async def test_books_from_the_stream_snapshot(autojump_clock):
    async with FakeBitget(seed=9) as fake:

        async def body(feed: Feed) -> None:
            await trio.sleep(60)

        rec = await record(fake, config(("depth",)), body)
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert assert_books_true(rec, fake, symbol) > 500
            assert all(e.last_update_id > 0 for e in rec.of(BookUpdate, symbol))
        assert not fake.rest_calls["/api/v2/mix/market/merge-depth"]  # no REST book needed


async def test_spot_market(autojump_clock):
    async with FakeBitget(seed=2, inst_type="SPOT") as fake:

        async def body(feed: Feed) -> None:
            await trio.sleep(3 * 60)

        rec = await record(
            fake,
            config(("kline_1m", "aggTrade", "depth", "bookTicker"), exchange="bitget-spot"),
            body,
        )
        assert len(assert_klines_true(rec, fake, "BTCUSDT", "1m")) >= 2
        assert_trades_true(rec, fake, "ETHUSDT")
        assert assert_books_true(rec, fake, "BTCUSDT") > 500
        assert {e.exchange for e in rec.of(Kline)} == {"bitget-spot"}
        assert not rec.of(MarkPrice)


async def test_a_drop_and_reconnect_loses_no_closed_kline(autojump_clock):
    async with FakeBitget(seed=3) as fake:

        async def body(feed: Feed) -> None:
            await trio.sleep(70.3)
            assert fake.drop_connections() == 1
            await trio.sleep(100)

        rec = await record(fake, config(("kline_1m", "aggTrade", "depth")), body)
        assert len(fake.connections) == 2
        assert fake.connections[0].close_reason == "dropped"
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert len(assert_klines_true(rec, fake, symbol, "1m")) >= 2
            trades = assert_trades_true(rec, fake, symbol)
            # Trades on both sides of the drop came out.
            assert trades[0].time < 70_000 + fake.start_time_ms < trades[-1].time
            books = rec.of(BookUpdate, symbol)
            assert books[0].time < 70_000 + fake.start_time_ms < books[-1].time
            assert assert_books_true(rec, fake, symbol) > 500


async def test_backfill_from_rest_after_a_long_gap(autojump_clock):
    # The subscribe snapshot holds only the open candle: a gap can only be filled by REST.
    async with FakeBitget(seed=4, snapshot_candles=1) as fake:

        async def body(feed: Feed) -> None:
            await trio.sleep(90.3)
            fake.refuse_next(6)
            fake.drop_connections()
            await trio.sleep(360)

        cfg = config(("kline_1m",), reconnect={"base_delay": 5.0, "max_delay": 60.0})
        rec = await record(fake, cfg, body)
        assert len(fake.connections) == 2
        for symbol in ("BTCUSDT", "ETHUSDT"):
            klines = assert_klines_true(rec, fake, symbol, "1m")
            assert {k.source for k in klines} == {"ws", "rest"}
            assert len(klines) >= 6
        assert fake.rest_calls["/api/v2/mix/market/candles"] >= 2


async def test_book_sequence_break_resyncs_from_rest(autojump_clock):
    async with FakeBitget(seed=5) as fake:

        async def body(feed: Feed) -> None:
            await trio.sleep(20.3)
            fake.skip_book_update("BTCUSDT")
            await trio.sleep(20)
            fake.duplicate_book_update("ETHUSDT")
            await trio.sleep(20)
            fake.resend_book_snapshot("BTCUSDT")
            await trio.sleep(20)

        rec = await record(fake, config(("depth",)), body)
        assert fake.books_skipped and fake.books_skipped[0][0] == "BTCUSDT"
        # Each break cost one REST book (the stream snapshot needed none).
        depth = [p for path, p in fake.rest_requests if path == "/api/v2/mix/market/merge-depth"]
        assert sorted(p["symbol"] for p in depth) == ["BTCUSDT", "ETHUSDT"]
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert assert_books_true(rec, fake, symbol) > 500
            # After the re-sync, events with real seqs came again.
            assert rec.of(BookUpdate, symbol)[-1].last_update_id > 0
        assert any(e.last_update_id < 0 for e in rec.of(BookUpdate))  # the REST joins
        skipped_seq = fake.books_skipped[0][1]
        assert skipped_seq not in {e.last_update_id for e in rec.of(BookUpdate, "BTCUSDT")}


async def test_text_pings_keep_the_connection_past_the_idle_timeout(autojump_clock):
    async with FakeBitget(seed=6) as fake:

        async def body(feed: Feed) -> None:
            await trio.sleep(400)

        rec = await record(fake, config(("kline_1m",)), body)
        (conn,) = fake.connections
        assert conn.close_reason in (None, "client")  # never idle-closed
        assert conn.pings_received >= 400 // 20 - 1
        assert len(assert_klines_true(rec, fake, "BTCUSDT", "1m")) >= 5


async def test_a_silent_client_is_closed_after_two_minutes(autojump_clock):
    # The fault the pings prevent is real: without them the fake closes the connection.
    async with FakeBitget(seed=7) as fake, trio.open_nursery() as nursery:
        stream = await fake.connect("wss://ws.bitget.com/v2/ws/public")
        ws = await wrap_client_stream(nursery, stream, "ws.bitget.com", "/v2/ws/public")
        await ws.send_message(
            '{"op":"subscribe","args":[{"instType":"USDT-FUTURES","channel":"candle1m",'
            '"instId":"BTCUSDT"}]}'
        )
        start = trio.current_time()
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed:
            pass
        assert 120 <= trio.current_time() - start < 121
        assert fake.connections[0].close_reason == "idle"
        nursery.cancel_scope.cancel()


async def test_fake_rejects_unknown_channels_and_answers_rest_errors(autojump_clock):
    async with FakeBitget(seed=8) as fake, trio.open_nursery() as nursery:
        stream = await fake.connect("wss://ws.bitget.com/v2/ws/public")
        ws = await wrap_client_stream(nursery, stream, "ws.bitget.com", "/v2/ws/public")
        await ws.send_message(
            '{"op":"subscribe","args":[{"instType":"USDT-FUTURES","channel":"candle1m",'
            '"instId":"NOPEUSDT"}]}'
        )
        reply = await ws.get_message()
        assert '"event":"error"' in reply and '"code":30001' in reply
        await ws.send_message("ping")
        assert await ws.get_message() == "pong"
        fake.rest_error("/api/v2/public/time", code="40001", msg="busy")
        import httpx

        async with httpx.AsyncClient(
            transport=fake.rest_transport, base_url="https://api.bitget.com"
        ) as client:
            first = (await client.get("/api/v2/public/time")).json()
            second = (await client.get("/api/v2/public/time")).json()
        assert (first["code"], first["msg"]) == ("40001", "busy")
        assert second["code"] == "00000" and int(second["data"]["serverTime"]) > 0
        nursery.cancel_scope.cancel()
