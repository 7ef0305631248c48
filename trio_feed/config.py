"""The feed's configuration: frozen attrs classes, loaded from TOML with every problem reported.

A config file holds one or more ``[[venues]]`` tables and optional global sections
(``[connection_pool]``, ``[reconnect]``, ``[ping]``, ``[heartbeat]``, ``[reconciliation]``,
``[cache]``, ``[new_listings]``) plus ``[[sinks]]``. Without any ``sinks`` key the feed stores
into the embedded default, one SQLite sink at `DEFAULT_SQLITE_PATH`; ``sinks = []`` stores
nothing. A venue table may repeat any of those sections
(``[venues.reconnect]``): its keys override the global section's keys for that venue only,
so each `VenueConfig` carries the *effective* sections for its venue. ``[monitoring]`` and
``[shutdown]`` concern the whole process and are allowed at the top level only; ``[venues.gateway]``
(`GatewayConfig`, for the ``json-gateway`` adapter) belongs to one venue and is allowed inside
a venue table only.

Loading never stops at the first mistake: it collects one line per problem, each naming the
key path (``venues[0].reconnect.base_delay: must be > 0 (got -1.0)``) or the environment
variable responsible, and raises `ConfigError` with all of them. Nothing else is raised for
bad input.

The classes validate their own values when built directly (``attrs.evolve`` included), but
only the loader checks what needs an adapter: that ``exchange`` is registered and that each
channel is one the venue offers.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs
from attrs import field, frozen

from . import venues as _venues
from .errors import ConfigError

__all__ = [
    "CacheConfig",
    "FeedConfig",
    "GatewayConfig",
    "HeartbeatConfig",
    "MonitoringConfig",
    "NewListingsConfig",
    "PingConfig",
    "PoolConfig",
    "ReconciliationConfig",
    "ReconnectConfig",
    "ShutdownConfig",
    "SinkConfig",
    "VenueConfig",
    "config_from_dict",
    "config_from_text",
    "load_config",
]


# ---- value checks shared by the classes' validators and the loader -------------------------


def _show(value: object) -> str:
    """A value as a TOML user would recognise it in a message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return repr(value)


class _Setting:
    """attrs validator of one key of a section. The loader asks it for `problems` directly,
    so that every bad key of a section gets its own line (and every bad item of an array
    its own) instead of only the first one attrs would report."""

    __slots__ = ()

    def problems(self, value: object) -> list[tuple[int | None, str]]:
        """What is wrong with ``value``: (index of the array item or None, problem) each."""
        raise NotImplementedError

    def convert(self, value: object) -> Any:
        """An accepted TOML value as the field's type."""
        return value

    def __call__(self, instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        for index, problem in self.problems(value):
            at = attribute.name if index is None else f"{attribute.name}[{index}]"
            raise ValueError(f"{at}: {problem}")


@frozen
class _Number(_Setting):
    """A numeric setting: its kind (int, or float which also takes ints) and bounds."""

    kind: type[int] | type[float]
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def bounds(self) -> str:
        parts = []
        if self.gt is not None:
            parts.append(f"> {self.gt}")
        if self.ge is not None:
            parts.append(f">= {self.ge}")
        if self.lt is not None:
            parts.append(f"< {self.lt}")
        if self.le is not None:
            parts.append(f"<= {self.le}")
        return " and ".join(parts)

    def problem(self, value: object) -> str | None:
        """None if ``value`` is acceptable, else what is wrong with it."""
        # bool is a subclass of int: TOML's `true` must not pass for 1. Strings are never
        # converted: `"10"` for a number is a mistake worth reporting.
        if isinstance(value, bool) or not isinstance(value, int | float):
            number = None
        elif self.kind is float:
            try:
                number = float(value)
            except OverflowError:  # an int too large for a float
                number = math.inf
            if not math.isfinite(number):
                return f"must be a finite number (got {value!r})"
        elif isinstance(value, int):
            number = value
        else:
            number = None
        if number is None:
            expected = "an integer" if self.kind is int else "a number"
            return f"expected {expected}, got {_show(value)}"
        if (
            (self.gt is not None and not number > self.gt)
            or (self.ge is not None and not number >= self.ge)
            or (self.lt is not None and not number < self.lt)
            or (self.le is not None and not number <= self.le)
        ):
            return f"must be {self.bounds()} (got {value!r})"
        return None

    def problems(self, value: object) -> list[tuple[int | None, str]]:
        problem = self.problem(value)
        return [] if problem is None else [(None, problem)]

    def convert(self, value: object) -> Any:
        assert isinstance(value, int | float)  # problems() found none
        return self.kind(value)


@frozen
class _Flag(_Setting):
    """A boolean setting: TOML's ``true`` or ``false`` only (not 1, not "yes")."""

    def problems(self, value: object) -> list[tuple[int | None, str]]:
        if isinstance(value, bool):
            return []
        return [(None, f"expected true or false, got {_show(value)}")]


@frozen
class _Host(_Setting):
    """A host name or IP address to listen on."""

    def problems(self, value: object) -> list[tuple[int | None, str]]:
        if not isinstance(value, str):
            return [(None, f"expected a string, got {_show(value)}")]
        if not value:
            return [(None, "must not be empty (use '0.0.0.0' for every interface)")]
        if any(c.isspace() for c in value):
            return [(None, f"{value!r} must not contain whitespace")]
        if "/" in value:
            return [(None, f"{value!r} must be a host name or IP address, not a URL")]
        return []


#: What a POSIX shell accepts as an environment variable name.
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@frozen
class _Text(_Setting):
    """A non-empty string without whitespace; with ``env_name``, an environment variable's
    name."""

    env_name: bool = False

    def problems(self, value: object) -> list[tuple[int | None, str]]:
        if not isinstance(value, str):
            return [(None, f"expected a string, got {_show(value)}")]
        if not value:
            return [(None, "must not be empty")]
        if any(c.isspace() for c in value):
            return [(None, f"{value!r} must not contain whitespace")]
        if self.env_name and not _ENV_NAME_RE.match(value):
            return [
                (
                    None,
                    f"{value!r} is not an environment variable name (letters, digits and _; "
                    "the file names the variable, never the token itself)",
                )
            ]
        return []


@frozen
class _ChannelList(_Setting):
    """A list of channel names inside a section; the loader checks them against the venue's
    adapter too (the classes cannot: they do not know the venue)."""

    def problems(self, value: object) -> list[tuple[int | None, str]]:
        if not isinstance(value, list | tuple):
            return [(None, f"expected an array of channels, got {_show(value)}")]
        if not value:
            return [(None, "at least one channel is required")]
        return [(i, problem) for i, problem in _channel_problems(value)]

    def convert(self, value: object) -> Any:
        assert isinstance(value, list | tuple)
        return tuple(value)


def _delay_order_problem(base_delay: float, max_delay: float) -> str | None:
    if max_delay < base_delay:
        return f"max_delay ({max_delay!r}) must be >= base_delay ({base_delay!r})"
    return None


@frozen
class _UrlKind:
    schemes: tuple[str, ...]
    #: How a message names what was expected ("is not <phrase>").
    phrase: str
    need_port: bool = False


_WS_URL = _UrlKind(("ws", "wss"), "a ws:// or wss:// URL")
_REST_URL = _UrlKind(("http", "https"), "an http:// or https:// URL")
_PROXY_URL = _UrlKind(
    ("http", "https", "socks5", "socks5h"),
    "an http://, https://, socks5:// or socks5h:// proxy URL",
    need_port=True,
)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and logs."""
    scheme_end = url.find("://")
    if scheme_end == -1:
        return url
    start = scheme_end + 3
    end = len(url)
    for stop in "/?#":
        found = url.find(stop, start)
        if found != -1:
            end = min(end, found)
    at = url.rfind("@", start, end)
    if at == -1:
        return url
    user, sep, _password = url[start:at].partition(":")
    return f"{url[:start]}{user}{':***' if sep else ''}{url[at:]}"


def _url_problem(value: object, kind: _UrlKind) -> str | None:
    if not isinstance(value, str):
        return f"expected a string, got {_show(value)}"
    # Proxy URLs carry credentials: never echo a password.
    shown = repr(redact_url(value))
    if any(c.isspace() for c in value):
        return f"{shown} must not contain whitespace"
    try:
        parts = urlsplit(value)
        port = parts.port  # parsed lazily: a bad port raises only here
    except ValueError:
        return f"{shown} is not a valid URL"
    if parts.scheme.lower() not in kind.schemes:
        return f"{shown} is not {kind.phrase}"
    if not parts.hostname:
        return f"{shown} has no host"
    if kind.need_port and port is None:
        return f"{shown} has no port"
    # Adapters append a path (and Binance a query) to the base URL.
    if parts.query or parts.fragment:
        return f"{shown} must not have a query or fragment"
    return None


def _symbol_problems(symbols: Sequence[object]) -> list[tuple[int, str]]:
    """(index, problem) for each bad symbol; duplicates are found case-insensitively."""
    problems: list[tuple[int, str]] = []
    seen: dict[str, str] = {}
    for i, symbol in enumerate(symbols):
        if not isinstance(symbol, str):
            problems.append((i, f"expected a string, got {_show(symbol)}"))
        elif not symbol:
            problems.append((i, "symbol must not be empty"))
        elif any(c.isspace() for c in symbol):
            problems.append((i, f"symbol {symbol!r} must not contain whitespace"))
        elif "/" in symbol:
            problems.append(
                (i, f"symbol {symbol!r} must not contain '/' (use the exchange's own name)")
            )
        elif symbol.casefold() in seen:
            first = seen[symbol.casefold()]
            same = "" if first == symbol else f" (same as {first!r})"
            problems.append((i, f"duplicate symbol {symbol!r}{same}"))
        else:
            seen[symbol.casefold()] = symbol
    return problems


def _channel_problems(channels: Sequence[object]) -> list[tuple[int, str]]:
    """(index, problem) for each malformed or repeated channel. Channels are case-sensitive
    (``kline_1m`` is a minute, ``kline_1M`` a month)."""
    problems: list[tuple[int, str]] = []
    seen: set[str] = set()
    for i, channel in enumerate(channels):
        if not isinstance(channel, str):
            problems.append((i, f"expected a string, got {_show(channel)}"))
        elif not channel:
            problems.append((i, "channel must not be empty"))
        elif channel in seen:
            problems.append((i, f"duplicate channel {channel!r}"))
        else:
            seen.add(channel)
    return problems


def _check_url(kind: _UrlKind, *, optional: bool = False) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and optional:
            return
        problem = _url_problem(value, kind)
        if problem is not None:
            raise ValueError(f"{attribute.name}: {problem}")

    return check


def _check_symbols(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not value:
        raise ValueError("symbols: at least one symbol is required")
    for i, problem in _symbol_problems(value):
        raise ValueError(f"symbols[{i}]: {problem}")


def _check_channels(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not value:
        raise ValueError("channels: at least one channel is required")
    for i, problem in _channel_problems(value):
        raise ValueError(f"channels[{i}]: {problem}")


def _check_sink_path(instance: SinkConfig, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value:
        raise ValueError("path: must not be empty")
    if value == "-" and instance.kind != "jsonl":
        raise ValueError("path: '-' (stdout) is only for jsonl sinks")


# ---- the configuration classes -------------------------------------------------------------


@frozen(kw_only=True)
class PoolConfig:
    """How the streams of a venue are spread over WebSocket connections."""

    #: Most connections the feed opens to the venue.
    max_connections: int = field(default=5, validator=_Number(int, ge=1))
    #: Most streams put on one connection (the venue's own cap still applies).
    max_streams_per_connection: int = field(default=200, validator=_Number(int, ge=1))
    #: Seconds a connection lives before it is replaced make-before-break (the replacement
    #: subscribes first, then the old socket closes); 0 disables. The default is 23h50m:
    #: Binance cuts every connection at 24 hours, and a planned switch loses nothing.
    rotate_after: float = field(default=85800.0, validator=_Number(float, ge=0))
    #: Longest wait, in seconds, for the replacement to deliver on every stream before
    #: switching to it anyway (a quiet stream must not keep the old socket forever).
    rotation_timeout: float = field(default=30.0, validator=_Number(float, gt=0))


@frozen(kw_only=True)
class ReconnectConfig:
    """Backoff between reconnect attempts: ``min(base_delay * 2**retry, max_delay)``, spread by
    up to ``jitter_ratio`` either way."""

    #: Seconds before the first retry.
    base_delay: float = field(default=1.0, validator=_Number(float, gt=0))
    #: Longest wait between retries, in seconds.
    max_delay: float = field(default=60.0, validator=_Number(float, gt=0))
    #: Random spread of each delay, as a fraction of it.
    jitter_ratio: float = field(default=0.1, validator=_Number(float, ge=0, lt=1))
    #: Consecutive failed attempts before a connection is given up (FAILED); 0 means forever.
    max_retries: int = field(default=10, validator=_Number(int, ge=0))
    #: Seconds allowed to open a connection (TCP, TLS, proxy and WebSocket handshakes).
    connect_timeout: float = field(default=10.0, validator=_Number(float, gt=0))

    def __attrs_post_init__(self) -> None:
        problem = _delay_order_problem(self.base_delay, self.max_delay)
        if problem is not None:
            raise ValueError(problem)


@frozen(kw_only=True)
class PingConfig:
    """WebSocket liveness: a ping every ``interval`` seconds, answered within ``timeout``."""

    interval: float = field(default=20.0, validator=_Number(float, gt=0))
    timeout: float = field(default=10.0, validator=_Number(float, gt=0))


@frozen(kw_only=True)
class HeartbeatConfig:
    """Per-stream staleness: every ``check_interval`` seconds, a stream silent for longer
    than ``timeout`` seconds is treated as lost."""

    check_interval: float = field(default=30.0, validator=_Number(float, gt=0))
    timeout: float = field(default=60.0, validator=_Number(float, gt=0))


@frozen(kw_only=True)
class ReconciliationConfig:
    """Periodic REST checks of what the streams delivered."""

    #: Seconds between REST checks of the last closed kline.
    kline_interval: float = field(default=300.0, validator=_Number(float, gt=0))
    #: Seconds between REST depth-snapshot checks.
    depth_interval: float = field(default=60.0, validator=_Number(float, gt=0))
    #: Relative price difference tolerated before a kline counts as mismatched.
    price_tolerance: float = field(default=0.0001, validator=_Number(float, ge=0))
    #: Relative volume difference tolerated before a kline counts as mismatched.
    volume_tolerance: float = field(default=0.01, validator=_Number(float, ge=0))
    #: A depth-sequence gap of this many updates or more forces a REST re-sync.
    depth_gap_resync: int = field(default=100, validator=_Number(int, ge=1))


@frozen(kw_only=True)
class CacheConfig:
    """Sizes of the in-memory caches behind ``feed.history()`` and ``book`` events."""

    #: Closed klines kept per (symbol, interval).
    kline_max_size: int = field(default=500, validator=_Number(int, ge=1))
    #: Aggregated trades kept per symbol.
    aggtrade_max_size: int = field(default=1000, validator=_Number(int, ge=1))
    #: Seconds of aggregated trades kept per symbol.
    aggtrade_time_window: float = field(default=60.0, validator=_Number(float, gt=0))
    #: Levels per side in emitted book events.
    book_depth: int = field(default=20, validator=_Number(int, ge=1))
    #: At most one ``book`` event per symbol per this many seconds of exchange time (0: one
    #: after every applied diff message). The book itself is kept up to date either way.
    book_interval: float = field(default=0.0, validator=_Number(float, ge=0))


@frozen(kw_only=True)
class NewListingsConfig:
    """Symbols the venue lists while the feed runs: with ``enabled``, the venue's symbol
    list (``exchangeInfo``) is polled every ``poll_interval`` seconds and each newly listed
    symbol is subscribed to ``channels``."""

    enabled: bool = field(default=False, validator=_Flag())
    #: Seconds between polls of the venue's symbol list.
    poll_interval: float = field(default=60.0, validator=_Number(float, gt=0))
    #: Channels opened for a new symbol, checked against the venue like its ``channels``.
    channels: tuple[str, ...] = field(
        default=("kline_1m", "kline_5m", "kline_15m"), validator=_ChannelList()
    )


@frozen(kw_only=True)
class MonitoringConfig:
    """The HTTP endpoint of a running feed: ``GET /metrics`` (Prometheus) and ``GET /health``.
    Top level only: one process serves one endpoint."""

    enabled: bool = field(default=False, validator=_Flag())
    #: Interface to listen on; the default keeps the endpoint off the network.
    host: str = field(default="127.0.0.1", validator=_Host())
    #: TCP port; 0 picks any free one (logged at start).
    port: int = field(default=9464, validator=_Number(int, ge=0, le=65535))
    #: ``/health`` reports unhealthy while any symbol's quality score is below this.
    min_quality: float = field(default=0.5, validator=_Number(float, ge=0, le=1))


@frozen(kw_only=True)
class ShutdownConfig:
    """How the feed stops. Top level only."""

    #: Longest a connection's WebSocket close handshake may take when the feed stops, in
    #: seconds; a venue that does not answer is then dropped.
    timeout: float = field(default=2.0, validator=_Number(float, gt=0))


@frozen(kw_only=True)
class SinkConfig:
    """Where events are written besides the subscribers: ``jsonl`` (``path`` ``"-"`` is
    stdout) or ``sqlite``."""

    kind: Literal["jsonl", "sqlite"] = field(validator=attrs.validators.in_(("jsonl", "sqlite")))
    path: str = field(validator=_check_sink_path)


@frozen(kw_only=True)
class GatewayConfig:
    """The ``[venues.gateway]`` section of a ``json-gateway`` venue (see
    :mod:`trio_feed.venues.gateway`). Both keys are required.

    The token is never in the file: ``token_env`` names the environment variable that holds
    it, read when the feed starts (a variable that is not set is a `ConfigError` naming it).
    """

    #: Name of the environment variable holding the gateway's token.
    token_env: str = field(validator=_Text(env_name=True))
    #: The market type sent in the CONNECT frame (``"spot"``, ``"perp"``...).
    market: str = field(validator=_Text())


@frozen(kw_only=True)
class VenueConfig:
    """One exchange market to feed from, with the sections in effect for it: the global
    ones with this venue's overrides applied key by key."""

    #: Registry key of the exchange adapter (``"binance-usdm"``).
    exchange: str
    #: Base WebSocket URL, without a trailing ``/``; the adapter appends a path.
    ws_url: str = field(validator=_check_url(_WS_URL))
    #: Base REST URL, without a trailing ``/``.
    rest_url: str = field(validator=_check_url(_REST_URL))
    #: The exchange's own symbol names.
    symbols: tuple[str, ...] = field(validator=_check_symbols)
    #: Channel names as the adapter accepts them (``"kline_1m"``, ``"depth"``...).
    channels: tuple[str, ...] = field(validator=_check_channels)
    #: Proxy for both WebSocket and REST traffic.
    #: (Its repr hides the password: configs end up in logs and tracebacks.)
    proxy: str | None = field(
        default=None,
        validator=_check_url(_PROXY_URL, optional=True),
        repr=lambda value: "None" if value is None else repr(redact_url(value)),
    )
    connection_pool: PoolConfig = PoolConfig()
    reconnect: ReconnectConfig = ReconnectConfig()
    ping: PingConfig = PingConfig()
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    reconciliation: ReconciliationConfig = ReconciliationConfig()
    cache: CacheConfig = CacheConfig()
    new_listings: NewListingsConfig = NewListingsConfig()
    #: The gateway handshake's settings, for venues whose adapter takes them.
    gateway: GatewayConfig | None = None


def _check_venues(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not value:
        raise ValueError("venues: at least one venue is required")


@frozen(kw_only=True)
class FeedConfig:
    """A whole feed: its venues, the global sections (as written, before any venue's
    overrides) and its sinks."""

    venues: tuple[VenueConfig, ...] = field(validator=_check_venues)
    connection_pool: PoolConfig = PoolConfig()
    reconnect: ReconnectConfig = ReconnectConfig()
    ping: PingConfig = PingConfig()
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    reconciliation: ReconciliationConfig = ReconciliationConfig()
    cache: CacheConfig = CacheConfig()
    new_listings: NewListingsConfig = NewListingsConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    shutdown: ShutdownConfig = ShutdownConfig()
    sinks: tuple[SinkConfig, ...] = ()


# ---- loading -------------------------------------------------------------------------------

#: Where the embedded default store lives when a config has no ``sinks`` key (relative to
#: the working directory; its directory is created on first use).
DEFAULT_SQLITE_PATH = "data/feed.sqlite"

#: The sections that may appear globally and inside a venue table.
_SECTIONS: Mapping[str, type[Any]] = {
    "connection_pool": PoolConfig,
    "reconnect": ReconnectConfig,
    "ping": PingConfig,
    "heartbeat": HeartbeatConfig,
    "reconciliation": ReconciliationConfig,
    "cache": CacheConfig,
    "new_listings": NewListingsConfig,
}
#: The sections that may appear at the top level only.
_TOP_SECTIONS: Mapping[str, type[Any]] = {
    "monitoring": MonitoringConfig,
    "shutdown": ShutdownConfig,
}
_TOP_KEYS = ("venues", *_SECTIONS, *_TOP_SECTIONS, "sinks")
_VENUE_KEYS = (
    "exchange",
    "ws_url",
    "rest_url",
    "symbols",
    "channels",
    "proxy",
    *_SECTIONS,
    "gateway",
)
_SINK_KEYS = ("kind", "path")

#: Environment variable -> the first venue's key it overrides.
_ENV_KEYS = {
    "TRIO_FEED_WS_URL": "ws_url",
    "TRIO_FEED_REST_URL": "rest_url",
    "TRIO_FEED_PROXY": "proxy",
    "TRIO_FEED_SYMBOLS": "symbols",
    "TRIO_FEED_CHANNELS": "channels",
}


@frozen
class _Where:
    """Where a value came from: a key path in the file, or an environment variable."""

    path: str
    env: bool = False

    def key(self, name: object) -> _Where:
        return _Where(f"{self.path}.{name}" if self.path else str(name), self.env)

    def item(self, index: int) -> _Where:
        # The items of a comma-separated variable are named by the variable; the message
        # shows the item itself.
        return self if self.env else _Where(f"{self.path}[{index}]")


class _Report:
    """Collects the problems of one load, one line each."""

    def __init__(self, source: str) -> None:
        # Lines about the file's content start with its name, so the CLI can print them as
        # they are; placeholders such as "<dict>" would only be noise.
        self._prefix = "" if not source or source.startswith("<") else f"{source}: "
        self.problems: list[str] = []

    def add(self, where: _Where, message: str) -> None:
        prefix = "" if where.env else self._prefix
        line = f"{prefix}{where.path}: {message}"
        # A global value checked once per venue (new-listing channels) is reported once.
        if line not in self.problems:
            self.problems.append(line)

    def unknown_keys(self, table: Mapping[Any, Any], allowed: Sequence[str], where: _Where) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.8)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.add(where.key(key), f"unknown key{hint}")


def _table(value: object, where: _Where, report: _Report) -> Mapping[Any, Any] | None:
    if isinstance(value, Mapping):
        return value
    report.add(where, f"expected a table, got {_show(value)}")
    return None


def _section_values(
    cls: type[Any], raw: object, where: _Where, report: _Report
) -> tuple[dict[str, Any], set[str]]:
    """The valid keys of a section table (ints made floats where floats are expected) and the
    names of its invalid ones. Every bad key is reported on its own line."""
    values: dict[str, Any] = {}
    bad: set[str] = set()
    table = _table(raw, where, report)
    if table is None:
        return values, bad
    fields = attrs.fields_dict(cls)
    report.unknown_keys(table, list(fields), where)
    for name, attribute in fields.items():
        if name not in table:
            continue
        check = attribute.validator
        assert isinstance(check, _Setting)
        found = check.problems(table[name])
        if not found:
            values[name] = check.convert(table[name])
        for index, problem in found:
            at = where.key(name)
            report.add(at if index is None else at.item(index), problem)
            bad.add(name)
    return values, bad


def _check_delay_order(
    values: Mapping[str, Any],
    bad: Collection[str],
    where: _Where,
    report: _Report,
    *,
    touched: Collection[str],
) -> None:
    """Check max_delay >= base_delay in a reconnect section's ``values``, unless one of the
    two is invalid (already reported) or neither is in ``touched``: a venue that overrides
    neither inherits the global verdict, which is not repeated for every venue."""
    keys = {"base_delay", "max_delay"}
    if keys & set(bad) or not keys & set(touched):
        return
    base = values.get("base_delay", ReconnectConfig().base_delay)
    top = values.get("max_delay", ReconnectConfig().max_delay)
    problem = _delay_order_problem(base, top)
    if problem is not None:
        report.add(where, problem)


def _check_listing_channels(
    adapter: Any,
    venue_raw: object,
    global_raw: object,
    enabled: bool,
    where: _Where,
    report: _Report,
) -> None:
    """Check a venue's ``new_listings.channels`` against its adapter, as its own ``channels``
    are: each well-formed item (the malformed ones are reported already), the same messages.
    Inherited channels are reported at the global key (once, however many venues inherit
    them); the default list only when enabled, so an adapter without some default channel
    is no error for a feed that never uses it."""
    for raw, at in ((venue_raw, where.key("new_listings")), (global_raw, _Where("new_listings"))):
        if isinstance(raw, Mapping) and "channels" in raw:
            channels, at = raw["channels"], at.key("channels")
            break
    else:
        if not enabled:
            return
        channels, at = NewListingsConfig().channels, where.key("new_listings").key("channels")
    if not isinstance(channels, list | tuple):
        return
    malformed = {i for i, _ in _channel_problems(channels)}
    for i, channel in enumerate(channels):
        if i not in malformed:
            reason = adapter.check_channel(channel)
            if reason is not None:
                report.add(at.item(i), reason)


def _string_list(value: object, what: str, where: _Where, report: _Report) -> list[object] | None:
    if not isinstance(value, list | tuple):
        report.add(where, f"expected an array of {what}s, got {_show(value)}")
        return None
    if not value:
        report.add(where, f"at least one {what} is required")
        return None
    return list(value)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, tuple[object, _Where]]:
    """The first venue's keys set from the environment, with where each value came from."""
    overrides: dict[str, tuple[object, _Where]] = {}
    for var, key in _ENV_KEYS.items():
        text = environ.get(var, "").strip()
        if not text:
            continue  # an empty variable is as good as an unset one
        value: object = text
        if key in ("symbols", "channels"):
            value = [item.strip() for item in text.split(",") if item.strip()]
        overrides[key] = (value, _Where(var, env=True))
    return overrides


def _venue(
    raw: object,
    where: _Where,
    global_sections: Mapping[str, tuple[dict[str, Any], set[str]]],
    global_listings: object,
    env: Mapping[str, tuple[object, _Where]],
    known: Sequence[str],
    report: _Report,
) -> dict[str, Any]:
    """The keyword arguments of one `VenueConfig`, complete only if nothing was reported.
    ``global_listings`` is the top-level ``new_listings`` table as written (its channels
    are checked against each venue's adapter)."""
    table = _table(raw, where, report)
    if table is None:
        return {}
    for key in table:
        if key in _TOP_SECTIONS:
            report.add(where.key(key), f"allowed at the top level only ([{key}]), not in a venue")
    report.unknown_keys(
        {k: v for k, v in table.items() if k not in _TOP_SECTIONS}, _VENUE_KEYS, where
    )

    def lookup(key: str) -> tuple[object, _Where] | None:
        if key in env:
            return env[key]
        if key in table:
            return table[key], where.key(key)
        return None

    kwargs: dict[str, Any] = {}
    adapter = None
    exchange = table.get("exchange")
    if exchange is None:
        report.add(where.key("exchange"), f"missing (known exchanges: {', '.join(known)})")
    elif not isinstance(exchange, str):
        report.add(where.key("exchange"), f"expected a string, got {_show(exchange)}")
    elif exchange not in known:
        report.add(
            where.key("exchange"),
            f"unknown exchange {exchange!r} (known exchanges: {', '.join(known) or 'none'})",
        )
    else:
        kwargs["exchange"] = exchange
        try:
            adapter = _venues.get_adapter(exchange)
        except Exception as exc:  # a third-party entry point may fail in any way
            report.add(
                where.key("exchange"), f"the adapter for {exchange!r} failed to load: {exc!r}"
            )

    defaults: dict[str, str | None] = {"ws_url": None, "rest_url": None, "proxy": None}
    if adapter is not None:
        defaults["ws_url"] = adapter.default_ws_url.rstrip("/")
        defaults["rest_url"] = adapter.default_rest_url.rstrip("/")
    for key, kind in (("ws_url", _WS_URL), ("rest_url", _REST_URL), ("proxy", _PROXY_URL)):
        found = lookup(key)
        if found is None:
            # Without an adapter the URLs stay unset; the exchange problem is reported.
            if defaults[key] is not None or key == "proxy":
                kwargs[key] = defaults[key]
            continue
        value, at = found
        problem = _url_problem(value, kind)
        if problem is not None:
            report.add(at, problem)
        else:
            assert isinstance(value, str)
            kwargs[key] = value if key == "proxy" else value.rstrip("/")

    found = lookup("symbols")
    if found is None:
        report.add(where.key("symbols"), "missing (a list of the exchange's symbol names)")
    else:
        value, at = found
        symbols = _string_list(value, "symbol", at, report)
        if symbols is not None:
            for i, problem in _symbol_problems(symbols):
                report.add(at.item(i), problem)
            kwargs["symbols"] = tuple(symbols)

    found = lookup("channels")
    if found is None:
        report.add(where.key("channels"), "missing (a list of channel names)")
    else:
        value, at = found
        channels = _string_list(value, "channel", at, report)
        if channels is not None:
            malformed = _channel_problems(channels)
            for i, problem in malformed:
                report.add(at.item(i), problem)
            skip = {i for i, _ in malformed}
            for i, channel in enumerate(channels):
                if adapter is None or i in skip:
                    continue
                assert isinstance(channel, str)
                reason = adapter.check_channel(channel)
                if reason is not None:
                    # The adapter's reason names the channel and the venue itself.
                    report.add(at.item(i), reason)
            kwargs["channels"] = tuple(channels)

    for name, cls in _SECTIONS.items():
        global_values, global_bad = global_sections[name]
        overrides, bad = _section_values(cls, table.get(name, {}), where.key(name), report)
        effective = {**global_values, **overrides}
        if name == "reconnect":
            _check_delay_order(
                effective,
                (global_bad - set(overrides)) | bad,
                where.key(name),
                report,
                touched=set(overrides),
            )
        if name == "new_listings" and adapter is not None:
            _check_listing_channels(
                adapter,
                table.get(name),
                global_listings,
                effective.get("enabled", False),
                where,
                report,
            )
        kwargs[name] = effective
    gateway = _gateway(table.get("gateway"), adapter, where.key("gateway"), report)
    if gateway is not None:
        kwargs["gateway"] = gateway
    return kwargs


def _gateway(raw: object, adapter: Any, where: _Where, report: _Report) -> GatewayConfig | None:
    """A venue's ``[venues.gateway]`` section, if it has a valid one. Its keys are checked
    whatever the exchange; whether the venue takes one at all only when its adapter loaded."""
    # getattr: an adapter need not subclass VenueAdapter to be registered.
    wanted = adapter is not None and getattr(adapter, "uses_gateway_config", False)
    if raw is None:
        if wanted:
            report.add(
                where, f"missing ({adapter.name} needs [venues.gateway] with token_env and market)"
            )
        return None
    if adapter is not None and not wanted:
        report.add(where, f"{adapter.name} takes no gateway section (it is for json-gateway)")
    table = _table(raw, where, report)
    if table is None:
        return None
    values, bad = _section_values(GatewayConfig, table, where, report)
    missing = [n for n in attrs.fields_dict(GatewayConfig) if n not in table]
    for name in missing:
        report.add(where.key(name), "missing")
    if bad or missing or not wanted:
        return None
    return GatewayConfig(**values)


def _sink(raw: object, where: _Where, report: _Report) -> dict[str, Any]:
    table = _table(raw, where, report)
    if table is None:
        return {}
    report.unknown_keys(table, _SINK_KEYS, where)
    kind, path = table.get("kind"), table.get("path")
    if kind is None:
        report.add(where.key("kind"), "missing ('jsonl' or 'sqlite')")
    elif kind not in ("jsonl", "sqlite"):
        report.add(where.key("kind"), f"must be 'jsonl' or 'sqlite' (got {_show(kind)})")
    if path is None:
        report.add(where.key("path"), "missing (a file path, or '-' for stdout with jsonl)")
    elif not isinstance(path, str):
        report.add(where.key("path"), f"expected a string, got {_show(path)}")
    elif not path:
        report.add(where.key("path"), "must not be empty")
    elif path == "-" and kind == "sqlite":
        report.add(where.key("path"), "'-' (stdout) is only for jsonl sinks")
    return {"kind": kind, "path": path}


def config_from_dict(
    data: Mapping[str, Any], *, source: str = "<dict>", environ: Mapping[str, str] | None = None
) -> FeedConfig:
    """Build a `FeedConfig` from parsed TOML (or any dict of the same shape).

    ``environ`` (default `os.environ`) supplies the ``TRIO_FEED_*`` overrides of the first
    venue. ``source`` names the input; when it is a file name (not ``<...>``) every line
    about the content starts with it. Raises `ConfigError` listing every problem found.
    """
    report = _Report(source)
    env = _env_overrides(os.environ if environ is None else environ)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a table at the top level, got {_show(data)}")
    root = data
    if "gateway" in root:
        report.add(_Where("gateway"), "allowed inside a venue only ([venues.gateway])")
    report.unknown_keys({k: v for k, v in root.items() if k != "gateway"}, _TOP_KEYS, _Where(""))

    sections: dict[str, tuple[dict[str, Any], set[str]]] = {}
    for name, cls in _SECTIONS.items():
        sections[name] = _section_values(cls, root.get(name, {}), _Where(name), report)
    values, bad = sections["reconnect"]
    _check_delay_order(values, bad, _Where("reconnect"), report, touched=set(values))
    top_sections = {
        name: _section_values(cls, root.get(name, {}), _Where(name), report)[0]
        for name, cls in _TOP_SECTIONS.items()
    }

    venue_kwargs: list[dict[str, Any]] = []
    raw_venues = root.get("venues")
    if raw_venues is None or (isinstance(raw_venues, list | tuple) and not raw_venues):
        report.add(_Where("venues"), "at least one [[venues]] table is required")
    elif not isinstance(raw_venues, list | tuple):
        report.add(
            _Where("venues"),
            f"expected an array of tables ([[venues]], not [venues]), got {_show(raw_venues)}",
        )
    else:
        # Listing the venues scans the installed entry points: once per load is enough.
        known = _venues.known_venues()
        for i, raw in enumerate(raw_venues):
            venue_kwargs.append(
                _venue(
                    raw,
                    _Where(f"venues[{i}]"),
                    sections,
                    root.get("new_listings"),
                    env if i == 0 else {},
                    known,
                    report,
                )
            )

    sink_kwargs: list[dict[str, Any]] = []
    raw_sinks = root.get("sinks", [{"kind": "sqlite", "path": DEFAULT_SQLITE_PATH}])
    if not isinstance(raw_sinks, list | tuple):
        report.add(
            _Where("sinks"), f"expected an array of tables ([[sinks]]), got {_show(raw_sinks)}"
        )
    else:
        sink_kwargs = [_sink(raw, _Where(f"sinks[{i}]"), report) for i, raw in enumerate(raw_sinks)]

    if report.problems:
        raise ConfigError(report.problems)

    # Everything was checked above, so building cannot fail from here on.
    def build(name: str, values: Mapping[str, Any]) -> Any:
        return {**_SECTIONS, **_TOP_SECTIONS}[name](**values)

    return FeedConfig(
        venues=tuple(
            VenueConfig(
                **{
                    key: build(key, value) if key in _SECTIONS else value
                    for key, value in kwargs.items()
                }
            )
            for kwargs in venue_kwargs
        ),
        sinks=tuple(SinkConfig(**kwargs) for kwargs in sink_kwargs),
        **{name: build(name, values) for name, (values, _) in sections.items()},
        **{name: build(name, values) for name, values in top_sections.items()},
    )


def config_from_text(
    text: str, *, source: str = "<string>", environ: Mapping[str, str] | None = None
) -> FeedConfig:
    """Parse TOML ``text`` into a `FeedConfig` (see `config_from_dict`)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    return config_from_dict(data, source=source, environ=environ)


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> FeedConfig:
    """Load a TOML config file, apply the ``TRIO_FEED_*`` environment overrides and check
    everything. Raises `ConfigError` (and nothing else) listing every problem, each line
    starting with the file name or the environment variable responsible."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{source}: is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    return config_from_text(text, source=source, environ=environ)
