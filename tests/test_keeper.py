"""VenueData: routing, restart anchors, built klines, reconciliation and changing
subscriptions (`DataKeys`, `reconfigure`), without I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trio_feed.core.keeper import DataKeys, ResumePoint, VenueData, kline_mismatches
from trio_feed.core.sequence import KlineGap, TradeGap
from trio_feed.events import BookTicker, DepthDiff, Kline, Reconcile, Trade

M = 60_000
T0 = 1_767_225_600_000
D = Decimal


def kl(
    i: int, *, closed: bool = True, close: str = "100", volume: str = "5", **kw: object
) -> Kline:
    t = T0 + i * M
    c = D(close)
    fields: dict[str, object] = {
        "exchange": "x",
        "symbol": "BTCUSDT",
        "interval": "1m",
        "open_time": t,
        "close_time": t + M - 1,
        "open": c,
        "high": max(c, D(100)),
        "low": min(c, D(100)),
        "close": c,
        "volume": D(volume),
        "quote_volume": D(0),
        "trades": 1,
        "taker_buy_volume": D(0),
        "taker_buy_quote_volume": D(0),
        "closed": closed,
    }
    fields.update(kw)
    return Kline(**fields)  # type: ignore[arg-type]


def tr(i: int, time: int, price: str = "100", symbol: str = "BTCUSDT") -> Trade:
    return Trade("x", symbol, i, D(price), D(1), i, i, time, False)


def data(**kw: object) -> VenueData:
    args: dict[str, object] = {
        "kline_keys": [("BTCUSDT", "1m")],
        "built": {},
        "trade_symbols": ["BTCUSDT"],
        "published_trades": ["BTCUSDT"],
    }
    args.update(kw)
    return VenueData("x", **args)  # type: ignore[arg-type]


def test_process_sequences_klines_and_trades_and_passes_the_rest() -> None:
    vd = data()
    ticker = BookTicker("x", "BTCUSDT", D(1), D(1), D(2), D(1), 1, T0)
    diff = DepthDiff("x", "BTCUSDT", 1, 2, 0, T0, (), ())
    out: list[object] = []
    gaps = vd.process([kl(0), ticker, diff, tr(10, T0), tr(11, T0 + 1), kl(0)], out)
    assert gaps is None
    assert out == [kl(0), ticker, tr(10, T0), tr(11, T0 + 1)]  # duplicate kline dropped
    assert vd.depth_diffs == 1  # counted, never passed on raw
    assert vd.klines.last_closed("BTCUSDT", "1m") == kl(0)
    assert [t.id for t in vd.trades.trades("BTCUSDT")] == [10, 11]
    gaps = vd.process([kl(3, closed=False), tr(15, T0 + 5)], out)
    assert gaps == [
        KlineGap("BTCUSDT", "1m", T0 + M, T0 + 3 * M),
        TradeGap("BTCUSDT", 12, 15),
    ]


def test_trades_only_feeding_builders_are_not_published() -> None:
    vd = data(kline_keys=[], built={"BTCUSDT": ["1s"]}, published_trades=[])
    out: list[object] = []
    vd.process([tr(1, T0 + 100), tr(2, T0 + 1500)], out)
    assert [type(e).__name__ for e in out] == ["Kline"]  # the first second closed
    (k,) = out
    assert isinstance(k, Kline) and (k.interval, k.source, k.close) == ("1s", "trades", D(100))


def test_a_restart_anchors_streamed_keys_at_the_stored_kline() -> None:
    vd = data(resume=ResumePoint({("BTCUSDT", "1m"): kl(4)}, {"BTCUSDT": 41}))
    assert vd.klines.last_closed("BTCUSDT", "1m") == kl(4)
    out: list[object] = []
    gaps = vd.process([kl(9, closed=False), tr(50, T0 + 9 * M)], out)
    assert gaps == [
        KlineGap("BTCUSDT", "1m", T0 + 5 * M, T0 + 9 * M),
        TradeGap("BTCUSDT", 42, 50),
    ]


def test_a_restart_rebuilds_built_klines_from_time_and_publishes_only_new_trades() -> None:
    stored = kl(2, interval="1m", source="trades", close="101")
    vd = data(
        kline_keys=[],
        built={"BTCUSDT": ["1m"]},
        resume=ResumePoint({("BTCUSDT", "1m"): stored}, {"BTCUSDT": 20}),
    )
    out: list[object] = []
    # The first live trade starts a fill from the first unfinished bucket's time.
    gaps = vd.process([tr(30, T0 + 5 * M)], out)
    assert gaps == [TradeGap("BTCUSDT", None, 30, T0 + 3 * M)]
    page = [tr(i, T0 + 3 * M + (i - 18) * 1000) for i in range(18, 30)]
    vd.apply_trade_page("BTCUSDT", page, complete=False, out=out)
    published = [e.id for e in out if isinstance(e, Trade)]
    assert published == list(range(21, 31))  # 18..20 went out in the previous run
    built = [e for e in out if isinstance(e, Kline)]
    # Minute 3 rebuilt from its first trade (18 included), minute 4 empty at the last close.
    assert [(k.open_time, k.trades) for k in built] == [(T0 + 3 * M, 12), (T0 + 4 * M, 0)]
    assert built[1].close == built[0].close


def test_tick_closes_quiet_built_buckets_only_while_in_sync() -> None:
    vd = data(kline_keys=[], built={"BTCUSDT": ["1s"]})
    out: list[object] = []
    vd.process([tr(1, T0 + 100)], out)
    vd.tick(T0 + 5000, lambda symbol: False, out)
    assert out == [tr(1, T0 + 100)]  # the stream is down: no guessing
    vd.tick(T0 + 5000, lambda symbol: True, out)
    seconds = [e for e in out if isinstance(e, Kline)]
    # Every trade before the watermark is in: each second ending before it closes.
    assert [k.open_time - T0 for k in seconds] == [0, 1000, 2000, 3000, 4000]
    assert [k.volume for k in seconds] == [D(1), D(0), D(0), D(0), D(0)]


def test_reconcile_revises_a_mismatch_and_ignores_agreement() -> None:
    vd = data()
    out: list[object] = []
    vd.process([kl(0), kl(1)], out)
    out.clear()
    assert (
        vd.reconcile(kl(1, source="rest"), price_tolerance=1e-4, volume_tolerance=0.01, out=out)
        == ()
    )
    assert out == []
    wrong = kl(1, close="100.5", volume="5.2", source="rest")
    found = vd.reconcile(wrong, price_tolerance=1e-4, volume_tolerance=0.01, out=out)
    assert found == ("close: 100 != 100.5", "high: 100 != 100.5", "volume: 5 != 5.2")
    reconcile, revised = out
    assert reconcile == Reconcile("BTCUSDT", "1m", T0 + M, found, "revised")
    assert isinstance(revised, Kline)
    assert (revised.revision, revised.source, revised.close) == (1, "rest", D("100.5"))
    assert vd.klines.get("BTCUSDT", "1m", T0 + M) == revised
    assert vd.mismatches == {"BTCUSDT": 1}
    # Not emitted yet (the sequencer will emit the exchange's version itself): no check.
    assert vd.reconcile(kl(2), price_tolerance=0, volume_tolerance=0, out=out) is None


def test_kline_mismatches_are_relative_to_the_tolerances() -> None:
    ours = kl(0, close="100", volume="10")
    assert (
        kline_mismatches(
            ours, kl(0, close="100.01", volume="10.1"), price_tolerance=1e-4, volume_tolerance=0.01
        )
        == ()
    )
    assert kline_mismatches(
        ours, kl(0, close="100.02", volume="10.2"), price_tolerance=1e-4, volume_tolerance=0.01
    ) == ("close: 100 != 100.02", "high: 100 != 100.02", "volume: 10 != 10.2")
    assert (
        kline_mismatches(
            kl(0, volume="0"), kl(0, volume="0"), price_tolerance=0, volume_tolerance=0
        )
        == ()
    )


# ---- dynamic subscriptions: DataKeys and reconfigure ------------------------------------


def keys(
    kline_keys: Sequence[tuple[str, str]] = (("BTCUSDT", "1m"),),
    built: Mapping[str, Sequence[str]] | None = None,
    trade_symbols: Sequence[str] = ("BTCUSDT",),
    published: Sequence[str] = ("BTCUSDT",),
) -> DataKeys:
    return DataKeys(kline_keys, built or {}, trade_symbols, published)


def ids(out: Sequence[object], symbol: str = "BTCUSDT") -> list[int]:
    return [e.id for e in out if isinstance(e, Trade) and e.symbol == symbol]


def opens(out: Sequence[object], interval: str = "1m", symbol: str = "BTCUSDT") -> list[int]:
    return [
        (e.open_time - T0) // M
        for e in out
        if isinstance(e, Kline) and e.closed and (e.symbol, e.interval) == (symbol, interval)
    ]


def test_data_keys_drop_duplicates_and_need_the_trade_stream_of_what_they_build() -> None:
    k = DataKeys(
        [("BTCUSDT", "1m"), ("BTCUSDT", "1m")],
        {"BTCUSDT": ["1s", "1s"], "ETHUSDT": []},
        ["BTCUSDT", "BTCUSDT"],
        ["BTCUSDT"],
    )
    assert k == DataKeys([("BTCUSDT", "1m")], {"BTCUSDT": ("1s",)}, ["BTCUSDT"], ["BTCUSDT"])
    assert (k.kline_keys, dict(k.built), k.trade_symbols) == (
        (("BTCUSDT", "1m"),),
        {"BTCUSDT": ("1s",)},
        ("BTCUSDT",),
    )
    assert hash(k) == hash(DataKeys([("BTCUSDT", "1m")], {}, ["BTCUSDT"], ["BTCUSDT"]))
    with pytest.raises(ValueError, match="ETHUSDT"):
        DataKeys([], {"ETHUSDT": ["1s"]}, ["BTCUSDT"], [])
    with pytest.raises(ValueError, match="ETHUSDT"):
        DataKeys([], {}, [], ["ETHUSDT"])


def test_from_keys_tracks_what_the_keys_say() -> None:
    k = keys(built={"ETHUSDT": ["1s"]}, trade_symbols=["BTCUSDT", "ETHUSDT"])
    vd = VenueData.from_keys("x", k, kline_max_size=7, trade_max_size=9, trade_window_ms=5)
    assert vd.keys == k
    assert list(vd.kline_seqs) == [("BTCUSDT", "1m")]
    assert list(vd.trade_seqs) == ["BTCUSDT", "ETHUSDT"]
    assert [b.interval for b in vd.builders["ETHUSDT"]] == ["1s"]
    assert vd.published_trades == {"BTCUSDT"}
    assert (vd.klines.max_size, vd.trades.max_size, vd.trades.window_ms) == (7, 9, 5)
    assert data().keys == keys()  # the keyword constructor says the same


def test_an_added_kline_key_starts_fresh_and_a_kept_one_goes_on_without_gap() -> None:
    vd = data()
    out: list[object] = []
    vd.process([kl(0), kl(1)], out)
    kept = vd.kline_seqs[("BTCUSDT", "1m")]
    vd.reconfigure(keys(kline_keys=[("BTCUSDT", "1m"), ("ETHUSDT", "1m")]))
    assert vd.kline_seqs[("BTCUSDT", "1m")] is kept
    fresh = vd.kline_seqs[("ETHUSDT", "1m")]
    assert fresh.next_open_time is None  # no anchor: the first live kline starts it
    out.clear()
    gaps = vd.process([kl(1), kl(2), kl(7, symbol="ETHUSDT"), kl(8, symbol="ETHUSDT")], out)
    assert gaps is None
    assert opens(out) == [2]  # kl(1) not again, no gap
    assert opens(out, symbol="ETHUSDT") == [7, 8]
    assert vd.klines.last_closed("ETHUSDT", "1m") == kl(8, symbol="ETHUSDT")


def test_a_removed_kline_key_is_forgotten_with_what_it_held() -> None:
    vd = data(kline_keys=[("BTCUSDT", "1m"), ("ETHUSDT", "1m")])
    out: list[object] = []
    vd.process([kl(0), kl(0, symbol="ETHUSDT")], out)
    # kl(3) arrives ahead of a gap: held while 1..2 are fetched.
    (gap,) = vd.process([kl(3)], out) or []
    key = ("BTCUSDT", "1m")
    assert vd.gap(key) == gap
    assert vd.kline_seqs[key].pending
    vd.reconfigure(keys(kline_keys=[("ETHUSDT", "1m")]))
    assert vd.keys.kline_keys == (("ETHUSDT", "1m"),)
    assert key not in vd.kline_seqs
    assert vd.klines.size("BTCUSDT", "1m") == 0  # the cache too
    assert vd.klines.size("ETHUSDT", "1m") == 1
    # The fill finishing after the unsubscribe changes nothing and raises nothing.
    out.clear()
    assert vd.gap(key) is None
    vd.apply_kline_page(key, [kl(1), kl(2)], complete=True, out=out)
    vd.abandon_klines(key, out)
    assert vd.reconcile(kl(0), price_tolerance=0, volume_tolerance=0, out=out) is None
    # Late live klines of the removed key (in flight at the unsubscribe) do not go out.
    assert vd.process([kl(4), kl(5, closed=False)], out) is None
    assert out == []
    assert vd.klines.size("BTCUSDT", "1m") == 0
    # Subscribed again: a clean start at the first live kline, nothing held re-emitted.
    vd.reconfigure(keys(kline_keys=[("ETHUSDT", "1m"), key]))
    assert vd.process([kl(9), kl(10)], out) is None
    assert opens(out) == [9, 10]
    assert vd.klines.klines("BTCUSDT", "1m") == [kl(9), kl(10)]  # no stitching across


def test_a_removed_trade_symbol_drops_its_held_trades_and_cache() -> None:
    vd = data(kline_keys=[], trade_symbols=["BTCUSDT", "ETHUSDT"], published_trades=["BTCUSDT"])
    out: list[object] = []
    vd.process([tr(1, T0), tr(2, T0 + 1), tr(50, T0 + 2, symbol="ETHUSDT")], out)
    gaps = vd.process([tr(5, T0 + 3)], out)
    assert gaps == [TradeGap("BTCUSDT", 3, 5)]
    vd.reconfigure(keys(kline_keys=[], trade_symbols=["ETHUSDT"], published=[]))
    assert list(vd.trade_seqs) == ["ETHUSDT"]
    assert vd.trades.trades("BTCUSDT") == []
    assert [t.id for t in vd.trades.trades("ETHUSDT")] == [50]
    out.clear()
    assert vd.gap("BTCUSDT") is None
    vd.apply_trade_page("BTCUSDT", [tr(3, T0), tr(4, T0)], complete=True, out=out)
    vd.abandon_trades("BTCUSDT", out)
    assert vd.process([tr(6, T0 + 4)], out) is None
    assert out == []  # neither the page, the held trade 5 nor the late trade 6
    # ETHUSDT's trades are no longer published (it kept only the cache and builders role).
    vd.process([tr(51, T0 + 5, symbol="ETHUSDT")], out)
    assert out == [] and vd.trades.last_id("ETHUSDT") == 51
    vd.reconfigure(keys(kline_keys=[], trade_symbols=["ETHUSDT", "BTCUSDT"]))
    assert vd.process([tr(9, T0 + 6), tr(10, T0 + 7)], out) is None  # fresh: no gap from 5
    assert ids(out) == [9, 10]
    assert [t.id for t in vd.trades.trades("BTCUSDT")] == [9, 10]


def test_an_added_built_interval_starts_from_the_next_trade_of_a_running_stream() -> None:
    vd = data(kline_keys=[])
    out: list[object] = []
    vd.process([tr(1, T0 + 100), tr(2, T0 + 1200)], out)
    seq = vd.trade_seqs["BTCUSDT"]
    vd.reconfigure(keys(kline_keys=[], built={"BTCUSDT": ["1s"]}))
    assert vd.trade_seqs["BTCUSDT"] is seq
    out.clear()
    vd.process([tr(3, T0 + 2300), tr(4, T0 + 3400)], out)
    built = [e for e in out if isinstance(e, Kline)]
    # The builder saw trades 3 and 4 only: its first bucket is trade 3's second.
    assert [(k.open_time - T0, k.trades, k.source) for k in built] == [(2000, 1, "trades")]
    assert ids(out) == [3, 4]  # still published, without a gap


def test_a_trade_stream_stays_while_a_built_interval_needs_it_and_publishing_toggles() -> None:
    both = keys(kline_keys=[], built={"BTCUSDT": ["1s", "2s"]})
    vd = VenueData.from_keys("x", both)
    out: list[object] = []
    vd.process([tr(1, T0 + 100), tr(2, T0 + 1100), tr(3, T0 + 2100)], out)
    assert ids(out) == [1, 2, 3]
    assert vd.klines.size("BTCUSDT", "2s") == 1 and vd.klines.size("BTCUSDT", "1s") == 2
    seq = vd.trade_seqs["BTCUSDT"]
    one_second = vd.builders["BTCUSDT"][0]
    # aggTrade and 2s unsubscribed: 1s still needs the trade stream.
    vd.reconfigure(keys(kline_keys=[], built={"BTCUSDT": ["1s"]}, published=[]))
    assert vd.trade_seqs["BTCUSDT"] is seq and vd.builders["BTCUSDT"] == [one_second]
    assert vd.klines.size("BTCUSDT", "2s") == 0 and vd.klines.size("BTCUSDT", "1s") == 2
    out.clear()
    vd.process([tr(4, T0 + 3100), tr(5, T0 + 4100)], out)
    assert ids(out) == []  # no longer published, from the next trade on
    assert [(k.interval, k.open_time - T0) for k in out if isinstance(k, Kline)] == [
        ("1s", 2000),
        ("1s", 3000),
    ]
    # aggTrade again: published from the next trade, the id sequence unbroken.
    vd.reconfigure(keys(kline_keys=[], built={"BTCUSDT": ["1s"]}))
    out.clear()
    assert vd.process([tr(6, T0 + 5100)], out) is None
    assert ids(out) == [6]
    # Nothing needs the stream any more: the symbol goes.
    vd.reconfigure(keys(kline_keys=[], trade_symbols=[], published=[]))
    assert vd.trade_seqs == {} and vd.builders == {}
    assert vd.klines.keys() == [] and vd.trades.symbols() == []


def test_reconfiguring_to_the_same_keys_changes_nothing() -> None:
    vd = data()
    out: list[object] = []
    vd.process([kl(0), tr(1, T0)], out)
    seqs, trade_seqs = vd.kline_seqs, vd.trade_seqs
    vd.reconfigure(DataKeys([("BTCUSDT", "1m")], {}, ["BTCUSDT", "BTCUSDT"], ["BTCUSDT"]))
    assert vd.kline_seqs is seqs and vd.trade_seqs is trade_seqs
    assert vd.klines.size("BTCUSDT", "1m") == 1 and vd.trades.last_id("BTCUSDT") == 1


def test_skip_counts_of_removed_keys_are_kept() -> None:
    vd = data()
    out: list[object] = []
    vd.process([kl(0), tr(1, T0)], out)
    vd.process([kl(3), tr(4, T0)], out)
    vd.abandon_klines(("BTCUSDT", "1m"), out)  # the exchange refused: 1..2 skipped
    vd.abandon_trades("BTCUSDT", out)  # ids 2..3 skipped
    assert (vd.klines_skipped, vd.trade_ids_skipped) == (2, 2)
    vd.reconfigure(keys(kline_keys=[], trade_symbols=[], published=[]))
    assert (vd.klines_skipped, vd.trade_ids_skipped) == (2, 2)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["BTCUSDT", "ETHUSDT"]),
            st.frozensets(st.sampled_from(["aggTrade", "1s", "kline"])),
        ),
        max_size=30,
    )
)
def test_kept_keys_never_lose_or_repeat_across_any_reconfigurations(
    steps: list[tuple[str, frozenset[str]]],
) -> None:
    """Live trades and klines of two symbols, with the channels of one symbol changed
    before each minute: while a channel stays subscribed its output is consecutive without
    a repeat; one subscribed again starts at its first live item after the change."""
    channels = {"BTCUSDT": frozenset({"aggTrade", "kline"}), "ETHUSDT": frozenset({"kline"})}

    def keys_now() -> DataKeys:
        return DataKeys(
            [(s, "1m") for s, c in channels.items() if "kline" in c],
            {s: ["1s"] for s, c in channels.items() if "1s" in c},
            [s for s, c in channels.items() if c & {"aggTrade", "1s"}],
            [s for s, c in channels.items() if "aggTrade" in c],
        )

    vd = VenueData.from_keys("x", keys_now())
    # Per (symbol, channel): the run of output since it was (re)subscribed, and its start.
    runs: dict[tuple[str, str], list[int]] = {}
    for minute, (symbol, wanted) in enumerate(steps):
        for channel in {"aggTrade", "kline"} - wanted:
            runs.pop((symbol, channel), None)
        channels[symbol] = wanted
        vd.reconfigure(keys_now())
        for s in channels:
            out: list[object] = []
            # Trades come while the symbol's trade stream is subscribed; ids go on meanwhile.
            # The previous minute comes again first (as after a reconnect): a kept key
            # must know it was emitted, a fresh one starts with it.
            streamed = bool(channels[s] & {"aggTrade", "1s"})
            first = max(0, minute - 1)
            trades = [
                tr(i, T0 + (i // 2) * M + i % 2, symbol=s) for i in range(first * 2, minute * 2 + 2)
            ]
            klines = [kl(m, symbol=s) for m in range(first, minute + 1)]
            items = [*trades, *klines] if streamed else klines
            assert vd.process(items, out) is None
            if "aggTrade" in channels[s]:
                runs.setdefault((s, "aggTrade"), []).extend(ids(out, s))
            else:
                assert ids(out, s) == []
            if "kline" in channels[s]:
                runs.setdefault((s, "kline"), []).extend(opens(out, symbol=s))
            else:
                assert opens(out, symbol=s) == []
    for key, run in runs.items():
        if run:
            assert run == list(range(run[0], run[0] + len(run))), key


def test_trades_without_consecutive_ids_pass_once_each_without_gap_detection() -> None:
    # Bybit/OKX-style ids: unique but not consecutive (and not always increasing).
    d = data(sequence_trades=False, kline_keys=[], built={"BTCUSDT": ["1s"]})
    out: list[object] = []
    ids = [907, 12, 907, 5000, 12, 31]
    gaps = d.process([tr(i, T0 + n * 1000) for n, i in enumerate(ids)], out)
    assert gaps is None  # nothing to fill: gaps cannot be seen
    assert [t.id for t in out if isinstance(t, Trade)] == [907, 12, 5000, 31]
    assert [t.id for t in d.trades.trades("BTCUSDT")] == [907, 12, 5000, 31]
    # The builder saw each trade once: one per second, the repeats dropped.
    built = [k for k in out if isinstance(k, Kline)]
    assert [k.open_time for k in built] == [T0 + n * 1000 for n in range(5)]
    assert [k.trades for k in built] == [1, 1, 0, 1, 0]
    assert d.after_reconnect([], ["BTCUSDT"], lambda interval: None) == []
