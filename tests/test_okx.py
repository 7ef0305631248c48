"""Tests of `trio_feed.venues.okx`: documented and recorded frames in, events out; control
frames, REST bodies, paging, book rules and the checksum."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from trio_feed.core.book import OrderBook
from trio_feed.core.book_sync import GAP, BookSync, SyncStep, VerifyingRules
from trio_feed.errors import MalformedFrame
from trio_feed.events import BookTicker, DepthDiff, Kline, Trade
from trio_feed.venues import get_adapter
from trio_feed.venues.base import (
    Ack,
    Notice,
    PingStyle,
    Pong,
    RequestError,
    RestRequest,
    ServerShutdown,
    StreamSpec,
)
from trio_feed.venues.okx import (
    KLINE_BARS,
    MAX_ARGS_BYTES,
    OkxAdapter,
    OkxBookRules,
    book_checksum,
    checksum_string,
)

DATA = Path(__file__).parent / "data"
A = OkxAdapter()
D = Decimal


def fixture(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return result


def dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False)


def one(frame: str | bytes) -> Any:
    items = A.parse(frame)
    assert len(items) == 1, items
    return items[0]


def ok(data: object) -> str:
    return dumps({"code": "0", "msg": "", "data": data})


# ---- class attributes, registry, channels ------------------------------------------------


def test_class_attributes_and_registry() -> None:
    assert isinstance(get_adapter("okx"), OkxAdapter)
    assert A.name == "okx"
    assert A.default_ws_url == "wss://ws.okx.com:8443"
    assert A.default_rest_url == "https://www.okx.com"
    assert A.ping_style is PingStyle.APPLICATION
    assert A.app_ping() == "ping"
    assert A.trade_ids_consecutive is False
    assert A.max_ping_interval == 30.0
    assert A.rest_weight_header is None


def test_streams_and_routes() -> None:
    assert A.stream("BTC-USDT", "kline_1m") == StreamSpec(
        "BTC-USDT", "kline_1m", "candle1m:BTC-USDT", "business"
    )
    assert A.stream("BTC-USDT-SWAP", "kline_1h").name == "candle1H:BTC-USDT-SWAP"
    assert A.stream("BTC-USDT", "kline_1d").name == "candle1Dutc:BTC-USDT"
    assert A.stream("BTC-USDT", "kline_6h").name == "candle6Hutc:BTC-USDT"
    assert A.stream("BTC-USDT", "kline_1w").name == "candle1Wutc:BTC-USDT"
    assert A.stream("BTC-USDT", "aggTrade") == StreamSpec(
        "BTC-USDT", "aggTrade", "trades:BTC-USDT", "public"
    )
    assert A.stream("BTC-USDT", "depth").name == "books:BTC-USDT"
    assert A.stream("BTC-USDT", "depth").route == "public"
    assert A.stream("BTC-USDT", "bookTicker").name == "bbo-tbt:BTC-USDT"
    # 7m has no bar: built from the trade stream.
    assert A.stream("BTC-USDT", "kline_7m") == A.stream("BTC-USDT", "aggTrade")
    assert A.built_interval("kline_7m") == "7m"
    assert A.built_interval("kline_8h") == "8h"
    assert A.built_interval("kline_1m") is None
    assert A.kline_key("BTC-USDT", "kline_1h") == ("BTC-USDT", "1h")
    with pytest.raises(ValueError, match="markPrice"):
        A.stream("BTC-USDT", "markPrice")


def test_check_channel_reasons() -> None:
    for ok_channel in ("kline_1m", "kline_3M", "kline_7m", "aggTrade", "depth", "bookTicker"):
        assert A.check_channel(ok_channel) is None
    reason = A.check_channel("markPrice")
    assert reason is not None and "not supported" in reason
    reason = A.check_channel("continuousKline_1m")
    assert reason is not None and "continuous" in reason
    reason = A.check_channel("kline_xyz")
    assert reason is not None and "not a kline interval" in reason
    reason = A.check_channel("aggTrades")
    assert reason is not None and "did you mean 'aggTrade'" in reason
    for reason in (A.check_channel(c) for c in ("markPrice", "kline_x", "continuousKline_1m")):
        assert reason is not None and "\n" not in reason
    assert [c.pattern for c in A.channels()] == [
        "kline_<interval>",
        "aggTrade",
        "depth",
        "bookTicker",
    ]
    assert A.channels()[0].intervals == tuple(KLINE_BARS)


def test_connect_url_per_route_and_never_mixed() -> None:
    candle = A.stream("BTC-USDT", "kline_1m")
    book = A.stream("BTC-USDT", "depth")
    ws = "wss://ws.okx.com:8443/"
    assert A.connect_url(ws, "business", [candle]) == "wss://ws.okx.com:8443/ws/v5/business"
    assert A.connect_url(ws, "public", [book]) == "wss://ws.okx.com:8443/ws/v5/public"
    with pytest.raises(ValueError, match="not on route"):
        A.connect_url(ws, "public", [candle, book])


# ---- subscribe requests --------------------------------------------------------------------


def test_subscribe_request_shape_matches_the_docs() -> None:
    doc = fixture("okx_v5_books")["subscribe_request"]
    [msg] = A.open_messages([A.stream("BTC-USDT", "depth")], 1512)
    assert orjson.loads(msg.text) == doc
    assert msg.request_id == 1512
    assert msg.streams == ("books:BTC-USDT",)
    [unsub] = A.unsubscribe([A.stream("BTC-USDT", "kline_1m")], 3)
    assert orjson.loads(unsub.text) == {
        "id": "3",
        "op": "unsubscribe",
        "args": [{"channel": "candle1m", "instId": "BTC-USDT"}],
    }


def test_subscribe_batches_stay_under_the_args_limit() -> None:
    symbols = [f"SYM{i:05d}-USDT-SWAP" for i in range(3000)]
    streams = [A.stream(s, "aggTrade") for s in symbols]
    messages = A.subscribe(streams, 10)
    assert len(messages) > 1  # 3000 args do not fit in 64 KB
    assert [m.request_id for m in messages] == list(range(10, 10 + len(messages)))
    covered = [name for m in messages for name in m.streams]
    assert covered == [s.name for s in streams]
    for m in messages:
        args = orjson.loads(m.text)["args"]
        assert len(orjson.dumps(args)) <= MAX_ARGS_BYTES
        assert [f"{a['channel']}:{a['instId']}" for a in args] == list(m.streams)
    # A handful goes in one request: the 480 requests/hour budget is spent sparingly.
    assert len(A.open_messages(streams[:200], 1)) == 1
    assert A.open_messages([], 1) == []


# ---- control frames ------------------------------------------------------------------------


def test_pong_text() -> None:
    assert A.parse("pong") == [Pong()]
    assert A.parse(b"pong") == [Pong()]
    assert fixture("okx_v5_ws_control")["pong_text"] == "pong"


def test_acks_and_errors() -> None:
    control = fixture("okx_v5_ws_control")
    ack = one(dumps(control["subscribe_response"]))
    assert ack == Ack(1512, {"channel": "tickers", "instId": "BTC-USDT"})
    assert one(dumps(fixture("okx_v5_candle")["subscribe_response"])) == Ack(
        1512, {"channel": "candle1D", "instId": "BTC-USDT"}
    )
    # No id echoed (we always send one): nothing waits for it, a notice.
    assert isinstance(one(dumps(control["unsubscribe_response"])), Notice)
    err = one(dumps(control["error_response"]))
    assert isinstance(err, RequestError)
    assert (err.request_id, err.code) == (1512, "60012")
    assert err.message.startswith("Invalid request: ")
    assert "\u00a0" in err.message  # kept exactly as sent
    err = one(dumps({"event": "error", "code": "60018", "msg": "Wrong URL", "connId": "x"}))
    assert err == RequestError(None, "60018", "Wrong URL")
    for rec in control["recorded_subscribe_acks"]:
        assert isinstance(one(rec["raw"]), Notice)


def test_notice_64008_is_a_server_shutdown() -> None:
    notice = one(dumps(fixture("okx_v5_ws_control")["notice"]))
    assert notice == ServerShutdown(
        None, "64008: The connection will soon be closed for a service upgrade. Please reconnect."
    )
    other = one(dumps({"event": "notice", "code": "1", "msg": "hi"}))
    assert other == Notice("notice 1: hi")
    assert isinstance(
        one(dumps({"event": "channel-conn-count", "channel": "books", "connCount": "2"})), Notice
    )


# ---- candles ---------------------------------------------------------------------------------


def test_documented_candles() -> None:
    first, second = fixture("okx_v5_candle")["documented"]
    assert one(dumps(first)) == Kline(
        "okx",
        "BTC-USDT",
        "1d",
        1597026383085,
        1597026383085 + 86_400_000 - 1,
        D("8533.02"),
        D("8553.74"),
        D("8527.17"),
        D("8548.26"),
        D("45247"),  # spot: vol is in the base currency
        D("5529.5858061"),
        0,
        D(0),
        D(0),
        False,
        "ws",
    )
    k = one(dumps(second))
    assert (k.open_time, k.open, k.high, k.low, k.close) == (
        1629993600000,
        D("42500"),
        D("48199.9"),
        D("41006.1"),
        D("41006.1"),
    )
    assert (k.volume, k.quote_volume, k.closed) == (
        D("3587.41204591"),
        D("166741046.22583129"),
        False,
    )


def test_confirmed_candle_of_a_swap_uses_base_volume() -> None:
    frame = dumps(
        {
            "arg": {"channel": "candle1m", "instId": "BTC-USDT-SWAP"},
            "data": [["1767225600000", "1", "2", "0.5", "1.5", "120", "1.2", "1.8", "1"]],
        }
    )
    k = one(frame)
    assert (k.interval, k.close_time, k.closed) == ("1m", 1767225659999, True)
    assert (k.volume, k.quote_volume) == (D("1.2"), D("1.8"))  # vol counted contracts
    month = dumps(
        {
            "arg": {"channel": "candle1Mutc", "instId": "BTC-USDT"},
            "data": [["1767225600000", "1", "2", "0.5", "1.5", "1", "1", "1", "1"]],
        }
    )
    assert one(month).close_time == 1769903999999  # 2026-01-31T23:59:59.999Z


@pytest.mark.parametrize(
    "row",
    [
        ["x", "1", "1", "1", "1", "1", "1", "1", "0"],
        ["1", "1", "1", "1", "1", "1", "1", "1", "2"],
        ["1", "1", "1", "1", "1", "1", "1", "1"],
        ["1", 1, "1", "1", "1", "1", "1", "1", "0"],
        ["1", "NaN", "1", "1", "1", "1", "1", "1", "0"],
    ],
)
def test_bad_candles_are_malformed(row: list[object]) -> None:
    frame = dumps({"arg": {"channel": "candle1m", "instId": "BTC-USDT"}, "data": [row]})
    with pytest.raises(MalformedFrame, match="okx"):
        A.parse(frame)


def test_unknown_and_broken_frames_are_malformed() -> None:
    for frame in (
        "{not json",
        "[]",
        '{"arg":{"channel":"tickers","instId":"X"},"data":[]}',
        '{"arg":{"channel":"books","instId":"X"},"action":"odd","data":[]}',
        '{"foo":1}',
        "ping",
    ):
        with pytest.raises(MalformedFrame):
            A.parse(frame)


# ---- trades ----------------------------------------------------------------------------------


def test_documented_trade() -> None:
    [doc] = fixture("okx_v5_trades")["documented"]
    assert one(dumps(doc)) == Trade(
        "okx",
        "BTC-USDT",
        130639474,
        D("42219.9"),
        D("0.12060306"),
        130639472,  # count 3: fills ...472, ...473, ...474
        130639474,
        1630048897897,
        False,  # the taker bought
        "ws",
    )


def test_recorded_trades() -> None:
    recorded = [r["raw"] for r in fixture("okx_v5_trades")["recorded"]]
    assert len(recorded) == 74
    assert one(recorded[0]) == Trade(
        "okx", "BTC-USD-220527", 7849, D("30218.8"), D("1"), 7849, 7849, 1652459199958, False
    )
    assert one(recorded[1]) == Trade(
        "okx", "UNI-USD-SWAP", 12883020, D("5.123"), D("100"), 12883020, 12883020,
        1652459215150, True,
    )  # fmt: skip
    assert one(recorded[-1]) == Trade(
        "okx", "BTC-USDT", 338476375, D("30227.6"), D("0.00000088"), 338476375, 338476375,
        1652459235576, False,
    )  # fmt: skip
    for raw in recorded:
        t = one(raw)
        d = json.loads(raw)["data"][0]
        assert (t.symbol, str(t.id), t.price, t.qty, str(t.time)) == (
            d["instId"],
            d["tradeId"],
            D(d["px"]),
            D(d["sz"]),
            d["ts"],
        )
        assert t.buyer_is_maker is (d["side"] == "sell")
    btc = [one(r).id for r in recorded if '"BTC-USDT"' in r]
    assert btc == sorted(btc)  # ids increase per instrument


# ---- books -----------------------------------------------------------------------------------


def test_documented_book_snapshot_and_update() -> None:
    books = fixture("okx_v5_books")
    for version, checksum in (("documented_2026_02", -855196043), ("documented_2026_07", 0)):
        snap = one(dumps(books[version]["snapshot"]))
        assert isinstance(snap, DepthDiff)
        assert snap.snapshot
        assert (snap.symbol, snap.first_update_id, snap.final_update_id) == (
            "BTC-USDT",
            123456,
            123456,
        )
        assert snap.prev_update_id is None
        assert snap.time == 1597026383085
        assert snap.checksum == checksum
        assert snap.bids[0] == (D("8476.97"), D("256"))
        assert snap.bids[-1] == (D("8446"), D("95"))
        assert snap.asks[0] == (D("8476.98"), D("415"))
        assert len(snap.bids) == len(snap.asks) == 8
        update = one(dumps(books[version]["update"]))
        assert not update.snapshot
        assert (update.prev_update_id, update.final_update_id) == (123456, 123457)
    ticker = one(dumps(books["documented_2026_02"]["bbo_tbt"]))
    assert ticker == BookTicker(
        "okx",
        "BCH-USDT-SWAP",
        D("111.05"),
        D("57745"),
        D("111.06"),
        D("55154"),
        363996337,
        1670324386802,
    )


def test_checksum_string_examples() -> None:
    for ex in fixture("okx_v5_books")["checksum_string_examples"]:
        bids = [(D(p), D(q)) for p, q, *_ in ex["bids"]]
        asks = [(D(p), D(q)) for p, q, *_ in ex["asks"]]
        assert checksum_string(bids, asks) == ex["check_string"]


def test_recorded_book_checksums() -> None:
    """Real 2022 frames, when the checksum was a live CRC32: the book loaded from each
    frame verifies (a tiny price like 0.00000001 included), and a changed level does not."""
    rules = OkxBookRules()
    frames = fixture("okx_v5_books_recorded")["recorded"]
    assert len(frames) == 4
    for rec in frames:
        d = json.loads(rec["raw"])["data"][0]
        bids = tuple((D(p), D(q)) for p, q, *_ in d["bids"])
        asks = tuple((D(p), D(q)) for p, q, *_ in d["asks"])
        assert book_checksum(bids, asks) == d["checksum"]
        book = OrderBook("okx", "X")
        book.load_snapshot(1, bids, asks, 0)
        diff = DepthDiff("okx", "X", 1, 1, None, 0, bids, asks, True, d["checksum"])
        assert rules.verify(book, diff) is None
        book.apply((), ((asks[0][0], asks[0][1] + 1),), 2, 0)
        reason = rules.verify(book, diff)
        assert reason is not None and "checksum" in reason
    assert "0.00000001:19" in checksum_string(
        tuple((D(p), D(q)) for p, q, *_ in json.loads(frames[0]["raw"])["data"][0]["bids"]), ()
    )


def test_checksum_covers_the_top_25_levels_only() -> None:
    bids = tuple((D(100 - i), D(1)) for i in range(30))
    asks = tuple((D(200 + i), D(1)) for i in range(30))
    assert book_checksum(bids, asks) == book_checksum(bids[:25], asks[:25])
    assert book_checksum(bids, asks) != book_checksum(bids[:24], asks[:25])
    assert checksum_string(bids[:1], ()) == "100:1"
    assert -(2**31) <= book_checksum(bids, asks) < 2**31


def _book(seq: int, prev: int | None, snapshot: bool = False, checksum: int = 0) -> DepthDiff:
    return DepthDiff("okx", "X", seq, seq, prev, seq, ((D(1), D(seq)),), (), snapshot, checksum)


def test_book_rules_seqid_chain() -> None:
    rules = OkxBookRules()
    _typed: VerifyingRules = rules
    assert _typed.name == "okx-seq"
    seqs = fixture("okx_v5_books")["seqid_example"]
    diffs = [_book(s["seqId"], s["prevSeqId"]) for s in seqs]
    # snapshot -> normal -> keep-alive (prev == seq) -> reset (seq < prev) -> normal
    for prev, diff in itertools.pairwise(diffs):
        assert rules.follows(prev, diff) is None, (prev, diff)
    assert rules.follows(_book(10, -1), _book(15, 10)) is None
    assert rules.follows(_book(15, 10), _book(20, 16)) == "prevSeqId 16 != previous seqId 15"
    assert rules.follows(_book(15, 10), _book(15, 10)) == "update seqId 15 repeated"
    # Joining a REST snapshot at seqId 15.
    assert rules.stale(_book(12, 10), 15)
    assert not rules.stale(_book(15, 12), 15)
    assert rules.bridges(_book(15, 12), 15)
    assert rules.bridges(_book(18, 15), 15)
    assert rules.bridges(_book(15, 15), 15)  # a keep-alive at the snapshot's id
    assert not rules.bridges(_book(20, 16), 15)
    # A reset (seq < prev) is never stale, and bridges only when prev matches.
    assert not rules.stale(_book(3, 15), 15)
    assert rules.bridges(_book(3, 15), 15)
    assert not rules.bridges(_book(3, 16), 15)


def test_book_sync_with_okx_rules_and_a_checksum() -> None:
    sync = BookSync("okx", "X", OkxBookRules())
    bids = ((D("10"), D("1")),)
    asks = ((D("11"), D("2")),)
    good = book_checksum(bids, asks)
    snap = DepthDiff("okx", "X", 5, 5, None, 1, bids, asks, True, good)
    assert sync.on_diff(snap) == SyncStep(1)
    upd_bids = ((D("10"), D("3")),)
    after = book_checksum(upd_bids, asks)
    assert sync.on_diff(DepthDiff("okx", "X", 9, 9, 5, 2, upd_bids, (), False, after)) == SyncStep(
        1
    )
    # checksum 0: not checked (post-2026 OKX), even though the book would not match
    assert sync.on_diff(DepthDiff("okx", "X", 12, 12, 9, 3, ((D("9"), D("1")),), ())) == SyncStep(1)
    assert sync.on_diff(
        DepthDiff("okx", "X", 13, 13, 12, 4, ((D("8"), D("1")),), (), False, 0)
    ) == SyncStep(1)
    # A wrong non-zero checksum is a break.
    step = sync.on_diff(DepthDiff("okx", "X", 14, 14, 13, 5, ((D("7"), D("1")),), (), False, 1))
    assert step.resync is not None and step.resync.startswith(GAP + "checksum")
    assert not sync.synced


# ---- REST ------------------------------------------------------------------------------------


def test_server_time() -> None:
    assert A.server_time_request() == RestRequest("GET", "/api/v5/public/time", weight=4)
    assert A.parse_server_time(ok([{"ts": "1597026383085"}])) == 1597026383085


def test_error_bodies_name_code_and_message() -> None:
    body = dumps({"code": "50011", "msg": "Too Many Requests", "data": []})
    for parse in (
        A.parse_server_time,
        lambda b: A.parse_klines(b, "BTC-USDT", "1m", 0),
        lambda b: A.parse_agg_trades(b, "BTC-USDT"),
        lambda b: A.parse_depth(b, "BTC-USDT"),
        A.parse_listed_symbols,
    ):
        with pytest.raises(MalformedFrame, match="error 50011: Too Many Requests"):
            parse(body)
    with pytest.raises(MalformedFrame, match="error 51001: Instrument ID does not exist"):
        A.parse_klines(
            dumps({"code": "51001", "msg": "Instrument ID does not exist", "data": []}),
            "X",
            "1m",
            0,
        )
    for bad in ("<html>", "[]", '{"data": []}', ok("x")):
        with pytest.raises(MalformedFrame):
            A.parse_server_time(bad)


def test_rest_candles_come_out_oldest_first() -> None:
    doc = fixture("okx_v5_rest_candles")
    klines = A.parse_klines(dumps(doc["candles"]), "BTC-USDT", "1m", 1597026383085 + 10**6)
    assert [k.close for k in klines] == [D("3.708"), D("3.72")]  # same ts in the docs' example
    assert [k.closed for k in klines] == [False, True]  # confirm "0" / "1"
    assert all(k.source == "rest" for k in klines)
    assert klines[1].quote_volume == D("37632347.24399722")
    rows = [
        [str(1_000_000 * 60_000 + i * 60_000), "1", "1", "1", "1", "1", "1", "1", "1"]
        for i in (2, 1, 0)
    ]  # newest first, as OKX sends them
    klines = A.parse_klines(ok(rows), "BTC-USDT", "1m", 2**62)
    assert [k.open_time for k in klines] == sorted(k.open_time for k in klines)
    # A confirmed row that ends after the server time is not closed yet.
    late = A.parse_klines(ok(rows), "BTC-USDT", "1m", 1_000_000 * 60_000 + 60_000)
    assert [k.closed for k in late] == [True, False, False]
    history = A.parse_klines(dumps(doc["history_candles"]), "BTC-USDT", "1m", 2**62)
    assert [k.closed for k in history] == [True, True]


def test_klines_request_pages_from_the_start() -> None:
    t0 = 1_767_225_600_000
    req = A.klines_request("BTC-USDT", "1m", start_time=t0, end_time=t0 + 10 * 3_600_000, limit=100)
    params = dict(req.params)
    assert req.path == "/api/v5/market/history-candles"
    # Only the 100 minutes from the start are asked for: OKX would otherwise answer the
    # newest 100 of the range and the oldest would be lost.
    assert params == {
        "instId": "BTC-USDT",
        "bar": "1m",
        "after": str(t0 + 99 * 60_000 + 1),
        "before": str(t0 - 1),
        "limit": "100",
    }
    short = dict(A.klines_request("BTC-USDT", "1h", start_time=t0, end_time=t0 + 3_600_000).params)
    assert (short["after"], short["bar"]) == (str(t0 + 3_600_000 + 1), "1H")
    latest = A.klines_request("BTC-USDT-SWAP", "1d", limit=3)
    assert latest.path == "/api/v5/market/candles"
    assert dict(latest.params) == {"instId": "BTC-USDT-SWAP", "bar": "1Dutc", "limit": "3"}
    with pytest.raises(ValueError, match="7m"):
        A.klines_request("BTC-USDT", "7m")
    with pytest.raises(ValueError, match="limit"):
        A.klines_request("BTC-USDT", "1m", start_time=t0, limit=101)


def test_rest_trades_and_their_request() -> None:
    body = ok(
        [
            {"instId": "BTC-USDT", "tradeId": "20", "px": "1", "sz": "2", "side": "sell",
             "ts": "5", "count": "2", "source": "0"},
            {"instId": "BTC-USDT", "tradeId": "18", "px": "1.5", "sz": "1", "side": "buy",
             "ts": "4"},
        ]
    )  # fmt: skip
    trades = A.parse_agg_trades(body, "BTC-USDT")
    assert trades == [
        Trade("okx", "BTC-USDT", 18, D("1.5"), D("1"), 18, 18, 4, False, "rest"),
        Trade("okx", "BTC-USDT", 20, D("1"), D("2"), 19, 20, 5, True, "rest"),
    ]
    req = A.agg_trades_request("BTC-USDT", limit=100)
    assert req.target == "/api/v5/market/trades?instId=BTC-USDT&limit=100"
    with pytest.raises(ValueError, match="latest"):
        A.agg_trades_request("BTC-USDT", from_id=5)


def test_rest_depth() -> None:
    doc = fixture("okx_v5_rest_books")["documented"]
    snap = A.parse_depth(dumps(doc), "BTC-USDT")
    assert snap == DepthDiff(
        "okx",
        "BTC-USDT",
        3235851742,
        3235851742,
        None,
        1629966436396,
        ((D("41006.3"), D("0.30178218")),),
        ((D("41006.8"), D("0.60038921")),),
        True,
    )
    assert A.depth_request("BTC-USDT", 1000).target == "/api/v5/market/books?instId=BTC-USDT&sz=400"
    assert dict(A.depth_request("BTC-USDT", 20).params)["sz"] == "20"
    with pytest.raises(MalformedFrame, match="seqId"):
        A.parse_depth(ok([{"asks": [], "bids": [], "ts": "1"}]), "BTC-USDT")


def test_listed_symbols() -> None:
    assert A.exchange_info_request().target == "/api/v5/public/instruments?instType=SWAP"
    body = ok(
        [
            {"instId": "BTC-USDT-SWAP", "state": "live"},
            {"instId": "OLD-USDT-SWAP", "state": "suspend"},
            {"instId": "ETH-USDT-SWAP", "state": "live"},
        ]
    )
    assert A.parse_listed_symbols(body) == ["BTC-USDT-SWAP", "ETH-USDT-SWAP"]
    with pytest.raises(MalformedFrame):
        A.parse_listed_symbols(ok([{"instId": "X"}]))


def test_a_ping_interval_of_thirty_seconds_or_more_is_a_config_error() -> None:
    from trio_feed import config_from_dict
    from trio_feed.errors import ConfigError
    from trio_feed.plan import plan_feed

    def plan(interval: float) -> None:
        plan_feed(
            config_from_dict(
                {
                    "venues": [
                        {"exchange": "okx", "symbols": ["BTC-USDT-SWAP"], "channels": ["aggTrade"]}
                    ],
                    "ping": {"interval": interval},
                    "sinks": [],
                },
                environ={},
            )
        )

    plan(20)  # the default is fine
    with pytest.raises(ConfigError, match=r"venues\[0\]\.ping\.interval: okx closes"):
        plan(30)
