"""WeightBudget: the UTC-minute window, spend/observe, the wait for the next window, and the
budget never exceeded by a client that waits as told."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
from hypothesis import given
from hypothesis import strategies as st
from trio_feed.core.weight import WINDOW_MS, WeightBudget

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z, a minute boundary


def test_budget_is_the_floor_of_the_fraction() -> None:
    assert WeightBudget(2400).budget == 2160
    assert WeightBudget(2400, fraction=0.5).budget == 1200
    assert WeightBudget(1199, fraction=0.9).budget == 1079  # floor(1079.1)
    assert WeightBudget(1, fraction=0.1).budget == 1  # never zero


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit_per_minute": 0},
        {"limit_per_minute": 100, "fraction": 0.0},
        {"limit_per_minute": 100, "fraction": 1.5},
        {"limit_per_minute": 100, "margin": -1.0},
    ],
)
def test_rejects_bad_numbers(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        WeightBudget(**kwargs)  # type: ignore[arg-type]


def test_spend_counts_within_the_window_and_a_new_window_starts_at_zero() -> None:
    b = WeightBudget(100, fraction=1.0)
    b.spend(30, T0 + 1_000)
    b.spend(20, T0 + 59_999)
    assert b.used(T0 + 59_999) == 50
    assert b.remaining(T0 + 59_999) == 50
    assert b.used(T0 + 60_000) == 0  # the next clock minute, before any spend in it
    b.spend(5, T0 + 60_000)
    assert b.used(T0 + 60_001) == 5


def test_delay_is_zero_while_the_request_fits() -> None:
    b = WeightBudget(100, fraction=1.0)
    b.spend(80, T0 + 10_000)
    assert b.delay(20, T0 + 10_000) == 0.0  # exactly at the budget is fine


def test_delay_runs_to_the_next_window_plus_margin() -> None:
    b = WeightBudget(100, fraction=1.0, margin=0.05)
    b.spend(80, T0 + 10_000)
    assert b.delay(21, T0 + 15_000) == pytest.approx(45.0 + 0.05)
    # After waiting that long the request fits: the clock is in the next window.
    assert b.delay(21, T0 + 15_000 + 45_050) == 0.0


def test_observe_takes_the_larger_of_header_and_local_count() -> None:
    b = WeightBudget(2400)
    b.spend(10, T0 + 1_000)
    b.observe(2000, T0 + 1_100)  # other processes on our IP used weight too
    assert b.used(T0 + 1_100) == 2000
    assert b.delay(200, T0 + 1_200) > 0  # 2000 + 200 > 2160
    b.spend(5, T0 + 1_300)
    b.observe(1500, T0 + 1_400)  # a lower header (sent before our spend): keep our count
    assert b.used(T0 + 1_400) == 2005


def test_observe_in_a_new_window_starts_it() -> None:
    b = WeightBudget(2400)
    b.spend(2000, T0 + 1_000)
    b.observe(300, T0 + 60_100)
    assert b.used(T0 + 60_100) == 300


def test_a_reading_from_an_earlier_window_counts_in_the_current_one() -> None:
    # The market clock can step back on a re-sync: err on the safe side.
    b = WeightBudget(100, fraction=1.0)
    b.spend(90, T0 + 60_500)
    b.spend(5, T0 + 59_900)
    assert b.used(T0 + 60_600) == 95
    assert b.delay(10, T0 + 59_950) == pytest.approx(60.05 + 0.05)


def test_an_over_budget_request_goes_alone_at_the_start_of_a_fresh_window() -> None:
    b = WeightBudget(100, fraction=0.5)  # budget 50
    assert b.delay(80, T0 + 5_000) == 0.0  # nothing used yet: it may go, else never
    b.spend(80, T0 + 5_000)
    assert b.delay(1, T0 + 6_000) == pytest.approx(54.05)  # everything else waits
    b2 = WeightBudget(100, fraction=0.5)
    b2.spend(1, T0 + 5_000)
    assert b2.delay(80, T0 + 5_000) == pytest.approx(55.05)  # not alone: next window
    assert b2.delay(80, T0 + 60_050) == 0.0


def test_spend_rejects_negative_weight() -> None:
    with pytest.raises(ValueError):
        WeightBudget(100).spend(-1, T0)


_steps = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=100),  # weight (may exceed the budget)
        st.integers(min_value=0, max_value=20_000),  # ms since the previous request
        st.one_of(st.none(), st.integers(min_value=0, max_value=120)),  # header seen after
    ),
    max_size=200,
)


@given(steps=_steps, limit=st.integers(min_value=10, max_value=100))
def test_waiting_as_told_never_exceeds_the_budget_in_any_window(
    steps: list[tuple[int, int, int | None]], limit: int
) -> None:
    b = WeightBudget(limit, fraction=0.9)
    now = T0 + 12_345
    spent: dict[int, list[int]] = defaultdict(list)
    for weight, gap, header in steps:
        now += gap
        wait = b.delay(weight, now)
        now += math.ceil(wait * 1000)
        assert b.delay(weight, now) == 0.0  # one wait is always enough
        b.spend(weight, now)
        spent[now // WINDOW_MS].append(weight)
        if header is not None:
            b.observe(header, now)
    for weights in spent.values():
        # Free requests (weight 0) do not make a window "used".
        costly = [w for w in weights if w]
        heavy_alone = len(costly) == 1 and costly[0] > b.budget
        assert sum(weights) <= b.budget or heavy_alone, weights
