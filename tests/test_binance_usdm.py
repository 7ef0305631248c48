"""Tests of `trio_feed.venues.binance_usdm`: documented and recorded frames in, events out."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from trio_feed.errors import MalformedFrame
from trio_feed.events import BookTicker, DepthDiff, Kline, MarkPrice, Trade
from trio_feed.venues import get_adapter
from trio_feed.venues.base import (
    Ack,
    PingStyle,
    RequestError,
    RestRequest,
    ServerShutdown,
    StreamSpec,
    VenueAdapter,
)
from trio_feed.venues.binance_usdm import KLINE_INTERVALS, BinanceUsdmAdapter

DATA = Path(__file__).parent / "data"
A = BinanceUsdmAdapter()


def fixture(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return result


def recorded(name: str) -> list[str]:
    return [r["raw"] for r in fixture(name)["recorded"]]


def dumps(obj: object) -> str:
    return json.dumps(obj)


def one(frame: str | bytes) -> Any:
    items = A.parse(frame)
    assert len(items) == 1, items
    return items[0]


# ---- class attributes and registry -----------------------------------------------------


def test_class_attributes() -> None:
    assert A.name == "binance-usdm"
    assert A.default_ws_url == "wss://fstream.binance.com"
    assert A.default_rest_url == "https://fapi.binance.com"
    assert A.ping_style is PingStyle.PROTOCOL
    assert A.limits.max_streams_per_connection == 1024
    assert A.limits.max_outgoing_per_second == 10
    assert A.limits.max_message_size == 4 * 1024 * 1024
    assert A.limits.connection_lifetime == 24 * 3600
    assert A.app_ping() is None
    assert A.rest_weight_header == "X-MBX-USED-WEIGHT-1M"
    assert A.rest_weight_per_minute == 2400


def test_registry_loads_the_adapter() -> None:
    assert isinstance(get_adapter("binance-usdm"), BinanceUsdmAdapter)


# ---- klines ------------------------------------------------------------------------------


def test_documented_kline() -> None:
    fx = fixture("binance_usdm_kline")
    for frame in (fx["documented"][0], fx["documented_combined"][0]):
        k = one(dumps(frame))
        assert k == Kline(
            exchange="binance-usdm",
            symbol="BTCUSDT",
            interval="1m",
            open_time=1638747660000,
            close_time=1638747719999,
            open=Decimal("0.0010"),
            high=Decimal("0.0025"),
            low=Decimal("0.0015"),
            close=Decimal("0.0020"),
            volume=Decimal("1000"),
            quote_volume=Decimal("1.0000"),
            trades=100,
            taker_buy_volume=Decimal("500"),
            taker_buy_quote_volume=Decimal("0.500"),
            closed=False,
            source="ws",
            revision=0,
        )
        assert str(k.open) == "0.0010"  # trailing zeros kept: built from the string


def test_recorded_klines() -> None:
    frames = recorded("binance_usdm_kline")
    assert len(frames) == 67
    closed = []
    for raw in frames:
        payload = json.loads(raw)
        k = payload["data"]["k"]
        event = one(raw)
        assert isinstance(event, Kline)
        assert event.symbol == payload["data"]["s"]
        assert payload["stream"] == f"{event.symbol.lower()}@kline_{event.interval}"
        assert (event.open_time, event.close_time, event.trades) == (k["t"], k["T"], k["n"])
        assert (event.open, event.high, event.low, event.close) == tuple(
            Decimal(k[f]) for f in "ohlc"
        )
        assert (event.volume, event.quote_volume) == (Decimal(k["v"]), Decimal(k["q"]))
        assert event.taker_buy_volume == Decimal(k["V"])
        assert event.taker_buy_quote_volume == Decimal(k["Q"])
        assert event.closed is k["x"]
        assert (event.source, event.revision) == ("ws", 0)
        if event.closed:
            closed.append(event)
    assert len(closed) == 4
    first = one(frames[0])
    assert first.symbol == "CTKUSDT"
    assert first.open == Decimal("1.01000")
    assert first.quote_volume == Decimal("3957.89900")


def test_bytes_frame_parses_like_text() -> None:
    raw = recorded("binance_usdm_kline")[0]
    assert A.parse(raw.encode()) == A.parse(raw)


def test_continuous_kline_symbol_names_the_contract() -> None:
    fx = fixture("binance_usdm_continuous_kline")
    for frame in (fx["documented"][0], fx["documented_combined"][0]):
        k = one(dumps(frame))
        assert isinstance(k, Kline)
        assert k.symbol == "BTCUSDT_PERPETUAL"
        assert k.interval == "1m"
        assert (k.open_time, k.close_time) == (1607443020000, 1607443079999)
        assert k.open == Decimal("18787.00")
        assert k.close == Decimal("18804.04")
        assert k.trades == 543
        assert k.closed is False


# ---- trades ------------------------------------------------------------------------------


def test_documented_agg_trades() -> None:
    fx = fixture("binance_usdm_aggtrade")
    expected = Trade(
        exchange="binance-usdm",
        symbol="BTCUSDT",
        id=5933014,
        price=Decimal("0.001"),
        qty=Decimal("100"),
        first_trade_id=100,
        last_trade_id=105,
        time=123456785,
        buyer_is_maker=True,
        source="ws",
    )
    for frame in [*fx["documented"], *fx["documented_combined"]]:  # includes the "nq" one
        assert one(dumps(frame)) == expected


def test_recorded_agg_trades() -> None:
    events = [one(raw) for raw in recorded("binance_usdm_aggtrade")]
    assert all(isinstance(e, Trade) for e in events)
    assert [e.id for e in events] == [
        16599292, 14888302, 16599293, 87353230, 16599294, 16599295, 87353231, 16599296,
        16599297, 16599298, 16599299, 16599300, 16599301, 16599302, 87353232, 87353233,
        16599303, 87353234, 16599304, 87353235, 87353236, 87353237, 87353238, 87353239,
        16599305, 14888303, 87353240, 87353241, 87353242, 87353243, 16599306, 14888304,
        16599307, 16599308, 87353244, 16599309, 87353245, 87353246, 87353247, 87353248,
    ]  # fmt: skip
    # per symbol the ids increase by one
    by_symbol: dict[str, list[int]] = {}
    for e in events:
        by_symbol.setdefault(e.symbol, []).append(e.id)
    for ids in by_symbol.values():
        assert ids == list(range(ids[0], ids[0] + len(ids)))
    first = events[0]
    assert first == Trade(
        "binance-usdm",
        "CTKUSDT",
        16599292,
        Decimal("1.01100"),
        Decimal("10"),
        23961322,
        23961322,
        1626992741421,
        False,
        "ws",
    )
    assert events[3].symbol == "SUSHIUSDT"
    assert (events[3].first_trade_id, events[3].last_trade_id) == (126902924, 126902927)
    assert events[1].buyer_is_maker is True


# ---- depth -------------------------------------------------------------------------------


def test_documented_depth_diff() -> None:
    fx = fixture("binance_usdm_depth_diff")
    for frame in (fx["documented"][0], fx["documented_combined"][0]):
        d = one(dumps(frame))
        assert d == DepthDiff(
            exchange="binance-usdm",
            symbol="BTCUSDT",
            first_update_id=157,
            final_update_id=160,
            prev_update_id=149,
            time=123456789,
            bids=((Decimal("0.0024"), Decimal("10")),),
            asks=((Decimal("0.0026"), Decimal("100")),),
            snapshot=False,
        )


def test_recorded_depth_diffs() -> None:
    frames = recorded("binance_usdm_depth_diff")
    assert len(frames) == 60
    for raw in frames:
        data = json.loads(raw)["data"]
        d = one(raw)
        assert isinstance(d, DepthDiff)
        assert d.symbol == data["s"]
        assert (d.first_update_id, d.final_update_id, d.prev_update_id) == (
            data["U"],
            data["u"],
            data["pu"],
        )
        assert d.time == data["E"]
        assert d.bids == tuple((Decimal(p), Decimal(q)) for p, q in data["b"])
        assert d.asks == tuple((Decimal(p), Decimal(q)) for p, q in data["a"])
        assert d.snapshot is False
        assert d.checksum is None
    first = one(frames[0])
    assert first.symbol == "SUSHIUSDT"
    assert first.first_update_id == 600859599090
    assert first.final_update_id == 600859600917
    assert first.prev_update_id == 600859598061
    assert first.bids[1] == (Decimal("7.6090"), Decimal("0"))


def test_partial_depth_is_a_snapshot() -> None:
    fx = fixture("binance_usdm_depth_partial")
    combined = fx["documented_combined"][0]
    d = one(dumps(combined))
    assert d.snapshot is True
    assert (d.first_update_id, d.final_update_id, d.prev_update_id) == (
        390497796,
        390497878,
        390497794,
    )
    assert len(d.bids) == len(d.asks) == 5
    assert d.bids[0] == (Decimal("7403.89"), Decimal("0.002"))
    assert d.asks[-1] == (Decimal("7407.20"), Decimal("0.175"))
    # a raw payload cannot say it is partial: it is taken for a diff
    assert one(dumps(fx["documented"][0])).snapshot is False


@pytest.mark.parametrize(
    ("stream", "snapshot"),
    [
        ("btcusdt@depth5", True),
        ("btcusdt@depth10", True),
        ("btcusdt@depth20", True),
        ("btcusdt@depth5@100ms", True),
        ("btcusdt@depth20@500ms", True),
        ("btcusdt@depth", False),
        ("btcusdt@depth@100ms", False),
        ("btcusdt@depth@500ms", False),
    ],
)
def test_depth_snapshot_flag_follows_stream_name(stream: str, snapshot: bool) -> None:
    data = fixture("binance_usdm_depth_diff")["documented"][0]
    assert one(dumps({"stream": stream, "data": data})).snapshot is snapshot


# ---- book ticker and mark price ------------------------------------------------------------


def test_recorded_book_tickers() -> None:
    frames = recorded("binance_usdm_bookticker")
    assert len(frames) == 40
    for raw in frames:
        data = json.loads(raw)["data"]
        t = one(raw)
        assert isinstance(t, BookTicker)
        assert (t.symbol, t.update_id, t.time) == (data["s"], data["u"], data["E"])
        assert (t.bid_price, t.bid_qty, t.ask_price, t.ask_qty) == tuple(
            Decimal(data[f]) for f in "bBaA"
        )
    assert one(frames[0]) == BookTicker(
        "binance-usdm",
        "SUSHIUSDT",
        Decimal("7.6110"),
        Decimal("2"),
        Decimal("7.6120"),
        Decimal("297"),
        600859600576,
        1626992741017,
    )


def test_book_ticker_without_event_time_uses_transaction_time() -> None:
    data = json.loads(recorded("binance_usdm_bookticker")[0])["data"]
    del data["E"]
    assert one(dumps(data)).time == 1626992741012


def test_documented_mark_price() -> None:
    fx = fixture("binance_usdm_markprice")
    expected = MarkPrice(
        exchange="binance-usdm",
        symbol="BTCUSDT",
        mark_price=Decimal("11794.15000000"),
        index_price=Decimal("11784.62659091"),
        funding_rate=Decimal("0.00038167"),
        next_funding_time=1562306400000,
        time=1562305380000,
    )
    for frame in (fx["documented"][0], fx["documented_combined"][0]):
        assert one(dumps(frame)) == expected


def test_mark_price_array_stream() -> None:
    payload = fixture("binance_usdm_markprice")["documented"][0]
    other = {**payload, "s": "ETHUSDT", "p": "2000.5"}
    for frame in ([payload, other], {"stream": "!markPrice@arr@1s", "data": [payload, other]}):
        events = A.parse(dumps(frame))
        assert [e.symbol for e in events if isinstance(e, MarkPrice)] == ["BTCUSDT", "ETHUSDT"]
        assert isinstance(events[1], MarkPrice)
        assert events[1].mark_price == Decimal("2000.5")
    assert A.parse(dumps({"stream": "!markPrice@arr", "data": []})) == []


def test_mark_price_of_a_delivery_contract_has_no_funding() -> None:
    payload = {
        **fixture("binance_usdm_markprice")["documented"][0],
        "s": "BTCUSDT_260327",
        "r": "",
        "T": 0,
    }
    m = one(dumps(payload))
    assert (m.funding_rate, m.next_funding_time) == (Decimal(0), 0)


def test_mini_ticker_is_valid_but_unused() -> None:
    fx = fixture("binance_usdm_miniticker")
    assert A.parse(dumps(fx["documented"][0])) == []
    assert A.parse(dumps({"stream": "btcusdt@miniTicker", "data": fx["documented"][0]})) == []
    assert A.parse(dumps(fx["documented_arr_combined"][0])) == []


# ---- control messages ---------------------------------------------------------------------


def test_control_acks() -> None:
    exchanges = fixture("binance_usdm_ws_control")["exchanges"]
    acks = [one(dumps(x["response"])) for x in exchanges]
    assert acks == [
        Ack(1, None),
        Ack(312, None),
        Ack(3, ["btcusdt@aggTrade"]),
        Ack(5, None),
        Ack(2, True),
    ]


@pytest.mark.parametrize("name", ["binance_usdm_ws_control", "binance_spot_ws_control"])
def test_control_errors(name: str) -> None:
    errors = fixture(name)["error_messages"]
    items = [one(dumps(x)) for x in errors]
    for item, raw in zip(items, errors, strict=True):
        assert isinstance(item, RequestError)
        assert item.code == str(raw["code"])
        assert item.message == raw["msg"]
        assert item.request_id is None  # no id, or the template "%s"
    assert items[0].code == "0"
    assert items[-1].code == "3"


def test_control_error_with_request_id() -> None:
    assert one('{"code":2,"msg":"Invalid request: too many parameters","id":7}') == RequestError(
        7, "2", "Invalid request: too many parameters"
    )


def test_server_shutdown_raw_and_combined() -> None:
    fx = fixture("binance_spot_ws_control")
    for frame in (fx["server_shutdown_raw"], fx["server_shutdown_combined"]):
        assert one(dumps(frame)) == ServerShutdown(1770123456789, "serverShutdown")


# ---- streams, URLs and subscriptions ------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "name", "route"),
    [
        ("kline_1m", "btcusdt@kline_1m", "market"),
        ("kline_1M", "btcusdt@kline_1M", "market"),
        ("continuousKline_5m", "btcusdt_perpetual@continuousKline_5m", "market"),
        ("aggTrade", "btcusdt@aggTrade", "market"),
        ("depth", "btcusdt@depth@100ms", "public"),
        ("markPrice", "btcusdt@markPrice@1s", "market"),
        ("bookTicker", "btcusdt@bookTicker", "public"),
    ],
)
def test_stream_names_and_routes(channel: str, name: str, route: str) -> None:
    assert A.check_channel(channel) is None
    assert A.stream("BTCUSDT", channel) == StreamSpec("BTCUSDT", channel, name, route)


def test_every_kline_interval_has_a_stream() -> None:
    assert KLINE_INTERVALS == (
        "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M",
    )  # fmt: skip
    for interval in KLINE_INTERVALS:
        assert A.check_channel(f"kline_{interval}") is None
        assert A.check_channel(f"continuousKline_{interval}") is None
        assert A.stream("ETHUSDT", f"kline_{interval}").name == f"ethusdt@kline_{interval}"


def test_stream_rejects_invalid_channel() -> None:
    with pytest.raises(ValueError, match="continuousKline_7m"):
        A.stream("BTCUSDT", "continuousKline_7m")
    with pytest.raises(ValueError, match="unknown channel"):
        A.stream("BTCUSDT", "trades")


def test_unstreamed_kline_intervals_are_built_from_the_trade_stream() -> None:
    for channel in ("kline_1s", "kline_7m", "kline_2d"):
        assert A.built_interval(channel) == channel.removeprefix("kline_")
        spec = A.stream("BTCUSDT", channel)
        assert (spec.channel, spec.name, spec.route) == ("aggTrade", "btcusdt@aggTrade", "market")
        assert A.kline_key("BTCUSDT", channel) is None
    assert A.built_interval("kline_1m") is None
    assert A.built_interval("aggTrade") is None
    assert A.kline_key("BTCUSDT", "kline_1h") == ("BTCUSDT", "1h")
    assert A.kline_key("BTCUSDT", "continuousKline_5m") == ("BTCUSDT_PERPETUAL", "5m")
    assert A.kline_key("BTCUSDT", "aggTrade") is None


def test_channels_list() -> None:
    infos = {c.pattern: c for c in A.channels()}
    assert set(infos) == {
        "kline_<interval>",
        "continuousKline_<interval>",
        "aggTrade",
        "depth",
        "markPrice",
        "bookTicker",
    }
    assert infos["kline_<interval>"].intervals == KLINE_INTERVALS
    assert infos["continuousKline_<interval>"].intervals == KLINE_INTERVALS
    assert infos["aggTrade"].intervals == ()
    assert all(c.description for c in infos.values())


def test_check_channel_reasons() -> None:
    reason = A.check_channel("klines_1m")
    assert reason is not None
    assert reason.startswith("unknown channel 'klines_1m'; binance-usdm offers kline_<interval>")
    assert "continuousKline_<interval>, aggTrade, depth, markPrice, bookTicker" in reason
    assert "did you mean 'kline_1m'" in reason
    for channel in ("kline_7m", "kline_1s", "kline_2d"):
        assert A.check_channel(channel) is None
    reason = A.check_channel("kline_abc")
    assert reason is not None
    assert "'abc' is not a kline interval" in reason
    reason = A.check_channel("continuousKline_1s")
    assert reason is not None
    assert "continuous kline intervals 1m," in reason
    assert A.check_channel("aggtrade") is not None  # case matters on the wire
    assert "did you mean 'aggTrade'" in (A.check_channel("aggtrade") or "")


def test_connect_url() -> None:
    market = [A.stream("BTCUSDT", "kline_1m"), A.stream("ETHUSDT", "aggTrade")]
    assert (
        A.connect_url("wss://fstream.binance.com", "market", market)
        == "wss://fstream.binance.com/market/stream?streams=btcusdt@kline_1m/ethusdt@aggTrade"
    )
    public = [A.stream("BTCUSDT", "depth"), A.stream("BTCUSDT", "bookTicker")]
    assert (
        A.connect_url("ws://127.0.0.1:9000/", "public", public)
        == "ws://127.0.0.1:9000/public/stream?streams=btcusdt@depth@100ms/btcusdt@bookTicker"
    )
    assert A.connect_url("wss://x", "market", []) == "wss://x/market/stream"
    with pytest.raises(ValueError, match="btcusdt@depth@100ms"):
        A.connect_url("wss://x", "market", [*market, public[0]])
    assert A.open_messages(market, 1) == []


def test_subscribe_batches_and_ids() -> None:
    streams = [A.stream(f"S{i}USDT", "aggTrade") for i in range(450)]
    messages = A.subscribe(streams, 7)
    assert [m.request_id for m in messages] == [7, 8, 9]
    assert [len(m.streams) for m in messages] == [200, 200, 50]
    assert tuple(n for m in messages for n in m.streams) == tuple(s.name for s in streams)
    for m in messages:
        body = json.loads(m.text)
        assert body == {"method": "SUBSCRIBE", "params": list(m.streams), "id": m.request_id}
    assert A.subscribe([], 1) == []


def test_subscribe_matches_documented_request() -> None:
    request = fixture("binance_usdm_ws_control")["exchanges"][0]["request"]
    streams = [A.stream("BTCUSDT", "aggTrade"), A.stream("BTCUSDT", "depth")]
    (message,) = A.subscribe(streams, 1)
    body = json.loads(message.text)
    assert body["method"] == request["method"]
    assert body["id"] == request["id"]
    assert body["params"] == ["btcusdt@aggTrade", "btcusdt@depth@100ms"]
    assert message.streams == ("btcusdt@aggTrade", "btcusdt@depth@100ms")


def test_unsubscribe() -> None:
    streams = [A.stream("BTCUSDT", "depth")] * 201
    messages = A.unsubscribe(streams, 312)
    assert [m.request_id for m in messages] == [312, 313]
    assert json.loads(messages[0].text)["method"] == "UNSUBSCRIBE"
    assert json.loads(messages[1].text) == {
        "method": "UNSUBSCRIBE",
        "params": ["btcusdt@depth@100ms"],
        "id": 313,
    }


# ---- malformed frames ------------------------------------------------------------------------

_KLINE = json.loads(recorded("binance_usdm_kline")[0])
_TRADE = json.loads(recorded("binance_usdm_aggtrade")[0])


def _kline_with(**k: Any) -> str:
    frame = json.loads(json.dumps(_KLINE))
    frame["data"]["k"].update(k)
    return dumps(frame)


def _without(frame: dict[str, Any], *path: str) -> str:
    copy = json.loads(json.dumps(frame))
    target = copy
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return dumps(copy)


MALFORMED: list[tuple[str, str | bytes]] = [
    ("truncated JSON", recorded("binance_usdm_kline")[0][:-7]),
    ("empty", ""),
    ("non-JSON bytes", b"\xff\xfe\x00garbage"),
    ("plain text", "pong"),
    ("JSON number", "42"),
    ("JSON string", '"kline"'),
    ("JSON null", "null"),
    ("missing k", _without(_KLINE, "data", "k")),
    ("missing k.o", _without(_KLINE, "data", "k", "o")),
    ("missing data", _without(_KLINE, "data")),
    ("missing e", _without(_KLINE, "data", "e")),
    ("price abc", _kline_with(o="abc")),
    ("price NaN", _kline_with(h="NaN")),
    ("price sNaN", _kline_with(h="sNaN")),
    ("price Infinity", _kline_with(l="Infinity")),
    ("price -inf", _kline_with(c="-inf")),
    ("price empty", _kline_with(c="")),
    ("price as float", _kline_with(o=1.01)),
    ("price as int", _kline_with(o=1)),
    ("price null", _kline_with(o=None)),
    ("price list", _kline_with(o=["1"])),
    ("time as string", _kline_with(t="1626992700000")),
    ("time as float", _kline_with(T=1.5)),
    ("trades as bool", _kline_with(n=True)),
    ("closed as string", _kline_with(x="false")),
    ("interval as int", _kline_with(i=1)),
    ("k not an object", dumps({**_KLINE, "data": {**_KLINE["data"], "k": [1, 2]}})),
    ("data not an object", dumps({"stream": "btcusdt@kline_1m", "data": 5})),
    ("data a string", dumps({"stream": "btcusdt@kline_1m", "data": "kline"})),
    ("array element not an object", dumps({"stream": "!markPrice@arr", "data": [1]})),
    ("stream not a string", dumps({"stream": 1, "data": _KLINE["data"]})),
    ("unknown e", dumps({"stream": "x", "data": {"e": "kline2", "E": 1}})),
    ("unknown raw e", dumps({"e": "somethingNew", "E": 1})),
    ("e unhashable", dumps({"e": ["kline"], "E": 1})),
    ("unknown object", dumps({"hello": "world"})),
    ("ack with string id", dumps({"result": None, "id": "abc"})),
    ("ack without id", dumps({"result": None})),
    ("trade qty NaN", dumps({**_TRADE, "data": {**_TRADE["data"], "q": "NaN"}})),
    ("trade maker as int", dumps({**_TRADE, "data": {**_TRADE["data"], "m": 0}})),
    ("depth level too short", dumps({"e": "depthUpdate", "E": 1, "s": "X", "U": 1, "u": 2,
                                     "pu": 0, "b": [["1"]], "a": []})),
    ("depth level a string", dumps({"e": "depthUpdate", "E": 1, "s": "X", "U": 1, "u": 2,
                                    "pu": 0, "b": ["12"], "a": []})),
    ("depth levels an object", dumps({"e": "depthUpdate", "E": 1, "s": "X", "U": 1, "u": 2,
                                      "pu": 0, "b": {"1": "2"}, "a": []})),
    ("depth missing pu", dumps({"e": "depthUpdate", "E": 1, "s": "X", "U": 1, "u": 2,
                                "b": [], "a": []})),
    ("continuous kline ct not a string", dumps({**fixture("binance_usdm_continuous_kline")[
        "documented"][0], "ct": 5})),
    ("shutdown time a string", dumps({"e": "serverShutdown", "E": "soon"})),
]  # fmt: skip


@pytest.mark.parametrize(("why", "frame"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_frames_raise_malformed_frame(why: str, frame: str | bytes) -> None:
    with pytest.raises(MalformedFrame) as info:
        A.parse(frame)
    assert str(info.value).startswith("binance-usdm")


def test_malformed_reason_names_stream_and_field() -> None:
    with pytest.raises(MalformedFrame, match=r"'ctkusdt@kline_1m'.*missing field 'o'"):
        A.parse(_without(_KLINE, "data", "k", "o"))
    with pytest.raises(MalformedFrame, match=r"'ctkusdt@kline_1m'.*'abc'"):
        A.parse(_kline_with(o="abc"))
    with pytest.raises(MalformedFrame, match="unknown event type 'kline2'"):
        A.parse(dumps({"stream": "x", "data": {"e": "kline2"}}))
    with pytest.raises(MalformedFrame, match="invalid JSON"):
        A.parse("{")


# ---- property: prices are exact -------------------------------------------------------------

_DECIMAL_STRINGS = st.one_of(
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,20})?\Z"),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
)


@given(price=_DECIMAL_STRINGS, qty=_DECIMAL_STRINGS)
def test_decimal_strings_round_trip_exactly(price: str, qty: str) -> None:
    k = one(_kline_with(o=price, c=price, v=qty))
    expected = Decimal(price)
    assert k.open == expected
    assert k.open.as_tuple() == expected.as_tuple()  # same digits and exponent
    assert str(k.close) == str(expected)
    assert k.volume.as_tuple() == Decimal(qty).as_tuple()


@given(st.sampled_from(["nan", "NaN", "-NaN", "sNaN", "NaN123", "inf", "-Infinity", "+INF"]))
def test_non_finite_strings_are_rejected(bad: str) -> None:
    with pytest.raises(MalformedFrame):
        A.parse(_kline_with(h=bad))


# ---- REST --------------------------------------------------------------------------------------


def test_server_time() -> None:
    assert A.server_time_request() == RestRequest("GET", "/fapi/v1/time", (), 1)
    assert A.parse_server_time('{"serverTime":1499827319559}') == 1499827319559
    assert A.parse_server_time(b'{"serverTime":1499827319559}') == 1499827319559
    for bad in ("{}", '{"serverTime":"1"}', "[]", "nope"):
        with pytest.raises(MalformedFrame):
            A.parse_server_time(bad)


def test_klines_request() -> None:
    request = A.klines_request("BTCUSDT", "1m")
    assert request.method == "GET"
    assert request.target == "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=1500"
    assert request.weight == 10
    request = A.klines_request("BTCUSDT", "1h", start_time=1000, end_time=2000, limit=500)
    assert request.target == (
        "/fapi/v1/klines?symbol=BTCUSDT&interval=1h&startTime=1000&endTime=2000&limit=500"
    )
    weights = {n: A.klines_request("X", "1m", limit=n).weight for n in (1, 99, 100, 499, 500)}
    weights |= {n: A.klines_request("X", "1m", limit=n).weight for n in (1000, 1001, 1500)}
    assert weights == {1: 1, 99: 1, 100: 2, 499: 2, 500: 5, 1000: 5, 1001: 10, 1500: 10}
    for bad in (0, 1501):
        with pytest.raises(ValueError, match="limit"):
            A.klines_request("X", "1m", limit=bad)


def test_continuous_klines_request() -> None:
    request = A.klines_request("BTCUSDT_PERPETUAL", "1m", start_time=5, limit=10)
    assert request.target == (
        "/fapi/v1/continuousKlines?pair=BTCUSDT&contractType=PERPETUAL"
        "&interval=1m&startTime=5&limit=10"
    )
    # a dated delivery contract is a plain symbol
    assert A.klines_request("BTCUSDT_260327", "1m").path == "/fapi/v1/klines"


def test_parse_klines() -> None:
    fx = fixture("binance_usdm_rest_klines")
    body = json.dumps(fx["klines"])
    (k,) = A.parse_klines(body, "BTCUSDT", "1w", server_time=1499644800000)
    assert k == Kline(
        exchange="binance-usdm",
        symbol="BTCUSDT",
        interval="1w",
        open_time=1499040000000,
        close_time=1499644799999,
        open=Decimal("0.01634790"),
        high=Decimal("0.80000000"),
        low=Decimal("0.01575800"),
        close=Decimal("0.01577100"),
        volume=Decimal("148976.11427815"),
        quote_volume=Decimal("2434.19055334"),
        trades=308,
        taker_buy_volume=Decimal("1756.87402397"),
        taker_buy_quote_volume=Decimal("28.46694368"),
        closed=True,
        source="rest",
        revision=0,
    )
    # closed is decided by the server's clock: not closed while close_time >= server_time
    (k,) = A.parse_klines(body, "BTCUSDT", "1w", server_time=1499644799999)
    assert k.closed is False
    (c,) = A.parse_klines(
        json.dumps(fx["continuousKlines"]), "BTCUSDT_PERPETUAL", "1m", 1607444760000
    )
    assert (c.symbol, c.open, c.trades, c.closed) == (
        "BTCUSDT_PERPETUAL",
        Decimal("18879.99"),
        1874,
        True,
    )
    assert A.parse_klines("[]", "BTCUSDT", "1m", 0) == []


@pytest.mark.parametrize(
    "body",
    [
        "[[1499040000000]]",
        '[[1,"1","1","1","1","1",2,"1",3,"1","1"]]',  # 11 items
        '[[1,"1","1","1","1","1",2,"1",3,"1","1","0","extra"]]',  # 13 items
        '[[1,"abc","1","1","1","1",2,"1",3,"1","1","0"]]',
        '[[1,"NaN","1","1","1","1",2,"1",3,"1","1","0"]]',
        '[["1","1","1","1","1","1",2,"1",3,"1","1","0"]]',
        '[{"t":1}]',
        "{}",
        '{"code":-1121,"msg":"Invalid symbol."}',
        "[",
        "",
    ],
)
def test_parse_klines_rejects_malformed(body: str) -> None:
    with pytest.raises(MalformedFrame, match="/fapi/v1/klines"):
        A.parse_klines(body, "BTCUSDT", "1m", 0)


def test_rest_error_body_is_named() -> None:
    with pytest.raises(MalformedFrame, match=r"error -1121: Invalid symbol\."):
        A.parse_klines('{"code":-1121,"msg":"Invalid symbol."}', "X", "1m", 0)


def test_agg_trades_request() -> None:
    request = A.agg_trades_request("BTCUSDT", from_id=26129)
    assert request.target == "/fapi/v1/aggTrades?symbol=BTCUSDT&fromId=26129&limit=1000"
    assert request.weight == 20
    request = A.agg_trades_request("BTCUSDT", start_time=1, end_time=2, limit=10)
    assert request.target == "/fapi/v1/aggTrades?symbol=BTCUSDT&startTime=1&endTime=2&limit=10"
    with pytest.raises(ValueError, match="not both"):
        A.agg_trades_request("BTCUSDT", from_id=1, start_time=1)
    with pytest.raises(ValueError, match="limit"):
        A.agg_trades_request("BTCUSDT", limit=1001)


def test_parse_agg_trades() -> None:
    body = json.dumps(fixture("binance_usdm_rest_aggtrades")["documented"][0])
    assert A.parse_agg_trades(body, "BTCUSDT") == [
        Trade(
            exchange="binance-usdm",
            symbol="BTCUSDT",
            id=26129,
            price=Decimal("0.01633102"),
            qty=Decimal("4.70443515"),
            first_trade_id=27781,
            last_trade_id=27781,
            time=1498793709153,
            buyer_is_maker=True,
            source="rest",
        )
    ]
    for bad in ('[{"a":1}]', "[1]", '[{"a":1,"p":"x","q":"1","f":1,"l":1,"T":1,"m":true}]'):
        with pytest.raises(MalformedFrame, match="aggTrades"):
            A.parse_agg_trades(bad, "BTCUSDT")


def test_depth_request() -> None:
    assert A.depth_request("BTCUSDT") == RestRequest(
        "GET", "/fapi/v1/depth", (("symbol", "BTCUSDT"), ("limit", "1000")), 20
    )
    weights = {n: A.depth_request("X", n).weight for n in (5, 10, 20, 50, 100, 500, 1000)}
    assert weights == {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}
    with pytest.raises(ValueError, match="depth limit"):
        A.depth_request("X", 7)


def test_parse_documented_depth() -> None:
    body = json.dumps(fixture("binance_usdm_rest_depth")["documented"][0])
    assert A.parse_depth(body, "BTCUSDT") == DepthDiff(
        exchange="binance-usdm",
        symbol="BTCUSDT",
        first_update_id=1027024,
        final_update_id=1027024,
        prev_update_id=None,
        time=1589436922972,
        bids=((Decimal("4.00000000"), Decimal("431.00000000")),),
        asks=((Decimal("4.00000200"), Decimal("12.00000000")),),
        snapshot=True,
    )
    # time falls back to T, then to 0
    assert A.parse_depth('{"lastUpdateId":1,"T":5,"bids":[],"asks":[]}', "X").time == 5
    assert A.parse_depth('{"lastUpdateId":1,"bids":[],"asks":[]}', "X").time == 0


def test_parse_recorded_depth_snapshots() -> None:
    records = fixture("binance_usdm_rest_depth")["recorded"]
    assert len(records) == 2
    for record in records:
        symbol = record["url"].split("symbol=")[1].split("&")[0]
        raw = json.loads(record["raw"])
        d = A.parse_depth(record["raw"], symbol)
        assert d.snapshot is True
        assert d.first_update_id == d.final_update_id == raw["lastUpdateId"]
        assert d.prev_update_id is None
        assert d.time == raw["E"]
        assert d.bids == tuple((Decimal(p), Decimal(q)) for p, q in raw["bids"])
        assert d.asks == tuple((Decimal(p), Decimal(q)) for p, q in raw["asks"])
        assert len(d.bids) > 100
        assert len(d.asks) > 100
    akro = A.parse_depth(records[0]["raw"], "AKROUSDT")
    assert akro.final_update_id == 600859605486
    assert akro.time == 1626992741242
    assert akro.bids[0] == (Decimal("0.01731"), Decimal("57618"))
    ctk = A.parse_depth(records[1]["raw"], "CTKUSDT")
    assert ctk.final_update_id == 600859618836
    assert ctk.bids[0] == (Decimal("1.01000"), Decimal("85782"))


@pytest.mark.parametrize(
    "body",
    [
        '{"bids":[],"asks":[]}',
        '{"lastUpdateId":1,"bids":[["1"]],"asks":[]}',
        '{"lastUpdateId":1,"bids":[["1","Infinity"]],"asks":[]}',
        '{"lastUpdateId":"1","bids":[],"asks":[]}',
        '{"lastUpdateId":1,"bids":[]}',
        "[]",
    ],
)
def test_parse_depth_rejects_malformed(body: str) -> None:
    with pytest.raises(MalformedFrame, match="/fapi/v1/depth"):
        A.parse_depth(body, "X")


def exchange_info() -> dict[str, Any]:
    """The recorded exchangeInfo body (BTCUSDT and ETHUSDT)."""
    body: dict[str, Any] = fixture("binance_usdm_rest_exchangeinfo")["recorded_trimmed"]
    return body


def test_exchange_info_request() -> None:
    assert A.exchange_info_request() == RestRequest("GET", "/fapi/v1/exchangeInfo", (), 1)
    assert A.exchange_info_request().target == "/fapi/v1/exchangeInfo"


def test_parse_listed_symbols_of_the_recorded_body() -> None:
    info = exchange_info()
    # Computed from the raw JSON, independently of the adapter.
    expected = [
        s["symbol"]
        for s in info["symbols"]
        if s["status"] == "TRADING" and s["contractType"] == "PERPETUAL"
    ]
    assert expected == ["BTCUSDT", "ETHUSDT"]
    raw = (DATA / "binance_usdm_rest_exchangeinfo.json").read_bytes()
    body = orjson.dumps(orjson.loads(raw)["recorded_trimmed"])
    assert A.parse_listed_symbols(body) == expected
    assert A.parse_listed_symbols(body.decode()) == expected


def test_parse_listed_symbols_keeps_trading_perpetuals_in_order() -> None:
    info = exchange_info()
    btc, eth = info["symbols"]
    entries = [
        {**eth, "symbol": "SOLUSDT"},
        {**btc, "symbol": "BTCUSDT_260327", "contractType": "CURRENT_QUARTER"},
        {**btc, "symbol": "LUNAUSDT", "status": "SETTLING"},
        {**btc, "symbol": "NEWUSDT", "status": "PENDING_TRADING"},
        {**btc, "symbol": "OLDUSDT", "status": "CLOSE"},
        btc,
        {**eth, "symbol": "ETHUSDT_260626", "contractType": "NEXT_QUARTER"},
        eth,
    ]
    body = json.dumps({**info, "symbols": entries})
    assert A.parse_listed_symbols(body) == ["SOLUSDT", "BTCUSDT", "ETHUSDT"]
    assert A.parse_listed_symbols(json.dumps({**info, "symbols": []})) == []


@pytest.mark.parametrize(
    "body",
    [
        "",
        "not json",
        "[]",
        "null",
        "{}",
        '{"symbols": null}',
        '{"symbols": {"symbol": "BTCUSDT"}}',
        '{"symbols": ["BTCUSDT"]}',
        '{"symbols": [{"symbol": "X"}]}',
        '{"symbols": [{"symbol": "X", "status": "TRADING"}]}',
        '{"symbols": [{"status": "TRADING", "contractType": "PERPETUAL"}]}',
        '{"symbols": [{"symbol": 1, "status": "TRADING", "contractType": "PERPETUAL"}]}',
        '{"symbols": [{"symbol": "X", "status": null, "contractType": "PERPETUAL"}]}',
        '{"symbols": [{"symbol": "X", "status": "TRADING", "contractType": ["PERPETUAL"]}]}',
        # A bad entry after a good one still fails: the shape is checked throughout.
        '{"symbols": [{"symbol": "X", "status": "TRADING", "contractType": "PERPETUAL"},'
        ' {"symbol": "Y", "status": "SETTLING"}]}',
        '{"code": -1003, "msg": "Too many requests"}',
    ],
)
def test_parse_listed_symbols_rejects_malformed(body: str) -> None:
    with pytest.raises(MalformedFrame, match="exchangeInfo"):
        A.parse_listed_symbols(body)


def test_listing_defaults_of_the_base_class_name_the_venue() -> None:
    # Third-party adapters that predate listings inherit these.
    with pytest.raises(NotImplementedError, match="binance-usdm"):
        VenueAdapter.exchange_info_request(A)
    with pytest.raises(NotImplementedError, match="binance-usdm"):
        VenueAdapter.parse_listed_symbols(A, b"{}")
