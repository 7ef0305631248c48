"""Shared test helpers: a config for the fake exchange and a feed wired to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio_feed import Feed, FeedConfig, config_from_dict, open_feed
from trio_feed.events import Kline, Trade
from trio_feed.testing import FakeExchange
from trio_feed.testing.records import KlineBar

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
    merged in; no sinks unless given (the default SQLite store would write in the working
    directory)."""
    sections.setdefault("sinks", [])
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


def assert_trades_complete(trades: Sequence[Trade], fake: FakeExchange, symbol: str) -> None:
    """``trades`` are the exchange's aggregated trades of ``symbol`` from the first one on:
    ids increasing by one (no gap, no duplicate), every field as the exchange has it."""
    assert trades, f"no trades of {symbol}"
    ids = [t.id for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids))), "trade ids not consecutive"
    truth = fake.market.trades(symbol, from_id=ids[0], limit=len(ids))
    assert [
        (t.id, t.price, t.qty, t.first_trade_id, t.last_trade_id, t.time, t.buyer_is_maker)
        for t in trades
    ] == [
        (a.agg_id, a.price, a.qty, a.first_trade_id, a.last_trade_id, a.time, a.buyer_is_maker)
        for a in truth
    ]


def kline_row(k: Kline | KlineBar) -> tuple[Any, ...]:
    """The fields a kline event and the fake's record share."""
    return (
        k.symbol,
        k.interval,
        k.open_time,
        k.close_time,
        k.open,
        k.high,
        k.low,
        k.close,
        k.volume,
        k.quote_volume,
        k.trades,
        k.taker_buy_volume,
        k.taker_buy_quote_volume,
    )


def assert_klines_complete(
    klines: Sequence[Kline], fake: FakeExchange, symbol: str, interval: str
) -> list[Kline]:
    """The closed klines among ``klines`` (of one key) are the exchange's closed klines from
    the first one on: in open-time order, no gap, no duplicate, every field equal (the last
    revision of each counts). Returns the closed klines, first revisions only."""
    closed = [k for k in klines if k.closed and k.symbol == symbol and k.interval == interval]
    assert closed, f"no closed {symbol} {interval} klines"
    first = [k for k in closed if k.revision == 0]
    times = [k.open_time for k in first]
    assert times == sorted(set(times)), "closed klines out of order or duplicated"
    final = {k.open_time: k for k in closed}  # later revisions replace earlier ones
    truth = fake.market.klines(
        symbol.removesuffix("_PERPETUAL"), interval, start_time=times[0], end_time=times[-1]
    )
    assert [t.open_time for t in truth] == times, "closed klines have a gap"
    assert [kline_row(final[t])[2:] for t in times] == [kline_row(b)[2:] for b in truth]
    return first
