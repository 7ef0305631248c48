"""BookSync's optional content check (`VerifyingRules.verify`): called after every applied
diff, replayed diff and stream snapshot; a failure is a break that re-syncs."""

from __future__ import annotations

from decimal import Decimal

from trio_feed.core.book import OrderBook
from trio_feed.core.book_sync import GAP, BookSync, SyncStep, VerifyingRules
from trio_feed.events import BookLevel, DepthDiff
from trio_feed.venues.book_rules import PreviousIdRules

D = Decimal


def lv(*pairs: tuple[str, str]) -> tuple[BookLevel, ...]:
    return tuple((D(p), D(q)) for p, q in pairs)


class BestBidRules(PreviousIdRules):
    """USD-M ids, plus: the diff's ``checksum`` (when set) must equal the best bid price.

    Records every call, so tests can tell when verify ran and on which book state."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls: list[tuple[int, Decimal | None]] = []

    def verify(self, book: OrderBook, diff: DepthDiff) -> str | None:
        bids, _ = book.top(1)
        best = bids[0][0] if bids else None
        self.calls.append((diff.final_update_id, best))
        if diff.checksum is None or best == diff.checksum:
            return None
        return f"best bid {best} != {diff.checksum}"


_TYPED: VerifyingRules = BestBidRules()  # mypy: the class satisfies the protocol


def diff(
    first: int,
    final: int,
    prev: int | None,
    bids: tuple[BookLevel, ...] = (),
    checksum: int | None = None,
    *,
    snapshot: bool = False,
) -> DepthDiff:
    return DepthDiff("x", "S", first, final, prev, final, bids, (), snapshot, checksum)


def snap(last: int, best: str, checksum: int | None = None) -> DepthDiff:
    return diff(last, last, None, lv((best, "1")), checksum, snapshot=True)


def synced(rules: BestBidRules) -> BookSync:
    sync = BookSync("x", "S", rules)
    assert sync.on_diff(snap(10, "100", 100)) == SyncStep(1)
    return sync


def test_verify_runs_after_a_stream_snapshot_and_each_applied_diff() -> None:
    rules = BestBidRules()
    sync = synced(rules)
    assert sync.on_diff(diff(10, 12, 9, lv(("101", "1")), 101)) == SyncStep(1)
    assert sync.on_diff(diff(13, 14, 12, lv(("99", "5")), 101)) == SyncStep(1)
    # Called on the book as it is after each one (the best bid moved to 101).
    assert rules.calls == [(10, D(100)), (12, D(101)), (14, D(101))]
    assert sync.synced
    assert sync.breaks == 0


def test_a_failed_check_on_a_live_diff_is_a_break_and_the_diff_starts_the_buffer() -> None:
    rules = BestBidRules()
    sync = synced(rules)
    step = sync.on_diff(diff(10, 12, 9, lv(("101", "1")), 555))
    assert step == SyncStep(0, GAP + "best bid 101 != 555")
    assert not sync.synced
    assert not sync.book.loaded  # never shown while wrong
    assert sync.breaks == 1
    assert sync.buffered == 1
    # A REST snapshot before the bad diff replays it and checks it again: still wrong.
    step = sync.on_snapshot(diff(11, 11, None, lv(("100", "1")), snapshot=True))
    assert step.resync == GAP + "best bid 101 != 555"
    assert not sync.synced
    assert sync.buffered == 1  # kept for the next snapshot
    # A snapshot past it drops it as stale and the book is in sync again.
    assert sync.on_snapshot(diff(13, 13, None, lv(("101", "1")), snapshot=True)) == SyncStep()
    assert sync.synced
    assert sync.on_diff(diff(13, 13, 12, lv(("102", "1")), 102)) == SyncStep(1)


def test_a_failed_check_on_a_stream_snapshot_asks_for_a_snapshot() -> None:
    rules = BestBidRules()
    sync = BookSync("x", "S", rules)
    step = sync.on_diff(snap(10, "100", 7))
    assert step.applied == 0
    assert step.resync == GAP + "best bid 100 != 7"
    assert not sync.synced
    assert sync.waiting


def test_replayed_diffs_are_checked_one_by_one() -> None:
    rules = BestBidRules()
    sync = BookSync("x", "S", rules)
    assert sync.on_diff(diff(11, 12, 10, lv(("101", "1")), 101)).resync is not None
    assert sync.on_diff(diff(13, 14, 12, lv(("102", "1")), 102)) == SyncStep()
    assert sync.on_snapshot(diff(11, 11, None, lv(("100", "1")), snapshot=True)) == SyncStep(2)
    assert rules.calls == [(12, D(101)), (14, D(102))]
    assert sync.synced


def test_no_checksum_means_nothing_to_check() -> None:
    rules = BestBidRules()
    sync = synced(rules)
    assert sync.on_diff(diff(10, 12, 9, lv(("50", "1")))) == SyncStep(1)
    assert sync.synced


def test_rules_without_verify_are_unaffected() -> None:
    sync = BookSync("x", "S", PreviousIdRules())
    # A checksum that no rule looks at: applied as before.
    assert sync.on_diff(snap(10, "100", 1)) == SyncStep(1)
    assert sync.on_diff(diff(10, 12, 9, lv(("101", "1")), 2)) == SyncStep(1)
    assert sync.synced
