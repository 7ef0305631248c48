"""Pool planning: which streams go on which connection.

Rules, per venue:

* streams of different *routes* (endpoint families, e.g. Binance USD-M ``/public`` and
  ``/market``) never share a connection;
* at most ``max_streams_per_connection`` streams on one connection (and never more than
  the venue's own cap), at most ``max_connections`` connections;
* least-loaded first: the initial plan opens as few connections as each route needs and
  spreads its streams evenly over them; a stream added later goes to the least-loaded
  connection of its route that has room, and only opens a new connection when none has.

A subscription set that cannot fit raises `PoolCapacityError`, which says how many
connections it would need. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from attrs import define, frozen

from ..errors import ConfigError
from ..venues.base import StreamSpec

__all__ = ["ConnectionPlan", "PoolCapacityError", "PoolPlanner"]


class PoolCapacityError(ConfigError):
    """The streams do not fit in the allowed connections."""

    def __init__(self, venue: str, needed: int, allowed: int, detail: str) -> None:
        self.needed = needed
        self.allowed = allowed
        super().__init__(
            f"connection_pool.max_connections: {venue} needs {needed} connections for "
            f"{detail}, but max_connections is {allowed}"
        )


@frozen(slots=True)
class ConnectionPlan:
    """One planned connection: its id, route and the streams it holds."""

    id: str
    route: str
    streams: tuple[StreamSpec, ...]


@define
class _Slot:
    id: str
    route: str
    streams: list[StreamSpec]


class PoolPlanner:
    """The stream-to-connection assignment of one venue, kept up to date as streams come
    and go."""

    def __init__(self, venue: str, *, max_connections: int, max_streams_per_connection: int):
        if max_connections < 1 or max_streams_per_connection < 1:
            raise ValueError("max_connections and max_streams_per_connection must be >= 1")
        self.venue = venue
        self.max_connections = max_connections
        self.max_streams_per_connection = max_streams_per_connection
        self._slots: list[_Slot] = []
        self._owner: dict[str, _Slot] = {}  # stream name -> slot
        self._next_index = 0

    # ---- queries --------------------------------------------------------------------------

    def plans(self) -> list[ConnectionPlan]:
        """The current assignment, connections in the order they were opened."""
        return [ConnectionPlan(s.id, s.route, tuple(s.streams)) for s in self._slots]

    def owner(self, stream_name: str) -> str | None:
        """The id of the connection holding ``stream_name``, if any."""
        slot = self._owner.get(stream_name)
        return slot.id if slot is not None else None

    # ---- changes --------------------------------------------------------------------------

    def plan(self, streams: Sequence[StreamSpec]) -> list[ConnectionPlan]:
        """Plan from scratch (the pool must be empty): the fewest connections per route,
        streams spread evenly over them."""
        if self._slots:
            raise RuntimeError("plan() is for an empty pool; use add()")
        unique = _dedupe(streams)
        by_route: dict[str, list[StreamSpec]] = {}
        for spec in unique:
            by_route.setdefault(spec.route, []).append(spec)
        per = self.max_streams_per_connection
        needed = {route: math.ceil(len(specs) / per) for route, specs in by_route.items()}
        total = sum(needed.values())
        if total > self.max_connections:
            detail = ", ".join(
                f"{len(by_route[r])} '{r}' streams ({n} x {per})" for r, n in needed.items()
            )
            raise PoolCapacityError(self.venue, total, self.max_connections, detail)
        for route, specs in by_route.items():
            slots = [self._open(route) for _ in range(needed[route])]
            for spec in specs:
                slot = min(slots, key=lambda s: len(s.streams))  # first of the least loaded
                self._put(slot, spec)
        return self.plans()

    def add(self, streams: Iterable[StreamSpec]) -> dict[str, list[StreamSpec]]:
        """Add streams not yet held; returns ``{connection id: streams added to it}``
        (connections that did not exist before are new). All or nothing: raises
        `PoolCapacityError` without changing anything if they do not fit."""
        new = [s for s in _dedupe(streams) if s.name not in self._owner]
        # Dry run on counts first so a failure leaves the pool untouched.
        load = {slot.id: len(slot.streams) for slot in self._slots}
        routes = {slot.id: slot.route for slot in self._slots}
        opened = 0
        for spec in new:
            candidates = [
                sid
                for sid, n in load.items()
                if routes[sid] == spec.route and n < self.max_streams_per_connection
            ]
            if candidates:
                load[min(candidates, key=load.__getitem__)] += 1
            else:
                opened += 1
                sid = f"<new {opened}>"
                load[sid], routes[sid] = 1, spec.route
        if len(self._slots) + opened > self.max_connections:
            raise PoolCapacityError(
                self.venue,
                len(self._slots) + opened,
                self.max_connections,
                f"{len(self._owner) + len(new)} streams",
            )
        changes: dict[str, list[StreamSpec]] = {}
        for spec in new:
            room = [
                s
                for s in self._slots
                if s.route == spec.route and len(s.streams) < self.max_streams_per_connection
            ]
            slot = min(room, key=lambda s: len(s.streams)) if room else self._open(spec.route)
            self._put(slot, spec)
            changes.setdefault(slot.id, []).append(spec)
        return changes

    def remove(self, names: Iterable[str]) -> dict[str, list[StreamSpec]]:
        """Remove streams by name; returns ``{connection id: streams removed from it}``.
        A connection left with no streams is dropped from the plan (the shell closes it)."""
        changes: dict[str, list[StreamSpec]] = {}
        for name in names:
            slot = self._owner.pop(name, None)
            if slot is None:
                continue
            spec = next(s for s in slot.streams if s.name == name)
            slot.streams.remove(spec)
            changes.setdefault(slot.id, []).append(spec)
        self._slots = [s for s in self._slots if s.streams]
        return changes

    # ---- internals ------------------------------------------------------------------------

    def _open(self, route: str) -> _Slot:
        slot = _Slot(f"{self.venue}/{route}/{self._next_index}", route, [])
        self._next_index += 1
        self._slots.append(slot)
        return slot

    def _put(self, slot: _Slot, spec: StreamSpec) -> None:
        slot.streams.append(spec)
        self._owner[spec.name] = slot


def _dedupe(streams: Iterable[StreamSpec]) -> list[StreamSpec]:
    seen: set[str] = set()
    out = []
    for spec in streams:
        if spec.name not in seen:
            seen.add(spec.name)
            out.append(spec)
    return out
