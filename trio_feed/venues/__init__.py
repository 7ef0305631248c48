"""Exchange adapters and their registry.

Adapters register under a name through the ``trio_feed.venues`` entry-point group, so a
third-party package can add a venue without touching trio-feed; the built-in ones are
registered the same way in trio-feed's own ``pyproject.toml`` and also known directly, so
a source checkout works without installing.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from .base import VenueAdapter

__all__ = ["VenueAdapter", "get_adapter", "known_venues"]

_BUILTIN: dict[str, str] = {
    "binance-spot": "trio_feed.venues.binance_spot:BinanceSpotAdapter",
    "binance-usdm": "trio_feed.venues.binance_usdm:BinanceUsdmAdapter",
    "bitget-spot": "trio_feed.venues.bitget:BitgetSpotAdapter",
    "bitget-usdt-futures": "trio_feed.venues.bitget:BitgetUsdtFuturesAdapter",
    "bybit-linear": "trio_feed.venues.bybit:BybitLinearAdapter",
    "bybit-spot": "trio_feed.venues.bybit:BybitSpotAdapter",
    "json-gateway": "trio_feed.venues.gateway:JsonGatewayAdapter",
    "okx": "trio_feed.venues.okx:OkxAdapter",
}


def _targets() -> dict[str, str]:
    targets = dict(_BUILTIN)
    for ep in entry_points(group="trio_feed.venues"):
        targets.setdefault(ep.name, ep.value)
    return targets


def known_venues() -> list[str]:
    """Names of every venue adapter that can be loaded, sorted."""
    return sorted(_targets())


def get_adapter(name: str) -> VenueAdapter:
    """A new adapter instance for the venue registered as ``name`` (KeyError if unknown)."""
    target = _targets()[name]
    module_name, _, attr = target.partition(":")
    module = __import__(module_name, fromlist=[attr])
    cls: type[VenueAdapter] = getattr(module, attr)
    return cls()
