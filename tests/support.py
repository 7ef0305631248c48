"""Shared test helpers: a config for the fake exchange and a feed wired to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio_feed import Feed, FeedConfig, config_from_dict, open_feed
from trio_feed.testing import FakeExchange

#: A host name that can never be reached: every test connects through the fake instead.
FAKE_WS = "wss://fake-exchange.test"
FAKE_REST = "https://fake-exchange.test"


def make_config(
    symbols: Sequence[str] = ("BTCUSDT", "ETHUSDT"),
    channels: Sequence[str] = ("aggTrade", "kline_1m", "bookTicker"),
    exchange: str = "binance-usdm",
    **sections: Any,
) -> FeedConfig:
    """A one-venue config (Binance USD-M by default) pointed at the fake, with ``sections``
    merged in."""
    data: dict[str, Any] = {
        "venues": [
            {
                "exchange": exchange,
                "ws_url": FAKE_WS,
                "rest_url": FAKE_REST,
                "symbols": list(symbols),
                "channels": list(channels),
            }
        ],
        **sections,
    }
    return config_from_dict(data, environ={})


@asynccontextmanager
async def feed_on(
    fake: FakeExchange, config: FeedConfig, *, seed: int = 1, skew_ms: int = 0, **kw: Any
) -> AsyncIterator[Feed]:
    """``open_feed`` wired to ``fake`` (memory streams, mock REST, the fake's clock)."""
    async with open_feed(
        config,
        connector=fake.connect,
        rest_transport=fake.rest_transport,
        wall_clock=lambda: fake.now_ms() + skew_ms,
        seed=seed,
        **kw,
    ) as feed:
        yield feed


def count_tasks() -> int:
    """Every task alive under the root task (to prove none leaked)."""

    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    return walk(trio.lowlevel.current_root_task())
