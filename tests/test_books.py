"""VenueBooks: routing, BookUpdate emission, re-syncs per symbol, depth checks; and property
tests on simulated USD-M and spot streams with gaps, duplicates, reorderings and resets."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_feed.core.book_sync import SequenceRules
from trio_feed.core.books import VenueBooks, compare_top
from trio_feed.events import BookLevel, BookUpdate, DepthDiff, Reconcile
from trio_feed.venues.book_rules import ConsecutiveIdRules, PreviousIdRules

D = Decimal


def lv(*pairs: tuple[str, str]) -> tuple[BookLevel, ...]:
    return tuple((D(p), D(q)) for p, q in pairs)


def diff(
    first: int,
    final: int,
    prev: int | None,
    bids: tuple[BookLevel, ...] = (),
    asks: tuple[BookLevel, ...] = (),
    *,
    symbol: str = "S",
    time: int | None = None,
) -> DepthDiff:
    t = final * 10 if time is None else time
    return DepthDiff("x", symbol, first, final, prev, t, bids, asks)


def snap(
    last: int,
    bids: tuple[BookLevel, ...] = (),
    asks: tuple[BookLevel, ...] = (),
    *,
    symbol: str = "S",
) -> DepthDiff:
    return DepthDiff("x", symbol, last, last, None, last * 10, bids, asks, True)


BIDS = lv(("100", "1"), ("99", "2"), ("98", "3"))
ASKS = lv(("101", "1"), ("102", "2"), ("103", "3"))


def books(**kw: Any) -> VenueBooks:
    vb = VenueBooks("x", PreviousIdRules(), **kw)
    vb.track("S")
    return vb


def synced_books(**kw: Any) -> VenueBooks:
    """Tracking "S", in sync at update id 10 (snapshot BIDS/ASKS)."""
    vb = books(**kw)
    out: list[object] = []
    assert vb.on_snapshot(snap(10, BIDS, ASKS), out) is None
    assert vb.synced("S")
    return vb


def updates(out: list[object]) -> list[BookUpdate]:
    assert all(isinstance(e, BookUpdate) for e in out), out
    return [e for e in out if isinstance(e, BookUpdate)]


# ---- routing and emission ------------------------------------------------------------------


def test_track_untrack_and_untracked_symbols_are_ignored() -> None:
    vb = VenueBooks("x", PreviousIdRules())
    vb.track("A")
    vb.track("B")
    vb.track("A")
    assert vb.symbols() == ["A", "B"]
    out: list[object] = []
    assert vb.on_diff(diff(1, 2, 0, symbol="Z"), out) is None
    assert vb.on_snapshot(snap(1, symbol="Z"), out) is None
    assert out == []
    assert vb.view("Z") is None
    assert not vb.synced("Z")
    vb.untrack("A")
    assert vb.symbols() == ["B"]
    assert vb.book_sync("A") is None
    assert vb.book_sync("B") is not None


def test_first_diff_asks_then_snapshot_emits_one_update_of_the_replayed_book() -> None:
    vb = books(depth=2)
    out: list[object] = []
    assert vb.on_diff(diff(5, 12, 4, lv(("100", "7"))), out) == "initial sync"
    assert vb.on_diff(diff(13, 15, 12, (), lv(("101", "0"))), out) is None
    assert out == []
    assert vb.view("S") is None
    assert vb.needs_snapshot("S") == "initial sync"
    assert vb.on_snapshot(snap(10, BIDS, ASKS), out) is None
    assert updates(out) == [
        BookUpdate("x", "S", 15, 150, lv(("100", "7"), ("99", "2")), lv(("102", "2"), ("103", "3")))
    ]
    assert vb.needs_snapshot("S") is None
    assert vb.resyncs == 0  # a book's first request is not a re-sync


def test_each_applied_diff_emits_the_top_levels() -> None:
    vb = synced_books(depth=2)
    out: list[object] = []
    assert vb.on_diff(diff(5, 9, 4), out) is None  # stale diffs emit nothing
    assert out == []
    assert vb.on_diff(diff(8, 20, 7, lv(("100.5", "4")), time=1234), out) is None
    assert updates(out) == [
        BookUpdate(
            "x", "S", 20, 1234, lv(("100.5", "4"), ("100", "1")), lv(("101", "1"), ("102", "2"))
        )
    ]
    view = vb.view("S")
    assert view is not None
    assert view.last_update_id == 20
    assert len(view.bids) == 4
    assert vb.view("S", 1) == view.__class__("x", "S", 20, 1234, view.bids[:1], view.asks[:1])


def test_min_interval_limits_updates_in_exchange_time() -> None:
    vb = synced_books(min_interval_ms=100)
    out: list[object] = []
    times = [1000, 1050, 1099, 1100, 1150, 1250]
    prev = 10
    for i, t in enumerate(times):
        u = 20 + i
        vb.on_diff(diff(prev, u, prev, lv(("100", str(i + 1))), time=t), out)
        prev = u
    assert [(e.time, e.last_update_id) for e in updates(out)] == [
        (1000, 20),
        (1100, 23),
        (1250, 25),
    ]
    view = vb.view("S")
    assert view is not None
    assert view.bids[0] == (D(100), D(6))  # the book itself is always current


def test_gap_resyncs_only_the_broken_symbol() -> None:
    vb = VenueBooks("x", PreviousIdRules())
    out: list[object] = []
    for s in ("A", "B"):
        vb.track(s)
        vb.on_snapshot(snap(10, BIDS, ASKS, symbol=s), out)
        vb.on_diff(diff(9, 11, 8, symbol=s), out)
    out.clear()
    reason = vb.on_diff(diff(15, 20, 12, symbol="A"), out)
    assert reason == "gap: pu 12 != previous u 11"
    assert out == []
    assert vb.view("A") is None
    assert not vb.synced("A")
    assert vb.needs_snapshot("A") == reason
    assert vb.on_diff(diff(12, 13, 11, symbol="B"), out) is None
    assert [e.symbol for e in updates(out)] == ["B"]
    assert vb.synced("B")
    assert (vb.resyncs, vb.breaks) == (1, 1)
    # While A is out of sync nothing of it goes out; the snapshot brings it back.
    out.clear()
    assert vb.on_diff(diff(21, 25, 20, symbol="A"), out) is None
    assert out == []
    assert vb.on_snapshot(snap(18, BIDS, ASKS, symbol="A"), out) is None
    assert [(e.symbol, e.last_update_id) for e in updates(out)] == [("A", 25)]


def test_snapshot_too_old_returns_why_and_emits_nothing() -> None:
    vb = books()
    out: list[object] = []
    vb.on_diff(diff(20, 25, 19), out)
    reason = vb.on_snapshot(snap(15), out)
    assert reason == "snapshot 15 older than the first buffered diff 20..25"
    assert out == []
    assert vb.resyncs == 1
    assert vb.breaks == 0


def test_reset_hides_the_book_and_the_next_diff_asks() -> None:
    vb = synced_books()
    vb.reset("S", "connection lost")
    vb.reset("nope", "ignored")
    assert vb.view("S") is None
    out: list[object] = []
    assert vb.on_diff(diff(30, 31, 29), out) == "connection lost"
    assert out == []


def test_a_late_older_snapshot_changes_nothing() -> None:
    vb = synced_books()
    out: list[object] = []
    vb.on_diff(diff(9, 20, 8), out)
    out.clear()
    assert vb.on_snapshot(snap(15, lv(("1", "1"))), out) is None
    assert out == []
    view = vb.view("S")
    assert view is not None
    assert view.bids == BIDS


def test_stream_snapshot_frames_load_and_emit() -> None:
    vb = books()
    out: list[object] = []
    frame = DepthDiff("x", "S", 1, 50, 0, 500, BIDS, ASKS, snapshot=True)
    assert vb.on_diff(frame, out) is None
    assert [e.last_update_id for e in updates(out)] == [50]
    assert vb.synced("S")


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="depth"):
        VenueBooks("x", PreviousIdRules(), depth=0)
    with pytest.raises(ValueError, match="check_levels"):
        VenueBooks("x", PreviousIdRules(), check_levels=0)


# ---- depth checks --------------------------------------------------------------------------


def test_compare_top_overlapping_levels_only() -> None:
    ours_b = lv(("100", "1"), ("99", "2"), ("98", "3"))
    theirs_b = lv(("100", "1"), ("99.5", "5"), ("99", "2.5"), ("97", "1"))
    ours_a = lv(("101", "1"), ("102", "2"))
    theirs_a = lv(("100.5", "3"), ("101", "1.0"), ("105", "1"))
    assert compare_top(ours_b, ours_a, theirs_b, theirs_a) == [
        "bid 99.5: missing locally",
        "bid 99: 2 != 2.5",
        "bid 98: missing in snapshot",
        # bid 97 lies past our worst bid: not compared.
        "ask 100.5: missing locally",  # better than our best ask: we claim it is not there
        "ask 102: missing in snapshot",
        # ask 105 lies past our worst ask: not compared.
    ]
    assert compare_top(ours_b, ours_a, ours_b, ours_a) == []
    assert compare_top((), (), theirs_b, ()) == []
    assert compare_top(lv(("100", "1")), (), lv(("101", "1"), ("100", "1")), ()) == [
        "bid 101: missing locally"
    ]


class Mismatches:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, symbol: str, text: str) -> None:
        self.calls.append((symbol, text))


def test_check_match_at_the_same_id() -> None:
    seen = Mismatches()
    vb = synced_books(on_mismatch=seen)
    vb.begin_check("S")
    out: list[object] = []
    assert vb.check("S", snap(10, BIDS, ASKS), gap_resync=100, out=out) == "match"
    assert out == []
    assert seen.calls == []
    assert vb.last_check("S") == "match"
    assert (vb.checks, vb.matches, vb.mismatches) == (1, 1, 0)


def test_check_mismatch_reports_reconciles_and_repairs() -> None:
    seen = Mismatches()
    vb = synced_books(on_mismatch=seen, depth=3)
    vb.begin_check("S")
    out: list[object] = []
    truth_bids = lv(("100", "1"), ("99", "2.5"), ("98", "3"))
    truth_asks = lv(("100.5", "1"), ("101", "1"), ("102", "2"), ("103", "3"))
    assert vb.check("S", snap(10, truth_bids, truth_asks), gap_resync=100, out=out) == "mismatch"
    mismatches = ("bid 99: 2 != 2.5", "ask 100.5: missing locally")
    assert out[0] == Reconcile("S", "depth", 10, mismatches, "resynced")
    assert updates(out[1:]) == [BookUpdate("x", "S", 10, 100, truth_bids, truth_asks[:3])]
    assert seen.calls == [("S", "depth mismatch at update 10: " + "; ".join(mismatches))]
    view = vb.view("S")
    assert view is not None
    assert view.asks[0] == (D("100.5"), D(1))
    assert vb.mismatches == 1
    # The chain goes on from the repaired book.
    out.clear()
    assert vb.on_diff(diff(9, 12, 8), out) is None
    assert vb.on_diff(diff(13, 14, 12), out) is None
    assert len(updates(out)) == 2


def test_check_lagging_more_than_gap_resyncs_from_the_snapshot() -> None:
    vb = synced_books()
    vb.begin_check("S")
    out: list[object] = []
    fresh = lv(("200", "1"))
    assert vb.check("S", snap(500, fresh, ASKS), gap_resync=100, out=out) == "resynced"
    assert updates(out) == [BookUpdate("x", "S", 500, 5000, fresh, ASKS)]
    assert vb.resyncs == 1
    # Diffs up to the snapshot are stale now; the one bridging it chains on.
    out.clear()
    assert vb.on_diff(diff(11, 20, 10), out) is None
    assert out == []
    assert vb.on_diff(diff(21, 510, 20), out) is None
    assert [e.last_update_id for e in updates(out)] == [510]


def test_check_of_an_unsynced_book_syncs_it() -> None:
    vb = books()
    out: list[object] = []
    vb.on_diff(diff(5, 12, 4, lv(("100", "9"))), out)
    assert vb.check("S", snap(10, BIDS, ASKS), gap_resync=100, out=out) == "resynced"
    assert vb.synced("S")
    assert [e.last_update_id for e in updates(out)] == [12]


def test_check_pending_then_match_from_on_diff() -> None:
    vb = synced_books()
    vb.begin_check("S")
    out: list[object] = []
    truth = lv(("100", "5"), ("99", "2"), ("98", "3"))
    assert vb.check("S", snap(20, truth, ASKS), gap_resync=100, out=out) == "pending"
    assert vb.last_check("S") == "pending"
    vb.on_diff(diff(9, 15, 8, lv(("100", "4"))), out)
    assert vb.last_check("S") == "pending"
    vb.on_diff(diff(16, 20, 15, lv(("100", "5"))), out)
    assert vb.last_check("S") == "match"
    assert [e.last_update_id for e in updates(out)] == [15, 20]


def test_check_pending_then_mismatch_from_on_diff_emits_only_the_repaired_book() -> None:
    seen = Mismatches()
    vb = synced_books(on_mismatch=seen)
    vb.begin_check("S")
    out: list[object] = []
    truth = lv(("100", "6"), ("99", "2"), ("98", "3"))
    assert vb.check("S", snap(20, truth, ASKS), gap_resync=100, out=out) == "pending"
    vb.on_diff(diff(9, 20, 8, lv(("100", "5"))), out)
    assert vb.last_check("S") == "mismatch"
    assert out[0] == Reconcile("S", "depth", 20, ("bid 100: 5 != 6",), "resynced")
    (update,) = updates(out[1:])
    assert update.bids == truth
    assert update.last_update_id == 20
    assert update.time == 200  # the stream's time at that id
    assert len(seen.calls) == 1


def test_check_pending_skipped_when_the_id_falls_inside_a_diff() -> None:
    vb = synced_books()
    vb.begin_check("S")
    out: list[object] = []
    assert vb.check("S", snap(20, BIDS, ASKS), gap_resync=100, out=out) == "pending"
    vb.on_diff(diff(9, 25, 8), out)
    assert vb.last_check("S") == "skipped"
    assert vb.skipped == 1


def test_check_with_the_stream_ahead_uses_the_remembered_state() -> None:
    vb = synced_books()
    vb.begin_check("S")
    out: list[object] = []
    vb.on_diff(diff(9, 20, 8, lv(("100", "4"))), out)
    vb.on_diff(diff(21, 30, 20, lv(("99", "7"))), out)
    at_20 = lv(("100", "4"), ("99", "2"), ("98", "3"))
    assert vb.check("S", snap(20, at_20, ASKS), gap_resync=100, out=out) == "match"
    # A mismatch there repairs the book and re-applies what came since.
    vb.begin_check("S")
    vb.on_diff(diff(31, 40, 30, lv(("97", "1"))), out)
    vb.on_diff(diff(41, 50, 40, (), lv(("101", "3"))), out)
    out.clear()
    wrong_at_40 = lv(("100", "4"), ("99", "7"), ("98", "3.5"), ("97", "1"))
    assert vb.check("S", snap(40, wrong_at_40, ASKS), gap_resync=100, out=out) == "mismatch"
    assert out[0] == Reconcile("S", "depth", 40, ("bid 98: 3 != 3.5",), "resynced")
    (update,) = updates(out[1:])
    assert update.last_update_id == 50
    assert update.bids == wrong_at_40
    assert update.asks[0] == (D(101), D(3))
    assert update.time == 500


def test_check_skipped_without_a_state_at_that_id() -> None:
    vb = synced_books()
    out: list[object] = []
    vb.begin_check("S")
    vb.on_diff(diff(9, 20, 8), out)
    assert vb.check("S", snap(15), gap_resync=100, out=out) == "skipped"  # inside a diff
    vb.on_diff(diff(21, 30, 20), out)
    # No begin_check: nothing remembered.
    assert vb.check("S", snap(20), gap_resync=100, out=out) == "skipped"
    assert vb.check("nope", snap(20, symbol="nope"), gap_resync=100, out=out) == "skipped"
    assert vb.skipped == 3


def test_check_given_up_when_a_stream_snapshot_replaces_the_book() -> None:
    vb = synced_books()
    out: list[object] = []
    vb.begin_check("S")
    assert vb.check("S", snap(20), gap_resync=100, out=out) == "pending"
    frame = DepthDiff("x", "S", 1, 20, 0, 500, BIDS, ASKS, snapshot=True)
    vb.on_diff(frame, out)
    assert vb.last_check("S") == "skipped"
    assert [e.last_update_id for e in updates(out)] == [20]


def test_check_given_up_when_the_book_breaks() -> None:
    vb = synced_books()
    out: list[object] = []
    vb.begin_check("S")
    assert vb.check("S", snap(20), gap_resync=100, out=out) == "pending"
    vb.on_diff(diff(15, 20, 14), out)  # a gap
    assert vb.last_check("S") == "skipped"
    assert not vb.synced("S")


# ---- property tests on simulated streams ---------------------------------------------------

Levels = dict[Decimal, Decimal]
BID_PRICES = [D(95) + D(i) / 2 for i in range(10)]
ASK_PRICES = [D(101) + D(i) / 2 for i in range(10)]
QTYS = [D(0), D("0.000"), D(1), D(2), D("3.5"), D(4)]
DEPTH = 4


class Market:
    """A symbol's true book and the diff messages the venue sends, with the state after every
    update id (each update sets one level; a message merges a few consecutive updates)."""

    def __init__(self, seed: int, n: int, *, consecutive: bool) -> None:
        rng = random.Random(seed)
        bids: Levels = {p: D(rng.randint(1, 5)) for p in BID_PRICES if rng.random() < 0.6}
        asks: Levels = {p: D(rng.randint(1, 5)) for p in ASK_PRICES if rng.random() < 0.6}
        uid = 1000
        self.start = uid
        self.states: dict[int, tuple[Levels, Levels]] = {uid: (dict(bids), dict(asks))}
        self.msgs: list[DepthDiff] = []
        self.msg_ids: list[list[int]] = []
        prev = uid
        for i in range(n):
            if not consecutive:
                uid += rng.randint(0, 4)  # other symbols' updates: ids are not contiguous
            changes: tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]] = ({}, {})
            ids = []
            for _ in range(rng.randint(1, 4)):
                uid += 1 if consecutive else rng.randint(1, 3)
                side = rng.random() < 0.5
                book, prices = (bids, BID_PRICES) if side else (asks, ASK_PRICES)
                price, qty = rng.choice(prices), rng.choice(QTYS)
                if qty:
                    book[price] = qty
                else:
                    book.pop(price, None)
                changes[0 if side else 1][price] = qty
                self.states[uid] = (dict(bids), dict(asks))
                ids.append(uid)
            self.msgs.append(
                DepthDiff(
                    "x",
                    "S",
                    ids[0],
                    ids[-1],
                    None if consecutive else prev,
                    10_000 + 100 * i,
                    tuple(changes[0].items()),
                    tuple(changes[1].items()),
                )
            )
            self.msg_ids.append(ids)
            prev = ids[-1]
        self.final = uid
        # A first snapshot that the first message bridges: the state before it on spot
        # (U == L + 1); inside it on USD-M (U <= L <= u), as the message ending at L,
        # which would bridge, is not part of the simulated stream.
        self.first_snapshot = self.start if consecutive else self.msg_ids[0][0] if n else uid

    def snapshot(self, uid: int) -> DepthDiff:
        bids, asks = self.states[uid]
        return DepthDiff(
            "x", "S", uid, uid, None, 5, tuple(bids.items()), tuple(asks.items()), True
        )

    def top(self, uid: int, n: int) -> tuple[tuple[BookLevel, ...], tuple[BookLevel, ...]]:
        bids, asks = self.states[uid]
        return tuple(sorted(bids.items(), reverse=True)[:n]), tuple(sorted(asks.items())[:n])


def assert_true_updates(market: Market, out: list[object]) -> None:
    """Every emitted BookUpdate equals the true book at its update id."""
    for event in out:
        if isinstance(event, Reconcile):
            raise AssertionError(f"a correct stream produced a mismatch: {event}")
        assert isinstance(event, BookUpdate)
        assert event.last_update_id in market.states, event
        assert (event.bids, event.asks) == market.top(event.last_update_id, DEPTH), event


RESET = -1

perturbation = st.tuples(st.integers(0, 10_000), st.sampled_from(["drop", "dup", "swap", "reset"]))


def schedule(n: int, ops: list[tuple[int, str]]) -> list[int]:
    """Message indices in delivery order after ``ops`` (RESET marks a reset)."""
    order = list(range(n))
    for pos, kind in ops:
        if not order:
            break
        i = pos % len(order)
        if kind == "drop":
            del order[i]
        elif kind == "dup":
            order.insert(i + 1, order[i])
        elif kind == "swap" and i + 1 < len(order):
            order[i], order[i + 1] = order[i + 1], order[i]
        elif kind == "reset":
            order.insert(i, RESET)
    return order


def run_stream(
    data: st.DataObject, rules: SequenceRules, market: Market, order: list[int]
) -> tuple[VenueBooks, int]:
    """Deliver ``order``; answer every snapshot request with a snapshot taken around the
    stream's position, delivered a few messages later. Returns the books and the requests."""
    vb = VenueBooks("x", rules, depth=DEPTH, max_buffer=data.draw(st.sampled_from([3, 10_000])))
    vb.track("S")
    n = len(market.msgs)
    in_flight: list[tuple[int, int]] = []  # (due step, snapshot id)
    newest = -1
    requests = 0

    def request(step: int) -> None:
        nonlocal requests
        requests += 1
        j = min(max(newest + data.draw(st.integers(-3, 3)), -1), n - 1)
        uid = market.start if j < 0 else data.draw(st.sampled_from(market.msg_ids[j]))
        in_flight.append((step + data.draw(st.integers(0, 3)), uid))

    check: tuple[int, int] | None = None  # a depth check in flight: (due step, snapshot id)
    for step, index in enumerate(order):
        out: list[object] = []
        if check is None and data.draw(st.integers(0, 9)) == 0:
            vb.begin_check("S")
            j = min(max(newest + data.draw(st.integers(-2, 2)), 0), n - 1)
            check = (
                step + data.draw(st.integers(0, 3)),
                data.draw(st.sampled_from(market.msg_ids[j])),
            )
        if index == RESET:
            vb.reset("S", "reset")
        else:
            newest = max(newest, index)
            if vb.on_diff(market.msgs[index], out) is not None:
                request(step)
        for due, uid in [x for x in in_flight if x[0] <= step]:
            in_flight.remove((due, uid))
            if vb.on_snapshot(market.snapshot(uid), out) is not None:
                request(step)
        if check is not None and check[0] <= step:
            gap = data.draw(st.integers(0, 20))
            # A correct snapshot: whatever the outcome, never a mismatch (a Reconcile fails
            # assert_true_updates), and every update after it still true.
            vb.check("S", market.snapshot(check[1]), gap_resync=gap, out=out)
            check = None
        assert_true_updates(market, out)
    # The stream ends: answer what is in flight, then take a snapshot at the end if needed.
    for _, uid in sorted(in_flight):
        out = []
        vb.on_snapshot(market.snapshot(uid), out)
        assert_true_updates(market, out)
    # A snapshot at the very end contains every buffered diff but a copy of the last one
    # (each copy beyond the first is a break that the next snapshot heals).
    for _ in range(order.count(n - 1) + 1):
        if vb.synced("S"):
            break
        out = []
        vb.on_snapshot(market.snapshot(market.final), out)
        assert_true_updates(market, out)
    return vb, requests


RULES = {"usdm": (PreviousIdRules(), False), "spot": (ConsecutiveIdRules(), True)}


@pytest.mark.parametrize("venue", sorted(RULES))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(1, 40),
    ops=st.lists(perturbation, max_size=6),
    data=st.data(),
)
def test_property_no_update_from_a_wrong_book(
    venue: str, seed: int, n: int, ops: list[tuple[int, str]], data: st.DataObject
) -> None:
    rules, consecutive = RULES[venue]
    market = Market(seed, n, consecutive=consecutive)
    vb, _ = run_stream(data, rules, market, schedule(n, ops))
    # In the end the book is in sync and right, every level of it.
    view = vb.view("S")
    assert view is not None
    bids, asks = market.states[view.last_update_id]
    assert view.bids == tuple(sorted(bids.items(), reverse=True))
    assert view.asks == tuple(sorted(asks.items()))


@pytest.mark.parametrize("venue", sorted(RULES))
@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(3, 30),
    where=st.integers(0, 10_000),
    kind=st.sampled_from(["drop", "dup", "swap"]),
)
def test_property_any_gap_duplicate_or_reordering_asks_for_a_resync_at_once(
    venue: str, seed: int, n: int, where: int, kind: str
) -> None:
    rules, consecutive = RULES[venue]
    market = Market(seed, n, consecutive=consecutive)
    i = where % (n - 1)  # leave a message after a dropped one, a partner for a swap
    order = schedule(n, [(i, kind)])
    # Where the delivered order first differs from the true one.
    deviation = next(k for k, (a, b) in enumerate(zip(order, range(n), strict=False)) if a != b)
    if kind == "dup":
        deviation = i + 1
    vb = VenueBooks("x", rules, depth=DEPTH)
    vb.track("S")
    out: list[object] = []
    vb.on_snapshot(market.snapshot(market.first_snapshot), out)
    reasons = []
    for index in order:
        reasons.append(vb.on_diff(market.msgs[index], out))
    assert_true_updates(market, out)
    assert reasons[:deviation] == [None] * deviation
    first = reasons[deviation]
    assert first is not None
    assert first.startswith("gap: ")
    assert vb.breaks >= 1


@pytest.mark.parametrize("venue", sorted(RULES))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), n=st.integers(5, 40), data=st.data())
def test_property_checks_of_a_correct_book_never_mismatch(
    venue: str, seed: int, n: int, data: st.DataObject
) -> None:
    rules, consecutive = RULES[venue]
    market = Market(seed, n, consecutive=consecutive)
    vb = VenueBooks("x", rules, depth=DEPTH)
    vb.track("S")
    out: list[object] = []
    vb.on_snapshot(market.snapshot(market.first_snapshot), out)
    checks: list[tuple[int, int]] = []  # (due index, snapshot id)
    outcomes = []
    for index, msg in enumerate(market.msgs):
        if not checks and data.draw(st.booleans()):
            vb.begin_check("S")
            j = min(max(index + data.draw(st.integers(-2, 3)), 0), n - 1)
            due = index + data.draw(st.integers(0, 4))
            checks.append((due, data.draw(st.sampled_from(market.msg_ids[j]))))
        assert vb.on_diff(msg, out) is None
        if checks and checks[0][0] <= index:
            _, uid = checks.pop()
            gap = data.draw(st.integers(0, 20))
            outcomes.append(vb.check("S", market.snapshot(uid), gap_resync=gap, out=out))
        assert_true_updates(market, out)
        out.clear()
    assert "mismatch" not in outcomes
    assert vb.mismatches == 0
    assert set(outcomes) <= {"match", "pending", "skipped", "resynced"}
