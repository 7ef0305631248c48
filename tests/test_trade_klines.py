"""Klines built from aggregated trades: aggregates, bucketing, empty buckets, anchoring, and a
cross-check against the klines the fake market computes independently."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Context, Decimal

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trio_feed.core.intervals import bucket_open, next_open
from trio_feed.core.trade_klines import TradeKlineBuilder
from trio_feed.events import Kline, Trade
from trio_feed.testing.market import FakeMarket
from trio_feed.testing.records import AggTrade, KlineBar

from support import kline_row

SECOND = 1_000
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00Z, a Thursday
D = Decimal


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()) * 1000


def trade(
    id: int,
    time: int,
    price: str,
    qty: str = "1",
    *,
    fills: int = 1,
    buyer_is_maker: bool = False,
) -> Trade:
    return Trade(
        exchange="binance-usdm",
        symbol="BTCUSDT",
        id=id,
        price=D(price),
        qty=D(qty),
        first_trade_id=1000 + 10 * id,
        last_trade_id=1000 + 10 * id + fills - 1,
        time=time,
        buyer_is_maker=buyer_is_maker,
    )


def builder(
    interval: str = "1m",
    *,
    next_open_time: int | None = None,
    previous_close: Decimal | None = None,
) -> TradeKlineBuilder:
    return TradeKlineBuilder(
        "binance-usdm",
        "BTCUSDT",
        interval,
        next_open_time=next_open_time,
        previous_close=previous_close,
    )


def feed(b: TradeKlineBuilder, trades: list[Trade]) -> list[Kline]:
    out: list[Kline] = []
    for t in trades:
        out.extend(b.add(t))
    return out


def empty(open_time: int, price: str, interval: str = "1m") -> Kline:
    p = D(price)
    return Kline(
        exchange="binance-usdm",
        symbol="BTCUSDT",
        interval=interval,
        open_time=open_time,
        close_time=next_open(open_time, interval) - 1,
        open=p,
        high=p,
        low=p,
        close=p,
        volume=D(0),
        quote_volume=D(0),
        trades=0,
        taker_buy_volume=D(0),
        taker_buy_quote_volume=D(0),
        closed=True,
        source="trades",
        revision=0,
    )


def ohlc(k: Kline) -> tuple[int, Decimal, Decimal, Decimal, Decimal, Decimal]:
    return (k.open_time, k.open, k.high, k.low, k.close, k.volume)


# ---------------------------------------------------------------- aggregates


def test_hand_computed_aggregates_with_taker_and_maker_trades() -> None:
    b = builder()
    assert b.add(trade(1, T0 + 1_000, "100", "2", fills=3)) == []  # taker buy
    assert b.add(trade(2, T0 + 20_000, "105", "1", buyer_is_maker=True)) == []
    assert b.add(trade(3, T0 + 59_999, "95", "0.5", fills=2)) == []  # taker buy
    out = b.add(trade(4, T0 + MINUTE, "101", "3", buyer_is_maker=True))
    assert out == [
        Kline(
            exchange="binance-usdm",
            symbol="BTCUSDT",
            interval="1m",
            open_time=T0,
            close_time=T0 + MINUTE - 1,
            open=D("100"),
            high=D("105"),
            low=D("95"),
            close=D("95"),
            volume=D("3.5"),
            quote_volume=D("352.5"),  # 200 + 105 + 47.5
            trades=6,  # 3 + 1 + 2 individual fills
            taker_buy_volume=D("2.5"),
            taker_buy_quote_volume=D("247.5"),
            closed=True,
            source="trades",
            revision=0,
        )
    ]
    # The next trade three minutes on closes minute 1 and the empty minute 2.
    out = b.add(trade(5, T0 + 3 * MINUTE + 5, "99"))
    assert [ohlc(k) for k in out] == [
        (T0 + MINUTE, D(101), D(101), D(101), D(101), D(3)),
        (T0 + 2 * MINUTE, D(101), D(101), D(101), D(101), D(0)),
    ]
    assert out[0].taker_buy_volume == 0
    assert out[0].quote_volume == D(303)
    assert out[1] == empty(T0 + 2 * MINUTE, "101")


def test_quote_volume_is_exact_beyond_the_default_decimal_precision() -> None:
    b = builder()
    b.add(trade(1, T0, "123456789.12345678", "987654321.87654321"))
    b.add(trade(2, T0 + 1, "0.00000001", "0.00000001"))
    (k,) = b.add(trade(3, T0 + MINUTE, "1"))
    assert k.quote_volume == D("121932631342783101.4583142722374639")  # 34 digits
    # Python's default context (28 digits) would have rounded it.
    default = Context()
    product = default.multiply(D("123456789.12345678"), D("987654321.87654321"))
    assert default.add(product, D("1E-16")) != k.quote_volume


def test_high_low_track_the_extremes_in_any_order() -> None:
    b = builder()
    feed(b, [trade(i, T0 + i, p) for i, p in enumerate(["5", "3", "8", "1", "9", "4"], 1)])
    (k,) = b.advance(T0 + MINUTE)
    assert (k.open, k.high, k.low, k.close) == (D(5), D(9), D(1), D(4))
    assert k.trades == 6


# ---------------------------------------------------------------- bucketing


def test_one_second_buckets() -> None:
    b = builder("1s")
    out = feed(b, [trade(1, T0 + 999, "1"), trade(2, T0 + 1_000, "2"), trade(3, T0 + 3_500, "3")])
    assert [(k.open_time, k.close_time, k.close, k.trades) for k in out] == [
        (T0, T0 + 999, D(1), 1),
        (T0 + SECOND, T0 + 1_999, D(2), 1),
        (T0 + 2 * SECOND, T0 + 2_999, D(2), 0),
    ]


def test_seven_minute_buckets_are_aligned_to_the_epoch() -> None:
    start = bucket_open(T0 + 10 * MINUTE, "7m")
    assert start % (7 * MINUTE) == 0
    b = builder("7m")
    out = feed(
        b,
        [
            trade(1, start + 6 * MINUTE, "1"),
            trade(2, start + 7 * MINUTE - 1, "2"),
            trade(3, start + 7 * MINUTE, "3"),
        ],
    )
    assert [(k.open_time, k.close_time, k.open, k.close) for k in out] == [
        (start, start + 7 * MINUTE - 1, D(1), D(2))
    ]
    assert b.next_open_time == start + 7 * MINUTE


def test_weekly_buckets_open_on_monday() -> None:
    monday = ms(2026, 1, 5)
    b = builder("1w")
    assert b.add(trade(1, ms(2026, 1, 1, 12), "1")) == []  # a Thursday: the week of Dec 29
    out = b.add(trade(2, monday - 1, "2"))  # Sunday 23:59:59.999: the same week
    assert out == []
    out = b.add(trade(3, monday, "3"))
    assert [(k.open_time, k.close_time, k.close, k.trades) for k in out] == [
        (ms(2025, 12, 29), monday - 1, D(2), 2)
    ]
    out = b.add(trade(4, ms(2026, 1, 20), "4"))  # a Tuesday: closes Jan 5 and the empty Jan 12
    assert [(k.open_time, k.close_time, k.volume) for k in out] == [
        (monday, ms(2026, 1, 12) - 1, D(1)),
        (ms(2026, 1, 12), ms(2026, 1, 19) - 1, D(0)),
    ]
    assert b.next_open_time == ms(2026, 1, 19)


def test_monthly_buckets_follow_the_calendar() -> None:
    b = builder("1M")
    out = feed(
        b,
        [
            trade(1, ms(2024, 1, 31, 23, 59, 59), "1"),
            trade(2, ms(2024, 2, 29, 23, 59, 59) + 999, "2"),  # leap day, last ms of February
            trade(3, ms(2024, 5, 1), "3"),  # March and April were quiet
        ],
    )
    assert [(k.open_time, k.close_time, k.close, k.volume) for k in out] == [
        (ms(2024, 1, 1), ms(2024, 2, 1) - 1, D(1), D(1)),
        (ms(2024, 2, 1), ms(2024, 3, 1) - 1, D(2), D(1)),
        (ms(2024, 3, 1), ms(2024, 4, 1) - 1, D(2), D(0)),
        (ms(2024, 4, 1), ms(2024, 5, 1) - 1, D(2), D(0)),
    ]


# ---------------------------------------------------------------- empty buckets, anchors


def test_empty_buckets_carry_the_previous_close() -> None:
    b = builder()
    b.add(trade(1, T0 + 10, "100"))
    b.add(trade(2, T0 + 20, "102"))
    out = b.add(trade(3, T0 + 4 * MINUTE, "90"))
    assert out[1:] == [empty(T0 + i * MINUTE, "102") for i in (1, 2, 3)]
    assert b.previous_close == D(102)


def test_nothing_is_emitted_before_the_first_trade_without_an_anchor() -> None:
    b = builder()
    assert b.advance(T0 + 10 * MINUTE) == []
    assert b.current() is None
    before = b.next_open_time
    assert before is None
    assert b.add(trade(1, T0 + 10 * MINUTE + 5, "7")) == []
    assert b.next_open_time == T0 + 10 * MINUTE
    (k,) = b.advance(T0 + 11 * MINUTE)
    assert k.open_time == T0 + 10 * MINUTE


def test_anchored_start_emits_empty_buckets_before_the_first_trade() -> None:
    b = builder(next_open_time=T0, previous_close=D("50"))
    assert b.next_open_time == T0
    assert b.current() == attrs.evolve(empty(T0, "50"), closed=False)
    out = b.add(trade(1, T0 + 2 * MINUTE + 1, "55"))
    assert out == [empty(T0, "50"), empty(T0 + MINUTE, "50")]
    assert b.skipped_buckets == 0


def test_anchored_advance_emits_empty_buckets_without_any_trade() -> None:
    b = builder(next_open_time=T0, previous_close=D("50"))
    assert b.advance(T0 + 3 * MINUTE) == [empty(T0 + i * MINUTE, "50") for i in range(3)]


def test_anchor_without_previous_close_skips_the_unpriceable_buckets() -> None:
    b = builder(next_open_time=T0)
    assert b.current() is None
    assert b.advance(T0 + 5 * MINUTE) == []  # cannot price them: waits for a trade
    out = b.add(trade(1, T0 + 3 * MINUTE + 1, "55"))
    assert out == []
    assert b.skipped_buckets == 3
    assert b.next_open_time == T0 + 3 * MINUTE
    (k,) = b.advance(T0 + 4 * MINUTE)
    assert (k.open_time, k.close) == (T0 + 3 * MINUTE, D(55))


def test_anchor_without_previous_close_and_a_trade_in_its_bucket_skips_nothing() -> None:
    b = builder(next_open_time=T0)
    b.add(trade(1, T0 + 5, "55"))
    (k,) = b.advance(T0 + MINUTE)
    assert k.open_time == T0
    assert b.skipped_buckets == 0


def test_monthly_anchor_skips_count_calendar_months() -> None:
    b = builder("1M", next_open_time=ms(2024, 1, 1))
    b.add(trade(1, ms(2024, 4, 15), "1"))
    assert b.skipped_buckets == 3
    assert b.next_open_time == ms(2024, 4, 1)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="not a kline interval"):
        builder("1x")
    with pytest.raises(ValueError, match="boundary"):
        builder(next_open_time=T0 + 1)
    with pytest.raises(ValueError, match="previous_close"):
        builder(previous_close=D(1))


def test_restarting_from_the_anchor_gives_the_same_klines() -> None:
    rng = random.Random(7)
    trades, t = [], T0
    for i in range(1, 400):
        t += int(rng.expovariate(1 / 20_000))
        trades.append(trade(i, t, str(rng.randint(90, 110)), str(rng.randint(1, 9))))
    whole = builder()
    expected = feed(whole, trades) + whole.advance(t + 1)

    first = builder()
    got = feed(first, trades[:200])
    # Restart: resume from the bucket being built, re-reading its trades (as from REST).
    anchor = first.next_open_time
    assert anchor is not None
    second = builder(next_open_time=anchor, previous_close=first.previous_close)
    got += feed(second, [x for x in trades if x.time >= anchor]) + second.advance(t + 1)
    assert got == expected


# ---------------------------------------------------------------- advance, late, duplicates


def test_advance_closes_quiet_buckets_at_the_watermark() -> None:
    b = builder()
    b.add(trade(1, T0 + 5, "10"))
    assert b.advance(T0 + MINUTE - 1) == []  # a trade at T0 + 59_999 may still come
    (k,) = b.advance(T0 + MINUTE)  # every trade before T0 + 60 s seen: minute 0 is final
    assert (k.open_time, k.close) == (T0, D(10))
    assert b.advance(T0 + MINUTE) == []
    assert b.advance(T0 + 3 * MINUTE + 7) == [
        empty(T0 + MINUTE, "10"),
        empty(T0 + 2 * MINUTE, "10"),
    ]
    assert b.next_open_time == T0 + 3 * MINUTE


def test_late_trades_are_counted_and_folded_into_the_current_bucket() -> None:
    b = builder()
    b.add(trade(1, T0 + 5, "10", "1"))
    (k0,) = b.advance(T0 + MINUTE)
    assert b.add(trade(2, T0 + 59_000, "11", "2")) == []  # its minute was already emitted
    assert b.late_trades == 1
    (k1,) = b.advance(T0 + 2 * MINUTE)
    assert k1.open_time == T0 + MINUTE
    assert (k1.open, k1.close, k1.volume) == (D(11), D(11), D(2))
    assert k0.volume + k1.volume == 3  # totals stay exact


def test_duplicate_ids_are_counted_and_ignored() -> None:
    b = builder()
    b.add(trade(5, T0, "10"))
    assert b.add(trade(5, T0 + 1, "99")) == []
    assert b.add(trade(3, T0 + 2 * MINUTE, "99")) == []  # would have closed a bucket
    assert b.duplicates == 2
    assert b.last_id == 5
    current = b.current()
    assert current is not None
    assert (current.open_time, current.close, current.trades) == (T0, D(10), 1)


def test_current_is_the_open_bucket_so_far() -> None:
    b = builder()
    b.add(trade(1, T0 + 5, "10", "1"))
    b.add(trade(2, T0 + 6, "12", "2"))
    current = b.current()
    assert current is not None
    assert not current.closed
    assert (current.open, current.high, current.close, current.volume) == (
        D(10),
        D(12),
        D(12),
        D(3),
    )
    b.advance(T0 + MINUTE)
    current = b.current()
    assert current is not None
    assert (current.open_time, current.close, current.volume, current.closed) == (
        T0 + MINUTE,
        D(12),
        D(0),
        False,
    )


# ---------------------------------------------------------------- against the fake market


def _to_trade(t: AggTrade) -> Trade:
    return Trade(
        exchange="binance-usdm",
        symbol=t.symbol,
        id=t.agg_id,
        price=t.price,
        qty=t.qty,
        first_trade_id=t.first_trade_id,
        last_trade_id=t.last_trade_id,
        time=t.time,
        buyer_is_maker=t.buyer_is_maker,
    )


def _fields(k: Kline | KlineBar) -> tuple[object, ...]:
    return (*kline_row(k)[1:], k.closed)


def _cross_check(
    seed: int, trade_rate: float, start: int, duration: int, intervals: list[str]
) -> dict[str, list[Kline]]:
    """Drive a fake market in irregular steps, feed its trades to builders as they happen and
    advance them to each step's time, as the feed would; compare with the market's klines."""
    market = FakeMarket(["BTCUSDT"], seed=seed, start_time_ms=start, trade_rate=trade_rate)
    price = market.spec("BTCUSDT").start_price
    # The market opens every interval's bucket at its start, priced at the start price, and
    # closes it even without trades: anchor the builders the same way.
    builders = {
        i: builder(i, next_open_time=bucket_open(start, i), previous_close=price) for i in intervals
    }
    built: dict[str, list[Kline]] = {i: [] for i in intervals}
    rng = random.Random(seed)
    now = start
    while now < start + duration:
        now += rng.choice([1, 999, 17_000, 60_000, 61_001, 400_000])
        for event in market.advance_to(now):
            if isinstance(event, AggTrade):
                t = _to_trade(event)
                for i in intervals:
                    built[i] += builders[i].add(t)
        for i in intervals:
            # Every trade up to and including `now` has happened.
            built[i] += builders[i].advance(now + 1)
    for i in intervals:
        expected = market.klines("BTCUSDT", i)
        ours = built[i]
        # A bucket whose close time is exactly `now` is final for us (watermark now + 1) but
        # the market only closes it at the next millisecond.
        assert len(ours) - len(expected) in (0, 1)
        if len(ours) > len(expected):
            assert ours[-1].close_time == now
        assert [_fields(k) for k in ours[: len(expected)]] == [_fields(k) for k in expected]
        assert all(k.source == "trades" and k.revision == 0 for k in ours)
        assert builders[i].late_trades == builders[i].duplicates == 0
        assert builders[i].skipped_buckets == 0
    return built


def test_matches_the_fake_market_with_empty_minutes() -> None:
    built = _cross_check(
        seed=1, trade_rate=0.02, start=T0 + 37_123, duration=6 * HOUR, intervals=["1m", "5m", "1h"]
    )
    minutes = built["1m"]
    assert len(minutes) >= 6 * 60
    empties = [k for k in minutes if k.trades == 0]
    assert 50 < len(empties) < len(minutes) - 50  # both kinds, plenty of each
    assert minutes[0].open_time == T0  # the market's first bucket, before any trade


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    trade_rate=st.sampled_from([0.005, 0.02, 0.3, 3.0]),
    offset=st.integers(0, 2 * HOUR),
)
def test_matches_the_fake_market_for_any_seed(seed: int, trade_rate: float, offset: int) -> None:
    duration = 20 * MINUTE if trade_rate > 1 else 3 * HOUR
    _cross_check(seed, trade_rate, T0 + offset, duration, ["1m", "3m", "5m", "15m", "1h"])


def test_matches_the_fake_market_over_days_and_a_week() -> None:
    # Starts on a Thursday: the first week is partial, the second opens on Monday Jan 5.
    built = _cross_check(
        seed=3, trade_rate=0.004, start=T0 + 5 * HOUR, duration=13 * DAY, intervals=["1d", "1w"]
    )
    assert [k.open_time for k in built["1w"]] == [ms(2025, 12, 29), ms(2026, 1, 5)]
    assert len(built["1d"]) == 13
