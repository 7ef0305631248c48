"""Bybit end to end: `open_feed` on `FakeBybit` in virtual time (klines, trades, books,
reconnects, REST backfill, sequence breaks, app-level pings)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio
from trio_feed import Feed, FeedConfig, open_feed
from trio_feed.events import (
    BookTicker,
    BookUpdate,
    Event,
    Kline,
    MarkPrice,
    Reconcile,
    StateChange,
    Trade,
)
from trio_feed.testing.bybit import FakeBybit
from trio_websocket import wrap_client_stream

from support import make_config

KLINE = "/v5/market/kline"
ORDERBOOK = "/v5/market/orderbook"


def config(exchange: str, channels: tuple[str, ...], **sections: Any) -> FeedConfig:
    sections.setdefault("reconciliation", {"depth_interval": 3600, "kline_interval": 3600})
    return make_config(exchange=exchange, channels=channels, **sections)


@asynccontextmanager
async def bybit_feed(fake: FakeBybit, cfg: FeedConfig) -> AsyncIterator[Feed]:
    async with open_feed(
        cfg,
        connector=fake.connect,
        rest_transport=fake.rest_transport,
        wall_clock=fake.now_ms,
        seed=1,
    ) as feed:
        yield feed


async def record(feed: Feed, seconds: float, during: Any = None) -> list[Event]:
    """Every event of ``feed`` for ``seconds``; ``during(fake)`` runs alongside."""
    events: list[Event] = []

    async def collect() -> None:
        async for event in feed.events(max_buffer=10_000_000):
            events.append(event)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect)
        if during is not None:
            nursery.start_soon(during)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    return events


def of(events: list[Event], cls: type[Any], symbol: str | None = None) -> list[Any]:
    return [e for e in events if isinstance(e, cls) and (symbol is None or e.symbol == symbol)]


def assert_klines_true(events: list[Event], fake: FakeBybit, symbol: str) -> list[Kline]:
    """Closed 1m klines of ``symbol``: in order, no gap, no duplicate, each equal to the
    market's (Bybit has no trade counts or taker volumes: those are 0)."""
    closed = [k for k in of(events, Kline, symbol) if k.closed and k.interval == "1m"]
    assert closed, f"no closed klines of {symbol}"
    times = [k.open_time for k in closed]
    assert times == sorted(set(times)), "closed klines out of order or duplicated"
    truth = fake.market.klines(symbol, "1m", start_time=times[0], end_time=times[-1])
    assert [t.open_time for t in truth] == times, "closed klines have a gap"
    for k, t in zip(closed, truth, strict=True):
        assert (k.close_time, k.open, k.high, k.low, k.close, k.volume, k.quote_volume) == (
            t.close_time,
            t.open,
            t.high,
            t.low,
            t.close,
            t.volume,
            t.quote_volume,
        )
        assert (k.trades, k.taker_buy_volume) == (0, 0)
    return closed


def assert_trades_true(events: list[Event], fake: FakeBybit, symbol: str) -> list[Trade]:
    """Every trade is the market's trade with that id, each once, in order."""
    trades = of(events, Trade, symbol)
    assert trades, f"no trades of {symbol}"
    ids = [t.id for t in trades]
    assert ids == sorted(set(ids))
    first = fake.market.first_agg_id(symbol)
    truth = {a.agg_id: a for a in fake.market.trades(symbol)}
    for t in trades:
        a = truth[t.id]
        assert t.id >= first
        assert (t.price, t.qty, t.time, t.buyer_is_maker) == (
            a.price,
            a.qty,
            a.time,
            a.buyer_is_maker,
        )
    return trades


def assert_books_true(events: list[Event], fake: FakeBybit, symbol: str) -> int:
    books = of(events, BookUpdate, symbol)
    assert books, f"no books of {symbol}"
    for book in books:
        truth = fake.market.book_at(symbol, book.last_update_id, 20)
        assert (book.bids, book.asks) == (truth.bids, truth.asks), book.last_update_id
    return len(books)


def rest_calls(fake: FakeBybit, path: str) -> int:
    return sum(1 for p, _ in fake.rest_requests if p == path)


# ---- streams ------------------------------------------------------------------------------


async def test_linear_klines_trades_marks_and_tickers(autojump_clock: Any) -> None:
    channels = ("kline_1m", "aggTrade", "markPrice", "bookTicker")
    async with FakeBybit(seed=1) as fake, bybit_feed(fake, config("bybit-linear", channels)) as f:
        events = await record(f, 185)
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert len(assert_klines_true(events, fake, symbol)) >= 2
            assert len(assert_trades_true(events, fake, symbol)) > 300
            marks = of(events, MarkPrice, symbol)
            assert len(marks) > 100
            # Prices depend on the last trade then; the funding only on the second.
            truth = fake.market.mark_price(symbol, marks[-1].time)
            assert (marks[-1].funding_rate, marks[-1].next_funding_time) == (
                truth.funding_rate,
                truth.next_funding_time,
            )
            assert abs(marks[-1].mark_price - fake.market.last_price(symbol)) < 100
            tickers = of(events, BookTicker, symbol)
            assert len(tickers) > 100
            for t in tickers[::50]:
                best = fake.market.book_at(symbol, t.update_id, 1)
                assert (t.bid_price, t.bid_qty, t.ask_price, t.ask_qty) == (
                    *best.bids[0],
                    *best.asks[0],
                )
        assert all(e.exchange == "bybit-linear" for e in of(events, Kline))
        assert len(fake.connections) == 1
        (subscribe,) = [m for m in fake.connections[0].control_messages if "subscribe" in m]
        assert orjson.loads(subscribe)["req_id"] == "1"


async def test_spot_drop_and_reconnect_backfills_klines_from_rest(autojump_clock: Any) -> None:
    cfg = config("bybit-spot", ("kline_1m", "aggTrade"))
    async with FakeBybit(seed=2) as fake, bybit_feed(fake, cfg) as feed:

        async def faults() -> None:
            await trio.sleep(70.3)
            # Down for 1 + 2 + 4 + 8 + 16 + 32 s of backoff: over a kline close.
            fake.refuse_next(6)
            fake.drop_connections()

        events = await record(feed, 260, faults)
        for symbol in ("BTCUSDT", "ETHUSDT"):
            closed = assert_klines_true(events, fake, symbol)
            assert len(closed) >= 3
            assert any(k.source == "rest" for k in closed)
            assert_trades_true(events, fake, symbol)
        assert rest_calls(fake, KLINE) >= 2
        assert fake.refused == 6 and len(fake.connections) == 2
        assert fake.connections[0].close_reason == "dropped"
        states = [e.state for e in of(events, StateChange)]
        assert "LOST" in states and states[-1] == "SUBSCRIBED"
        # Spot subscribes with at most 10 args per request.
        for m in fake.connections[1].control_messages:
            assert len(orjson.loads(m).get("args", [])) <= 10


# ---- order books --------------------------------------------------------------------------


async def test_book_syncs_from_the_stream_snapshot(autojump_clock: Any) -> None:
    async with FakeBybit(seed=3) as fake, bybit_feed(fake, config("bybit-linear", ("depth",))) as f:

        async def faults() -> None:
            await trio.sleep(20.05)
            fake.resend_snapshot("BTCUSDT")

        events = await record(f, 40, faults)
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert assert_books_true(events, fake, symbol) > 150  # one per 200 ms delta
        assert rest_calls(fake, ORDERBOOK) == 0  # the stream's snapshots need no REST
        view = f.book("BTCUSDT", 5)
        assert view is not None
        truth = fake.market.book_at("BTCUSDT", view.last_update_id, 5)
        assert (view.bids, view.asks) == (truth.bids, truth.asks)


async def test_duplicate_delta_breaks_and_resyncs_from_rest(autojump_clock: Any) -> None:
    async with FakeBybit(seed=4) as fake, bybit_feed(fake, config("bybit-spot", ("depth",))) as f:

        async def faults() -> None:
            await trio.sleep(10.05)
            fake.duplicate_depth_update("BTCUSDT")

        events = await record(f, 30, faults)
        assert fake.depth_duplicated
        assert rest_calls(fake, ORDERBOOK) == 1
        btc = assert_books_true(events, fake, "BTCUSDT")
        assert assert_books_true(events, fake, "ETHUSDT") > btc - 10
        repeated = fake.depth_duplicated[0]["data"]["u"]
        after = [b for b in of(events, BookUpdate, "BTCUSDT") if b.last_update_id > repeated]
        assert len(after) > 50  # in sync again, well before the end
        status = f.status().venues[0]
        assert status.books_synced == 2


async def test_skipped_delta_is_caught_by_the_depth_check(autojump_clock: Any) -> None:
    cfg = config(
        "bybit-linear", ("depth",), symbols=("BTCUSDT",), reconciliation={"depth_interval": 7.3}
    )
    async with FakeBybit(seed=5, symbols=("BTCUSDT",)) as fake, bybit_feed(fake, cfg) as f:

        async def faults() -> None:
            await trio.sleep(2.05)
            fake.skip_depth_update("BTCUSDT", 3)

        events = await record(f, 30, faults)
        assert len(fake.depth_skipped) == 3
        assert of(events, Reconcile)  # the REST book (u lines up) found the wrong levels
        last = of(events, BookUpdate, "BTCUSDT")[-1]
        truth = fake.market.book_at("BTCUSDT", last.last_update_id, 20)
        assert (last.bids, last.asks) == (truth.bids, truth.asks)


# ---- liveness -----------------------------------------------------------------------------


async def test_app_pings_keep_the_connection_past_the_idle_timeout(autojump_clock: Any) -> None:
    cfg = config("bybit-linear", ("aggTrade",))
    async with FakeBybit(seed=6, idle_timeout=60) as fake, bybit_feed(fake, cfg) as feed:
        events = await record(feed, 200)
        assert len(fake.connections) == 1 and fake.connections[0].is_open
        pings = [m for m in fake.connections[0].control_messages if m == '{"op":"ping"}']
        assert len(pings) >= 9  # every 20 s
        assert "LOST" not in [e.state for e in of(events, StateChange)]


async def test_a_silent_client_is_cut_after_the_idle_timeout(autojump_clock: Any) -> None:
    async with FakeBybit(seed=7, idle_timeout=60) as fake, trio.open_nursery() as nursery:
        stream = await fake.connect("wss://stream.bybit.com/v5/public/linear")
        ws = await wrap_client_stream(nursery, stream, "stream.bybit.com", "/v5/public/linear")
        await ws.send_message('{"req_id":"5","op":"subscribe","args":["publicTrade.BTCUSDT"]}')
        ack = orjson.loads(await ws.get_message())
        assert ack == {
            "success": True,
            "ret_msg": "",
            "conn_id": "fake",
            "req_id": "5",
            "op": "subscribe",
        }
        start = trio.current_time()
        while not fake.connections[0].closed_at:
            await trio.sleep(1)
        assert fake.connections[0].close_reason == "idle"
        # Cut at 60 s; the close handshake waits up to 5 s for a client that is not reading.
        assert 60 <= fake.connections[0].closed_at - start <= 66
        nursery.cancel_scope.cancel()
