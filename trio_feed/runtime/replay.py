"""Replay: a capture fed through the same adapters, keeper, books and caches, offline.

``trio-feed replay`` (and `open_replay`) build a venue runtime exactly as ``open_feed`` does
(adapters, data keeper, order books, REST client, the reconciliation tasks) but open no
connection: the capture (see :mod:`trio_feed.runtime.recording`) stands in for the network.

* **Frames.** Each ``ws`` record is parsed by the venue's adapter and its items handed to
  ``VenueIntegrity.deliver``, the path a connection reader takes, per connection in capture
  order. Consecutive frames of one connection with the same ``t`` are delivered as one batch
  (the reader received them in one read; nothing can have run between them).
* **REST.** The venue's REST client runs as live, over `ReplayTransport`: an httpx transport
  that answers each ``path?query`` with the recorded responses to that same target, in
  order, each once the replay has reached it in the capture (a request asked early waits
  for it; one asked late finds it waiting). A request the capture holds no (more) answer to
  is logged as an error and answered 404; an answer nobody asked for is counted.
* **State.** Each ``state`` record is re-published as the ``state`` event the live run
  published, and given to the keeper and the books as the live connection's was: a LOST
  takes its books out of sync, a SUBSCRIBED (again) starts the catch-up fills. So replay
  emits the live run's ``state`` events, verbatim. A capture without ``state`` records (the
  contract's two kinds only) cannot tell when a socket was lost: replay then emits no
  ``state`` events, counts a connection as up from its first frame, and a reconnect's
  catch-up happens only when a later frame reveals the gap (its REST requests may then differ
  from the recorded ones, and some events with them). ``quality`` events follow the
  replayed state changes and mismatches; stale-stream findings of the live heartbeat are not
  in a capture.

**Time.** Replay runs in virtual time: record ``t`` (the live run's local clock, in ms)
``t0 + d`` is replayed at ``start + d / 1000`` seconds of trio time, and the venue's local
clock reads ``t0 + d`` then. The market clock is what it was live: it is set from the
capture's server-time responses, timed by that same local clock, so the same klines count as
closed and the same ranges are backfilled; timers (reconciliation, depth checks, retries)
fire at the same local times relative to the records. The replay sleeps until each record's
time and lets everything that record set off run to a standstill before the next one. Run it
on a `trio.testing.MockClock` with ``autojump_threshold=0`` (the CLI does; so does pytest's
``autojump_clock``): on a real clock it takes as long as the capture.

What a capture does not hold is not replayed: subscription changes made while recording
(replay follows the config's streams), response headers (a 429's ``Retry-After``: the
client's default wait applies), and which socket of a connection a frame came in on (a
make-before-break rotation's overlapping frames are delivered once per socket; klines,
trades and books drop the duplicates, book tickers and mark prices do not).
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import attrs
import httpx
import orjson
import trio
import trio.testing
from attrs import frozen

from ..config import FeedConfig
from ..errors import FeedError, MalformedFrame
from ..events import StateChange
from ..plan import plan_feed
from ..venues.base import Control, ParsedItem, StreamSpec
from .fanout import EventHub
from .feed import Feed, _build_venue, _run_reconciliation, _streams_changed, _Venue
from .limits import AttemptLimits
from .transport import WebsocketsTransport

__all__ = [
    "Capture",
    "CaptureError",
    "CaptureRecord",
    "Replay",
    "ReplayStats",
    "ReplayTransport",
    "RestRecord",
    "StateRecord",
    "WsRecord",
    "open_replay",
    "parse_record",
]

log = logging.getLogger("trio_feed.replay")


class CaptureError(FeedError):
    """A capture cannot be read: a missing file, or a line that is not a capture record.
    ``line`` is the 1-based line number (None for the file as a whole)."""

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        self.source = source
        self.line = line
        self.problem = problem
        where = source if line is None else f"{source} line {line}"
        super().__init__(f"{where}: {problem}")


@frozen(slots=True)
class WsRecord:
    """A frame as connection ``conn`` received it at local ms ``t``."""

    t: int
    venue: str
    conn: str
    data: str


@frozen(slots=True)
class RestRecord:
    """A REST response to ``request`` (``path?query``) received at local ms ``t``."""

    t: int
    venue: str
    request: str
    status: int
    data: str


@frozen(slots=True)
class StateRecord:
    """A connection state change at local ms ``t`` (the ``state`` event's fields)."""

    t: int
    venue: str
    conn: str
    state: str
    previous: str
    time: int
    streams: tuple[str, ...]
    retry: int


CaptureRecord = WsRecord | RestRecord | StateRecord

_KINDS = {"ws": WsRecord, "rest": RestRecord, "state": StateRecord}


def parse_record(text: str | bytes, *, source: str = "<capture>", line: int = 1) -> CaptureRecord:
    """One capture line as a record; `CaptureError` naming ``line`` if it is not one."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise CaptureError(source, line, f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CaptureError(source, line, "not a JSON object")
    kind = data.get("kind")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise CaptureError(source, line, f"kind must be one of ws, rest, state, not {kind!r}")
    fields = attrs.fields(cls)
    values: dict[str, object] = {}
    for field in fields:
        if field.name not in data:
            raise CaptureError(source, line, f"{kind} record without {field.name!r}")
        value = data[field.name]
        if field.name == "streams":
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise CaptureError(source, line, "streams must be a list of strings")
            value = tuple(value)
        elif field.type in (int, "int"):
            if not isinstance(value, int) or isinstance(value, bool):
                raise CaptureError(source, line, f"{field.name} must be an integer")
        elif not isinstance(value, str):
            raise CaptureError(source, line, f"{field.name} must be a string")
        values[field.name] = value
    extra = set(data) - {f.name for f in fields} - {"kind"}
    if extra:
        raise CaptureError(source, line, f"unknown keys in a {kind} record: {sorted(extra)}")
    record: CaptureRecord = cls(**values)
    return record


class Capture:
    """A capture, checked line by line when made (`CaptureError` names the first bad line),
    read again record by record for each replay (a long capture is never held in memory).

    ``responses`` counts the REST answers per ``(venue, path?query)``; ``first_t`` is the
    local ms of the first record (None for an empty capture); ``has_states`` tells whether
    it records connection state changes.
    """

    def __init__(self, source: str, lines: Callable[[], Iterable[bytes]]) -> None:
        self.source = source
        self._lines = lines
        self.responses: Counter[tuple[str, str]] = Counter()
        self.first_t: int | None = None
        self.has_states = False
        self.size = 0
        for record in self.records():
            self.size += 1
            if self.first_t is None:
                self.first_t = record.t
            if isinstance(record, RestRecord):
                self.responses[record.venue, record.request] += 1
            elif isinstance(record, StateRecord):
                self.has_states = True

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Capture:
        """The capture in file ``path`` (`CaptureError` if it is missing or malformed)."""
        name = os.fspath(path)

        def lines() -> Iterator[bytes]:
            try:
                file = open(name, "rb")  # noqa: SIM115 - closed by the generator
            except OSError as exc:
                raise CaptureError(name, None, f"cannot read it: {exc.strerror}") from None
            with file:
                yield from file

        return cls(name, lines)

    @classmethod
    def from_lines(cls, lines: Sequence[str | bytes], source: str = "<capture>") -> Capture:
        """A capture held in memory (tests)."""
        encoded = [line.encode() if isinstance(line, str) else line for line in lines]
        return cls(source, lambda: encoded)

    def records(self) -> Iterator[CaptureRecord]:
        """Every record in order (blank lines are passed over)."""
        for number, line in enumerate(self._lines(), 1):
            if line.strip():
                yield parse_record(line, source=self.source, line=number)


# ---- REST from the capture ----------------------------------------------------------------


class ReplayTransport(httpx.AsyncBaseTransport):
    """Answers one venue's REST requests from its recorded responses (see the module
    docstring). ``remaining`` counts the capture's responses per ``path?query``;
    `release` makes the next one available once the replay reaches it."""

    def __init__(self, venue: str, base_url: str, remaining: Counter[str]) -> None:
        self.venue = venue
        # Requests carry the base URL's path before the adapter's ("/api" + "/fapi/v1/time").
        self._prefix = httpx.URL(base_url).path.rstrip("/")
        self._remaining = remaining
        self._released: dict[str, deque[RestRecord]] = {}
        self._arrived: dict[str, trio.Event] = {}
        #: Requests answered 404 because the capture holds no (more) answer to them.
        self.unanswered = 0

    def release(self, record: RestRecord) -> None:
        """The replay reached ``record``: its request may have it now."""
        self._remaining[record.request] -= 1
        self._released.setdefault(record.request, deque()).append(record)
        event = self._arrived.pop(record.request, None)
        if event is not None:
            event.set()

    def unused(self) -> int:
        """Responses released and never asked for."""
        return sum(len(q) for q in self._released.values())

    def target(self, request: httpx.Request) -> str:
        """``path?query`` as `~trio_feed.venues.base.RestRequest.target` wrote it."""
        path = request.url.path
        if self._prefix and path.startswith(self._prefix):
            path = path[len(self._prefix) :]
        params = request.url.params.multi_items()
        if not params:
            return path
        return path + "?" + "&".join(f"{k}={v}" for k, v in params)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = self.target(request)
        while True:
            queue = self._released.get(target)
            if queue:
                record = queue.popleft()
                return httpx.Response(record.status, text=record.data, request=request)
            if self._remaining[target] <= 0:
                self.unanswered += 1
                log.error(
                    "%s: REST request %s is not in the capture: answered 404", self.venue, target
                )
                return httpx.Response(404, text="not in the capture", request=request)
            arrived = self._arrived.get(target)
            if arrived is None:
                arrived = self._arrived[target] = trio.Event()
            await arrived.wait()


# ---- the replay ---------------------------------------------------------------------------


@attrs.define
class ReplayStats:
    """What a replay went through."""

    frames: int = 0
    responses: int = 0
    states: int = 0
    #: Frames the adapter could not parse (skipped, as a live reader does).
    malformed: int = 0
    #: REST requests answered 404 (the capture holds no answer to them).
    unanswered: int = 0
    #: Recorded REST responses no request of the replay asked for.
    unused: int = 0
    #: Records of venues the config does not have (passed over).
    skipped: int = 0


class _ReplayVenue:
    def __init__(self, venue: _Venue, transport: ReplayTransport) -> None:
        self.venue = venue
        self.transport = transport
        self.specs: dict[str, StreamSpec] = {s.name: s for s in venue.streams()}
        #: Connections up now, by id (the build ticker closes quiet buckets only then).
        self.up: set[str] = set()
        self.seen: set[str] = set()


class Replay:
    """A capture being replayed into `feed` (get one from `open_replay`)."""

    def __init__(
        self,
        feed: Feed,
        hub: EventHub,
        capture: Capture,
        venues: dict[str, _ReplayVenue],
        start: float,
        t0: int,
    ) -> None:
        #: The feed the capture plays into: subscribe with ``feed.events()`` before `run`.
        self.feed = feed
        self._hub = hub
        self.capture = capture
        self._venues = venues
        self._start = start
        self._t0 = t0
        self.stats = ReplayStats()
        self._warned: set[str] = set()

    async def run(self) -> ReplayStats:
        """Feed every record of the capture, each at its time, letting what it sets off run
        before the next; return once the last one's consequences have settled."""
        stats = self.stats
        batch: list[WsRecord] = []
        for record in self.capture.records():
            replay_venue = self._venues.get(record.venue)
            if replay_venue is None:
                stats.skipped += 1
                if record.venue not in self._warned:
                    self._warned.add(record.venue)
                    log.warning(
                        "capture records venue %r, which the config does not have: passed over",
                        record.venue,
                    )
                continue
            if isinstance(record, WsRecord):
                head = batch[0] if batch else None
                if head is not None and (head.venue, head.conn, head.t) != (
                    record.venue,
                    record.conn,
                    record.t,
                ):
                    await self._frames(batch)
                    batch = []
                batch.append(record)
                continue
            if batch:
                await self._frames(batch)
                batch = []
            await self._until(record.t)
            if isinstance(record, RestRecord):
                stats.responses += 1
                replay_venue.transport.release(record)
            else:
                stats.states += 1
                self._state(replay_venue, record)
            await trio.testing.wait_all_tasks_blocked()
        if batch:
            await self._frames(batch)
        for replay_venue in self._venues.values():
            stats.unanswered += replay_venue.transport.unanswered
            stats.unused += replay_venue.transport.unused()
        if stats.unanswered or stats.unused:
            log.warning(
                "replay: %d REST requests were not in the capture, %d recorded responses were "
                "not asked for",
                stats.unanswered,
                stats.unused,
            )
        return stats

    async def _until(self, t: int) -> None:
        due = self._start + (t - self._t0) / 1000
        if due > trio.current_time():
            await trio.sleep_until(due)

    async def _frames(self, batch: list[WsRecord]) -> None:
        """One reader batch: parse every frame, deliver the market items at once."""
        head = batch[0]
        replay_venue = self._venues[head.venue]
        await self._until(head.t)
        venue = replay_venue.venue
        if not self.capture.has_states and head.conn not in replay_venue.seen:
            replay_venue.seen.add(head.conn)
            replay_venue.up.add(head.conn)  # all a contract-only capture can tell
        parse = venue.adapter.parse
        items: list[ParsedItem] = []
        for record in batch:
            self.stats.frames += 1
            try:
                parsed = parse(record.data)
            except MalformedFrame:
                self.stats.malformed += 1
                continue
            items.extend(item for item in parsed if not isinstance(item, Control))
        if items:
            venue.integrity.deliver(items)
        await trio.testing.wait_all_tasks_blocked()

    def _state(self, replay_venue: _ReplayVenue, record: StateRecord) -> None:
        """Publish the recorded state change and tell the keeper and books, as the live
        connection did (see ``feed._state_publisher`` and the supervisor's notices)."""
        venue = replay_venue.venue
        event = StateChange(
            connection=record.conn,
            state=record.state,
            previous=record.previous,
            time=record.time,
            streams=record.streams,
            retry=record.retry,
        )
        specs = [replay_venue.specs[n] for n in record.streams if n in replay_venue.specs]
        if record.state == "SUBSCRIBED":
            replay_venue.up.add(record.conn)
        else:
            replay_venue.up.discard(record.conn)
        self._hub.publish_one(event)
        venue.integrity.connection_state(event, specs)
        if venue.book_sync is not None:
            venue.book_sync.connection_state(event, specs)
        if record.state == "LOST":
            _streams_changed(self._hub, venue, specs, True, f"connection lost: {record.conn}")
        elif record.state == "SUBSCRIBED":
            _streams_changed(self._hub, venue, specs, False, f"subscribed on {record.conn}")


@asynccontextmanager
async def open_replay(
    config: FeedConfig, capture: Capture, *, seed: int | str = "replay"
) -> AsyncIterator[Replay]:
    """A feed for ``config`` fed from ``capture`` instead of the network, inside
    ``async with``; `Replay.run` plays it (see the module docstring). No sink of the config
    runs and no store is read: events go to ``replay.feed.events()`` subscribers only.

    Raises `~trio_feed.errors.ConfigError` for a config that does not plan.
    """
    plans = plan_feed(config)
    hub = EventHub()
    feed = Feed(config, hub)
    start = trio.current_time()
    t0 = capture.first_t if capture.first_t is not None else 0

    def wall() -> int:
        # As the live local clock read: whole ms, the epsilon against float rounding.
        return t0 + math.floor((trio.current_time() - start) * 1000 + 1e-6)

    venues: dict[str, _ReplayVenue] = {}
    transport = WebsocketsTransport()  # never used: no connection is opened
    try:
        async with AsyncExitStack() as stack, trio.open_nursery() as root:
            for plan in plans:
                name = plan.adapter.name
                remaining = Counter(
                    {target: n for (v, target), n in capture.responses.items() if v == name}
                )
                rest = ReplayTransport(name, plan.config.rest_url, remaining)
                venue = _build_venue(
                    plan,
                    stack=stack,
                    feed=feed,
                    hub=hub,
                    connector=None,
                    transport=transport,
                    rest_transport=rest,
                    wall=wall,
                    seed_text=str(seed),
                    resume=None,
                    attempts=AttemptLimits(),
                )
                feed._venues.append(venue)
                replay_venue = _ReplayVenue(venue, rest)
                venues[name] = replay_venue
                # The build ticker asks whether a trade stream's connection is up: the
                # supervisors do not run here, the replayed state changes tell.
                for conn in venue.connections:
                    for spec in conn.streams:
                        if spec.channel == "aggTrade":
                            venue.integrity.watch_trade_stream(
                                spec.symbol, _is_up(replay_venue, conn.id)
                            )
            await root.start(_run_reconciliation, feed, name="reconciliation")
            try:
                yield Replay(feed, hub, capture, venues, start, t0)
            finally:
                root.cancel_scope.cancel()
    finally:
        hub.close()


def _is_up(replay_venue: _ReplayVenue, connection_id: str) -> Callable[[], bool]:
    return lambda: connection_id in replay_venue.up
