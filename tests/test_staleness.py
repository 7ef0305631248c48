"""StalenessMonitor: continuous streams by the timeout, activity streams by their own pace or
by evidence that the market traded, restarts, and no false alarm on a stream that keeps up."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from trio_feed.core.staleness import StalenessMonitor, StreamActivity, StreamKind, stream_kind

A, C = StreamKind.ACTIVITY, StreamKind.CONTINUOUS
TRADES = "btcusdt@aggTrade"
KLINES = "btcusdt@kline_1m"


def feed(activity: StreamActivity, messages: int = 1) -> None:
    """What the connection reader does per message."""
    activity.count += messages


@pytest.mark.parametrize(
    ("channel", "kind"),
    [
        ("aggTrade", A),
        ("bookTicker", A),
        ("kline_1m", C),
        ("continuousKline_5m", C),
        ("depth", C),
        ("markPrice", C),
        ("btcusdt@aggTrade", A),
        ("btcusdt@bookTicker", A),
        ("btcusdt@depth@100ms", C),
        ("btcusdt@markPrice@1s", C),
        ("btcusdt_perpetual@continuousKline_1m", C),
    ],
)
def test_stream_kind(channel: str, kind: StreamKind) -> None:
    assert stream_kind(channel) is kind


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout": 0.0},
        {"timeout": 60.0, "quiet_factor": 0.0},
        {"timeout": 60.0, "max_quiet_factor": 0.5},
        {"timeout": 60.0, "activity_grace": -1.0},
        {"timeout": 60.0, "alpha": 0.0},
        {"timeout": 60.0, "alpha": 1.5},
    ],
)
def test_rejects_bad_numbers(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        StalenessMonitor(**kwargs)  # type: ignore[arg-type]


def test_stream_activity_has_slots_and_starts_empty() -> None:
    activity = StreamActivity()
    assert (activity.count, activity.last) == (0, None)
    with pytest.raises(AttributeError):
        activity.other = 1  # type: ignore[attr-defined]
    assert repr(activity) == "StreamActivity(count=0, last=None)"


# -- continuous streams -----------------------------------------------------------------------


def test_continuous_stream_is_stale_after_the_timeout_not_before() -> None:
    monitor = StalenessMonitor(60.0)
    activity = monitor.watch(KLINES, "BTCUSDT", C, now=100.0)
    assert monitor.check(130.0) == []
    assert monitor.silence(KLINES, 130.0) == 30.0
    assert monitor.check(160.0) == []  # exactly the timeout is not beyond it
    assert monitor.check(160.5) == [KLINES]
    assert monitor.allowed_silence(KLINES) == 60.0
    feed(activity)
    assert monitor.check(161.0) == []  # it spoke: dated to this check
    assert monitor.silence(KLINES, 200.0) == 39.0
    assert monitor.check(221.0) == []
    assert monitor.check(221.5) == [KLINES]


def test_messages_are_dated_to_the_first_look_that_sees_them() -> None:
    monitor = StalenessMonitor(60.0)
    activity = monitor.watch(KLINES, "BTCUSDT", C, now=0.0)
    feed(activity, 3)
    assert activity.last is None  # the reader reads no clock
    assert monitor.silence(KLINES, 20.0) == 0.0
    assert activity.last == 20.0
    assert monitor.check(50.0) == []
    assert monitor.silence(KLINES, 50.0) == 30.0


def test_a_reader_may_date_messages_itself() -> None:
    monitor = StalenessMonitor(60.0)
    activity = monitor.watch(KLINES, "BTCUSDT", C, now=0.0)
    activity.count += 1
    activity.last = 5.0
    assert monitor.silence(KLINES, 50.0) == 45.0
    assert monitor.check(65.5) == [KLINES]  # 60.5 s after the message, not after the look


# -- activity streams -------------------------------------------------------------------------


def test_busy_trade_stream_that_stops_is_stale_after_the_timeout() -> None:
    monitor = StalenessMonitor(60.0)
    activity = monitor.watch(TRADES, "BTCUSDT", A, now=0.0)
    t = 0.0
    while t < 600.0:  # 5 trades a second, checked every 30 s
        t += 30.0
        feed(activity, 150)
        assert monitor.check(t) == []
    rate = monitor.rate(TRADES)
    assert rate == pytest.approx(5.0, rel=0.05)
    assert monitor.allowed_silence(TRADES) == 60.0  # 10 / 5 = 2 s, clamped to the timeout
    # It stops. Checks go on, every 30 s; the silence does not argue for itself.
    assert monitor.check(630.0) == []
    assert monitor.check(660.0) == []  # silent 60 s: not beyond
    assert monitor.check(690.0) == [TRADES]
    assert monitor.rate(TRADES) == rate  # left alone while silent
    assert monitor.stale_reason(TRADES, 690.0) == "silent 90 s, allowed 60 s"


def test_frequent_checks_do_not_change_the_verdict() -> None:
    monitor = StalenessMonitor(60.0)
    activity = monitor.watch(TRADES, "BTCUSDT", A, now=0.0)
    for i in range(1, 601):  # one message a second, checked every second
        feed(activity)
        assert monitor.check(float(i)) == []
    assert monitor.rate(TRADES) == pytest.approx(1.0, rel=0.05)
    stale_at = next(i for i in range(601, 800) if monitor.check(float(i)))
    assert stale_at == 661


def test_illiquid_trade_stream_raises_no_alarm_across_an_hour_of_its_pattern() -> None:
    monitor = StalenessMonitor(60.0)
    activity = monitor.watch(TRADES, "BTCUSDT", A, now=0.0)
    klines = monitor.watch(KLINES, "BTCUSDT", C, now=0.0)
    for second in range(1, 3601):
        feed(klines)  # the kline stream ticks every second, trades or not
        if second % 300 == 0:  # one trade every 5 minutes
            feed(activity)
        if second % 30 == 0:
            assert monitor.check(float(second)) == [], second
    rate = monitor.rate(TRADES)
    assert rate is not None
    assert rate == pytest.approx(1 / 300, rel=0.2)
    assert monitor.allowed_silence(TRADES) == 1800.0  # 10 / (1/300), clamped to 30 x 60


def test_an_activity_stream_that_never_spoke_gets_the_longest_allowance() -> None:
    monitor = StalenessMonitor(60.0)
    monitor.watch(TRADES, "BTCUSDT", A, now=0.0)
    assert monitor.rate(TRADES) is None
    assert monitor.allowed_silence(TRADES) == 1800.0
    assert monitor.check(1800.0) == []
    assert monitor.check(1800.5) == [TRADES]


def test_allowed_silence_follows_the_rate() -> None:
    monitor = StalenessMonitor(60.0)
    activity = monitor.watch(TRADES, "BTCUSDT", A, now=0.0)
    feed(activity, 12)
    monitor.check(120.0)  # the first estimate: 12 in 120 s = 0.1/s
    assert monitor.rate(TRADES) == pytest.approx(0.1)
    assert monitor.allowed_silence(TRADES) == pytest.approx(100.0)
    assert monitor.check(220.0) == []
    assert monitor.check(220.5) == [TRADES]


def test_the_first_estimate_spreads_over_at_least_the_timeout() -> None:
    monitor = StalenessMonitor(60.0)
    activity = monitor.watch(TRADES, "BTCUSDT", A, now=0.0)
    feed(activity)  # one trade right after subscribing
    monitor.check(10.0)
    assert monitor.rate(TRADES) == pytest.approx(1 / 60)  # not 1 / 10
    assert monitor.allowed_silence(TRADES) == pytest.approx(600.0)


def test_the_rate_learns_a_market_that_turned_quiet() -> None:
    monitor = StalenessMonitor(60.0)
    activity = monitor.watch(TRADES, "BTCUSDT", A, now=0.0)
    for t in range(30, 601, 30):  # busy: 2 a second
        feed(activity, 60)
        monitor.check(float(t))
    alarms = []
    t = 600
    for _ in range(6):  # then a trade every 10 minutes
        alarms.append(0)
        for _ in range(20):
            t += 30
            alarms[-1] += bool(monitor.check(float(t)))
        feed(activity)
    assert monitor.check(float(t)) == []
    assert monitor.allowed_silence(TRADES) > 600.0
    # Stale in the first silences (the stream had been busy), quiet once the pace is learned.
    assert alarms[0] > 0
    assert alarms[2:] == [0, 0, 0, 0]


def test_illiquid_stream_with_evidence_of_trading_is_stale_after_the_timeout() -> None:
    monitor = StalenessMonitor(60.0)
    activity = monitor.watch(TRADES, "BTCUSDT", A, now=0.0)
    feed(activity)
    assert monitor.check(0.0) == []  # its only message, dated 0
    monitor.market_activity("BTCUSDT", 40.0)  # the kline stream counted more trades
    assert monitor.check(59.0) == []  # not yet beyond the timeout
    assert monitor.check(60.5) == [TRADES]
    assert monitor.stale_reason(TRADES, 60.5) == "silent 60 s while BTCUSDT traded"


def test_evidence_within_the_grace_of_the_last_message_is_not_enough() -> None:
    monitor = StalenessMonitor(60.0, activity_grace=5.0)
    activity = monitor.watch(TRADES, "BTCUSDT", A, now=0.0)
    feed(activity)
    monitor.check(10.0)  # dated 10
    monitor.market_activity("BTCUSDT", 15.0)  # the same trades, seen by the kline stream
    assert monitor.check(100.0) == []
    monitor.market_activity("BTCUSDT", 15.5)
    assert monitor.check(100.0) == [TRADES]
    monitor.market_activity("BTCUSDT", 1.0)  # older evidence does not replace newer
    assert monitor.check(100.0) == [TRADES]


def test_evidence_counts_for_its_own_symbol_only() -> None:
    monitor = StalenessMonitor(60.0)
    monitor.watch(TRADES, "BTCUSDT", A, now=0.0)
    monitor.watch("ethusdt@aggTrade", "ETHUSDT", A, now=0.0)
    monitor.market_activity("ETHUSDT", 30.0)
    assert monitor.check(100.0) == ["ethusdt@aggTrade"]


# -- watch, unwatch ---------------------------------------------------------------------------


def test_watch_again_resets_the_silence_and_keeps_the_counters_object() -> None:
    monitor = StalenessMonitor(60.0)
    activity = monitor.watch(KLINES, "BTCUSDT", C, now=0.0)
    feed(activity, 5)
    assert monitor.check(100.0) == []
    assert monitor.check(170.0) == [KLINES]
    again = monitor.watch(KLINES, "BTCUSDT", C, now=170.0)  # reconnected
    assert again is activity
    assert (activity.count, activity.last) == (0, None)
    assert monitor.silence(KLINES, 200.0) == 30.0
    assert monitor.check(230.0) == []
    assert monitor.check(230.5) == [KLINES]


def test_watch_again_keeps_the_learned_rate_unless_the_kind_changes() -> None:
    monitor = StalenessMonitor(60.0)
    activity = monitor.watch(TRADES, "BTCUSDT", A, now=0.0)
    feed(activity, 6)
    monitor.check(60.0)
    assert monitor.rate(TRADES) == pytest.approx(0.1)
    monitor.watch(TRADES, "BTCUSDT", A, now=60.0)
    assert monitor.rate(TRADES) == pytest.approx(0.1)
    monitor.watch(TRADES, "BTCUSDT", C, now=60.0)
    assert monitor.rate(TRADES) is None
    assert monitor.kind(TRADES) is C


def test_evidence_before_a_restart_does_not_count() -> None:
    monitor = StalenessMonitor(60.0)
    monitor.watch(TRADES, "BTCUSDT", A, now=0.0)
    monitor.market_activity("BTCUSDT", 50.0)
    monitor.watch(TRADES, "BTCUSDT", A, now=100.0)  # resubscribed at 100
    assert monitor.check(170.0) == []


def test_unwatch_and_listing() -> None:
    monitor = StalenessMonitor(60.0)
    monitor.watch(TRADES, "BTCUSDT", A, now=0.0)
    monitor.watch(KLINES, "BTCUSDT", C, now=0.0)
    assert monitor.streams() == [TRADES, KLINES]
    assert monitor.check(2000.0) == [TRADES, KLINES]  # sorted
    monitor.unwatch(KLINES)
    monitor.unwatch("nope@aggTrade")  # no error
    assert monitor.streams() == [TRADES]
    assert monitor.activity(KLINES) is None
    assert monitor.activity(TRADES) is not None
    assert monitor.check(2000.0) == [TRADES]
    with pytest.raises(KeyError):
        monitor.silence(KLINES, 0.0)
    with pytest.raises(KeyError):
        monitor.allowed_silence(KLINES)


def test_a_counter_reset_by_someone_else_does_not_break_the_rate() -> None:
    monitor = StalenessMonitor(60.0)
    activity = monitor.watch(TRADES, "BTCUSDT", A, now=0.0)
    feed(activity, 10)
    monitor.check(60.0)
    activity.count = 0
    assert monitor.check(90.0) == []
    feed(activity, 3)
    monitor.check(120.0)
    rate = monitor.rate(TRADES)
    assert rate is not None
    assert rate > 0


# -- no false alarms --------------------------------------------------------------------------

gaps = st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=60)


@given(
    gaps,
    st.lists(st.floats(min_value=0.1, max_value=90.0), min_size=1, max_size=80),
    st.sampled_from([A, C]),
    st.booleans(),
    st.lists(st.floats(min_value=0.0, max_value=200.0), max_size=10),
)
def test_a_stream_with_a_message_at_least_every_timeout_is_never_stale(
    message_gaps: list[float],
    check_gaps: list[float],
    kind: StreamKind,
    reader_dates: bool,
    evidence: list[float],
) -> None:
    timeout = 60.0
    monitor = StalenessMonitor(timeout)
    activity = monitor.watch(TRADES, "BTCUSDT", kind, now=0.0)
    messages, t = [], 0.0
    for fraction in message_gaps:  # every gap at most the timeout, the first one too
        t += fraction * timeout
        messages.append(t)
    end = messages[-1] + timeout  # silent for at most the timeout after the last one
    checks, t = [], 0.0
    for gap in check_gaps:
        t += gap
        if t > end:
            break
        checks.append(t)
    for when in evidence:
        monitor.market_activity("BTCUSDT", when)
    pending = list(messages)
    for now in checks:
        while pending and pending[0] <= now:  # messages up to now have arrived
            activity.count += 1
            if reader_dates:
                activity.last = pending[0]
            pending.pop(0)
        assert monitor.check(now) == []
        assert monitor.silence(TRADES, now) <= timeout
