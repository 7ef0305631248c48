"""Tests of the fake exchange shell (`trio_feed.testing.FakeExchange`).

Every test runs in virtual time (``autojump_clock``) over memory streams, with a raw
trio-websocket client, except the one real-clock loopback smoke test of ``serve()``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from trio_feed.events import DepthDiff
from trio_feed.testing import FakeExchange, kline_open_time
from trio_feed.venues import get_adapter
from trio_feed.venues.binance_usdm import BinanceUsdmAdapter
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
    wrap_client_stream,
)

START = 1_767_225_600_000
HOST = "fstream.binance.com"


@asynccontextmanager
async def open_ws(
    fake: FakeExchange, resource: str, **kwargs: Any
) -> AsyncIterator[WebSocketConnection]:
    """A raw trio-websocket client connected through ``fake.connect``."""
    stream = await fake.connect(f"wss://{HOST}{resource}")
    async with trio.open_nursery() as nursery:
        ws = await wrap_client_stream(nursery, stream, HOST, resource, **kwargs)  # type: ignore[arg-type]
        yield ws
        nursery.cancel_scope.cancel()


async def receive_for(ws: WebSocketConnection, seconds: float) -> list[Any]:
    """Every message (parsed) received within ``seconds``; stops early if the connection ends."""
    out: list[Any] = []
    with trio.move_on_after(seconds):
        try:
            while True:
                out.append(json.loads(await ws.get_message()))
        except ConnectionClosed:
            pass
    return out


async def receive_until_closed(ws: WebSocketConnection) -> tuple[list[str], int]:
    """Every text message until the connection ends, and the close code the client saw."""
    texts: list[str] = []
    while True:
        try:
            message = await ws.get_message()
        except ConnectionClosed:
            break
        assert isinstance(message, str)
        texts.append(message)
    assert ws.closed is not None
    return texts, ws.closed.code


async def request(ws: WebSocketConnection, message: dict[str, Any] | str) -> Any:
    """Send a control message and return the reply (skipping data frames)."""
    await ws.send_message(message if isinstance(message, str) else json.dumps(message))
    while True:
        reply = json.loads(await ws.get_message())
        if "stream" not in reply and ("result" in reply or "code" in reply):
            return reply


async def handshake_rejection(fake: FakeExchange, resource: str) -> ConnectionRejected:
    """Connect expecting the handshake to be rejected; return the rejection."""
    caught: list[ConnectionRejected] = []
    try:
        async with open_ws(fake, resource):
            pass
    except* ConnectionRejected as group:
        # wrap_client_stream's reader raises it inside our nursery: it comes grouped.
        rest: BaseException | None = group
        while isinstance(rest, BaseExceptionGroup):
            rest = rest.exceptions[0]
        assert isinstance(rest, ConnectionRejected)
        caught.append(rest)
    (rejected,) = caught
    return rejected


def by_stream(messages: list[Any], name: str) -> list[Any]:
    return [m["data"] for m in messages if m["stream"] == name]


# --------------------------------------------------------------------------- streams


async def test_combined_stream_frames_match_the_market(autojump_clock: trio.abc.Clock) -> None:
    path = "/market/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade"
    async with FakeExchange(seed=1) as fake, open_ws(fake, path) as ws:
        messages = await receive_for(ws, 30)
        assert fake.now_ms() == START + 30_000
        btc = by_stream(messages, "btcusdt@aggTrade")
        eth = by_stream(messages, "ethusdt@aggTrade")
        assert len(btc) + len(eth) == len(messages)
        assert 30 < len(btc) < 100 and 30 < len(eth) < 100
        assert btc == fake.sent("btcusdt@aggTrade")
        assert btc[0]["e"] == "aggTrade" and btc[0]["s"] == "BTCUSDT"
        assert list(btc[0]) == ["e", "E", "s", "a", "p", "q", "f", "l", "T", "m"]
        trades = fake.market.trades("BTCUSDT")[: len(btc)]
        assert [(d["a"], d["p"], d["q"], d["T"], d["m"]) for d in btc] == [
            (t.agg_id, format(t.price, "f"), format(t.qty, "f"), t.time, t.buyer_is_maker)
            for t in trades
        ]
        assert all(d["E"] >= d["T"] and d["E"] - d["T"] < 100 for d in btc)
        record = fake.connections[0]
        assert record.route == "market" and record.combined and record.is_open
        assert record.streams == ["btcusdt@aggTrade", "ethusdt@aggTrade"]


async def test_raw_paths_send_bare_payloads(autojump_clock: trio.abc.Clock) -> None:
    async with FakeExchange(seed=2) as fake, open_ws(fake, "/market/ws/btcusdt@aggTrade") as ws:
        messages = await receive_for(ws, 10)
        assert messages and all(m["e"] == "aggTrade" for m in messages)
        assert fake.connections[0].combined is False


@pytest.mark.parametrize(
    ("path", "delivers"),
    [
        ("/public/stream?streams=btcusdt@aggTrade", False),  # trades live on /market
        ("/market/stream?streams=btcusdt@depth@100ms", False),  # book data lives on /public
        ("/market/stream?streams=dogeusdt@aggTrade", False),  # unknown symbol
        ("/market/stream?streams=btcusdt@nonsense", False),  # unknown stream
        ("/market/stream?streams=BTCUSDT@aggTrade", False),  # names are lower-case
        ("/ws/btcusdt@markPrice", False),  # unrouted paths carry only public streams
        ("/stream?streams=btcusdt@depth@100ms", True),
        ("/ws/btcusdt@bookTicker", True),
        ("/public/ws/btcusdt@depth", True),
        ("/market/stream?streams=btcusdt@markPrice@1s", True),
    ],
)
async def test_routes(autojump_clock: trio.abc.Clock, path: str, delivers: bool) -> None:
    async with FakeExchange(seed=3) as fake, open_ws(fake, path) as ws:
        messages = await receive_for(ws, 5)
        assert bool(messages) is delivers
        assert fake.connections[0].is_open  # a wrong route is accepted, silently


async def test_unknown_path_is_rejected(autojump_clock: trio.abc.Clock) -> None:
    async with FakeExchange() as fake:
        with pytest.RaisesGroup(ConnectionRejected, flatten_subgroups=True):
            async with open_ws(fake, "/private/ws?listenKey=x"):
                pass


async def test_kline_streams(autojump_clock: trio.abc.Clock) -> None:
    path = "/market/stream?streams=btcusdt@kline_1m/btcusdt_perpetual@continuousKline_1m"
    async with FakeExchange(seed=4) as fake, open_ws(fake, path) as ws:
        messages = await receive_for(ws, 190)
        klines = by_stream(messages, "btcusdt@kline_1m")
        continuous = by_stream(messages, "btcusdt_perpetual@continuousKline_1m")
        # The open kline is pushed every kline_every ticks (0.2 s).
        assert 900 < len(klines) < 960
        final = [k["k"] for k in klines if k["k"]["x"]]
        assert [k["t"] for k in final] == [START, START + 60_000, START + 120_000]
        # Exactly one final frame per kline, after its updates and before the next kline's.
        opens = [k["k"]["t"] for k in klines]
        assert opens == sorted(opens)
        for bar in final:
            frames = [k["k"] for k in klines if k["k"]["t"] == bar["t"]]
            assert frames[-1] == bar and not any(f["x"] for f in frames[:-1])
        truth = fake.market.klines("BTCUSDT", "1m")
        assert [(k["o"], k["h"], k["l"], k["c"], k["v"], k["n"]) for k in final] == [
            (
                format(b.open, "f"),
                format(b.high, "f"),
                format(b.low, "f"),
                format(b.close, "f"),
                format(b.volume, "f"),
                b.trades,
            )
            for b in truth
        ]
        assert final[0]["T"] == START + 59_999 and final[0]["i"] == "1m" and final[0]["B"] == "0"
        # Continuous klines carry the same data, with ps/ct and no symbol inside k.
        assert continuous[0]["e"] == "continuous_kline"
        assert continuous[0]["ps"] == "BTCUSDT" and continuous[0]["ct"] == "PERPETUAL"
        assert "s" not in continuous[0]["k"]
        assert [{**c["k"], "s": "BTCUSDT"} for c in continuous] == [k["k"] for k in klines]


async def test_rest_klines_equal_streamed_closed_klines(autojump_clock: trio.abc.Clock) -> None:
    path = "/market/stream?streams=ethusdt@kline_1m/ethusdt@kline_3m"
    async with FakeExchange(seed=5, kline_every=50) as fake, open_ws(fake, path) as ws:
        messages = await receive_for(ws, 7 * 60 + 30)
        async with httpx.AsyncClient(
            transport=fake.rest_transport, base_url="https://fapi.binance.com"
        ) as client:
            for interval in ("1m", "3m"):
                streamed = [
                    m["k"] for m in by_stream(messages, f"ethusdt@kline_{interval}") if m["k"]["x"]
                ]
                response = await client.get(
                    "/fapi/v1/klines", params={"symbol": "ETHUSDT", "interval": interval}
                )
                rows = response.json()
                assert rows[-1][0] > streamed[-1]["t"]  # the still-open kline comes last
                as_rows = [
                    [
                        k["t"],
                        k["o"],
                        k["h"],
                        k["l"],
                        k["c"],
                        k["v"],
                        k["T"],
                        k["q"],
                        k["n"],
                        k["V"],
                        k["Q"],
                        "0",
                    ]
                    for k in streamed
                ]
                assert rows[:-1] == as_rows
                continuous = await client.get(
                    "/fapi/v1/continuousKlines",
                    params={"pair": "ETHUSDT", "contractType": "PERPETUAL", "interval": interval},
                )
                assert continuous.json()[:-1] == as_rows


async def test_depth_stream_keeps_a_book_in_sync(autojump_clock: trio.abc.Clock) -> None:
    path = "/public/stream?streams=btcusdt@depth@100ms/btcusdt@depth@500ms/btcusdt@depth"
    async with FakeExchange(seed=6) as fake, open_ws(fake, path) as ws:
        async with httpx.AsyncClient(
            transport=fake.rest_transport, base_url="https://fapi.binance.com"
        ) as client:
            await trio.sleep(0.05)  # subscribed, nothing received yet
            snapshot = (await client.get("/fapi/v1/depth?symbol=BTCUSDT&limit=1000")).json()
        messages = await receive_for(ws, 20)
        last_u = snapshot["lastUpdateId"]
        book = {
            "b": {p: q for p, q in snapshot["bids"]},
            "a": {p: q for p, q in snapshot["asks"]},
        }
        synced = False
        for diff in by_stream(messages, "btcusdt@depth@100ms"):
            if diff["u"] < last_u:
                continue
            if not synced:
                # The USD-M rule for the first event after a snapshot.
                assert diff["U"] <= last_u <= diff["u"]
                synced = True
            else:
                assert diff["pu"] == last_u
            assert diff["U"] == diff["pu"] + 1
            for side in ("b", "a"):
                for price, qty in diff[side]:
                    if Decimal(qty):
                        book[side][price] = qty
                    else:
                        book[side].pop(price, None)
            last_u = diff["u"]
        assert synced
        truth = fake.market.book("BTCUSDT")
        # The streams run one book step behind the book.
        assert last_u == fake.market.published_update_id("BTCUSDT") < truth.last_update_id
        steps = [s for s in fake.market.depth_steps("BTCUSDT") if s.last_update_id > last_u]
        for step in steps:
            for side, levels in (("b", step.bids), ("a", step.asks)):
                for price, qty in levels:
                    if qty:
                        book[side][format(price, "f")] = format(qty, "f")
                    else:
                        book[side].pop(format(price, "f"), None)
        assert book["b"] == {format(p, "f"): format(q, "f") for p, q in truth.bids}
        assert book["a"] == {format(p, "f"): format(q, "f") for p, q in truth.asks}
        # Each speed is its own chain, pushed at its own pace.
        for name, count in (("btcusdt@depth@500ms", 40), ("btcusdt@depth", 80)):
            diffs = by_stream(messages, name)
            assert abs(len(diffs) - count) <= 1
            for prev, cur in itertools.pairwise(diffs):
                assert cur["pu"] == prev["u"] and cur["U"] == prev["u"] + 1
        first = by_stream(messages, "btcusdt@depth@100ms")[0]
        assert list(first) == ["e", "E", "T", "s", "U", "u", "pu", "b", "a"]


async def test_book_ticker_and_mark_price(autojump_clock: trio.abc.Clock) -> None:
    async with (
        FakeExchange(seed=7) as fake,
        open_ws(fake, "/public/stream?streams=ethusdt@bookTicker") as ws,
    ):
        tickers = by_stream(await receive_for(ws, 3), "ethusdt@bookTicker")
        assert tickers and list(tickers[0]) == ["e", "u", "s", "b", "B", "a", "A", "T", "E"]
        keys = [(t["b"], t["B"], t["a"], t["A"]) for t in tickers]
        assert all(a != b for a, b in itertools.pairwise(keys))  # only on change
        assert all(Decimal(t["b"]) < Decimal(t["a"]) for t in tickers)
        quote = fake.market.best_quote("ETHUSDT")
        assert (tickers[-1]["b"], tickers[-1]["u"]) in {
            (format(quote.bid_price, "f"), quote.update_id),
            (tickers[-1]["b"], tickers[-1]["u"]),
        }
        path = "/market/stream?streams=btcusdt@markPrice@1s/btcusdt@markPrice"
        async with open_ws(fake, path) as ws:
            messages = await receive_for(ws, 9.5)
            fast = by_stream(messages, "btcusdt@markPrice@1s")
            slow = by_stream(messages, "btcusdt@markPrice")
            assert len(fast) == 10 and len(slow) == 4
            assert [m["E"] for m in fast][1] - fast[0]["E"] == 1000
            assert fast[0]["e"] == "markPriceUpdate" and fast[0]["T"] == START + 8 * 3_600_000
            assert len(fast[0]["p"].split(".")[1]) == 8


# --------------------------------------------------------------------------- control messages


async def test_subscribe_unsubscribe_list_and_properties(autojump_clock: trio.abc.Clock) -> None:
    async with FakeExchange(seed=8) as fake, open_ws(fake, "/market/ws") as ws:
        assert await receive_for(ws, 2) == []
        reply = await request(
            ws, {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade", "btcusdt@kline_5m"], "id": 1}
        )
        assert reply == {"result": None, "id": 1}
        assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 3}) == {
            "result": ["btcusdt@aggTrade", "btcusdt@kline_5m"],
            "id": 3,
        }
        messages = await receive_for(ws, 5)
        assert {m["e"] for m in messages} == {"aggTrade", "kline"}  # raw: bare payloads
        assert await request(ws, {"method": "GET_PROPERTY", "params": ["combined"], "id": 4}) == {
            "result": False,
            "id": 4,
        }
        reply = await request(ws, {"method": "SET_PROPERTY", "params": ["combined", True], "id": 5})
        assert reply == {"result": None, "id": 5}
        messages = await receive_for(ws, 2)
        assert messages and all("stream" in m for m in messages)
        reply = await request(
            ws, {"method": "UNSUBSCRIBE", "params": ["btcusdt@kline_5m"], "id": 312}
        )
        assert reply == {"result": None, "id": 312}
        await trio.sleep(0.5)  # let frames already queued drain
        messages = await receive_for(ws, 3)
        assert messages and {m["stream"] for m in messages} == {"btcusdt@aggTrade"}
        # A subscription on the wrong route is listed but delivers nothing.
        await request(ws, {"method": "SUBSCRIBE", "params": ["ethusdt@depth"], "id": 6})
        listed = await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 7})
        assert listed["result"] == ["btcusdt@aggTrade", "ethusdt@depth"]
        assert {m["stream"] for m in await receive_for(ws, 2)} == {"btcusdt@aggTrade"}
        assert fake.connections[0].streams == ["btcusdt@aggTrade", "ethusdt@depth"]
        assert len(fake.connections[0].control_messages) == 7


@pytest.mark.parametrize(
    ("message", "reply"),
    [
        (
            "{not json",
            {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 2", "id": None},
        ),
        (
            '{"params": [], "id": 1}',
            {"code": 2, "msg": "Invalid request: missing field `method`", "id": 1},
        ),
        (
            '{"method": "FOO", "id": 2}',
            {
                "code": 2,
                "msg": "Invalid request: unknown variant `FOO`, expected one of `SUBSCRIBE`, "
                "`UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`",
                "id": 2,
            },
        ),
        (
            '{"method": "SUBSCRIBE", "params": [], "id": -1}',
            {
                "code": 2,
                "msg": "Invalid request: request ID must be an unsigned integer",
                "id": None,
            },
        ),
        (
            '{"method": "SET_PROPERTY", "params": [1, true], "id": 3}',
            {"code": 2, "msg": "Invalid request: property name must be a string", "id": 3},
        ),
        (
            '{"method": "GET_PROPERTY", "params": ["x"], "id": 4}',
            {"code": 0, "msg": "Unknown property", "id": 4},
        ),
        (
            '{"method": "SET_PROPERTY", "params": ["combined", 1], "id": 5}',
            {"code": 1, "msg": "Invalid value type: expected Boolean", "id": 5},
        ),
        (
            '{"method": "LIST_SUBSCRIPTIONS", "params": ["x"], "id": 6}',
            {"code": 2, "msg": "Invalid request: too many parameters", "id": 6},
        ),
    ],
)
async def test_control_errors(
    autojump_clock: trio.abc.Clock, message: str, reply: dict[str, Any]
) -> None:
    async with FakeExchange() as fake, open_ws(fake, "/market/stream?streams=") as ws:
        assert await request(ws, message) == reply
        assert fake.connections[0].is_open


async def test_too_many_streams(autojump_clock: trio.abc.Clock) -> None:
    async with (
        FakeExchange(max_streams_per_connection=3) as fake,
        open_ws(fake, "/market/ws/btcusdt@aggTrade") as ws,
    ):
        names = ["ethusdt@aggTrade", "btcusdt@kline_1m", "btcusdt@kline_5m"]
        reply = await request(ws, {"method": "SUBSCRIBE", "params": names, "id": 9})
        assert reply["code"] == 2 and reply["id"] == 9
        assert fake.connections[0].streams == ["btcusdt@aggTrade"]


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize("abrupt", [True, False])
async def test_drop_connections(autojump_clock: trio.abc.Clock, abrupt: bool) -> None:
    async with (
        FakeExchange(seed=9) as fake,
        open_ws(fake, "/market/stream?streams=btcusdt@aggTrade") as market_ws,
        open_ws(fake, "/public/stream?streams=btcusdt@depth@100ms") as public_ws,
    ):
        await trio.sleep(3)  # the client does not read meanwhile
        assert fake.drop_connections("market", abrupt=abrupt) == 1
        texts, code = await receive_until_closed(market_ws)
        received = [json.loads(t)["data"] for t in texts]
        # Lossless for what was sent: every frame recorded as sent was readable.
        assert received and received == fake.sent("btcusdt@aggTrade")
        assert code == (1006 if abrupt else 1001)
        await trio.testing.wait_all_tasks_blocked()
        record = fake.connections[0]
        assert record.close_reason == "dropped" and not record.is_open
        assert record.close_code == (None if abrupt else 1001)
        assert record.closed_at == pytest.approx(3.0)
        assert await receive_for(public_ws, 1)  # other routes unaffected
        assert fake.live_connections == [fake.connections[1]]


async def test_refuse_next(autojump_clock: trio.abc.Clock) -> None:
    async with FakeExchange() as fake:
        fake.refuse_next(2)
        fake.refuse_next(1, status=503)
        fake.refuse_next(1, status=429, retry_after=30)
        for _ in range(2):
            with pytest.raises(OSError, match="connection refused"):
                await fake.connect("wss://fstream.binance.com/market/ws")
        assert (await handshake_rejection(fake, "/market/ws")).status_code == 503
        assert (await handshake_rejection(fake, "/market/ws")).status_code == 429
        async with open_ws(fake, "/market/stream?streams=btcusdt@aggTrade") as ws:
            assert await receive_for(ws, 2)
        assert fake.attempts == 5 and fake.refused == 4
        assert len(fake.connections) == 1


async def test_rejection_carries_retry_after(autojump_clock: trio.abc.Clock) -> None:
    async with FakeExchange() as fake:
        fake.refuse_next(status=429, retry_after=12.5)
        rejected = await handshake_rejection(fake, "/market/ws")
        assert rejected.status_code == 429
        assert (b"retry-after", b"13") in rejected.headers
        assert rejected.body == b"refused by FakeExchange"


async def test_black_hole(autojump_clock: trio.abc.Clock) -> None:
    async with (
        FakeExchange(seed=10, pong_timeout=120) as fake,
        open_ws(fake, "/market/stream?streams=btcusdt@aggTrade") as ws,
    ):
        await ws.ping(b"alive")  # answered
        assert fake.black_hole("market") == 1
        with trio.move_on_after(20) as timeout:
            await ws.ping(b"anyone?")
        assert timeout.cancelled_caught
        assert await receive_for(ws, 10) == []
        record = fake.connections[0]
        assert record.black_holed and record.is_open
        # The fake's own ping (every 180 s) goes unanswered too: dropped after pong_timeout.
        await trio.sleep(300)
        assert record.close_reason == "pong-timeout"
        assert record.closed_at == pytest.approx(180.0031 + 120, abs=0.01)


async def test_silence(autojump_clock: trio.abc.Clock) -> None:
    path = "/market/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade"
    async with FakeExchange(seed=11) as fake, open_ws(fake, path) as ws:
        fake.silence("btcusdt@aggTrade")
        messages = await receive_for(ws, 10)
        assert by_stream(messages, "ethusdt@aggTrade")
        assert by_stream(messages, "btcusdt@aggTrade") == []
        fake.silence("btcusdt@aggTrade", on=False)
        messages = await receive_for(ws, 10)
        assert by_stream(messages, "btcusdt@aggTrade")
        assert fake.connections[0].is_open


async def test_send_malformed(autojump_clock: trio.abc.Clock) -> None:
    async with (
        FakeExchange(seed=12) as fake,
        open_ws(fake, "/market/stream?streams=btcusdt@aggTrade") as ws,
    ):
        await trio.sleep(1)
        assert fake.send_malformed(5) == 5
        bad: list[Any] = []
        with trio.move_on_after(2):
            while len(bad) < 5:
                text = await ws.get_message()
                assert isinstance(text, str)
                try:
                    parsed = json.loads(text)
                except ValueError:
                    bad.append(text)
                    continue
                if not (
                    isinstance(parsed, dict) and isinstance(parsed.get("data"), dict)
                ) or not isinstance(parsed["data"].get("E"), int):
                    bad.append(parsed)
        assert len(bad) == 5
        assert fake.malformed_sent == 5 and fake.connections[0].malformed_sent == 5
        assert fake.connections[0].is_open


async def test_skip_depth_update_makes_a_pu_gap(autojump_clock: trio.abc.Clock) -> None:
    async with (
        FakeExchange(seed=13) as fake,
        open_ws(fake, "/public/stream?streams=ethusdt@depth@100ms") as ws,
    ):
        await trio.sleep(1)
        fake.skip_depth_update("ETHUSDT")
        diffs = by_stream(await receive_for(ws, 3), "ethusdt@depth@100ms")
        gaps = [(a, b) for a, b in itertools.pairwise(diffs) if b["pu"] != a["u"]]
        assert len(gaps) == 1
        (skipped,) = fake.depth_skipped
        assert skipped["pu"] == gaps[0][0]["u"] and gaps[0][1]["pu"] == skipped["u"]
        assert skipped not in fake.sent("ethusdt@depth@100ms")


async def test_announce_shutdown(autojump_clock: trio.abc.Clock) -> None:
    async with (
        FakeExchange() as fake,
        open_ws(fake, "/market/stream?streams=btcusdt@aggTrade") as combined,
        open_ws(fake, "/public/ws/btcusdt@depth") as raw,
    ):
        await trio.sleep(0.05)
        assert fake.announce_shutdown() == 2
        first = [m for m in await receive_for(combined, 1) if "stream" in m]
        assert {
            "stream": "!serverShutdown",
            "data": {"e": "serverShutdown", "E": START + 50},
        } in first
        assert {"e": "serverShutdown", "E": START + 50} in await receive_for(raw, 1)
        assert fake.sent("!serverShutdown") == [{"e": "serverShutdown", "E": START + 50}] * 2


async def test_incoming_message_limit(autojump_clock: trio.abc.Clock) -> None:
    async with (
        FakeExchange() as fake,
        open_ws(fake, "/market/ws") as ws,
    ):
        # Ten messages a second, pings included, for a while: allowed.
        for i in range(30):
            if i % 2:
                await ws.ping(str(i).encode())
            else:
                reply = await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": i})
                assert reply == {"result": [], "id": i}
            await trio.sleep(0.1)
        assert fake.connections[0].is_open
        assert fake.connections[0].messages_received == 30
        assert fake.connections[0].max_messages_in_window == 10  # no headroom left
        # Eleven within one second: closed as the eleventh arrives.
        await trio.sleep(1)
        for i in range(11):
            await ws.send_message(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 100 + i}))
        replies, code = await receive_until_closed(ws)
        assert code == 1008
        await trio.testing.wait_all_tasks_blocked()
        record = fake.connections[0]
        assert record.incoming_limit_exceeded and record.close_reason == "incoming-limit"
        # 41 requests and pings, and the client's close frame answering the fake's 1008.
        assert record.messages_received == 42 and len(replies) <= 10
        assert record.max_messages_in_window == 12  # the burst, and the close frame
        assert fake.incoming_limit_violations == 1
        fake.set_incoming_limit(100)
        async with open_ws(fake, "/market/ws") as ws:
            for i in range(50):
                await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": i})
            await trio.sleep(1)
            assert fake.connections[1].is_open


async def test_lifetime_and_server_pings(autojump_clock: trio.abc.Clock) -> None:
    async with (
        FakeExchange(lifetime=1000, server_ping_interval=180) as fake,
        open_ws(fake, "/market/ws") as ws,
    ):
        _, code = await receive_until_closed(ws)
        assert code == 1001
        assert trio.current_time() == pytest.approx(1000.0031)
        await trio.testing.wait_all_tasks_blocked()
        record = fake.connections[0]
        assert record.close_reason == "lifetime" and record.close_code == 1001
        assert record.pings_sent == 5  # answered automatically by the client
        assert record.messages_received == 6  # the client's pongs and its close frame


async def test_slow_client_is_disconnected(autojump_clock: trio.abc.Clock) -> None:
    async with (
        FakeExchange(
            seed=14, trade_rate=50.0, send_queue_size=20, socket_buffer_bytes=4096
        ) as fake,
        open_ws(fake, "/market/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade") as ws,
    ):
        await trio.sleep(5)  # not reading
        record = fake.connections[0]
        assert record.close_reason == "slow-client"
        assert fake.slow_client_drops == 1
        texts, code = await receive_until_closed(ws)
        assert code == 1006
        sent = fake.sent("btcusdt@aggTrade") + fake.sent("ethusdt@aggTrade")
        assert len(texts) == len(sent) == record.frames_sent


async def test_the_market_does_not_wait_for_a_dead_client(autojump_clock: trio.abc.Clock) -> None:
    async with FakeExchange(seed=15, send_queue_size=10) as fake:
        stream = await fake.connect("wss://x/market/stream?streams=btcusdt@aggTrade")
        await stream.aclose()  # never even handshakes
        async with open_ws(fake, "/market/stream?streams=btcusdt@aggTrade") as ws:
            assert await receive_for(ws, 15)
        assert fake.connections[0].path == "/market/stream?streams=btcusdt@aggTrade"


async def test_client_close_is_recorded(autojump_clock: trio.abc.Clock) -> None:
    async with (
        FakeExchange() as fake,
        open_ws(fake, "/market/ws") as ws,
    ):
        await trio.sleep(1)
        await ws.aclose(code=1000)
        await trio.testing.wait_all_tasks_blocked()
        record = fake.connections[0]
        assert record.close_reason == "client" and record.close_code == 1000
        assert record.closed_at == pytest.approx(1.0)


async def test_exit_closes_everything(autojump_clock: trio.abc.Clock) -> None:
    async with FakeExchange() as fake:
        stream = await fake.connect("wss://x/market/ws")
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, HOST, "/market/ws")  # type: ignore[arg-type]
            outer = fake
            nursery.cancel_scope.cancel()
    assert ws is not None
    assert outer.connections[0].close_reason == "exchange-closed"
    assert not outer.live_connections


async def test_same_seed_same_frames(autojump_clock: trio.abc.Clock) -> None:
    market = "/market/stream?streams=btcusdt@aggTrade/btcusdt@kline_1m/ethusdt@markPrice@1s"
    public = "/public/stream?streams=btcusdt@depth@100ms/ethusdt@bookTicker"
    runs = []
    for _ in range(2):
        async with (
            FakeExchange(seed=16) as fake,
            open_ws(fake, market) as market_ws,
            open_ws(fake, public) as public_ws,
            httpx.AsyncClient(transport=fake.rest_transport, base_url="https://x") as client,
        ):
            frames = await receive_for(market_ws, 65)
            snapshot = (await client.get("/fapi/v1/depth?symbol=BTCUSDT&limit=5")).json()
            public_frames = await receive_for(public_ws, 5)
            runs.append((frames, snapshot, public_frames, fake.sent("btcusdt@depth@100ms")))
    assert runs[0] == runs[1]
    assert runs[0][2] and runs[0][3]


# --------------------------------------------------------------------------- REST


@pytest.fixture
def base_url() -> str:
    return "https://fapi.binance.com"


async def test_rest_endpoints(autojump_clock: trio.abc.Clock, base_url: str) -> None:
    async with FakeExchange(seed=17, rest_latency=0.25) as fake:
        await trio.sleep(600)
        async with httpx.AsyncClient(transport=fake.rest_transport, base_url=base_url) as client:
            t0 = trio.current_time()
            response = await client.get("/fapi/v1/time")
            assert trio.current_time() - t0 == pytest.approx(0.25)
            assert response.json() == {"serverTime": START + 600_250}
            assert response.headers["X-MBX-USED-WEIGHT-1M"] == "1"

            info = (await client.get("/fapi/v1/exchangeInfo")).json()
            assert info["rateLimits"][0] == {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 2400,
            }
            btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
            assert (btc["status"], btc["pair"], btc["contractType"]) == (
                "TRADING",
                "BTCUSDT",
                "PERPETUAL",
            )
            filters = {f["filterType"]: f for f in btc["filters"]}
            assert filters["PRICE_FILTER"]["tickSize"] == "0.10"
            assert filters["LOT_SIZE"]["stepSize"] == "0.001"

            rows = (await client.get("/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=3")).json()
            assert [r[0] for r in rows] == [START + 480_000, START + 540_000, START + 600_000]
            assert all(len(r) == 12 for r in rows)
            assert isinstance(rows[0][8], int) and isinstance(rows[0][1], str)
            rows = (
                await client.get(
                    "/fapi/v1/klines",
                    params={
                        "symbol": "BTCUSDT",
                        "interval": "5m",
                        "startTime": START,
                        "endTime": START + 300_000,
                    },
                )
            ).json()
            assert [r[0] for r in rows] == [START, START + 300_000]

            depth = (await client.get("/fapi/v1/depth?symbol=ETHUSDT&limit=5")).json()
            assert list(depth) == ["lastUpdateId", "E", "T", "bids", "asks"]
            assert len(depth["bids"]) == len(depth["asks"]) == 5
            assert depth["lastUpdateId"] == fake.market.last_update_id("ETHUSDT")
            assert Decimal(depth["bids"][0][0]) < Decimal(depth["asks"][0][0])

            # aggTrades paged by fromId gives every trade exactly once.
            first_id = fake.market.first_agg_id("BTCUSDT")
            pages: list[dict[str, Any]] = []
            from_id = first_id
            calls = 0
            while True:
                calls += 1
                page = (
                    await client.get(
                        "/fapi/v1/aggTrades",
                        params={"symbol": "BTCUSDT", "fromId": from_id, "limit": 1000},
                    )
                ).json()
                if not page:
                    break
                pages += page
                from_id = page[-1]["a"] + 1
            truth = fake.market.trades("BTCUSDT")
            assert [p["a"] for p in pages] == [t.agg_id for t in truth]
            assert list(pages[0]) == ["a", "p", "q", "f", "l", "T", "m"]
            recent = (await client.get("/fapi/v1/aggTrades?symbol=BTCUSDT")).json()
            assert len(recent) == 500 and recent[-1]["a"] == truth[-1].agg_id
            window = (
                await client.get(
                    "/fapi/v1/aggTrades",
                    params={
                        "symbol": "BTCUSDT",
                        "startTime": START + 60_000,
                        "endTime": START + 120_000,
                    },
                )
            ).json()
            assert all(START + 60_000 <= w["T"] <= START + 120_000 for w in window)
            assert len(window) == sum(
                1 for t in truth if START + 60_000 <= t.time <= START + 120_000
            )

        paths = [r.path for r in fake.rest_requests]
        assert paths[:3] == ["/fapi/v1/time", "/fapi/v1/exchangeInfo", "/fapi/v1/klines"]
        assert fake.rest_calls["/fapi/v1/aggTrades"] == calls + 2
        assert fake.rest_requests[0].params == {}
        assert fake.rest_requests[2].params == {"symbol": "BTCUSDT", "interval": "1m", "limit": "3"}


@pytest.mark.parametrize(
    ("target", "status", "code"),
    [
        ("/fapi/v1/klines?symbol=NOPE&interval=1m", 400, -1121),
        ("/fapi/v1/klines?symbol=BTCUSDT&interval=1s", 400, -1120),
        ("/fapi/v1/klines?symbol=BTCUSDT&interval=1M", 400, -1120),
        ("/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=1501", 400, -1130),
        ("/fapi/v1/klines?interval=1m", 400, -1102),
        ("/fapi/v1/aggTrades?symbol=BTCUSDT&limit=1001", 400, -1130),
        ("/fapi/v1/aggTrades?symbol=BTCUSDT&fromId=abc", 400, -1100),
        ("/fapi/v1/depth?symbol=BTCUSDT&limit=7", 400, -4021),
        (
            "/fapi/v1/continuousKlines?pair=BTCUSDT&contractType=CURRENT_QUARTER&interval=1m",
            400,
            -1130,
        ),
        ("/fapi/v1/nothing", 404, None),
    ],
)
async def test_rest_errors(
    autojump_clock: trio.abc.Clock, base_url: str, target: str, status: int, code: int | None
) -> None:
    async with (
        FakeExchange() as fake,
        httpx.AsyncClient(transport=fake.rest_transport, base_url=base_url) as client,
    ):
        response = await client.get(target)
        assert response.status_code == status
        if code is not None:
            assert response.json()["code"] == code
        if status == 400:
            assert int(response.headers["X-MBX-USED-WEIGHT-1M"]) > 0  # 400s still cost weight
        assert fake.rest_requests[0].status == status
    if target.endswith("limit=7"):
        assert response.json()["msg"] == "7 is not valid depth limit"


async def test_rest_weights_429_and_418(autojump_clock: trio.abc.Clock, base_url: str) -> None:
    async with (
        FakeExchange(rest_latency=0.001) as fake,
        httpx.AsyncClient(transport=fake.rest_transport, base_url=base_url) as client,
    ):
        used = []
        for target in (
            "/fapi/v1/klines?symbol=BTCUSDT&interval=1m",  # no limit: 5
            "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=100",  # 1
            "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=500",  # 2
            "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=1000",  # 5
            "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=1500",  # 10
            "/fapi/v1/depth?symbol=BTCUSDT&limit=1000",  # 20
            "/fapi/v1/depth?symbol=BTCUSDT&limit=100",  # 5
            "/fapi/v1/aggTrades?symbol=BTCUSDT",  # 20
            "/fapi/v1/depth?symbol=BTCUSDT",  # no limit: 1 (measured), though 500 levels
        ):
            response = await client.get(target)
            assert response.status_code == 200
            used.append(int(response.headers["X-MBX-USED-WEIGHT-1M"]))
        assert used == [5, 6, 8, 13, 23, 43, 48, 68, 69]
        # Burn the rest of the minute's 2400.
        for _ in range((2400 - 69) // 20):
            await client.get("/fapi/v1/aggTrades?symbol=BTCUSDT")
        assert fake.rest_weight_used_max == fake.rest_weight_requested_max == 2389
        response = await client.get("/fapi/v1/aggTrades?symbol=BTCUSDT")
        assert response.status_code == 429
        assert fake.rest_weight_used_max == 2389 and fake.rest_weight_requested_max == 2409
        assert fake.rest.weight_limit_hits == 1
        now = fake.now_ms()
        assert response.headers["Retry-After"] == str(-(-(60_000 - now % 60_000) // 1000))
        assert response.json()["code"] == -1003
        # Carrying on in the same minute: banned for two minutes.
        response = await client.get("/fapi/v1/time")
        assert response.status_code == 418
        assert response.headers["Retry-After"] == "120"
        assert fake.rest_weight_requested_max == 2410  # what was asked for, 418 or not
        await trio.sleep(100)
        response = await client.get("/fapi/v1/time")
        assert response.status_code == 418 and int(response.headers["Retry-After"]) <= 20
        await trio.sleep(21)
        response = await client.get("/fapi/v1/time")
        assert response.status_code == 200
        assert response.headers["X-MBX-USED-WEIGHT-1M"] == "1"
        statuses = [r.status for r in fake.rest_requests]
        assert statuses.count(429) == 1 and statuses.count(418) == 2


async def test_rest_faults(autojump_clock: trio.abc.Clock, base_url: str) -> None:
    async with FakeExchange() as fake:
        fake.rest_fault("/fapi/v1/depth", 503, count=2)
        fake.rest_fault("/fapi/v1/depth", 429, retry_after=7)
        fake.rest_fault("/fapi/v1/time", 500, body={"code": -1000, "msg": "boom"})
        async with httpx.AsyncClient(transport=fake.rest_transport, base_url=base_url) as client:
            statuses = []
            for _ in range(4):
                response = await client.get("/fapi/v1/depth?symbol=BTCUSDT")
                statuses.append(response.status_code)
            assert statuses == [503, 503, 429, 200]
            assert fake.rest_requests[2].status == 429
            faulted = await client.get("/fapi/v1/time")
            assert faulted.status_code == 500 and faulted.json() == {"code": -1000, "msg": "boom"}
            assert (await client.get("/fapi/v1/time")).status_code == 200
        assert fake.rest_calls["/fapi/v1/depth"] == 4


# --------------------------------------------------------------------------- live operations


def rest_client(fake: FakeExchange) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=fake.rest_transport, base_url="https://fapi.binance.com")


async def listed(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    info = (await client.get("/fapi/v1/exchangeInfo")).json()
    return {s["symbol"]: s for s in info["symbols"]}


async def test_list_symbol_while_running(autojump_clock: trio.abc.Clock) -> None:
    adapter = BinanceUsdmAdapter()
    early = "/market/stream?streams=solusdt@aggTrade/btcusdt@aggTrade"
    async with (
        FakeExchange(seed=40) as fake,
        rest_client(fake) as client,
        open_ws(fake, early) as ws,
    ):
        # Not listed yet: its stream is accepted and silent, REST does not know it.
        assert by_stream(await receive_for(ws, 5), "solusdt@aggTrade") == []
        assert list(await listed(client)) == ["BTCUSDT", "ETHUSDT"]
        response = await client.get("/fapi/v1/klines?symbol=SOLUSDT&interval=1m")
        assert response.status_code == 400 and response.json()["code"] == -1121
        listed_at = fake.now_ms()
        spec = fake.list_symbol("SOLUSDT", trade_rate=5.0)
        assert spec.symbol == "SOLUSDT" and "SOLUSDT" in fake.market.symbols
        # The connection that asked early receives it from now on.
        early_trades = by_stream(await receive_for(ws, 20), "solusdt@aggTrade")
        assert len(early_trades) > 50 and early_trades[0]["T"] > listed_at
        # New subscriptions of every kind deliver, on both routes.
        names = ["solusdt@kline_1m", "solusdt@markPrice@1s", "solusdt_perpetual@continuousKline_1m"]
        reply = await request(ws, {"method": "SUBSCRIBE", "params": names, "id": 1})
        assert reply == {"result": None, "id": 1}
        messages = await receive_for(ws, 3)
        assert all(by_stream(messages, name) for name in names)
        async with open_ws(fake, "/public/stream?streams=solusdt@depth@100ms") as public:
            diffs = by_stream(await receive_for(public, 2), "solusdt@depth@100ms")
            assert diffs and diffs[0]["s"] == "SOLUSDT"
        # REST answers for it, and exchangeInfo lists it, onboarded at the listing.
        rows = (await client.get("/fapi/v1/klines?symbol=SOLUSDT&interval=1m")).json()
        assert rows[0][0] == kline_open_time(listed_at, "1m")
        trades = (await client.get("/fapi/v1/aggTrades?symbol=SOLUSDT&limit=1000")).json()
        assert trades[0]["a"] == early_trades[0]["a"] == fake.market.first_agg_id("SOLUSDT")
        depth = (await client.get("/fapi/v1/depth?symbol=SOLUSDT&limit=5")).json()
        assert len(depth["bids"]) == 5
        symbols = await listed(client)
        assert list(symbols) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
        assert symbols["SOLUSDT"]["status"] == "TRADING"
        assert symbols["SOLUSDT"]["onboardDate"] == listed_at
        assert symbols["SOLUSDT"]["filters"][0]["tickSize"] == "0.001"
        # The adapter reads the fake's answer like the real one.
        body = (await client.get("/fapi/v1/exchangeInfo")).content
        assert adapter.parse_listed_symbols(body) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
        fake.delist_symbol("BTCUSDT")
        body = (await client.get("/fapi/v1/exchangeInfo")).content
        assert adapter.parse_listed_symbols(body) == ["ETHUSDT", "SOLUSDT"]
        assert (await listed(client))["BTCUSDT"]["status"] == "SETTLING"
        # Delisting changes the listing only.
        assert by_stream(await receive_for(ws, 2), "btcusdt@aggTrade")
        assert (await client.get("/fapi/v1/depth?symbol=BTCUSDT&limit=5")).status_code == 200
        with pytest.raises(ValueError, match="already listed"):
            fake.list_symbol("SOLUSDT")
        with pytest.raises(ValueError, match="already listed"):
            fake.list_symbol("BTCUSDT")
        with pytest.raises(ValueError, match="unknown symbol"):
            fake.delist_symbol("DOGEUSDT")


async def test_listed_symbol_frames_are_deterministic(autojump_clock: trio.abc.Clock) -> None:
    runs = []
    for other_at in (2.0, 9.0):  # another listing, before or after SOLUSDT's
        async with FakeExchange(seed=41) as fake:
            path = "/market/stream?streams=solusdt@aggTrade/solusdt@kline_1m"
            async with open_ws(fake, path) as ws:
                await trio.sleep(other_at if other_at < 5 else 5)
                if other_at < 5:
                    fake.list_symbol("XRPUSDT")
                    await trio.sleep(5 - other_at)
                fake.list_symbol("SOLUSDT")
                frames = await receive_for(ws, 70)
                if other_at > 5:
                    fake.list_symbol("XRPUSDT")
            runs.append((frames, fake.market.trades("SOLUSDT")))
    assert runs[0] == runs[1]
    frames, truth = runs[0]
    streamed = by_stream(frames, "solusdt@aggTrade")
    assert [d["a"] for d in streamed] == [t.agg_id for t in truth][: len(streamed)]
    assert any(k["k"]["x"] for k in by_stream(frames, "solusdt@kline_1m"))


async def test_ignore_close_handshake(autojump_clock: trio.abc.Clock) -> None:
    async with FakeExchange(lifetime=100, server_ping_interval=30) as fake:
        fake.ignore_close_handshake()
        async with open_ws(fake, "/market/stream?streams=btcusdt@aggTrade") as ws:
            await trio.sleep(1)
            with trio.move_on_after(200) as timeout:
                await ws.aclose(code=1000)  # never answered: waits past the fake's lifetime
            assert timeout.cancelled_caught
            record = fake.connections[0]
            assert record.close_frame_ignored and record.is_open and record.pings_sent == 0
        # Giving up, the client closed the transport (trio-websocket does on cancel).
        await trio.testing.wait_all_tasks_blocked()
        assert record.close_reason == "client" and record.close_code is None
        assert record.closed_at == pytest.approx(201.0)
        assert record.messages_received == 1  # the close frame counts
        # Closes the fake starts still complete: the client's answer goes through.
        async with open_ws(fake, "/market/ws") as ws:
            fake.drop_connections(abrupt=False)
            _, code = await receive_until_closed(ws)
        await trio.testing.wait_all_tasks_blocked()
        assert code == 1001
        assert fake.connections[1].close_code == 1001
        assert not fake.connections[1].close_frame_ignored
        # Off again: a client's close is answered at once.
        fake.ignore_close_handshake(False)
        async with open_ws(fake, "/market/ws") as ws:
            with trio.fail_after(1):
                await ws.aclose(code=1000)
        await trio.testing.wait_all_tasks_blocked()
        assert fake.connections[2].close_code == 1000
        assert not fake.connections[2].close_frame_ignored


async def test_a_hung_connection_ends_with_a_drop(autojump_clock: trio.abc.Clock) -> None:
    async with FakeExchange() as fake:
        fake.ignore_close_handshake()
        async with open_ws(fake, "/market/stream?streams=btcusdt@aggTrade") as ws:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ws.aclose)
                await trio.sleep(3)
                assert fake.connections[0].close_frame_ignored
                assert fake.drop_connections() == 1  # the transport ends: aclose returns
        await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == pytest.approx(3.0)
        assert fake.connections[0].close_reason == "dropped"


async def test_attempt_times_and_the_attempt_limit(autojump_clock: trio.abc.Clock) -> None:
    async with FakeExchange(max_attempts_per_window=(3, 10.0)) as fake:
        fake.refuse_next(1)
        with pytest.raises(OSError, match="refused"):
            await fake.connect("wss://fstream.binance.com/market/ws")
        for at in (1.0, 2.0):
            await trio.sleep_until(at)
            async with open_ws(fake, "/market/ws"):
                pass
        await trio.sleep_until(3.0)
        rejected = await handshake_rejection(fake, "/market/ws")
        # Four attempts in 10 s: the oldest two must leave the window (at 11 s) first.
        assert rejected.status_code == 429 and (b"retry-after", b"8") in rejected.headers
        assert fake.attempt_limit_violations == 1 and fake.refused == 1
        await trio.sleep_until(10.5)  # refused attempts count too: still over
        assert (await handshake_rejection(fake, "/market/ws")).status_code == 429
        await trio.sleep_until(13.01)
        async with open_ws(fake, "/market/ws"):
            pass
        assert fake.attempt_times == pytest.approx([0.0, 1.0, 2.0, 3.0, 10.5, 13.01])
        assert fake.attempts == 6 and fake.attempt_limit_violations == 2
        assert [c.opened_at for c in fake.connections] == pytest.approx([1.0, 2.0, 13.01])
    with pytest.raises(ValueError, match="max_attempts_per_window"):
        FakeExchange(max_attempts_per_window=(0, 1.0))


async def test_every_client_frame_counts(autojump_clock: trio.abc.Clock) -> None:
    async with FakeExchange(max_incoming_per_second=4) as fake:
        async with open_ws(fake, "/market/ws") as ws:
            await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1})  # text
            await ws.send_message(b'{"method": "LIST_SUBSCRIPTIONS", "id": 2}')  # binary
            await ws.ping(b"1")
            await ws.pong(b"2")
            await trio.sleep(0.5)
            record = fake.connections[0]
            assert record.messages_received == 4 and record.max_messages_in_window == 4
            assert record.is_open and fake.incoming_limit_violations == 0
            await ws.aclose()  # the fifth within the second, over the limit of four
        await trio.testing.wait_all_tasks_blocked()
        assert record.messages_received == 5 and record.max_messages_in_window == 5
        assert record.incoming_limit_exceeded and fake.incoming_limit_violations == 1
        # Spread out, the same five messages leave headroom.
        async with open_ws(fake, "/market/ws") as ws:
            for i in range(4):
                await ws.ping(str(i).encode())
                await trio.sleep(0.6)
            await ws.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert fake.connections[1].max_messages_in_window == 2
        assert fake.connections[1].close_reason == "client"
        assert fake.incoming_limit_violations == 1


async def test_silence_survives_resubscription(autojump_clock: trio.abc.Clock) -> None:
    path = "/market/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade"
    async with FakeExchange(seed=42) as fake, open_ws(fake, path) as ws:
        fake.silence("btcusdt@aggTrade")
        await request(ws, {"method": "UNSUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 1})
        await request(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 2})
        messages = await receive_for(ws, 10)
        assert by_stream(messages, "ethusdt@aggTrade")
        assert by_stream(messages, "btcusdt@aggTrade") == []
        async with open_ws(fake, "/market/stream?streams=btcusdt@aggTrade") as fresh:
            assert await receive_for(fresh, 5) == []  # a new connection does not help either
        fake.silence("btcusdt@aggTrade", on=False)
        assert by_stream(await receive_for(ws, 5), "btcusdt@aggTrade")


async def test_silence_healed_by_resubscription(autojump_clock: trio.abc.Clock) -> None:
    path = "/market/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade"
    async with FakeExchange(seed=43) as fake, open_ws(fake, path) as ws:
        fake.silence("btcusdt@aggTrade", resubscribe_heals=True)
        assert by_stream(await receive_for(ws, 5), "btcusdt@aggTrade") == []
        # Subscribing what the connection already holds changes nothing.
        await request(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 1})
        assert by_stream(await receive_for(ws, 5), "btcusdt@aggTrade") == []
        await request(ws, {"method": "UNSUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 2})
        await request(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 3})
        healed = by_stream(await receive_for(ws, 5), "btcusdt@aggTrade")
        assert healed and healed == fake.sent("btcusdt@aggTrade")
        assert fake.connections[0].is_open


async def test_stall_connection_streams(autojump_clock: trio.abc.Clock) -> None:
    path = "/market/stream?streams=btcusdt@aggTrade/btcusdt@kline_1m"
    async with (
        FakeExchange(seed=44) as fake,
        open_ws(fake, path) as stalled,
        open_ws(fake, path) as other,
    ):
        await trio.sleep(1)
        fake.stall_connection_streams(1)
        assert fake.connections[0].streams_stalled
        await receive_for(stalled, 0.5)  # what was queued before the stall
        assert await receive_for(stalled, 5) == []
        with trio.fail_after(1):
            await stalled.ping(b"still there?")  # answered
        # Re-subscribing is acknowledged and does not help.
        names = ["btcusdt@aggTrade"]
        assert await request(stalled, {"method": "UNSUBSCRIBE", "params": names, "id": 1}) == {
            "result": None,
            "id": 1,
        }
        await request(stalled, {"method": "SUBSCRIBE", "params": [*names, "ethusdt@aggTrade"]})
        assert await receive_for(stalled, 5) == []
        assert by_stream(await receive_for(other, 1), "btcusdt@aggTrade")
        async with open_ws(fake, path) as fresh:  # only a new connection helps
            assert by_stream(await receive_for(fresh, 2), "btcusdt@aggTrade")
        assert fake.connections[0].is_open and not fake.connections[1].streams_stalled
        assert fake.sent("btcusdt@aggTrade", connection=1)[-1]["E"] <= START + 1_500
        with pytest.raises(ValueError, match="no live connection"):
            fake.stall_connection_streams(99)


async def test_shutdown_closes_after_the_grace(autojump_clock: trio.abc.Clock) -> None:
    async with (
        FakeExchange(seed=45) as fake,
        open_ws(fake, "/market/stream?streams=btcusdt@aggTrade") as ws,
    ):
        await trio.sleep(2)
        assert fake.announce_shutdown() == 1
        assert fake.connections[0].shutdown_at == pytest.approx(32.0031)
        texts, code = await receive_until_closed(ws)
        assert code == 1001
        assert trio.current_time() == pytest.approx(32.0031)
        frames = [json.loads(t) for t in texts]
        shutdown = frames.index(
            {"stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": START + 2_000}}
        )
        after = by_stream(frames[shutdown + 1 :], "btcusdt@aggTrade")
        assert after and after[-1]["T"] > START + 30_000  # delivered through the grace
        await trio.testing.wait_all_tasks_blocked()
        record = fake.connections[0]
        assert record.close_reason == "shutdown" and record.close_code == 1001
        assert fake.announce_shutdown() == 0


async def test_shutdown_grace_variants(autojump_clock: trio.abc.Clock) -> None:
    async with FakeExchange(shutdown_grace=5.0, lifetime=40.0) as fake:
        async with open_ws(fake, "/market/ws") as ws:
            fake.announce_shutdown()
            await trio.sleep(3)
            fake.announce_shutdown()  # a later announcement does not postpone the close
            _, code = await receive_until_closed(ws)
        assert code == 1001 and trio.current_time() == pytest.approx(5.0031)
        async with open_ws(fake, "/market/ws") as ws:
            fake.announce_shutdown()
            await ws.aclose()  # the client leaves first
        await trio.sleep(10)
        assert fake.connections[1].close_reason == "client"
        # The lifetime still wins when it comes first.
        async with open_ws(fake, "/market/ws") as ws:
            await trio.sleep(38)
            fake.announce_shutdown()
            _, code = await receive_until_closed(ws)
        await trio.testing.wait_all_tasks_blocked()
        assert fake.connections[2].close_reason == "lifetime"
        assert fake.connections[2].closed_at - fake.connections[2].opened_at == pytest.approx(
            40.0031
        )
    with pytest.raises(ValueError, match="shutdown_grace"):
        FakeExchange(shutdown_grace=-1)


# --------------------------------------------------------------------------- loopback


async def test_serve_on_loopback() -> None:
    """Real clock, real sockets: one port serves WebSocket upgrades and REST."""
    with trio.fail_after(10):
        async with FakeExchange(trade_rate=50.0) as fake, trio.open_nursery() as nursery:
            ws_url, rest_url = await nursery.start(fake.serve)
            assert ws_url.startswith("ws://127.0.0.1:") and rest_url.startswith("http://127.0.0.1:")
            async with open_websocket_url(f"{ws_url}/market/stream?streams=btcusdt@aggTrade") as ws:
                frame = json.loads(await ws.get_message())
                assert frame["stream"] == "btcusdt@aggTrade" and frame["data"]["e"] == "aggTrade"
            async with httpx.AsyncClient(base_url=rest_url) as client:
                response = await client.get("/fapi/v1/time")
                assert response.status_code == 200 and "serverTime" in response.json()
                again = await client.get("/fapi/v1/depth", params={"symbol": "ETHUSDT", "limit": 5})
                assert len(again.json()["bids"]) == 5
                assert again.headers["X-MBX-USED-WEIGHT-1M"] == "3"
            # (open_websocket_url leaks its socket when rejected, so go one level down.)
            fake.refuse_next(status=503)
            port = int(ws_url.rsplit(":", 1)[1])
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            try:
                with pytest.RaisesGroup(ConnectionRejected, flatten_subgroups=True):
                    async with trio.open_nursery() as client_nursery:
                        await wrap_client_stream(client_nursery, stream, "127.0.0.1", "/market/ws")
            finally:
                await stream.aclose()
            assert fake.connections[0].route == "market"
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- order-book faults

USDM = get_adapter("binance-usdm")  # what a feed parses frames with
USDM_REST = BinanceUsdmAdapter()


async def receive_texts(ws: WebSocketConnection, seconds: float) -> list[str]:
    """Every text frame received within ``seconds``, as sent."""
    out: list[str] = []
    with trio.move_on_after(seconds):
        while True:
            message = await ws.get_message()
            assert isinstance(message, str)
            out.append(message)
    return out


def diffs_of(texts: list[str], stream: str | None = None) -> list[DepthDiff]:
    """The depth diffs in ``texts`` (combined frames), parsed by the USD-M adapter."""
    out: list[DepthDiff] = []
    for text in texts:
        if stream is not None and json.loads(text)["stream"] != stream:
            continue
        out += [item for item in USDM.parse(text) if isinstance(item, DepthDiff)]
    return out


def truth(fake: FakeExchange, symbol: str, update_id: int, limit: int | None = None) -> Any:
    """The exchange's book at ``update_id`` as {"b": {price: qty}, "a": {...}}."""
    book = fake.market.book_at(symbol, update_id, limit)
    return {"b": dict(book.bids), "a": dict(book.asks)}


class LocalBook:
    """A reference client book kept by the USD-M rules (facts sheet 1.5), from the adapter's
    `DepthDiff` items: buffer, snapshot, drop ``u < L``, first ``U <= L <= u``, then ``pu``
    must equal the previous ``u``."""

    def __init__(self) -> None:
        self.levels: dict[str, dict[Decimal, Decimal]] = {"b": {}, "a": {}}
        self.last: int | None = None  # None: not in sync
        self.synced_once = False
        self.buffer: list[DepthDiff] = []
        self.gaps = 0

    def snapshot(self, snap: DepthDiff) -> None:
        self.levels = {"b": dict(snap.bids), "a": dict(snap.asks)}
        self.last = snap.final_update_id
        self.synced_once = False
        pending, self.buffer = self.buffer, []
        for diff in pending:
            self.diff(diff)

    def diff(self, diff: DepthDiff) -> bool:
        """Apply ``diff`` if it is the next one; True if it was applied."""
        if self.last is None:
            self.buffer.append(diff)
            return False
        if diff.final_update_id < self.last or (
            self.synced_once and diff.final_update_id == self.last
        ):
            return False  # older than the book (or a repeat of the last message)
        if not self.synced_once:
            ok = diff.first_update_id <= self.last <= diff.final_update_id
        else:
            ok = diff.prev_update_id == self.last
        if not ok:
            self.gaps += 1
            self.last = None
            self.buffer = [diff]
            return False
        for side, levels in (("b", diff.bids), ("a", diff.asks)):
            for price, qty in levels:
                if qty:
                    self.levels[side][price] = qty
                else:
                    self.levels[side].pop(price, None)
        self.last = diff.final_update_id
        self.synced_once = True
        return True

    @property
    def in_sync(self) -> bool:
        """Whether the book has applied a diff since its snapshot and found no gap since."""
        return self.last is not None and self.synced_once

    def top(self, n: int) -> Any:
        bids = sorted(self.levels["b"].items(), reverse=True)[:n]
        asks = sorted(self.levels["a"].items())[:n]
        return {"b": dict(bids), "a": dict(asks)}


async def depth_snapshot(client: httpx.AsyncClient, symbol: str, limit: int = 1000) -> DepthDiff:
    response = await client.get(f"/fapi/v1/depth?symbol={symbol}&limit={limit}")
    assert response.status_code == 200
    return USDM_REST.parse_depth(response.content, symbol)


async def test_duplicate_depth_update_sends_identical_frames(
    autojump_clock: trio.abc.Clock,
) -> None:
    path = "/public/stream?streams=ethusdt@depth@100ms/ethusdt@depth@500ms"
    async with FakeExchange(seed=40) as fake, open_ws(fake, path) as ws:
        await trio.sleep(1)
        fake.duplicate_depth_update("ETHUSDT", n=2)
        texts = await receive_texts(ws, 3)
    for stream in ("ethusdt@depth@100ms", "ethusdt@depth@500ms"):
        mine = [t for t in texts if json.loads(t)["stream"] == stream]
        repeats = [i for i, (a, b) in enumerate(itertools.pairwise(mine)) if a == b]
        assert len(repeats) == 2 and repeats[1] > repeats[0] + 1  # two diffs, each twice
        diffs = diffs_of(mine)
        unique = [d for i, d in enumerate(diffs) if i - 1 not in repeats]
        assert len(unique) == len(diffs) - 2
        for prev, cur in itertools.pairwise(unique):
            assert cur.prev_update_id == prev.final_update_id  # the chain itself is intact
        # A client following the rules ignores the copies.
        book = LocalBook()
        snapshot_id = diffs[0].first_update_id
        book.snapshot(
            DepthDiff("binance-usdm", "ETHUSDT", snapshot_id, snapshot_id, None, 0, (), ())
        )
        assert [book.diff(d) for d in diffs].count(False) == 2 and book.gaps == 0
    assert len(fake.depth_duplicated) == 4
    sent = fake.sent("ethusdt@depth@100ms") + fake.sent("ethusdt@depth@500ms")
    assert all(sent.count(p) == 2 for p in fake.depth_duplicated)


async def test_a_depth_fault_waits_for_the_first_stream(autojump_clock: trio.abc.Clock) -> None:
    async with FakeExchange(seed=41) as fake:
        fake.duplicate_depth_update("BTCUSDT")
        fake.reorder_depth_updates("BTCUSDT")
        await trio.sleep(2)
        async with open_ws(fake, "/public/stream?streams=btcusdt@depth@100ms") as ws:
            diffs = diffs_of(await receive_texts(ws, 2))
        async with open_ws(fake, "/public/stream?streams=btcusdt@depth@100ms") as ws:
            later = diffs_of(await receive_texts(ws, 2))
        with pytest.raises(ValueError, match="unknown symbol"):
            fake.distort_depth("NOPEUSDT")
    # The first diff held back and sent twice after the second: [B, A, A].
    a, b = diffs[1], diffs[0]
    assert diffs[2] == a and b.prev_update_id == a.final_update_id
    assert len(fake.depth_reordered) == len(fake.depth_duplicated) == 1
    for prev, cur in itertools.pairwise(later):  # the next stream is not affected
        assert cur.prev_update_id == prev.final_update_id


async def test_reorder_depth_updates_swaps_the_next_two(autojump_clock: trio.abc.Clock) -> None:
    path = "/public/stream?streams=btcusdt@depth@100ms"
    async with FakeExchange(seed=42) as fake, open_ws(fake, path) as ws, rest_client(fake) as rest:
        book = LocalBook()
        await trio.sleep(0.5)
        book.snapshot(await depth_snapshot(rest, "BTCUSDT"))
        for diff in diffs_of(await receive_texts(ws, 1)):
            book.diff(diff)
        assert book.last is not None and book.gaps == 0
        fake.reorder_depth_updates("BTCUSDT")
        diffs = diffs_of(await receive_texts(ws, 2))
        ((first, second),) = fake.depth_reordered
        ids = [d.final_update_id for d in diffs]
        i = ids.index(second["u"])
        assert ids[i + 1] == first["u"]  # the second generated arrives first
        assert diffs[i].prev_update_id == first["u"]
        order = [d.final_update_id for d in sorted(diffs, key=lambda d: d.final_update_id)]
        assert [*ids[:i], ids[i + 1], ids[i], *ids[i + 2 :]] == order
        # A client following the rules finds the gap and must re-sync.
        applied = [book.diff(d) for d in diffs]
        assert book.gaps == 1 and applied[:i] == [True] * i and not applied[i]


async def test_distort_depth_lies_on_the_stream_only(autojump_clock: trio.abc.Clock) -> None:
    path = "/public/stream?streams=btcusdt@depth@100ms"
    async with FakeExchange(seed=43) as fake, open_ws(fake, path) as ws, rest_client(fake) as rest:
        book = LocalBook()
        await trio.sleep(0.5)
        book.snapshot(await depth_snapshot(rest, "BTCUSDT"))
        applied = 0
        for diff in diffs_of(await receive_texts(ws, 1)):
            if book.diff(diff):  # (the ones older than the snapshot are dropped)
                assert book.top(1000) == truth(fake, "BTCUSDT", diff.final_update_id)
                applied += 1
        assert applied >= 8 and book.gaps == 0
        fake.distort_depth("BTCUSDT", n=1)
        diffs = diffs_of(await receive_texts(ws, 0.35))
        (lie,) = fake.depth_distorted
        assert lie.stream == "btcusdt@depth@100ms" and lie.symbol == "BTCUSDT"
        assert lie.sent_qty != lie.true_qty and lie.sent_qty > 0
        side = "b" if lie.side == "bids" else "a"
        for diff in diffs:
            assert book.diff(diff)  # the ids are right: nothing looks wrong
            right = truth(fake, "BTCUSDT", diff.final_update_id)
            if diff.final_update_id < lie.last_update_id:
                assert book.top(1000) == right
                continue
            sent = dict(diff.bids if side == "b" else diff.asks)
            if diff.final_update_id == lie.last_update_id:
                assert sent[lie.price] == lie.sent_qty
            wrong = {
                s: {
                    p
                    for p in set(book.levels[s]) | set(right[s])
                    if book.levels[s].get(p) != right[s].get(p)
                }
                for s in ("b", "a")
            }
            assert wrong == {side: {lie.price}, ("a" if side == "b" else "b"): set()}
            assert right[side].get(lie.price, Decimal(0)) == lie.true_qty
        # REST keeps the truth.
        snapshot = await depth_snapshot(rest, "BTCUSDT")
        assert {"b": dict(snapshot.bids), "a": dict(snapshot.asks)} == truth(
            fake, "BTCUSDT", snapshot.final_update_id
        )


async def test_stale_depth_snapshot(autojump_clock: trio.abc.Clock) -> None:
    path = "/public/stream?streams=btcusdt@depth@100ms"
    async with FakeExchange(seed=44) as fake, rest_client(fake) as rest:
        await trio.sleep(10)  # some history
        async with open_ws(fake, path) as ws:
            buffered = diffs_of(await receive_texts(ws, 1))
            fake.stale_depth_snapshot("BTCUSDT", count=2)
            fake.rest_fault("/fapi/v1/depth", 503)  # answered otherwise: not used up
            assert (await rest.get("/fapi/v1/depth?symbol=BTCUSDT&limit=1000")).status_code == 503
            stale = await depth_snapshot(rest, "BTCUSDT")
            # "A snapshot older than the first buffered event": nothing can follow it.
            assert stale.final_update_id < buffered[0].first_update_id - 1
            assert not any(
                d.first_update_id <= stale.final_update_id <= d.final_update_id for d in buffered
            )
            book = LocalBook()
            book.buffer = list(buffered)
            book.snapshot(stale)
            assert book.gaps == 1 and book.last is None  # no diff can follow it
            # Its levels are those of that time (the book 50 steps ago).
            expected = fake.market.book_at("BTCUSDT", stale.final_update_id, 1000)
            assert stale.bids == expected.bids and stale.asks == expected.asks
            assert stale.final_update_id == fake.market.update_id_steps_ago("BTCUSDT", 50)
            again = await depth_snapshot(rest, "BTCUSDT", limit=5)
            assert again.final_update_id < buffered[0].first_update_id and len(again.bids) == 5
            fresh = await depth_snapshot(rest, "BTCUSDT")
            assert fresh.final_update_id == fake.market.last_update_id("BTCUSDT")
            book.snapshot(fresh)
            for diff in diffs_of(await receive_texts(ws, 1)):
                book.diff(diff)
            assert book.in_sync and book.gaps == 1
        first, second = fake.stale_snapshots
        assert first.last_update_id == stale.final_update_id and first.steps_behind == 50
        assert first.true_update_id > first.last_update_id
        assert second.last_update_id == again.final_update_id
        with pytest.raises(ValueError):
            fake.stale_depth_snapshot("BTCUSDT", updates_behind=0)


async def test_two_hundred_depth_streams_and_their_snapshots(
    autojump_clock: trio.abc.Clock,
) -> None:
    # 200 symbols on @depth@100ms over two combined connections, a snapshot (limit=1000,
    # weight 20) of each paced to the 2400/minute budget, every book checked against the
    # truth after every applied diff. Quiet books keep it quick (about 2 s of wall time).
    symbols = [f"S{i:03d}USDT" for i in range(200)]
    books = {s: LocalBook() for s in symbols}
    checked = 0
    async with (
        FakeExchange(symbols=symbols, seed=45, trade_rate=0.0, book_activity=0.1) as fake,
        rest_client(fake) as rest,
        trio.open_nursery() as nursery,
    ):

        async def read(part: list[str]) -> None:
            nonlocal checked
            names = "/".join(f"{s.lower()}@depth@100ms" for s in part)
            async with open_ws(fake, f"/public/stream?streams={names}") as ws:
                while True:
                    message = await ws.get_message()
                    assert isinstance(message, str)
                    for diff in diffs_of([message]):
                        book = books[diff.symbol]
                        if book.diff(diff):
                            expected = truth(fake, diff.symbol, diff.final_update_id, 20)
                            assert book.top(20) == expected
                            checked += 1

        nursery.start_soon(read, symbols[:100])
        nursery.start_soon(read, symbols[100:])
        await trio.sleep(0.5)
        for symbol in symbols:
            used = fake.rest.used_weight(fake.now_ms())
            if used + 20 > 2400:  # keep to the budget: wait for the next UTC minute
                await trio.sleep((60_000 - fake.now_ms() % 60_000) / 1000 + 0.01)
            books[symbol].snapshot(await depth_snapshot(rest, symbol))
        # A quiet book publishes the diff that covers a snapshot at its next change.
        with trio.fail_after(30):
            while not all(b.in_sync for b in books.values()):
                await trio.sleep(0.5)
        assert not any(b.gaps for b in books.values())
        assert fake.rest_weight_requested_max <= 2400
        assert fake.rest_weight_used_max == 2400  # 120 snapshots in the first minute
        assert sorted(fake.rest.weight_by_minute.values()) == [1600, 2400]
        assert {r.weight for r in fake.rest_requests} == {20}
        # One more in the second minute is fine; a burst past the limit gets a 429.
        for _ in range(40):
            await depth_snapshot(rest, "S000USDT")
        response = await rest.get("/fapi/v1/depth?symbol=S001USDT&limit=1000")
        assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
        assert fake.rest_weight_requested_max == 2420 and fake.rest.weight_limit_hits == 1
        nursery.cancel_scope.cancel()
    assert checked > 1000
    assert all(len(r.streams) == 100 and r.combined for r in fake.connections)
