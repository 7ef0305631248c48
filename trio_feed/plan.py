"""From a config to the connections a feed will open (pure: no I/O).

Used by ``open_feed()`` and by ``trio-feed check-config``, so what the check prints is
exactly what the feed does.
"""

from __future__ import annotations

from collections.abc import Sequence

from attrs import frozen

from .config import FeedConfig, VenueConfig
from .core.keeper import DataKeys
from .core.pool import ConnectionPlan, PoolPlanner
from .errors import ConfigError
from .venues import get_adapter
from .venues.base import StreamSpec, VenueAdapter

__all__ = ["VenuePlan", "data_keys", "plan_feed", "venue_streams"]


@frozen
class VenuePlan:
    """One venue's adapter, effective config and planned connections."""

    config: VenueConfig
    adapter: VenueAdapter
    planner: PoolPlanner
    connections: tuple[ConnectionPlan, ...]


def venue_streams(adapter: VenueAdapter, venue: VenueConfig) -> list[StreamSpec]:
    """Every stream of ``venue``: symbols x channels, in config order, each once.

    A kline channel built from trades needs the symbol's trade stream; it is subscribed
    once however many channels need it.
    """
    streams: dict[str, StreamSpec] = {}
    for symbol in venue.symbols:
        for channel in venue.channels:
            spec = adapter.stream(symbol, channel)
            streams.setdefault(spec.name, spec)
    return list(streams.values())


def data_keys(adapter: VenueAdapter, symbols: Sequence[str], channels: Sequence[str]) -> DataKeys:
    """What a venue's data keeper tracks for ``symbols`` x ``channels`` (channels passed
    the adapter's `~VenueAdapter.check_channel`).

    Streamed kline channels give kline keys as their events name them
    (`~VenueAdapter.kline_key`); kline channels the venue does not stream are built from
    the symbol's trades (`~VenueAdapter.built_interval`), so they need its trade stream
    without publishing it; ``aggTrade`` needs the trade stream and publishes it. Other
    channels need nothing kept. Called at start and on every subscription change, so
    both track the same keys for the same streams.
    """
    kline_keys: list[tuple[str, str]] = []
    built: dict[str, list[str]] = {}
    trade_symbols: set[str] = set()
    published: set[str] = set()
    for symbol in symbols:
        for channel in channels:
            interval = adapter.built_interval(channel)
            if interval is not None:
                built.setdefault(symbol, []).append(interval)
                trade_symbols.add(symbol)
                continue
            key = adapter.kline_key(symbol, channel)
            if key is not None:
                kline_keys.append(key)
            elif channel == "aggTrade":
                trade_symbols.add(symbol)
                published.add(symbol)
    return DataKeys(kline_keys, built, sorted(trade_symbols), published)


def plan_feed(config: FeedConfig) -> list[VenuePlan]:
    """Configure every venue's adapter (`~VenueAdapter.configure`) and plan its connections.
    Raises `ConfigError` (naming the venue) if an adapter refuses its config (a gateway token
    variable that is not set) or the streams do not fit the connection pool."""
    plans: list[VenuePlan] = []
    problems: list[str] = []
    for index, venue in enumerate(config.venues):
        adapter = get_adapter(venue.exchange)
        try:
            # Here rather than in get_adapter: adapters stay constructible without a config
            # (the loader and check-config list them), and every run path plans first.
            adapter.configure(venue)
        except ConfigError as exc:
            problems.extend(f"venues[{index}].{p}" for p in exc.problems)
            continue
        pool = venue.connection_pool
        planner = PoolPlanner(
            venue.exchange,
            max_connections=pool.max_connections,
            # The venue's own cap wins over a larger configured value.
            max_streams_per_connection=min(
                pool.max_streams_per_connection, adapter.limits.max_streams_per_connection
            ),
        )
        try:
            connections = planner.plan(venue_streams(adapter, venue))
        except ConfigError as exc:
            problems.extend(f"venues[{index}].{p}" for p in exc.problems)
            continue
        plans.append(VenuePlan(venue, adapter, planner, tuple(connections)))
    if problems:
        raise ConfigError(problems)
    return plans
