"""Tests of trio_feed.config: loading, defaults, overrides and every kind of bad input."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_feed import venues
from trio_feed.config import (
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
from trio_feed.errors import ConfigError
from trio_feed.venues.base import parse_interval

EXAMPLE_FILE = Path(__file__).parent.parent / "config" / "binance-usdm.toml"

_STREAMED = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d")


class FakeUsdm:
    """Just what the config needs of the binance-usdm adapter, so these tests neither depend
    on it nor break when its channel messages change."""

    name = "binance-usdm"
    default_ws_url = "wss://fstream.binance.com"
    default_rest_url = "https://fapi.binance.com"

    def check_channel(self, channel: str) -> str | None:
        kind, _, interval = channel.partition("_")
        if channel in ("aggTrade", "depth", "markPrice", "bookTicker"):
            return None
        if kind == "kline" and parse_interval(interval) is not None:
            return None
        if kind == "continuousKline" and interval in _STREAMED:
            return None
        return (
            f"unknown channel {channel!r} for binance-usdm: "
            "expected kline_<interval>, continuousKline_<interval>, aggTrade, depth, ..."
        )


def _get_adapter(name: str) -> FakeUsdm:
    if name != "binance-usdm":
        raise KeyError(name)
    return FakeUsdm()


@pytest.fixture(autouse=True)
def fake_venues(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(venues, "get_adapter", _get_adapter)
    monkeypatch.setattr(venues, "known_venues", lambda: ["binance-usdm"])


VENUE = """\
[[venues]]
exchange = "binance-usdm"
symbols = ["BTCUSDT", "ETHUSDT"]
channels = ["kline_1m", "aggTrade", "depth"]
"""

CONTRACT_EXAMPLE = """\
[[venues]]                                 # one table per exchange market
exchange = "binance-usdm"                  # registry key of an exchange adapter
ws_url = "wss://fstream.binance.com"       # optional: the adapter's default; a path is appended
rest_url = "https://fapi.binance.com"      # optional: the adapter's default
symbols = ["BTCUSDT", "ETHUSDT"]           # the exchange's own symbol names
channels = ["kline_1m", "kline_5m", "kline_15m", "kline_1h", "kline_4h", "aggTrade", "depth"]
# proxy = "http://127.0.0.1:7890"         # optional; used for both WebSocket and REST

[connection_pool]
max_connections = 5
max_streams_per_connection = 200

[reconnect]                                # delay = min(base * 2**retry, max) +/- jitter_ratio
base_delay = 1.0
max_delay = 60.0
jitter_ratio = 0.1
max_retries = 10                           # 0 means retry forever

[ping]                                     # WebSocket ping/pong liveness
interval = 20
timeout = 10

[heartbeat]                                # per-stream staleness
check_interval = 30
timeout = 60

[reconciliation]
kline_interval = 300                       # seconds between REST checks of the last closed kline
depth_interval = 60                        # seconds between REST depth-snapshot checks
price_tolerance = 0.0001
volume_tolerance = 0.01
depth_gap_resync = 100

[cache]
kline_max_size = 500
aggtrade_max_size = 1000
aggtrade_time_window = 60
book_depth = 20                            # levels per side in emitted book events

[[sinks]]
kind = "sqlite"
path = "data/feed.sqlite"
"""


def load(text: str, **env: str) -> FeedConfig:
    return config_from_text(textwrap.dedent(text), environ=env)


def problems(text: str, **env: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text, **env)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def only_problem(text: str, **env: str) -> str:
    found = problems(text, **env)
    assert len(found) == 1, found
    return found[0]


# ---- valid configs -------------------------------------------------------------------------


def test_contract_example() -> None:
    config = load(CONTRACT_EXAMPLE)
    (venue,) = config.venues
    assert venue.exchange == "binance-usdm"
    assert venue.ws_url == "wss://fstream.binance.com"
    assert venue.rest_url == "https://fapi.binance.com"
    assert venue.symbols == ("BTCUSDT", "ETHUSDT")
    assert venue.channels == (
        "kline_1m",
        "kline_5m",
        "kline_15m",
        "kline_1h",
        "kline_4h",
        "aggTrade",
        "depth",
    )
    assert venue.proxy is None
    assert config.connection_pool == PoolConfig(max_connections=5, max_streams_per_connection=200)
    assert config.reconnect == ReconnectConfig(
        base_delay=1.0, max_delay=60.0, jitter_ratio=0.1, max_retries=10, connect_timeout=10.0
    )
    assert config.ping == PingConfig(interval=20.0, timeout=10.0)
    assert config.heartbeat == HeartbeatConfig(check_interval=30.0, timeout=60.0)
    assert config.reconciliation == ReconciliationConfig(
        kline_interval=300.0,
        depth_interval=60.0,
        price_tolerance=0.0001,
        volume_tolerance=0.01,
        depth_gap_resync=100,
    )
    assert config.cache == CacheConfig(
        kline_max_size=500, aggtrade_max_size=1000, aggtrade_time_window=60.0, book_depth=20
    )
    assert config.sinks == (SinkConfig(kind="sqlite", path="data/feed.sqlite"),)
    # Without venue overrides the venue's effective sections are the global ones.
    for name in ("connection_pool", "reconnect", "ping", "heartbeat", "reconciliation", "cache"):
        assert getattr(venue, name) == getattr(config, name)


def test_contract_example_values_are_the_defaults() -> None:
    config = load(CONTRACT_EXAMPLE)
    assert config.connection_pool == PoolConfig()
    assert config.reconnect == ReconnectConfig()
    assert config.ping == PingConfig()
    assert config.heartbeat == HeartbeatConfig()
    assert config.reconciliation == ReconciliationConfig()
    assert config.cache == CacheConfig()


def test_default_sections_match_the_contract() -> None:
    assert attrs.asdict(PoolConfig()) == {
        "max_connections": 5,
        "max_streams_per_connection": 200,
        "rotate_after": 85800.0,
        "rotation_timeout": 30.0,
    }
    assert attrs.asdict(ReconnectConfig()) == {
        "base_delay": 1.0,
        "max_delay": 60.0,
        "jitter_ratio": 0.1,
        "max_retries": 10,
        "connect_timeout": 10.0,
    }
    assert attrs.asdict(PingConfig()) == {"interval": 20.0, "timeout": 10.0}
    assert attrs.asdict(HeartbeatConfig()) == {"check_interval": 30.0, "timeout": 60.0}
    assert attrs.asdict(ReconciliationConfig()) == {
        "kline_interval": 300.0,
        "depth_interval": 60.0,
        "price_tolerance": 0.0001,
        "volume_tolerance": 0.01,
        "depth_gap_resync": 100,
    }
    assert attrs.asdict(CacheConfig()) == {
        "kline_max_size": 500,
        "aggtrade_max_size": 1000,
        "aggtrade_time_window": 60.0,
        "book_depth": 20,
        "book_interval": 0.0,
    }


def test_omitted_sections_and_urls_take_defaults() -> None:
    config = load(VENUE)
    (venue,) = config.venues
    assert venue.ws_url == FakeUsdm.default_ws_url
    assert venue.rest_url == FakeUsdm.default_rest_url
    assert venue.proxy is None
    # The contract's default: the embedded SQLite store.
    assert config.sinks == (SinkConfig(kind="sqlite", path="data/feed.sqlite"),)
    assert load(VENUE.replace("[[venues]]", "sinks = []\n[[venues]]")).sinks == ()
    for cls, name in (
        (PoolConfig, "connection_pool"),
        (ReconnectConfig, "reconnect"),
        (PingConfig, "ping"),
        (HeartbeatConfig, "heartbeat"),
        (ReconciliationConfig, "reconciliation"),
        (CacheConfig, "cache"),
    ):
        assert getattr(config, name) == cls()
        assert getattr(venue, name) == cls()


def test_ints_become_floats_where_floats_are_expected() -> None:
    config = load(VENUE + "[ping]\ninterval = 5\n[reconnect]\nbase_delay = 2\n")
    assert config.ping.interval == 5.0
    assert type(config.ping.interval) is float
    assert type(config.reconnect.base_delay) is float
    assert type(config.reconnect.max_retries) is int


def test_fractional_durations() -> None:
    config = load(VENUE + "[heartbeat]\ncheck_interval = 0.25\ntimeout = 1.5\n")
    assert config.heartbeat == HeartbeatConfig(check_interval=0.25, timeout=1.5)


def test_trailing_slash_is_stripped_and_proxy_kept() -> None:
    config = load(
        VENUE
        + 'ws_url = "wss://example.test:9443/"\nrest_url = "http://127.0.0.1:8080/api/"\n'
        + 'proxy = "socks5h://user:pw@127.0.0.1:1080"\n'
    )
    (venue,) = config.venues
    assert venue.ws_url == "wss://example.test:9443"
    assert venue.rest_url == "http://127.0.0.1:8080/api"
    assert venue.proxy == "socks5h://user:pw@127.0.0.1:1080"


@pytest.mark.parametrize(
    "proxy", ["http://127.0.0.1:7890", "https://proxy.test:443", "socks5://10.0.0.1:1080"]
)
def test_proxy_schemes(proxy: str) -> None:
    assert load(VENUE + f'proxy = "{proxy}"\n').venues[0].proxy == proxy


def test_per_venue_overrides_apply_key_by_key_to_that_venue_only() -> None:
    config = load(
        """\
        [reconnect]
        base_delay = 2.0
        max_retries = 3

        [cache]
        book_depth = 10

        [[venues]]
        exchange = "binance-usdm"
        symbols = ["BTCUSDT"]
        channels = ["depth"]
        [venues.reconnect]
        max_retries = 0
        [venues.cache]
        book_depth = 50
        kline_max_size = 100

        [[venues]]
        exchange = "binance-usdm"
        symbols = ["ETHUSDT"]
        channels = ["depth"]
        """
    )
    first, second = config.venues
    assert config.reconnect == ReconnectConfig(base_delay=2.0, max_retries=3)
    assert config.cache == CacheConfig(book_depth=10)
    # Only the overridden keys change; the others come from the global section.
    assert first.reconnect == ReconnectConfig(base_delay=2.0, max_retries=0)
    assert first.cache == CacheConfig(book_depth=50, kline_max_size=100)
    assert first.ping == config.ping
    assert second.reconnect == config.reconnect
    assert second.cache == config.cache


def test_override_may_fix_global_delay_order_for_its_venue() -> None:
    config = load(VENUE + "[venues.reconnect]\nbase_delay = 0.5\nmax_delay = 5.0\n")
    assert config.venues[0].reconnect == ReconnectConfig(base_delay=0.5, max_delay=5.0)
    assert config.reconnect == ReconnectConfig()


def test_example_file_loads() -> None:
    config = load_config(EXAMPLE_FILE, environ={})
    (venue,) = config.venues
    assert venue.exchange == "binance-usdm"
    assert venue.symbols == ("BTCUSDT", "ETHUSDT")
    assert venue.channels == (
        "kline_1m",
        "kline_5m",
        "kline_15m",
        "kline_1h",
        "kline_4h",
        "aggTrade",
        "depth",
        "markPrice",
        "bookTicker",
    )
    assert config.reconnect == ReconnectConfig()
    assert config.cache == CacheConfig()


def test_example_file_loads_with_the_real_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("trio_feed.venues.binance_usdm")
    monkeypatch.undo()  # the real registry, not FakeUsdm
    config = load_config(str(EXAMPLE_FILE), environ={})
    assert config.venues[0].symbols == ("BTCUSDT", "ETHUSDT")


def test_config_from_dict() -> None:
    data: dict[str, Any] = {
        "venues": [{"exchange": "binance-usdm", "symbols": ["BTCUSDT"], "channels": ["depth"]}],
        "ping": {"interval": 5},
    }
    config = config_from_dict(data, environ={})
    assert config.ping == PingConfig(interval=5.0)
    assert config.venues[0].ping == PingConfig(interval=5.0)


# ---- connection rotation, new listings, monitoring, shutdown -------------------------------


def test_new_sections_defaults() -> None:
    config = load(VENUE)
    (venue,) = config.venues
    assert config.connection_pool.rotate_after == 85800.0
    assert config.connection_pool.rotation_timeout == 30.0
    assert attrs.asdict(NewListingsConfig()) == {
        "enabled": False,
        "poll_interval": 60.0,
        "channels": ("kline_1m", "kline_5m", "kline_15m"),
    }
    assert attrs.asdict(MonitoringConfig()) == {
        "enabled": False,
        "host": "127.0.0.1",
        "port": 9464,
        "min_quality": 0.5,
    }
    assert attrs.asdict(ShutdownConfig()) == {"timeout": 2.0}
    assert config.new_listings == venue.new_listings == NewListingsConfig()
    assert config.monitoring == MonitoringConfig()
    assert config.shutdown == ShutdownConfig()


def test_new_sections_are_read() -> None:
    config = load(
        """        [connection_pool]
        rotate_after = 0
        rotation_timeout = 5

        [new_listings]
        enabled = true
        poll_interval = 30
        channels = ["kline_1m", "aggTrade"]

        [monitoring]
        enabled = true
        host = "0.0.0.0"
        port = 0
        min_quality = 1

        [shutdown]
        timeout = 0.5
        """
        + VENUE
    )
    assert config.connection_pool == PoolConfig(rotate_after=0.0, rotation_timeout=5.0)
    assert type(config.connection_pool.rotate_after) is float
    assert config.new_listings == NewListingsConfig(
        enabled=True, poll_interval=30.0, channels=("kline_1m", "aggTrade")
    )
    assert config.venues[0].new_listings == config.new_listings
    assert config.monitoring == MonitoringConfig(
        enabled=True, host="0.0.0.0", port=0, min_quality=1.0
    )
    assert type(config.monitoring.min_quality) is float
    assert config.shutdown == ShutdownConfig(timeout=0.5)


def test_new_listings_override_per_venue_key_by_key() -> None:
    config = load(
        "[new_listings]\npoll_interval = 10\n"
        + VENUE
        + '[venues.new_listings]\nenabled = true\nchannels = ["kline_1h"]\n'
        + VENUE.replace('["BTCUSDT", "ETHUSDT"]', '["SOLUSDT"]')
        + "[venues.connection_pool]\nrotate_after = 3600\n"
    )
    first, second = config.venues
    assert config.new_listings == NewListingsConfig(poll_interval=10.0)
    assert first.new_listings == NewListingsConfig(
        enabled=True, poll_interval=10.0, channels=("kline_1h",)
    )
    assert second.new_listings == config.new_listings
    assert first.connection_pool.rotate_after == 85800.0
    assert second.connection_pool == PoolConfig(rotate_after=3600.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # connection_pool
        (
            VENUE + "[connection_pool]\nrotate_after = -1\n",
            "connection_pool.rotate_after: must be >= 0 (got -1)",
        ),
        (
            VENUE + "[venues.connection_pool]\nrotation_timeout = 0\n",
            "venues[0].connection_pool.rotation_timeout: must be > 0 (got 0)",
        ),
        (
            VENUE + '[connection_pool]\nrotate_after = "1d"\n',
            "connection_pool.rotate_after: expected a number, got '1d'",
        ),
        (
            VENUE + "[connection_pool]\nrotate_afer = 10\n",
            "connection_pool.rotate_afer: unknown key (did you mean 'rotate_after'?)",
        ),
        # new_listings
        (
            VENUE + "[new_listings]\nenabled = 1\n",
            "new_listings.enabled: expected true or false, got 1",
        ),
        (
            VENUE + '[venues.new_listings]\nenabled = "yes"\n',
            "venues[0].new_listings.enabled: expected true or false, got 'yes'",
        ),
        (
            VENUE + "[new_listings]\npoll_interval = 0\n",
            "new_listings.poll_interval: must be > 0 (got 0)",
        ),
        (
            VENUE + "[venues.new_listings]\npoll_interval = true\n",
            "venues[0].new_listings.poll_interval: expected a number, got true",
        ),
        (
            VENUE + "[new_listings]\nchannels = []\n",
            "new_listings.channels: at least one channel is required",
        ),
        (
            VENUE + '[new_listings]\nchannels = "kline_1m"\n',
            "new_listings.channels: expected an array of channels, got 'kline_1m'",
        ),
        (
            VENUE + '[venues.new_listings]\nchannels = ["kline_1m", "kline_1m"]\n',
            "venues[0].new_listings.channels[1]: duplicate channel 'kline_1m'",
        ),
        (
            VENUE + '[new_listings]\nchannels = ["kline_1m", 5]\n',
            "new_listings.channels[1]: expected a string, got 5",
        ),
        (
            VENUE + "[new_listings]\nenable = true\n",
            "new_listings.enable: unknown key (did you mean 'enabled'?)",
        ),
        (
            VENUE + "[venues.new_listing]\nenabled = true\n",
            "venues[0].new_listing: unknown key (did you mean 'new_listings'?)",
        ),
        # monitoring
        (
            VENUE + "[monitoring]\nport = 65536\n",
            "monitoring.port: must be >= 0 and <= 65535 (got 65536)",
        ),
        (
            VENUE + "[monitoring]\nport = -1\n",
            "monitoring.port: must be >= 0 and <= 65535 (got -1)",
        ),
        (
            VENUE + "[monitoring]\nport = 94.64\n",
            "monitoring.port: expected an integer, got 94.64",
        ),
        (
            VENUE + "[monitoring]\nmin_quality = 1.5\n",
            "monitoring.min_quality: must be >= 0 and <= 1 (got 1.5)",
        ),
        (
            VENUE + "[monitoring]\nmin_quality = -0.1\n",
            "monitoring.min_quality: must be >= 0 and <= 1 (got -0.1)",
        ),
        (
            VENUE + "[monitoring]\nenabled = 0\n",
            "monitoring.enabled: expected true or false, got 0",
        ),
        (VENUE + "[monitoring]\nhost = 127\n", "monitoring.host: expected a string, got 127"),
        (
            VENUE + '[monitoring]\nhost = ""\n',
            "monitoring.host: must not be empty (use '0.0.0.0' for every interface)",
        ),
        (
            VENUE + '[monitoring]\nhost = "http://127.0.0.1"\n',
            "monitoring.host: 'http://127.0.0.1' must be a host name or IP address, not a URL",
        ),
        (
            VENUE + '[monitoring]\nhost = "local host"\n',
            "monitoring.host: 'local host' must not contain whitespace",
        ),
        (
            VENUE + "[monitoring]\nports = 1\n",
            "monitoring.ports: unknown key (did you mean 'port'?)",
        ),
        ("[monitorng]\n" + VENUE, "monitorng: unknown key (did you mean 'monitoring'?)"),
        (
            VENUE + "monitoring = 5\n",
            "venues[0].monitoring: allowed at the top level only ([monitoring]), not in a venue",
        ),
        (
            VENUE + "[venues.monitoring]\nenabled = true\n",
            "venues[0].monitoring: allowed at the top level only ([monitoring]), not in a venue",
        ),
        # shutdown
        (VENUE + "[shutdown]\ntimeout = 0\n", "shutdown.timeout: must be > 0 (got 0)"),
        (
            VENUE + "[shutdown]\ntimeout = inf\n",
            "shutdown.timeout: must be a finite number (got inf)",
        ),
        ("shutdown = 2\n" + VENUE, "shutdown: expected a table, got 2"),
        (
            VENUE + "[venues.shutdown]\ntimeout = 1\n",
            "venues[0].shutdown: allowed at the top level only ([shutdown]), not in a venue",
        ),
    ],
)  # fmt: skip
def test_new_keys_bad_input_is_reported_with_its_key_path(text: str, expected: str) -> None:
    assert only_problem(text) == expected


def test_new_listing_channels_are_checked_against_the_venue() -> None:
    reason = FakeUsdm().check_channel("klines_1m")
    assert reason is not None
    # A venue's own list: at its path, malformed items and unknown ones each get a line.
    text = VENUE + '[venues.new_listings]\nchannels = ["klines_1m", "depth", "depth"]\n'
    assert problems(text) == [
        "venues[0].new_listings.channels[2]: duplicate channel 'depth'",
        "venues[0].new_listings.channels[0]: " + reason,
    ]
    # The global list: at the global path, once however many venues inherit it.
    text = '[new_listings]\nchannels = ["kline_1m", "klines_1m"]\n' + VENUE + VENUE
    assert problems(text) == ["new_listings.channels[1]: " + reason]
    # A venue's own list replaces the global one: the global one is still checked.
    text = (
        '[new_listings]\nchannels = ["klines_1m"]\n'
        + VENUE
        + '[venues.new_listings]\nchannels = ["kline_1m"]\n'
        + VENUE
    )
    assert problems(text) == ["new_listings.channels[0]: " + reason]


def test_default_new_listing_channels_are_checked_only_when_enabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class NoFifteen(FakeUsdm):
        def check_channel(self, channel: str) -> str | None:
            return "no 15m here" if channel == "kline_15m" else super().check_channel(channel)

    monkeypatch.setattr(venues, "get_adapter", lambda name: NoFifteen())
    assert load(VENUE).venues[0].new_listings.channels[2] == "kline_15m"
    assert problems(VENUE + "[venues.new_listings]\nenabled = true\n") == [
        "venues[0].new_listings.channels[2]: no 15m here"
    ]


def test_new_classes_validate_direct_construction() -> None:
    with pytest.raises(ValueError, match="enabled: expected true or false, got 1"):
        NewListingsConfig(enabled=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channels: at least one channel is required"):
        NewListingsConfig(channels=())
    with pytest.raises(ValueError, match=r"channels\[1\]: duplicate channel 'a'"):
        NewListingsConfig(channels=("a", "a"))
    with pytest.raises(ValueError, match=r"port: must be >= 0 and <= 65535 \(got 65536\)"):
        MonitoringConfig(port=65536)
    with pytest.raises(ValueError, match="host: must not be empty"):
        MonitoringConfig(host="")
    with pytest.raises(ValueError, match=r"min_quality: must be >= 0 and <= 1"):
        attrs.evolve(MonitoringConfig(), min_quality=2.0)
    with pytest.raises(ValueError, match=r"timeout: must be > 0 \(got 0\)"):
        ShutdownConfig(timeout=0)
    with pytest.raises(ValueError, match=r"rotate_after: must be >= 0 \(got -5\)"):
        PoolConfig(rotate_after=-5)
    assert MonitoringConfig(port=0, min_quality=0).port == 0


def test_new_classes_are_exported() -> None:
    import trio_feed

    for cls in (NewListingsConfig, MonitoringConfig, ShutdownConfig):
        assert getattr(trio_feed, cls.__name__) is cls
        assert cls.__name__ in trio_feed.__all__


# ---- environment overrides -----------------------------------------------------------------

TWO_VENUES = VENUE + VENUE.replace('["BTCUSDT", "ETHUSDT"]', '["SOLUSDT"]')


@pytest.mark.parametrize(
    ("var", "value", "attribute", "expected"),
    [
        ("TRIO_FEED_WS_URL", "ws://127.0.0.1:9000/", "ws_url", "ws://127.0.0.1:9000"),
        ("TRIO_FEED_REST_URL", "http://127.0.0.1:9001", "rest_url", "http://127.0.0.1:9001"),
        ("TRIO_FEED_PROXY", "http://127.0.0.1:7890", "proxy", "http://127.0.0.1:7890"),
        ("TRIO_FEED_SYMBOLS", " BTCUSDT, ,XRPUSDT,", "symbols", ("BTCUSDT", "XRPUSDT")),
        ("TRIO_FEED_CHANNELS", "markPrice , bookTicker", "channels", ("markPrice", "bookTicker")),
    ],
)
def test_env_override_applies_to_first_venue(
    var: str, value: str, attribute: str, expected: object
) -> None:
    plain = load(TWO_VENUES)
    config = load(TWO_VENUES, **{var: value})
    assert getattr(config.venues[0], attribute) == expected
    assert config.venues[1] == plain.venues[1]


@pytest.mark.parametrize(
    "var",
    [
        "TRIO_FEED_WS_URL",
        "TRIO_FEED_REST_URL",
        "TRIO_FEED_PROXY",
        "TRIO_FEED_SYMBOLS",
        "TRIO_FEED_CHANNELS",
    ],
)
@pytest.mark.parametrize("value", ["", "   "])
def test_empty_env_value_is_ignored(var: str, value: str) -> None:
    assert load(VENUE, **{var: value}) == load(VENUE)


def test_env_overrides_the_file_value() -> None:
    config = load(VENUE + 'ws_url = "wss://file.test"\n', TRIO_FEED_WS_URL="wss://env.test")
    assert config.venues[0].ws_url == "wss://env.test"


def test_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "feed.toml"
    path.write_text(VENUE)
    monkeypatch.setenv("TRIO_FEED_SYMBOLS", "DOGEUSDT")
    assert load_config(path).venues[0].symbols == ("DOGEUSDT",)
    assert load_config(path, environ={}).venues[0].symbols == ("BTCUSDT", "ETHUSDT")


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("TRIO_FEED_WS_URL", "ftp://x", "TRIO_FEED_WS_URL: 'ftp://x' is not a ws:// or wss:// URL"),
        (
            "TRIO_FEED_REST_URL",
            "wss://x",
            "TRIO_FEED_REST_URL: 'wss://x' is not an http:// or https:// URL",
        ),
        ("TRIO_FEED_PROXY", "http://127.0.0.1", "TRIO_FEED_PROXY: 'http://127.0.0.1' has no port"),
        (
            "TRIO_FEED_SYMBOLS",
            "BTCUSDT,btcusdt",
            "TRIO_FEED_SYMBOLS: duplicate symbol 'btcusdt' (same as 'BTCUSDT')",
        ),
        ("TRIO_FEED_SYMBOLS", ",,", "TRIO_FEED_SYMBOLS: at least one symbol is required"),
    ],
)
def test_env_errors_name_the_variable(tmp_path: Path, var: str, value: str, expected: str) -> None:
    path = tmp_path / "feed.toml"
    path.write_text(VENUE)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={var: value})
    # Not prefixed with the file name: the file is not where the mistake is.
    assert info.value.problems == [expected]


def test_env_unknown_channel_names_the_variable() -> None:
    line = only_problem(VENUE, TRIO_FEED_CHANNELS="depth,klines_1m")
    assert line.startswith("TRIO_FEED_CHANNELS: unknown channel 'klines_1m' for binance-usdm: ")


# ---- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # unknown keys, everywhere
        ("colour = 1\n" + VENUE, "colour: unknown key"),
        (
            VENUE + "[connection_pool]\nmax_conections = 3\n",
            "connection_pool.max_conections: unknown key (did you mean 'max_connections'?)",
        ),
        (VENUE + "foo = 1\n", "venues[0].foo: unknown key"),
        (
            VENUE + "[venues.reconnect]\nbase_dlay = 2.0\n",
            "venues[0].reconnect.base_dlay: unknown key (did you mean 'base_delay'?)",
        ),
        (
            VENUE + "[venues.reconect]\nbase_delay = 2.0\n",
            "venues[0].reconect: unknown key (did you mean 'reconnect'?)",
        ),
        (
            VENUE + '[[sinks]]\nkind = "jsonl"\npath = "-"\nmode = "a"\n',
            "sinks[0].mode: unknown key",
        ),
        # wrong types
        (
            VENUE + '[reconnect]\nmax_retries = "ten"\n',
            "reconnect.max_retries: expected an integer, got 'ten'",
        ),
        (VENUE + '[ping]\ninterval = "20"\n', "ping.interval: expected a number, got '20'"),
        (
            VENUE + "[connection_pool]\nmax_connections = 2.5\n",
            "connection_pool.max_connections: expected an integer, got 2.5",
        ),
        (
            VENUE + "[cache]\nbook_depth = [20]\n",
            "cache.book_depth: expected an integer, got an array",
        ),
        (VENUE + "reconnect = 5\n", "venues[0].reconnect: expected a table, got 5"),
        ("reconnect = 5\n" + VENUE, "reconnect: expected a table, got 5"),
        # bools are not numbers
        (
            VENUE + "[reconnect]\nmax_retries = true\n",
            "reconnect.max_retries: expected an integer, got true",
        ),
        (VENUE + "[ping]\ntimeout = false\n", "ping.timeout: expected a number, got false"),
        # ranges
        (
            VENUE + "[venues.reconnect]\nbase_delay = -1.0\n",
            "venues[0].reconnect.base_delay: must be > 0 (got -1.0)",
        ),
        (VENUE + "[reconnect]\nbase_delay = 0\n", "reconnect.base_delay: must be > 0 (got 0)"),
        (VENUE + "[reconnect]\nmax_retries = -1\n", "reconnect.max_retries: must be >= 0 (got -1)"),
        (
            VENUE + "[reconnect]\njitter_ratio = 1.0\n",
            "reconnect.jitter_ratio: must be >= 0 and < 1 (got 1.0)",
        ),
        (
            VENUE + "[heartbeat]\ntimeout = inf\n",
            "heartbeat.timeout: must be a finite number (got inf)",
        ),
        (VENUE + "[ping]\ninterval = nan\n", "ping.interval: must be a finite number (got nan)"),
        (
            VENUE + "[connection_pool]\nmax_streams_per_connection = 0\n",
            "connection_pool.max_streams_per_connection: must be >= 1 (got 0)",
        ),
        (
            VENUE + "[reconciliation]\nprice_tolerance = -0.1\n",
            "reconciliation.price_tolerance: must be >= 0 (got -0.1)",
        ),
        (
            VENUE + "[reconnect]\nbase_delay = 10.0\nmax_delay = 5.0\n",
            "reconnect: max_delay (5.0) must be >= base_delay (10.0)",
        ),
        (
            VENUE + "[venues.reconnect]\nbase_delay = 100.0\n",
            "venues[0].reconnect: max_delay (60.0) must be >= base_delay (100.0)",
        ),
        # exchange
        (
            VENUE.replace('"binance-usdm"', '"bitmex"'),
            "venues[0].exchange: unknown exchange 'bitmex' (known exchanges: binance-usdm)",
        ),
        (
            VENUE.replace('exchange = "binance-usdm"\n', ""),
            "venues[0].exchange: missing (known exchanges: binance-usdm)",
        ),
        (VENUE.replace('"binance-usdm"', "1"), "venues[0].exchange: expected a string, got 1"),
        # URLs
        (
            VENUE + 'ws_url = "https://x.test"\n',
            "venues[0].ws_url: 'https://x.test' is not a ws:// or wss:// URL",
        ),
        (VENUE + 'ws_url = "wss://"\n', "venues[0].ws_url: 'wss://' has no host"),
        (
            VENUE + 'ws_url = "wss://x.test:99999"\n',
            "venues[0].ws_url: 'wss://x.test:99999' is not a valid URL",
        ),
        (
            VENUE + 'ws_url = "wss://x.test/?a=1"\n',
            "venues[0].ws_url: 'wss://x.test/?a=1' must not have a query or fragment",
        ),
        (VENUE + "ws_url = 443\n", "venues[0].ws_url: expected a string, got 443"),
        (
            VENUE + 'rest_url = "fapi.binance.com"\n',
            "venues[0].rest_url: 'fapi.binance.com' is not an http:// or https:// URL",
        ),
        (
            VENUE + 'rest_url = "https://x .test"\n',
            "venues[0].rest_url: 'https://x .test' must not contain whitespace",
        ),
        # proxy
        (
            VENUE + 'proxy = "ftp://127.0.0.1:21"\n',
            "venues[0].proxy: 'ftp://127.0.0.1:21' is not an http://, https://, socks5:// or "
            "socks5h:// proxy URL",
        ),
        (
            VENUE + 'proxy = "socks5://127.0.0.1"\n',
            "venues[0].proxy: 'socks5://127.0.0.1' has no port",
        ),
        (
            VENUE + 'proxy = ""\n',
            "venues[0].proxy: '' is not an http://, https://, socks5:// or socks5h:// proxy URL",
        ),
        # symbols
        (
            VENUE.replace('["BTCUSDT", "ETHUSDT"]', "[]"),
            "venues[0].symbols: at least one symbol is required",
        ),
        (
            VENUE.replace('["BTCUSDT", "ETHUSDT"]', '"BTCUSDT"'),
            "venues[0].symbols: expected an array of symbols, got 'BTCUSDT'",
        ),
        (
            VENUE.replace('symbols = ["BTCUSDT", "ETHUSDT"]\n', ""),
            "venues[0].symbols: missing (a list of the exchange's symbol names)",
        ),
        (
            VENUE.replace('"ETHUSDT"', '"BTCUSDT"'),
            "venues[0].symbols[1]: duplicate symbol 'BTCUSDT'",
        ),
        (
            VENUE.replace('"ETHUSDT"', '"btcusdt"'),
            "venues[0].symbols[1]: duplicate symbol 'btcusdt' (same as 'BTCUSDT')",
        ),
        (
            VENUE.replace('"ETHUSDT"', '"ETH USDT"'),
            "venues[0].symbols[1]: symbol 'ETH USDT' must not contain whitespace",
        ),
        (
            VENUE.replace('"ETHUSDT"', '"ETH/USDT"'),
            "venues[0].symbols[1]: symbol 'ETH/USDT' must not contain '/' "
            "(use the exchange's own name)",
        ),
        (VENUE.replace('"ETHUSDT"', '""'), "venues[0].symbols[1]: symbol must not be empty"),
        (VENUE.replace('"ETHUSDT"', "7"), "venues[0].symbols[1]: expected a string, got 7"),
        # channels
        (
            VENUE.replace('["kline_1m", "aggTrade", "depth"]', "[]"),
            "venues[0].channels: at least one channel is required",
        ),
        (
            VENUE.replace('"depth"]', '"aggTrade"]'),
            "venues[0].channels[2]: duplicate channel 'aggTrade'",
        ),
        (VENUE.replace('"depth"]', '""]'), "venues[0].channels[2]: channel must not be empty"),
        # top level
        ("", "venues: at least one [[venues]] table is required"),
        ("venues = []\n", "venues: at least one [[venues]] table is required"),
        (
            '[venues]\nexchange = "binance-usdm"\n',
            "venues: expected an array of tables ([[venues]], not [venues]), got a table",
        ),
        ("venues = [1]\n", "venues[0]: expected a table, got 1"),
        # sinks
        (
            VENUE + '[[sinks]]\nkind = "csv"\npath = "x.csv"\n',
            "sinks[0].kind: must be 'jsonl' or 'sqlite' (got 'csv')",
        ),
        (
            VENUE + '[[sinks]]\nkind = "sqlite"\npath = "-"\n',
            "sinks[0].path: '-' (stdout) is only for jsonl sinks",
        ),
        (VENUE + '[[sinks]]\nkind = "jsonl"\npath = ""\n', "sinks[0].path: must not be empty"),
        (
            VENUE + '[[sinks]]\nkind = "jsonl"\n',
            "sinks[0].path: missing (a file path, or '-' for stdout with jsonl)",
        ),
        (VENUE + 'sinks = "x"\n', "venues[0].sinks: unknown key"),
        ('sinks = "x"\n' + VENUE, "sinks: expected an array of tables ([[sinks]]), got 'x'"),
    ],
)
def test_bad_input_is_reported_with_its_key_path(text: str, expected: str) -> None:
    assert only_problem(text) == expected


def test_unknown_channel_names_channel_index_and_venue() -> None:
    text = VENUE.replace('"depth"]', '"klines_1m"]')
    line = only_problem(text)
    assert line == (
        "venues[0].channels[2]: " + FakeUsdm().check_channel("klines_1m")  # type: ignore[operator]
    )


def test_second_venue_paths_use_its_index() -> None:
    text = VENUE + VENUE.replace('"depth"]', '"klines_1m"]') + "[venues.ping]\ntimeout = -1\n"
    assert problems(text) == [
        "venues[1].channels[2]: unknown channel 'klines_1m' for binance-usdm: "
        "expected kline_<interval>, continuousKline_<interval>, aggTrade, depth, ...",
        "venues[1].ping.timeout: must be > 0 (got -1)",
    ]


def test_global_delay_order_mistake_is_not_repeated_per_venue() -> None:
    text = "[reconnect]\nmax_delay = 0.5\n" + VENUE + "[venues.reconnect]\nmax_retries = 1\n"
    assert problems(text) == ["reconnect: max_delay (0.5) must be >= base_delay (1.0)"]


def test_invalid_global_value_is_not_reported_again_for_venues() -> None:
    text = "[reconnect]\nbase_delay = -1\n" + VENUE + "[venues.reconnect]\nmax_delay = 0.5\n"
    assert problems(text) == ["reconnect.base_delay: must be > 0 (got -1)"]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}: file not found"]


def test_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.problems == [f"{tmp_path}: is a directory, not a file"]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_bytes(b'name = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (line,) = info.value.problems
    assert line.startswith(f"{path}: not UTF-8 text")


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text(VENUE + "[ping\ninterval = 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (line,) = info.value.problems
    assert line.startswith(f"{path}: invalid TOML: ")
    assert "line 5" in line  # tomllib's own message, with the position


def test_invalid_toml_from_text() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_text("a = ", source="inline")
    assert info.value.problems[0].startswith("inline: invalid TOML: ")


def test_file_problems_are_prefixed_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text(VENUE + "[venues.reconnect]\nbase_delay = -1.0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.problems == [
        f"{path}: venues[0].reconnect.base_delay: must be > 0 (got -1.0)"
    ]


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        textwrap.dedent(
            """\
            colour = "blue"

            [[venues]]
            exchange = "binance-usdm"
            ws_url = "ftp://fstream.binance.com"
            symbols = ["BTCUSDT", "btcusdt"]
            channels = ["kline_1m", "klines_1m"]
            proxy = "http://127.0.0.1"
            [venues.reconnect]
            base_delay = -1.0
            jiter_ratio = 0.2

            [[venues]]
            exchange = "bitmex"
            symbols = []
            channels = ["depth"]

            [connection_pool]
            max_conections = 3

            [reconnect]
            max_retries = true
            jitter_ratio = 2
            connect_timeout = "10"
            """
        )
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"TRIO_FEED_REST_URL": "ws://nope"})
    p = f"{path}: "
    assert info.value.problems == [
        p + "colour: unknown key",
        p + "connection_pool.max_conections: unknown key (did you mean 'max_connections'?)",
        p + "reconnect.jitter_ratio: must be >= 0 and < 1 (got 2)",
        p + "reconnect.max_retries: expected an integer, got true",
        p + "reconnect.connect_timeout: expected a number, got '10'",
        p + "venues[0].ws_url: 'ftp://fstream.binance.com' is not a ws:// or wss:// URL",
        "TRIO_FEED_REST_URL: 'ws://nope' is not an http:// or https:// URL",
        p + "venues[0].proxy: 'http://127.0.0.1' has no port",
        p + "venues[0].symbols[1]: duplicate symbol 'btcusdt' (same as 'BTCUSDT')",
        p + "venues[0].channels[1]: unknown channel 'klines_1m' for binance-usdm: "
        "expected kline_<interval>, continuousKline_<interval>, aggTrade, depth, ...",
        p + "venues[0].reconnect.jiter_ratio: unknown key (did you mean 'jitter_ratio'?)",
        p + "venues[0].reconnect.base_delay: must be > 0 (got -1.0)",
        p + "venues[1].exchange: unknown exchange 'bitmex' (known exchanges: binance-usdm)",
        p + "venues[1].symbols: at least one symbol is required",
    ]
    assert str(info.value) == "\n".join(info.value.problems)


def test_broken_adapter_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(name: str) -> FakeUsdm:
        raise ImportError("no module named 'trio_feed_bitmex'")

    monkeypatch.setattr(venues, "get_adapter", broken)
    line = only_problem(VENUE)
    assert line.startswith("venues[0].exchange: the adapter for 'binance-usdm' failed to load: ")


def test_non_mapping_top_level() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict([1, 2], environ={})  # type: ignore[arg-type]
    assert info.value.problems == ["<dict>: expected a table at the top level, got an array"]


# Anything TOML can hold, under the keys the loader knows (and a few it does not).
_KEYS = st.sampled_from(
    ["venues", "exchange", "symbols", "channels", "ws_url", "proxy", "reconnect", "base_delay",
     "max_retries", "sinks", "kind", "path", "cache", "book_depth", "new_listings", "enabled",
     "monitoring", "port", "host", "shutdown", "bogus"]
)  # fmt: skip
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(alphabet="aB1 /:._-", max_size=8),
    st.sampled_from(["binance-usdm", "BTCUSDT", "depth", "wss://x.test", "jsonl", "-"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=10,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=100)
@given(data=st.dictionaries(_KEYS, _VALUES, max_size=6))
def test_only_config_error_escapes(data: dict[str, Any]) -> None:
    try:
        config = config_from_dict(data, environ={})
    except ConfigError as exc:
        lines = exc.problems
    else:
        lines = []
        assert config.venues
    assert all(line and "\n" not in line for line in lines)


# ---- the classes themselves ----------------------------------------------------------------


def test_classes_are_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        ReconnectConfig().base_delay = 2.0  # type: ignore[misc]


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ValueError, match=r"base_delay: must be > 0 \(got -1\)"):
        ReconnectConfig(base_delay=-1)
    with pytest.raises(ValueError, match=r"max_delay \(60.0\) must be >= base_delay \(100"):
        attrs.evolve(ReconnectConfig(), base_delay=100.0)
    with pytest.raises(ValueError, match="max_retries: expected an integer, got true"):
        ReconnectConfig(max_retries=True)
    with pytest.raises(ValueError, match="ws_url: 'http://x' is not a ws:// or wss:// URL"):
        VenueConfig(
            exchange="binance-usdm",
            ws_url="http://x",
            rest_url="https://x",
            symbols=("BTCUSDT",),
            channels=("depth",),
        )
    with pytest.raises(ValueError, match=r"symbols\[1\]: duplicate symbol"):
        VenueConfig(
            exchange="binance-usdm",
            ws_url="wss://x",
            rest_url="https://x",
            symbols=("BTCUSDT", "BTCUSDT"),
            channels=("depth",),
        )
    with pytest.raises(ValueError, match="venues: at least one venue is required"):
        FeedConfig(venues=())
    with pytest.raises(ValueError, match="only for jsonl"):
        SinkConfig(kind="sqlite", path="-")
    assert SinkConfig(kind="jsonl", path="-").path == "-"


@pytest.mark.parametrize(
    "proxy",
    [
        "http://user:s3cret@127.0.0.1",
        "ftp://user:s3cret@host:1",
        "http://user:s3cret@host:notaport",
        "http://user:s3cret@host:1/?q=1",
        "http://user:s3cret @host:1",
    ],
)
def test_proxy_passwords_never_appear_in_messages(proxy: str) -> None:
    data = {
        "venues": [
            {"exchange": "binance-usdm", "symbols": ["A"], "channels": ["aggTrade"], "proxy": proxy}
        ]
    }
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, environ={})
    with pytest.raises(ConfigError) as from_env:
        config_from_dict({"venues": data["venues"][:1]}, environ={"TRIO_FEED_PROXY": proxy})
    for exc in (info.value, from_env.value):
        assert "s3cret" not in str(exc)
        assert "user:***@" in str(exc)


def test_redact_url() -> None:
    from trio_feed.config import redact_url

    assert redact_url("socks5://u:p@h:1") == "socks5://u:***@h:1"
    assert redact_url("http://u@h:1") == "http://u@h:1"
    assert redact_url("http://h:1/a@b") == "http://h:1/a@b"
    assert redact_url("wss://x.test") == "wss://x.test"


def test_book_interval_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match=r"cache\.book_interval: must be >= 0"):
        config_from_dict(
            {
                "venues": [
                    {"exchange": "binance-usdm", "symbols": ["BTCUSDT"], "channels": ["depth"]}
                ],
                "cache": {"book_interval": -1},
            },
            environ={},
        )
