"""Tests of `trio_feed.venues.bybit`: documented frames in, events out; control replies; REST
bodies and paging; book rules."""

from __future__ import annotations

import itertools
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from trio_feed.core.book_sync import BookSync
from trio_feed.errors import MalformedFrame
from trio_feed.events import BookTicker, DepthDiff, Kline, MarkPrice, Trade
from trio_feed.venues import get_adapter
from trio_feed.venues.base import Ack, Notice, PingStyle, Pong, RequestError, StreamSpec
from trio_feed.venues.bybit import (
    KLINE_INTERVALS,
    BybitBookRules,
    BybitLinearAdapter,
    BybitSpotAdapter,
)

DATA = Path(__file__).parent / "data"
L = BybitLinearAdapter()
S = BybitSpotAdapter()
D = Decimal


def fixture(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((DATA / f"bybit_v5_{name}.json").read_text())
    return result


def dumps(obj: object) -> str:
    return json.dumps(obj)


def one(frame: str, adapter: BybitLinearAdapter | BybitSpotAdapter = L) -> Any:
    items = adapter.parse(frame)
    assert len(items) == 1, items
    return items[0]


# ---- class attributes, registry, channels ---------------------------------------------------


def test_class_attributes() -> None:
    assert (L.name, L.category, S.name, S.category) == (
        "bybit-linear",
        "linear",
        "bybit-spot",
        "spot",
    )
    for a in (L, S):
        assert a.default_ws_url == "wss://stream.bybit.com"
        assert a.default_rest_url == "https://api.bybit.com"
        assert a.ping_style is PingStyle.APPLICATION
        assert a.app_ping() == '{"op":"ping"}'
        assert a.trade_ids_consecutive is False
        assert a.rest_weight_header is None
        assert a.rest_weight_per_minute == 600
        assert a.max_klines_per_request == 1000
        assert a.limits.max_streams_per_connection == 500
    assert (L.max_trades_per_request, S.max_trades_per_request) == (1000, 60)


def test_registry_loads_both() -> None:
    assert isinstance(get_adapter("bybit-linear"), BybitLinearAdapter)
    assert isinstance(get_adapter("bybit-spot"), BybitSpotAdapter)


def test_streams_and_routes() -> None:
    assert L.stream("BTCUSDT", "kline_1m") == StreamSpec(
        "BTCUSDT", "kline_1m", "kline.1.BTCUSDT", "linear"
    )
    assert L.stream("BTCUSDT", "kline_1h").name == "kline.60.BTCUSDT"
    assert L.stream("BTCUSDT", "kline_1d").name == "kline.D.BTCUSDT"
    assert L.stream("BTCUSDT", "kline_1w").name == "kline.W.BTCUSDT"
    assert L.stream("BTCUSDT", "kline_1M").name == "kline.M.BTCUSDT"
    assert L.stream("BTCUSDT", "aggTrade").name == "publicTrade.BTCUSDT"
    assert L.stream("BTCUSDT", "depth").name == "orderbook.1000.BTCUSDT"
    assert L.stream("BTCUSDT", "bookTicker").name == "orderbook.1.BTCUSDT"
    assert L.stream("BTCUSDT", "markPrice").name == "tickers.BTCUSDT"
    assert S.stream("BTCUSDT", "depth") == StreamSpec(
        "BTCUSDT", "depth", "orderbook.1000.BTCUSDT", "spot"
    )
    # Built intervals ride on the trade stream.
    assert L.stream("BTCUSDT", "kline_8h").name == "publicTrade.BTCUSDT"
    assert L.built_interval("kline_8h") == "8h"
    assert L.built_interval("kline_1s") == "1s"
    assert L.built_interval("kline_1h") is None
    assert L.kline_key("BTCUSDT", "kline_1h") == ("BTCUSDT", "1h")
    assert L.kline_key("BTCUSDT", "kline_8h") is None


def test_check_channel_reasons() -> None:
    for channel in ("kline_1m", "kline_1M", "kline_7m", "aggTrade", "depth", "bookTicker"):
        assert L.check_channel(channel) is None
        assert S.check_channel(channel) is None
    assert L.check_channel("markPrice") is None
    reason = S.check_channel("markPrice")
    assert reason is not None and "no mark price" in reason and "\n" not in reason
    reason = L.check_channel("continuousKline_1m")
    assert reason is not None and "continuous" in reason
    reason = L.check_channel("kline_xx")
    assert reason is not None and "not a kline interval" in reason
    reason = L.check_channel("aggTrades")
    assert reason is not None and "did you mean 'aggTrade'" in reason
    with pytest.raises(ValueError):
        L.stream("BTCUSDT", "continuousKline_1m")
    assert {c.pattern for c in L.channels()} == {
        "kline_<interval>",
        "aggTrade",
        "depth",
        "bookTicker",
        "markPrice",
    }
    assert "markPrice" not in {c.pattern for c in S.channels()}
    assert L.channels()[0].intervals == tuple(KLINE_INTERVALS)


# ---- connections and requests ---------------------------------------------------------------


def test_connect_url_per_category() -> None:
    specs = [L.stream("BTCUSDT", "aggTrade")]
    assert L.connect_url("wss://stream.bybit.com/", "linear", specs) == (
        "wss://stream.bybit.com/v5/public/linear"
    )
    assert S.connect_url("wss://x.test", "spot", [S.stream("BTCUSDT", "depth")]) == (
        "wss://x.test/v5/public/spot"
    )
    with pytest.raises(ValueError):
        L.connect_url("wss://x.test", "spot", specs)


def test_documented_subscribe_request_shape() -> None:
    documented = fixture("ws_control")["subscribe_requests"][1]
    specs = [
        L.stream("BTCUSDT", "bookTicker"),
        L.stream("BTCUSDT", "aggTrade"),
        L.stream("ETHUSDT", "bookTicker"),
    ]
    (msg,) = L.open_messages(specs, 7)
    assert orjson.loads(msg.text) == {**documented, "req_id": "7"}
    assert msg.request_id == 7 and msg.streams == tuple(documented["args"])
    (unsub,) = L.unsubscribe([L.stream("ETHUSD", "aggTrade")], 9)
    assert orjson.loads(unsub.text) == {
        **fixture("ws_control")["unsubscribe_requests"][0],
        "req_id": "9",
    }


def test_spot_batches_ten_args_per_request() -> None:
    specs = [S.stream(f"S{i}USDT", "aggTrade") for i in range(25)]
    messages = S.subscribe(specs, 3)
    assert [m.request_id for m in messages] == [3, 4, 5]
    assert [len(orjson.loads(m.text)["args"]) for m in messages] == [10, 10, 5]
    assert sum((m.streams for m in messages), ()) == tuple(s.name for s in specs)
    # Linear: one request until the per-request cap.
    assert len(L.subscribe([L.stream(f"S{i}USDT", "aggTrade") for i in range(25)], 1)) == 1
    assert len(L.subscribe([L.stream(f"S{i}USDT", "aggTrade") for i in range(450)], 1)) == 3


def test_args_stay_under_21000_chars() -> None:
    long = "X" * 300
    specs = [L.stream(f"{long}{i}", "depth") for i in range(150)]
    messages = L.subscribe(specs, 1)
    assert len(messages) > 1
    for m in messages:
        assert len(orjson.dumps(orjson.loads(m.text)["args"])) <= 21_000


# ---- control frames -----------------------------------------------------------------------


def test_documented_acks_and_pongs() -> None:
    fx = fixture("ws_control")
    private, spot, linear, option = fx["subscribe_responses"]
    assert one(dumps(spot)) == Ack(10001)
    # Acks without our req_id cannot be matched: a notice, not an error.
    for frame in (private, linear, option):
        assert isinstance(one(dumps(frame)), Notice)
    for pong in fx["pong_responses"]:
        assert one(dumps(pong)) == Pong()


def test_failed_subscribe_is_a_request_error() -> None:
    frame = {
        "success": False,
        "ret_msg": "error:handler not found,topic:kline.7.BTCUSDT",
        "conn_id": "c",
        "req_id": "12",
        "op": "subscribe",
    }
    assert one(dumps(frame)) == RequestError(12, "subscribe", frame["ret_msg"])
    frame["req_id"] = ""
    assert one(dumps(frame)).request_id is None


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2]",
        '{"foo": 1}',
        '{"topic": "unknown.BTCUSDT", "data": []}',
        '{"topic": "kline.7.BTCUSDT", "data": []}',
        '{"topic": "orderbook.50.BTCUSDT", "type": "partial", "ts": 1, "data": {}}',
        '{"topic": "publicTrade.BTCUSDT", "data": [{"i": "x"}]}',
        '{"op": "subscribe", "success": "yes"}',
    ],
)
def test_malformed_frames(frame: str) -> None:
    with pytest.raises(MalformedFrame):
        L.parse(frame)


# ---- market frames --------------------------------------------------------------------------


def test_documented_kline() -> None:
    (frame,) = fixture("kline")["documented"]
    assert one(dumps(frame)) == Kline(
        exchange="bybit-linear",
        symbol="BTCUSDT",
        interval="5m",
        open_time=1672324800000,
        close_time=1672325099999,
        open=D("16649.5"),
        high=D("16677"),
        low=D("16608"),
        close=D("16677"),
        volume=D("2.081"),
        quote_volume=D("34666.4005"),
        trades=0,
        taker_buy_volume=D(0),
        taker_buy_quote_volume=D(0),
        closed=False,
    )
    frame["data"][0]["confirm"] = True
    assert one(dumps(frame), S).closed is True
    assert one(dumps(frame), S).exchange == "bybit-spot"


def test_documented_public_trade() -> None:
    (frame,) = fixture("public_trade")["documented"]
    trade_id = uuid.UUID("20f43950-d8dd-5b31-9112-a178eb6023af").int
    assert one(dumps(frame)) == Trade(
        exchange="bybit-linear",
        symbol="BTCUSDT",
        id=trade_id,
        price=D("16578.50"),
        qty=D("0.001"),
        first_trade_id=trade_id,
        last_trade_id=trade_id,
        time=1672304486865,
        buyer_is_maker=False,  # taker bought
    )
    # Spot ids are decimal strings; a taker sell means the buyer was the maker.
    frame["data"][0].update({"i": "2290000000061366944", "S": "Sell"})
    trade = one(dumps(frame), S)
    assert (trade.id, trade.buyer_is_maker) == (2290000000061366944, True)
    assert str(trade.price) == "16578.50"  # the string's exponent is kept


def test_documented_orderbook_snapshot_and_delta() -> None:
    snapshot, delta = fixture("orderbook")["documented"]
    assert one(dumps(snapshot)) == DepthDiff(
        "bybit-linear",
        "BTCUSDT",
        18521288,
        18521288,
        None,
        1672304484978,
        ((D("16493.50"), D("0.006")), (D("16493.00"), D("0.100"))),
        ((D("16611.00"), D("0.029")), (D("16612.00"), D("0.213"))),
        True,
    )
    diff = one(dumps(delta))
    assert (diff.first_update_id, diff.final_update_id, diff.snapshot) == (
        177400507,
        177400507,
        False,
    )
    assert diff.time == 1687940967466
    assert diff.bids[0] == (D("30247.20"), D("30.028"))
    assert diff.bids[-1] == (D("30240.00"), D(0))
    assert len(diff.bids) == 5 and len(diff.asks) == 7
    assert diff.asks[0] == (D("30248.70"), D(0))
    # u == 1: the service restarted; the message is a fresh book whatever its type.
    delta["data"]["u"] = 1
    assert one(dumps(delta)).snapshot is True


def test_orderbook_depth_1_is_a_book_ticker() -> None:
    snapshot, _ = fixture("orderbook")["documented"]
    snapshot["topic"] = "orderbook.1.BTCUSDT"
    snapshot["data"]["b"] = snapshot["data"]["b"][:1]
    snapshot["data"]["a"] = snapshot["data"]["a"][:1]
    assert one(dumps(snapshot)) == BookTicker(
        "bybit-linear",
        "BTCUSDT",
        D("16493.50"),
        D("0.006"),
        D("16611.00"),
        D("0.029"),
        18521288,
        1672304484978,
    )
    snapshot["data"]["a"] = []
    assert L.parse(dumps(snapshot)) == []


def test_tickers_merge_deltas_into_mark_prices() -> None:
    a = BybitLinearAdapter()
    delta_first = {
        "topic": "tickers.BTCUSDT",
        "type": "delta",
        "ts": 1,
        "data": {"symbol": "BTCUSDT", "markPrice": "1"},
    }
    assert a.parse(dumps(delta_first)) == []  # nothing known yet
    snapshot = {
        "topic": "tickers.BTCUSDT",
        "type": "snapshot",
        "cs": 5,
        "ts": 1673272861686,
        "data": {
            "symbol": "BTCUSDT",
            "lastPrice": "17216.00",
            "markPrice": "17217.33",
            "indexPrice": "17227.36",
            "fundingRate": "-0.000212",
            "nextFundingTime": "1673280000000",
        },
    }
    assert a.parse(dumps(snapshot)) == [
        MarkPrice(
            "bybit-linear",
            "BTCUSDT",
            D("17217.33"),
            D("17227.36"),
            D("-0.000212"),
            1673280000000,
            1673272861686,
        )
    ]
    delta = {
        "topic": "tickers.BTCUSDT",
        "type": "delta",
        "ts": 1673272861700,
        "data": {"symbol": "BTCUSDT", "markPrice": "17218.00"},
    }
    (mark,) = a.parse(dumps(delta))
    assert (mark.mark_price, mark.index_price, mark.time) == (
        D("17218.00"),
        D("17227.36"),
        1673272861700,
    )
    only_last_price = {**delta, "data": {"symbol": "BTCUSDT", "lastPrice": "1"}}
    assert a.parse(dumps(only_last_price)) == []


# ---- REST -----------------------------------------------------------------------------------


def test_server_time() -> None:
    body = {
        "retCode": 0,
        "retMsg": "OK",
        "result": {"timeSecond": "1688639403", "timeNano": "1688639403423213947"},
        "retExtInfo": {},
        "time": 1688639403423,
    }
    assert L.parse_server_time(dumps(body)) == 1688639403423
    assert L.server_time_request().target == "/v5/market/time"


def test_documented_rest_klines_come_oldest_first() -> None:
    (body,) = fixture("rest_kline")["documented"]
    klines = L.parse_klines(dumps(body), "BTCUSD", "1h", server_time=1670608800000)
    assert [k.open_time for k in klines] == [1670601600000, 1670605200000, 1670608800000]
    assert [k.close_time for k in klines] == [1670605199999, 1670608799999, 1670612399999]
    assert [k.closed for k in klines] == [True, True, False]
    assert klines[0] == Kline(
        "bybit-linear",
        "BTCUSD",
        "1h",
        1670601600000,
        1670605199999,
        D("17086.5"),
        D("17088"),
        D("16978"),
        D("17071.5"),
        D("6356"),
        D("0.37288112"),
        0,
        D(0),
        D(0),
        True,
        "rest",
    )


def test_monthly_kline_close_time() -> None:
    body = {"retCode": 0, "retMsg": "OK", "result": {"list": [["1706745600000"] + ["1"] * 6]}}
    (k,) = L.parse_klines(dumps(body), "BTCUSDT", "1M", server_time=0)
    # 2024-02-01, a leap-year February of 29 days.
    assert k.close_time == 1706745600000 + 29 * 86_400_000 - 1


def test_klines_request_pages_from_the_oldest_end() -> None:
    req = L.klines_request("BTCUSDT", "1m", start_time=0, end_time=10_000_000_000, limit=1000)
    assert req.path == "/v5/market/kline"
    params = dict(req.params)
    assert params == {
        "category": "linear",
        "symbol": "BTCUSDT",
        "interval": "1",
        "start": "0",
        # Pulled in: the range holds at most 1000 klines, so none in the middle is dropped.
        "end": str(999 * 60_000),
        "limit": "1000",
    }
    short = dict(L.klines_request("BTCUSDT", "1h", start_time=0, end_time=7_200_000).params)
    assert short["end"] == "7200000" and short["interval"] == "60"
    latest = dict(S.klines_request("BTCUSDT", "1d", limit=3).params)
    assert latest == {"category": "spot", "symbol": "BTCUSDT", "interval": "D", "limit": "3"}
    with pytest.raises(ValueError):
        L.klines_request("BTCUSDT", "8h")
    with pytest.raises(ValueError):
        L.klines_request("BTCUSDT", "1m", limit=1001)


def test_recent_trades_oldest_first_and_request() -> None:
    body = {
        "retCode": 0,
        "retMsg": "OK",
        "result": {
            "category": "spot",
            "list": [
                {
                    "execId": "2100000000007764263",
                    "symbol": "BTCUSDT",
                    "price": "16618.49",
                    "size": "0.00012",
                    "side": "Buy",
                    "time": "1672052955758",
                    "isBlockTrade": False,
                },
                {
                    "execId": "2100000000007764262",
                    "symbol": "BTCUSDT",
                    "price": "16618.00",
                    "size": "0.1",
                    "side": "Sell",
                    "time": "1672052955700",
                    "isBlockTrade": False,
                },
            ],
        },
    }
    trades = S.parse_agg_trades(dumps(body), "BTCUSDT")
    assert [t.id for t in trades] == [2100000000007764262, 2100000000007764263]
    assert trades[0] == Trade(
        "bybit-spot",
        "BTCUSDT",
        2100000000007764262,
        D("16618.00"),
        D("0.1"),
        2100000000007764262,
        2100000000007764262,
        1672052955700,
        True,
        "rest",
    )
    req = S.agg_trades_request("BTCUSDT", from_id=5, limit=1000)
    assert req.target == "/v5/market/recent-trade?category=spot&symbol=BTCUSDT&limit=60"


def test_documented_rest_orderbook() -> None:
    (body,) = fixture("rest_orderbook")["documented"]
    assert L.parse_depth(dumps(body), "BTCUSDT") == DepthDiff(
        "bybit-linear",
        "BTCUSDT",
        230704,
        230704,
        None,
        1716863719031,
        ((D("65485.47"), D("47.081829")),),
        ((D("65557.7"), D("16.606555")),),
        True,
    )
    req = L.depth_request("BTCUSDT", 1000)
    assert req.target == "/v5/market/orderbook?category=linear&symbol=BTCUSDT&limit=1000"
    with pytest.raises(ValueError):
        L.depth_request("BTCUSDT", 2000)


def test_listed_symbols() -> None:
    body = {
        "retCode": 0,
        "retMsg": "OK",
        "result": {
            "category": "linear",
            "list": [
                {"symbol": "BTCUSDT", "contractType": "LinearPerpetual", "status": "Trading"},
                {"symbol": "BTC-27JUN25", "contractType": "LinearFutures", "status": "Trading"},
                {"symbol": "NEWUSDT", "contractType": "LinearPerpetual", "status": "PreLaunch"},
                {"symbol": "ETHUSDT", "contractType": "LinearPerpetual", "status": "Trading"},
            ],
        },
    }
    assert L.parse_listed_symbols(dumps(body)) == ["BTCUSDT", "ETHUSDT"]
    spot = {"retCode": 0, "result": {"list": [{"symbol": "BTCUSDT", "status": "Trading"}]}}
    assert S.parse_listed_symbols(dumps(spot)) == ["BTCUSDT"]
    assert L.exchange_info_request().target == (
        "/v5/market/instruments-info?category=linear&limit=1000"
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda body: L.parse_server_time(body),
        lambda body: L.parse_klines(body, "BTCUSDT", "1m", 0),
        lambda body: L.parse_agg_trades(body, "BTCUSDT"),
        lambda body: L.parse_depth(body, "BTCUSDT"),
        lambda body: L.parse_listed_symbols(body),
    ],
)
def test_rest_error_bodies_name_the_ret_code(call: Any) -> None:
    error = dumps({"retCode": 10006, "retMsg": "Too many visits!", "result": {}, "time": 1})
    with pytest.raises(MalformedFrame, match="retCode 10006: Too many visits!"):
        call(error)
    for bad in ("<html>", "[]", dumps({"retCode": 0, "result": []})):
        with pytest.raises(MalformedFrame):
            call(bad)


# ---- book rules -----------------------------------------------------------------------------


def _diff(u: int, *, snapshot: bool = False, bid: str = "1") -> DepthDiff:
    return DepthDiff(
        "bybit-linear",
        "BTCUSDT",
        u,
        u,
        None,
        u,
        ((D("100"), D(bid)),),
        ((D("101"), D("1")),),
        snapshot,
    )


def test_book_rules() -> None:
    rules = BybitBookRules()
    assert L.book_rules().name == "bybit-u"
    assert rules.stale(_diff(10), 10) and not rules.stale(_diff(11), 10)
    assert rules.bridges(_diff(11), 10) and not rules.bridges(_diff(10), 10)
    assert rules.follows(_diff(10), _diff(12)) is None
    assert rules.follows(_diff(10), _diff(10)) == "delta u 10 repeated"
    assert rules.follows(_diff(10), _diff(9)) == "delta u 9 below previous u 10"


def test_book_sync_with_bybit_rules() -> None:
    sync = BookSync("bybit-linear", "BTCUSDT", L.book_rules())
    assert sync.on_diff(_diff(5, snapshot=True)).applied == 1 and sync.synced
    assert sync.on_diff(_diff(6, bid="2")).applied == 1
    step = sync.on_diff(_diff(6, bid="2"))  # a repeated delta: a break
    assert step.resync is not None and step.resync.startswith("gap: ") and not sync.synced
    sync.on_diff(_diff(7, bid="3"))
    # A REST snapshot at 6 joins: the repeat is stale, 7 bridges.
    assert sync.on_snapshot(_diff(6, snapshot=True, bid="2")).applied == 1
    assert sync.synced and sync.book.last_update_id == 7
    # A new stream snapshot resets the book without REST.
    assert sync.on_diff(_diff(100, snapshot=True, bid="9")).applied == 1
    assert sync.book.last_update_id == 100


@given(st.lists(st.integers(1, 1000), min_size=2, max_size=30))
def test_follows_exactly_when_u_increases(ids: list[int]) -> None:
    rules = BybitBookRules()
    for a, b in itertools.pairwise(ids):
        assert (rules.follows(_diff(a), _diff(b)) is None) == (b > a)
