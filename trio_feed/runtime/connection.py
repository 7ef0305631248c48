"""One supervisor per WebSocket connection: connect, subscribe, read, ping, and restart.

The supervisor's own loop is the backoff-restart task. Each connection attempt gets a
nursery of its own (trio-websocket starts its reader task in the nursery it is given, and
that task would outlive a failed attempt otherwise), holding our reader and pinger. When
either fails, the attempt's nursery is cancelled as a unit, the state machine goes LOST,
and the loop waits out the backoff before trying again with exactly the streams this
connection owns. Errors that are not connection trouble (bugs) are not retried: they
propagate and tear down the feed.

State changes go through :class:`~trio_feed.core.state.ConnectionStateMachine` and are
published as ``state`` events.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence

import trio
from attrs import frozen

from ..core.backoff import Backoff, BackoffPolicy
from ..core.clock import MarketClock
from ..core.state import ConnectionInput, ConnectionState, ConnectionStateMachine
from ..errors import MalformedFrame
from ..events import Event, StateChange
from ..venues.base import (
    Ack,
    Control,
    Notice,
    ParsedItem,
    PingStyle,
    Pong,
    RequestError,
    ServerShutdown,
    StreamSpec,
    VenueAdapter,
)
from .transport import TRANSIENT_ERRORS, Connector, Transport, WebSocketSession, describe_error

__all__ = ["ConnectionSettings", "ConnectionStats", "ConnectionSupervisor"]

log = logging.getLogger("trio_feed.connection")

#: How long a clean close may take before we drop the socket (the peer may never answer).
DISCONNECT_TIMEOUT = 2.0
#: Malformed frames logged in full per connection before logging only every Nth.
_MALFORMED_LOG_FIRST, _MALFORMED_LOG_EVERY = 5, 1000


class _PeerAskedToReconnect(Exception):
    """The venue announced a shutdown of this connection: reconnect at once."""


class _SubscribeRejected(Exception):
    """The venue refused a subscription this connection needs."""


@frozen(slots=True)
class ConnectionSettings:
    """What a supervisor needs from the venue's configuration."""

    ws_url: str
    connect_timeout: float
    ping_interval: float
    ping_timeout: float
    backoff: BackoffPolicy


class ConnectionStats:
    """Counters of one connection, for ``status()`` (mutated in place: cheap on the hot path)."""

    __slots__ = (
        "bytes",
        "connected_at",
        "last_error",
        "last_message_at",
        "malformed",
        "messages",
        "reconnects",
    )

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.malformed = 0
        self.reconnects = 0
        self.last_message_at: float | None = None
        self.connected_at: float | None = None
        self.last_error: str | None = None


#: Called with the parsed items of each frame (market events and controls already split
#: off): the feed's router, which hands market events to books/caches/subscribers.
Deliver = Callable[[list[ParsedItem]], None]


class ConnectionSupervisor:
    """Owns one planned connection for the life of the feed."""

    def __init__(
        self,
        *,
        connection_id: str,
        route: str,
        streams: Sequence[StreamSpec],
        adapter: VenueAdapter,
        settings: ConnectionSettings,
        connector: Connector,
        transport: Transport,
        clock: MarketClock,
        publish: Callable[[Event], None],
        deliver: Deliver,
        rng: random.Random,
    ) -> None:
        self.id = connection_id
        self.route = route
        #: The streams this connection owns (a reconnect re-subscribes exactly these).
        self.streams: list[StreamSpec] = list(streams)
        self.adapter = adapter
        self.settings = settings
        self._connector = connector
        self._transport = transport
        self._clock = clock
        self._publish = publish
        self._deliver = deliver
        self.machine = ConnectionStateMachine()
        self.backoff = Backoff(settings.backoff, rng)
        self.stats = ConnectionStats()
        self._next_request_id = 1
        self._pending: dict[int, tuple[str, ...]] = {}
        self._all_acked: trio.Event | None = None
        self._pong: trio.Event | None = None
        self._session: WebSocketSession | None = None

    # ---- state ----------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self.machine.state

    def _transition(self, input_: ConnectionInput, reason: str | None = None) -> None:
        step = self.machine.handle(input_)
        names = tuple(s.name for s in self.streams)
        self._publish(
            StateChange(
                connection=self.id,
                state=step.state.value,
                previous=step.previous.value,
                time=self._clock.now_ms(),
                streams=names,
                retry=self.backoff.retry,
            )
        )
        level = logging.WARNING if step.state in (ConnectionState.LOST,) else logging.INFO
        if step.state is ConnectionState.FAILED:
            level = logging.ERROR
        log.log(
            level,
            "%s: %s -> %s%s",
            self.id,
            step.previous.value,
            step.state.value,
            f" ({reason})" if reason else "",
        )

    # ---- the backoff-restart loop ---------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled (the feed closes). A connection whose retry budget is spent
        stays FAILED until then."""
        try:
            while True:
                self._transition(ConnectionInput.CONNECT)
                immediate = False
                try:
                    await self._attempt()
                except* _PeerAskedToReconnect:
                    reason, immediate = "venue announced shutdown", True
                except* _SubscribeRejected as group:
                    reason = describe_error(group)
                except* TRANSIENT_ERRORS as group:
                    reason = describe_error(group)
                else:  # pragma: no cover - _attempt only ends by raising
                    reason = "session ended"
                self.stats.last_error = reason
                self._session = None
                now = trio.current_time()
                self._transition(ConnectionInput.LOST, reason)
                if immediate:
                    # Not a failure of ours: reconnect now, without spending the budget.
                    self.backoff.reset_if_stable(now)
                    delay: float | None = 0.0
                else:
                    delay = self.backoff.next_delay(now)
                if delay is None:
                    self._transition(
                        ConnectionInput.GIVE_UP,
                        f"gave up after {self.settings.backoff.max_retries} retries",
                    )
                    # Stay FAILED (visible in status() and to health checks) until the feed
                    # closes; returning would run the CLOSE transition below at once.
                    await trio.sleep_forever()
                self._transition(ConnectionInput.RETRY, f"next attempt in {delay:.2f} s")
                self.stats.reconnects += 1
                await trio.sleep(delay)
        finally:
            if self.machine.can(ConnectionInput.CLOSE):
                self._transition(ConnectionInput.CLOSE, "feed closing")

    async def _attempt(self) -> None:
        url = self.adapter.connect_url(self.settings.ws_url, self.route, self.streams)
        async with trio.open_nursery() as nursery:  # one nursery per attempt
            with trio.fail_after(self.settings.connect_timeout):
                stream = await self._connector(url)
                try:
                    session = await self._transport.open(
                        nursery,
                        stream,
                        url,
                        max_message_size=self.adapter.limits.max_message_size,
                    )
                except BaseException:
                    await trio.aclose_forcefully(stream)
                    raise
            self._session = session
            try:
                self._transition(ConnectionInput.OPENED)
                self.stats.connected_at = trio.current_time()
                nursery.start_soon(self._read, session)
                await self._subscribe_on_open(session)
                self._transition(ConnectionInput.SUBSCRIBED)
                self.backoff.healthy(trio.current_time())
                nursery.start_soon(self._ping, session)
                await trio.sleep_forever()
            finally:
                # Close while the reader still runs: it must see the peer's close reply.
                with trio.move_on_after(DISCONNECT_TIMEOUT, shield=True):
                    try:
                        await session.aclose()
                    except TRANSIENT_ERRORS:
                        pass
                nursery.cancel_scope.cancel()

    async def _subscribe_on_open(self, session: WebSocketSession) -> None:
        messages = self.adapter.open_messages(self.streams, self._next_request_id)
        if not messages:
            return
        self._pending.clear()
        self._all_acked = trio.Event()
        for message in messages:
            if message.request_id is not None:
                self._pending[message.request_id] = message.streams
                self._next_request_id = max(self._next_request_id, message.request_id + 1)
        with trio.fail_after(self.settings.connect_timeout):
            for message in messages:
                await session.send(message.text)
            if self._pending:
                await self._all_acked.wait()

    # ---- child tasks ----------------------------------------------------------------------

    async def _read(self, session: WebSocketSession) -> None:
        # The per-frame hot path: one scheduler round-trip per batch of frames (everything
        # one socket read held), local lookups, and nothing that can wait on a consumer.
        receive_batch = session.receive_batch
        parse = self.adapter.parse
        deliver = self._deliver
        stats = self.stats
        current_time = trio.current_time
        while True:
            frames = await receive_batch()
            stats.messages += len(frames)
            stats.last_message_at = current_time()
            out: list[ParsedItem] = []
            ending: Exception | None = None
            for frame in frames:
                stats.bytes += len(frame)
                try:
                    items = parse(frame)
                except MalformedFrame as exc:
                    self._malformed(exc, frame)
                    continue
                for item in items:
                    if not isinstance(item, Control):
                        out.append(item)
                        continue
                    try:
                        self._on_control(item)
                    except (_PeerAskedToReconnect, _SubscribeRejected) as exc:
                        # End the session, but only after delivering the whole batch:
                        # what arrived is valid data and must not be lost.
                        ending = ending or exc
            if out:
                deliver(out)
            if ending is not None:
                raise ending

    def _malformed(self, exc: MalformedFrame, frame: str | bytes) -> None:
        self.stats.malformed += 1
        n = self.stats.malformed
        if n <= _MALFORMED_LOG_FIRST or n % _MALFORMED_LOG_EVERY == 0:
            log.warning("%s: skipped malformed frame #%d (%s): %.200r", self.id, n, exc, frame)

    def _on_control(self, item: Control) -> None:
        if isinstance(item, Pong):
            if self._pong is not None:
                self._pong.set()
        elif isinstance(item, Ack):
            acked = self._pending.pop(item.request_id, None) is not None
            if acked and not self._pending and self._all_acked is not None:
                self._all_acked.set()
        elif isinstance(item, RequestError):
            streams = self._pending.pop(item.request_id, ()) if item.request_id else ()
            log.error(
                "%s: venue rejected request %s (code %s): %s",
                self.id,
                item.request_id,
                item.code,
                item.message,
            )
            if streams:
                raise _SubscribeRejected(
                    f"venue rejected subscribing {', '.join(streams)}: {item.message}"
                )
        elif isinstance(item, ServerShutdown):
            raise _PeerAskedToReconnect(item.reason)
        elif isinstance(item, Notice):
            log.info("%s: venue notice: %s", self.id, item.message)

    async def _ping(self, session: WebSocketSession) -> None:
        interval, timeout = self.settings.ping_interval, self.settings.ping_timeout
        app_ping = (
            self.adapter.app_ping() if self.adapter.ping_style is PingStyle.APPLICATION else None
        )
        while True:
            await trio.sleep(interval)
            # trio-websocket's ping() waits for its pong forever: the deadline is ours. A
            # missed pong means the link is dead even if TCP has not noticed yet.
            with trio.fail_after(timeout):
                if app_ping is None:
                    await session.ping()
                else:
                    self._pong = trio.Event()
                    await session.send(app_ping)
                    await self._pong.wait()
            self.backoff.reset_if_stable(trio.current_time())

    # ---- introspection --------------------------------------------------------------------

    def last_message_age(self) -> float | None:
        """Seconds since the last frame, or None if none yet."""
        at = self.stats.last_message_at
        return None if at is None else trio.current_time() - at
