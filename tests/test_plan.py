"""From symbols x channels to what a venue's data keeper tracks (`data_keys`), and from a
config to its planned connections."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from trio_feed.core.keeper import DataKeys
from trio_feed.plan import data_keys, plan_feed
from trio_feed.venues import get_adapter

from support import make_config

USDM = get_adapter("binance-usdm")


def test_each_kind_of_channel_gives_its_keys() -> None:
    keys = data_keys(
        USDM,
        ["ETHUSDT", "BTCUSDT"],
        ["kline_1m", "continuousKline_5m", "kline_1s", "kline_7m", "aggTrade", "depth"],
    )
    assert keys.kline_keys == (
        ("ETHUSDT", "1m"),
        ("ETHUSDT_PERPETUAL", "5m"),  # as continuous klines name themselves
        ("BTCUSDT", "1m"),
        ("BTCUSDT_PERPETUAL", "5m"),
    )
    # Not streamed by USD-M: built from the symbol's trades, in channel order.
    assert dict(keys.built) == {"ETHUSDT": ("1s", "7m"), "BTCUSDT": ("1s", "7m")}
    assert keys.trade_symbols == ("BTCUSDT", "ETHUSDT")  # sorted
    assert keys.published_trades == {"BTCUSDT", "ETHUSDT"}


def test_built_klines_need_the_trade_stream_without_publishing_it() -> None:
    keys = data_keys(USDM, ["BTCUSDT", "ETHUSDT"], ["kline_1s", "bookTicker"])
    assert keys == DataKeys([], {"BTCUSDT": ["1s"], "ETHUSDT": ["1s"]}, ["BTCUSDT", "ETHUSDT"], [])


def test_channels_without_klines_or_trades_need_nothing_kept() -> None:
    keys = data_keys(USDM, ["BTCUSDT"], ["depth", "bookTicker", "markPrice"])
    assert keys == DataKeys([], {}, [], [])
    assert data_keys(USDM, [], ["kline_1m", "aggTrade"]) == DataKeys([], {}, [], [])


def test_a_config_and_its_symbols_and_channels_give_the_same_keys() -> None:
    config = make_config(channels=["aggTrade", "kline_1m", "kline_1s", "bookTicker"])
    (plan,) = plan_feed(config)
    keys = data_keys(plan.adapter, plan.config.symbols, plan.config.channels)
    assert keys == DataKeys(
        [("BTCUSDT", "1m"), ("ETHUSDT", "1m")],
        {"BTCUSDT": ["1s"], "ETHUSDT": ["1s"]},
        ["BTCUSDT", "ETHUSDT"],
        ["BTCUSDT", "ETHUSDT"],
    )


CHANNELS = ["kline_1m", "kline_1s", "continuousKline_1h", "aggTrade", "depth", "bookTicker"]


@given(
    st.lists(st.sampled_from(["BTCUSDT", "ETHUSDT", "SOLUSDT"]), unique=True),
    st.lists(st.sampled_from(CHANNELS), unique=True),
)
def test_keys_split_by_symbol(symbols: list[str], channels: list[str]) -> None:
    """A subscription change adds or removes symbols: the keys of a set of symbols are the
    union of each symbol's keys, whatever else is subscribed."""
    whole = data_keys(USDM, symbols, channels)
    parts = [data_keys(USDM, [s], channels) for s in symbols]
    assert whole.kline_keys == tuple(k for p in parts for k in p.kline_keys)
    assert dict(whole.built) == {s: i for p in parts for s, i in p.built.items()}
    assert set(whole.trade_symbols) == {s for p in parts for s in p.trade_symbols}
    assert whole.published_trades == frozenset().union(*(p.published_trades for p in parts))
    needs_trades = bool({"kline_1s", "aggTrade"} & set(channels))
    assert set(whole.trade_symbols) == (set(symbols) if needs_trades else set())


@pytest.mark.parametrize("channel", ["kline_1m", "continuousKline_1m"])
def test_streamed_kline_channels_are_not_built(channel: str) -> None:
    keys = data_keys(USDM, ["BTCUSDT"], [channel])
    assert keys.built == {} and keys.trade_symbols == ()
    assert len(keys.kline_keys) == 1
