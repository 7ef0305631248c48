"""Backoff: the formula, seeded jitter, the retry budget and when it heals."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from trio_feed.core.backoff import Backoff, BackoffPolicy


def test_delays_follow_the_formula_with_seeded_jitter() -> None:
    policy = BackoffPolicy(base_delay=1.0, max_delay=60.0, jitter_ratio=0.1, max_retries=0)
    backoff = Backoff(policy, random.Random(42))
    twin = random.Random(42)
    for retry in range(10):
        expected = min(1.0 * 2**retry, 60.0) * (1 + twin.uniform(-0.1, 0.1))
        assert backoff.next_delay(now=float(retry)) == expected
        assert backoff.retry == retry + 1


def test_without_jitter_the_delays_are_exact() -> None:
    policy = BackoffPolicy(base_delay=0.5, max_delay=10.0, jitter_ratio=0.0, max_retries=0)
    backoff = Backoff(policy, random.Random(0))
    assert [backoff.next_delay(0.0) for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_gives_up_after_max_retries() -> None:
    backoff = Backoff(BackoffPolicy(max_retries=3, jitter_ratio=0.0), random.Random(1))
    assert [backoff.next_delay(0.0) for _ in range(3)] == [1.0, 2.0, 4.0]
    assert backoff.next_delay(0.0) is None
    assert backoff.next_delay(0.0) is None  # stays given up


def test_zero_max_retries_means_forever() -> None:
    backoff = Backoff(BackoffPolicy(max_retries=0, jitter_ratio=0.0), random.Random(1))
    assert all(backoff.next_delay(0.0) is not None for _ in range(1000))
    assert backoff.next_delay(0.0) == 60.0


def test_retry_count_resets_only_after_a_stable_session() -> None:
    backoff = Backoff(BackoffPolicy(stable_after=60.0, jitter_ratio=0.0), random.Random(1))
    backoff.next_delay(0.0)
    backoff.next_delay(1.0)
    assert backoff.retry == 2
    backoff.healthy(10.0)
    assert backoff.next_delay(69.0) == 4.0  # 59 s healthy: not enough, keeps climbing
    backoff.healthy(100.0)
    assert backoff.next_delay(160.0) == 1.0  # 60 s healthy: back to base_delay
    assert backoff.retry == 1


def test_loss_without_health_never_resets() -> None:
    backoff = Backoff(BackoffPolicy(stable_after=1.0, jitter_ratio=0.0), random.Random(1))
    backoff.next_delay(0.0)
    assert backoff.next_delay(1000.0) == 2.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_delay": 0.0},
        {"base_delay": 2.0, "max_delay": 1.0},
        {"jitter_ratio": 1.0},
        {"jitter_ratio": -0.1},
        {"max_retries": -1},
    ],
)
def test_bad_policies_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="need"):
        BackoffPolicy(**kwargs)  # type: ignore[arg-type]


@given(
    base=st.floats(0.01, 10),
    factor=st.floats(1, 100),
    jitter=st.floats(0, 0.99),
    retry=st.integers(0, 10_000),
    seed=st.integers(0, 2**32),
)
def test_delay_is_always_within_the_jitter_band(
    base: float, factor: float, jitter: float, retry: int, seed: int
) -> None:
    policy = BackoffPolicy(base_delay=base, max_delay=base * factor, jitter_ratio=jitter)
    raw = min(base * 2 ** min(retry, 60), base * factor)
    delay = policy.delay(retry, random.Random(seed))
    assert raw * (1 - jitter) - 1e-9 <= delay <= raw * (1 + jitter) + 1e-9
