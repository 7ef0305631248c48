"""The sequencers: closed klines and trade ids out in order, without gap or duplicate."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from trio_feed.core.sequence import KlineGap, KlineSequencer, TradeGap, TradeSequencer
from trio_feed.events import Kline, Trade

M = 60_000
T0 = 1_767_225_600_000


def kl(i: int, *, closed: bool = True, source: str = "ws", close: str = "1") -> Kline:
    t = T0 + i * M
    d = Decimal(close)
    return Kline(
        "x",
        "BTCUSDT",
        "1m",
        t,
        t + M - 1,
        d,
        d,
        d,
        d,
        d,
        d,
        1,
        d,
        d,
        closed,
        source,  # type: ignore[arg-type]
    )


def tr(i: int, source: str = "ws") -> Trade:
    return Trade("x", "BTCUSDT", i, Decimal(1), Decimal(1), i, i, T0 + i, False, source)  # type: ignore[arg-type]


def closed_times(out: list[Kline]) -> list[int]:
    return [(k.open_time - T0) // M for k in out if k.closed]


# ---- klines ---------------------------------------------------------------------------------


def test_in_order_klines_pass_straight_through() -> None:
    seq = KlineSequencer("BTCUSDT", "1m")
    out: list[Kline] = []
    for i in range(3):
        assert seq.on_kline(kl(i, closed=False), out) is None
        assert seq.on_kline(kl(i), out) is None
    assert closed_times(out) == [0, 1, 2]
    assert len(out) == 6
    assert not seq.filling


def test_duplicate_and_stale_klines_are_dropped() -> None:
    seq = KlineSequencer("BTCUSDT", "1m")
    out: list[Kline] = []
    seq.on_kline(kl(0), out)
    seq.on_kline(kl(0), out)
    seq.on_kline(kl(0, closed=False), out)
    assert out == [kl(0)]
    assert (seq.duplicates, seq.stale) == (1, 1)


def test_open_kline_after_a_drop_reveals_the_gap_at_once() -> None:
    seq = KlineSequencer("BTCUSDT", "1m")
    out: list[Kline] = []
    seq.on_kline(kl(0), out)
    # Reconnected during bucket 4: its first update proves 1..3 closed.
    gap = seq.on_kline(kl(4, closed=False), out)
    assert gap == KlineGap("BTCUSDT", "1m", T0 + M, T0 + 4 * M)
    assert out[-1] == kl(4, closed=False)  # open updates are not held
    seq.on_kline(kl(4), out)  # closes while the fill runs: held
    assert closed_times(out) == [0]
    seq.on_page([kl(i, source="rest") for i in (1, 2, 3)], out, complete=True)
    assert closed_times(out) == [0, 1, 2, 3, 4]
    assert [k.source for k in out if k.closed] == ["ws", "rest", "rest", "rest", "ws"]
    assert not seq.filling and seq.gap() is None


def test_late_stream_kline_for_a_backfilled_range_is_not_emitted_twice() -> None:
    seq = KlineSequencer("BTCUSDT", "1m", next_open_time=T0)
    out: list[Kline] = []
    gap = seq.on_kline(kl(3, closed=False), out)
    assert gap is not None
    seq.on_page([kl(i, source="rest") for i in range(3)], out, complete=True)
    seq.on_kline(kl(2), out)  # the stream's copy, late
    assert closed_times(out) == [0, 1, 2]
    assert seq.duplicates == 1


def test_paging_continues_until_the_gap_is_covered() -> None:
    seq = KlineSequencer("BTCUSDT", "1m", next_open_time=T0)
    out: list[Kline] = []
    seq.on_kline(kl(5, closed=False), out)
    seq.on_page([kl(0), kl(1)], out, complete=False)
    assert seq.gap() == KlineGap("BTCUSDT", "1m", T0 + 2 * M, T0 + 5 * M)
    seq.on_page([kl(2), kl(3)], out, complete=False)
    seq.on_page([kl(4)], out, complete=True)
    assert closed_times(out) == [0, 1, 2, 3, 4]
    assert seq.gap() is None


def test_buckets_the_exchange_has_no_kline_for_are_skipped_and_counted() -> None:
    seq = KlineSequencer("BTCUSDT", "1m", next_open_time=T0)
    out: list[Kline] = []
    seq.on_kline(kl(5), out)  # closed, far ahead
    seq.on_page([kl(0), kl(3)], out, complete=True)  # no klines 1, 2, 4 at the exchange
    assert closed_times(out) == [0, 3, 5]
    assert seq.skipped == 3


def test_a_still_open_rest_kline_does_not_close_the_gap_past_it() -> None:
    seq = KlineSequencer("BTCUSDT", "1m", next_open_time=T0)
    out: list[Kline] = []
    seq.on_horizon(T0 + 3 * M)  # the clock (with its margin) says bucket 3 began
    seq.on_page([kl(0), kl(1), kl(2, closed=False)], out, complete=True)
    assert closed_times(out) == [0, 1]
    assert seq.skipped == 0
    seq.on_kline(kl(2), out)  # the stream closes it: not lost
    assert closed_times(out) == [0, 1, 2]


def test_horizon_after_a_reconnect_starts_a_fill_for_a_quiet_key() -> None:
    seq = KlineSequencer("BTCUSDT", "1m")
    out: list[Kline] = []
    assert seq.on_horizon(T0) is None  # not anchored: nothing to compare with
    seq.on_kline(kl(0), out)
    assert seq.on_horizon(T0 + M) is None  # bucket 1 open: nothing missing
    assert seq.on_horizon(T0 + 3 * M) == KlineGap("BTCUSDT", "1m", T0 + M, T0 + 3 * M)


def test_abandon_releases_what_was_held() -> None:
    seq = KlineSequencer("BTCUSDT", "1m", next_open_time=T0)
    out: list[Kline] = []
    seq.on_kline(kl(3), out)
    seq.on_kline(kl(4), out)
    seq.abandon(out)
    assert closed_times(out) == [3, 4]
    assert seq.skipped == 3
    assert not seq.filling


def test_pending_overflow_gives_the_gap_up_rather_than_growing() -> None:
    seq = KlineSequencer("BTCUSDT", "1m", next_open_time=T0, max_pending=3)
    out: list[Kline] = []
    for i in range(2, 6):
        seq.on_kline(kl(i), out)
    assert closed_times(out) == [2, 3, 4, 5]
    assert len(seq.pending) == 0


def test_weekly_and_monthly_keys_step_by_calendar() -> None:
    seq = KlineSequencer("BTCUSDT", "1M")
    jan = 1_767_225_600_000  # 2026-01-01
    feb = 1_769_904_000_000  # 2026-02-01
    mar = 1_772_323_200_000  # 2026-03-01
    d = Decimal(1)

    def month(t: int, closed: bool = True) -> Kline:
        return Kline("x", "BTCUSDT", "1M", t, t, d, d, d, d, d, d, 1, d, d, closed)

    out: list[Kline] = []
    seq.on_kline(month(jan), out)
    assert seq.next_open_time == feb
    assert seq.on_kline(month(mar, closed=False), out) == KlineGap("BTCUSDT", "1M", feb, mar)


@st.composite
def kline_runs(draw: st.DrawFn) -> tuple[list[tuple[str, int]], int, list[int]]:
    """A live stream over ``n`` buckets with drops, duplicates and reconnect gaps, as
    (kind, bucket) steps; plus the REST page size and when fills make progress."""
    n = draw(st.integers(3, 40))
    steps: list[tuple[str, int]] = []
    for i in range(n):
        for _ in range(draw(st.integers(0, 2))):
            steps.append(("open", i))
        steps.append(("closed", i))
    # Drops (disconnects) of random spans, duplicates of random steps.
    for _ in range(draw(st.integers(0, 4))):
        if len(steps) < 3:
            break
        a = draw(st.integers(1, len(steps) - 1))
        b = draw(st.integers(a, min(len(steps), a + 15)))
        del steps[a:b]
    for _ in range(draw(st.integers(0, 4))):
        j = draw(st.integers(0, len(steps) - 1))
        steps.insert(j + 1, steps[j])
    page = draw(st.integers(1, 7))
    progress = draw(st.lists(st.integers(0, len(steps)), max_size=30))
    return steps, page, progress


@settings(max_examples=300, deadline=None)
@given(kline_runs())
def test_property_closed_klines_come_out_once_in_order_without_gap(
    run: tuple[list[tuple[str, int]], int, list[int]],
) -> None:
    steps, page_size, progress = run
    seq = KlineSequencer("BTCUSDT", "1m")
    out: list[Kline] = []
    current = -1  # the exchange's open bucket, as far as the stream has shown

    def rest_page() -> None:
        gap = seq.gap()
        if gap is None:
            return
        rows = []
        for t in range(gap.start, gap.end, M):
            i = (t - T0) // M
            if i > current:
                break
            rows.append(kl(i, closed=i < current, source="rest"))
            if len(rows) == page_size:
                break
        seq.on_page(rows, out, complete=len(rows) < page_size)

    for j, (kind, i) in enumerate(steps):
        current = max(current, i)
        seq.on_kline(kl(i, closed=kind == "closed"), out)
        for _ in range(progress.count(j)):
            rest_page()
    for _ in range(1000):
        if seq.gap() is None:
            break
        current = max(current, (seq.gap().end - T0) // M)  # type: ignore[union-attr]
        rest_page()
    assert seq.gap() is None
    times = closed_times(out)
    assert times == sorted(set(times))
    first = steps[0][1]
    last_closed = max((i for kind, i in steps if kind == "closed"), default=None)
    if last_closed is not None and last_closed >= first:
        assert times == list(range(first, times[-1] + 1))
        assert times[-1] >= last_closed
    assert seq.skipped == 0


# ---- trades ---------------------------------------------------------------------------------


def ids(out: list[Trade]) -> list[int]:
    return [t.id for t in out]


def test_trade_gap_is_filled_from_rest_before_what_was_held() -> None:
    seq = TradeSequencer("BTCUSDT")
    out: list[Trade] = []
    seq.on_trade(tr(10), out)
    assert seq.on_trade(tr(14), out) == TradeGap("BTCUSDT", 11, 14)
    seq.on_trade(tr(15), out)
    seq.on_trade(tr(15), out)  # duplicate
    seq.on_page([tr(i, "rest") for i in range(11, 16)], out, complete=False)
    assert ids(out) == [10, 11, 12, 13, 14, 15]
    assert [t.source for t in out] == ["ws", "rest", "rest", "rest", "ws", "ws"]
    assert seq.in_sync
    assert seq.duplicates >= 1


def test_catch_up_after_reconnect_is_open_ended_until_a_live_trade_bounds_it() -> None:
    seq = TradeSequencer("BTCUSDT", next_id=100)
    out: list[Trade] = []
    assert seq.catch_up() == TradeGap("BTCUSDT", 100, None)
    assert seq.catch_up() is None  # already filling
    seq.on_page([tr(100), tr(101)], out, complete=False)
    seq.on_trade(tr(105), out)  # live trade arrives meanwhile
    assert seq.gap() == TradeGap("BTCUSDT", 102, 105)
    seq.on_page([tr(i) for i in range(102, 106)], out, complete=True)
    assert ids(out) == list(range(100, 106))
    assert seq.in_sync


def test_catch_up_with_nothing_missed_ends_at_the_short_page() -> None:
    seq = TradeSequencer("BTCUSDT", next_id=7)
    out: list[Trade] = []
    seq.catch_up()
    seq.on_page([], out, complete=True)
    assert out == [] and seq.in_sync and seq.next_id == 7


def test_time_anchored_fill_starts_from_the_first_trade_after_the_anchor() -> None:
    seq = TradeSequencer("BTCUSDT", anchor_time=T0 + 50)
    out: list[Trade] = []
    assert seq.on_trade(tr(80), out) == TradeGap("BTCUSDT", None, 80, T0 + 50)
    seq.on_page([tr(i) for i in range(40, 60)], out, complete=False)  # 40..49 are too old
    assert seq.gap() == TradeGap("BTCUSDT", 60, 80)
    seq.on_page([tr(i) for i in range(60, 90)], out, complete=False)
    assert ids(out) == list(range(50, 81))


def test_abandoned_trade_gap_releases_the_held_trades() -> None:
    seq = TradeSequencer("BTCUSDT", next_id=1)
    out: list[Trade] = []
    seq.on_trade(tr(5), out)
    seq.abandon(out)
    assert ids(out) == [5] and seq.skipped == 4 and seq.in_sync


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(2, 60),
    drops=st.lists(st.tuples(st.integers(0, 59), st.integers(1, 12)), max_size=5),
    dups=st.lists(st.integers(0, 59), max_size=5),
    page=st.integers(1, 9),
    reconnects=st.lists(st.integers(0, 60), max_size=4),
)
def test_property_trade_ids_come_out_once_in_order_without_gap(
    n: int,
    drops: list[tuple[int, int]],
    dups: list[int],
    page: int,
    reconnects: list[int],
) -> None:
    live = list(range(n))
    for start, length in drops:
        live = [i for i in live if not (start <= i < start + length)] or live[:1]
    for d in dups:
        if d in live:
            live.insert(live.index(d), d)
    seq = TradeSequencer("BTCUSDT")
    out: list[Trade] = []
    exchange_now = -1

    def run_page() -> None:
        gap = seq.gap()
        if gap is None or gap.from_id is None:
            return
        rows = [tr(i, "rest") for i in range(gap.from_id, exchange_now + 1)][:page]
        seq.on_page(rows, out, complete=len(rows) < page)

    for step, i in enumerate(live):
        exchange_now = max(exchange_now, i)
        if step in reconnects:
            seq.catch_up()
        seq.on_trade(tr(i), out)
        run_page()
    for _ in range(1000):
        if seq.gap() is None:
            break
        run_page()
    got = ids(out)
    assert got == list(range(live[0], live[0] + len(got)))
    assert got[-1] == max(live)
