"""Pool planning: limits, route separation, least-loaded placement, capacity errors."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from trio_feed.core.pool import PoolCapacityError, PoolPlanner
from trio_feed.venues.base import StreamSpec


def spec(i: int, route: str = "market") -> StreamSpec:
    return StreamSpec(symbol=f"S{i}", channel="aggTrade", name=f"s{i}@{route}", route=route)


def test_plan_spreads_streams_evenly_per_route() -> None:
    planner = PoolPlanner("v", max_connections=5, max_streams_per_connection=4)
    streams = [spec(i) for i in range(10)] + [spec(i, "public") for i in range(3)]
    plans = planner.plan(streams)
    assert [(p.id, p.route, len(p.streams)) for p in plans] == [
        ("v/market/0", "market", 4),
        ("v/market/1", "market", 3),
        ("v/market/2", "market", 3),
        ("v/public/3", "public", 3),
    ]
    assert planner.owner("s0@market") == "v/market/0"
    assert planner.owner("nope") is None


def test_plan_that_cannot_fit_says_how_many_connections_it_needs() -> None:
    planner = PoolPlanner("binance-usdm", max_connections=2, max_streams_per_connection=2)
    with pytest.raises(PoolCapacityError) as info:
        planner.plan([spec(i) for i in range(5)] + [spec(9, "public")])
    assert info.value.needed == 4
    assert "needs 4 connections" in str(info.value)
    assert "max_connections is 2" in str(info.value)
    assert str(info.value).startswith("connection_pool.max_connections:")


def test_duplicates_are_planned_once() -> None:
    planner = PoolPlanner("v", max_connections=1, max_streams_per_connection=2)
    plans = planner.plan([spec(1), spec(1), spec(2)])
    assert [s.name for s in plans[0].streams] == ["s1@market", "s2@market"]


def test_add_goes_to_least_loaded_with_room_then_opens() -> None:
    planner = PoolPlanner("v", max_connections=4, max_streams_per_connection=3)
    planner.plan([spec(i) for i in range(5)])  # 3 + 2
    changes = planner.add([spec(10)])
    assert changes == {"v/market/1": [spec(10)]}
    changes = planner.add([spec(11), spec(12, "public")])
    assert changes == {"v/market/2": [spec(11)], "v/public/3": [spec(12, "public")]}
    assert planner.add([spec(11)]) == {}  # already held


def test_add_is_all_or_nothing() -> None:
    planner = PoolPlanner("v", max_connections=1, max_streams_per_connection=2)
    planner.plan([spec(1)])
    before = planner.plans()
    with pytest.raises(PoolCapacityError):
        planner.add([spec(2), spec(3)])
    assert planner.plans() == before


def test_remove_and_empty_connections_disappear() -> None:
    planner = PoolPlanner("v", max_connections=2, max_streams_per_connection=1)
    planner.plan([spec(1), spec(2)])
    assert planner.remove(["s1@market", "missing"]) == {"v/market/0": [spec(1)]}
    assert [p.id for p in planner.plans()] == ["v/market/1"]
    assert planner.add([spec(3)]) == {"v/market/2": [spec(3)]}


@given(
    counts=st.lists(st.integers(0, 60), min_size=1, max_size=3),
    per=st.integers(1, 25),
    max_conn=st.integers(1, 12),
)
def test_plans_never_exceed_limits_nor_mix_routes(
    counts: list[int], per: int, max_conn: int
) -> None:
    streams = [spec(i, f"r{r}") for r, n in enumerate(counts) for i in range(n)]
    planner = PoolPlanner("v", max_connections=max_conn, max_streams_per_connection=per)
    needed = sum(-(-n // per) for n in counts)
    if needed > max_conn:
        with pytest.raises(PoolCapacityError):
            planner.plan(streams)
        return
    plans = planner.plan(streams)
    assert len(plans) == needed <= max_conn
    for plan in plans:
        assert 0 < len(plan.streams) <= per
        assert {s.route for s in plan.streams} == {plan.route}
    held = Counter(s.name for p in plans for s in p.streams)
    assert held == Counter(s.name for s in streams)
    for route in {p.route for p in plans}:
        sizes = [len(p.streams) for p in plans if p.route == route]
        assert max(sizes) - min(sizes) <= 1  # evenly spread
