"""TradeSequencer with ``consecutive=False`` (venues whose trade ids skip, e.g. OKX)."""

from __future__ import annotations

from decimal import Decimal

from trio_feed.core.sequence import TradeSequencer
from trio_feed.events import Trade


def trade(i: int) -> Trade:
    return Trade("okx", "BTC-USDT", i, Decimal(1), Decimal(1), i - 2, i, i, False)


def test_skipping_ids_pass_through_without_a_gap() -> None:
    seq = TradeSequencer("BTC-USDT", consecutive=False)
    out: list[Trade] = []
    for i in (10, 13, 20, 21):
        assert seq.on_trade(trade(i), out) is None
    assert [t.id for t in out] == [10, 13, 20, 21]
    assert seq.in_sync
    assert seq.skipped == 0


def test_repeated_and_older_ids_are_dropped_as_duplicates() -> None:
    seq = TradeSequencer("BTC-USDT", next_id=14, consecutive=False)
    out: list[Trade] = []
    for i in (13, 14, 14, 9, 30):
        seq.on_trade(trade(i), out)
    assert [t.id for t in out] == [14, 30]
    assert seq.duplicates == 3


def test_no_catch_up_and_no_time_anchor() -> None:
    seq = TradeSequencer("BTC-USDT", next_id=5, anchor_time=123, consecutive=False)
    assert seq.catch_up() is None
    assert TradeSequencer("X", anchor_time=123, consecutive=False).anchor_time is None
    # The default still fills.
    assert TradeSequencer("X", next_id=5).catch_up() is not None
