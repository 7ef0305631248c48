"""Nothing lost: gap-free klines and trades across drops, clock skew, REST faults and
restarts; reconciliation; klines built from trades; history(). On the fake exchange, in
virtual time, compared with the fake market's own truth."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from trio_feed import Feed, Kline, Trade
from trio_feed.core.clock import MarketClock
from trio_feed.core.keeper import DataKeys, VenueData
from trio_feed.core.trade_klines import TradeKlineBuilder
from trio_feed.events import Event, Reconcile, StateChange
from trio_feed.plan import data_keys, plan_feed
from trio_feed.runtime.integrity import VenueIntegrity
from trio_feed.runtime.rest import DEFAULT_RETRY, RestClient, RestRateLimited
from trio_feed.runtime.sqlite_store import SqliteStore
from trio_feed.testing import FakeExchange
from trio_feed.venues import get_adapter

from support import (
    assert_klines_complete,
    assert_trades_complete,
    feed_on,
    kline_row,
    make_config,
)

VENUE = "binance-usdm"
MINUTE = 60.0
#: Reconnect slowly, so that refusals keep a connection down for minutes.
SLOW_RECONNECT = {"base_delay": 30.0, "max_delay": 60.0, "jitter_ratio": 0.0, "max_retries": 0}


class Recorder:
    """Every event of one subscription."""

    def __init__(self, feed: Feed) -> None:
        self.sub = feed.events(max_buffer=2_000_000)
        self.events: list[Event] = []

    async def run(self) -> None:
        async for event in self.sub:
            self.events.append(event)

    def trades(self, symbol: str) -> list[Trade]:
        return [e for e in self.events if isinstance(e, Trade) and e.symbol == symbol]

    def klines(self, symbol: str, interval: str) -> list[Kline]:
        return [
            e
            for e in self.events
            if isinstance(e, Kline) and e.symbol == symbol and e.interval == interval
        ]

    def of(self, cls: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]


def no_rate_limit_answers(fake: FakeExchange) -> bool:
    return all(r.status not in (418, 429) for r in fake.rest_requests)


def keep_down(fake: FakeExchange, route: str, refusals: int) -> None:
    """Drop ``route``'s connections and refuse the next reconnects."""
    fake.drop_connections(route=route)
    fake.refuse_next(refusals)


async def test_drops_inside_a_kline_and_across_several_lose_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    channels = ["aggTrade", "kline_1m", "kline_5m", "continuousKline_1m", "bookTicker"]
    config = make_config(channels=channels, reconnect=SLOW_RECONNECT)
    async with FakeExchange(seed=31, tick=0.5, kline_every=1) as fake:
        async with trio.open_nursery() as nursery, feed_on(fake, config) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            await trio.sleep(2.5 * MINUTE + 7.3)
            fake.drop_connections(route="market")  # back within the minute
            await trio.sleep(3 * MINUTE)
            keep_down(fake, "market", 3)  # down for about three minutes
            await trio.sleep(9 * MINUTE)
            status = feed.status()
            nursery.cancel_scope.cancel()
    venue = status.venues[0]
    assert venue.klines_backfilled > 0 and venue.trades_backfilled > 0
    assert venue.fill_errors == 0 and venue.gaps_abandoned == 0
    assert venue.klines_skipped == 0 and venue.trade_ids_skipped == 0
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert_trades_complete(rec.trades(symbol), fake, symbol)
        for interval in ("1m", "5m"):
            closed = assert_klines_complete(rec.klines(symbol, interval), fake, symbol, interval)
            assert closed[0].open_time == fake.start_time_ms
        one_minute = assert_klines_complete(rec.klines(symbol, "1m"), fake, symbol, "1m")
        assert len(one_minute) == 14
        assert {k.source for k in one_minute} == {"ws", "rest"}
        perpetual = f"{symbol}_PERPETUAL"
        continuous = assert_klines_complete(rec.klines(perpetual, "1m"), fake, perpetual, "1m")
        assert len(continuous) == 14
        assert any(k.source == "rest" for k in continuous)
    assert no_rate_limit_answers(fake)
    assert fake.rest_calls["/fapi/v1/continuousKlines"] > 0


async def test_repeated_drops_lose_nothing(autojump_clock: trio.testing.MockClock) -> None:
    rng = random.Random(7)
    config = make_config(channels=["aggTrade", "kline_1m", "kline_3m"])
    async with FakeExchange(seed=32, tick=0.5, kline_every=1) as fake:
        async with trio.open_nursery() as nursery, feed_on(fake, config) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            for _ in range(15):
                await trio.sleep(rng.uniform(5.0, 90.0))
                fake.drop_connections(route="market", abrupt=rng.random() < 0.5)
            await trio.sleep(4 * MINUTE)
            nursery.cancel_scope.cancel()
    for symbol in ("BTCUSDT", "ETHUSDT"):
        trades = rec.trades(symbol)
        assert_trades_complete(trades, fake, symbol)
        assert sum(t.source == "rest" for t in trades) > 10
        for interval in ("1m", "3m"):
            assert_klines_complete(rec.klines(symbol, interval), fake, symbol, interval)
    assert no_rate_limit_answers(fake)


@pytest.mark.parametrize("skew_hours", [-5, 3])
async def test_a_local_clock_hours_off_changes_nothing(
    autojump_clock: trio.testing.MockClock, skew_hours: int
) -> None:
    config = make_config(channels=["aggTrade", "kline_1m"], reconnect=SLOW_RECONNECT)
    skew = skew_hours * 3_600_000
    async with FakeExchange(seed=33, tick=0.5, kline_every=1) as fake:
        async with trio.open_nursery() as nursery, feed_on(fake, config, skew_ms=skew) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            await trio.sleep(2 * MINUTE + 11.1)
            keep_down(fake, "market", 3)
            await trio.sleep(6 * MINUTE)
            offset = feed.status().venues[0].clock_offset_ms
            nursery.cancel_scope.cancel()
    assert offset is not None and abs(offset + skew) < 1000
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert_trades_complete(rec.trades(symbol), fake, symbol)
        closed = assert_klines_complete(rec.klines(symbol, "1m"), fake, symbol, "1m")
        assert len(closed) == 8
    # Every kline fill asked for exchange times inside the market's life.
    fills = [r for r in fake.rest_requests if r.path == "/fapi/v1/klines"]
    assert fills
    for r in fills:
        if "startTime" in r.params:
            assert fake.start_time_ms <= int(r.params["startTime"]) <= r.time


@pytest.mark.parametrize(("status", "wait"), [(429, 45.0), (418, 130.0)])
async def test_rate_limit_answers_stop_every_rest_call_until_retry_after(
    autojump_clock: trio.testing.MockClock, status: int, wait: float
) -> None:
    config = make_config(channels=["aggTrade", "kline_1m"], reconnect=SLOW_RECONNECT)
    async with FakeExchange(seed=34, tick=0.5, kline_every=1) as fake:
        async with trio.open_nursery() as nursery, feed_on(fake, config) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            await trio.sleep(MINUTE + 5.1)
            fake.rest_fault("/fapi/v1/aggTrades", status, retry_after=wait)
            keep_down(fake, "market", 2)
            await trio.sleep(8 * MINUTE)
            nursery.cancel_scope.cancel()
    requests = fake.rest_requests
    limited = [i for i, r in enumerate(requests) if r.status == status]
    assert len(limited) == 1
    i = limited[0]
    # Requests already on the wire when the answer came (the fake answers in 5 ms) aside,
    # nothing at all, to any path, before Retry-After elapsed.
    after = [r for r in requests[i + 1 :] if r.time > requests[i].time + 10]
    assert after, "REST never resumed"
    assert after[0].time >= requests[i].time + wait * 1000
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert_trades_complete(rec.trades(symbol), fake, symbol)
        assert_klines_complete(rec.klines(symbol, "1m"), fake, symbol, "1m")


async def test_server_errors_are_retried_and_a_storm_loses_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = make_config(channels=["aggTrade", "kline_1m", "bookTicker"], reconnect=SLOW_RECONNECT)
    async with FakeExchange(seed=35, tick=0.5, kline_every=1) as fake:
        async with trio.open_nursery() as nursery, feed_on(fake, config) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            await trio.sleep(MINUTE + 5.1)
            fake.rest_fault("/fapi/v1/klines", 503, count=2)  # then success
            fake.rest_fault("/fapi/v1/aggTrades", 502, count=40)  # a storm
            keep_down(fake, "market", 2)  # back after about 2.5 minutes
            await trio.sleep(3 * MINUTE)
            storm = feed.status().venues[0]
            tickers_before = sum(1 for e in rec.events if type(e).__name__ == "BookTicker")
            await trio.sleep(MINUTE)
            tickers_after = sum(1 for e in rec.events if type(e).__name__ == "BookTicker")
            await trio.sleep(6 * MINUTE)
            status = feed.status()
            nursery.cancel_scope.cancel()
    assert storm.rest_retries >= 2
    assert storm.fill_errors > 0
    assert storm.last_fill_error is not None and "502" in storm.last_fill_error
    # The other connection kept serving its streams through the storm.
    assert tickers_after > tickers_before
    assert status.venues[0].gaps_abandoned == 0
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert_trades_complete(rec.trades(symbol), fake, symbol)
        assert_klines_complete(rec.klines(symbol, "1m"), fake, symbol, "1m")


@pytest.mark.parametrize(
    "body", ["<html>bad gateway</html>", "[[1767225600000, 1, 2]]", '{"unexpected": true}']
)
async def test_rest_bodies_that_do_not_parse_are_reported_and_retried(
    autojump_clock: trio.testing.MockClock, body: str
) -> None:
    config = make_config(channels=["kline_1m"], reconnect=SLOW_RECONNECT)
    async with FakeExchange(seed=36, tick=0.5, kline_every=1) as fake:
        async with trio.open_nursery() as nursery, feed_on(fake, config) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            await trio.sleep(MINUTE + 5.1)
            fake.rest_fault("/fapi/v1/klines", 200, body=body, count=2)
            keep_down(fake, "market", 2)  # back after about 2.5 minutes
            await trio.sleep(3 * MINUTE)
            failing = feed.status().venues[0]
            await trio.sleep(5 * MINUTE)
            nursery.cancel_scope.cancel()
    assert failing.fill_errors >= 1
    assert failing.last_fill_error is not None and "klines" in failing.last_fill_error
    for symbol in ("BTCUSDT", "ETHUSDT"):
        closed = assert_klines_complete(rec.klines(symbol, "1m"), fake, symbol, "1m")
        assert len(closed) == 9


async def test_a_range_the_exchange_refuses_is_given_up_loudly_and_the_feed_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = make_config(channels=["aggTrade"], reconnect=SLOW_RECONNECT)
    refusal = {"code": -4166, "msg": "Data older than 48 hours is not available."}
    async with FakeExchange(seed=37, tick=0.5) as fake:
        async with trio.open_nursery() as nursery, feed_on(fake, config) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            await trio.sleep(30.1)
            fake.rest_fault("/fapi/v1/aggTrades", 400, body=refusal, count=100)
            keep_down(fake, "market", 2)
            await trio.sleep(4 * MINUTE)
            status = feed.status()
            nursery.cancel_scope.cancel()
    venue = status.venues[0]
    # Per symbol: the catch-up after the reconnect, then the gap the first live trade showed.
    assert venue.gaps_abandoned == 4
    assert venue.trade_ids_skipped > 0
    assert venue.last_fill_error is not None and "-4166" in venue.last_fill_error
    for symbol in ("BTCUSDT", "ETHUSDT"):
        ids = [t.id for t in rec.trades(symbol)]
        assert ids == sorted(set(ids))  # still in order and unique, with a hole
        assert ids[-1] >= fake.market.trades(symbol, end_time=fake.now_ms() - 5000)[-1].agg_id


@pytest.mark.usefixtures("inline_sinks")
async def test_reconciliation_revises_a_kline_the_stream_got_wrong(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "feed.sqlite"
    config = make_config(
        channels=["kline_1m", "continuousKline_1m"],
        reconciliation={"kline_interval": 20.0},
        sinks=[{"kind": "sqlite", "path": str(db)}],
    )
    async with FakeExchange(seed=38, tick=0.5, kline_every=1) as fake:
        async with trio.open_nursery() as nursery, feed_on(fake, config) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            await trio.sleep(2 * MINUTE + 10.0)
            fake.distort_closed_klines("BTCUSDT", "1m")  # the close at 3:00 goes out wrong
            await trio.sleep(3 * MINUTE)
            status = feed.status()
            nursery.cancel_scope.cancel()
    bad_open = fake.start_time_ms + 2 * 60_000
    for symbol in ("BTCUSDT", "BTCUSDT_PERPETUAL"):
        reconciles = [r for r in rec.of(Reconcile) if r.symbol == symbol]
        assert [(r.interval, r.open_time, r.action) for r in reconciles] == [
            ("1m", bad_open, "revised")
        ]
        assert {m.split(":")[0] for m in reconciles[0].mismatches} == {"close", "volume"}
        versions = [k for k in rec.klines(symbol, "1m") if k.open_time == bad_open and k.closed]
        assert [(k.revision, k.source) for k in versions] == [(0, "ws"), (1, "rest")]
        truth = fake.market.klines("BTCUSDT", "1m", start_time=bad_open, limit=1)[0]
        assert kline_row(versions[1])[2:] == kline_row(truth)[2:]
        assert kline_row(versions[0])[2:] != kline_row(truth)[2:]
        # Everything else agreed: no other revision.
        assert all(k.revision == 0 for k in rec.klines(symbol, "1m") if k.open_time != bad_open)
        assert_klines_complete(rec.klines(symbol, "1m"), fake, symbol, "1m")
    assert status.venues[0].reconcile_mismatches == {"BTCUSDT": 1, "BTCUSDT_PERPETUAL": 1}
    assert status.venues[0].reconcile_checks >= 4
    with SqliteStore(db) as store:
        stored = store.klines(VENUE, "BTCUSDT", "1m", start=bad_open, limit=1)[0]
        assert (stored.revision, stored.source) == (1, "rest")
        assert kline_row(stored)[2:] == kline_row(truth)[2:]


def aggregate(
    klines: list[Kline], interval: str, open_time: int, close_time: int
) -> tuple[Any, ...]:
    """What the exchange's kline of a longer interval is, from its shorter klines."""
    traded = [k for k in klines if k.trades]
    return (
        open_time,
        close_time,
        traded[0].open if traded else klines[0].open,
        max(k.high for k in traded) if traded else klines[0].high,
        min(k.low for k in traded) if traded else klines[0].low,
        klines[-1].close,
        sum((k.volume for k in klines), Decimal(0)),
        sum((k.quote_volume for k in klines), Decimal(0)),
        sum(k.trades for k in klines),
        sum((k.taker_buy_volume for k in klines), Decimal(0)),
        sum((k.taker_buy_quote_volume for k in klines), Decimal(0)),
    )


async def test_klines_built_from_trades_agree_with_the_streamed_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = make_config(
        symbols=["BTCUSDT"],
        channels=["aggTrade", "kline_1m", "kline_1s", "kline_2m", "kline_7m"],
        reconnect=SLOW_RECONNECT,
    )
    async with FakeExchange(
        seed=39, symbols=["BTCUSDT"], tick=0.25, kline_every=2, trade_rate=0.7
    ) as fake:
        async with trio.open_nursery() as nursery, feed_on(fake, config) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            await trio.sleep(8 * MINUTE + 3.0)
            keep_down(fake, "market", 2)  # built klines come through a trade backfill
            await trio.sleep(14 * MINUTE)
            nursery.cancel_scope.cancel()
    streamed = assert_klines_complete(rec.klines("BTCUSDT", "1m"), fake, "BTCUSDT", "1m")
    trades = rec.trades("BTCUSDT")
    assert_trades_complete(trades, fake, "BTCUSDT")
    # 1. The builder over the feed's own trades gives the streamed 1m klines exactly.
    builder = TradeKlineBuilder(VENUE, "BTCUSDT", "1m")
    rebuilt = [k for t in trades for k in builder.add(t)]
    by_time = {k.open_time: k for k in streamed}
    compared = [k for k in rebuilt[1:] if k.open_time in by_time]  # the first may be partial
    assert len(compared) >= 18
    for k in compared:
        assert kline_row(k) == kline_row(by_time[k.open_time])
    # 2. The feed's built klines: no gap, source "trades", equal to the streamed minutes.
    for interval, minutes in (("2m", 2), ("7m", 7)):
        built = [k for k in rec.klines("BTCUSDT", interval) if k.closed]
        assert built and all(k.source == "trades" for k in built)
        times = [k.open_time for k in built]
        step = minutes * 60_000
        assert times == list(range(times[0], times[0] + step * len(times), step))
        for k in built[1:]:
            parts = [by_time[t] for t in range(k.open_time, k.open_time + step, 60_000)]
            assert kline_row(k)[2:] == aggregate(parts, interval, k.open_time, k.close_time)
    seconds = [k for k in rec.klines("BTCUSDT", "1s") if k.closed]
    times = [k.open_time for k in seconds]
    assert times == list(range(times[0], times[0] + 1000 * len(times), 1000))
    assert len(seconds) > 20 * 60 - 10
    for minute in compared:
        parts = [k for k in seconds if minute.open_time <= k.open_time <= minute.close_time]
        assert len(parts) == 60
        assert aggregate(parts, "1m", minute.open_time, minute.close_time) == kline_row(minute)[2:]
        # Quiet seconds carry the previous close, as the exchange's klines do.
        for prev, k in itertools.pairwise(parts):
            if k.trades == 0:
                assert k.open == k.high == k.low == k.close == prev.close
                assert k.volume == 0


async def test_history_merges_cache_and_rest_without_gap_or_duplicate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = make_config(channels=["kline_1m"], cache={"kline_max_size": 5})
    async with FakeExchange(seed=40, tick=0.5, kline_every=1) as fake:
        async with feed_on(fake, config) as feed:
            await trio.sleep(14 * MINUTE + 20.0)
            assert len(feed.klines("BTCUSDT", "1m")) == 5
            before = fake.rest_calls["/fapi/v1/klines"]
            bars = await feed.history("BTCUSDT", "1m", count=10)
            asked = fake.rest_calls["/fapi/v1/klines"] - before
            cached_only = await feed.history("BTCUSDT", "1m", count=4)
            asked_cached = fake.rest_calls["/fapi/v1/klines"] - before - asked
            other = await feed.history("ETHUSDT", "3m", count=3)  # not subscribed: REST only
            frame = await feed.history("BTCUSDT", "1m", count=6, as_frame=True)
            everything = await feed.history("BTCUSDT", "1m", count=1000)
    truth = fake.market.klines("BTCUSDT", "1m")
    assert [kline_row(k) for k in bars] == [kline_row(b) for b in truth[-10:]]
    assert all(k.closed for k in bars)
    assert {k.source for k in bars} == {"ws", "rest"}
    assert asked == 1
    assert [kline_row(k) for k in cached_only] == [kline_row(b) for b in truth[-4:]]
    assert asked_cached == 0
    three = fake.market.klines("ETHUSDT", "3m")
    assert [kline_row(k) for k in other] == [kline_row(b) for b in three[-3:]]
    assert [round(t.timestamp() * 1000) for t in frame.index] == [b.open_time for b in truth[-6:]]
    assert list(frame["close"]) == [b.close for b in truth[-6:]]
    assert [k.open_time for k in everything] == [b.open_time for b in truth]


async def test_history_refuses_to_wait_long_for_a_rate_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = make_config(channels=["kline_1m"])
    async with FakeExchange(seed=41, tick=0.5) as fake, feed_on(fake, config) as feed:
        await trio.sleep(3 * MINUTE)
        fake.rest_fault("/fapi/v1/klines", 418, retry_after=600)
        with pytest.raises(RestRateLimited):
            await feed.history("BTCUSDT", "1h", count=2)
        started = trio.current_time()
        with pytest.raises(RestRateLimited):
            await feed.history("BTCUSDT", "1h", count=2)
        assert trio.current_time() == started  # refused at once, no request sent
        with pytest.raises(ValueError, match="count"):
            await feed.history("BTCUSDT", "1m", count=0)


@pytest.mark.usefixtures("inline_sinks")
async def test_a_restart_resumes_from_the_store_and_the_store_equals_the_truth(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "data" / "feed.sqlite"
    config = make_config(
        channels=["aggTrade", "kline_1m", "kline_5m", "kline_1s"],
        sinks=[{"kind": "sqlite", "path": str(db)}],
    )
    runs: list[Recorder] = []
    async with FakeExchange(seed=42, tick=0.5, kline_every=1, trade_rate=0.5) as fake:
        for _ in range(2):
            async with trio.open_nursery() as nursery, feed_on(fake, config) as feed:
                rec = Recorder(feed)
                nursery.start_soon(rec.run)
                await trio.sleep(6 * MINUTE + 17.0)
                nursery.cancel_scope.cancel()
            runs.append(rec)
            await trio.sleep(7 * MINUTE)  # the feed is down; the market goes on
    first, second = runs
    with SqliteStore(db) as store:
        for symbol in ("BTCUSDT", "ETHUSDT"):
            # Both runs' events together: once each, in order, no gap.
            trades = first.trades(symbol) + second.trades(symbol)
            assert_trades_complete(trades, fake, symbol)
            assert second.trades(symbol)[0].id == first.trades(symbol)[-1].id + 1
            assert second.trades(symbol)[0].source == "rest"
            stored_trades = store.trades(VENUE, symbol)
            assert [kline_row_t(t) for t in stored_trades] == [kline_row_t(t) for t in trades]
            for interval in ("1m", "5m"):
                events = first.klines(symbol, interval) + second.klines(symbol, interval)
                closed = assert_klines_complete(events, fake, symbol, interval)
                assert closed[0].open_time == fake.start_time_ms
                stored = store.klines(VENUE, symbol, interval)
                assert [kline_row(k) for k in stored] == [kline_row(k) for k in closed]
                resumed = [k for k in second.klines(symbol, interval) if k.closed]
                assert resumed[0].source == "rest"
                last_first = [k for k in first.klines(symbol, interval) if k.closed][-1]
                assert resumed[0].open_time == last_first.open_time + (
                    60_000 if interval == "1m" else 300_000
                )
            # Seconds built from trades, rebuilt across the restart without a gap.
            seconds = [k for r in runs for k in r.klines(symbol, "1s") if k.closed]
            times = [k.open_time for k in seconds]
            assert times == list(range(times[0], times[0] + 1000 * len(times), 1000))
            stored_seconds = store.klines(VENUE, symbol, "1s")
            assert [k.open_time for k in stored_seconds] == times


def kline_row_t(t: Trade) -> tuple[Any, ...]:
    return (t.symbol, t.id, t.price, t.qty, t.first_trade_id, t.last_trade_id, t.time)


@pytest.mark.usefixtures("inline_sinks")
async def test_a_day_with_random_drops_delivers_and_stores_everything_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    rng = random.Random(2611)
    db = tmp_path / "feed.sqlite"
    config = make_config(
        channels=["aggTrade", "kline_1m", "kline_1h", "kline_7m"],
        reconnect={"max_retries": 0, "max_delay": 120.0},
        ping={"interval": 60.0, "timeout": 10.0},
        sinks=[{"kind": "sqlite", "path": str(db)}],
    )
    # A quiet market pushing every 10 s keeps a virtual day a few seconds of wall time.
    async with FakeExchange(
        seed=43, tick=10.0, kline_every=1, trade_rate=0.05, sent_history=None
    ) as fake:
        async with trio.open_nursery() as nursery, feed_on(fake, config) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            deadline = trio.current_time() + 24 * 3600
            drops = 0
            while trio.current_time() < deadline - 3600:
                await trio.sleep(rng.uniform(300, 3000) + 0.0171)
                fake.drop_connections(route="market", abrupt=rng.random() < 0.5)
                if rng.random() < 0.3:
                    fake.refuse_next(rng.randint(1, 5))
                drops += 1
            await trio.sleep(deadline - trio.current_time())
            status = feed.status()
            nursery.cancel_scope.cancel()
    assert drops > 15
    assert status.venues[0].gaps_abandoned == 0
    assert no_rate_limit_answers(fake)
    with SqliteStore(db) as store:
        for symbol in ("BTCUSDT", "ETHUSDT"):
            trades = rec.trades(symbol)
            assert_trades_complete(trades, fake, symbol)
            assert len(trades) > 3000
            assert [t.id for t in store.trades(VENUE, symbol)] == [t.id for t in trades]
            for interval, expected in (("1m", 24 * 60 - 1), ("1h", 23)):
                closed = assert_klines_complete(
                    rec.klines(symbol, interval), fake, symbol, interval
                )
                assert len(closed) >= expected
                stored = store.klines(VENUE, symbol, interval)
                assert [kline_row(k) for k in stored] == [kline_row(k) for k in closed]
            built = [k for k in rec.klines(symbol, "7m") if k.closed]
            times = [k.open_time for k in built]
            assert times == list(range(times[0], times[0] + 420_000 * len(times), 420_000))
            assert len(built) > 24 * 60 // 7 - 3
            assert [k.open_time for k in store.klines(VENUE, symbol, "7m")] == times


@pytest.mark.usefixtures("inline_sinks")
async def test_a_store_that_cannot_be_written_is_reported_and_catches_up_without_loss(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the store's directory should be")
    db = blocker / "feed.sqlite"
    config = make_config(
        channels=["aggTrade", "kline_1m"], sinks=[{"kind": "sqlite", "path": str(db)}]
    )
    async with FakeExchange(seed=44, tick=0.5, kline_every=1) as fake:
        async with trio.open_nursery() as nursery, feed_on(fake, config) as feed:
            rec = Recorder(feed)
            nursery.start_soon(rec.run)
            await trio.sleep(2 * MINUTE)
            failing = feed.status()
            served = len(rec.trades("BTCUSDT"))
            blocker.unlink()  # the operator fixes it
            await trio.sleep(2 * MINUTE)
            recovered = feed.status()
            nursery.cancel_scope.cancel()
    (sink,) = failing.sinks
    assert sink.failing and sink.written == 0 and sink.errors > 3
    assert sink.last_error is not None and "Error" in sink.last_error
    assert not failing.healthy  # a monitor sees it
    assert served > 100  # while the streams kept being served
    assert not recovered.sinks[0].failing and recovered.healthy
    with SqliteStore(db) as store:
        for symbol in ("BTCUSDT", "ETHUSDT"):
            trades = rec.trades(symbol)
            assert [t.id for t in store.trades(VENUE, symbol)] == [t.id for t in trades]
            closed = assert_klines_complete(rec.klines(symbol, "1m"), fake, symbol, "1m")
            assert [kline_row(k) for k in store.klines(VENUE, symbol, "1m")] == [
                kline_row(k) for k in closed
            ]


# ---- changing subscriptions: VenueIntegrity.reconfigure, driven directly ---------------


@asynccontextmanager
async def running_integrity(
    fake: FakeExchange, symbols: list[str], channels: list[str], *, kline_interval: float = 20.0
) -> AsyncIterator[tuple[VenueIntegrity, list[Event]]]:
    """A `VenueIntegrity` wired as the feed wires one (the fake's REST, its clock, synced),
    running, without connections: the test delivers items and reconfigures it itself.
    Yields it and the list of what it published."""
    config = make_config(
        symbols=symbols, channels=channels, reconciliation={"kline_interval": kline_interval}
    )
    (plan,) = plan_feed(config)
    clock = MarketClock(fake.now_ms)
    clock.observe(fake.now_ms(), clock.local_ms(), clock.local_ms())
    rest = RestClient(
        plan.adapter,
        plan.config.rest_url,
        transport=fake.rest_transport,
        clock=clock,
        rng=random.Random(1),
    )
    published: list[Event] = []
    integrity = VenueIntegrity(
        adapter=plan.adapter,
        rest=rest,
        clock=clock,
        data=VenueData.from_keys(VENUE, data_keys(plan.adapter, symbols, channels)),
        publish=published.extend,
        reconciliation=plan.config.reconciliation,
        rng=random.Random(2),
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(integrity.run)
            yield integrity, published
            nursery.cancel_scope.cancel()
    finally:
        await rest.aclose()


def keys_for(symbols: list[str], channels: list[str]) -> DataKeys:
    return data_keys(get_adapter(VENUE), symbols, channels)


def reconcile_checks(fake: FakeExchange, since: int = 0) -> list[tuple[str, str, int]]:
    """(symbol, interval, exchange ms) of each reconciliation request (the last klines,
    no range), from the ``since``-th REST request on."""
    return [
        (r.params["symbol"], r.params["interval"], r.time)
        for r in fake.rest_requests[since:]
        if r.path == "/fapi/v1/klines" and "startTime" not in r.params
    ]


def task_names() -> list[str]:
    def walk(task: trio.lowlevel.Task) -> list[str]:
        return [task.name] + [
            n for c in task.child_nurseries for t in c.child_tasks for n in walk(t)
        ]

    return walk(trio.lowlevel.current_root_task())


class StepCounter(trio.abc.Instrument):
    """How many times tasks whose name contains ``name`` were scheduled."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.name in task.name:
            self.steps += 1


def fake_kline(fake: FakeExchange, symbol: str, minute: int, *, closed: bool = True) -> Kline:
    t = fake.start_time_ms + minute * 60_000
    one = Decimal(1)
    return Kline(
        VENUE, symbol, "1m", t, t + 59_999, one, one, one, one, one, one, 1, one, one, closed
    )


def fake_trade(fake: FakeExchange, symbol: str, agg_id: int) -> Trade:
    (a,) = fake.market.trades(symbol, from_id=agg_id, limit=1)
    return Trade(
        VENUE,
        symbol,
        a.agg_id,
        a.price,
        a.qty,
        a.first_trade_id,
        a.last_trade_id,
        a.time,
        a.buyer_is_maker,
    )


async def test_reconciliation_follows_the_kline_keys_as_they_change(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with FakeExchange(seed=51, tick=0.5, kline_every=1) as fake:
        async with running_integrity(fake, ["BTCUSDT"], ["kline_1m", "aggTrade"]) as (
            integrity,
            _,
        ):
            await trio.sleep(65.0)
            first = reconcile_checks(fake)
            integrity.reconfigure(keys_for(["ETHUSDT"], ["kline_1m", "kline_5m", "aggTrade"]))
            mark = len(fake.rest_requests)
            await trio.sleep(70.0)
            changed = reconcile_checks(fake, mark)
            # No streamed kline key at all: the loop idles, scheduled only when woken.
            counter = StepCounter("reconcile")
            trio.lowlevel.add_instrument(counter)
            integrity.reconfigure(keys_for(["ETHUSDT"], ["kline_1s", "aggTrade"]))
            mark = len(fake.rest_requests)
            await trio.sleep(600.0)
            trio.lowlevel.remove_instrument(counter)
            idle = reconcile_checks(fake, mark)
            integrity.reconfigure(keys_for(["BTCUSDT"], ["kline_1m"]))
            mark = len(fake.rest_requests)
            await trio.sleep(45.0)
            back = reconcile_checks(fake, mark)
    assert [(s, i) for s, i, _ in first] == [("BTCUSDT", "1m")] * 3
    # The round under way passes the removed key over; the next walks the two new keys,
    # spread over the interval by their count (20 s / 2).
    assert {(s, i) for s, i, _ in changed} == {("ETHUSDT", "1m"), ("ETHUSDT", "5m")}
    assert len(changed) >= 4
    gaps = [b - a for (_, _, a), (_, _, b) in itertools.pairwise(changed)]
    assert all(abs(g - 10_000) < 100 for g in gaps), gaps
    assert idle == []
    assert counter.steps <= 5  # woken by the reconfigure, not spinning
    assert [(s, i) for s, i, _ in back] == [("BTCUSDT", "1m")] * 2


async def test_the_build_ticker_starts_with_the_first_built_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with FakeExchange(seed=52, tick=0.5) as fake:
        async with running_integrity(fake, ["BTCUSDT"], ["aggTrade"]) as (integrity, published):
            await trio.sleep(30.0)
            assert f"ticker {VENUE}" not in task_names()
            integrity.reconfigure(keys_for(["BTCUSDT"], ["aggTrade", "kline_1s"]))
            assert f"ticker {VENUE}" in task_names()
            up = [True]
            integrity.watch_trade_stream("BTCUSDT", lambda: up[0])
            fake.market.advance_to(fake.now_ms())
            (last,) = fake.market.trades("BTCUSDT", limit=1)
            integrity.deliver([fake_trade(fake, "BTCUSDT", last.agg_id)])
            await trio.sleep(5.0)
            # No later trade came: only the ticker closes the quiet seconds.
            seconds = [e for e in published if isinstance(e, Kline) and e.interval == "1s"]
            integrity.unwatch_trade_stream("BTCUSDT")
            await trio.sleep(5.0)
            unwatched = [e for e in published if isinstance(e, Kline) and e.interval == "1s"]
            integrity.watch_trade_stream("BTCUSDT", lambda: up[0])
            await trio.sleep(2.0)
            watched = [e for e in published if isinstance(e, Kline) and e.interval == "1s"]
            # Every built interval removed: the ticker may stay, idle, and builds nothing.
            integrity.reconfigure(keys_for(["BTCUSDT"], ["aggTrade"]))
            await trio.sleep(10.0)
            removed = [e for e in published if isinstance(e, Kline) and e.interval == "1s"]
            names = task_names()
    assert len(seconds) >= 2 and all(k.source == "trades" and k.closed for k in seconds)
    assert seconds[0].open_time == last.time // 1000 * 1000
    assert unwatched == seconds  # its stream is not known to be up: no guessing
    times = [k.open_time for k in watched]
    assert len(watched) > len(seconds) + 5
    assert times == list(range(times[0], times[0] + 1000 * len(times), 1000))
    assert removed == watched
    assert names.count(f"ticker {VENUE}") == 1


async def test_a_kline_fill_of_a_removed_key_ends_and_its_late_page_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with FakeExchange(seed=53, tick=0.5, kline_every=1, rest_latency=2.0) as fake:
        await trio.sleep(10 * MINUTE)
        async with running_integrity(fake, ["BTCUSDT"], ["kline_1m"], kline_interval=1e6) as (
            integrity,
            published,
        ):
            k = ("BTCUSDT", "1m")
            integrity.deliver([fake_kline(fake, "BTCUSDT", 0), fake_kline(fake, "BTCUSDT", 3)])
            await trio.sleep(0.5)  # the fill of minutes 1..2 is on the wire
            assert integrity.fills_in_progress == 1
            integrity.reconfigure(keys_for([], []))
            integrity.reconfigure(keys_for(["BTCUSDT"], ["kline_1m"]))  # again, fresh
            fresh = integrity.data.kline_seqs[k]
            # The fresh key anchors at minute 5; minute 8 shows a gap of 6..7, which the
            # fill task still running for the key takes on once the stale page is dropped.
            integrity.deliver(
                [fake_kline(fake, "BTCUSDT", 5), fake_kline(fake, "BTCUSDT", 8, closed=False)]
            )
            await trio.sleep(10.0)
            assert integrity.fills_in_progress == 0
            assert integrity.data.kline_seqs[k] is fresh
            # Removed while its fill retries after server errors: the task ends at its
            # next step, without asking again.
            fake.rest_fault("/fapi/v1/klines", 503, count=1000)
            integrity.deliver([fake_kline(fake, "BTCUSDT", 10)])  # held: 8..9 missing
            await trio.sleep(40.0)
            retrying = (integrity.fills_in_progress, integrity.stats.fill_errors)
            integrity.reconfigure(keys_for([], []))
            removed_at = fake.now_ms()
            mark = len(fake.rest_requests)
            await trio.sleep(120.0)
            after = [r.time for r in fake.rest_requests[mark:] if r.path == "/fapi/v1/klines"]
            ended = (integrity.fills_in_progress, integrity.stats.fill_errors)
    closed = [
        (e.open_time - fake.start_time_ms) // 60_000
        for e in published
        if isinstance(e, Kline) and e.closed
    ]
    assert closed == [0, 5, 6, 7]  # not 1..2: their page came for a key since removed
    assert [e.source for e in published if isinstance(e, Kline) and e.closed] == [
        "ws",
        "ws",
        "rest",
        "rest",
    ]
    assert retrying[0] == 1 and retrying[1] >= 1
    # The call on the wire finishes its own retries; its failure is not counted, and no
    # further call follows.
    assert ended == (0, retrying[1])
    assert len(after) <= DEFAULT_RETRY.max_retries + 1
    assert all(t < removed_at + 40_000 for t in after)


async def test_a_trade_fill_of_a_removed_symbol_ends_without_publishing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with FakeExchange(seed=54, tick=0.5, rest_latency=2.0) as fake:
        await trio.sleep(MINUTE)
        fake.market.advance_to(fake.now_ms())
        first = fake.market.trades("BTCUSDT", limit=20)[0].agg_id
        async with running_integrity(fake, ["BTCUSDT", "ETHUSDT"], ["aggTrade"]) as (
            integrity,
            published,
        ):
            integrity.deliver([fake_trade(fake, "BTCUSDT", first)])
            integrity.deliver([fake_trade(fake, "BTCUSDT", first + 4)])  # 1..3 missing
            await trio.sleep(0.5)
            in_flight = integrity.fills_in_progress
            integrity.reconfigure(keys_for(["ETHUSDT"], ["aggTrade"]))
            await trio.sleep(5.0)
            ended = integrity.fills_in_progress
    asked = [r for r in fake.rest_requests if r.path == "/fapi/v1/aggTrades"]
    assert [r.params["fromId"] for r in asked] == [str(first + 1)]  # answered, then dropped
    assert in_flight == 1 and ended == 0
    assert [e.id for e in published if isinstance(e, Trade)] == [first]
    assert integrity.stats.trades_backfilled == 0


async def test_a_resubscribed_connection_catches_up_streams_added_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    adapter = get_adapter(VENUE)
    async with FakeExchange(seed=55, tick=0.5, kline_every=1) as fake:
        async with running_integrity(fake, ["BTCUSDT"], ["aggTrade"], kline_interval=1e6) as (
            integrity,
            published,
        ):
            await trio.sleep(MINUTE)
            integrity.reconfigure(keys_for(["BTCUSDT", "ETHUSDT"], ["aggTrade", "kline_1m"]))
            fake.market.advance_to(fake.now_ms())
            last = fake.market.trades("ETHUSDT", limit=1)[0].agg_id
            integrity.deliver([fake_trade(fake, "ETHUSDT", last), fake_kline(fake, "ETHUSDT", 0)])
            await trio.sleep(3 * MINUTE)  # the connection is down meanwhile
            mark = len(fake.rest_requests)
            streams = [
                adapter.stream("ETHUSDT", "aggTrade"),
                adapter.stream("ETHUSDT", "kline_1m"),
                adapter.stream("SOLUSDT", "aggTrade"),  # not tracked: passed over
                adapter.stream("SOLUSDT", "kline_1m"),
            ]
            event = StateChange("binance-usdm/market/0", "SUBSCRIBED", "CONNECTED", 0, (), 0)
            integrity.connection_state(event, streams)
            await trio.sleep(10.0)
            asked = fake.rest_requests[mark:]
    assert {(r.path, r.params["symbol"]) for r in asked} == {
        ("/fapi/v1/aggTrades", "ETHUSDT"),
        ("/fapi/v1/klines", "ETHUSDT"),
    }
    trades = [e for e in published if isinstance(e, Trade) and e.symbol == "ETHUSDT"]
    assert_trades_complete(trades, fake, "ETHUSDT")
    assert len(trades) > 10 and {t.source for t in trades[1:]} == {"rest"}
    minutes = [
        (e.open_time - fake.start_time_ms) // 60_000
        for e in published
        if isinstance(e, Kline) and e.closed and e.symbol == "ETHUSDT"
    ]
    # Up to the exchange clock's last surely closed minute (4:00 less the margin is in 3).
    assert minutes == [0, 1, 2]
