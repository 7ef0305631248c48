"""Tests of the pure simulated market behind the fake exchange (`trio_feed.testing.market`)."""

from __future__ import annotations

import functools
import itertools
from decimal import Decimal

import pytest
from trio_feed.testing import (
    KLINE_INTERVALS,
    AggTrade,
    BookSnapshot,
    DepthStep,
    FakeMarket,
    KlineBar,
    MarketEvent,
    SymbolSpec,
    kline_open_time,
)

START = 1_767_225_600_000  # 2026-01-01T00:00Z, a Thursday
HOUR = 3_600_000


def _history(market: FakeMarket) -> tuple[object, ...]:
    out: list[object] = []
    for symbol in market.symbols:
        out.append(market.trades(symbol))
        for interval in KLINE_INTERVALS:
            out.append(market.klines(symbol, interval, include_open=True))
        out.append(market.book(symbol))
        out.append(market.mark_price(symbol))
    return tuple(out)


def _apply(book: dict[str, dict[Decimal, Decimal]], step: DepthStep) -> None:
    for side, levels in (("bids", step.bids), ("asks", step.asks)):
        for price, qty in levels:
            if qty:
                book[side][price] = qty
            else:
                book[side].pop(price, None)


def _recompute(
    trades: list[AggTrade], interval: str, first_open: int, last_open: int, start_price: Decimal
) -> list[tuple[object, ...]]:
    """Klines from trades alone, written independently of the market's bucket code."""
    length = KLINE_INTERVALS[interval]
    rows: list[tuple[object, ...]] = []
    close = start_price
    i = 0
    open_time = first_open
    while open_time <= last_open:
        bucket = []
        while i < len(trades) and trades[i].time < open_time + length:
            bucket.append(trades[i])
            i += 1
        if bucket:
            prices = [t.price for t in bucket]
            row = (
                open_time,
                prices[0],
                max(prices),
                min(prices),
                prices[-1],
                sum((t.qty for t in bucket), Decimal(0)),
                sum((t.price * t.qty for t in bucket), Decimal(0)),
                sum(t.last_trade_id - t.first_trade_id + 1 for t in bucket),
                sum((t.qty for t in bucket if not t.buyer_is_maker), Decimal(0)),
                sum((t.price * t.qty for t in bucket if not t.buyer_is_maker), Decimal(0)),
                bucket[0].first_trade_id,
                bucket[-1].last_trade_id,
            )
            close = prices[-1]
        else:
            z = Decimal(0)
            row = (open_time, close, close, close, close, z, z, 0, z, z, -1, -1)
        rows.append(row)
        open_time += length
    return rows


def _as_row(bar: KlineBar) -> tuple[object, ...]:
    return (
        bar.open_time,
        bar.open,
        bar.high,
        bar.low,
        bar.close,
        bar.volume,
        bar.quote_volume,
        bar.trades,
        bar.taker_buy_volume,
        bar.taker_buy_quote_volume,
        bar.first_trade_id,
        bar.last_trade_id,
    )


def test_same_seed_same_history_and_different_seed_differs() -> None:
    a, b, c = FakeMarket(seed=7), FakeMarket(seed=7), FakeMarket(seed=8)
    for m in (a, b, c):
        m.advance_to(START + 3 * 60_000)
    assert _history(a) == _history(b)
    assert a.trades("BTCUSDT") != c.trades("BTCUSDT")
    assert a.book("BTCUSDT") != c.book("BTCUSDT")


def test_history_does_not_depend_on_how_time_is_advanced() -> None:
    coarse, fine = FakeMarket(seed=3, book_events=True), FakeMarket(seed=3, book_events=True)
    coarse_events = coarse.advance_to(START + 5 * 60_000)
    fine_events = []
    for t in range(START + 37, START + 5 * 60_000 + 1, 37):
        fine_events += fine.advance_to(t)
    fine_events += fine.advance_to(START + 5 * 60_000)
    assert coarse_events == fine_events
    assert _history(coarse) == _history(fine)


def test_lazy_book_equals_eager_book() -> None:
    eager, lazy = FakeMarket(seed=5, book_events=True), FakeMarket(seed=5, book_events=False)
    events = eager.advance_to(START + 2 * 60_000)
    assert not any(isinstance(e, DepthStep) for e in lazy.advance_to(START + 2 * 60_000))
    assert any(isinstance(e, DepthStep) for e in events)
    for symbol in eager.symbols:
        assert eager.book(symbol) == lazy.book(symbol)
        assert eager.depth_steps(symbol) == lazy.depth_steps(symbol)
        assert eager.best_quote(symbol) == lazy.best_quote(symbol)


def test_events_are_in_time_order() -> None:
    market = FakeMarket(seed=2, book_events=True)
    events = market.advance_to(START + 3 * 60_000)

    def when(e: MarketEvent) -> int:
        return e.close_time + 1 if isinstance(e, KlineBar) else e.time

    times = [when(e) for e in events]
    assert times == sorted(times)
    assert market.advance_to(START) == []  # going backwards is a no-op


def test_agg_ids_and_trade_ids_increase_without_gaps() -> None:
    market = FakeMarket(seed=11, trade_rate=5.0)
    market.advance_to(START + 10 * 60_000)
    trades = market.trades("ETHUSDT")
    assert len(trades) > 2000
    assert [t.agg_id for t in trades] == list(
        range(trades[0].agg_id, trades[0].agg_id + len(trades))
    )
    assert trades[0].agg_id == market.first_agg_id("ETHUSDT")
    for prev, cur in itertools.pairwise(trades):
        assert cur.first_trade_id == prev.last_trade_id + 1
        assert cur.time >= prev.time
    assert all(t.last_trade_id >= t.first_trade_id for t in trades)
    assert all(START < t.time <= START + 10 * 60_000 for t in trades)


def test_prices_and_quantities_use_the_tick_and_step_decimals() -> None:
    market = FakeMarket(
        [
            "BTCUSDT",
            "ETHUSDT",
            "SOLUSDT",
            SymbolSpec("XYZUSDT", Decimal("5.0"), Decimal("0.5"), Decimal("1")),
        ],
        seed=1,
    )
    market.advance_to(START + 60_000)
    exponents = {"BTCUSDT": (-2, -3), "ETHUSDT": (-2, -3), "SOLUSDT": (-3, -1), "XYZUSDT": (-1, 0)}
    for symbol, (price_exp, qty_exp) in exponents.items():
        trade = market.trades(symbol)[0]
        assert trade.price.as_tuple().exponent == price_exp
        assert trade.qty.as_tuple().exponent == qty_exp
        assert trade.price % market.spec(symbol).tick_size == 0
        bar = market.current_kline(symbol, "1m")
        assert bar.quote_volume.as_tuple().exponent == price_exp + qty_exp
    fresh = FakeMarket(seed=1).current_kline("BTCUSDT", "1m")
    assert format(fresh.open, "f") == "60000.00" and format(fresh.volume, "f") == "0.000"
    with pytest.raises(ValueError, match="multiple of tick_size"):
        SymbolSpec("BADUSDT", Decimal("1.05"), Decimal("0.1"), Decimal("1"))


@functools.cache
def _nine_slow_days() -> tuple[FakeMarket, int]:
    # A slow market: most minutes are empty, so empty buckets are exercised too.
    market = FakeMarket(["BTCUSDT"], seed=4, trade_rate=0.01)
    end = START + 9 * 24 * HOUR + 123_456
    market.advance_to(end)
    return market, end


@pytest.mark.parametrize("interval", list(KLINE_INTERVALS))
def test_klines_equal_a_recomputation_from_trades(interval: str) -> None:
    market, end = _nine_slow_days()
    closed = market.klines("BTCUSDT", interval)
    current = market.current_kline("BTCUSDT", interval)
    first_open = kline_open_time(START, interval)
    assert current.open_time == kline_open_time(end, interval)
    assert all(bar.closed for bar in closed) and not current.closed
    expected = _recompute(
        market.trades("BTCUSDT"), interval, first_open, current.open_time, Decimal("60000.00")
    )
    assert [_as_row(b) for b in [*closed, current]] == expected
    for bar in closed:
        assert bar.close_time == bar.open_time + KLINE_INTERVALS[interval] - 1


def test_empty_buckets_repeat_the_previous_close() -> None:
    market = FakeMarket(["ETHUSDT"], seed=9, trade_rate=0.005)
    market.advance_to(START + 2 * HOUR)
    bars = market.klines("ETHUSDT", "1m")
    assert len(bars) == 120
    empty = [(prev, bar) for prev, bar in itertools.pairwise(bars) if bar.trades == 0]
    assert len(empty) > 60
    for prev, bar in empty:
        assert bar.open == bar.high == bar.low == bar.close == prev.close
        assert bar.volume == bar.quote_volume == 0
        assert bar.first_trade_id == bar.last_trade_id == -1


def test_kline_alignment() -> None:
    assert kline_open_time(START + 61_000, "1m") == START + 60_000
    assert kline_open_time(START, "1d") == START
    # 2026-01-01 is a Thursday: its weekly kline opened on Monday 2025-12-29.
    assert kline_open_time(START, "1w") == START - 3 * 24 * HOUR
    assert kline_open_time(START + 5 * HOUR, "4h") == START + 4 * HOUR


def test_trade_and_kline_selection() -> None:
    market = FakeMarket(["BTCUSDT"], seed=6, trade_rate=1.0)
    market.advance_to(START + 30 * 60_000)
    trades = market.trades("BTCUSDT")
    first = trades[0].agg_id
    assert market.trades("BTCUSDT", from_id=first + 10, limit=5) == trades[10:15]
    assert market.trades("BTCUSDT", limit=3) == trades[-3:]
    t0, t1 = trades[20].time, trades[40].time
    in_window = [t for t in trades if t0 <= t.time <= t1]
    assert market.trades("BTCUSDT", start_time=t0, end_time=t1) == in_window
    assert market.trades("BTCUSDT", start_time=t0, limit=2) == in_window[:2]
    assert market.trades("BTCUSDT", from_id=first + 10**9) == []

    bars = market.klines("BTCUSDT", "1m", include_open=True)
    assert len(bars) == 31 and not bars[-1].closed
    assert market.klines("BTCUSDT", "1m", limit=2, include_open=True) == bars[-2:]
    assert market.klines("BTCUSDT", "1m", limit=2) == bars[-3:-1]
    t = bars[5].open_time
    assert market.klines("BTCUSDT", "1m", start_time=t, limit=3) == bars[5:8]
    assert (
        market.klines("BTCUSDT", "1m", start_time=t + 1, end_time=bars[9].open_time) == bars[6:10]
    )
    assert market.klines("BTCUSDT", "1m", start_time=bars[-1].open_time, include_open=True) == [
        bars[-1]
    ]


def test_book_is_consistent_with_the_last_trade() -> None:
    market = FakeMarket(seed=12, trade_rate=3.0, book_events=True)
    for minute in range(1, 11):
        market.advance_to(START + minute * 60_000)
        for symbol in market.symbols:
            book = market.book(symbol)
            assert 0 < len(book.bids) <= market.book_levels
            assert 0 < len(book.asks) <= market.book_levels
            best_bid, best_ask = book.bids[0][0], book.asks[0][0]
            assert best_bid < market.last_price(symbol) < best_ask
            assert [p for p, _ in book.bids] == sorted((p for p, _ in book.bids), reverse=True)
            assert all(q > 0 for _, q in book.bids + book.asks)
            quote = market.best_quote(symbol)
            assert (quote.bid_price, quote.ask_price) == (best_bid, best_ask)


def test_depth_steps_chain_their_update_ids() -> None:
    market = FakeMarket(seed=13, depth_step_ms=100)
    market.advance_to(START + 60_000)
    opening, *steps = market.depth_steps("BTCUSDT")
    # The opening book is the first step; then one step every 100 ms.
    assert opening.time == START and len(opening.bids) == len(opening.asks) == 200
    assert len(steps) == 600
    for prev, cur in zip([opening, *steps], steps, strict=False):
        assert cur.first_update_id == prev.last_update_id + 1
        assert cur.prev_update_id == prev.last_update_id
        changes = len(cur.bids) + len(cur.asks)
        assert cur.last_update_id == cur.first_update_id + changes - 1
        assert cur.time == prev.time + 100 or prev is opening
    assert market.last_update_id("BTCUSDT") == steps[-1].last_update_id
    assert market.published_update_id("BTCUSDT") == steps[-2].last_update_id


def test_snapshot_plus_following_diffs_reproduce_the_book() -> None:
    market = FakeMarket(seed=14, trade_rate=4.0)
    market.advance_to(START + 12_345)
    snapshot = market.book("ETHUSDT")
    book = {"bids": dict(snapshot.bids), "asks": dict(snapshot.asks)}
    last = snapshot.last_update_id
    market.advance_to(START + 70_000)
    for step in market.depth_steps("ETHUSDT"):
        if step.last_update_id <= last:
            continue
        assert step.prev_update_id == last
        _apply(book, step)
        last = step.last_update_id
    now = market.book("ETHUSDT")
    assert dict(now.bids) == book["bids"] and dict(now.asks) == book["asks"]

    # The same through merged diffs (what a diff stream sends).
    merged = {"bids": dict(snapshot.bids), "asks": dict(snapshot.asks)}
    diff = market.depth_diff("ETHUSDT", snapshot.last_update_id, now.last_update_id)
    assert diff is not None and diff.first_update_id == snapshot.last_update_id + 1
    _apply(merged, diff)
    assert merged == book
    assert market.depth_diff("ETHUSDT", now.last_update_id, now.last_update_id) is None
    with pytest.raises(LookupError):
        market.depth_diff("ETHUSDT", snapshot.last_update_id + 1, now.last_update_id)


def test_mark_price() -> None:
    market = FakeMarket(seed=1, trade_rate=0.1)
    market.advance_to(START + 9 * HOUR + 1)
    mark = market.mark_price("BTCUSDT")
    assert mark.next_funding_time == START + 16 * HOUR
    assert format(mark.mark_price, "f").endswith("0" * 6)
    assert mark.mark_price.as_tuple().exponent == -8
    assert abs(mark.mark_price - market.last_price("BTCUSDT")) <= Decimal("0.30")
    assert mark.funding_rate.as_tuple().exponent == -8
    assert market.mark_price("BTCUSDT") == mark  # pure function of (seed, symbol, second)


def test_a_slow_day_stays_small_and_quick() -> None:
    market = FakeMarket(seed=21, trade_rate=0.1, book_events=False)
    market.advance_to(START + 24 * HOUR)
    assert len(market.klines("BTCUSDT", "1m")) == 1440
    assert len(market.klines("BTCUSDT", "1d")) == 1
    assert 7000 < market.trade_count("BTCUSDT") < 10_000


def test_only_recent_depth_steps_are_retained() -> None:
    market = FakeMarket(seed=21, depth_history=50)
    market.advance_to(START + 10_000)
    steps = market.depth_steps("BTCUSDT")
    assert len(steps) == 50
    assert steps[-1].last_update_id == market.last_update_id("BTCUSDT")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        FakeMarket(["BTCUSDT", "BTCUSDT"])
    with pytest.raises(ValueError, match="upper-case"):
        SymbolSpec("btcusdt", Decimal(1), Decimal(1), Decimal(1))
    with pytest.raises(KeyError):
        FakeMarket().trades("NOPE")


# --------------------------------------------------------------------------- listings


def _symbol_history(market: FakeMarket, symbol: str) -> tuple[object, ...]:
    out: list[object] = [market.trades(symbol), market.book(symbol), market.mark_price(symbol)]
    out += [market.klines(symbol, i, include_open=True) for i in KLINE_INTERVALS]
    return tuple(out)


def test_a_listed_symbol_trades_from_its_listing_time() -> None:
    market = FakeMarket(seed=21)
    listed_at = START + 90_500  # mid-minute
    market.advance_to(listed_at)
    spec = market.add_symbol("SOLUSDT")
    assert spec == SymbolSpec.default("SOLUSDT")
    assert market.symbols == ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    assert market.listed_at("SOLUSDT") == listed_at and market.listed_at("BTCUSDT") == START
    assert market.trades("SOLUSDT") == [] and market.klines("SOLUSDT", "1m") == []
    events = market.advance_to(START + 10 * 60_000)
    trades = market.trades("SOLUSDT")
    assert len(trades) > 500 and trades[0].time > listed_at
    assert [e for e in events if isinstance(e, AggTrade) and e.symbol == "SOLUSDT"] == trades
    # The first kline of each interval is the bucket holding the listing time (partial).
    closed = market.klines("SOLUSDT", "1m")
    assert closed[0].open_time == START + 60_000 and len(closed) == 9
    assert [_as_row(b) for b in closed] == _recompute(
        trades, "1m", START + 60_000, START + 9 * 60_000, Decimal("100.000")
    )
    assert market.current_kline("SOLUSDT", "1h").open_time == START
    book = market.book("SOLUSDT")
    assert book.bids and book.asks and book.bids[0][0] < book.asks[0][0]
    assert market.mark_price("SOLUSDT").symbol == "SOLUSDT"
    with pytest.raises(ValueError, match="already listed"):
        market.add_symbol("SOLUSDT")
    with pytest.raises(ValueError, match="already listed"):
        market.add_symbol("BTCUSDT")


def test_a_listing_depends_only_on_its_seed_name_and_time() -> None:
    listed_at = START + 30_000
    end = START + 5 * 60_000
    runs = []
    # XRPUSDT is listed earlier, later or never; SOLUSDT always at the same moment.
    for xrp_at in (START + 1_000, START + 120_000, None):
        market = FakeMarket(seed=22)
        if xrp_at is not None and xrp_at < listed_at:
            market.advance_to(xrp_at)
            market.add_symbol("XRPUSDT")
        market.advance_to(listed_at)
        market.add_symbol(SymbolSpec("SOLUSDT", Decimal("150.00"), Decimal("0.01"), Decimal("1")))
        if xrp_at is not None and xrp_at > listed_at:
            market.advance_to(xrp_at)
            market.add_symbol("XRPUSDT", trade_rate=5.0)
        market.advance_to(end)
        runs.append((_symbol_history(market, "SOLUSDT"), _symbol_history(market, "BTCUSDT")))
    assert runs[0] == runs[1] == runs[2]
    # Listings never disturb the symbols that were there: same as a market without them.
    plain = FakeMarket(seed=22)
    plain.advance_to(end)
    assert runs[0][1] == _symbol_history(plain, "BTCUSDT")
    assert runs[0][0][0][0].price.as_tuple().exponent == -2  # the spec's tick


def test_listing_trade_rates() -> None:
    market = FakeMarket(seed=23, trade_rate={"BTCUSDT": 1.0, "DOGEUSDT": 20.0})
    market.add_symbol("DOGEUSDT")  # the mapping's rate
    market.add_symbol("XRPUSDT")  # not in the mapping: no trades, as at construction
    market.add_symbol("ADAUSDT", trade_rate=0.0)
    market.advance_to(START + 60_000)
    assert 900 < market.trade_count("DOGEUSDT") < 1500
    assert market.trade_count("XRPUSDT") == market.trade_count("ADAUSDT") == 0
    assert 30 < market.trade_count("BTCUSDT") < 100


# --------------------------------------------------------------------------- book history


def _books_along_the_way(market: FakeMarket, symbol: str, until: int) -> dict[int, BookSnapshot]:
    """The book after every step, recorded as time goes: the truth `book_at` must rebuild."""
    seen = {market.last_update_id(symbol): market.book(symbol)}
    for t in range(market.now_ms + 100, until + 1, 100):
        market.advance_to(t)
        book = market.book(symbol)
        seen[book.last_update_id] = book
    return seen


@pytest.mark.parametrize("history", [3, 40, 10_000])
def test_book_at_rebuilds_every_retained_book(history: int) -> None:
    market = FakeMarket(seed=31, depth_history=history, book_levels=40)
    seen = _books_along_the_way(market, "ETHUSDT", START + 20_000)
    steps = market.depth_steps("ETHUSDT")
    assert len(steps) == min(history, 201)  # the opening book and 200 steps
    retained = [s.last_update_id for s in steps]
    shuffled = sorted(retained, key=lambda u: (u * 7919) % 104_729)
    for update_id in retained + retained[::-1] + shuffled + retained:
        assert market.book_at("ETHUSDT", update_id) == seen[update_id]
    last = retained[-1]
    assert market.book_at("ETHUSDT", last) == market.book("ETHUSDT")
    top = market.book_at("ETHUSDT", retained[-2], 5)
    assert top.bids == seen[retained[-2]].bids[:5] and top.asks == seen[retained[-2]].asks[:5]
    # Only step boundaries that are still retained.
    wide = next(s for s in steps if s.last_update_id > s.first_update_id)
    for bad in (wide.first_update_id, last + 1, min(seen) if history < 201 else last + 2):
        with pytest.raises(LookupError, match="ETHUSDT"):
            market.book_at("ETHUSDT", bad)


def test_book_at_walks_a_stream_cheaply_and_matches_the_diffs() -> None:
    market = FakeMarket(seed=32, trade_rate=3.0)
    market.advance_to(START + 60_000)
    snapshot = market.book("BTCUSDT")
    book = {"bids": dict(snapshot.bids), "asks": dict(snapshot.asks)}
    last = snapshot.last_update_id
    market.advance_to(START + 120_000)
    # Diffs as a 250 ms stream merges them; after each, the truth at its u equals the replay.
    boundaries = [s.last_update_id for s in market.depth_steps("BTCUSDT")]
    checked = 0
    for up_to in boundaries[boundaries.index(last) + 3 :: 3]:
        diff = market.depth_diff("BTCUSDT", last, up_to)
        assert diff is not None
        _apply(book, diff)
        last = up_to
        truth = market.book_at("BTCUSDT", up_to)
        assert (dict(truth.bids), dict(truth.asks)) == (book["bids"], book["asks"])
        checked += 1
    assert checked > 150


def test_update_id_steps_ago() -> None:
    market = FakeMarket(seed=33, depth_history=100)
    market.advance_to(START + 5_000)
    ids = [s.last_update_id for s in market.depth_steps("BTCUSDT")]
    assert market.update_id_steps_ago("BTCUSDT", 0) == ids[-1] == market.last_update_id("BTCUSDT")
    assert market.update_id_steps_ago("BTCUSDT", 1) == market.published_update_id("BTCUSDT")
    assert market.update_id_steps_ago("BTCUSDT", 50) == ids[-51]
    # Not that much history: the oldest book there is (the opening one here).
    assert market.update_id_steps_ago("BTCUSDT", 500) == ids[0]
    market.advance_to(START + 60_000)
    oldest = market.depth_steps("BTCUSDT")[0]
    assert market.update_id_steps_ago("BTCUSDT", 500) == oldest.first_update_id - 1
    market.book_at("BTCUSDT", oldest.first_update_id - 1)  # the base book is retained too
    with pytest.raises(ValueError):
        market.update_id_steps_ago("BTCUSDT", -1)


def test_quiet_books_change_at_some_steps_only() -> None:
    activity = {"BTCUSDT": 0.2}  # ETHUSDT: absent, so busy
    quiet = FakeMarket(seed=34, book_activity=activity)
    quiet.advance_to(START + 60_000)
    busy = FakeMarket(seed=34)
    busy.advance_to(START + 60_000)
    btc = quiet.depth_steps("BTCUSDT")[1:]
    assert 80 < len(btc) < 160  # about 600 * 0.2
    for prev, cur in itertools.pairwise(quiet.depth_steps("BTCUSDT")):
        assert cur.first_update_id == prev.last_update_id + 1
        assert cur.time % 100 == 0
    # A busy book's history does not depend on the option.
    assert quiet.depth_steps("ETHUSDT") == busy.depth_steps("ETHUSDT")
    assert quiet.trades("BTCUSDT") == busy.trades("BTCUSDT")
    book = quiet.book("BTCUSDT")
    assert book.bids[0][0] < book.asks[0][0]
    # Lazy and eager books agree with quiet books too.
    eager = FakeMarket(seed=34, book_activity=activity, book_events=True)
    eager.advance_to(START + 60_000)
    assert eager.depth_steps("BTCUSDT") == quiet.depth_steps("BTCUSDT")
    silent = FakeMarket(seed=34, book_activity=0.0)
    silent.advance_to(START + 60_000)
    assert len(silent.depth_steps("BTCUSDT")) == 1  # the opening book only
    with pytest.raises(ValueError, match="book_activity"):
        FakeMarket(book_activity=1.5)


def test_many_symbols_advance_in_the_same_order() -> None:
    # The event order (time, kind, symbol order) holds with many symbols: a kline close
    # at a minute boundary comes for every symbol in order, before the trades at that ms.
    symbols = [f"S{i:03d}USDT" for i in range(50)]
    market = FakeMarket(symbols, seed=35, trade_rate=5.0)
    events = market.advance_to(START + 120_000)
    keys = [
        (e.time if isinstance(e, AggTrade) else e.close_time + 1, isinstance(e, AggTrade))
        for e in events
        if isinstance(e, AggTrade | KlineBar)
    ]
    assert keys == sorted(keys)
    closes = [e.symbol for e in events if isinstance(e, KlineBar) and e.interval == "1m"]
    assert closes == symbols + symbols
    assert sum(isinstance(e, AggTrade) for e in events) == sum(
        market.trade_count(s) for s in symbols
    )


def test_the_empty_book_before_the_opening_is_not_a_book() -> None:
    market = FakeMarket(seed=36)
    opening = market.depth_steps("BTCUSDT")[0]
    with pytest.raises(LookupError):
        market.book_at("BTCUSDT", opening.first_update_id - 1)
    assert len(market.book_at("BTCUSDT", opening.last_update_id).bids) == 200
