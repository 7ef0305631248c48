"""The venues' book continuity rules, and the adapter hooks that hand them out."""

from __future__ import annotations

import pytest
from trio_feed.events import DepthDiff
from trio_feed.venues.base import VenueAdapter
from trio_feed.venues.binance_usdm import BinanceUsdmAdapter
from trio_feed.venues.book_rules import ConsecutiveIdRules, PreviousIdRules, SequenceRules


def diff(first: int, final: int, prev: int | None = None) -> DepthDiff:
    return DepthDiff("x", "S", first, final, prev, 0, (), ())


USDM = PreviousIdRules()
SPOT = ConsecutiveIdRules()


@pytest.mark.parametrize(
    ("first", "final", "stale", "bridges"),
    [
        (90, 99, True, False),  # u < L
        (90, 100, False, True),  # u == L: the bridge (recorded AKROUSDT/CTKUSDT case)
        (100, 105, False, True),  # U == L
        (95, 105, False, True),  # L inside
        (101, 105, False, False),  # newer than the snapshot
    ],
)
def test_previous_id_stale_and_bridge(first: int, final: int, stale: bool, bridges: bool) -> None:
    assert USDM.stale(diff(first, final), 100) is stale
    assert USDM.bridges(diff(first, final), 100) is bridges


def test_previous_id_follows_on_pu_only() -> None:
    prev = diff(90, 100, 80)
    assert USDM.follows(prev, diff(150, 160, 100)) is None  # U far above u + 1 is normal
    assert USDM.follows(prev, diff(101, 110, 99)) == "pu 99 != previous u 100"
    assert USDM.follows(prev, diff(101, 110, None)) == "pu None != previous u 100"
    assert USDM.follows(prev, diff(90, 100, 80)) == "diff 90..100 repeated"


@pytest.mark.parametrize(
    ("first", "final", "stale", "bridges"),
    [
        (90, 99, True, False),
        (90, 100, True, False),  # u == L: contained on spot
        (101, 105, False, True),  # U == L + 1: the recorded first usable event
        (95, 105, False, True),  # L within [U, u] as the docs put it
        (102, 105, False, False),  # one update missed
    ],
)
def test_consecutive_id_stale_and_bridge(
    first: int, final: int, stale: bool, bridges: bool
) -> None:
    assert SPOT.stale(diff(first, final), 100) is stale
    assert SPOT.bridges(diff(first, final), 100) is bridges


def test_consecutive_id_follows() -> None:
    prev = diff(90, 100)
    assert SPOT.follows(prev, diff(101, 101)) is None
    assert SPOT.follows(prev, diff(102, 110)) == "U 102 != previous u + 1 (101)"
    assert SPOT.follows(prev, diff(100, 110)) == "U 100 != previous u + 1 (101)"
    assert SPOT.follows(prev, diff(90, 100)) == "diff 90..100 repeated"


def test_rules_have_names() -> None:
    rules: list[SequenceRules] = [USDM, SPOT]
    assert [r.name for r in rules] == ["previous-id", "consecutive-id"]


def test_usdm_adapter_hands_out_previous_id_rules() -> None:
    assert isinstance(BinanceUsdmAdapter().book_rules(), PreviousIdRules)


@pytest.mark.parametrize(
    "call",
    [
        lambda a: VenueAdapter.book_rules(a),
        lambda a: VenueAdapter.depth_request(a, "BTCUSDT"),
        lambda a: VenueAdapter.parse_depth(a, "{}", "BTCUSDT"),
    ],
)
def test_base_defaults_name_the_venue(call: object) -> None:
    assert callable(call)
    with pytest.raises(NotImplementedError, match="binance-usdm"):
        call(BinanceUsdmAdapter())
