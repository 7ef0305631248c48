"""Real-clock smoke tests: `trio-feed run` as a process against the simulator on loopback.

These use real sockets and a real process, so they cannot run on the mock clock; no test
sleeps for a fixed time: each waits for output, then signals, bounded by `fail_after`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import orjson
import trio
from trio_feed.codec import EVENT_TYPES
from trio_feed.runtime.sqlite_store import SqliteStore
from trio_feed.testing import FakeExchange

CONTRACT_TYPES = {"kline", "trade", "mark_price", "book_ticker", "state"}
DECIMAL_FIELDS = {
    "kline": ["open", "high", "low", "close", "volume", "quote_volume", "taker_buy_volume",
              "taker_buy_quote_volume"],
    "trade": ["price", "qty"],
    "mark_price": ["mark_price", "index_price", "funding_rate"],
    "book_ticker": ["bid_price", "bid_qty", "ask_price", "ask_qty"],
}  # fmt: skip


async def run_until_signal(tmp_path: Path, sig: int) -> tuple[int, list[dict[str, object]], str]:
    async with FakeExchange(seed=21, trade_rate=20.0) as fake, trio.open_nursery() as nursery:
        ws_url, rest_url = await nursery.start(fake.serve)
        config = tmp_path / "loopback.toml"
        config.write_text(
            f'[[venues]]\nexchange = "binance-usdm"\nws_url = "{ws_url}"\n'
            f'rest_url = "{rest_url}"\nsymbols = ["BTCUSDT", "ETHUSDT"]\n'
            'channels = ["aggTrade", "kline_1m", "markPrice", "bookTicker"]\n'
        )
        command = [
            sys.executable,
            "-m",
            "trio_feed",
            "run",
            "--config",
            str(config),
            "--jsonl",
            "-",
        ]
        with trio.fail_after(60):
            process = await trio.lowlevel.open_process(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**os.environ},
                cwd=str(tmp_path),  # the default store goes to ./data/feed.sqlite
            )
            assert process.stdout is not None and process.stderr is not None
            out = bytearray()
            seen: set[str] = set()
            while not seen >= CONTRACT_TYPES:
                chunk = await process.stdout.receive_some(65536)
                assert chunk, "trio-feed exited early"
                out += chunk
                lines = bytes(out).split(b"\n")[:-1]
                seen = {orjson.loads(line)["type"] for line in lines}
            process.send_signal(sig)
            while chunk := await process.stdout.receive_some(65536):
                out += chunk
            err = b""
            while chunk := await process.stderr.receive_some(65536):
                err += chunk
            code = await process.wait()
        nursery.cancel_scope.cancel()
    text = bytes(out)
    assert text.endswith(b"\n")  # flushed whole lines only
    return code, [orjson.loads(line) for line in text.splitlines()], err.decode()


def check_contract(events: list[dict[str, object]]) -> None:
    for event in events:
        cls = EVENT_TYPES[str(event["type"])]
        names = [f.name for f in cls.__attrs_attrs__]  # type: ignore[attr-defined]
        assert list(event) == ["type", *names]
        for field in DECIMAL_FIELDS.get(str(event["type"]), []):
            value = event[field]
            assert isinstance(value, str)
            Decimal(value)  # a decimal string, never a float


async def test_run_prints_contract_json_lines_and_stops_on_sigint(tmp_path: Path) -> None:
    code, events, err = await run_until_signal(tmp_path, signal.SIGINT)
    assert code == 0
    check_contract(events)
    assert "received SIGINT" in err and "Traceback" not in err
    states = [e for e in events if e["type"] == "state"]
    assert states[-1]["state"] == "DISCONNECTED"  # the shutdown itself was written out
    ids = [e["id"] for e in events if e["type"] == "trade" and e["symbol"] == "BTCUSDT"]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    # The embedded default store (no [[sinks]] in the config) got every trade before exit.
    with SqliteStore(tmp_path / "data" / "feed.sqlite", readonly=True) as store:
        assert [t.id for t in store.trades("binance-usdm", "BTCUSDT")] == ids


async def test_sigterm_also_stops_gracefully(tmp_path: Path) -> None:
    code, events, err = await run_until_signal(tmp_path, signal.SIGTERM)
    assert code == 0
    assert "received SIGTERM" in err
    assert events[-1]["type"] == "state" and events[-1]["state"] == "DISCONNECTED"
