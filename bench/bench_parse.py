"""Throughput of `BinanceUsdmAdapter.parse` on recorded frames (a script, not a test).

    .venv/bin/python bench/bench_parse.py [FRAMES]

Parses the recorded aggTrade, kline, depth and bookTicker frames of ``tests/data`` round-robin
(``FRAMES`` in all per kind, 200000 by default) and prints frames per second, next to the cost
of ``orjson.loads`` alone on the same frames (the floor no parser can go under).

The few dozen recorded frames repeat, so the parser's decimal memo hits nearly always; the
``cold/s`` column empties the memo before every frame, the worst case (no price ever seen).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trio_feed.venues import binance_usdm  # noqa: E402
from trio_feed.venues.binance_usdm import BinanceUsdmAdapter  # noqa: E402

KINDS = ("aggtrade", "kline", "depth_diff", "bookticker")


def recorded(kind: str) -> list[bytes]:
    """The recorded frames of ``tests/data/binance_usdm_<kind>.json``, as received bytes."""
    fixture = json.loads((ROOT / "tests" / "data" / f"binance_usdm_{kind}.json").read_text())
    return [r["raw"].encode() for r in fixture["recorded"]]


def rate(fn: object, frames: list[bytes], total: int) -> float:
    """Frames per second of ``fn`` over ``total`` frames taken round-robin from ``frames``."""
    assert callable(fn)
    batch = frames * (total // len(frames) + 1)
    batch = batch[:total]
    start = time.perf_counter()
    for frame in batch:
        fn(frame)
    return total / (time.perf_counter() - start)


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    adapter = BinanceUsdmAdapter()
    memo = binance_usdm._DEC_CACHE

    def cold_parse(frame: bytes) -> object:
        memo.clear()
        return adapter.parse(frame)

    print(f"{'frames':<12}{'parse/s':>12}{'cold/s':>12}{'loads/s':>12}{'us/frame':>10}")
    for kind in KINDS:
        frames = recorded(kind)
        rate(adapter.parse, frames, min(total, 10_000))  # warm up
        parsed = rate(adapter.parse, frames, total)
        cold = rate(cold_parse, frames, total)
        loads = rate(orjson.loads, frames, total)
        print(f"{kind:<12}{parsed:>12,.0f}{cold:>12,.0f}{loads:>12,.0f}{1e6 / parsed:>10.2f}")
    print(f"({total} frames each; us/frame is for parse)")


if __name__ == "__main__":
    main()
