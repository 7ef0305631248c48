"""Backfill speed: closed klines and trades per second filled from the fake exchange's REST
(a script, not a test).

    .venv/bin/python bench/bench_backfill.py [DAYS]

A restart after ``DAYS`` days down (3 by default): every kline key and trade symbol resumes
from the start of the fake market's history, and the feed's own fill path (REST client,
adapter parsing, sequencers, caches, publishing to a subscription) pages through the gap.
The fake answers in-process (no sockets), so the figures are our CPU cost per item; the
venue's weight budget is lifted for the measurement and its effect reported separately:
on Binance USD-M one 1500-kline page costs 10 of the 2400 weight per minute and one
1000-trade page costs 20.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import trio
import trio.testing

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trio_feed.config import ReconciliationConfig  # noqa: E402
from trio_feed.core.clock import MarketClock  # noqa: E402
from trio_feed.core.intervals import bucket_open  # noqa: E402
from trio_feed.core.keeper import ResumePoint, VenueData  # noqa: E402
from trio_feed.core.weight import WeightBudget  # noqa: E402
from trio_feed.events import Kline, Trade  # noqa: E402
from trio_feed.runtime.fanout import EventHub  # noqa: E402
from trio_feed.runtime.integrity import VenueIntegrity  # noqa: E402
from trio_feed.runtime.rest import RestClient  # noqa: E402
from trio_feed.testing import FakeExchange  # noqa: E402
from trio_feed.venues.binance_usdm import BinanceUsdmAdapter  # noqa: E402

SYMBOLS = ("BTCUSDT", "ETHUSDT")
INTERVALS = ("1m", "5m", "1h")


async def fill(fake: FakeExchange, *, klines: bool) -> tuple[int, float]:
    """Run one fill (klines of every key, or trades of every symbol); items and seconds."""
    import random

    adapter = BinanceUsdmAdapter()
    clock = MarketClock(fake.now_ms)
    clock.observe(fake.now_ms(), fake.now_ms(), fake.now_ms())
    rest = RestClient(
        adapter,
        "https://fake-exchange.test",
        transport=fake.rest_transport,
        clock=clock,
        budget=WeightBudget(10**9),
    )
    start = fake.start_time_ms
    keys = [(s, i) for s in SYMBOLS for i in INTERVALS] if klines else []
    first = {s: fake.market.first_agg_id(s) for s in SYMBOLS}
    resume = ResumePoint(
        {k: fake.market.klines(k[0], k[1], start_time=start, limit=1)[0] for k in keys},  # type: ignore[misc]
        {} if klines else {s: first[s] for s in SYMBOLS},
    )
    data = VenueData(
        adapter.name,
        kline_keys=keys,
        built={},
        trade_symbols=[] if klines else list(SYMBOLS),
        published_trades=[] if klines else list(SYMBOLS),
        resume=resume,
    )
    hub = EventHub()
    sub = hub.subscribe(10**8)
    integrity = VenueIntegrity(
        adapter=adapter,
        rest=rest,
        clock=clock,
        data=data,
        publish=hub.publish,
        reconciliation=ReconciliationConfig(kline_interval=10**9),
        rng=random.Random(1),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(integrity.run)
        began = time.perf_counter()
        now = clock.now_ms()
        gaps = data.after_reconnect(
            keys, [] if klines else list(SYMBOLS), lambda iv: bucket_open(now, iv)
        )
        integrity.start_fills(gaps)
        while integrity.fills_in_progress:  # noqa: ASYNC110 - polling keeps the feed untouched
            await trio.sleep(0.001)
        elapsed = time.perf_counter() - began
        nursery.cancel_scope.cancel()
    await rest.aclose()
    wanted = Kline if klines else Trade
    items = sum(1 for e in sub.receive_nowait() if isinstance(e, wanted))
    return items, elapsed


async def main(days: float) -> None:
    clock = trio.lowlevel.current_clock()
    assert isinstance(clock, trio.testing.MockClock)
    async with FakeExchange(
        symbols=SYMBOLS, seed=5, tick=3600.0, trade_rate=0.5, rest_latency=0.0, weight_limit=10**9
    ) as fake:
        clock.jump(days * 86400)
        fake.market.advance_to(fake.now_ms())  # build the history before timing
        k_items, k_secs = await fill(fake, klines=True)
        t_items, t_secs = await fill(fake, klines=False)
    print(f"backfill after {days:g} days down, {len(SYMBOLS)} symbols, fake REST in-process")
    print(f"{'what':<28}{'items':>10}{'seconds':>10}{'items/s':>12}")
    print(f"{'klines (1m, 5m, 1h)':<28}{k_items:>10}{k_secs:>10.2f}{k_items / k_secs:>12,.0f}")
    print(f"{'aggTrades':<28}{t_items:>10}{t_secs:>10.2f}{t_items / t_secs:>12,.0f}")
    print(
        "weight-bound ceiling on USD-M (2160 of 2400/min): "
        f"{2160 // 10 * 1500 / 60:,.0f} klines/s, {2160 // 20 * 1000 / 60:,.0f} trades/s"
    )


if __name__ == "__main__":
    trio.run(
        main,
        float(sys.argv[1]) if len(sys.argv) > 1 else 3.0,
        clock=trio.testing.MockClock(rate=1.0),
    )
