"""The connection supervisor's reader, driven directly with a scripted session."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing
from trio_feed.core.backoff import BackoffPolicy
from trio_feed.core.clock import MarketClock
from trio_feed.events import Event, Trade
from trio_feed.runtime.connection import ConnectionSettings, ConnectionSupervisor
from trio_feed.runtime.limits import outgoing_throttle
from trio_feed.runtime.link import Link
from trio_feed.venues import get_adapter
from trio_feed.venues.base import ParsedItem


def trade_frame(agg_id: int) -> bytes:
    return (
        b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,"a":%d,"s":"BTCUSDT",'
        b'"p":"1.5","q":"2","f":1,"l":1,"T":1,"m":true}}' % agg_id
    )


SHUTDOWN = b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":5}}'


class ScriptedSession:
    def __init__(self, batches: list[list[bytes]]) -> None:
        self.batches = batches

    async def receive_batch(self) -> list[str | bytes]:
        await trio.lowlevel.checkpoint()
        if not self.batches:
            await trio.sleep_forever()
        return list(self.batches.pop(0))

    async def send(self, message: str) -> None:
        raise AssertionError("not used")

    async def ping(self) -> None:
        raise AssertionError("not used")

    async def aclose(self) -> None:
        pass


def supervisor(delivered: list[ParsedItem], published: list[Event]) -> ConnectionSupervisor:
    adapter = get_adapter("binance-usdm")
    return ConnectionSupervisor(
        connection_id="c",
        route="market",
        streams=[adapter.stream("BTCUSDT", "aggTrade")],
        adapter=adapter,
        settings=ConnectionSettings(
            ws_url="wss://fake-exchange.test",
            connect_timeout=1.0,
            ping_interval=20.0,
            ping_timeout=10.0,
            backoff=BackoffPolicy(),
        ),
        connector=None,  # type: ignore[arg-type]  # the reader does not connect
        transport=None,  # type: ignore[arg-type]
        clock=MarketClock(lambda: 0),
        publish=published.append,
        deliver=delivered.extend,
        rng=random.Random(0),
    )


def current_link(sup: ConnectionSupervisor, session: ScriptedSession) -> Link:
    """Make ``session`` the supervisor's socket, delivering where the supervisor does."""
    link = Link(1, sup.streams, outgoing_throttle(10))
    link.session = session
    link.deliver = sup._deliver
    sup._link = link
    return link


async def test_a_shutdown_notice_asks_for_a_rotation_and_loses_nothing_of_its_batch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    delivered: list[ParsedItem] = []
    sup = supervisor(delivered, [])
    session = ScriptedSession([[trade_frame(1), SHUTDOWN, trade_frame(2)], [trade_frame(3)]])
    with trio.move_on_after(5):
        await sup._read(current_link(sup, session))
    # The socket keeps serving until its replacement is ready (make-before-break).
    assert [t.id for t in delivered if isinstance(t, Trade)] == [1, 2, 3]
    assert sup._rotate_event.is_set()
    assert sup._rotate_reason == "venue announced shutdown"
    assert sup.stats.messages == 4


async def test_malformed_frames_in_a_batch_are_skipped_not_fatal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    delivered: list[ParsedItem] = []
    sup = supervisor(delivered, [])
    session = ScriptedSession(
        [[trade_frame(1), b"{not json", trade_frame(2)], [b'{"stream":"x","data":[1]}']]
    )
    with trio.move_on_after(5):
        await sup._read(current_link(sup, session))
    assert [t.id for t in delivered if isinstance(t, Trade)] == [1, 2]
    assert sup.stats.malformed == 2
    assert sup.last_message_age() == pytest.approx(5.0)
