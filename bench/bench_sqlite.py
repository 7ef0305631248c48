"""Write throughput of `SqliteStore`, and of `SqliteSink` behind an `EventHub` (a script).

    .venv/bin/python bench/bench_sqlite.py [EVENTS]

A realistic mix (80% aggregated trades, 20% closed klines, decimal prices as the parser makes
them) over three symbols, written to a fresh file in a temporary directory for each row:

- ``store/s``: `SqliteStore.write` called directly, one transaction per batch;
- ``sink/s``: through a subscription into `SqliteSink`, the producer publishing one batch and
  waiting for its commit before the next, so each transaction holds exactly that many events
  (this includes the hop to the worker thread and back, per batch);
- ``us/tx``: sink time per transaction.

The last line lets the sink batch by itself: everything is published at once, as after a
stall, and the sink drains it in transactions of at most `MAX_TRANSACTION_ROWS` rows.
``EVENTS`` (100000 by default) is the count for the largest batch sizes; small batches,
being slower, write fewer.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trio_feed.events import Event, Kline, Trade  # noqa: E402
from trio_feed.runtime.fanout import EventHub  # noqa: E402
from trio_feed.runtime.sinks import MAX_TRANSACTION_ROWS, SqliteSink  # noqa: E402
from trio_feed.runtime.sqlite_store import SqliteStore  # noqa: E402

VENUE = "binance-usdm"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
BATCH_SIZES = (1, 100, 1000, 10_000)


def make_events(count: int, seed: int = 1) -> list[Event]:
    """``count`` events: four trades to one closed kline, unique keys, prices that wander."""
    rng = random.Random(seed)
    events: list[Event] = []
    price = 60_000.0
    trade_id = 1_000_000
    open_time = 1_767_225_600_000
    for i in range(count):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        price *= 1 + rng.uniform(-1e-4, 1e-4)
        p = Decimal(f"{price:.2f}")
        if i % 5 == 4:
            open_time += 60_000
            events.append(
                Kline(
                    VENUE, symbol, "1m", open_time, open_time + 59_999,
                    p, p + Decimal("12.5"), p - Decimal("7.1"), p + Decimal("0.3"),
                    Decimal("123.456"), Decimal("7406543.21987"), 1357,
                    Decimal("61.002"), Decimal("3659012.10045"), True,
                )
            )  # fmt: skip
        else:
            trade_id += 1
            events.append(
                Trade(
                    VENUE, symbol, trade_id, p, Decimal(f"{rng.uniform(0.001, 2):.3f}"),
                    trade_id * 3, trade_id * 3 + 2, open_time + i, rng.random() < 0.5,
                )
            )  # fmt: skip
    return events


def batches(events: list[Event], size: int) -> list[list[Event]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


def bench_store(path: Path, events: list[Event], size: int) -> float:
    """Events per second of `SqliteStore.write`, one transaction per ``size`` events."""
    with SqliteStore(path) as store:
        start = time.perf_counter()
        for batch in batches(events, size):
            store.write(batch)
        return len(events) / (time.perf_counter() - start)


class PacedSink(SqliteSink):
    """A `SqliteSink` that tells the producer when each transaction has committed."""

    committed: trio.Event

    def _count(self, events: int) -> None:
        super()._count(events)
        self.committed.set()


async def bench_sink(path: Path, events: list[Event], size: int) -> float:
    """Events per second through hub -> subscription -> `SqliteSink`, ``size`` per commit."""
    hub = EventHub()
    sub = hub.subscribe(len(events) + 1)
    sink = PacedSink(str(path))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run, sub)
        # Let the sink open its file before the clock starts.
        sink.committed = trio.Event()
        hub.publish(events[:1])
        await sink.committed.wait()
        start = time.perf_counter()
        for batch in batches(events[1:], size):
            sink.committed = trio.Event()
            hub.publish(batch)
            await sink.committed.wait()
        elapsed = time.perf_counter() - start
        hub.close()
    return (len(events) - 1) / elapsed


async def bench_sink_flood(path: Path, events: list[Event]) -> tuple[float, int]:
    """Events per second when everything is buffered at once, and the transactions used."""
    hub = EventHub()
    sub = hub.subscribe(len(events) + 1)
    hub.publish(events)
    hub.close()
    sink = SqliteSink(str(path))
    start = time.perf_counter()
    await sink.run(sub)
    return len(events) / (time.perf_counter() - start), sink.status().batches


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    counts = {1: min(total, 3_000), 100: min(total, 30_000)}
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-") as tmp:
        files = iter(Path(tmp) / f"{n}.sqlite" for n in range(100))
        print(f"{'batch':>8}{'events':>10}{'store/s':>12}{'sink/s':>12}{'us/tx':>10}")
        for size in BATCH_SIZES:
            events = make_events(counts.get(size, total))
            store_rate = bench_store(next(files), events, size)
            sink_rate = trio.run(bench_sink, next(files), events, size)
            per_tx = 1e6 * size / sink_rate
            print(
                f"{size:>8}{len(events):>10}{store_rate:>12,.0f}{sink_rate:>12,.0f}{per_tx:>10,.0f}"
            )
        events = make_events(total)
        rate, transactions = trio.run(bench_sink_flood, next(files), events)
        print(
            f"{'flood':>8}{len(events):>10}{'':>12}{rate:>12,.0f}"
            f"  ({transactions} transactions of <= {MAX_TRANSACTION_ROWS} rows)"
        )
    print("(80% trades, 20% closed klines; WAL, synchronous=NORMAL; fresh file per row)")


if __name__ == "__main__":
    main()
