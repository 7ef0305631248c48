"""The live terminal view of ``trio-feed run`` and ``trio-feed demo`` (rich)."""

from __future__ import annotations

import math

import trio
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .runtime.feed import Feed
from .runtime.status import FeedStatus

__all__ = ["GOOD_QUALITY", "live_view", "quality_style", "render_status"]

_STATE_STYLE = {
    "SUBSCRIBED": "green",
    "CONNECTED": "cyan",
    "CONNECTING": "yellow",
    "RECONNECTING": "yellow",
    "LOST": "red",
    "FAILED": "bold red",
    "DISCONNECTED": "dim",
}


#: Quality at or above this is shown green; below ``min_quality`` red, yellow between.
GOOD_QUALITY = 0.9


def quality_style(quality: float, min_quality: float = 0.5) -> str:
    """The colour of a quality score: green when good, yellow when degraded, red when below
    ``min_quality`` (where ``/health`` turns unhealthy)."""
    if quality >= GOOD_QUALITY:
        return "green"
    if quality >= min_quality:
        return "yellow"
    return "red"


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


def render_status(
    status: FeedStatus, rates: dict[str, float], *, min_quality: float = 0.5
) -> Group:
    """Tables of connections, symbols and venues for a status snapshot. Pure, and cheap
    enough to run a few times a second: one pass over the snapshot, no sorting but the
    symbols' (worst quality first, so that trouble stays on screen when the list is long).
    ``rates`` holds each connection's messages per second."""
    conns = Table(title="connections", expand=True)
    for col in (
        "connection",
        "state",
        "streams",
        "msgs/s",
        "last msg",
        "retry",
        "reconnects",
        "rotations",
        "stale",
        "malformed",
    ):
        conns.add_column(col, justify="left" if col in ("connection", "state") else "right")
    for c in status.connections:
        stale = len(c.stale_streams)
        conns.add_row(
            c.id,
            Text(c.state, style=_STATE_STYLE.get(c.state, "")),
            str(len(c.streams)),
            f"{rates.get(c.id, 0.0):,.0f}",
            _age(c.last_message_age),
            str(c.retry),
            str(c.reconnects),
            str(c.rotations),
            Text(str(stale), style="yellow" if stale else ""),
            str(c.malformed),
        )

    symbols = Table(title="symbols", expand=True)
    symbols.add_column("venue")
    symbols.add_column("symbol")
    symbols.add_column("quality", justify="right")
    symbols.add_column("last close", justify="right")
    symbols.add_column("missing streams", overflow="ellipsis", no_wrap=True)
    symbols.add_column("reason", overflow="ellipsis", no_wrap=True)
    for s in sorted(status.symbols, key=lambda s: s.quality):
        symbols.add_row(
            s.venue,
            s.symbol,
            Text(f"{s.quality:.2f}", style=quality_style(s.quality, min_quality)),
            "-" if s.last_close is None else str(s.last_close),
            Text(", ".join(s.missing_streams), style="red") if s.missing_streams else "",
            s.reason,
        )

    venues = Table(title="venues", expand=True)
    for col in (
        "venue",
        "clock offset",
        "REST calls",
        "REST errors",
        "weight used",
        "banned for",
        "last error",
    ):
        venues.add_column(col)
    for v in status.venues:
        venues.add_row(
            v.name,
            "-" if v.clock_offset_ms is None else f"{v.clock_offset_ms:+d} ms",
            str(v.rest_requests),
            str(v.rest_errors),
            "-" if v.rest_used_weight is None else str(v.rest_used_weight),
            # Rounded up: "0s" while still banned would read as "not banned".
            Text(f"{math.ceil(v.rest_banned_for)}s", style="red") if v.rest_banned_for else "-",
            v.rest_last_error or "",
        )
    return Group(conns, symbols, venues)


async def live_view(
    feed: Feed, console: Console, *, refresh: float = 0.25, min_quality: float = 0.5
) -> None:
    """Redraw the status a few times a second until cancelled. Rendering is cheap and
    happens between frames, so it does not slow the feed measurably. ``min_quality``:
    below it a symbol's quality shows red (pass ``config.monitoring.min_quality``)."""
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
            live.update(render_status(status, rates, min_quality=min_quality), refresh=True)
            await trio.sleep(refresh)
