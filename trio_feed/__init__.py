"""trio-feed: gap-free, reconciled crypto-exchange market data, supervised with Trio.

The public API: `open_feed` and the `Feed` it yields, `load_config` and the config
classes, the event classes, and the errors. The fake exchange for tests lives in
`trio_feed.testing`.
"""

from .config import (
    CacheConfig,
    FeedConfig,
    HeartbeatConfig,
    MonitoringConfig,
    NewListingsConfig,
    PingConfig,
    PoolConfig,
    ReconciliationConfig,
    ReconnectConfig,
    ShutdownConfig,
    SinkConfig,
    VenueConfig,
    config_from_dict,
    config_from_text,
    load_config,
)
from .errors import ConfigError, FeedError, IllegalTransition, MalformedFrame, SlowConsumer
from .events import (
    BookTicker,
    BookUpdate,
    Event,
    Kline,
    MarkPrice,
    QualityChange,
    Reconcile,
    StateChange,
    Trade,
)
from .runtime.fanout import Subscription
from .runtime.feed import Feed, open_feed
from .runtime.status import ConnectionStatus, FeedStatus, SymbolStatus, VenueStatus

__version__ = "0.1.0"

__all__ = [
    "BookTicker",
    "BookUpdate",
    "CacheConfig",
    "ConfigError",
    "ConnectionStatus",
    "Event",
    "Feed",
    "FeedConfig",
    "FeedError",
    "FeedStatus",
    "HeartbeatConfig",
    "IllegalTransition",
    "Kline",
    "MalformedFrame",
    "MarkPrice",
    "MonitoringConfig",
    "NewListingsConfig",
    "PingConfig",
    "PoolConfig",
    "QualityChange",
    "Reconcile",
    "ReconciliationConfig",
    "ReconnectConfig",
    "ShutdownConfig",
    "SinkConfig",
    "SlowConsumer",
    "StateChange",
    "Subscription",
    "SymbolStatus",
    "Trade",
    "VenueConfig",
    "VenueStatus",
    "config_from_dict",
    "config_from_text",
    "load_config",
    "open_feed",
]
