"""Fan-out: ordering, independence of subscriptions, and the slow-consumer policy."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio_feed.errors import SlowConsumer
from trio_feed.events import Event, QualityChange
from trio_feed.runtime.fanout import EventHub


def ev(i: int) -> Event:
    return QualityChange(symbol="X", score=1.0, reason=str(i), time=i)


async def test_each_subscription_gets_every_event_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = EventHub()
    a, b = hub.subscribe(100), hub.subscribe(100)
    hub.publish([ev(0), ev(1)])
    hub.publish_one(ev(2))
    assert [(await a.receive()).time for _ in range(3)] == [0, 1, 2]
    assert [e.time for e in b.receive_nowait()] == [0, 1, 2]
    assert hub.subscriptions == 2


async def test_a_waiting_consumer_wakes_on_publish(autojump_clock: trio.testing.MockClock) -> None:
    hub = EventHub()
    sub = hub.subscribe(10)
    got: list[int] = []

    async def consume() -> None:
        async for event in sub:
            got.append(event.time)  # type: ignore[union-attr]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.sleep(1)
        hub.publish([ev(1)])
        await trio.sleep(1)
        hub.publish([ev(2), ev(3)])
        await trio.sleep(1)
        sub.close()
    assert got == [1, 2, 3]


async def test_slow_consumer_fails_alone_after_draining(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = EventHub()
    slow, fast = hub.subscribe(3), hub.subscribe(1000)
    for i in range(5):
        hub.publish([ev(i)])  # never blocks, whatever the consumers do
    assert slow.pending == 3 and fast.pending == 5
    assert hub.subscriptions == 1  # the overflowed one no longer costs anything
    assert [(await slow.receive()).time for _ in range(3)] == [0, 1, 2]
    with pytest.raises(SlowConsumer) as info:
        await slow.receive()
    assert info.value.dropped == 2 and info.value.max_buffer == 3
    assert "fell more than 3 events behind" in str(info.value)
    hub.publish([ev(5)])
    assert [e.time for e in fast.receive_nowait()] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(SlowConsumer):
        await slow.receive()


async def test_memory_stays_bounded_under_a_flood(autojump_clock: trio.testing.MockClock) -> None:
    hub = EventHub()
    sub = hub.subscribe(50)
    for i in range(10_000):
        hub.publish([ev(i), ev(i)])
    assert sub.pending == 50
    assert sub.dropped == 20_000 - 50


async def test_partial_batch_is_split_at_the_bound(autojump_clock: trio.testing.MockClock) -> None:
    hub = EventHub()
    sub = hub.subscribe(3)
    hub.publish([ev(0), ev(1)])
    hub.publish([ev(2), ev(3), ev(4)])
    assert [e.time for e in sub.receive_nowait()] == [0, 1, 2]
    assert sub.dropped == 2


async def test_closed_subscription_ends_iteration_after_draining(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = EventHub()
    sub = hub.subscribe(10)
    hub.publish([ev(0)])
    hub.close()
    hub.publish([ev(1)])  # after close: not delivered
    assert [e.time async for e in sub] == [0]  # type: ignore[union-attr]


async def test_receive_batch_waits_then_takes_everything(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = EventHub()
    sub = hub.subscribe(10)

    async def later() -> None:
        await trio.sleep(5)
        hub.publish([ev(0), ev(1)])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(later)
        batch = await sub.receive_batch()
    assert [e.time for e in batch] == [0, 1]
    assert trio.current_time() == 5


async def test_a_fast_consumer_still_lets_other_tasks_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = EventHub()
    sub = hub.subscribe(10_000)
    hub.publish([ev(i) for i in range(1000)])
    ticks = 0

    async def other() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        for _ in range(1000):
            await sub.receive()
        nursery.cancel_scope.cancel()
    assert ticks >= 1000 // 64 - 1  # yielded at least every 64 events


def test_bad_buffer_size_rejected() -> None:
    with pytest.raises(ValueError, match="max_buffer"):
        EventHub().subscribe(0)
