"""Kline and trade caches: replacement rules, ordering, trimming, time windows."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trio_feed.core.caches import KlineCache, TradeCache
from trio_feed.events import Kline, Trade

MINUTE = 60_000
T0 = 1_767_225_600_000


def kline(
    open_time: int,
    *,
    closed: bool = True,
    revision: int = 0,
    close: str = "100",
    symbol: str = "BTCUSDT",
    interval: str = "1m",
) -> Kline:
    price = Decimal(close)
    return Kline(
        exchange="binance-usdm",
        symbol=symbol,
        interval=interval,
        open_time=open_time,
        close_time=open_time + MINUTE - 1,
        open=price,
        high=price,
        low=price,
        close=price,
        volume=Decimal(1),
        quote_volume=price,
        trades=1,
        taker_buy_volume=Decimal(0),
        taker_buy_quote_volume=Decimal(0),
        closed=closed,
        source="ws",
        revision=revision,
    )


def trade(id: int, time: int, symbol: str = "BTCUSDT") -> Trade:
    return Trade(
        exchange="binance-usdm",
        symbol=symbol,
        id=id,
        price=Decimal("100.5"),
        qty=Decimal("0.25"),
        first_trade_id=10 * id,
        last_trade_id=10 * id + 1,
        time=time,
        buyer_is_maker=False,
    )


def opens(klines: list[Kline]) -> list[int]:
    return [(k.open_time - T0) // MINUTE for k in klines]


# ---------------------------------------------------------------- KlineCache


def test_open_kline_updates_then_its_closed_version_replace_it() -> None:
    cache = KlineCache(10)
    cache.update(kline(T0, closed=False, close="1"))
    cache.update(kline(T0, closed=False, close="2"))
    assert cache.get("BTCUSDT", "1m", T0) == kline(T0, closed=False, close="2")
    cache.update(kline(T0, closed=True, close="3"))
    assert cache.get("BTCUSDT", "1m", T0) == kline(T0, closed=True, close="3")
    assert cache.size("BTCUSDT", "1m") == 1


def test_an_open_version_never_replaces_a_closed_one() -> None:
    cache = KlineCache(10)
    cache.update(kline(T0, closed=True, close="3"))
    cache.update(kline(T0, closed=False, close="4"))  # a late stream update
    assert cache.get("BTCUSDT", "1m", T0) == kline(T0, closed=True, close="3")


def test_a_higher_revision_replaces_and_a_lower_one_never_does() -> None:
    cache = KlineCache(10)
    cache.update(kline(T0, revision=0, close="1"))
    cache.update(kline(T0, revision=1, close="2"))
    assert cache.get("BTCUSDT", "1m", T0) == kline(T0, revision=1, close="2")
    cache.update(kline(T0, revision=0, close="3"))  # an old REST answer arriving late
    assert cache.get("BTCUSDT", "1m", T0) == kline(T0, revision=1, close="2")
    cache.update(kline(T0, revision=1, close="4"))  # same revision: the newer wins
    assert cache.get("BTCUSDT", "1m", T0) == kline(T0, revision=1, close="4")


def test_backfill_arriving_after_the_open_kline_is_inserted_in_order() -> None:
    cache = KlineCache(10)
    cache.update(kline(T0 + 5 * MINUTE, closed=False))
    for i in (2, 4, 3, 1):
        cache.update(kline(T0 + i * MINUTE))
    assert opens(cache.klines("BTCUSDT", "1m")) == [1, 2, 3, 4, 5]
    assert opens(cache.klines("BTCUSDT", "1m", closed_only=True)) == [1, 2, 3, 4]


def test_trims_the_oldest_beyond_max_size() -> None:
    cache = KlineCache(3)
    for i in range(6):
        cache.update(kline(T0 + i * MINUTE))
    assert opens(cache.klines("BTCUSDT", "1m")) == [3, 4, 5]
    cache.update(kline(T0))  # older than everything in a full cache: dropped
    assert opens(cache.klines("BTCUSDT", "1m")) == [3, 4, 5]
    assert cache.get("BTCUSDT", "1m", T0) is None
    cache.update(kline(T0 + 4 * MINUTE, revision=1))  # replacing keeps the size
    assert opens(cache.klines("BTCUSDT", "1m")) == [3, 4, 5]
    assert len(cache) == 3


def test_limits_take_the_newest_oldest_first() -> None:
    cache = KlineCache(10)
    for i in range(5):
        cache.update(kline(T0 + i * MINUTE))
    cache.update(kline(T0 + 5 * MINUTE, closed=False))
    assert opens(cache.klines("BTCUSDT", "1m", 2)) == [4, 5]
    assert opens(cache.klines("BTCUSDT", "1m", 2, closed_only=True)) == [3, 4]
    assert opens(cache.klines("BTCUSDT", "1m", 100)) == [0, 1, 2, 3, 4, 5]
    assert cache.klines("BTCUSDT", "1m", 0) == []
    assert cache.klines("BTCUSDT", "1m", 0, closed_only=True) == []
    with pytest.raises(ValueError, match="limit"):
        cache.klines("BTCUSDT", "1m", -1)


def test_last_closed_skips_the_open_kline() -> None:
    cache = KlineCache(10)
    assert cache.last_closed("BTCUSDT", "1m") is None
    cache.update(kline(T0, closed=False))
    assert cache.last_closed("BTCUSDT", "1m") is None
    cache.update(kline(T0 + MINUTE, closed=False))
    cache.update(kline(T0))
    assert cache.last_closed("BTCUSDT", "1m") == kline(T0)


def test_series_are_kept_apart_by_symbol_and_interval() -> None:
    cache = KlineCache(2)
    cache.update(kline(T0, symbol="BTCUSDT"))
    cache.update(kline(T0, symbol="ETHUSDT", close="7"))
    cache.update(kline(T0, interval="5m"))
    assert sorted(cache.keys()) == [("BTCUSDT", "1m"), ("BTCUSDT", "5m"), ("ETHUSDT", "1m")]
    assert cache.get("ETHUSDT", "1m", T0) == kline(T0, symbol="ETHUSDT", close="7")
    assert len(cache) == 3
    assert cache.klines("XRPUSDT", "1m") == []
    assert cache.get("XRPUSDT", "1m", T0) is None
    assert cache.size("XRPUSDT", "1m") == 0
    cache.discard("BTCUSDT", "5m")
    assert sorted(cache.keys()) == [("BTCUSDT", "1m"), ("ETHUSDT", "1m")]


def test_max_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_size"):
        KlineCache(0)


def _reference_replaces(new: Kline, old: Kline) -> bool:
    if old.closed and not new.closed:
        return False
    return new.revision >= old.revision


updates = st.lists(
    st.builds(
        lambda i, closed, revision, close: kline(
            T0 + i * MINUTE, closed=closed, revision=revision, close=str(close)
        ),
        st.integers(0, 30),
        st.booleans(),
        st.integers(0, 2),
        st.integers(1, 1000),
    ),
    max_size=80,
)


@settings(max_examples=150)
@given(updates, st.integers(1, 12), st.integers(0, 15))
def test_matches_a_naive_dict_trimmed_to_max_size(
    klines: list[Kline], max_size: int, limit: int
) -> None:
    cache = KlineCache(max_size)
    reference: dict[int, Kline] = {}
    for k in klines:
        cache.update(k)
        old = reference.get(k.open_time)
        if old is None or _reference_replaces(k, old):
            reference[k.open_time] = k
        while len(reference) > max_size:
            del reference[min(reference)]
        expected = [reference[t] for t in sorted(reference)]
        assert cache.klines("BTCUSDT", "1m") == expected
    expected = [reference[t] for t in sorted(reference)]
    closed = [k for k in expected if k.closed]
    assert cache.klines("BTCUSDT", "1m", limit) == (expected[-limit:] if limit else [])
    assert cache.klines("BTCUSDT", "1m", limit, closed_only=True) == (
        closed[-limit:] if limit else []
    )
    assert cache.klines("BTCUSDT", "1m", closed_only=True) == closed
    assert cache.last_closed("BTCUSDT", "1m") == (closed[-1] if closed else None)
    for i in range(31):
        assert cache.get("BTCUSDT", "1m", T0 + i * MINUTE) == reference.get(T0 + i * MINUTE)
    assert len(cache) == len(reference)


# ---------------------------------------------------------------- TradeCache


def ids(trades: list[Trade]) -> list[int]:
    return [t.id for t in trades]


def test_keeps_the_last_max_size_trades() -> None:
    cache = TradeCache(max_size=3, window_ms=60_000)
    for i in range(1, 6):
        assert cache.add(trade(i, T0 + i))
    assert ids(cache.trades("BTCUSDT")) == [3, 4, 5]
    assert cache.last_id("BTCUSDT") == 5


def test_duplicate_and_older_ids_are_ignored() -> None:
    cache = TradeCache(max_size=10, window_ms=60_000)
    assert cache.add(trade(5, T0))
    assert not cache.add(trade(5, T0 + 1))
    assert not cache.add(trade(4, T0 + 2))
    assert cache.add(trade(6, T0 + 3))
    assert ids(cache.trades("BTCUSDT")) == [5, 6]
    assert cache.last_id("BTCUSDT") == 6
    assert cache.last_id("ETHUSDT") is None


def test_trades_expire_by_the_newest_trade_time() -> None:
    cache = TradeCache(max_size=100, window_ms=60_000)
    cache.add(trade(1, T0))
    cache.add(trade(2, T0 + 30_000))
    cache.add(trade(3, T0 + 60_000))  # T0 is exactly 60 s old: kept
    assert ids(cache.trades("BTCUSDT")) == [1, 2, 3]
    cache.add(trade(4, T0 + 60_001))
    assert ids(cache.trades("BTCUSDT")) == [2, 3, 4]


def test_advance_expires_quiet_symbols_and_never_goes_back() -> None:
    cache = TradeCache(max_size=100, window_ms=10_000)
    cache.add(trade(1, T0))
    cache.add(trade(2, T0 + 5_000))
    cache.add(trade(7, T0 + 1_000, symbol="ETHUSDT"))
    cache.advance(T0 + 12_000)
    assert ids(cache.trades("BTCUSDT")) == [2]
    assert cache.trades("ETHUSDT") == []
    assert cache.last_id("ETHUSDT") == 7  # remembered after expiry: 7 is still a duplicate
    assert not cache.add(trade(7, T0 + 12_000, symbol="ETHUSDT"))
    cache.advance(T0)  # backwards: no-op
    assert ids(cache.trades("BTCUSDT")) == [2]
    cache.advance(T0 + 15_001)
    assert cache.trades("BTCUSDT") == []
    assert sorted(cache.symbols()) == ["BTCUSDT", "ETHUSDT"]


def test_a_trade_older_than_the_advanced_window_is_not_kept() -> None:
    cache = TradeCache(max_size=100, window_ms=10_000)
    cache.advance(T0 + 60_000)
    assert cache.add(trade(1, T0))  # accepted (its id is new) but already out of the window
    assert cache.trades("BTCUSDT") == []
    assert cache.last_id("BTCUSDT") == 1


def test_seconds_filter_counts_back_from_the_newest_time() -> None:
    cache = TradeCache(max_size=100, window_ms=60_000)
    for i, dt in enumerate([0, 10_000, 20_000, 29_500, 30_000], start=1):
        cache.add(trade(i, T0 + dt))
    assert ids(cache.trades("BTCUSDT", 10)) == [3, 4, 5]
    assert ids(cache.trades("BTCUSDT", 0.5)) == [4, 5]
    assert ids(cache.trades("BTCUSDT", 0)) == [5]
    assert ids(cache.trades("BTCUSDT", 1000)) == [1, 2, 3, 4, 5]
    cache.advance(T0 + 35_000)  # the exchange clock counts too
    assert ids(cache.trades("BTCUSDT", 10)) == [4, 5]
    assert cache.trades("XRPUSDT", 10) == []


def test_trade_cache_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="max_size"):
        TradeCache(0, 1000)
    with pytest.raises(ValueError, match="window_ms"):
        TradeCache(10, -1)


@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5_000)), max_size=60),
    st.integers(1, 8),
    st.integers(0, 10_000),
)
def test_trade_cache_matches_a_naive_filter(
    steps: list[tuple[int, int]], max_size: int, window_ms: int
) -> None:
    cache = TradeCache(max_size, window_ms)
    seen: list[Trade] = []
    id_, time = 0, T0
    for id_step, dt in steps:
        id_ += id_step  # a step of 0 is a duplicate
        time += dt
        t = trade(id_, time)
        if cache.add(t):
            seen.append(t)
        newest = max(x.time for x in seen)
        expected = [x for x in seen[-max_size:] if x.time >= newest - window_ms]
        assert cache.trades("BTCUSDT") == expected
