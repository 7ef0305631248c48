"""OverlapFilter: keys and positions of every market event, duplicates dropped, newer items
kept, other objects always admitted, keys released, and an exact split of a trade stream."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from trio_feed.core.overlap import OverlapFilter, event_key, event_position
from trio_feed.events import (
    BookTicker,
    BookUpdate,
    DepthDiff,
    Kline,
    MarkPrice,
    QualityChange,
    StateChange,
    Trade,
)

EX = "binance-usdm"
T0 = 1_767_225_600_000
D = Decimal


def trade(id_: int, symbol: str = "BTCUSDT") -> Trade:
    return Trade(EX, symbol, id_, D("100"), D("1"), id_ * 3, id_ * 3 + 2, T0 + id_, False)


def kline(
    open_time: int = T0,
    *,
    trades: int = 10,
    volume: str = "5",
    closed: bool = False,
    interval: str = "1m",
    symbol: str = "BTCUSDT",
) -> Kline:
    p = D("100")
    return Kline(
        EX, symbol, interval, open_time, open_time + 59_999, p, p, p, p, D(volume),
        D(volume) * p, trades, D("1"), p, closed,
    )  # fmt: skip


def depth(final: int, symbol: str = "BTCUSDT") -> DepthDiff:
    return DepthDiff(EX, symbol, final - 4, final, final - 5, T0 + final, ((D("1"), D("2")),), ())


def ticker(update_id: int, symbol: str = "BTCUSDT") -> BookTicker:
    return BookTicker(EX, symbol, D("1"), D("2"), D("3"), D("4"), update_id, T0 + update_id)


def mark(time: int, symbol: str = "BTCUSDT") -> MarkPrice:
    return MarkPrice(EX, symbol, D("1"), D("1"), D("0.0001"), T0 + 8 * 3_600_000, time)


STATE = StateChange("binance-usdm/market/0", "SUBSCRIBED", "CONNECTED", T0, ("a",), 0)


# -- keys and positions -----------------------------------------------------------------------


def test_keys_per_stream_identity() -> None:
    assert event_key(kline()) == (Kline, "BTCUSDT", "1m")
    assert event_key(kline(interval="5m")) != event_key(kline())
    assert event_key(trade(1)) == (Trade, "BTCUSDT")
    assert event_key(trade(1, "ETHUSDT")) == (Trade, "ETHUSDT")
    assert event_key(depth(10)) == (DepthDiff, "BTCUSDT")
    assert event_key(ticker(1)) == (BookTicker, "BTCUSDT")
    assert event_key(mark(T0)) == (MarkPrice, "BTCUSDT")
    assert len({event_key(e) for e in (trade(1), depth(1), ticker(1), mark(1))}) == 4


@pytest.mark.parametrize(
    "other",
    [
        STATE,
        QualityChange("BTCUSDT", 0.9, "x", T0),
        BookUpdate(EX, "BTCUSDT", 1, T0, (), ()),
        {"result": None, "id": 1},
        "pong",
        None,
    ],
)
def test_other_objects_have_no_key_and_always_pass(other: object) -> None:
    assert event_key(other) is None
    assert event_position(other) is None
    f = OverlapFilter()
    f.note(other)
    assert f.pending_keys() == 0
    f.note(trade(5))
    assert f.admit(other)
    assert f.admit(other)  # and releases nothing
    assert f.pending_keys() == 1


def test_positions() -> None:
    assert event_position(trade(7)) == 7
    assert event_position(kline(trades=3, volume="1.5")) == (T0, False, 3, D("1.5"))
    assert event_position(depth(42)) == 42
    assert event_position(ticker(9)) == 9
    assert event_position(mark(T0 + 1000)) == T0 + 1000


def test_kline_positions_follow_the_stream_order() -> None:
    updates = [
        kline(trades=1, volume="1"),
        kline(trades=2, volume="1"),  # a trade of a tiny size rounds to no volume
        kline(trades=2, volume="3"),
        kline(trades=2, volume="3", closed=True),
        kline(T0 + 60_000, trades=0, volume="0"),
        kline(T0 + 60_000, trades=1, volume="2"),
    ]
    positions = [event_position(k) for k in updates]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)


# -- duplicates dropped, newer kept -----------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "dupes", "newer"),
    [
        ([trade(1), trade(2), trade(3)], [trade(2), trade(3)], trade(4)),
        ([depth(10), depth(20)], [depth(10), depth(20)], depth(30)),
        ([ticker(5), ticker(6)], [ticker(6)], ticker(7)),
        ([mark(T0), mark(T0 + 1000)], [mark(T0), mark(T0 + 1000)], mark(T0 + 2000)),
        (
            [kline(trades=4, volume="2"), kline(trades=5, volume="2.5")],
            [kline(trades=4, volume="2"), kline(trades=5, volume="2.5")],
            kline(trades=5, volume="2.5", closed=True),
        ),
        (
            [kline(trades=5, volume="2.5", closed=True)],
            [kline(trades=5, volume="2.5"), kline(trades=5, volume="2.5", closed=True)],
            kline(T0 + 60_000, trades=0, volume="0"),
        ),
    ],
)
def test_duplicates_of_every_kind_are_dropped_and_newer_kept(
    old: list[object], dupes: list[object], newer: object
) -> None:
    f = OverlapFilter()
    for event in old:
        f.note(event)
    assert f.pending_keys() == 1
    assert f.filter([*dupes, newer]) == [newer]
    assert f.dropped == len(dupes)
    assert f.pending_keys() == 0


def test_keys_are_released_by_the_first_newer_item() -> None:
    f = OverlapFilter()
    for event in (trade(1), trade(2), ticker(5)):
        f.note(event)
    assert f.pending_keys() == 2
    assert not f.admit(trade(2))
    assert f.admit(trade(3))
    assert f.pending_keys() == 1  # the ticker is still pending
    # Released: a later item passes without comparison (even an out-of-order one).
    assert f.admit(trade(2))
    assert not f.admit(ticker(5))
    assert f.admit(ticker(6))
    assert f.pending_keys() == 0
    assert f.admit(ticker(1))


def test_streams_are_kept_apart() -> None:
    f = OverlapFilter()
    f.note(trade(100, "BTCUSDT"))
    f.note(kline(interval="1m"))
    assert f.admit(trade(50, "ETHUSDT"))  # never noted
    assert f.admit(kline(interval="5m"))
    assert not f.admit(trade(99, "BTCUSDT"))
    assert not f.admit(kline(interval="1m"))
    assert f.pending_keys() == 2


def test_note_keeps_the_highest_position() -> None:
    f = OverlapFilter()
    f.note(trade(10))
    f.note(trade(5))  # lower: does not move the mark back
    assert not f.admit(trade(10))
    assert f.admit(trade(11))


def test_noting_a_released_key_puts_it_back() -> None:
    f = OverlapFilter()
    f.note(trade(1))
    assert f.admit(trade(2))
    f.note(trade(5))  # the old socket ran ahead of the new one
    assert f.pending_keys() == 1
    assert f.filter([trade(3), trade(4), trade(5), trade(6)]) == [trade(6)]


def test_clear_releases_everything() -> None:
    f = OverlapFilter()
    f.note(trade(10))
    f.note(depth(10))
    f.clear()
    assert f.pending_keys() == 0
    assert f.admit(trade(1))
    assert f.admit(depth(1))


def test_filter_keeps_order_and_mixed_items() -> None:
    f = OverlapFilter()
    for event in (trade(1), trade(2), depth(10), kline(trades=3)):
        f.note(event)
    items: list[object] = [
        trade(1), STATE, depth(10), trade(2), trade(3), depth(11), kline(trades=3),
        kline(trades=4), trade(4), "control",
    ]  # fmt: skip
    assert f.filter(items) == [
        STATE, trade(3), depth(11), kline(trades=4), trade(4), "control",
    ]  # fmt: skip
    assert f.dropped == 4
    assert f.filter([]) == []


def test_an_empty_filter_admits_everything() -> None:
    f = OverlapFilter()
    events = [trade(1), trade(1), depth(3), mark(T0), STATE]
    assert f.filter(events) == events
    assert f.dropped == 0


# -- the rotation, as a property -------------------------------------------------------------


@given(
    st.integers(min_value=1, max_value=60),
    st.data(),
)
def test_old_prefix_then_overlapping_new_suffix_gives_exactly_the_ids_after_the_old(
    n: int, data: st.DataObject
) -> None:
    first = data.draw(st.integers(min_value=0, max_value=10**9), label="first id")
    # Ids increase with gaps (aggregated trade ids are consecutive per symbol, but a
    # filtered view need not be).
    steps = data.draw(st.lists(st.integers(1, 5), min_size=n, max_size=n), label="steps")
    ids, i = [], first
    for step in steps:
        i += step
        ids.append(i)
    trades = [trade(x) for x in ids]
    old_end = data.draw(st.integers(min_value=0, max_value=n), label="old delivered")
    new_start = data.draw(st.integers(min_value=0, max_value=old_end), label="new starts")
    old, new = trades[:old_end], trades[new_start:]
    f = OverlapFilter()
    for event in old:
        f.note(event)
    out = f.filter(new)
    last_old = old[-1].id if old else None
    assert [t.id for t in out] == [x for x in ids if last_old is None or x > last_old]
    assert [t.id for t in old] + [t.id for t in out] == ids  # nothing lost, nothing twice
    assert f.dropped == old_end - new_start
    assert f.pending_keys() == (1 if old and old_end == n else 0)


@given(st.lists(st.tuples(st.sampled_from(["BTCUSDT", "ETHUSDT", "SOLUSDT"]), st.booleans())))
def test_interleaved_symbols_each_resume_after_their_own_last_old_id(
    plan: list[tuple[str, bool]],
) -> None:
    """Each item of a multi-symbol stream goes to the old socket, or to both (the overlap);
    once an item goes only to the new socket, the old one is closed."""
    next_id = {"BTCUSDT": 1, "ETHUSDT": 1000, "SOLUSDT": 50}
    stream = []
    for symbol, _ in plan:
        stream.append(trade(next_id[symbol], symbol))
        next_id[symbol] += 1
    cut = len(plan) // 2
    old = stream[:cut]
    new = [t for t, (_, overlap) in zip(stream, plan, strict=True) if overlap] + stream[cut:]
    new = [t for t in stream if t in new]  # in stream order
    f = OverlapFilter()
    for event in old:
        f.note(event)
    out = f.filter(new)
    assert out == stream[cut:]
