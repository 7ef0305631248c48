"""VenueData: routing, restart anchors, built klines and reconciliation, without I/O."""

from __future__ import annotations

from decimal import Decimal

from trio_feed.core.keeper import ResumePoint, VenueData, kline_mismatches
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
