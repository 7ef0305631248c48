"""The live terminal view of ``trio-feed run`` and ``trio-feed demo`` (rich)."""

from __future__ import annotations

import trio
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .runtime.feed import Feed
from .runtime.status import FeedStatus

__all__ = ["live_view", "render_status"]

_STATE_STYLE = {
    "SUBSCRIBED": "green",
    "CONNECTED": "cyan",
    "CONNECTING": "yellow",
    "RECONNECTING": "yellow",
    "LOST": "red",
    "FAILED": "bold red",
    "DISCONNECTED": "dim",
}


def render_status(status: FeedStatus, rates: dict[str, float]) -> Group:
    """A table of connections and one of venues, for a status snapshot."""
    conns = Table(title="connections", expand=True)
    for col in (
        "connection",
        "state",
        "streams",
        "msgs/s",
        "last msg",
        "retry",
        "reconnects",
        "malformed",
    ):
        conns.add_column(col, justify="left" if col in ("connection", "state") else "right")
    for c in status.connections:
        age = "-" if c.last_message_age is None else f"{c.last_message_age:.1f}s"
        conns.add_row(
            c.id,
            Text(c.state, style=_STATE_STYLE.get(c.state, "")),
            str(len(c.streams)),
            f"{rates.get(c.id, 0.0):,.0f}",
            age,
            str(c.retry),
            str(c.reconnects),
            str(c.malformed),
        )
    venues = Table(title="venues", expand=True)
    for col in ("venue", "clock offset", "REST calls", "REST errors", "weight used", "last error"):
        venues.add_column(col)
    for v in status.venues:
        venues.add_row(
            v.name,
            "-" if v.clock_offset_ms is None else f"{v.clock_offset_ms:+d} ms",
            str(v.rest_requests),
            str(v.rest_errors),
            "-" if v.rest_used_weight is None else str(v.rest_used_weight),
            v.rest_last_error or "",
        )
    return Group(conns, venues)


async def live_view(feed: Feed, console: Console, *, refresh: float = 0.25) -> None:
    """Redraw the status a few times a second until cancelled. Rendering is cheap and
    happens between frames, so it does not slow the feed measurably."""
    last: dict[str, tuple[float, int]] = {}
    rates: dict[str, float] = {}
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while True:
            status = feed.status()
            now = trio.current_time()
            for c in status.connections:
                if c.id in last:
                    t0, n0 = last[c.id]
                    if now > t0:
                        rates[c.id] = (c.messages - n0) / (now - t0)
                last[c.id] = (now, c.messages)
            live.update(render_status(status, rates), refresh=True)
            await trio.sleep(refresh)
