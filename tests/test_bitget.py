"""The Bitget v2 adapters: recorded/documented frames, controls, REST bodies, book rules."""

from __future__ import annotations

import json
import zlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from trio_feed.core.book_sync import BookSync
from trio_feed.errors import MalformedFrame
from trio_feed.events import BookTicker, DepthDiff, Kline, MarkPrice, Trade
from trio_feed.venues import get_adapter, known_venues
from trio_feed.venues.base import Ack, Notice, Pong, RequestError, StreamSpec
from trio_feed.venues.bitget import (
    MAX_REQUEST_BYTES,
    BitgetBookRules,
    BitgetSpotAdapter,
    BitgetUsdtFuturesAdapter,
    book_checksum,
    checksum_mismatch,
)

FIXTURES = Path("/work/shared/research/fixtures")
FUT = "bitget-usdt-futures"
D = Decimal


@pytest.fixture
def fixture() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "bitget_v2_ws_control.json").read_text())
    return data


def fut() -> BitgetUsdtFuturesAdapter:
    return BitgetUsdtFuturesAdapter()


def push(channel: str, action: str, data: list[Any], ts: int, inst: str = "BTCUSDT") -> str:
    arg = {"instType": "USDT-FUTURES", "channel": channel, "instId": inst}
    return json.dumps({"action": action, "arg": arg, "data": data, "ts": ts})


# ---- registry and channels ------------------------------------------------------------------


def test_both_markets_are_registered() -> None:
    assert {"bitget-spot", FUT} <= set(known_venues())
    assert isinstance(get_adapter(FUT), BitgetUsdtFuturesAdapter)
    assert isinstance(get_adapter("bitget-spot"), BitgetSpotAdapter)


def test_streams_and_channel_checks() -> None:
    a = fut()
    assert a.stream("BTCUSDT", "kline_1h") == StreamSpec(
        "BTCUSDT", "kline_1h", "candle1H:BTCUSDT", "public"
    )
    assert a.stream("BTCUSDT", "kline_1d").name == "candle1Dutc:BTCUSDT"  # UTC from 6h on
    assert a.stream("BTCUSDT", "aggTrade").name == "trade:BTCUSDT"
    assert a.stream("BTCUSDT", "depth").name == "books:BTCUSDT"
    # markPrice and bookTicker are one wire stream.
    assert a.stream("BTCUSDT", "markPrice") == a.stream("BTCUSDT", "bookTicker")
    # 3m is not streamed: built from the trade stream.
    assert a.built_interval("kline_3m") == "3m"
    assert a.stream("BTCUSDT", "kline_3m").name == "trade:BTCUSDT"
    assert a.built_interval("kline_1m") is None
    assert a.check_channel("kline_1s") is None
    reason = a.check_channel("continuousKline_1m")
    assert reason is not None and "continuous" in reason
    assert "not a kline interval" in (a.check_channel("kline_7x") or "")
    assert "did you mean 'aggTrade'" in (a.check_channel("aggTrades") or "")
    spot = BitgetSpotAdapter()
    assert "no mark price" in (spot.check_channel("markPrice") or "")
    assert {c.pattern for c in spot.channels()} == {
        "kline_<interval>",
        "aggTrade",
        "depth",
        "bookTicker",
    }
    assert "markPrice" in {c.pattern for c in a.channels()}
    with pytest.raises(ValueError):
        a.stream("BTCUSDT", "nope")


def test_connect_url_has_one_route() -> None:
    a = fut()
    spec = a.stream("BTCUSDT", "kline_1m")
    assert a.connect_url("wss://ws.bitget.com/", "public", [spec]) == (
        "wss://ws.bitget.com/v2/ws/public"
    )
    with pytest.raises(ValueError):
        a.connect_url("wss://ws.bitget.com", "business", [spec])


# ---- subscribe requests and acknowledgements -----------------------------------------------


def test_subscribe_request_matches_the_documented_one(fixture: dict[str, Any]) -> None:
    a = fut()
    (msg,) = a.open_messages([a.stream("BTCUSDT", "kline_1m")], 7)
    assert orjson.loads(msg.text) == fixture["subscribe_request"]
    assert (msg.request_id, msg.streams) == (7, ("candle1m:BTCUSDT",))
    # The documented ack completes the request.
    assert a.parse(json.dumps(fixture["subscribe_response"])) == [Ack(7)]
    # A second ack of the same channel is not ours any more.
    assert a.parse(json.dumps(fixture["subscribe_response"])) == []


def test_ack_only_when_every_channel_of_the_request_is_acknowledged() -> None:
    a = fut()
    specs = [a.stream("BTCUSDT", "kline_1m"), a.stream("ETHUSDT", "depth")]
    a.subscribe(specs, 3)

    def ack(channel: str, inst: str, event: str = "subscribe") -> str:
        arg = {"instType": "USDT-FUTURES", "channel": channel, "instId": inst}
        return json.dumps({"event": event, "arg": arg})

    assert a.parse(ack("books", "ETHUSDT")) == []
    assert a.parse(ack("candle1m", "BTCUSDT")) == [Ack(3)]
    (unsub,) = a.unsubscribe(specs[:1], 4)
    assert orjson.loads(unsub.text)["op"] == "unsubscribe"
    assert a.parse(ack("candle1m", "BTCUSDT", "unsubscribe")) == [Ack(4)]
    # The documented unsubscribe answer that echoes the request is understood too.
    (unsub2,) = a.unsubscribe(specs, 5)
    assert a.parse(unsub2.text) == [Ack(5)]


def test_errors_name_the_request_when_they_can() -> None:
    a = fut()
    specs = [a.stream("BTCUSDX", "kline_1m"), a.stream("BTCUSDT", "aggTrade")]
    a.subscribe(specs, 9)
    arg = {"instType": "USDT-FUTURES", "channel": "candle1m", "instId": "BTCUSDX"}
    error = {"event": "error", "arg": arg, "code": 30001, "msg": "instId:BTCUSDX doesn't exist"}
    assert a.parse(json.dumps(error)) == [RequestError(9, "30001", "instId:BTCUSDX doesn't exist")]
    # The failed request's other channel is no longer waited for.
    trade_arg = {"instType": "USDT-FUTURES", "channel": "trade", "instId": "BTCUSDT"}
    assert a.parse(json.dumps({"event": "subscribe", "arg": trade_arg})) == []
    no_arg = {"event": "error", "code": 30016, "msg": "param error"}
    assert a.parse(json.dumps(no_arg)) == [RequestError(None, "30016", "param error")]
    login = a.parse(json.dumps({"event": "login", "code": "0", "msg": ""}))
    assert len(login) == 1 and isinstance(login[0], Notice)


def test_requests_are_batched_within_4096_bytes() -> None:
    a = fut()
    specs = [a.stream(f"SYM{i:04d}USDT", "kline_15m") for i in range(300)]
    messages = a.subscribe(specs, 1)
    assert len(messages) > 1
    assert all(len(m.text.encode()) <= MAX_REQUEST_BYTES for m in messages)
    assert [m.request_id for m in messages] == list(range(1, len(messages) + 1))
    assert [n for m in messages for n in m.streams] == [s.name for s in specs]
    for m in messages:
        args = orjson.loads(m.text)["args"]
        assert [f"{x['channel']}:{x['instId']}" for x in args] == list(m.streams)


def test_text_ping_and_pong() -> None:
    a = fut()
    assert a.app_ping() == "ping"
    assert a.parse("pong") == [Pong()]
    assert a.parse(b"pong") == [Pong()]


# ---- pushes -----------------------------------------------------------------------------------


def test_documented_ticker_push(fixture: dict[str, Any]) -> None:
    frame = json.dumps(fixture["ticker_push"])
    assert fut().parse(frame) == [
        BookTicker(
            FUT,
            "SBTCSUSDT",
            D("27000"),
            D("2.71"),
            D("27000.5"),
            D("8.76"),
            1695715383021,
            1695715383021,
        ),
        MarkPrice(
            FUT,
            "SBTCSUSDT",
            D("27000.0"),
            D("25702.4"),
            D("0.000010"),
            1695722400000,
            1695715383021,
        ),
    ]
    # Spot has no mark price: the same layout gives the best bid/ask only.
    (ticker,) = BitgetSpotAdapter().parse(frame)
    assert isinstance(ticker, BookTicker) and ticker.exchange == "bitget-spot"
    assert str(ticker.ask_qty) == "8.76"


def test_documented_candle_push_and_closing() -> None:
    a = fut()
    # The documented push (candle1m, ts after the row's minute): the row is closed.
    doc = [
        ["1695685500000", "27000", "27000.5", "27000", "27000.5", "0.057", "1539.0155", "1539.0155"]
    ]
    (k,) = a.parse(push("candle1m", "snapshot", doc, 1695715462250))
    assert k == Kline(
        FUT,
        "BTCUSDT",
        "1m",
        1695685500000,
        1695685559999,
        D("27000"),
        D("27000.5"),
        D("27000"),
        D("27000.5"),
        D("0.057"),
        D("1539.0155"),
        0,
        D(0),
        D(0),
        True,
    )
    # A live subscription: the open candle, updated, then the next one closes it.
    t0 = 1_767_225_600_000

    def row(t: int, close: str) -> list[str]:
        return [str(t), "100", "101", "99", close, "2", "200", "200"]

    snap = a.parse(
        push("candle1m", "snapshot", [row(t0 - 60_000, "100"), row(t0, "100")], t0 + 5_000)
    )
    assert [(x.open_time, x.closed) for x in snap] == [(t0 - 60_000, True), (t0, False)]  # type: ignore[union-attr]
    (upd,) = a.parse(push("candle1m", "update", [row(t0, "100.5")], t0 + 30_000))
    assert isinstance(upd, Kline) and not upd.closed and upd.close == D("100.5")
    held_closed, new = a.parse(push("candle1m", "update", [row(t0 + 60_000, "100.7")], t0 + 61_000))
    assert isinstance(held_closed, Kline) and held_closed.closed
    assert (held_closed.open_time, held_closed.close) == (t0, D("100.5"))
    assert isinstance(new, Kline) and not new.closed
    # A final row pushed after the bucket ended is closed by its ts, and not closed twice.
    (final,) = a.parse(push("candle1m", "update", [row(t0 + 60_000, "100.9")], t0 + 120_000))
    assert isinstance(final, Kline) and final.closed and final.close == D("100.9")
    (nxt,) = a.parse(push("candle1m", "update", [row(t0 + 120_000, "101")], t0 + 121_000))
    assert isinstance(nxt, Kline) and not nxt.closed
    # A snapshot (a new subscription) forgets the held candle: nothing is closed from it.
    (again,) = a.parse(push("candle1m", "snapshot", [row(t0 + 180_000, "102")], t0 + 181_000))
    assert isinstance(again, Kline) and not again.closed and again.open_time == t0 + 180_000


def test_documented_trade_push_and_snapshot_dedup() -> None:
    a = fut()
    doc = [
        {
            "ts": "1695716760565",
            "price": "27000.5",
            "size": "0.001",
            "side": "buy",
            "tradeId": "1111111112",
        },
        {
            "ts": "1695716759514",
            "price": "27000.0",
            "size": "0.001",
            "side": "sell",
            "tradeId": "1111111111",
        },
    ]
    trades = a.parse(push("trade", "snapshot", doc, 1695716761589))
    assert trades == [
        Trade(
            FUT,
            "BTCUSDT",
            1111111111,
            D("27000.0"),
            D("0.001"),
            1111111111,
            1111111111,
            1695716759514,
            True,
        ),
        Trade(
            FUT,
            "BTCUSDT",
            1111111112,
            D("27000.5"),
            D("0.001"),
            1111111112,
            1111111112,
            1695716760565,
            False,
        ),
    ]
    newer = {
        "ts": "1695716770000",
        "price": "27001",
        "size": "0.5",
        "side": "Buy",
        "tradeId": "1111111113",
    }
    # A later snapshot (after a reconnect) repeats trades already seen: only the new one.
    again = a.parse(push("trade", "snapshot", [newer, *doc], 1695716771000))
    assert [t.id for t in again] == [1111111113]  # type: ignore[union-attr]
    assert a.trade_ids_consecutive is False


def test_books_snapshot_update_and_checksum() -> None:
    a = fut()
    snap = {
        "asks": [["27000.5", "8.760"], ["27001.0", "0.400"]],
        "bids": [["27000.0", "2.710"], ["26999.5", "1.460"]],
        "checksum": 0,
        "seq": 123,
        "ts": "1695716059516",
    }
    (d,) = a.parse(push("books", "snapshot", [snap], 1695716059516))
    assert d == DepthDiff(
        FUT,
        "BTCUSDT",
        123,
        123,
        None,
        1695716059516,
        ((D("27000.0"), D("2.710")), (D("26999.5"), D("1.460"))),
        ((D("27000.5"), D("8.760")), (D("27001.0"), D("0.400"))),
        True,
        None,
    )
    assert str(d.asks[0][1]) == "8.760"  # the exchange's string is kept (checksums use it)
    upd = {
        "asks": [["27000.5", "0"]],
        "bids": [],
        "checksum": -12345,
        "seq": 130,
        "pseq": 123,
        "ts": "1695716059666",
    }
    (u,) = a.parse(push("books", "update", [upd], 1695716059666))
    assert isinstance(u, DepthDiff)
    assert (u.first_update_id, u.final_update_id, u.prev_update_id, u.snapshot, u.checksum) == (
        130,
        130,
        123,
        False,
        -12345,
    )
    no_seq = dict(upd)
    del no_seq["seq"], no_seq["pseq"]
    (v,) = a.parse(push("books", "update", [no_seq], 1))
    assert isinstance(v, DepthDiff) and v.final_update_id == 1695716059666  # ts stands in


def _signed(crc: int) -> int:
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def test_checksum_strings_of_the_docs(fixture: dict[str, Any]) -> None:
    for example in fixture["checksum_string_examples"]:
        bids = [(D(p), D(q)) for p, q in example["bids"]]
        asks = [(D(p), D(q)) for p, q in example["asks"]]
        expected = _signed(zlib.crc32(example["check_string"].encode()))
        assert book_checksum(bids, asks) == expected


def test_checksum_keeps_the_original_digits_and_25_levels() -> None:
    bids = [(D("0.5000"), D("1"))]
    asks = [(D("0.50010000"), D("0.00000001"))]
    assert book_checksum(bids, asks) == _signed(zlib.crc32(b"0.5000:1:0.50010000:0.00000001"))
    assert book_checksum(bids, asks) != book_checksum([(D("0.5"), D("1"))], asks)
    many_bids = [(D(100 - i), D(1)) for i in range(30)]
    many_asks = [(D(200 + i), D(2)) for i in range(30)]
    text = ":".join(f"{100 - i}:1:{200 + i}:2" for i in range(25))
    assert book_checksum(many_bids, many_asks) == _signed(zlib.crc32(text.encode()))
    assert any(book_checksum([(D(i), D(1))], []) < 0 for i in range(1, 50))  # signed


def test_checksum_mismatch_only_when_there_is_one() -> None:
    bids, asks = ((D("10"), D("1")),), ((D("11"), D("2")),)
    good = book_checksum(bids, asks)
    diff = DepthDiff(FUT, "X", 5, 5, 4, 1, bids, asks, False, good)
    assert checksum_mismatch(diff, bids, asks) is None
    assert fut().verify_book(diff, bids, asks) is None
    bad = DepthDiff(FUT, "X", 5, 5, 4, 1, bids, asks, False, good + 1)
    assert "checksum" in (checksum_mismatch(bad, bids, asks) or "")
    unchecked = DepthDiff(FUT, "X", 5, 5, 4, 1, bids, asks, False, None)
    assert checksum_mismatch(unchecked, (), ()) is None


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2]",
        '{"arg": {"channel": "candle1m", "instId": "BTCUSDT"}}',  # no data
        push("books9", "update", [], 1),  # unknown channel
        push("candle1m", "update", [["1", "x", "1", "1", "1", "1", "1", "1"]], 1),
        push("candle1m", "update", [["1", "1", "1"]], 1),
        push(
            "trade",
            "update",
            [{"ts": "1", "price": 1.5, "size": "1", "side": "buy", "tradeId": "1"}],
            1,
        ),
        push("books", "update", [{"asks": [["1"]], "bids": [], "seq": 1, "ts": "1"}], 1),
        push(
            "books", "update", [{"asks": [], "bids": [], "seq": 1, "ts": "1", "checksum": 1.5}], 1
        ),
        push(
            "ticker",
            "snapshot",
            [{"bidPr": "NaN", "askPr": "1", "bidSz": "1", "askSz": "1", "ts": "1"}],
            1,
        ),
        '{"event": "subscribe"}',
    ],
)
def test_malformed_frames(frame: str) -> None:
    with pytest.raises(MalformedFrame):
        fut().parse(frame)


# ---- book rules -------------------------------------------------------------------------------


def _diff(
    seq: int,
    pseq: int | None,
    time: int,
    *,
    snapshot: bool = False,
    bids: tuple[tuple[Decimal, Decimal], ...] = (),
) -> DepthDiff:
    return DepthDiff(FUT, "BTCUSDT", seq, seq, pseq, time, bids, (), snapshot)


def test_rules_with_pseq_without_pseq_and_after_a_rest_snapshot() -> None:
    r = BitgetBookRules()
    assert fut().book_rules().name == "bitget-seq"
    # After a stream snapshot at seq 10.
    assert r.stale(_diff(10, 9, 0), 10) and not r.stale(_diff(11, 10, 0), 10)
    assert r.bridges(_diff(11, 10, 0), 10) and not r.bridges(_diff(12, 11, 0), 10)
    assert r.bridges(_diff(15, None, 0), 10)  # without pseq: any higher seq
    # Continuity.
    assert r.follows(_diff(11, 10, 0), _diff(14, 11, 0)) is None
    assert "pseq 12 != previous seq 11" in (r.follows(_diff(11, 10, 0), _diff(14, 12, 0)) or "")
    assert r.follows(_diff(11, None, 0), _diff(14, None, 0)) is None
    assert "not above" in (r.follows(_diff(11, None, 0), _diff(11, None, 0)) or "")
    # After a REST snapshot taken at engine time 5000 (id -5000): joined by time.
    assert r.stale(_diff(20, 19, 5000), -5000) and not r.stale(_diff(21, 20, 5100), -5000)
    assert r.bridges(_diff(21, 20, 5100), -5000) and not r.bridges(_diff(20, 19, 4900), -5000)


def test_book_sync_from_stream_snapshot_then_rest_after_a_gap() -> None:
    sync = BookSync(FUT, "BTCUSDT", BitgetBookRules())
    one = ((D("10"), D("1")),)
    assert sync.on_diff(_diff(10, None, 1000, snapshot=True, bids=one)).applied == 1
    assert sync.synced and sync.book.last_update_id == 10
    assert sync.on_diff(_diff(12, 10, 1100, bids=((D("10"), D("2")),))).applied == 1
    step = sync.on_diff(_diff(20, 15, 1300))  # 15 never came: a gap
    assert step.resync is not None and step.resync.startswith("gap: ") and not sync.synced
    sync.on_diff(_diff(22, 20, 1400, bids=((D("9"), D("5")),)))
    # The REST book (engine time 1300) contains the buffered diff at 1300, not the one after.
    rest = fut().parse_depth(
        json.dumps(
            {
                "code": "00000",
                "msg": "success",
                "requestTime": 1,
                "data": {"asks": [], "bids": [[10, 3]], "ts": "1300"},
            }
        ),
        "BTCUSDT",
    )
    assert (rest.final_update_id, rest.snapshot, rest.time) == (-1300, True, 1300)
    joined = sync.on_snapshot(rest)
    assert sync.synced and joined.applied == 1
    assert sync.book.last_update_id == 22
    assert sync.book.top(5)[0] == ((D("10"), D("3")), (D("9"), D("5")))


# ---- REST -------------------------------------------------------------------------------------


def env(data: Any, code: str = "00000", msg: str = "success") -> str:
    return json.dumps({"code": code, "msg": msg, "requestTime": 1695865615662, "data": data})


def test_klines_request_clamps_the_range_to_the_limit() -> None:
    a = fut()
    req = a.klines_request("BTCUSDT", "1m", 1_000_000_020_000 - 20_000, 1_100_000_000_000, 100)
    params = dict(req.params)
    assert req.path == "/api/v2/mix/market/candles"
    assert params["productType"] == "USDT-FUTURES" and params["granularity"] == "1m"
    start = int(params["startTime"])
    # 100 buckets from the start: the end is the close of the 100th.
    assert int(params["endTime"]) == start + 100 * 60_000 - 1
    assert params["limit"] == "100"
    short = dict(a.klines_request("BTCUSDT", "1h", 0, 7_200_000 - 1, 1000).params)
    assert short["endTime"] == str(7_200_000 - 1)  # already within the limit: unchanged
    latest = dict(a.klines_request("BTCUSDT", "1d", limit=3).params)
    assert latest["granularity"] == "1Dutc" and "startTime" not in latest
    spot = dict(BitgetSpotAdapter().klines_request("BTCUSDT", "1m", limit=5).params)
    assert spot["granularity"] == "1min" and "productType" not in spot
    with pytest.raises(ValueError):
        a.klines_request("BTCUSDT", "3m")  # not a streamed interval
    with pytest.raises(ValueError):
        a.klines_request("BTCUSDT", "1m", limit=1001)


def test_documented_candles_body_and_newest_first_bodies() -> None:
    a = fut()
    doc = [
        ["1695835800000", "26210.5", "26210.5", "26194.5", "26194.5", "26.26", "687897.63"],
        ["1695836100000", "26194.5", "26194.5", "26171", "26171", "17.98", "470618.72"],
    ]
    klines = a.parse_klines(env(doc), "BTCUSDT", "5m", 1695836100000 + 1000)
    assert klines == [
        Kline(
            FUT,
            "BTCUSDT",
            "5m",
            1695835800000,
            1695836099999,
            D("26210.5"),
            D("26210.5"),
            D("26194.5"),
            D("26194.5"),
            D("26.26"),
            D("687897.63"),
            0,
            D(0),
            D(0),
            True,
            "rest",
        ),
        Kline(
            FUT,
            "BTCUSDT",
            "5m",
            1695836100000,
            1695836399999,
            D("26194.5"),
            D("26194.5"),
            D("26171"),
            D("26171"),
            D("17.98"),
            D("470618.72"),
            0,
            D(0),
            D(0),
            False,
            "rest",
        ),
    ]
    assert a.parse_klines(env(doc[::-1]), "BTCUSDT", "5m", 1695836100000 + 1000) == klines
    spot_doc = [
        [
            "1656604800000",
            "37834.5",
            "37849.5",
            "37773.5",
            "37773.5",
            "428.3462",
            "16198849.1079",
            "16198849.1080",
        ]
    ]
    (s,) = BitgetSpotAdapter().parse_klines(env(spot_doc), "BTCUSDT", "1m", 2 * 10**12)
    assert s.quote_volume == D("16198849.1080") and s.closed  # spot: quote volume last


def test_error_envelopes_raise_naming_code_and_msg() -> None:
    a = fut()
    body = env(None, code="40034", msg="Parameter symbol does not exist")
    for parse in (
        lambda: a.parse_klines(body, "X", "1m", 0),
        lambda: a.parse_agg_trades(body, "X"),
        lambda: a.parse_depth(body, "X"),
        lambda: a.parse_server_time(body),
        lambda: a.parse_listed_symbols(body),
    ):
        with pytest.raises(MalformedFrame, match=r"40034.*Parameter symbol does not exist"):
            parse()
    with pytest.raises(MalformedFrame):
        a.parse_klines("<html>", "X", "1m", 0)
    with pytest.raises(MalformedFrame):
        a.parse_klines(env([["1", "2"]]), "X", "1m", 0)


def test_time_fills_depth_and_listings() -> None:
    a = fut()
    assert a.server_time_request().path == "/api/v2/public/time"
    assert a.parse_server_time(env({"serverTime": "1688008631614"})) == 1688008631614
    fills = [
        {
            "tradeId": "2",
            "price": "26383",
            "size": "12.12",
            "side": "Buy",
            "ts": "1695865115000",
            "symbol": "BTCUSDT",
        },
        {
            "tradeId": "1",
            "price": "26372.5",
            "size": "9.25",
            "side": "Sell",
            "ts": "1695865151000",
            "symbol": "BTCUSDT",
        },
    ]
    trades = a.parse_agg_trades(env(fills), "BTCUSDT")
    assert [(t.id, t.time, t.buyer_is_maker, t.source) for t in trades] == [
        (2, 1695865115000, False, "rest"),
        (1, 1695865151000, True, "rest"),
    ]  # oldest first, by time
    req = a.agg_trades_request("BTCUSDT", start_time=10, end_time=20, limit=1000)
    assert req.path == "/api/v2/mix/market/fills-history"
    assert dict(req.params) == {
        "symbol": "BTCUSDT",
        "productType": "USDT-FUTURES",
        "startTime": "10",
        "endTime": "20",
        "limit": "1000",
    }
    assert "startTime" not in dict(a.agg_trades_request("BTCUSDT", from_id=5).params)
    with pytest.raises(ValueError):
        a.agg_trades_request("BTCUSDT", from_id=5, start_time=1)
    # The documented merge-depth answer prints numbers.
    depth = {
        "asks": [[26347.5, 0.25], [26348.0, 0.16]],
        "bids": [[26346.5, 0.16]],
        "ts": "1695870968804",
        "scale": "0.1",
        "precision": "scale0",
        "isMaxPrecision": "NO",
    }
    d = a.parse_depth(env(depth), "BTCUSDT")
    assert d == DepthDiff(
        FUT,
        "BTCUSDT",
        -1695870968804,
        -1695870968804,
        None,
        1695870968804,
        ((D("26346.5"), D("0.16")),),
        ((D("26347.5"), D("0.25")), (D("26348.0"), D("0.16"))),
        True,
    )
    assert dict(a.depth_request("BTCUSDT", 1000).params)["limit"] == "max"
    assert dict(a.depth_request("BTCUSDT", 20).params)["limit"] == "50"
    assert dict(BitgetSpotAdapter().depth_request("BTCUSDT", 1000).params)["limit"] == "150"
    contracts = [
        {"symbol": "BTCUSDT", "symbolStatus": "normal", "symbolType": "perpetual"},
        {"symbol": "ETHUSDT", "symbolStatus": "maintain", "symbolType": "perpetual"},
        {"symbol": "BTCUSDT0927", "symbolStatus": "normal", "symbolType": "delivery"},
    ]
    assert a.exchange_info_request().path == "/api/v2/mix/market/contracts"
    assert a.parse_listed_symbols(env(contracts)) == ["BTCUSDT"]
    symbols = [{"symbol": "BTCUSDT", "status": "online"}, {"symbol": "XUSDT", "status": "halt"}]
    spot = BitgetSpotAdapter()
    assert spot.exchange_info_request().path == "/api/v2/spot/public/symbols"
    assert spot.parse_listed_symbols(env(symbols)) == ["BTCUSDT"]
    with pytest.raises(MalformedFrame):
        spot.parse_listed_symbols(env([{"symbol": "BTCUSDT"}]))
