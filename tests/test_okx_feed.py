"""The OKX adapter end to end on `FakeOkx`, in virtual time: klines and trades, drops and REST
backfill, books from the stream snapshot with seqId breaks and checksums, text pings."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from trio_feed import Feed
from trio_feed.events import BookUpdate, Event, Kline, StateChange, Trade
from trio_feed.testing.okx import FakeOkx

from support import feed_on, make_config

SWAP = "BTC-USDT-SWAP"
SPOT = "ETH-USDT"
BOOKS = "/api/v5/market/books"
HISTORY = "/api/v5/market/history-candles"


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


async def record(feed: Feed, seconds: float, during: Any = None) -> Recorder:
    """Record ``feed``'s events for ``seconds``; ``during(nursery)`` runs alongside."""
    rec = Recorder(feed)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rec.run)
        if during is not None:
            nursery.start_soon(during)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    return rec


def config(channels=("kline_1m", "aggTrade"), symbols=(SWAP, SPOT), **sections: Any):
    sections.setdefault("reconciliation", {"depth_interval": 3600, "kline_interval": 3600})
    return make_config(symbols=symbols, channels=channels, exchange="okx", **sections)


def assert_klines_true(
    rec: Recorder, fake: FakeOkx, inst: str, interval: str = "1m"
) -> list[Kline]:
    """The closed klines are the market's, from the first one on: no gap, no duplicate,
    every field OKX has equal (OKX candles carry no trade count or taker volumes)."""
    closed = [k for k in rec.of(Kline, inst) if k.closed and k.interval == interval]
    assert closed, f"no closed {inst} klines"
    times = [k.open_time for k in closed]
    assert times == sorted(set(times)), "closed klines out of order or duplicated"
    truth = fake.market.klines(
        fake.market_symbol(inst), interval, start_time=times[0], end_time=times[-1]
    )
    assert [t.open_time for t in truth] == times, "closed klines have a gap"
    for k, t in zip(closed, truth, strict=True):
        assert (k.close_time, k.open, k.high, k.low, k.close, k.volume, k.quote_volume) == (
            t.close_time, t.open, t.high, t.low, t.close, t.volume, t.quote_volume,
        )  # fmt: skip
    return closed


def assert_trades_true(rec: Recorder, fake: FakeOkx, inst: str) -> list[Trade]:
    """Every trade is the market's (tradeId = its last fill), ids increasing, no duplicate."""
    trades = rec.of(Trade, inst)
    assert trades, f"no trades of {inst}"
    ids = [t.id for t in trades]
    assert ids == sorted(set(ids))
    truth = {a.last_trade_id: a for a in fake.market.trades(fake.market_symbol(inst))}
    for t in trades:
        a = truth[t.id]
        assert (t.price, t.qty, t.first_trade_id, t.time, t.buyer_is_maker) == (
            a.price, a.qty, a.first_trade_id, a.time, a.buyer_is_maker,
        )  # fmt: skip
    return trades


def assert_books_true(rec: Recorder, fake: FakeOkx, inst: str, depth: int = 20) -> int:
    """Every ``book`` event of ``inst`` is the exchange's book at its seqId."""
    events = rec.of(BookUpdate, inst)
    assert events, f"no book events of {inst}"
    symbol = fake.market_symbol(inst)
    for event in events:
        truth = fake.market.book_at(symbol, event.last_update_id, depth)
        assert event.bids == truth.bids[:depth], (inst, event.last_update_id)
        assert event.asks == truth.asks[:depth], (inst, event.last_update_id)
    ids = [e.last_update_id for e in events]
    assert ids == sorted(ids)
    return len(events)


# ---- klines and trades ---------------------------------------------------------------------


async def test_klines_and_trades_on_their_two_routes(autojump_clock):
    async with FakeOkx(symbols=(SWAP, SPOT), seed=1) as fake, feed_on(fake, config()) as feed:
        rec = await record(feed, 200)
        status = feed.status()
    for inst in (SWAP, SPOT):
        assert len(assert_klines_true(rec, fake, inst)) >= 3
        trades = assert_trades_true(rec, fake, inst)
        # Every trade of the run went out (nothing was dropped), with its fills.
        truth = fake.market.trades(fake.market_symbol(inst), start_time=trades[0].time)
        assert [t.id for t in trades] == [a.last_trade_id for a in truth][: len(trades)]
        assert any(t.last_trade_id > t.first_trade_id for t in trades)  # count > 1 seen
    routes = sorted(c.route for c in fake.connections)
    assert routes == ["business", "public"]  # candles never share a socket with trades
    business = next(c for c in fake.connections if c.route == "business")
    assert business.subscriptions == [f"candle1m:{SWAP}", f"candle1m:{SPOT}"]
    # One batched subscribe request per connection (480 requests/hour are allowed).
    assert all(sum(m.startswith("{") for m in c.messages_received) == 1 for c in fake.connections)
    assert [c.state for c in status.connections] == ["SUBSCRIBED", "SUBSCRIBED"]


async def test_a_drop_loses_no_closed_kline_and_trades_resume_without_duplicates(autojump_clock):
    reconnect = {"base_delay": 30.0, "max_delay": 120.0, "jitter_ratio": 0.0}
    async with (
        FakeOkx(symbols=(SWAP,), seed=2) as fake,
        feed_on(fake, config(symbols=(SWAP,), reconnect=reconnect)) as feed,
    ):

        async def faults() -> None:
            await trio.sleep(70)
            fake.drop_connections()
            fake.refuse_next(6)  # both sockets stay away for minutes: klines are missed
            fake.rest_fault(HISTORY, "50011", "Too Many Requests", count=2)  # HTTP 200 errors

        rec = await record(feed, 600, faults)
    closed = assert_klines_true(rec, fake, SWAP)
    assert {k.source for k in closed} == {"ws", "rest"}  # the missed ones came from REST
    assert fake.rest_calls[HISTORY] >= 3  # two rate-limited answers, then the fill
    trades = assert_trades_true(rec, fake, SWAP)
    assert trades[-1].time > trades[0].time + 300_000  # trades went on after the reconnect
    assert len(fake.connections) >= 4
    states = [e.state for e in rec.of(StateChange)]
    assert "LOST" in states and states.count("SUBSCRIBED") >= 4


async def test_a_long_outage_is_backfilled_page_by_page_oldest_first(autojump_clock):
    reconnect = {"base_delay": 500.0, "max_delay": 4000.0, "jitter_ratio": 0.0, "max_retries": 0}
    async with (
        FakeOkx(symbols=(SWAP,), seed=3, trade_rate=0.2) as fake,
        feed_on(fake, config(channels=("kline_1m",), symbols=(SWAP,), reconnect=reconnect)) as feed,
    ):

        async def faults() -> None:
            await trio.sleep(130)
            fake.drop_connections()
            fake.refuse_next(3)  # 500 + 1000 + 2000 + 4000 s away: about 125 minutes missed

        rec = await record(feed, 8000, faults)
    closed = assert_klines_true(rec, fake, SWAP)
    rest = [k for k in closed if k.source == "rest"]
    assert len(rest) > 100  # more than one page of history-candles
    pages = [r for r in fake.rest_requests if r.startswith(HISTORY)]
    assert len(pages) >= 2
    assert closed[-1].open_time - closed[0].open_time >= 2 * 3600_000


# ---- books -----------------------------------------------------------------------------------


@pytest.mark.parametrize("checksum", [True, False])
async def test_books_sync_from_the_stream_snapshot(autojump_clock, checksum):
    async with (
        FakeOkx(symbols=(SWAP, SPOT), seed=4, checksum=checksum) as fake,
        feed_on(fake, config(channels=("depth",))) as feed,
    ):
        rec = await record(feed, 30)
        view = feed.book(SWAP)
    for inst in (SWAP, SPOT):
        assert assert_books_true(rec, fake, inst) > 200  # one per 100 ms update
    assert fake.rest_calls[BOOKS] == 0  # the stream's snapshot is enough
    assert view is not None
    truth = fake.market.book_at(fake.market_symbol(SWAP), view.last_update_id, 20)
    assert view.bids[:20] == truth.bids[:20]


async def test_a_skipped_update_resyncs_the_book_and_every_event_stays_true(autojump_clock):
    async with (
        FakeOkx(symbols=(SWAP, SPOT), seed=5) as fake,
        feed_on(fake, config(channels=("depth",))) as feed,
    ):

        async def faults() -> None:
            await trio.sleep(10)
            fake.skip_book_update(SWAP)
            await trio.sleep(10)
            fake.duplicate_book_update(SWAP)

        rec = await record(feed, 30, faults)
        books = feed.status().venues[0]
    assert len(fake.skipped_updates) == 1
    assert assert_books_true(rec, fake, SWAP) > 150
    assert assert_books_true(rec, fake, SPOT) > 250
    assert fake.rest_calls[BOOKS] == 2  # one REST snapshot per break, SWAP only
    assert all(f"instId={SWAP}" in r for r in fake.rest_requests if r.startswith(BOOKS))
    assert books.books_synced == 2
    # The skipped seqId never shows up as a book event.
    assert fake.skipped_updates[0][1] not in {e.last_update_id for e in rec.of(BookUpdate, SWAP)}


async def test_a_wrong_checksum_is_a_break(autojump_clock):
    async with (
        FakeOkx(symbols=(SWAP,), seed=6) as fake,
        feed_on(fake, config(channels=("depth",), symbols=(SWAP,))) as feed,
    ):

        async def faults() -> None:
            await trio.sleep(10)
            fake.corrupt_checksum(SWAP)

        rec = await record(feed, 20, faults)
    assert assert_books_true(rec, fake, SWAP) > 150
    assert fake.rest_calls[BOOKS] == 1


async def test_a_resent_snapshot_resets_the_book_without_rest(autojump_clock):
    async with (
        FakeOkx(symbols=(SWAP,), seed=7) as fake,
        feed_on(fake, config(channels=("depth",), symbols=(SWAP,))) as feed,
    ):

        async def faults() -> None:
            await trio.sleep(5)
            fake.resend_snapshot(SWAP)
            await trio.sleep(0.05)
            fake.resend_snapshot(SWAP)  # twice at the same seqId: still fine

        rec = await record(feed, 15, faults)
    assert assert_books_true(rec, fake, SWAP) > 100
    assert fake.rest_calls[BOOKS] == 0


async def test_heartbeats_of_a_quiet_book_keep_the_chain(autojump_clock):
    async with FakeOkx(symbols=(SWAP,), seed=8, book_activity=0.05, book_heartbeat=1.0) as fake:
        async with feed_on(fake, config(channels=("depth",), symbols=(SWAP,))) as feed:
            rec = await record(feed, 60)
    assert fake.heartbeats_sent >= 10  # empty updates with prevSeqId == seqId
    assert assert_books_true(rec, fake, SWAP) >= 2
    assert fake.rest_calls[BOOKS] == 0  # none of them broke the chain


async def test_books_and_trades_and_candles_in_one_feed_after_a_drop(autojump_clock):
    async with (
        FakeOkx(symbols=(SWAP,), seed=9) as fake,
        feed_on(fake, config(channels=("kline_1m", "aggTrade", "depth"), symbols=(SWAP,))) as feed,
    ):

        async def faults() -> None:
            await trio.sleep(65)
            fake.drop_connections("public")

        rec = await record(feed, 190, faults)
    assert_books_true(rec, fake, SWAP)
    assert_klines_true(rec, fake, SWAP)
    assert_trades_true(rec, fake, SWAP)
    business = [c for c in fake.connections if c.route == "business"]
    assert len(business) == 1 and business[0].close_reason == "client"  # untouched by the drop
    assert len([c for c in fake.connections if c.route == "public"]) == 2


# ---- liveness --------------------------------------------------------------------------------


async def test_text_pings_keep_connections_past_the_30s_idle_close(autojump_clock):
    async with (
        FakeOkx(symbols=(SWAP,), seed=10, trade_rate=0.0) as fake,
        feed_on(fake, config(channels=("aggTrade",), symbols=(SWAP,))) as feed,
    ):
        await trio.sleep(150)  # no trade at all: only pings keep it alive
        assert len(fake.connections) == 1
        record_ = fake.connections[0]
        assert record_.is_open
        assert record_.pings_received >= 6 and record_.pongs_sent == record_.pings_received
        assert feed.status().connections[0].state == "SUBSCRIBED"


async def test_without_pings_within_30s_okx_closes_the_connection(autojump_clock, monkeypatch):
    # The config refuses a ping interval of 30 s or more for okx; lift that check here to
    # show why it is there.
    from trio_feed.venues.okx import OkxAdapter

    monkeypatch.setattr(OkxAdapter, "max_ping_interval", 3600.0)
    ping = {"interval": 45.0, "timeout": 10.0}
    async with (
        FakeOkx(symbols=(SWAP,), seed=11, trade_rate=0.0) as fake,
        feed_on(fake, config(channels=("aggTrade",), symbols=(SWAP,), ping=ping)) as feed,
    ):
        await trio.sleep(40)
        assert fake.connections[0].close_reason == "idle"
        assert len(fake.connections) >= 2  # and the feed reconnected
        assert feed.status().connections[0].state == "SUBSCRIBED"


async def test_an_unanswered_ping_means_lost_then_reconnected(autojump_clock):
    async with (
        FakeOkx(symbols=(SWAP,), seed=12) as fake,
        feed_on(fake, config(channels=("aggTrade",), symbols=(SWAP,))) as feed,
    ):

        async def faults() -> None:
            await trio.sleep(5)
            fake.ignore_pings()
            await trio.sleep(30)
            fake.ignore_pings(False)

        rec = await record(feed, 90, faults)
    states = [e.state for e in rec.of(StateChange)]
    assert "LOST" in states
    assert len(fake.connections) >= 2
    assert fake.connections[-1].is_open or fake.connections[-1].close_reason == "client"
    assert_trades_true(rec, fake, SWAP)
