"""Sinks: through a real EventHub subscription into SQLite or JSON lines, with faults."""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

import pytest
import trio
import trio.testing
from trio_feed.config import SinkConfig
from trio_feed.errors import ConfigError, SlowConsumer
from trio_feed.events import BookTicker, Event, Kline, QualityChange, Reconcile, Trade
from trio_feed.runtime import sinks
from trio_feed.runtime.fanout import EventHub
from trio_feed.runtime.sinks import (
    JsonlSink,
    SinkStatus,
    SqliteSink,
    check_sinks,
    make_sink,
)
from trio_feed.runtime.sqlite_store import SqliteStore

VENUE = "binance-usdm"
MINUTE = 60_000


def trade(id_: int, symbol: str = "BTCUSDT") -> Trade:
    return Trade(
        VENUE, symbol, id_, Decimal("100.25"), Decimal("0.003"), id_, id_, 1_000 + id_, True
    )


def kline(i: int, *, closed: bool = True) -> Kline:
    d = Decimal("1.5")
    return Kline(
        VENUE, "BTCUSDT", "1m", i * MINUTE, i * MINUTE + MINUTE - 1, d, d, d, d, d, d, 3, d, d,
        closed,
    )  # fmt: skip


def noise(i: int) -> Event:
    """An event the SQLite store does not keep."""
    return QualityChange("BTCUSDT", 1.0, "ok", i)


def stored_trade_ids(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT id FROM trades ORDER BY id")]
    finally:
        conn.close()


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll in virtual time. Worker threads take real time, during which the autojump clock
    moves on to the next deadline, so tests wait for outcomes rather than fixed delays."""
    for _ in range(100_000):
        if condition():
            return
        await trio.sleep(0.01)
    raise AssertionError("the condition never came true")


class FlakyStore:
    """A real store whose first ``failures`` writes raise, recording every attempt."""

    def __init__(
        self,
        path: str,
        failures: int,
        error: Exception,
        on_failure: Callable[[int], None] | None = None,
    ) -> None:
        self.inner = SqliteStore(path)
        self.failures = failures
        self.error = error
        self.on_failure = on_failure
        self.attempts: list[tuple[float, list[object]]] = []
        self.closed = False

    def write(self, events: Sequence[object]) -> int:
        # Runs inline (the tests using it take the `inline_sinks` fixture): on the event loop.
        self.attempts.append((trio.current_time(), list(events)))
        if len(self.attempts) <= self.failures:
            if self.on_failure is not None:
                self.on_failure(len(self.attempts))
            raise self.error
        return self.inner.write(events)

    def close(self) -> None:
        self.closed = True
        self.inner.close()


# ---- SQLite -------------------------------------------------------------------------------


async def test_events_from_a_subscription_end_up_in_the_file(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "data" / "feed.sqlite"
    hub = EventHub()
    sub = hub.subscribe(1000)
    sink = SqliteSink(str(path))
    reconcile = Reconcile("BTCUSDT", "1m", 0, ("close",), "revised")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run, sub)
        hub.publish([trade(1), kline(0), kline(1, closed=False), noise(0)])
        await wait_until(lambda: sink.status().written == 2)
        hub.publish([trade(2), BookTicker(VENUE, "BTCUSDT", *[Decimal(1)] * 4, 1, 2), reconcile])
        await wait_until(lambda: sink.status().written == 4)
        hub.close()
    with SqliteStore(path) as store:
        assert [t.id for t in store.trades(VENUE, "BTCUSDT")] == [1, 2]
        assert store.klines(VENUE, "BTCUSDT", "1m") == [kline(0)]
        assert store.reconciliations() == [reconcile]
    status = sink.status()
    assert (status.kind, status.path, status.name) == ("sqlite", str(path), f"sqlite:{path}")
    assert status.written == 4  # the stored ones: 2 trades, 1 closed kline, 1 reconcile
    assert status.batches == 2  # one transaction per batch received
    assert (status.errors, status.failing, status.stopped) == (0, False, False)


async def test_shutdown_flushes_everything_buffered_and_closes_the_file(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "feed.sqlite"
    hub = EventHub()
    sub = hub.subscribe(100_000)
    for i in range(50):
        hub.publish([trade(j) for j in range(i * 100, (i + 1) * 100)])
    hub.close()  # closed with 5000 events still buffered
    await SqliteSink(str(path)).run(sub)
    assert stored_trade_ids(path) == list(range(5000))
    # The last connection closing checkpoints the WAL into the file and removes it.
    assert not path.with_name("feed.sqlite-wal").exists()


@pytest.mark.usefixtures("inline_sinks")
async def test_a_locked_database_is_retried_and_everything_written_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "feed.sqlite"
    hub = EventHub()
    sub = hub.subscribe(10_000)
    # A short busy timeout keeps the real time spent waiting on the lock small.
    sink = SqliteSink(str(path), open_store=lambda p: SqliteStore(p, busy_timeout=0.01))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run, sub)
        hub.publish([trade(0)])
        await wait_until(lambda: sink.status().batches == 1)  # open, and writing
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        hub.publish([trade(i) for i in range(1, 100)])
        await wait_until(lambda: sink.status().errors >= 3)
        hub.publish([trade(i) for i in range(100, 150)])  # buffered while failing
        hub.publish([trade(i) for i in range(50)])  # re-deliveries: stored once
        status = sink.status()
        assert status.failing and not status.stopped
        assert status.last_error is not None and "locked" in status.last_error
        assert status.written == 1 and status.batches == 1
        assert locker.execute("SELECT COUNT(*) FROM trades").fetchone()[0] == 1
        locker.execute("ROLLBACK")
        await wait_until(lambda: sink.status().written >= 200)
        assert not sink.status().failing
        hub.close()
    assert stored_trade_ids(path) == list(range(150))
    assert sink.status().written == 200  # attempted rows, re-deliveries included
    assert sink.status().last_error is not None  # kept after recovery, for the record
    locker.close()
    failures = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(failures) == 1  # once per failure streak, not per attempt
    assert f"sqlite:{path}" in failures[0].getMessage()
    assert any("writes again" in r.getMessage() for r in caplog.records)


@pytest.mark.usefixtures("inline_sinks")
async def test_disk_full_retries_the_same_batch_with_backoff_and_loses_nothing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    stores: list[FlakyStore] = []

    def open_store(path: str) -> FlakyStore:
        stores.append(FlakyStore(path, 3, sqlite3.OperationalError("database or disk is full")))
        return stores[-1]

    path = tmp_path / "feed.sqlite"
    hub = EventHub()
    sub = hub.subscribe(10_000)
    events = [trade(i) for i in range(1, 301)]
    hub.publish(events)
    hub.close()
    sink = SqliteSink(str(path), open_store=open_store)
    start = trio.current_time()
    await sink.run(sub)
    (store,) = stores
    times = [t - start for t, _ in store.attempts]
    assert times == [0.0, 0.5, 1.5, 3.5]  # backoff 0.5 s doubling
    assert all(batch == events for _, batch in store.attempts)  # the same batch each time
    assert stored_trade_ids(path) == list(range(1, 301))
    assert store.closed
    status = sink.status()
    assert (status.written, status.batches, status.errors) == (300, 1, 3)
    assert status.last_error == "OperationalError: database or disk is full"
    assert not status.failing and not status.stopped


@pytest.mark.usefixtures("inline_sinks")
async def test_backoff_is_capped(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    stores: list[FlakyStore] = []

    def open_store(path: str) -> FlakyStore:
        stores.append(FlakyStore(path, 9, OSError(5, "Input/output error")))
        return stores[-1]

    hub = EventHub()
    sub = hub.subscribe(10)
    hub.publish([trade(1)])
    hub.close()
    await SqliteSink(str(tmp_path / "feed.sqlite"), open_store=open_store).run(sub)
    times = [t for t, _ in stores[0].attempts]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


@pytest.mark.usefixtures("inline_sinks")
async def test_opening_is_retried_too(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    calls: list[str] = []

    def open_store(path: str) -> SqliteStore:
        calls.append(path)
        if len(calls) < 3:
            raise PermissionError(13, "Permission denied", path)
        return SqliteStore(path)

    path = tmp_path / "feed.sqlite"
    hub = EventHub()
    sub = hub.subscribe(10)
    hub.publish([trade(1)])
    hub.close()
    sink = SqliteSink(str(path), open_store=open_store)
    await sink.run(sub)
    assert len(calls) == 3
    assert stored_trade_ids(path) == [1]
    assert sink.status().errors == 2
    assert "Permission denied" in (sink.status().last_error or "")


@pytest.mark.usefixtures("inline_sinks")
async def test_big_batches_are_split_into_bounded_transactions(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sinks, "MAX_TRANSACTION_ROWS", 3)
    stores: list[FlakyStore] = []

    def open_store(path: str) -> FlakyStore:
        stores.append(FlakyStore(path, 0, OSError()))
        return stores[-1]

    hub = EventHub()
    sub = hub.subscribe(100)
    hub.publish([trade(1), noise(0), trade(2), trade(3), noise(1), trade(4), kline(0)])
    hub.close()
    sink = SqliteSink(str(tmp_path / "feed.sqlite"), open_store=open_store)
    await sink.run(sub)
    assert [len(batch) for _, batch in stores[0].attempts] == [3, 2]  # noise filtered out
    assert (sink.status().written, sink.status().batches) == (5, 2)


@pytest.mark.usefixtures("inline_sinks")
async def test_falling_behind_while_failing_stops_after_writing_what_it_holds(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "feed.sqlite"
    hub = EventHub()
    sub = hub.subscribe(5)

    def overflow(attempt: int) -> None:
        # While the disk is "full", the feed goes on publishing past the sink's bound.
        if attempt == 1:
            hub.publish([trade(i) for i in range(10, 20)])

    def open_store(p: str) -> FlakyStore:
        return FlakyStore(p, 2, sqlite3.OperationalError("disk I/O error"), overflow)

    hub.publish([trade(1), trade(2), trade(3)])
    sink = SqliteSink(str(path), open_store=open_store)
    with pytest.raises(SlowConsumer):
        await sink.run(sub)
    # The 3 received first, then the 5 buffered before the overflow; the rest was dropped.
    assert stored_trade_ids(path) == [1, 2, 3, 10, 11, 12, 13, 14]
    status = sink.status()
    assert status.stopped and not status.failing
    assert status.written == 8


@pytest.mark.usefixtures("inline_sinks")
async def test_cancellation_closes_the_store_even_while_failing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    stores: list[FlakyStore] = []

    def open_store(path: str) -> FlakyStore:
        stores.append(FlakyStore(path, 10**9, sqlite3.OperationalError("database is locked")))
        return stores[-1]

    hub = EventHub()
    sub = hub.subscribe(100)
    hub.publish([trade(1), trade(2)])
    sink = SqliteSink(str(tmp_path / "feed.sqlite"), open_store=open_store)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run, sub)
        await wait_until(lambda: sink.status().errors >= 3)
        assert not stores[0].closed
        nursery.cancel_scope.cancel()  # as the feed does after its drain timeout
    assert stores[0].closed
    assert sink.status().failing
    assert any("2 events not written" in r.getMessage() for r in caplog.records)


# ---- JSON lines ---------------------------------------------------------------------------


async def test_jsonl_sink_writes_every_event_and_counts_them(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"type": "earlier"}\n')
    hub = EventHub()
    sub = hub.subscribe(100)
    sink = JsonlSink(str(path))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run, sub)
        hub.publish([trade(1), noise(1)])
        await wait_until(lambda: sink.status().written == 2)
        hub.publish([kline(0, closed=False)])
        await wait_until(lambda: sink.status().written == 3)
        hub.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["type"] for line in lines] == ["earlier", "trade", "quality", "kline"]  # appended
    status = sink.status()
    assert (status.kind, status.path, status.written, status.batches) == ("jsonl", str(path), 3, 2)
    assert (status.errors, status.failing, status.stopped) == (0, False, False)


async def test_jsonl_sink_that_cannot_open_its_file_stops_and_says_why(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub = EventHub()
    sub = hub.subscribe(10)
    sink = JsonlSink(str(tmp_path))  # a directory
    with pytest.raises(OSError):
        await sink.run(sub)
    status = sink.status()
    assert status.stopped and status.errors == 1
    assert status.last_error is not None and "IsADirectoryError" in status.last_error


async def test_jsonl_sink_that_falls_behind_is_stopped(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub = EventHub()
    sub = hub.subscribe(2)
    hub.publish([trade(1), trade(2), trade(3)])
    sink = JsonlSink(str(tmp_path / "x.jsonl"))
    with pytest.raises(SlowConsumer):
        await sink.run(sub)
    assert sink.status().stopped and sink.status().written == 2


# ---- status and configuration -------------------------------------------------------------


def test_sink_status_to_dict_is_plain_data() -> None:
    status = SinkStatus("sqlite:x", "sqlite", "x", 1, 2, 3, "E: boom", True, False)
    assert status.to_dict() == {
        "name": "sqlite:x",
        "kind": "sqlite",
        "path": "x",
        "written": 1,
        "batches": 2,
        "errors": 3,
        "last_error": "E: boom",
        "failing": True,
        "stopped": False,
    }
    json.dumps(status.to_dict())


def test_make_sink_builds_each_kind() -> None:
    sqlite_sink = make_sink(SinkConfig(kind="sqlite", path="data/feed.sqlite"))
    assert isinstance(sqlite_sink, SqliteSink) and sqlite_sink.path == "data/feed.sqlite"
    assert isinstance(make_sink(SinkConfig(kind="jsonl", path="-")), JsonlSink)


def test_check_sinks_accepts_sqlite_and_rejects_one_file_twice() -> None:
    check_sinks(
        (SinkConfig(kind="sqlite", path="data/a.sqlite"), SinkConfig(kind="jsonl", path="-"))
    )
    with pytest.raises(ConfigError) as info:
        check_sinks(
            (
                SinkConfig(kind="sqlite", path="data/a.sqlite"),
                SinkConfig(kind="jsonl", path="b.jsonl"),
                SinkConfig(kind="sqlite", path="./data//a.sqlite"),
            )
        )
    assert info.value.problems == ["sinks[2].path: './data//a.sqlite' is also the path of sinks[0]"]
