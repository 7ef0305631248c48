"""Record and replay: a capture of a live run (drops, REST backfills, book re-syncs and a
reconciliation included), replayed offline, gives the live run's events in the same order;
the ``record`` and ``replay`` commands end to end; bad captures are clear errors."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from trio_feed.cli import main
from trio_feed.config import FeedConfig
from trio_feed.events import (
    BookTicker,
    BookUpdate,
    Event,
    Kline,
    MarkPrice,
    Reconcile,
    StateChange,
    Trade,
)
from trio_feed.runtime.recording import Recorder, open_recorder
from trio_feed.runtime.replay import (
    Capture,
    CaptureError,
    ReplayTransport,
    RestRecord,
    StateRecord,
    WsRecord,
    open_replay,
    parse_record,
)
from trio_feed.runtime.sinks import run_inline
from trio_feed.testing import FakeExchange

from support import feed_on, make_config

MARKET = (Kline, Trade, BookUpdate, BookTicker, MarkPrice, Reconcile)
CHANNELS = ("kline_1m", "aggTrade", "bookTicker", "depth", "markPrice")


@pytest.fixture
def inline_recorder(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorder writes on the event loop (a worker thread takes real time, which the
    autojump clock does not see)."""
    monkeypatch.setattr(Recorder, "run_sync", staticmethod(run_inline))


def config(**sections: Any) -> FeedConfig:
    sections.setdefault("reconnect", {"base_delay": 2.0, "max_delay": 5.0, "jitter_ratio": 0.1})
    sections.setdefault("reconciliation", {"kline_interval": 21.0, "depth_interval": 33.0})
    return make_config(channels=CHANNELS, **sections)


async def record_live(path: Path, cfg: FeedConfig) -> tuple[list[Event], FakeExchange]:
    """A live run on the fake, recorded to ``path``: a closed kline distorted (reconciled
    later), a drop of every connection (REST backfill of klines and trades, books re-synced
    from snapshots), then a book sequence break. Returns every event it published."""
    fake = FakeExchange(seed=11, trade_rate=3.0)
    async with fake, open_recorder(str(path)) as recorder:
        async with feed_on(fake, cfg, recorder=recorder) as feed:
            sub = feed.events(max_buffer=10_000_000)
            await trio.sleep(70.3)
            fake.distort_closed_klines("BTCUSDT", "1m")  # the close at 2:00 goes out wrong
            await trio.sleep(61.1)
            fake.drop_connections()  # ~2 s down: missed trades come from REST, books re-sync
            await trio.sleep(75.2)
            fake.skip_depth_update("ETHUSDT")
            await trio.sleep(20.9)
        # Shutdown (the DISCONNECTED changes) is recorded too; drain after the feed closed.
        events = sub.receive_nowait()
    assert recorder.written > 1000 and not recorder.overflowed
    return events, fake


async def replay_capture(path: Path, cfg: FeedConfig) -> tuple[list[Event], Any]:
    capture = Capture.from_file(path)
    async with open_replay(cfg, capture) as replay:
        sub = replay.feed.events(max_buffer=10_000_000)
        stats = await replay.run()
    return sub.receive_nowait(), stats


def market(events: list[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, MARKET)]


@pytest.mark.usefixtures("inline_recorder")
async def test_replaying_a_capture_gives_the_live_runs_events(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    path = tmp_path / "capture.jsonl"
    cfg = config()
    live, fake = await record_live(path, cfg)

    # The live run went through what the replay must reproduce.
    lost = [e for e in live if isinstance(e, StateChange) and e.state == "LOST"]
    assert len(lost) == 2  # both connections (market and public routes) dropped once
    after_drop = live[live.index(lost[0]) :]
    assert any(isinstance(e, Trade) and e.source == "rest" for e in after_drop)
    assert any(isinstance(e, Kline) and e.source == "rest" for e in live)
    assert [e.action for e in live if isinstance(e, Reconcile)] == ["revised"]
    depth_snapshots = [r for r in fake.rest_requests if r.path == "/fapi/v1/depth"]
    assert len(depth_snapshots) >= 5  # 2 at the start, 2 after the drop, 1 after the skip
    for cls in MARKET:
        assert any(isinstance(e, cls) for e in live), cls

    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert {line["kind"] for line in lines} == {"ws", "rest", "state"}
    ws = next(line for line in lines if line["kind"] == "ws")
    assert list(ws) == ["t", "venue", "kind", "conn", "data"]
    rest = next(line for line in lines if line["kind"] == "rest")
    assert list(rest) == ["t", "venue", "kind", "request", "status", "data"]
    assert rest["request"].startswith("/fapi/v1/") and rest["status"] == 200
    times = [line["t"] for line in lines]
    assert times == sorted(times)  # arrival order

    replayed, stats = await replay_capture(path, cfg)
    assert market(replayed) == market(live)  # every field, in the same order
    assert [e for e in replayed if isinstance(e, StateChange)] == [
        e for e in live if isinstance(e, StateChange)
    ]
    assert stats.unanswered == 0 and stats.unused == 0 and stats.malformed == 0
    assert stats.frames == sum(1 for line in lines if line["kind"] == "ws")


@pytest.mark.usefixtures("inline_recorder")
async def test_a_capture_without_state_records_replays_from_the_frames_alone(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The contract's two kinds only: no state events, and everything up to the first drop
    as live (after it, the catch-up happens when the frames show the gap)."""
    path = tmp_path / "capture.jsonl"
    cfg = config()
    live, _ = await record_live(path, cfg)
    bare = tmp_path / "bare.jsonl"
    bare.write_bytes(
        b"".join(
            line + b"\n"
            for line in path.read_bytes().splitlines()
            if orjson.loads(line)["kind"] != "state"
        )
    )
    replayed, _ = await replay_capture(bare, cfg)
    assert not any(isinstance(e, StateChange) for e in replayed)
    first_lost = next(
        i for i, e in enumerate(live) if isinstance(e, StateChange) and e.state == "LOST"
    )
    before = market(live[:first_lost])
    assert len(before) > 1000
    assert market(replayed)[: len(before)] == before
    # After it the two differ: e.g. the drop's book reset is not in the frames.
    assert market(replayed) != market(live)


# ---- the recorder -------------------------------------------------------------------------


async def test_the_recorder_writes_frames_responses_and_states_in_order(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    async with open_recorder(str(path)) as recorder:
        recorder.frames(
            5, "binance-usdm", "binance-usdm/market/0", ['{"a":1}', b'{"b":"\xc3\xa9"}']
        )
        recorder.response(6, "binance-usdm", "/fapi/v1/time", 200, '{"serverTime":1}')
        recorder.state(
            7,
            "binance-usdm",
            StateChange("binance-usdm/market/0", "LOST", "SUBSCRIBED", 8, ("x",), 1),
        )
    records = list(Capture.from_file(path).records())
    assert records == [
        WsRecord(5, "binance-usdm", "binance-usdm/market/0", '{"a":1}'),
        WsRecord(5, "binance-usdm", "binance-usdm/market/0", '{"b":"é"}'),  # bytes as text
        RestRecord(6, "binance-usdm", "/fapi/v1/time", 200, '{"serverTime":1}'),
        StateRecord(7, "binance-usdm", "binance-usdm/market/0", "LOST", "SUBSCRIBED", 8, ("x",), 1),
    ]
    assert recorder.written == 4


async def test_a_recorder_that_falls_behind_stops_loudly(caplog: pytest.LogCaptureFixture) -> None:
    file = io.BytesIO()
    recorder = Recorder(file, max_buffer=3)
    recorder.frames(1, "v", "c", ["1", "2"])
    recorder.frames(2, "v", "c", ["3", "4"])  # the writer has not run: over the bound
    recorder.response(3, "v", "/x", 200, "{}")  # after an overflow nothing more is kept
    assert recorder.overflowed and recorder.dropped == 3
    assert "recording stopped" in caplog.text
    recorder.close()
    await recorder.run()
    assert file.getvalue().count(b"\n") == 2 and recorder.written == 2


# ---- the REST transport -------------------------------------------------------------------


async def test_the_replay_transport_answers_in_capture_order_and_404s_the_rest() -> None:
    from collections import Counter

    import httpx

    transport = ReplayTransport("v", "https://x.test/api", Counter({"/t?symbol=A": 2}))
    async with httpx.AsyncClient(base_url="https://x.test/api", transport=transport) as client:
        transport.release(RestRecord(1, "v", "/t?symbol=A", 200, "first"))
        first = await client.get("/t", params={"symbol": "A"})
        assert (first.status_code, first.text) == (200, "first")
        async with trio.open_nursery() as nursery:
            answers: list[httpx.Response] = []

            async def ask() -> None:
                answers.append(await client.get("/t", params={"symbol": "A"}))

            nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            assert answers == []  # asked before the replay reached the answer: it waits
            transport.release(RestRecord(2, "v", "/t?symbol=A", 503, "second"))
        assert (answers[0].status_code, answers[0].text) == (503, "second")
        missing = await client.get("/t", params={"symbol": "A"})  # no answer left
        other = await client.get("/u")
        assert missing.status_code == other.status_code == 404
    assert transport.unanswered == 2 and transport.unused() == 0


# ---- bad captures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"t": 1, "venue": "v", "kind": "udp", "data": ""}', "kind must be one of"),
        ('{"t": 1, "venue": "v", "kind": "ws", "data": ""}', "without 'conn'"),
        ('{"t": "1", "venue": "v", "kind": "ws", "conn": "c", "data": ""}', "t must be an int"),
        (
            '{"t": 1, "venue": "v", "kind": "rest", "request": "/x", "status": 200, "data": 5}',
            "data must be a string",
        ),
    ],
)
def test_a_malformed_line_names_its_number(line: str, problem: str) -> None:
    good = '{"t": 1, "venue": "v", "kind": "ws", "conn": "c", "data": "{}"}'
    with pytest.raises(CaptureError) as info:
        Capture.from_lines([good, "", good, line, good], source="cap.jsonl")
    assert info.value.line == 4
    assert str(info.value).startswith("cap.jsonl line 4: ")
    assert problem in str(info.value)


def test_parse_record_round_trips_each_kind() -> None:
    line = '{"t": 3, "venue": "v", "kind": "rest", "request": "/x?a=1", "status": 429, "data": ""}'
    assert parse_record(line) == RestRecord(3, "v", "/x?a=1", 429, "")


# ---- the commands -------------------------------------------------------------------------


def write_config(path: Path, ws_url: str, rest_url: str) -> Path:
    path.write_text(
        f'sinks = []\n[[venues]]\nexchange = "binance-usdm"\nws_url = "{ws_url}"\n'
        f'rest_url = "{rest_url}"\n'
        'symbols = ["BTCUSDT"]\nchannels = ["aggTrade", "kline_1m", "bookTicker", "depth"]\n'
    )
    return path


async def test_record_then_replay_commands_end_to_end(tmp_path: Path) -> None:
    """``trio-feed record`` against the simulator on loopback (real sockets, real time),
    then ``trio-feed replay`` of what it wrote: the replay's market events are the ones the
    capture's frames carry."""
    capture = tmp_path / "capture.jsonl"
    async with FakeExchange(seed=5, trade_rate=20.0) as fake, trio.open_nursery() as nursery:
        ws_url, rest_url = await nursery.start(fake.serve)
        cfg = write_config(tmp_path / "loopback.toml", ws_url, rest_url)
        argv = ["record", "--config", str(cfg), "--out", str(capture), "--duration", "2.5"]
        with trio.fail_after(60):
            recorded = await trio.run_process(
                [sys.executable, "-m", "trio_feed", *argv], capture_stderr=True, check=False
            )
        nursery.cancel_scope.cancel()
    assert recorded.returncode == 0, recorded.stderr.decode()
    lines = [orjson.loads(line) for line in capture.read_bytes().splitlines()]
    kinds = {line["kind"] for line in lines}
    assert kinds == {"ws", "rest", "state"}
    trade_ids = sorted(
        orjson.loads(line["data"])["data"]["a"]
        for line in lines
        if line["kind"] == "ws" and "@aggTrade" in line["data"]
    )
    assert len(trade_ids) > 10

    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-m", "trio_feed", "replay", "--config", str(cfg), "--in",
             str(capture), "--jsonl", "-"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    events = [orjson.loads(line) for line in done.stdout.splitlines()]
    streamed = [e["id"] for e in events if e["type"] == "trade" and e["source"] == "ws"]
    assert streamed == trade_ids  # every recorded trade, in order, once
    assert any(e["type"] == "book" for e in events)
    assert any(e["type"] == "state" and e["state"] == "SUBSCRIBED" for e in events)


def test_replay_of_a_malformed_capture_exits_2_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path / "c.toml", "wss://x.test", "https://x.test")
    capture = tmp_path / "bad.jsonl"
    capture.write_text(
        '{"t": 1, "venue": "binance-usdm", "kind": "rest", "request": "/fapi/v1/time", '
        '"status": 200, "data": "{}"}\n{"t": 2, "venue": "binance-usdm", "kind": "ws"}\n'
    )
    code = main(["replay", "--config", str(cfg), "--in", str(capture)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{capture} line 2: ws record without 'conn'" in err
    assert "Traceback" not in err


def test_replay_of_a_missing_capture_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path / "c.toml", "wss://x.test", "https://x.test")
    code = main(["replay", "--config", str(cfg), "--in", str(tmp_path / "nope.jsonl")])
    assert code == 2
    assert "nope.jsonl: cannot read it" in capsys.readouterr().err


def test_record_to_an_unwritable_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path / "c.toml", "wss://x.test", "https://x.test")
    code = main(["record", "--config", str(cfg), "--out", str(tmp_path / "no" / "dir.jsonl")])
    assert code == 2
    assert "--out" in capsys.readouterr().err


# ---- every venue -------------------------------------------------------------------------


def _venue_fake(exchange: str) -> tuple[Any, tuple[str, ...], tuple[str, ...]]:
    from trio_feed.testing import FakeBinanceSpot, FakeBitget, FakeBybit
    from trio_feed.testing.okx import FakeOkx

    if exchange == "binance-spot":
        return FakeBinanceSpot(symbols=["BTCUSDT"], seed=21), ("BTCUSDT",), CHANNELS[:4]
    if exchange == "bybit-linear":
        return FakeBybit(symbols=["BTCUSDT"], seed=22), ("BTCUSDT",), CHANNELS
    if exchange == "okx":
        okx = FakeOkx(symbols=["BTC-USDT-SWAP"], seed=23)
        return okx, ("BTC-USDT-SWAP",), ("kline_1m", "aggTrade", "depth", "bookTicker")
    fake = FakeBitget(symbols=["BTCUSDT"], seed=24)
    return fake, ("BTCUSDT",), ("kline_1m", "aggTrade", "depth", "bookTicker")


@pytest.mark.usefixtures("inline_recorder")
@pytest.mark.parametrize("exchange", ["binance-spot", "bybit-linear", "okx", "bitget-usdt-futures"])
async def test_every_venue_replays_to_the_live_runs_events(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, exchange: str
) -> None:
    fake, symbols, channels = _venue_fake(exchange)
    cfg = make_config(
        symbols=symbols,
        channels=channels,
        exchange=exchange,
        reconnect={"base_delay": 2.0, "max_delay": 5.0, "jitter_ratio": 0.1},
        reconciliation={"kline_interval": 21.0, "depth_interval": 33.0},
    )
    path = tmp_path / f"{exchange}.jsonl"
    async with fake, open_recorder(str(path)) as recorder:
        async with feed_on(fake, cfg, recorder=recorder) as feed:
            sub = feed.events(max_buffer=10_000_000)
            await trio.sleep(75.3)
            fake.drop_connections()
            await trio.sleep(70.9)
        live = sub.receive_nowait()
    assert recorder.written > 100 and not recorder.overflowed
    assert any(isinstance(e, StateChange) and e.state == "LOST" for e in live)
    for cls in (Kline, Trade, BookUpdate, BookTicker):
        assert any(isinstance(e, cls) for e in live), cls
    replayed, stats = await replay_capture(path, cfg)
    assert market(replayed) == market(live)
    assert stats.unanswered == 0 and stats.malformed == 0
