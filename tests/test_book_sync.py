"""BookSync: buffering, joining snapshots, breaks and re-syncs; the recorded Binance frames."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from trio_feed.core.book_sync import GAP, BookSync, SyncStep
from trio_feed.events import BookLevel, DepthDiff
from trio_feed.venues.binance_usdm import BinanceUsdmAdapter
from trio_feed.venues.book_rules import ConsecutiveIdRules, PreviousIdRules

D = Decimal
DATA = Path(__file__).parent / "data"


def lv(*pairs: tuple[str, str]) -> tuple[BookLevel, ...]:
    return tuple((D(p), D(q)) for p, q in pairs)


def diff(
    first: int,
    final: int,
    prev: int | None,
    bids: tuple[BookLevel, ...] = (),
    asks: tuple[BookLevel, ...] = (),
    time: int | None = None,
) -> DepthDiff:
    return DepthDiff("x", "S", first, final, prev, final if time is None else time, bids, asks)


def snap(
    last: int, bids: tuple[BookLevel, ...] = (), asks: tuple[BookLevel, ...] = ()
) -> DepthDiff:
    return DepthDiff("x", "S", last, last, None, 7, bids, asks, True)


def usdm(**kw: Any) -> BookSync:
    return BookSync("x", "S", PreviousIdRules(), **kw)


BASE_BIDS = lv(("100", "1"), ("99", "2"))
BASE_ASKS = lv(("101", "1"), ("102", "2"))


def test_first_diff_asks_for_a_snapshot_once() -> None:
    sync = usdm()
    assert sync.on_diff(diff(1, 5, 0)) == SyncStep(0, "initial sync")
    assert sync.on_diff(diff(6, 9, 5)) == SyncStep()
    assert not sync.synced
    assert sync.waiting
    assert sync.buffered == 2
    assert sync.resyncs == 1
    assert sync.breaks == 0


def test_snapshot_drops_stale_applies_bridge_and_replays() -> None:
    sync = usdm()
    sync.on_diff(diff(1, 5, 0, lv(("100", "5"))))  # stale: u < L
    sync.on_diff(diff(6, 12, 5, lv(("100", "6"))))  # bridges L = 10
    sync.on_diff(diff(13, 20, 12, (), lv(("101", "0"), ("101.5", "3")), time=555))
    step = sync.on_snapshot(snap(10, BASE_BIDS, BASE_ASKS))
    assert step == SyncStep(2)
    assert sync.synced
    assert not sync.waiting
    assert sync.buffered == 0
    assert sync.book.last_update_id == 20
    assert sync.book.time == 555
    assert sync.book.top(5) == (
        lv(("100", "6"), ("99", "2")),
        lv(("101.5", "3"), ("102", "2")),
    )
    assert sync.snapshots == 1
    # Live diffs now chain on pu.
    assert sync.on_diff(diff(30, 31, 20, lv(("99", "0")))) == SyncStep(1)
    assert sync.book.top(5)[0] == lv(("100", "6"))
    assert sync.last_applied is not None
    assert sync.last_applied.final_update_id == 31


def test_snapshot_older_than_first_buffered_asks_for_another() -> None:
    sync = usdm()
    sync.on_diff(diff(20, 25, 19))
    sync.on_diff(diff(26, 30, 25))
    step = sync.on_snapshot(snap(15, BASE_BIDS, BASE_ASKS))
    assert step.applied == 0
    assert step.resync == "snapshot 15 older than the first buffered diff 20..25"
    assert not sync.synced
    assert sync.buffered == 2
    assert sync.resyncs == 2
    assert sync.last_break == step.resync
    with pytest.raises(LookupError):
        sync.book.view()
    # A newer one joins, the buffer intact.
    assert sync.on_snapshot(snap(27, BASE_BIDS, BASE_ASKS)) == SyncStep(1)
    assert sync.synced
    assert sync.book.last_update_id == 30


def test_empty_buffer_after_snapshot_then_stale_bridge_or_gap() -> None:
    sync = usdm()
    assert sync.on_snapshot(snap(10, BASE_BIDS, BASE_ASKS)) == SyncStep()
    assert sync.synced
    assert sync.book.last_update_id == 10
    assert sync.on_diff(diff(5, 9, 4)) == SyncStep()  # stale: dropped
    assert sync.book.last_update_id == 10
    assert sync.on_diff(diff(8, 12, 7, lv(("100", "9")))) == SyncStep(1)  # bridges
    assert sync.book.top(1)[0] == lv(("100", "9"))
    other = usdm()
    other.on_snapshot(snap(10))
    step = other.on_diff(diff(11, 12, 10))  # U > L: the snapshot is older than the stream
    assert step.resync == GAP + "snapshot 10 older than the next diff 11..12"
    assert not other.synced
    assert other.buffered == 1
    assert other.breaks == 1


def test_gap_clears_the_book_and_starts_a_new_buffer() -> None:
    sync = usdm()
    sync.on_diff(diff(1, 10, 0))
    sync.on_snapshot(snap(5, BASE_BIDS, BASE_ASKS))
    step = sync.on_diff(diff(15, 20, 12))
    assert step == SyncStep(0, "gap: pu 12 != previous u 10")
    assert not sync.synced
    assert not sync.book.loaded
    assert sync.buffered == 1
    assert sync.breaks == 1
    assert sync.waiting
    # No new request while the snapshot is being fetched.
    assert sync.on_diff(diff(21, 22, 20)) == SyncStep()
    # The breaking diff bridges the next snapshot.
    assert sync.on_snapshot(snap(17, BASE_BIDS)) == SyncStep(2)
    assert sync.synced
    assert sync.book.last_update_id == 22


def test_duplicate_message_is_a_break() -> None:
    sync = usdm()
    sync.on_snapshot(snap(10))
    sync.on_diff(diff(9, 12, 8))
    sync.on_diff(diff(13, 15, 12))
    step = sync.on_diff(diff(13, 15, 12))
    assert step.resync == "gap: diff 13..15 repeated"
    assert not sync.synced


def test_gap_inside_the_buffer_stops_the_replay() -> None:
    sync = usdm()
    for d in (diff(1, 10, 0), diff(11, 12, 10), diff(14, 15, 13), diff(16, 17, 15)):
        sync.on_diff(d)
    step = sync.on_snapshot(snap(5))
    assert step == SyncStep(2, "gap: pu 13 != previous u 12")
    assert not sync.synced
    assert not sync.book.loaded
    assert sync.buffered == 2  # from the breaking diff on
    assert sync.on_snapshot(snap(14)) == SyncStep(2)
    assert sync.book.last_update_id == 17


def test_full_buffer_drops_oldest_and_needs_a_snapshot_containing_it() -> None:
    sync = usdm(max_buffer=3)
    for i in range(5):
        sync.on_diff(diff(10 * i + 1, 10 * i + 10, 10 * i))
    assert sync.buffered == 3
    assert sync.overflows == 2
    step = sync.on_snapshot(snap(12))  # contains diff 1..10, not the dropped 11..20
    assert step.resync == "snapshot 12 older than diff 11..20 dropped from the full buffer"
    assert not sync.synced
    assert sync.on_snapshot(snap(25)) == SyncStep(3)
    assert sync.book.last_update_id == 50


def test_stream_snapshot_frame_loads_directly() -> None:
    sync = usdm()
    sync.on_diff(diff(1, 10, 0))
    frame = DepthDiff("x", "S", 40, 50, 39, 9, BASE_BIDS, BASE_ASKS, snapshot=True)
    assert sync.on_diff(frame) == SyncStep(1)
    assert sync.synced
    assert sync.buffered == 0
    assert sync.book.view().bids == BASE_BIDS
    assert sync.book.last_update_id == 50
    assert sync.on_diff(diff(45, 55, 44)) == SyncStep(1)


def test_reset_drops_the_book_and_the_next_diff_asks_with_the_reason() -> None:
    sync = usdm()
    sync.on_snapshot(snap(10, BASE_BIDS))
    assert sync.reset("connection lost") == SyncStep()
    assert not sync.synced
    assert not sync.book.loaded
    assert not sync.waiting
    assert sync.on_diff(diff(20, 21, 19)) == SyncStep(0, "connection lost")
    assert sync.waiting


def test_snapshot_while_synced() -> None:
    sync = usdm()
    sync.on_snapshot(snap(10))
    sync.on_diff(diff(9, 20, 8, lv(("100", "1"))))
    # Older than the book: ignored.
    assert sync.on_snapshot(snap(15, lv(("1", "1")))) == SyncStep()
    assert sync.book.top(5)[0] == lv(("100", "1"))
    assert sync.snapshots == 1
    # At the book's own id: the levels are replaced, the chain goes on.
    sync.on_snapshot(snap(20, lv(("100", "2"))))
    assert sync.book.top(5)[0] == lv(("100", "2"))
    assert sync.on_diff(diff(21, 25, 20)) == SyncStep(1)
    # Newer: replaces the book; the next diff must be stale or bridge it.
    sync.on_snapshot(snap(40, lv(("100", "3"))))
    assert sync.book.last_update_id == 40
    assert sync.on_diff(diff(26, 30, 25)) == SyncStep()  # stale now
    assert sync.on_diff(diff(31, 45, 30)) == SyncStep(1)
    assert sync.book.last_update_id == 45


def test_reload_replaces_levels_and_replays() -> None:
    sync = usdm()
    sync.on_snapshot(snap(10, lv(("100", "1"))))
    d1 = diff(9, 20, 8, lv(("99", "1")))
    d2 = diff(21, 30, 20, lv(("98", "1")))
    sync.on_diff(d1)
    sync.on_diff(d2)
    assert sync.reload(snap(20, lv(("100", "5"), ("99", "1"))), [d2]) == SyncStep(1)
    assert sync.book.top(5)[0] == lv(("100", "5"), ("99", "1"), ("98", "1"))
    assert sync.book.last_update_id == 30
    assert sync.on_diff(diff(31, 32, 30)) == SyncStep(1)
    sync.reset("x")
    with pytest.raises(RuntimeError):
        sync.reload(snap(20))


def test_spot_rules_through_book_sync() -> None:
    sync = BookSync("x", "S", ConsecutiveIdRules())
    sync.on_diff(diff(5, 10, None))  # stale: u <= L
    sync.on_diff(diff(11, 12, None, lv(("100", "3"))))  # U == L + 1
    assert sync.on_snapshot(snap(10, BASE_BIDS)) == SyncStep(1)
    assert sync.on_diff(diff(13, 13, None)) == SyncStep(1)
    assert sync.on_diff(diff(15, 16, None)).resync == "gap: U 15 != previous u + 1 (14)"


def test_max_buffer_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_buffer"):
        usdm(max_buffer=0)


# ---- the recorded Binance frames -----------------------------------------------------------


def fixture(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return result


def reference(snapshot: DepthDiff, diffs: list[DepthDiff]) -> tuple[dict[D, D], dict[D, D]]:
    """The naive book: the snapshot's levels, then every diff in order."""
    bids, asks = dict(snapshot.bids), dict(snapshot.asks)
    for d in diffs:
        for side, levels in ((bids, d.bids), (asks, d.asks)):
            for price, qty in levels:
                if qty:
                    side[price] = qty
                else:
                    side.pop(price, None)
    return bids, asks


def replay_recording(
    sync: BookSync, frames: list[tuple[float, DepthDiff]], snapshot: DepthDiff, at: float
) -> tuple[list[SyncStep], int]:
    """Feed diffs received before ``at``, then the snapshot, then the rest, as they came.
    Returns every step and how many diffs were applied."""
    steps = []
    for recv, d in frames:
        if recv < at:
            steps.append(sync.on_diff(d))
    steps.append(sync.on_snapshot(snapshot))
    for recv, d in frames:
        if recv >= at:
            steps.append(sync.on_diff(d))
    return steps, sum(s.applied for s in steps)


@pytest.mark.parametrize(("symbol", "stale"), [("AKROUSDT", 1), ("CTKUSDT", 5)])
def test_recorded_usdm_session_syncs_with_one_bridge_and_no_break(symbol: str, stale: int) -> None:
    adapter = BinanceUsdmAdapter()
    frames: list[tuple[float, DepthDiff]] = []
    for rec in fixture("binance_usdm_depth_diff")["recorded"]:
        (d,) = adapter.parse(rec["raw"])
        assert isinstance(d, DepthDiff)
        assert not d.snapshot
        if d.symbol == symbol:
            frames.append((rec["recv_ts"], d))
    (rest,) = [
        r for r in fixture("binance_usdm_rest_depth")["recorded"] if f"={symbol}&" in r["url"]
    ]
    snapshot = adapter.parse_depth(rest["raw"], symbol)
    assert len(snapshot.bids) + len(snapshot.asks) > 1000
    rules = adapter.book_rules()
    last = snapshot.final_update_id
    diffs = [d for _, d in frames]
    # The facts sheet's claim, on this recording: exactly one bridging event ...
    bridging = [d for d in diffs if not rules.stale(d, last) and rules.bridges(d, last)]
    assert len(bridging) == 1
    assert sum(rules.stale(d, last) for d in diffs) == stale
    assert diffs.index(bridging[0]) == stale  # right after the stale ones
    # ... and no pu break anywhere in the stream.
    assert all(rules.follows(a, b) is None for a, b in itertools.pairwise(diffs))

    sync = BookSync(adapter.name, symbol, rules)
    steps, applied = replay_recording(sync, frames, snapshot, rest["recv_ts"])
    assert [s.resync for s in steps if s.resync] == ["initial sync"]
    assert sync.synced
    assert sync.breaks == 0
    assert applied == len(diffs) - stale
    assert sync.book.last_update_id == diffs[-1].final_update_id
    assert sync.book.levels() == reference(snapshot, diffs[stale:])


def spot_diff(raw: str) -> DepthDiff:
    data = json.loads(raw)["data"]
    return DepthDiff(
        "binance-spot",
        data["s"],
        data["U"],
        data["u"],
        None,
        data["E"],
        tuple((D(p), D(q)) for p, q in data["b"]),
        tuple((D(p), D(q)) for p, q in data["a"]),
    )


@pytest.mark.parametrize(("symbol", "stale", "applied"), [("LRCBTC", 2, 1), ("BLZETH", 1, 0)])
def test_recorded_spot_session_syncs(symbol: str, stale: int, applied: int) -> None:
    frames = [
        (rec["recv_ts"], spot_diff(rec["raw"]))
        for rec in fixture("binance_spot_depth_diff")["recorded"]
    ]
    frames = [(t, d) for t, d in frames if d.symbol == symbol]
    (rest,) = [
        r for r in fixture("binance_spot_rest_depth")["recorded"] if f"={symbol}&" in r["url"]
    ]
    body = json.loads(rest["raw"])
    last = body["lastUpdateId"]
    snapshot = DepthDiff(
        "binance-spot",
        symbol,
        last,
        last,
        None,
        0,
        tuple((D(p), D(q)) for p, q in body["bids"]),
        tuple((D(p), D(q)) for p, q in body["asks"]),
        True,
    )
    rules = ConsecutiveIdRules()
    diffs = [d for _, d in frames]
    assert sum(rules.stale(d, last) for d in diffs) == stale
    sync = BookSync("binance-spot", symbol, rules)
    steps, total = replay_recording(sync, frames, snapshot, rest["recv_ts"])
    assert [s.resync for s in steps if s.resync] == ["initial sync"]
    assert sync.synced
    assert total == applied
    assert sync.book.levels() == reference(snapshot, diffs[stale:])
    if applied:
        # The first usable spot event starts right after the snapshot: U == L + 1.
        assert diffs[stale].first_update_id == last + 1
