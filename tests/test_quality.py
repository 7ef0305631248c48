"""QualityBoard: the ceiling table, immediate drops, gradual recovery only in tick(),
mismatches, changing stream sets, unknown names ignored, and the invariants under random use."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from trio_feed.core.quality import QualityBoard, QualityUpdate, stream_ceiling

SYM = "BTCUSDT"
STREAMS = [f"btcusdt@{c}" for c in ("aggTrade", "bookTicker", "depth@100ms", "kline_1m")]
AGG, BOOK, DEPTH, KLINE = STREAMS


def board_with(streams: list[str] = STREAMS, now: float = 0.0, **kw: float) -> QualityBoard:
    board = QualityBoard(**kw)
    board.track(SYM, streams, now)
    return board


# -- the ceiling ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("streams", "missing", "ceiling"),
    [
        (4, 0, 1.0),
        (4, 1, 0.9),
        (4, 2, 0.8),
        (4, 3, 0.7),
        (4, 4, 0.2),
        (1, 1, 0.2),
        (2, 1, 0.9),
        (10, 7, 0.3),
        (10, 8, 0.3),
        (10, 9, 0.3),
        (10, 10, 0.2),
        (0, 0, 1.0),
    ],
)
def test_stream_ceiling_table(streams: int, missing: int, ceiling: float) -> None:
    assert stream_ceiling(streams, missing) == ceiling


def test_seed_table_one_two_three_then_all_missing() -> None:
    board = board_with()
    seen = []
    for i, stream in enumerate(STREAMS):
        update = board.set_missing(SYM, stream, True, "stale", now=float(i))
        assert update is not None
        seen.append(update.score)
        assert update.reason == f"stream missing: {stream} (stale)"
        assert board.score(SYM) == update.score
        assert board.reason(SYM) == update.reason
    assert seen == [0.9, 0.8, 0.7, 0.2]
    assert board.missing(SYM) == tuple(sorted(STREAMS))


def test_a_single_stream_missing_is_all_of_them() -> None:
    board = board_with([AGG])
    assert board.set_missing(SYM, AGG, True, "stale", 0.0) == QualityUpdate(
        SYM, 0.2, "stream missing: btcusdt@aggTrade (stale)"
    )


def test_new_symbols_start_at_one() -> None:
    board = board_with()
    assert board.score(SYM) == 1.0
    assert board.reason(SYM) == "initial"
    assert board.missing(SYM) == ()
    assert board.symbols() == [SYM]
    assert board.streams(SYM) == tuple(sorted(STREAMS))
    assert board.tick(100.0) == []  # nothing to recover


def test_unknown_symbol_reads_raise() -> None:
    board = QualityBoard()
    with pytest.raises(KeyError):
        board.score("NOPE")
    with pytest.raises(KeyError):
        board.reason("NOPE")
    with pytest.raises(KeyError):
        board.missing("NOPE")


@pytest.mark.parametrize("kwargs", [{"mismatch_penalty": -0.1}, {"recovery_per_second": -1.0}])
def test_rejects_bad_numbers(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        QualityBoard(**kwargs)


# -- drops and the reasons ------------------------------------------------------------------


def test_marking_twice_changes_nothing() -> None:
    board = board_with()
    assert board.set_missing(SYM, AGG, True, "stale", 0.0) is not None
    assert board.set_missing(SYM, AGG, True, "stale", 1.0) is None
    assert board.score(SYM) == 0.9
    assert board.set_missing(SYM, BOOK, False, "", 1.0) is None  # was not missing


def test_unknown_symbols_and_streams_are_ignored() -> None:
    board = board_with()
    assert board.set_missing("ETHUSDT", "ethusdt@aggTrade", True, "stale", 0.0) is None
    assert board.mismatch("ETHUSDT", "kline 1m @0: close: 1 != 2", 0.0) is None
    assert board.set_missing(SYM, "btcusdt@markPrice@1s", True, "stale", 0.0) is None
    assert board.score(SYM) == 1.0
    assert board.missing(SYM) == ()
    board.untrack("ETHUSDT")  # no error either


def test_several_streams_at_once_give_one_update() -> None:
    board = board_with()
    update = board.set_missing_streams(
        SYM, [KLINE, AGG], True, "connection lost: binance-usdm/market/0", 5.0
    )
    assert update == QualityUpdate(
        SYM,
        0.8,
        "streams missing: btcusdt@aggTrade, btcusdt@kline_1m "
        "(connection lost: binance-usdm/market/0)",
    )


def test_a_drop_below_the_ceiling_already_is_no_update() -> None:
    board = board_with(mismatch_penalty=0.5)
    assert board.mismatch(SYM, "x", 0.0) is not None
    assert board.score(SYM) == 0.5
    assert board.set_missing(SYM, AGG, True, "stale", 1.0) is None  # ceiling 0.9 > 0.5
    assert board.missing(SYM) == (AGG,)
    assert board.reason(SYM) == "REST mismatch: x"


def test_a_drop_without_why_has_no_brackets() -> None:
    board = board_with()
    update = board.set_missing(SYM, AGG, True, "", 0.0)
    assert update is not None
    assert update.reason == "stream missing: btcusdt@aggTrade"


# -- recovery -------------------------------------------------------------------------------


def test_recovery_is_gradual_and_exact() -> None:
    board = board_with()
    board.set_missing_streams(SYM, STREAMS, True, "connection lost: c0", 0.0)
    assert board.score(SYM) == 0.2
    assert board.tick(30.0) == []  # at the ceiling: nothing earned while all are missing
    board.set_missing_streams(SYM, STREAMS, False, "", 50.0)
    assert board.score(SYM) == 0.2  # coming back raises the ceiling, not the score
    assert (
        board.reason(SYM)
        == "streams missing: " + ", ".join(sorted(STREAMS)) + " (connection lost: c0)"
    )
    assert board.tick(100.0) == [
        QualityUpdate(SYM, 0.3, "streams delivering again: " + ", ".join(sorted(STREAMS)))
    ]
    assert board.tick(150.0) == [QualityUpdate(SYM, 0.4, "recovering")]
    assert board.tick(151.0) == [QualityUpdate(SYM, 0.402, "recovering")]
    assert board.tick(151.0) == []  # no time passed
    assert board.tick(450.0) == [QualityUpdate(SYM, 1.0, "recovering")]  # 0.402 + 0.598
    assert board.tick(1000.0) == []


def test_twenty_to_one_takes_four_hundred_seconds() -> None:
    board = board_with([AGG])
    board.set_missing(SYM, AGG, True, "stale", 0.0)
    board.set_missing(SYM, AGG, False, "", 0.0)
    scores = [u.score for t in range(50, 451, 50) for u in board.tick(float(t))]
    assert scores == [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def test_slow_ticks_below_the_rounding_still_add_up() -> None:
    board = board_with([AGG])
    board.set_missing(SYM, AGG, True, "stale", 0.0)
    board.set_missing(SYM, AGG, False, "", 0.0)
    updates: list[QualityUpdate] = []
    for i in range(1, 1001):  # 0.01 s apart: each step is 0.00002, under the rounding
        updates += board.tick(i / 100)
    assert board.score(SYM) == 0.22  # 10 s at 0.002/s
    assert len(updates) == 200  # one per 0.0001
    assert updates[0].reason.startswith("streams delivering again")
    assert {u.reason for u in updates[1:]} == {"recovering"}


def test_recovery_never_passes_the_ceiling() -> None:
    board = board_with()
    board.set_missing_streams(SYM, [AGG, BOOK], True, "stale", 0.0)  # 0.8
    board.mismatch(SYM, "kline 1m @0: close: 1 != 2", 0.0)  # 0.75
    assert board.score(SYM) == 0.75
    assert board.tick(10.0) == [QualityUpdate(SYM, 0.77, "recovering")]
    assert board.tick(1000.0) == [QualityUpdate(SYM, 0.8, "recovering")]  # capped at 0.8
    assert board.ceiling(SYM) == 0.8
    board.set_missing(SYM, BOOK, False, "", 1000.0)  # ceiling 0.9
    assert board.tick(1025.0) == [
        QualityUpdate(SYM, 0.85, "streams delivering again: btcusdt@bookTicker")
    ]
    assert board.tick(5000.0) == [QualityUpdate(SYM, 0.9, "recovering")]


def test_recovery_counts_from_the_return_not_the_last_tick() -> None:
    board = board_with([AGG, BOOK])
    board.set_missing(SYM, AGG, True, "stale", 0.0)  # 0.9
    assert board.tick(100.0) == []
    board.set_missing(SYM, AGG, False, "", 110.0)
    assert board.tick(130.0) == [
        QualityUpdate(SYM, 0.94, "streams delivering again: btcusdt@aggTrade")
    ]  # 20 s since it came back, not 30 since the tick


def test_a_flapping_stream_cannot_bounce_back() -> None:
    board = board_with([AGG, BOOK])
    for t in range(0, 100, 10):  # missing for 5 s of every 10, ticks in between
        board.set_missing(SYM, AGG, True, "stale", float(t))
        board.set_missing(SYM, AGG, False, "", t + 5.0)
        board.tick(t + 9.0)
    assert board.score(SYM) < 0.91  # 0.9 + at most 4 s of recovery each time
    assert board.score(SYM) == pytest.approx(0.9 + 0.002 * 4, abs=1e-4)


def test_present_again_remembers_the_reason_until_the_score_rises() -> None:
    board = board_with()
    board.set_missing(SYM, AGG, True, "stale", 0.0)
    board.set_missing(SYM, BOOK, True, "stale", 0.0)  # 0.8
    assert board.set_missing(SYM, AGG, False, "", 0.0) is None
    assert board.set_missing(SYM, BOOK, False, "", 0.0) is None
    assert board.reason(SYM) == "stream missing: btcusdt@bookTicker (stale)"
    assert board.tick(50.0) == [
        QualityUpdate(SYM, 0.9, "streams delivering again: btcusdt@aggTrade, btcusdt@bookTicker")
    ]
    assert board.reason(SYM).startswith("streams delivering again")


def test_a_stream_that_goes_missing_again_leaves_the_returning_list() -> None:
    board = board_with()
    board.set_missing_streams(SYM, [AGG, BOOK], True, "stale", 0.0)  # 0.8
    board.set_missing_streams(SYM, [AGG, BOOK], False, "", 1.0)
    update = board.set_missing(SYM, AGG, True, "stale", 2.0)  # ceiling 0.9: no drop
    assert update is None
    assert board.tick(26.0) == [
        QualityUpdate(SYM, 0.85, "streams delivering again: btcusdt@bookTicker")
    ]


# -- mismatches -----------------------------------------------------------------------------


def test_mismatch_lowers_at_once_and_floors_at_zero() -> None:
    board = board_with(mismatch_penalty=0.3)
    what = "kline 1m @1767225600000: close: 1 != 2"
    assert board.mismatch(SYM, what, 0.0) == QualityUpdate(SYM, 0.7, f"REST mismatch: {what}")
    assert board.mismatch(SYM, what, 0.0) == QualityUpdate(SYM, 0.4, f"REST mismatch: {what}")
    assert board.mismatch(SYM, what, 0.0) == QualityUpdate(SYM, 0.1, f"REST mismatch: {what}")
    assert board.mismatch(SYM, what, 0.0) == QualityUpdate(SYM, 0.0, f"REST mismatch: {what}")
    assert board.mismatch(SYM, what, 0.0) is None  # already 0
    assert board.score(SYM) == 0.0


def test_default_mismatch_penalty_and_recovery() -> None:
    board = board_with()
    update = board.mismatch(SYM, "book: bid 1 != 2", 0.0)
    assert update == QualityUpdate(SYM, 0.95, "REST mismatch: book: bid 1 != 2")
    assert board.tick(25.0) == [QualityUpdate(SYM, 1.0, "recovering")]


def test_time_before_a_mismatch_still_counts() -> None:
    board = board_with(mismatch_penalty=0.5)
    board.mismatch(SYM, "a", 0.0)  # 0.5
    board.mismatch(SYM, "b", 10.0)  # 0.02 earned first, not yet applied: 0.0 shown
    assert board.score(SYM) == 0.0
    assert board.tick(30.0) == [QualityUpdate(SYM, 0.06, "recovering")]


def test_the_docstring_example_of_a_mismatch_between_ticks() -> None:
    board = board_with([AGG, BOOK])
    board.set_missing_streams(SYM, [AGG, BOOK], True, "stale", 0.0)
    board.set_missing_streams(SYM, [AGG, BOOK], False, "", 0.0)
    assert board.tick(0.0) == []
    assert board.mismatch(SYM, "x", 10.0) == QualityUpdate(SYM, 0.15, "REST mismatch: x")
    assert board.tick(30.0) == [
        QualityUpdate(SYM, 0.21, "streams delivering again: btcusdt@aggTrade, btcusdt@bookTicker")
    ]  # 0.2 + 0.02 - 0.05 + 0.04


# -- changing the stream set ---------------------------------------------------------------


def test_track_forgets_missing_streams_that_left_the_set() -> None:
    board = board_with()
    board.set_missing_streams(SYM, [AGG, BOOK], True, "stale", 0.0)  # 0.8
    board.track(SYM, [BOOK, DEPTH, KLINE], 10.0)  # aggTrade unsubscribed
    assert board.missing(SYM) == (BOOK,)
    assert board.ceiling(SYM) == 0.9
    assert board.score(SYM) == 0.8  # the ceiling rose; the score climbs from here
    assert board.tick(35.0) == [QualityUpdate(SYM, 0.85, "recovering")]
    board.track(SYM, [BOOK, DEPTH, KLINE, AGG, "btcusdt@markPrice@1s"], 35.0)
    assert board.missing(SYM) == (BOOK,)  # new streams start present
    assert board.ceiling(SYM) == 0.9


def test_track_removing_the_delivering_streams_drops_and_the_next_tick_reports_it() -> None:
    board = board_with([AGG, BOOK])
    board.set_missing(SYM, AGG, True, "stale", 0.0)  # 0.9
    board.track(SYM, [AGG], 5.0)  # only the missing one is left: all missing
    assert board.score(SYM) == 0.2
    assert board.reason(SYM) == "stream set changed; missing: btcusdt@aggTrade"
    assert board.tick(6.0) == [
        QualityUpdate(SYM, 0.2, "stream set changed; missing: btcusdt@aggTrade")
    ]
    assert board.tick(100.0) == []


def test_track_twice_keeps_the_score() -> None:
    board = board_with()
    board.mismatch(SYM, "x", 0.0)
    board.track(SYM, STREAMS, 0.0)
    assert board.score(SYM) == 0.95


def test_untrack_and_symbols_in_order() -> None:
    board = QualityBoard()
    for symbol in ("ETHUSDT", "BTCUSDT", "SOLUSDT"):
        board.track(symbol, [f"{symbol.lower()}@aggTrade"], 0.0)
    assert board.symbols() == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    board.untrack("ETHUSDT")
    assert board.symbols() == ["BTCUSDT", "SOLUSDT"]
    with pytest.raises(KeyError):
        board.score("ETHUSDT")
    for symbol in ("SOLUSDT", "BTCUSDT"):
        board.mismatch(symbol, "x", 0.0)
    assert [u.symbol for u in board.tick(10.0)] == ["BTCUSDT", "SOLUSDT"]


def test_time_going_backwards_earns_nothing() -> None:
    board = board_with([AGG])
    board.mismatch(SYM, "x", 100.0)
    assert board.tick(50.0) == []
    assert board.tick(110.0) == [QualityUpdate(SYM, 0.97, "recovering")]


# -- invariants -----------------------------------------------------------------------------

ops = st.lists(
    st.tuples(
        st.sampled_from(["missing", "present", "mismatch", "tick", "track"]),
        st.sets(st.sampled_from(STREAMS), min_size=1),
        st.floats(min_value=0.0, max_value=120.0),
    ),
    max_size=60,
)


@given(ops)
def test_score_stays_in_range_and_below_the_ceiling_and_tick_never_lowers_it(
    steps: list[tuple[str, set[str], float]],
) -> None:
    board = board_with()
    now = last_tick = 0.0
    for op, streams, dt in steps:
        now += dt
        before = board.score(SYM)
        updates: list[QualityUpdate | None]
        if op == "missing":
            updates = [board.set_missing_streams(SYM, streams, True, "stale", now)]
        elif op == "present":
            updates = [board.set_missing(SYM, s, False, "", now) for s in sorted(streams)]
            assert updates == [None] * len(updates)
            assert board.score(SYM) == before  # coming back never raises the score
        elif op == "mismatch":
            updates = [board.mismatch(SYM, "x", now)]
            assert board.score(SYM) <= before
        elif op == "tick":
            updates = list(board.tick(now))
            assert board.score(SYM) >= before
            # never more than the recovery rate allows since the previous tick
            assert board.score(SYM) <= before + 0.002 * (now - last_tick) + 1e-4
            last_tick = now
        else:
            board.track(SYM, streams, now)
            updates = []
        score = board.score(SYM)
        assert 0.0 <= score <= 1.0
        assert score <= board.ceiling(SYM)
        assert round(score, 4) == score
        for update in updates:
            if update is not None:
                assert update.score == score
                assert update.reason
    # Given time and every stream back, the score returns to 1.0.
    board.track(SYM, STREAMS, now)
    board.set_missing_streams(SYM, STREAMS, False, "", now)
    board.tick(now + 500.0)
    assert board.score(SYM) == 1.0
