"""OrderBook and BookView: levels, diffs, top-N views, trimming; checked against a dict book."""

from __future__ import annotations

from decimal import Decimal

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trio_feed.core.book import BookView, OrderBook
from trio_feed.events import BookLevel

D = Decimal


def lv(*pairs: tuple[str, str]) -> tuple[BookLevel, ...]:
    return tuple((D(p), D(q)) for p, q in pairs)


def loaded() -> OrderBook:
    book = OrderBook("x", "BTCUSDT")
    book.load_snapshot(
        10,
        lv(("100", "1"), ("99", "2"), ("98", "3")),
        lv(("101", "4"), ("102", "5"), ("103", "6")),
        1000,
    )
    return book


def test_snapshot_and_top_best_first() -> None:
    book = loaded()
    bids, asks = book.top(2)
    assert bids == lv(("100", "1"), ("99", "2"))
    assert asks == lv(("101", "4"), ("102", "5"))
    assert book.last_update_id == 10
    assert book.time == 1000
    assert book.sizes == (3, 3)
    assert book.loaded


def test_snapshot_order_does_not_matter_and_zero_levels_are_skipped() -> None:
    book = OrderBook("x", "S")
    book.load_snapshot(1, lv(("98", "3"), ("100", "1"), ("99", "0")), lv(("102", "0.000")), 5)
    assert book.top(5) == (lv(("100", "1"), ("98", "3")), ())


def test_apply_sets_removes_and_ignores_absent_removals() -> None:
    book = loaded()
    book.apply(
        lv(("100", "7"), ("99", "0"), ("97.5", "1"), ("50", "0")),
        lv(("101", "0.000"), ("100.5", "2")),
        11,
        1100,
    )
    assert book.levels() == (
        {D(100): D(7), D(98): D(3), D("97.5"): D(1)},
        {D("100.5"): D(2), D(102): D(5), D(103): D(6)},
    )
    assert book.last_update_id == 11
    assert book.time == 1100
    assert book.top(1) == (lv(("100", "7")), lv(("100.5", "2")))


def test_equal_prices_written_differently_are_one_level() -> None:
    book = loaded()
    book.apply(lv(("100.00", "9")), (), 11, 1)
    assert book.sizes == (3, 3)
    assert book.top(1)[0] == ((D(100), D(9)),)
    book.apply(lv(("100.0", "0")), (), 12, 2)
    assert book.top(1)[0] == ((D(99), D(2)),)


def test_apply_accepts_generators() -> None:
    book = loaded()
    book.apply((x for x in lv(("100", "0"))), (x for x in lv(("101", "0"))), 11, 1)
    assert book.top(1) == (lv(("99", "2")), lv(("102", "5")))


def test_trim_drops_farthest_levels_beyond_max_levels() -> None:
    book = OrderBook("x", "S", max_levels=3)
    book.load_snapshot(
        1,
        lv(("100", "1"), ("99", "1"), ("98", "1"), ("97", "1")),
        lv(("101", "1"), ("102", "1"), ("103", "1"), ("104", "1")),
        0,
    )
    assert book.sizes == (3, 3)
    assert [p for p, _ in book.view().bids] == [D(100), D(99), D(98)]
    assert [p for p, _ in book.view().asks] == [D(101), D(102), D(103)]
    # A far level outside the covered range is kept while there is room, dropped first.
    book.apply(lv(("98", "0"), ("90", "5")), lv(("103", "0"), ("110", "5")), 2, 0)
    assert book.view().bids == lv(("100", "1"), ("99", "1"), ("90", "5"))
    assert book.view().asks == lv(("101", "1"), ("102", "1"), ("110", "5"))
    book.apply(lv(("100.5", "1")), lv(("100.6", "1")), 3, 0)
    assert book.view().bids == lv(("100.5", "1"), ("100", "1"), ("99", "1"))
    assert book.view().asks == lv(("100.6", "1"), ("101", "1"), ("102", "1"))


def test_view_and_book_view_properties() -> None:
    view = loaded().view(2)
    assert view == BookView(
        "x", "BTCUSDT", 10, 1000, lv(("100", "1"), ("99", "2")), lv(("101", "4"), ("102", "5"))
    )
    assert view.best_bid == (D(100), D(1))
    assert view.best_ask == (D(101), D(4))
    assert view.spread == D(1)
    assert view.mid == D("100.5")
    assert view.depth(1) == (lv(("100", "1")), lv(("101", "4")))
    assert view.depth(10) == (view.bids, view.asks)
    with pytest.raises(ValueError, match="depth"):
        view.depth(-1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        view.time = 5  # type: ignore[misc]
    full = loaded().view()
    assert len(full.bids) == 3
    assert len(full.asks) == 3


def test_empty_sides() -> None:
    book = OrderBook("x", "S")
    book.load_snapshot(1, (), lv(("101", "1")), 0)
    view = book.view()
    assert view.best_bid is None
    assert view.best_ask == (D(101), D(1))
    assert view.spread is None
    assert view.mid is None
    assert book.top(0) == ((), ())


def test_mid_is_exact_decimal() -> None:
    book = OrderBook("x", "S")
    book.load_snapshot(1, lv(("0.00001", "1")), lv(("0.00002", "1")), 0)
    assert book.view().mid == D("0.000015")


def test_unloaded_and_cleared_book_has_no_view() -> None:
    book = OrderBook("x", "S")
    with pytest.raises(LookupError, match="no snapshot"):
        book.view()
    book = loaded()
    book.clear()
    assert book.last_update_id is None
    assert book.time is None
    assert book.sizes == (0, 0)
    assert not book.loaded
    with pytest.raises(LookupError):
        book.view()


def test_max_levels_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_levels"):
        OrderBook("x", "S", max_levels=0)


# ---- property: the book equals a naive dict book -----------------------------------------

PRICES = [D(100) + D(i) / 4 for i in range(-40, 41)]
#: Zero written several ways: every one must remove.
QTYS = [D("0"), D("0.000"), D("0E-8"), D("1"), D("2.50"), D("0.001"), D("7")]

level = st.tuples(st.sampled_from(PRICES), st.sampled_from(QTYS))
levels = st.lists(level, max_size=12)


def reference_apply(ref: dict[Decimal, Decimal], changes: list[BookLevel]) -> None:
    for price, qty in changes:
        if qty == 0:
            ref.pop(price, None)
        else:
            ref[price] = qty


def reference_trim(ref: dict[Decimal, Decimal], keep: int, *, bids: bool) -> None:
    while len(ref) > keep:
        del ref[min(ref) if bids else max(ref)]


@settings(max_examples=300, deadline=None)
@given(
    snapshot=st.tuples(levels, levels),
    diffs=st.lists(st.tuples(levels, levels), max_size=30),
    max_levels=st.sampled_from([3, 10, 5000]),
    n=st.integers(0, 12),
)
def test_property_book_equals_dict_reference(
    snapshot: tuple[list[BookLevel], list[BookLevel]],
    diffs: list[tuple[list[BookLevel], list[BookLevel]]],
    max_levels: int,
    n: int,
) -> None:
    book = OrderBook("x", "S", max_levels=max_levels)
    ref_bids: dict[Decimal, Decimal] = {}
    ref_asks: dict[Decimal, Decimal] = {}
    reference_apply(ref_bids, snapshot[0])
    reference_apply(ref_asks, snapshot[1])
    reference_trim(ref_bids, max_levels, bids=True)
    reference_trim(ref_asks, max_levels, bids=False)
    book.load_snapshot(0, snapshot[0], snapshot[1], 0)
    for i, (bids, asks) in enumerate(diffs, 1):
        book.apply(bids, asks, i, i * 100)
        reference_apply(ref_bids, bids)
        reference_apply(ref_asks, asks)
        reference_trim(ref_bids, max_levels, bids=True)
        reference_trim(ref_asks, max_levels, bids=False)
        assert book.levels() == (ref_bids, ref_asks)
        top_bids = tuple(sorted(ref_bids.items(), reverse=True)[:n])
        top_asks = tuple(sorted(ref_asks.items())[:n])
        assert book.top(n) == (top_bids, top_asks)
        assert book.last_update_id == i
    view = book.view()
    assert view.bids == tuple(sorted(ref_bids.items(), reverse=True))
    assert view.asks == tuple(sorted(ref_asks.items()))
