"""One supervisor per WebSocket connection: connect, subscribe, read, ping, watch, rotate.

A *connection* here is the feed's logical connection (``binance-usdm/market/0``): a set of
streams with a state machine. Its socket is a *link*; most of the time there is one, and
during a make-before-break rotation there are two for a moment.

::

    ConnectionSupervisor.run            the backoff-restart loop (one attempt at a time)
    └── attempt nursery
        ├── link task                   one per socket: its own nursery holds
        │   ├── reader                  parse every frame, hand the batch on (never blocks)
        │   └── pinger                  protocol or application pings inside fail_after
        ├── heartbeat                   per-stream staleness: re-subscribe, then restart
        ├── rotator                     lifetime / serverShutdown: make-before-break
        └── (a second link task while rotating)

A venue with a handshake (`~trio_feed.venues.base.VenueAdapter.handshake_messages`: an
in-house gateway's CONNECT frame) gets it first on every socket, before the OPENED
transition: CONNECTED means the gateway accepted us. A permanent refusal (a wrong token)
ends the connection in FAILED at once, with the gateway's reason as its last error; a
transient one (busy) is retried with the normal backoff.

When the current link fails and no replacement is ready, the attempt ends as a unit, the
state machine goes LOST, and the loop waits out the backoff before trying again with exactly
the streams this connection owns now (subscription changes update that list). Errors that
are not connection trouble (bugs) are not retried: they propagate and tear down the feed.

Everything sent goes through the socket's `~trio_feed.runtime.limits.Throttle` (the venue's
outgoing-message limit), and every connect through the feed-wide attempt throttle.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

import trio

from ..core.backoff import Backoff, BackoffPolicy
from ..core.clock import MarketClock
from ..core.overlap import OverlapFilter
from ..core.staleness import StalenessMonitor, StreamActivity, stream_kind
from ..core.state import ConnectionInput, ConnectionState, ConnectionStateMachine
from ..errors import MalformedFrame
from ..events import Event, Kline, StateChange
from ..venues.base import (
    Ack,
    Control,
    HandshakeAccepted,
    HandshakeRejected,
    Notice,
    OutgoingMessage,
    ParsedItem,
    PingStyle,
    Pong,
    RequestError,
    ServerShutdown,
    StreamSpec,
    VenueAdapter,
)
from .limits import Throttle, outgoing_throttle
from .link import (
    ConnectionSettings,
    ConnectionStats,
    Deliver,
    Link,
    LinkLost,
    StreamsNotice,
    SubscribeRejected,
    SubscriptionRejected,
    TradingEvidence,
    activity_key,
    drop_items,
)
from .transport import TRANSIENT_ERRORS, Connector, Transport, describe_error

__all__ = [
    "ConnectionSettings",
    "ConnectionStats",
    "ConnectionSupervisor",
    "HandshakeFailed",
    "SubscriptionRejected",
    "activity_key",
]

log = logging.getLogger("trio_feed.connection")

#: Malformed frames logged in full per connection before logging only every Nth.
_MALFORMED_LOG_FIRST, _MALFORMED_LOG_EVERY = 5, 1000
#: How often a rotation checks whether the replacement delivers on every stream.
ROTATION_POLL = 0.05
#: A stream the old socket delivered on within this many seconds before the replacement was
#: subscribed is active: the switch waits until the replacement delivers on it too.
ROTATION_ACTIVE_WINDOW = 5.0
#: Pacing of retries of a failed rotation (the old socket keeps serving meanwhile).
ROTATION_RETRY = BackoffPolicy(base_delay=2.0, max_delay=60.0, jitter_ratio=0.1, max_retries=0)
#: After a switch, how long the new socket's items are still checked against what the old
#: one delivered (streams that the new socket has not delivered on yet).
OVERLAP_TTL = 60.0
#: A venue's kline evidence of trading must be this much newer than a quiet trade stream's last
#: message (on top of one heartbeat period, the granularity of the evidence).
ACTIVITY_GRACE = 5.0


class HandshakeFailed(Exception):
    """The venue refused the handshake of a new socket (``reason`` is the venue's own)."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(f"handshake rejected by the venue: {reason}")
        self.reason = reason
        self.permanent = permanent


class _Handshake:
    """A socket's handshake in progress: set once the venue answered."""

    __slots__ = ("done", "rejection")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.rejection: HandshakeRejected | None = None


class ConnectionSupervisor:
    """Owns one planned connection for the life of the feed (or until its streams are all
    unsubscribed)."""

    #: Given every batch of raw frames as received, when set (a capture's recorder).
    on_frames: Callable[[list[str | bytes]], None] | None = None

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
        attempts: Throttle | None = None,
        on_streams: StreamsNotice | None = None,
        evidence: TradingEvidence | None = None,
        on_rejected: Callable[[SubscriptionRejected], None] | None = None,
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
        self._rng = rng
        self._attempts = attempts
        self._on_streams = on_streams
        self._evidence = evidence
        self._on_rejected = on_rejected
        self.machine = ConnectionStateMachine()
        self.backoff = Backoff(settings.backoff, rng)
        self.stats = ConnectionStats()
        self.monitor = StalenessMonitor(
            settings.heartbeat_timeout, activity_grace=settings.heartbeat_interval + ACTIVITY_GRACE
        )
        #: Streams found silent (and not delivering since), by name -> when.
        self.missing: dict[str, float] = {}
        self._watched: set[str] = set()
        self._next_request_id = 1
        self._link_numbers = 0
        self._link: Link | None = None
        self._candidate: Link | None = None
        self._nursery: trio.Nursery | None = None
        self._lost: LinkLost | None = None
        self._lost_event = trio.Event()
        self._rotate_event = trio.Event()
        self._rotate_reason: str | None = None
        self._control_lock = trio.Lock()
        self._rejections: list[SubscriptionRejected] = []
        #: Handshakes waiting for the venue's answer, by link number.
        self._handshakes: dict[int, _Handshake] = {}

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

    def _notify(self, streams: Sequence[StreamSpec], missing: bool, why: str) -> None:
        if self._on_streams is not None and streams:
            self._on_streams(streams, missing, why)

    # ---- the backoff-restart loop ---------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled (the feed closes, or every stream was unsubscribed). A
        connection whose retry budget is spent stays FAILED until then."""
        try:
            while True:
                self._transition(ConnectionInput.CONNECT)
                immediate = permanent = False
                # Several parts may fail together (a refusal, then the close it causes):
                # the first cause named wins.
                reason: str | None = None
                try:
                    await self._attempt()
                except* HandshakeFailed as group:
                    refusal = _first(group, HandshakeFailed)
                    reason, permanent = str(refusal), refusal.permanent
                except* LinkLost as group:
                    if reason is None:
                        lost = _first(group, LinkLost)
                        reason, immediate = str(lost), lost.immediate
                except* SubscribeRejected as group:
                    reason = reason or describe_error(group)
                except* TRANSIENT_ERRORS as group:
                    reason = reason or describe_error(group)
                if reason is None:  # pragma: no cover - _attempt only ends by raising
                    reason = "session ended"
                self.stats.last_error = reason
                now = trio.current_time()
                self._transition(ConnectionInput.LOST, reason)
                self._notify(self.streams, True, f"connection lost: {self.id}")
                if permanent:
                    # Retrying cannot help (a wrong token): no retry storm against the gateway.
                    delay: float | None = None
                elif immediate:
                    # Not a failure of ours: reconnect now, without spending the budget.
                    self.backoff.reset_if_stable(now)
                    delay = 0.0
                else:
                    delay = self.backoff.next_delay(now)
                if delay is None:
                    self._transition(
                        ConnectionInput.GIVE_UP,
                        "the venue's refusal is permanent"
                        if permanent
                        else f"gave up after {self.settings.backoff.max_retries} retries",
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
        self._lost, self._lost_event = None, trio.Event()
        self._rotate_event, self._rotate_reason = trio.Event(), None
        self.missing.clear()
        async with trio.open_nursery() as nursery:  # one nursery per attempt
            self._nursery = nursery
            link = self._new_link(self.streams)
            link.deliver = self._deliver
            self._link = link
            try:
                await nursery.start(self._run_link, link)
                self._transition(ConnectionInput.SUBSCRIBED)
                self.backoff.healthy(trio.current_time())
                for name in self._watched - link.held.keys():
                    self.monitor.unwatch(name)  # unsubscribed while disconnected
                    self._watched.discard(name)
                self._watch(link, link.held.values())
                self._notify(list(link.held.values()), False, f"subscribed on {self.id}")
                # Streams added or removed while this attempt was connecting.
                await self._sync_reporting(link)
                nursery.start_soon(self._heartbeat, name=f"heartbeat {self.id}")
                nursery.start_soon(self._rotator, name=f"rotator {self.id}")
                await self._lost_event.wait()
                assert self._lost is not None
                raise self._lost
            finally:
                self._link = None
                self._candidate = None
                self._nursery = None
                nursery.cancel_scope.cancel()

    def _fail(self, reason: str, *, immediate: bool = False) -> None:
        """End the current attempt (from any task of it): the socket must be replaced."""
        if self._lost is None:
            self._lost = LinkLost(reason, immediate=immediate)
            self._lost_event.set()

    # ---- one socket -----------------------------------------------------------------------

    def _new_link(self, streams: Sequence[StreamSpec]) -> Link:
        self._link_numbers += 1
        return Link(
            self._link_numbers,
            streams,
            outgoing_throttle(self.adapter.limits.max_outgoing_per_second),
        )

    async def _run_link(
        self, link: Link, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Open ``link``'s socket, subscribe it (``started`` once every request is
        acknowledged), then read and ping until it fails or is retired. A failure before
        ``started`` raises to the caller; after it, it is reported to `_link_down`."""
        started = False
        url = self.adapter.connect_url(self.settings.ws_url, self.route, list(link.held.values()))
        try:
            with link.scope:
                async with trio.open_nursery() as nursery:
                    if self._attempts is not None:
                        # Outside the connect timeout: waiting for the per-IP budget is ours.
                        await self._attempts.acquire()
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
                    link.session = session
                    link.opened_at = trio.current_time()
                    try:
                        # The reader runs from the start: it hands the venue's answer to
                        # the handshake to `_on_control`, as it does acknowledgements.
                        nursery.start_soon(self._read, link)
                        await self._handshake(link)
                        if link is self._link:
                            self._transition(ConnectionInput.OPENED)
                            self.stats.connected_at = trio.current_time()
                        await self._subscribe_on_open(link)
                        link.subscribed_at = trio.current_time()
                        started = True
                        task_status.started()
                        nursery.start_soon(self._ping, link)
                        await trio.sleep_forever()
                    finally:
                        # Close while the reader still runs if it can: it must see the peer's
                        # close reply. A peer that never answers costs `close_timeout`.
                        with trio.move_on_after(self.settings.close_timeout, shield=True):
                            try:
                                await session.aclose()
                            except TRANSIENT_ERRORS:
                                pass
                        nursery.cancel_scope.cancel()
        except* TRANSIENT_ERRORS as group:
            if not started:
                raise
            self._link_down(link, describe_error(group))

    def _link_down(self, link: Link, reason: str) -> None:
        """A socket that was subscribed failed."""
        if link.retired:
            return
        if link is self._candidate:
            self._candidate = None
            self.stats.rotation_failures += 1
            log.warning("%s: replacement socket failed before the switch: %s", self.id, reason)
            return
        if link is not self._link:
            return
        candidate = self._candidate
        if candidate is not None and candidate.subscribed_at is not None:
            log.info("%s: old socket closed during rotation (%s): switching now", self.id, reason)
            self._switch(candidate)
            return
        # A socket the venue announced it would close (or closed while a rotation was under
        # way) is not our failure: reconnect at once, without spending the retry budget.
        self._fail(reason, immediate=link.announced or candidate is not None)

    async def _handshake(self, link: Link) -> None:
        """Send the venue's handshake messages on a new socket and wait for its answer;
        `HandshakeFailed` if it refuses, `trio.TooSlowError` if it is silent for longer than
        the connect timeout. Nothing to do (no checkpoint) for venues without a handshake."""
        messages = self.adapter.handshake_messages()
        if not messages:
            return
        pending = self._handshakes[link.number] = _Handshake()
        try:
            with trio.fail_after(self.settings.connect_timeout):
                for message in messages:
                    # Through the socket's throttle like every other message. The text may
                    # carry a secret (a token): it is never logged.
                    await self._send(link, message.text)
                await pending.done.wait()
        finally:
            del self._handshakes[link.number]
        if pending.rejection is not None:
            raise HandshakeFailed(pending.rejection.reason, permanent=pending.rejection.permanent)
        log.info("%s: handshake accepted (socket %d)", self.id, link.number)

    async def _subscribe_on_open(self, link: Link) -> None:
        messages = self.adapter.open_messages(list(link.held.values()), self._next_request_id)
        await self._request(link, messages)

    async def _send(self, link: Link, text: str) -> None:
        assert link.session is not None
        await link.throttle.acquire()
        await link.session.send(text)
        self.stats.sent += 1

    async def _request(self, link: Link, messages: Sequence[OutgoingMessage]) -> None:
        """Send ``messages`` and wait until the venue acknowledged every one that has an id;
        raise `SubscribeRejected` if it refused one, `trio.TooSlowError` if it is silent."""
        if not messages:
            return
        waits: list[tuple[int, trio.Event, tuple[str, ...]]] = []
        for message in messages:
            if message.request_id is not None:
                event = trio.Event()
                link.waiters[message.request_id] = event
                waits.append((message.request_id, event, message.streams))
                self._next_request_id = max(self._next_request_id, message.request_id + 1)
        with trio.fail_after(self.settings.connect_timeout + len(messages)):
            for message in messages:
                await self._send(link, message.text)
            for request_id, event, streams in waits:
                await event.wait()
                refusal = link.rejected.pop(request_id, None)
                if refusal is not None:
                    raise SubscribeRejected(streams, refusal)

    # ---- child tasks of a link ------------------------------------------------------------

    async def _read(self, link: Link) -> None:
        # The per-frame hot path: one scheduler round-trip per batch of frames (everything
        # one socket read held), local lookups, and nothing that can wait on a consumer.
        assert link.session is not None
        receive_batch = link.session.receive_batch
        parse = self.adapter.parse
        stats = self.stats
        current_time = trio.current_time
        activity = link.activity
        kline_cls = Kline
        tap = self.on_frames
        while True:
            frames = await receive_batch()
            if tap is not None:  # one test per batch: free when not recording
                tap(frames)
            now = current_time()
            stats.messages += len(frames)
            stats.last_message_at = now
            out: list[ParsedItem] = []
            for frame in frames:
                stats.bytes += len(frame)
                try:
                    items = parse(frame)
                except MalformedFrame as exc:
                    self._malformed(exc, frame)
                    continue
                for item in items:
                    if isinstance(item, Control):
                        self._on_control(link, item)
                        continue
                    cls = item.__class__
                    key = (
                        (cls, item.symbol, item.interval)  # type: ignore[union-attr]
                        if cls is kline_cls
                        else (cls, item.symbol)
                    )
                    counters = activity.get(key)
                    if counters is not None:
                        counters.count += 1
                        counters.last = now
                    out.append(item)
            if out:
                link.deliver(out)

    def _malformed(self, exc: MalformedFrame, frame: str | bytes) -> None:
        self.stats.malformed += 1
        n = self.stats.malformed
        if n <= _MALFORMED_LOG_FIRST or n % _MALFORMED_LOG_EVERY == 0:
            log.warning("%s: skipped malformed frame #%d (%s): %.200r", self.id, n, exc, frame)

    def _on_control(self, link: Link, item: Control) -> None:
        if isinstance(item, Pong):
            if link.pong is not None:
                link.pong.set()
        elif isinstance(item, Ack):
            waiter = link.waiters.pop(item.request_id, None)
            if waiter is not None:
                waiter.set()
        elif isinstance(item, RequestError):
            log.error(
                "%s: venue rejected request %s (code %s): %s",
                self.id,
                item.request_id,
                item.code,
                item.message,
            )
            waiter = link.waiters.pop(item.request_id, None) if item.request_id else None
            if waiter is not None:
                link.rejected[item.request_id] = item.message  # type: ignore[index]
                waiter.set()
        elif isinstance(item, ServerShutdown):
            link.announced = True
            if link is self._link and self._candidate is None:
                log.info("%s: venue announced shutdown (%s): rotating", self.id, item.reason)
                self.request_rotation("venue announced shutdown")
        elif isinstance(item, Notice):
            log.info("%s: venue notice: %s", self.id, item.message)
        elif isinstance(item, HandshakeAccepted | HandshakeRejected):
            pending = self._handshakes.get(link.number)
            if pending is None or pending.done.is_set():
                log.warning("%s: unexpected handshake answer from the venue: %s", self.id, item)
            else:
                if isinstance(item, HandshakeRejected):
                    pending.rejection = item
                pending.done.set()

    async def _ping(self, link: Link) -> None:
        assert link.session is not None
        session = link.session
        interval, timeout = self.settings.ping_interval, self.settings.ping_timeout
        app_ping = (
            self.adapter.app_ping() if self.adapter.ping_style is PingStyle.APPLICATION else None
        )
        while True:
            await trio.sleep(interval)
            await link.throttle.acquire()  # a ping is a message too (outside the deadline)
            self.stats.sent += 1
            # The pong deadline is ours (trio-websocket's ping() waits forever). A missed
            # pong means the link is dead even if TCP has not noticed yet.
            with trio.fail_after(timeout):
                if app_ping is None:
                    await session.ping()
                else:
                    link.pong = trio.Event()
                    await session.send(app_ping)
                    await link.pong.wait()
            if link is self._link:
                self.backoff.reset_if_stable(trio.current_time())

    # ---- staleness ------------------------------------------------------------------------

    def _watch(self, link: Link, streams: Iterable[StreamSpec]) -> None:
        """Make ``link``'s counters the staleness monitor's for ``streams`` (silence counts
        from now; counts already seen on the link carry over)."""
        now = trio.current_time()
        for spec in streams:
            key = activity_key(self.adapter, spec)
            if key is None:
                continue
            counters = self.monitor.watch(spec.name, spec.symbol, stream_kind(spec.channel), now)
            self._watched.add(spec.name)
            previous = link.activity.get(key)
            if previous is not None and previous.last is not None:
                counters.count = previous.count
            link.activity[key] = counters

    async def _heartbeat(self) -> None:
        """Every ``heartbeat.check_interval``: find silent streams (see
        :mod:`trio_feed.core.staleness`), mark them missing, re-subscribe them; a stream
        still silent after its re-subscription costs the socket (a new connection)."""
        interval = self.settings.heartbeat_interval
        resubscribed: dict[str, float] = {}
        evidence: dict[str, Hashable] = {}
        while True:
            await trio.sleep(interval)
            link = self._link
            if link is None:
                continue
            now = trio.current_time()
            self._gather_evidence(link, evidence, now)
            stale = self.monitor.check(now)
            # Streams that delivered since they were found silent are back.
            back: list[StreamSpec] = []
            for name, since in list(self.missing.items()):
                counters = self.monitor.activity(name)
                if counters is not None and counters.last is not None and counters.last > since:
                    del self.missing[name]
                    resubscribed.pop(name, None)
                    if name in link.held:
                        back.append(link.held[name])
            self._notify(back, False, "delivering again")
            for name, at in list(resubscribed.items()):
                counters = self.monitor.activity(name)
                if name not in link.held or (counters and counters.last and counters.last > at):
                    del resubscribed[name]
            fresh = [link.held[n] for n in stale if n in link.held and n not in self.missing]
            for spec in fresh:
                self.missing[spec.name] = now
            self._notify(fresh, True, "stale")
            again = [n for n in stale if n in resubscribed]
            if again:
                self._fail(f"streams still silent after a re-subscribe: {', '.join(again)}")
                return
            specs = [link.held[n] for n in stale if n in link.held]
            if not specs:
                continue
            log.warning(
                "%s: no data for too long on %s: re-subscribing",
                self.id,
                ", ".join(s.name for s in specs),
            )
            try:
                async with self._control_lock:
                    if self._link is not link:
                        continue
                    messages = self.adapter.unsubscribe(specs, self._next_request_id)
                    self._next_request_id += len(messages)
                    messages += self.adapter.subscribe(specs, self._next_request_id)
                    await self._request(link, messages)
            except (SubscribeRejected, *TRANSIENT_ERRORS) as exc:  # type: ignore[misc]
                self._fail(f"re-subscribing stale streams failed: {describe_error(exc)}")
                return
            self.stats.resubscribes += len(specs)
            after = trio.current_time()
            for spec in specs:
                resubscribed[spec.name] = after
            self._watch(link, specs)

    def _gather_evidence(self, link: Link, seen: dict[str, Hashable], now: float) -> None:
        """Tell the monitor which symbols of quiet-by-nature streams traded since last time."""
        if self._evidence is None:
            return
        for spec in link.held.values():
            if spec.channel != "aggTrade":
                continue
            token = self._evidence(spec.symbol)
            if token is None:
                continue
            if spec.symbol in seen and seen[spec.symbol] != token:
                self.monitor.market_activity(spec.symbol, now)
            seen[spec.symbol] = token

    # ---- rotation (make-before-break) -----------------------------------------------------

    def request_rotation(self, reason: str) -> None:
        """Replace the socket make-before-break as soon as possible."""
        self._rotate_reason = reason
        self._rotate_event.set()

    async def _rotator(self) -> None:
        rotate_after = self.settings.rotate_after
        retry = Backoff(ROTATION_RETRY, self._rng)
        while True:
            link = self._link
            if link is None:  # pragma: no cover - the attempt is ending
                return
            deadline = math.inf
            if rotate_after > 0 and link.opened_at is not None:
                deadline = link.opened_at + rotate_after
            with trio.move_on_at(deadline):
                await self._rotate_event.wait()
            reason = self._rotate_reason or f"socket lifetime of {rotate_after:.0f} s reached"
            self._rotate_event, self._rotate_reason = trio.Event(), None
            if await self._rotate(reason):
                retry.retry = 0
                continue
            await trio.sleep(retry.next_delay(trio.current_time()) or ROTATION_RETRY.base_delay)

    async def _rotate(self, reason: str) -> bool:
        """Open a replacement socket with the same streams, wait until it delivers on every
        stream the old one delivers on, switch over without a lost or doubled event, then
        close the old one. False if the replacement could not be opened (the old serves on)."""
        old, nursery = self._link, self._nursery
        if old is None or nursery is None:  # pragma: no cover - the attempt is ending
            return True
        log.info("%s: rotating (%s): opening a replacement socket", self.id, reason)
        new = self._new_link(self.streams)
        overlap = OverlapFilter()
        new.overlap, new.buffer = overlap, []
        new.deliver = new.buffer.extend
        for spec in new.held.values():
            key = activity_key(self.adapter, spec)
            if key is not None:
                new.activity[key] = StreamActivity()
        deliver = self._deliver

        def note_then_deliver(items: list[ParsedItem]) -> None:
            note = overlap.note
            for item in items:
                note(item)
            deliver(items)

        old.deliver = note_then_deliver
        self._candidate = new
        failure: str | None = None
        try:
            await nursery.start(self._run_link, new)
            await self._sync(new)
        # A replacement the venue refuses is a failed rotation: the old socket serves on.
        except* (SubscribeRejected, HandshakeFailed, *TRANSIENT_ERRORS) as group:  # type: ignore[misc]
            failure = describe_error(group)
        if failure is not None or self._candidate is not new:
            if self._candidate is new:
                self._candidate = None
                self.stats.rotation_failures += 1
            new.scope.cancel()
            if not old.retired:
                old.deliver = deliver
            log.warning("%s: rotation failed, the old socket serves on: %s", self.id, failure)
            return False
        begun = trio.current_time()
        deadline = begun + self.settings.rotation_timeout
        active_since = begun - ROTATION_ACTIVE_WINDOW
        while self._candidate is new and not self._caught_up(old, new, active_since):
            if trio.current_time() >= deadline:
                log.warning(
                    "%s: replacement silent on some streams after %.0f s: switching anyway",
                    self.id,
                    self.settings.rotation_timeout,
                )
                break
            await trio.sleep(ROTATION_POLL)
        if self._candidate is new:
            self._switch(new)
        return self._link is new

    def _caught_up(self, old: Link, new: Link, since: float) -> bool:
        """Every stream the old socket delivered on since ``since`` (the active ones) has
        delivered on the new one too, so each has an overlap to de-duplicate rather than a
        gap. Quiet streams are not waited for: their next item comes on the new socket."""
        for key, counters in new.activity.items():
            if counters.count:
                continue
            previous = old.activity.get(key)
            if previous is not None and previous.last is not None and previous.last >= since:
                return False
        return True

    def _switch(self, new: Link) -> None:
        """Make ``new`` the connection's socket (synchronous: no frame can slip between)."""
        old = self._link
        assert old is not None and new.overlap is not None
        overlap = new.overlap
        old.retired = True
        old.deliver = drop_items
        self._link, self._candidate = new, None
        kept = overlap.filter(new.buffer)
        new.buffer = []
        deliver = self._deliver
        if kept:
            deliver(kept)

        def filtered(items: list[ParsedItem]) -> None:
            if overlap.pending_keys():
                items = overlap.filter(items)
            else:
                new.deliver = deliver
            if items:
                deliver(items)

        new.deliver = filtered if overlap.pending_keys() else deliver
        self._watch(new, new.held.values())
        old.scope.cancel()  # its task closes the old socket
        self.stats.rotations += 1
        log.info(
            "%s: switched to the replacement socket (rotation %d)", self.id, self.stats.rotations
        )
        if self._nursery is not None and new.deliver is filtered:
            self._nursery.start_soon(self._end_overlap, new, deliver)

    async def _end_overlap(self, link: Link, deliver: Deliver) -> None:
        await trio.sleep(OVERLAP_TTL)
        if not link.retired:
            link.deliver = deliver

    # ---- subscription changes -------------------------------------------------------------

    async def set_streams(self, streams: Sequence[StreamSpec]) -> list[SubscriptionRejected]:
        """Own exactly ``streams`` from now on: SUBSCRIBE/UNSUBSCRIBE on the live socket
        (streams that did not change are not touched); while disconnected, the next attempt
        subscribes them. Returns the venue's refusals (those streams are dropped)."""
        self.streams = list(streams)
        held = {s.name for s in self.streams}
        for name in [n for n in self.missing if n not in held]:
            del self.missing[name]
        for link in (self._link, self._candidate):
            if link is not None and link.subscribed_at is not None and not link.retired:
                await self._sync_reporting(link)
        rejections, self._rejections = self._rejections, []
        return rejections

    async def _sync_reporting(self, link: Link) -> None:
        """`_sync`, turning a refusal into a dropped stream and a transport failure into a
        reconnect (which subscribes everything the connection owns)."""
        try:
            await self._sync(link)
        except SubscribeRejected as exc:
            refused = set(exc.streams)
            self.streams = [s for s in self.streams if s.name not in refused]
            for name in refused:
                link.held.pop(name, None)
            rejection = SubscriptionRejected(exc.streams, exc.message)
            self._rejections.append(rejection)
            log.error("%s: %s", self.id, exc)
            if self._on_rejected is not None:
                self._on_rejected(rejection)
        except TRANSIENT_ERRORS as exc:
            self._fail(f"subscription change failed: {describe_error(exc)}")

    async def _sync(self, link: Link) -> None:
        """Make ``link`` hold exactly ``self.streams``."""
        async with self._control_lock:
            want = {s.name: s for s in self.streams}
            add = [s for name, s in want.items() if name not in link.held]
            remove = [s for name, s in link.held.items() if name not in want]
            if not add and not remove:
                return
            messages: list[OutgoingMessage] = []
            if remove:
                messages += self.adapter.unsubscribe(remove, self._next_request_id)
                self._next_request_id += len(messages)
            if add:
                for spec in add:
                    key = activity_key(self.adapter, spec)
                    if key is not None and key not in link.activity:
                        link.activity[key] = StreamActivity()
                messages += self.adapter.subscribe(add, self._next_request_id)
            await self._request(link, messages)
            for spec in remove:
                del link.held[spec.name]
                key = activity_key(self.adapter, spec)
                if key is not None:
                    link.activity.pop(key, None)
                if link is self._link:
                    self.monitor.unwatch(spec.name)
                    self._watched.discard(spec.name)
            for spec in add:
                link.held[spec.name] = spec
            if link is self._link:
                self._watch(link, add)
            log.info(
                "%s: subscribed %d and unsubscribed %d streams", self.id, len(add), len(remove)
            )

    # ---- introspection --------------------------------------------------------------------

    def last_message_age(self) -> float | None:
        """Seconds since the last frame, or None if none yet."""
        at = self.stats.last_message_at
        return None if at is None else trio.current_time() - at

    def stale_streams(self) -> tuple[str, ...]:
        """Streams found silent and not delivering since."""
        return tuple(sorted(self.missing))


_E = TypeVar("_E", bound=BaseException)


def _first(group: BaseExceptionGroup[BaseException], cls: type[_E]) -> _E:
    for exc in group.exceptions:
        if isinstance(exc, cls):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc, cls)
    raise group  # pragma: no cover - except* matched cls
