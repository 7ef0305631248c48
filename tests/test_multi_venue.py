"""Two venues in one feed: each keeps its own connections, and one venue's trouble never
touches the other's streams."""

from __future__ import annotations

import trio
from trio_feed import config_from_dict, open_feed
from trio_feed.events import Event, Kline, StateChange, Trade
from trio_feed.testing import FakeExchange
from trio_feed.testing.bybit import FakeBybit

from support import assert_klines_complete, assert_trades_complete


def two_venue_config():
    venue = {"symbols": ["BTCUSDT"], "channels": ["aggTrade", "kline_1m"]}
    return config_from_dict(
        {
            "venues": [
                {
                    "exchange": "binance-usdm",
                    "ws_url": "wss://binance.fake.test",
                    "rest_url": "https://binance.fake.test",
                    **venue,
                },
                {
                    "exchange": "bybit-linear",
                    "ws_url": "wss://bybit.fake.test",
                    "rest_url": "https://bybit.fake.test",
                    **venue,
                },
            ],
            "reconnect": {"base_delay": 2.0, "max_delay": 10.0},
            "sinks": [],
        },
        environ={},
    )


async def test_one_venue_dropping_leaves_the_other_untouched(autojump_clock):
    binance = FakeExchange(symbols=["BTCUSDT"], seed=1)
    bybit = FakeBybit(symbols=["BTCUSDT"], seed=2)
    events: list[Event] = []
    async with binance, bybit:
        async with open_feed(
            two_venue_config(),
            connector={"binance-usdm": binance.connect, "bybit-linear": bybit.connect},
            rest_transport={
                "binance-usdm": binance.rest_transport,
                "bybit-linear": bybit.rest_transport,
            },
            wall_clock=binance.now_ms,
            seed=3,
        ) as feed:
            sub = feed.events(max_buffer=1_000_000)

            async def record() -> None:
                async for event in sub:
                    events.append(event)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(record)
                await trio.sleep(100)
                bybit.drop_connections()
                await trio.sleep(200)
                status = feed.status()
                binance_open = [r.is_open for r in binance.connections]
                nursery.cancel_scope.cancel()
    by_venue = {c.venue: c for c in status.connections}
    assert set(by_venue) == {"binance-usdm", "bybit-linear"}
    assert by_venue["binance-usdm"].reconnects == 0
    assert by_venue["bybit-linear"].reconnects == 1
    assert all(c.state == "SUBSCRIBED" for c in status.connections)
    lost = [e.connection for e in events if isinstance(e, StateChange) and e.state == "LOST"]
    assert lost and all(c.startswith("bybit-linear/") for c in lost)
    assert binance_open == [True]  # its one connection, never reopened
    # Each venue's data is its own, complete across the other's (and its own) trouble.
    binance_trades = [e for e in events if isinstance(e, Trade) and e.exchange == "binance-usdm"]
    assert_trades_complete(binance_trades, binance, "BTCUSDT")
    klines = [e for e in events if isinstance(e, Kline) and e.exchange == "binance-usdm"]
    assert_klines_complete(klines, binance, "BTCUSDT", "1m")
    # Bybit's klines carry no trade counts or taker volumes: compare what they carry.
    closed = {
        k.open_time: k
        for k in events
        if isinstance(k, Kline) and k.exchange == "bybit-linear" and k.closed
    }
    times = sorted(closed)
    truth = bybit.market.klines("BTCUSDT", "1m", start_time=times[0], end_time=times[-1])
    assert [b.open_time for b in truth] == times  # no gap across its own drop
    assert [
        (closed[b.open_time].open, closed[b.open_time].close, closed[b.open_time].volume)
        for b in truth
    ] == [(b.open, b.close, b.volume) for b in truth]
    assert [e for e in events if isinstance(e, Trade) and e.exchange == "bybit-linear"]
