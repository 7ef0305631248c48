"""Throughput of the order book on a realistic diff stream (a script, not a test).

    .venv/bin/python bench/bench_book.py [MESSAGES] [--seed N]

Builds a seeded USD-M-like stream: a 1000-level snapshot per side, then ``MESSAGES`` diff
messages (20000 by default) of 10 to 50 level changes each, mostly within a few ticks of the
best price, about a fifth of them removals, a few percent far levels beyond the snapshot's
range, and the mid price drifting. Every message is a parsed `DepthDiff` with Decimal prices
and a valid ``pu`` chain, built before timing, so parsing is not measured (see
``bench_parse.py`` for that).

Prints diff messages per second and level changes per second for `OrderBook.apply` alone and
for `VenueBooks.on_diff` (sequence checks plus a `BookUpdate` of the top 20 levels per
message), best of three runs. Target: at least 100,000 level changes per second on one core.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trio_feed.core.book import OrderBook  # noqa: E402
from trio_feed.core.books import VenueBooks  # noqa: E402
from trio_feed.events import BookLevel, DepthDiff  # noqa: E402
from trio_feed.venues.book_rules import PreviousIdRules  # noqa: E402

LEVELS = 1000
TICK = Decimal("0.1")
SYMBOL = "BTCUSDT"
TARGET = 100_000


def price(tick: int) -> Decimal:
    """A price on the 0.1 grid, as a parser would make it (from the string)."""
    return Decimal(f"{tick // 10}.{tick % 10}")


def make_stream(messages: int, seed: int) -> tuple[DepthDiff, list[DepthDiff]]:
    """A 1000-level snapshot and ``messages`` chained diffs after it."""
    rng = random.Random(seed)
    mid = 300_000  # ticks: 30000.0
    bids = {mid - i: rng.randint(1, 5000) for i in range(LEVELS)}
    asks = {mid + 1 + i: rng.randint(1, 5000) for i in range(LEVELS)}

    def qty() -> Decimal:
        return Decimal(rng.randint(1, 50_000)) / 1000

    last = 1_000_000
    snapshot = DepthDiff(
        "binance-usdm",
        SYMBOL,
        last,
        last,
        None,
        0,
        tuple((price(t), Decimal(q) / 1000) for t, q in sorted(bids.items(), reverse=True)),
        tuple((price(t), Decimal(q) / 1000) for t, q in sorted(asks.items())),
        True,
    )
    diffs: list[DepthDiff] = []
    prev = last
    for n in range(messages):
        changes: tuple[dict[int, Decimal], dict[int, Decimal]] = ({}, {})
        if rng.random() < 0.1:
            mid += rng.choice((-1, 1))  # the touch moves now and then
        wanted = rng.randint(10, 50)
        while len(changes[0]) + len(changes[1]) < wanted:
            is_bid = rng.random() < 0.5
            side = bids if is_bid else asks
            sign = -1 if is_bid else 1
            best = mid if is_bid else mid + 1
            r = rng.random()
            if r < 0.05:
                tick = best + sign * rng.randint(LEVELS, LEVELS + 200)  # far, never covered
            else:
                tick = best + sign * min(int(rng.expovariate(1 / 12)), LEVELS - 1)
            if r > 0.8 and tick in side:
                del side[tick]
                changes[0 if is_bid else 1][tick] = Decimal(0)
            else:
                side[tick] = 1
                changes[0 if is_bid else 1][tick] = qty()
        # The first one bridges the snapshot (U <= L <= u); then ids jump as on USD-M.
        first = prev - 5 if n == 0 else prev + 1 + rng.randint(0, 20)
        final = first + rng.randint(10, 400)
        diffs.append(
            DepthDiff(
                "binance-usdm",
                SYMBOL,
                first,
                final,
                prev,
                1_700_000_000_000 + 100 * n,
                _levels(changes[0]),
                _levels(changes[1]),
            )
        )
        prev = final
    return snapshot, diffs


def _levels(changes: dict[int, Decimal]) -> tuple[BookLevel, ...]:
    return tuple((price(t), q) for t, q in changes.items())


def bench_apply(snapshot: DepthDiff, diffs: list[DepthDiff]) -> tuple[float, tuple[int, int]]:
    """Seconds to apply every diff, and the book's levels per side at the end."""
    book = OrderBook("binance-usdm", SYMBOL)
    book.load_snapshot(snapshot.final_update_id, snapshot.bids, snapshot.asks, snapshot.time)
    apply = book.apply
    start = time.perf_counter()
    for d in diffs:
        apply(d.bids, d.asks, d.final_update_id, d.time)
    return time.perf_counter() - start, book.sizes


def bench_venue(snapshot: DepthDiff, diffs: list[DepthDiff]) -> tuple[float, int]:
    books = VenueBooks("binance-usdm", PreviousIdRules(), depth=20)
    books.track(SYMBOL)
    out: list[object] = []
    books.on_diff(diffs[0], out)  # asks for the snapshot
    if books.on_snapshot(snapshot, out) is not None or not books.synced(SYMBOL):
        raise AssertionError("the snapshot did not join")
    out.clear()
    on_diff = books.on_diff
    emitted = 0
    start = time.perf_counter()
    for i, d in enumerate(diffs[1:], 1):
        if on_diff(d, out) is not None:
            raise AssertionError(f"diff {i} broke the chain")
        if len(out) >= 1000:
            emitted += len(out)
            out.clear()
    elapsed = time.perf_counter() - start
    emitted += len(out)
    assert books.synced(SYMBOL)
    return elapsed, emitted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("messages", nargs="?", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    snapshot, diffs = make_stream(args.messages, args.seed)
    changes = sum(len(d.bids) + len(d.asks) for d in diffs)
    print(
        f"{len(diffs)} diff messages, {changes} level changes "
        f"({changes / len(diffs):.1f} per message), {LEVELS}-level snapshot per side"
    )
    runs = [bench_apply(snapshot, diffs) for _ in range(3)]
    apply_s = min(r[0] for r in runs)
    bids, asks = runs[0][1]
    print(f"book at the end: {bids} bids, {asks} asks (levels past the snapshot's range kept)")
    venue = [bench_venue(snapshot, diffs) for _ in range(3)]
    venue_s = min(v[0] for v in venue)
    venue_changes = changes - len(diffs[0].bids) - len(diffs[0].asks)
    emitted = venue[0][1]
    print(f"{'':28}{'messages/s':>14}{'levels/s':>14}")
    print(f"{'OrderBook.apply':28}{len(diffs) / apply_s:>14,.0f}{changes / apply_s:>14,.0f}")
    print(
        f"{'VenueBooks.on_diff (d=20)':28}{(len(diffs) - 1) / venue_s:>14,.0f}"
        f"{venue_changes / venue_s:>14,.0f}   ({emitted} BookUpdate events)"
    )
    worst = min(changes / apply_s, venue_changes / venue_s)
    verdict = "meets" if worst >= TARGET else "MISSES"
    print(f"target {TARGET:,} level changes/s: {verdict} it ({worst:,.0f} on the slower path)")


if __name__ == "__main__":
    main()
