"""Market time from a skewed local clock."""

from __future__ import annotations

from trio_feed.core.clock import MarketClock


def test_offset_corrects_a_skewed_local_clock() -> None:
    local = [1_000_000]
    clock = MarketClock(lambda: local[0])
    assert clock.now_ms() == 1_000_000 and not clock.synced
    # The local clock runs 2 hours slow; the reading took a 40 ms round trip.
    clock.observe(
        server_ms=1_000_020 + 7_200_000, sent_local_ms=1_000_000, received_local_ms=1_000_040
    )
    assert clock.synced and clock.offset_ms == 7_200_000 and clock.round_trip_ms == 40
    local[0] = 1_500_000
    assert clock.now_ms() == 1_500_000 + 7_200_000
    assert clock.local_ms() == 1_500_000


def test_a_much_slower_round_trip_does_not_override_a_good_reading() -> None:
    clock = MarketClock(lambda: 0)
    clock.observe(5_000, 0, 10)
    clock.observe(9_000, 0, 2_000)  # 2 s round trip: too vague to trust over a 10 ms one
    assert clock.offset_ms == 4_995
    clock.observe(6_000, 100, 120)
    assert clock.offset_ms == 6_000 - 110
