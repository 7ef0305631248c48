"""De-duplicating the overlap of two sockets during a make-before-break rotation.

A connection that must be replaced (its lifetime limit, a ``serverShutdown`` notice) opens the
new socket and subscribes it before the old one closes, so for a moment both deliver the same
streams. The shell hands every item the old socket delivered to `OverlapFilter.note` and
passes the new socket's items through `OverlapFilter.admit`, which lets an item through only
if it is newer than anything the old socket delivered for the same stream.

Each stream has an identity (`event_key`) and its items an order within it
(`event_position`): aggregated trade ids, depth update ids and book-ticker update ids only
grow; mark prices come once per event time; an open kline only gains trades and volume until
it closes, and the next kline has a later open time, so ``(open_time, closed, trades,
volume)`` orders a kline stream's updates (a repeat of the same update compares equal and is
dropped).

Once the new socket has delivered something newer for a stream, the stream is *released*:
its later items pass without comparison (a class lookup and a key lookup while other streams
are still pending, a single truth test once none is). A stream the old socket never
delivered (or any object that is not a market event, such as a `StateChange` or a control
message) always passes.

Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

from attrs import frozen

from ..events import BookTicker, DepthDiff, Kline, MarkPrice, Trade

__all__ = ["OverlapFilter", "event_key", "event_position"]

_T = TypeVar("_T")
_NOT_NOTED: Any = object()


@frozen(slots=True)
class _Kind:
    """How to identify and order one event class's items."""

    key: Callable[[Any], Hashable]
    position: Callable[[Any], Any]


# By exact class: one dict lookup per item (the events are final attrs classes).
_KINDS: dict[type, _Kind] = {
    Kline: _Kind(
        lambda e: (Kline, e.symbol, e.interval),
        lambda e: (e.open_time, e.closed, e.trades, e.volume),
    ),
    Trade: _Kind(lambda e: (Trade, e.symbol), lambda e: e.id),
    DepthDiff: _Kind(lambda e: (DepthDiff, e.symbol), lambda e: e.final_update_id),
    BookTicker: _Kind(lambda e: (BookTicker, e.symbol), lambda e: e.update_id),
    MarkPrice: _Kind(lambda e: (MarkPrice, e.symbol), lambda e: e.time),
}


def event_key(event: object) -> Hashable | None:
    """The stream identity of ``event``: ``(Kline, symbol, interval)`` for a kline,
    ``(cls, symbol)`` for a Trade, DepthDiff, BookTicker or MarkPrice; None for anything
    else."""
    kind = _KINDS.get(type(event))
    return None if kind is None else kind.key(event)


def event_position(event: object) -> Any:
    """The position of ``event`` within its stream, orderable with ``<``: the trade id;
    ``(open_time, closed, trades, volume)`` for a kline; ``final_update_id`` for a depth
    diff; ``update_id`` for a book ticker; ``time`` for a mark price. None for an object
    without an `event_key`."""
    kind = _KINDS.get(type(event))
    return None if kind is None else kind.position(event)


class OverlapFilter:
    """Drops the new socket's items that the old socket already delivered (see the module
    docstring). Use one per rotation."""

    __slots__ = ("_pending", "dropped")

    def __init__(self) -> None:
        # key -> the highest position the old socket delivered, for keys not yet released
        self._pending: dict[Hashable, Any] = {}
        #: Items `admit` refused so far.
        self.dropped = 0

    def note(self, event: object) -> None:
        """The old socket delivered ``event``: remember the highest position per key.

        Noting a key that was already released puts it back under comparison, so an old
        socket that runs ahead of the new one still never gets an item duplicated.
        """
        kind = _KINDS.get(type(event))
        if kind is None:
            return
        key = kind.key(event)
        position = kind.position(event)
        pending = self._pending
        if key not in pending or position > pending[key]:
            pending[key] = position

    def admit(self, event: object) -> bool:
        """The new socket delivered ``event``: True if it is newer than anything noted for its
        key (or its key was never noted, or it has none). The first admitted item of a key
        releases the key."""
        pending = self._pending
        if not pending:  # the common case once the overlap is over
            return True
        kind = _KINDS.get(type(event))
        if kind is None:
            return True
        key = kind.key(event)
        noted = pending.get(key, _NOT_NOTED)
        if noted is _NOT_NOTED:
            return True
        if kind.position(event) > noted:
            del pending[key]
            return True
        self.dropped += 1
        return False

    def filter(self, items: Iterable[_T]) -> list[_T]:
        """`admit` over ``items``, keeping the admitted ones in order (a list of any event
        type in, a list of the same type out)."""
        admit = self.admit
        return [item for item in items if admit(item)]

    def pending_keys(self) -> int:
        """How many keys were noted and not released yet."""
        return len(self._pending)

    def clear(self) -> None:
        """Release every key (the overlap is over: the old socket is closed and a stream it
        delivered may never show up on the new one)."""
        self._pending.clear()
