"""Order books end to end on the fake exchange, in virtual time: every ``book`` event is the
exchange's book at that update id, breaks re-sync only the broken symbol, snapshots share the
REST budget, depth reconciliation catches a stream that lies."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest
import trio
from trio_feed import Feed
from trio_feed.events import BookUpdate, Event, QualityChange, Reconcile
from trio_feed.testing import FakeExchange

from support import feed_on, make_config

DEPTH = "/fapi/v1/depth"


class Recorder:
    def __init__(self, feed: Feed) -> None:
        self.sub = feed.events(max_buffer=10_000_000)
        self.events: list[Event] = []
        self.times: list[float] = []

    async def run(self) -> None:
        async for event in self.sub:
            self.events.append(event)
            self.times.append(trio.current_time())

    def books(self, symbol: str) -> list[BookUpdate]:
        return [e for e in self.events if isinstance(e, BookUpdate) and e.symbol == symbol]

    def of(self, cls: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]


def assert_books_true(recorder: Recorder, fake: FakeExchange, symbol: str, depth: int = 20) -> int:
    """Every ``book`` event of ``symbol`` is the exchange's book at its update id."""
    events = recorder.books(symbol)
    assert events, f"no book events of {symbol}"
    for event in events:
        truth = fake.market.book_at(symbol, event.last_update_id, depth)
        assert event.bids == tuple(truth.bids[:depth]), (symbol, event.last_update_id)
        assert event.asks == tuple(truth.asks[:depth]), (symbol, event.last_update_id)
    ids = [e.last_update_id for e in events]
    assert ids == sorted(ids)
    return len(events)


def snapshots(fake: FakeExchange, symbol: str) -> int:
    return sum(1 for r in fake.rest_requests if r.path == DEPTH and r.params["symbol"] == symbol)


def config(symbols=("BTCUSDT", "ETHUSDT"), **sections: Any):
    sections.setdefault("reconciliation", {"depth_interval": 3600})
    return make_config(symbols=symbols, channels=("depth",), **sections)


async def test_every_book_event_is_the_exchanges_book(autojump_clock):
    async with FakeExchange(seed=1) as fake, feed_on(fake, config()) as feed:
        recorder = Recorder(feed)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(recorder.run)
            await trio.sleep(60)
            view = feed.book("BTCUSDT", 5)
            nursery.cancel_scope.cancel()
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert assert_books_true(recorder, fake, symbol) > 300  # about one per diff
            assert snapshots(fake, symbol) == 1
        assert view is not None
        truth = fake.market.book_at("BTCUSDT", view.last_update_id, 5)
        assert view.bids == tuple(truth.bids[:5]) and view.asks == tuple(truth.asks[:5])
        assert view.best_bid == view.bids[0] and view.best_ask == view.asks[0]
        assert view.spread == view.asks[0][0] - view.bids[0][0]
        assert view.mid == (view.asks[0][0] + view.bids[0][0]) / 2
        status = feed.status()
        assert status.venues[0].books == 2 and status.venues[0].books_synced == 2
        assert all(s.book_synced for s in status.symbols)


@pytest.mark.parametrize(
    "fault",
    ["skip", "duplicate", "reorder"],
)
async def test_a_sequence_break_resyncs_only_the_broken_book(autojump_clock, fault):
    async with FakeExchange(seed=2) as fake, feed_on(fake, config()) as feed:
        recorder = Recorder(feed)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(recorder.run)
            await trio.sleep(20)
            if fault == "skip":
                fake.skip_depth_update("BTCUSDT")
            elif fault == "duplicate":
                fake.duplicate_depth_update("BTCUSDT")
            else:
                fake.reorder_depth_updates("BTCUSDT")
            await trio.sleep(40)
            nursery.cancel_scope.cancel()
        assert snapshots(fake, "BTCUSDT") == 2  # the start, and the re-sync
        assert snapshots(fake, "ETHUSDT") == 1  # never touched
        assert_books_true(recorder, fake, "BTCUSDT")
        assert_books_true(recorder, fake, "ETHUSDT")
        late = [e for e, t in zip(recorder.events, recorder.times, strict=True) if t > 30]
        assert any(isinstance(e, BookUpdate) and e.symbol == "BTCUSDT" for e in late)
        assert feed.status().venues[0].book_resyncs >= 1


async def test_a_snapshot_older_than_the_buffered_diffs_is_fetched_again(autojump_clock):
    async with FakeExchange(seed=3) as fake, feed_on(fake, config()) as feed:
        recorder = Recorder(feed)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(recorder.run)
            await trio.sleep(20)
            # The re-sync after this break is first answered with a book 50 steps old.
            fake.stale_depth_snapshot("BTCUSDT", updates_behind=50)
            fake.skip_depth_update("BTCUSDT")
            await trio.sleep(20)
            nursery.cancel_scope.cancel()
        [stale] = fake.stale_snapshots
        assert stale.true_update_id - stale.last_update_id > 10
        assert snapshots(fake, "BTCUSDT") == 3  # the start, the stale one, a fresh one
        assert_books_true(recorder, fake, "BTCUSDT")
        assert feed.book("BTCUSDT") is not None


async def test_a_lost_connection_hides_its_books_until_they_are_resynced(autojump_clock):
    cfg = config(reconnect={"base_delay": 5.0, "max_delay": 10.0})
    async with FakeExchange(seed=4) as fake, feed_on(fake, cfg) as feed:
        recorder = Recorder(feed)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(recorder.run)
            await trio.sleep(10)
            assert feed.book("BTCUSDT") is not None
            fake.drop_connections()
            await trio.sleep(1)
            assert feed.book("BTCUSDT") is None  # never a book that may be stale
            assert feed.status().venues[0].books_synced == 0
            await trio.sleep(30)
            assert feed.book("BTCUSDT") is not None
            nursery.cancel_scope.cancel()
        assert_books_true(recorder, fake, "BTCUSDT")
        assert_books_true(recorder, fake, "ETHUSDT")


async def test_two_hundred_books_resync_within_the_rest_weight_budget(autojump_clock):
    symbols = [f"S{i:03d}USDT" for i in range(200)]
    cfg = config(
        symbols=symbols,
        reconnect={"base_delay": 1.0, "max_delay": 2.0},
        reconciliation={"depth_interval": 1e6},  # no depth checks in this test
    )
    fake = FakeExchange(symbols=symbols, seed=5, depth_every=10, trade_rate=0.0, depth_history=500)
    async with fake, feed_on(fake, cfg) as feed:
        await trio.sleep(200)
        assert feed.status().venues[0].books_synced == 200
        fake.drop_connections()
        await trio.sleep(240)
        status = feed.status()
    assert status.venues[0].books_synced == 200
    depth = [r for r in fake.rest_requests if r.path == DEPTH]
    assert len(depth) == 400  # one snapshot per symbol at the start, one after the drop
    assert all(r.status == 200 for r in fake.rest_requests)  # never a 429, never a ban
    # Weight per UTC minute never above the venue's 2400 (each snapshot weighs 20).
    assert max(r.used_weight for r in fake.rest_requests) <= 2400
    per_minute = Counter(r.time // 60_000 for r in depth)
    assert max(per_minute.values()) * 20 <= 2400


async def test_depth_reconciliation_catches_a_stream_that_lies(autojump_clock):
    cfg = config(reconciliation={"depth_interval": 30})
    async with FakeExchange(seed=6) as fake, feed_on(fake, cfg) as feed:
        recorder = Recorder(feed)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(recorder.run)
            await trio.sleep(45)
            assert not recorder.of(Reconcile)
            fake.distort_depth("BTCUSDT")
            await trio.sleep(120)
            nursery.cancel_scope.cancel()
        found = [r for r in recorder.of(Reconcile) if r.symbol == "BTCUSDT"]
        assert len(found) == 1
        assert found[0].interval == "depth" and found[0].action == "resynced"
        assert found[0].mismatches
        drops = [q for q in recorder.of(QualityChange) if q.symbol == "BTCUSDT" and q.score < 1]
        assert drops and "depth" in drops[0].reason
        after = recorder.events.index(found[0])
        later = [e for e in recorder.events[after:] if isinstance(e, BookUpdate)]
        assert later
        for event in later:
            if event.symbol != "BTCUSDT":
                continue
            truth = fake.market.book_at("BTCUSDT", event.last_update_id, 20)
            assert event.bids == tuple(truth.bids[:20]) and event.asks == tuple(truth.asks[:20])
        assert feed.status().venues[0].book_checks >= 4


async def test_book_interval_rate_limits_book_events(autojump_clock):
    cfg = config(cache={"book_interval": 1.0})
    async with FakeExchange(seed=7) as fake, feed_on(fake, cfg) as feed:
        recorder = Recorder(feed)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(recorder.run)
            await trio.sleep(60)
            nursery.cancel_scope.cancel()
        events = recorder.books("BTCUSDT")
        times = [e.time for e in events]
        assert all(b - a >= 1000 for a, b in itertools.pairwise(times))
        assert 40 <= len(events) <= 61
        assert_books_true(recorder, fake, "BTCUSDT")
        # The book itself stays current between events.
        assert feed.book("BTCUSDT").last_update_id >= events[-1].last_update_id


async def test_subscribing_depth_while_running_keeps_a_new_book(autojump_clock):
    async with FakeExchange(seed=8) as fake, feed_on(fake, config(symbols=("BTCUSDT",))) as feed:
        recorder = Recorder(feed)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(recorder.run)
            await trio.sleep(10)
            with pytest.raises(KeyError):
                feed.book("ETHUSDT")
            await feed.subscribe(["ETHUSDT"], ["depth"])
            await trio.sleep(20)
            assert feed.book("ETHUSDT") is not None
            await feed.unsubscribe(["BTCUSDT"])
            with pytest.raises(KeyError):
                feed.book("BTCUSDT")
            await trio.sleep(5)
            nursery.cancel_scope.cancel()
        assert_books_true(recorder, fake, "ETHUSDT")


async def test_books_stay_in_sync_across_rotations(autojump_clock):
    # Make-before-break: the replacement socket's diffs continue the same sequence, and the
    # overlap is de-duplicated by update id, so no rotation costs a re-sync.
    cfg = config(
        connection_pool={"rotate_after": 600 + 7.0}, reconciliation={"depth_interval": 1e6}
    )
    async with FakeExchange(seed=9, depth_every=5) as fake, feed_on(fake, cfg) as feed:
        recorder = Recorder(feed)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(recorder.run)
            await trio.sleep(3600)
            nursery.cancel_scope.cancel()
        status = feed.status()
    assert [c.rotations for c in status.connections] == [5]
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert snapshots(fake, symbol) == 1
        assert_books_true(recorder, fake, symbol)
    assert status.venues[0].book_resyncs == 0
