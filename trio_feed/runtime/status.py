"""Snapshots of a running feed's health, returned by ``feed.status()``."""

from __future__ import annotations

from typing import Any

import cattrs
from attrs import frozen

__all__ = ["ConnectionStatus", "FeedStatus", "VenueStatus"]

_converter = cattrs.Converter()


@frozen(slots=True)
class ConnectionStatus:
    """One connection: where its state machine is and how its traffic looks."""

    id: str
    venue: str
    route: str
    state: str
    streams: tuple[str, ...]
    retry: int
    #: Seconds since its last frame (None before the first).
    last_message_age: float | None
    messages: int
    bytes: int
    malformed: int
    reconnects: int
    last_error: str | None


@frozen(slots=True)
class VenueStatus:
    """One venue: its clock and its REST budget."""

    name: str
    #: Exchange clock minus local clock, ms (None until the first server-time reading).
    clock_offset_ms: int | None
    rest_requests: int
    rest_errors: int
    rest_used_weight: int | None
    #: Seconds until the venue's Retry-After ends (None when not rate limited).
    rest_banned_for: float | None
    rest_last_error: str | None


@frozen(slots=True)
class FeedStatus:
    """Everything ``feed.status()`` reports."""

    connections: tuple[ConnectionStatus, ...]
    venues: tuple[VenueStatus, ...]
    #: Open event subscriptions (``feed.events()``).
    subscriptions: int

    @property
    def healthy(self) -> bool:
        """Every connection SUBSCRIBED."""
        return all(c.state == "SUBSCRIBED" for c in self.connections)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        data: dict[str, Any] = _converter.unstructure(self)
        return data
