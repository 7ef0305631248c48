"""Tests of `trio_feed.venues.binance_spot`: documented and recorded frames in, events out."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from trio_feed.errors import MalformedFrame
from trio_feed.events import BookTicker, DepthDiff, Kline, Trade
from trio_feed.venues import get_adapter, known_venues
from trio_feed.venues.base import (
    Ack,
    PingStyle,
    RequestError,
    RestRequest,
    ServerShutdown,
    StreamSpec,
)
from trio_feed.venues.binance_spot import KLINE_INTERVALS, ROUTE, BinanceSpotAdapter
from trio_feed.venues.book_rules import ConsecutiveIdRules

DATA = Path(__file__).parent / "data"
A = BinanceSpotAdapter()
D = Decimal


def fixture(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return result


def recorded(name: str) -> list[str]:
    return [r["raw"] for r in fixture(name)["recorded"]]


def one(frame: str | bytes | dict[str, Any]) -> Any:
    if isinstance(frame, dict):
        frame = json.dumps(frame)
    items = A.parse(frame)
    assert len(items) == 1, items
    return items[0]


# ---- class attributes and registry -----------------------------------------------------


def test_class_attributes() -> None:
    assert A.name == "binance-spot"
    assert A.default_ws_url == "wss://stream.binance.com:9443"
    assert A.default_rest_url == "https://api.binance.com"
    assert A.ping_style is PingStyle.PROTOCOL
    assert A.app_ping() is None
    assert A.limits.max_streams_per_connection == 1024
    assert A.limits.max_outgoing_per_second == 5
    assert A.limits.connection_lifetime == 24 * 3600
    assert A.rest_weight_header == "X-MBX-USED-WEIGHT-1M"
    assert A.rest_weight_per_minute == 6000
    assert A.max_klines_per_request == 1000


def test_registry_loads_the_adapter() -> None:
    assert isinstance(get_adapter("binance-spot"), BinanceSpotAdapter)
    assert "binance-spot" in known_venues()


# ---- channels and streams --------------------------------------------------------------


def test_streams_are_on_one_route() -> None:
    assert A.stream("BTCUSDT", "aggTrade") == StreamSpec(
        "BTCUSDT", "aggTrade", "btcusdt@aggTrade", ROUTE
    )
    assert A.stream("BTCUSDT", "depth").name == "btcusdt@depth@100ms"
    assert A.stream("BTCUSDT", "bookTicker").name == "btcusdt@bookTicker"
    assert A.stream("BTCUSDT", "kline_1s").name == "btcusdt@kline_1s"
    assert A.stream("BTCUSDT", "kline_1M").name == "btcusdt@kline_1M"
    assert {A.stream("ETHBTC", c).route for c in ("aggTrade", "depth", "kline_1h")} == {ROUTE}


def test_kline_intervals_include_1s_and_others_are_built_from_trades() -> None:
    assert KLINE_INTERVALS[0] == "1s" and "1M" in KLINE_INTERVALS
    for interval in KLINE_INTERVALS:
        assert A.check_channel(f"kline_{interval}") is None
        assert A.built_interval(f"kline_{interval}") is None
    assert A.check_channel("kline_7m") is None
    assert A.built_interval("kline_7m") == "7m"
    assert A.stream("BTCUSDT", "kline_7m").name == "btcusdt@aggTrade"
    assert A.kline_key("BTCUSDT", "kline_1s") == ("BTCUSDT", "1s")
    assert A.kline_key("BTCUSDT", "kline_7m") is None


@pytest.mark.parametrize(
    ("channel", "words"),
    [
        ("markPrice", "mark price"),
        ("continuousKline_1m", "contracts"),
        ("kline_1x", "not a kline interval"),
        ("bookticker", "did you mean 'bookTicker'"),
    ],
)
def test_channels_spot_lacks_have_a_one_line_reason(channel: str, words: str) -> None:
    reason = A.check_channel(channel)
    assert reason is not None and words in reason and "\n" not in reason
    with pytest.raises(ValueError, match=channel):
        A.stream("BTCUSDT", channel)


def test_channels_listing() -> None:
    patterns = [c.pattern for c in A.channels()]
    assert patterns == ["kline_<interval>", "aggTrade", "depth", "bookTicker"]
    assert A.channels()[0].intervals == KLINE_INTERVALS


def test_connect_url_is_a_combined_stream_url() -> None:
    streams = [A.stream("BTCUSDT", "depth"), A.stream("ETHUSDT", "kline_1m")]
    url = A.connect_url("wss://stream.binance.com:9443/", ROUTE, streams)
    assert (
        url == "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms/ethusdt@kline_1m"
    )
    assert A.connect_url("wss://x", ROUTE, []) == "wss://x/stream"
    assert A.open_messages(streams, 1) == []
    with pytest.raises(ValueError, match="one route"):
        A.connect_url("wss://x", "market", streams)


def test_subscribe_and_unsubscribe_batch_at_200() -> None:
    streams = [A.stream(f"S{i}USDT", "aggTrade") for i in range(450)]
    messages = A.subscribe(streams, 7)
    assert [m.request_id for m in messages] == [7, 8, 9]
    assert [len(m.streams) for m in messages] == [200, 200, 50]
    first = orjson.loads(messages[0].text)
    assert first == {"method": "SUBSCRIBE", "params": list(messages[0].streams), "id": 7}
    [unsub] = A.unsubscribe(streams[:1], 3)
    assert orjson.loads(unsub.text) == {
        "method": "UNSUBSCRIBE",
        "params": ["s0usdt@aggTrade"],
        "id": 3,
    }


# ---- klines ------------------------------------------------------------------------------


def test_documented_kline() -> None:
    fx = fixture("binance_spot_kline")
    expected = Kline(
        exchange="binance-spot",
        symbol="BNBBTC",
        interval="1m",
        open_time=1672515780000,
        close_time=1672515839999,
        open=D("0.0010"),
        high=D("0.0025"),
        low=D("0.0015"),
        close=D("0.0020"),
        volume=D("1000"),
        quote_volume=D("1.0000"),
        trades=100,
        taker_buy_volume=D("500"),
        taker_buy_quote_volume=D("0.500"),
        closed=False,
        source="ws",
    )
    for frame in (fx["documented"][0], fx["documented_combined"][0]):
        k = one(frame)
        assert k == expected
        assert str(k.open) == "0.0010"  # the exponent is kept


def test_recorded_klines() -> None:
    first, second = (one(raw) for raw in recorded("binance_spot_kline"))
    assert first == Kline(
        "binance-spot",
        "NKNUSDT",
        "1m",
        1633998480000,
        1633998539999,
        D("0.35270000"),
        D("0.35280000"),
        D("0.35220000"),
        D("0.35280000"),
        D("25877.00000000"),
        D("9116.04600000"),
        30,
        D("58.00000000"),
        D("20.46240000"),
        False,
    )
    assert (second.symbol, second.trades, second.close) == ("LRCBTC", 1, D("0.00000638"))


# ---- trades ------------------------------------------------------------------------------


def test_documented_agg_trade_with_spots_extra_field() -> None:
    fx = fixture("binance_spot_aggtrade")
    for frame in (fx["documented"][0], fx["documented_combined"][0]):
        assert one(frame) == Trade(
            "binance-spot", "BNBBTC", 12345, D("0.001"), D("100"), 100, 105, 1672515782136, True
        )


def test_recorded_agg_trades() -> None:
    trades = [one(raw) for raw in recorded("binance_spot_aggtrade")]
    assert trades == [
        Trade(
            "binance-spot",
            "NKNUSDT",
            15683430,
            D("0.35280000"),
            D("58.00000000"),
            19862790,
            19862790,
            1633998523963,
            False,
        ),
        Trade(
            "binance-spot",
            "LRCBTC",
            9213679,
            D("0.00000638"),
            D("177.00000000"),
            12368013,
            12368013,
            1633998534486,
            False,
        ),
    ]


# ---- book ticker -------------------------------------------------------------------------


def test_documented_book_ticker_has_time_zero() -> None:
    fx = fixture("binance_spot_bookticker")
    for frame in (fx["documented"][0], fx["documented_combined"][0]):
        assert one(frame) == BookTicker(
            "binance-spot",
            "BNBUSDT",
            D("25.35190000"),
            D("31.21000000"),
            D("25.36520000"),
            D("40.66000000"),
            400900217,
            0,
        )


def test_recorded_book_tickers() -> None:
    tickers = [one(raw) for raw in recorded("binance_spot_bookticker")]
    assert len(tickers) == 20
    assert tickers[0] == BookTicker(
        "binance-spot",
        "NKNUSDT",
        D("0.35210000"),
        D("672.00000000"),
        D("0.35260000"),
        D("3199.00000000"),
        499869768,
        0,
    )
    assert tickers[1].ask_price == D("0.35250000") and tickers[1].update_id == 499869769
    assert all(t.time == 0 and t.bid_price < t.ask_price for t in tickers)


# ---- depth -------------------------------------------------------------------------------


def test_documented_depth_diff_has_no_previous_id() -> None:
    fx = fixture("binance_spot_depth_diff")
    for frame in (fx["documented"][0], fx["documented_combined"][0]):
        assert one(frame) == DepthDiff(
            "binance-spot",
            "BNBBTC",
            157,
            160,
            None,
            1672515782136,
            ((D("0.0024"), D("10")),),
            ((D("0.0026"), D("100")),),
            False,
        )


def test_recorded_depth_diffs_chain_by_consecutive_ids() -> None:
    diffs = [one(raw) for raw in recorded("binance_spot_depth_diff")]
    assert len(diffs) == 40
    assert diffs[0] == DepthDiff(
        "binance-spot",
        "NKNUSDT",
        499869750,
        499869752,
        None,
        1633998512068,
        (
            (D("0.35130000"), D("6195.00000000")),
            (D("0.34750000"), D("5548.00000000")),
            (D("0.34640000"), D("6222.00000000")),
        ),
        (),
        False,
    )
    rules = A.book_rules()
    assert isinstance(rules, ConsecutiveIdRules)
    last: dict[str, DepthDiff] = {}
    for diff in diffs:
        assert diff.prev_update_id is None and not diff.snapshot
        previous = last.get(diff.symbol)
        if previous is not None:
            assert rules.follows(previous, diff) is None
        last[diff.symbol] = diff
    assert len(last) >= 2


def test_partial_depth_needs_the_stream_name() -> None:
    fx = fixture("binance_spot_depth_partial")
    assert one(fx["documented_combined"][0]) == DepthDiff(
        "binance-spot",
        "BNBBTC",
        160,
        160,
        None,
        0,
        ((D("0.0024"), D("10")),),
        ((D("0.0026"), D("100")),),
        True,
    )
    with pytest.raises(MalformedFrame, match="no symbol"):
        A.parse(json.dumps(fx["documented"][0]))


def test_book_rules_bridge_the_recorded_snapshot() -> None:
    # NKNUSDT: the snapshot's L=499869752 is bridged by the diff starting at L + 1.
    rules = A.book_rules()
    diffs = [one(raw) for raw in recorded("binance_spot_depth_diff")]
    nkn = [d for d in diffs if d.symbol == "NKNUSDT"]
    assert rules.stale(nkn[0], 499869752)
    assert rules.bridges(nkn[1], 499869752) and nkn[1].first_update_id == 499869753


# ---- tickers, control frames -------------------------------------------------------------


def test_mini_tickers_parse_to_nothing() -> None:
    fx = fixture("binance_spot_miniticker")
    assert A.parse(json.dumps(fx["documented"][0])) == []
    assert A.parse(json.dumps(fx["documented_arr_combined"][0])) == []


def test_control_replies() -> None:
    fx = fixture("binance_spot_ws_control")
    replies = [A.parse(json.dumps(e["response"])) for e in fx["exchanges"]]
    assert replies == [
        [Ack(1, None)],
        [Ack(312, None)],
        [Ack(3, ["btcusdt@aggTrade"])],
        [Ack(5, None)],
        [Ack(2, True)],
    ]
    errors = [one(e) for e in fx["error_messages"]]
    assert errors[0] == RequestError(None, "0", "Unknown property")  # "%s" is not an int id
    assert [e.code for e in errors] == ["0", "1", "2", "2", "2", "2", "2", "3"]
    assert one({"code": 2, "msg": "Invalid request", "id": 9}) == RequestError(
        9, "2", "Invalid request"
    )


def test_server_shutdown_raw_and_combined() -> None:
    fx = fixture("binance_spot_ws_control")
    for key in ("server_shutdown_raw", "server_shutdown_combined"):
        assert one(fx[key]) == ServerShutdown(1770123456789, "serverShutdown")


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        '{"stream":"btcusdt@aggTrade","data":"oops"}',
        '{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":1.5,"B":"1","a":"2","A":"1"}}',
        '{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":"1","u":2,"b":[],"a":[]}',
        '{"e":"markPriceUpdate","E":1,"s":"BTCUSDT"}',
        '{"hello":"world"}',
        '{"u":1,"s":"BTCUSDT","b":"NaN","B":"1","a":"2","A":"1"}',
    ],
)
def test_malformed_frames_raise_malformed_frame(frame: str) -> None:
    with pytest.raises(MalformedFrame, match="binance-spot"):
        A.parse(frame)


# ---- REST ----------------------------------------------------------------------------------


def test_rest_requests_and_weights() -> None:
    assert A.server_time_request() == RestRequest("GET", "/api/v3/time", weight=1)
    assert A.parse_server_time(b'{"serverTime":1499827319559}') == 1499827319559
    k = A.klines_request("BTCUSDT", "1s", start_time=1, end_time=2, limit=1000)
    assert k.target == "/api/v3/klines?symbol=BTCUSDT&interval=1s&startTime=1&endTime=2&limit=1000"
    assert k.weight == 2
    with pytest.raises(ValueError, match=r"1\.\.1000"):
        A.klines_request("BTCUSDT", "1m", limit=1001)
    t = A.agg_trades_request("BTCUSDT", from_id=5, limit=1000)
    assert (t.target, t.weight) == ("/api/v3/aggTrades?symbol=BTCUSDT&fromId=5&limit=1000", 4)
    with pytest.raises(ValueError, match="not both"):
        A.agg_trades_request("BTCUSDT", from_id=5, start_time=1)
    weights = {n: A.depth_request("BTCUSDT", n).weight for n in (1, 100, 101, 500, 1000, 5000)}
    assert weights == {1: 5, 100: 5, 101: 25, 500: 25, 1000: 50, 5000: 250}
    assert A.depth_request("BTCUSDT").target == "/api/v3/depth?symbol=BTCUSDT&limit=1000"
    with pytest.raises(ValueError, match=r"1\.\.5000"):
        A.depth_request("BTCUSDT", 5001)
    assert A.exchange_info_request() == RestRequest("GET", "/api/v3/exchangeInfo", weight=20)


def test_documented_rest_klines() -> None:
    body = json.dumps(fixture("binance_spot_rest_klines")["documented"])
    [k] = A.parse_klines(body, "BNBBTC", "1m", server_time=1499644800000)
    assert k == Kline(
        "binance-spot",
        "BNBBTC",
        "1m",
        1499040000000,
        1499644799999,
        D("0.01634790"),
        D("0.80000000"),
        D("0.01575800"),
        D("0.01577100"),
        D("148976.11427815"),
        D("2434.19055334"),
        308,
        D("1756.87402397"),
        D("28.46694368"),
        True,
        "rest",
    )
    # Closed only once the exchange's clock is past the close time.
    [open_k] = A.parse_klines(body, "BNBBTC", "1m", server_time=1499644799999)
    assert not open_k.closed


def test_documented_rest_agg_trades() -> None:
    body = json.dumps(fixture("binance_spot_rest_aggtrades")["documented"])
    assert A.parse_agg_trades(body, "BNBBTC") == [
        Trade(
            "binance-spot",
            "BNBBTC",
            26129,
            D("0.01633102"),
            D("4.70443515"),
            27781,
            27781,
            1498793709153,
            True,
            "rest",
        )
    ]


def test_rest_depth_documented_and_recorded() -> None:
    fx = fixture("binance_spot_rest_depth")
    snap = A.parse_depth(json.dumps(fx["documented"][0]), "BNBBTC")
    assert snap == DepthDiff(
        "binance-spot",
        "BNBBTC",
        1027024,
        1027024,
        None,
        0,
        ((D("4.00000000"), D("431.00000000")),),
        ((D("4.00000200"), D("12.00000000")),),
        True,
    )
    blz = fx["recorded"][0]
    book = A.parse_depth(blz["raw"], "BLZETH")
    raw = orjson.loads(blz["raw"])
    assert book.final_update_id == 281916627 == raw["lastUpdateId"]
    assert len(book.bids) == len(raw["bids"]) and len(book.asks) == len(raw["asks"])
    assert book.bids[0] == (D("0.00006547"), D("100.00000000"))
    assert [str(p) for p, _ in book.asks] == [p for p, _ in raw["asks"]]


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("parse_klines", ("BTCUSDT", "1m", 0)),
        ("parse_agg_trades", ("BTCUSDT",)),
        ("parse_depth", ("BTCUSDT",)),
        ("parse_listed_symbols", ()),
    ],
)
def test_rest_error_bodies_raise_with_code_and_message(method: str, args: tuple[Any, ...]) -> None:
    body = b'{"code":-1121,"msg":"Invalid symbol."}'
    with pytest.raises(MalformedFrame, match=r"binance-spot /api/v3/\w+: error -1121: Invalid"):
        getattr(A, method)(body, *args)
    with pytest.raises(MalformedFrame, match="binance-spot /api/v3/"):
        getattr(A, method)(b"<html>", *args)


def test_listed_symbols() -> None:
    body = orjson.dumps(
        {
            "symbols": [
                {"symbol": "BTCUSDT", "status": "TRADING", "isSpotTradingAllowed": True},
                {"symbol": "OLDUSDT", "status": "BREAK", "isSpotTradingAllowed": True},
                {"symbol": "MRGUSDT", "status": "TRADING", "isSpotTradingAllowed": False},
                {"symbol": "ETHBTC", "status": "TRADING"},
            ]
        }
    )
    assert A.parse_listed_symbols(body) == ["BTCUSDT", "ETHBTC"]
    with pytest.raises(MalformedFrame, match="status"):
        A.parse_listed_symbols(b'{"symbols":[{"symbol":"X"}]}')
