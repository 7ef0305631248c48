"""Fan-out of events to subscriptions, without ever blocking the publisher.

The policy for a consumer that falls behind: each subscription has its own bounded
buffer (``max_buffer`` events). Publishing never waits: readers must keep draining their
sockets, or the exchange would see a dead connection (unanswered pings) and our own
liveness checks would fire. When a subscription's buffer is full, *that subscription*
is closed with `SlowConsumer`: its consumer first receives every event buffered before
the overflow, in order, then `SlowConsumer` is raised, saying how many were not delivered.
Every other subscription and the feed itself go on untouched. A consumer that wants to
carry on opens a new subscription (and, for klines and trades, can fill the gap from
``feed.history()`` / the caches), knowing exactly where its gap begins.

Dropping silently, conflating, or blocking the reader were the alternatives; each either
loses data without telling anyone or lets one slow consumer stall every stream.

Cost: publishing is a deque extend per subscription; receiving is a deque pop, with a
full scheduler checkpoint every `_YIELD_EVERY` events (and whenever it has to wait), so a
fast consumer neither starves other tasks nor pays a context switch per event.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType

import trio

from ..errors import SlowConsumer
from ..events import Event

__all__ = ["EventHub", "Subscription"]

_YIELD_EVERY = 64


class Subscription:
    """One consumer's bounded view of a feed's events. Async-iterate it; close it (or use
    ``with``) when done."""

    def __init__(self, hub: EventHub, max_buffer: int) -> None:
        if max_buffer < 1:
            raise ValueError("max_buffer must be >= 1")
        self._hub = hub
        self.max_buffer = max_buffer
        self._buffer: deque[Event] = deque()
        self._wakeup: trio.Event | None = None
        self._overflowed = False
        self._closed = False
        self._since_yield = 0
        self._dropped = 0
        self._overflow_mark = 0  # the hub's publish count when this subscription overflowed

    # ---- publisher side (synchronous, never blocks) ----------------------------------------

    @property
    def dropped(self) -> int:
        """Events not delivered because of an overflow."""
        if not self._overflowed:
            return 0
        return self._dropped + self._hub._published - self._overflow_mark

    def _push(self, events: list[Event]) -> None:
        room = self.max_buffer - len(self._buffer)
        if len(events) <= room:
            self._buffer.extend(events)
        else:
            self._buffer.extend(events[:room])
            self._dropped = len(events) - room
            self._overflow_mark = self._hub._published + len(events)
            self._overflowed = True
            self._hub._overflowed = True  # the hub stops paying for it after this publish
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()

    # ---- consumer side --------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self.receive()

    async def receive(self) -> Event:
        """The next event. Raises `SlowConsumer` after the last buffered event once the
        subscription overflowed, and `trio.EndOfChannel` once closed and drained."""
        buffer = self._buffer
        if buffer:
            self._since_yield += 1
            if self._since_yield >= _YIELD_EVERY:
                self._since_yield = 0
                await trio.lowlevel.checkpoint()
            else:
                await trio.lowlevel.checkpoint_if_cancelled()
            if buffer:  # a checkpoint may have let close() run
                return buffer.popleft()
        await self.receive_wait()
        self._since_yield = 0
        return buffer.popleft()

    def receive_nowait(self) -> list[Event]:
        """Take every buffered event at once (for batch consumers such as sinks)."""
        events = list(self._buffer)
        self._buffer.clear()
        return events

    async def receive_batch(self) -> list[Event]:
        """Wait for at least one event, then take every buffered event at once."""
        if not self._buffer:
            await self.receive_wait()
        else:
            await trio.lowlevel.checkpoint()
        return self.receive_nowait()

    async def receive_wait(self) -> None:
        """Wait until an event is buffered (raises like `receive` on overflow or close)."""
        while not self._buffer:
            if self._overflowed:
                raise SlowConsumer(self.max_buffer, self.dropped)
            if self._closed:
                raise StopAsyncIteration
            self._wakeup = wakeup = trio.Event()
            await wakeup.wait()

    @property
    def pending(self) -> int:
        """Events buffered and not yet received."""
        return len(self._buffer)

    def close(self) -> None:
        """Stop receiving; buffered events can still be drained."""
        if not self._closed:
            self._closed = True
            self._hub._discard(self)
            wakeup = self._wakeup
            if wakeup is not None:
                self._wakeup = None
                wakeup.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventHub:
    """Delivers published events to every open subscription."""

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self._overflowed = False
        self._published = 0  # events published so far (counts what overflowed subs miss)

    def subscribe(self, max_buffer: int) -> Subscription:
        """A new subscription that sees every event published from now on."""
        sub = Subscription(self, max_buffer)
        self._subscriptions.append(sub)
        return sub

    def publish(self, events: list[Event]) -> None:
        """Hand ``events`` (in order) to every subscription. Never blocks."""
        for sub in self._subscriptions:
            sub._push(events)
        self._published += len(events)
        if self._overflowed:
            # Removing inside the loop would skip the next subscription.
            self._overflowed = False
            self._subscriptions = [s for s in self._subscriptions if not s._overflowed]

    def publish_one(self, event: Event) -> None:
        """`publish` for a single event."""
        self.publish([event])

    def close(self) -> None:
        """Close every subscription (the feed is shutting down)."""
        for sub in list(self._subscriptions):
            sub.close()

    def _discard(self, sub: Subscription) -> None:
        try:
            self._subscriptions.remove(sub)
        except ValueError:
            pass

    @property
    def subscriptions(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscriptions)
