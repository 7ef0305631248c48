"""Sinks: where events go besides ``feed.events()`` consumers.

A sink is a consumer with its own subscription that writes in batches. Writes run in a
worker thread, so a slow disk or a stalled pipe never blocks the event loop (and with it
the connection readers); the subscription's bound decides how far a sink may fall behind
before it fails with `SlowConsumer`, loudly, rather than growing memory without bound.

Batching needs no timer: a sink takes everything buffered each time it wakes, so while a
write runs the next batch accumulates, and batches grow under load by themselves (one
event per write when the feed is quiet, thousands when it is busy or the disk is slow).

At shutdown the feed stops its connections first, then closes the subscriptions; each sink
drains what is buffered, flushes (or commits) and closes its file. The feed cancels a sink
that has not finished after its drain timeout; the file is closed then too.

Two kinds: `JsonlSink` (every event, one JSON line each) and `SqliteSink` (the record:
closed klines, trades, mark prices and reconciliations, in `SqliteStore`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import IO, Any, ClassVar, Protocol, TypeVar

import cattrs
import trio
from attrs import frozen

from ..codec import json_line
from ..config import SinkConfig
from ..errors import ConfigError, SlowConsumer
from ..events import Event
from .fanout import Subscription
from .sqlite_store import SqliteStore, is_stored

__all__ = [
    "MAX_TRANSACTION_ROWS",
    "RETRY_BASE_DELAY",
    "RETRY_MAX_DELAY",
    "SINK_MAX_BUFFER",
    "JsonlSink",
    "Sink",
    "SinkStatus",
    "SqliteSink",
    "check_sinks",
    "make_sink",
    "run_inline",
    "write_jsonl",
]

log = logging.getLogger("trio_feed.sinks")

#: Buffer of a sink's subscription: generous, since disks and pipes stall briefly.
SINK_MAX_BUFFER = 200_000
#: Rows in one SQLite transaction at most: bigger batches are split, so that one commit
#: (and the WAL growth before the next checkpoint) stays bounded after a long stall.
MAX_TRANSACTION_ROWS = 20_000
#: Backoff between attempts of a failing write: doubles from the base up to the max.
RETRY_BASE_DELAY = 0.5
RETRY_MAX_DELAY = 30.0

_converter = cattrs.Converter()
_T = TypeVar("_T")


@frozen(slots=True)
class SinkStatus:
    """One sink's health, as ``sink.status()`` reports it."""

    name: str
    #: ``"jsonl"`` or ``"sqlite"``.
    kind: str
    #: The file written (``"-"`` is stdout).
    path: str
    #: Events written (for SQLite: stored events committed, duplicates included).
    written: int
    #: Writes completed (flushes, or committed transactions).
    batches: int
    #: Failed write attempts (each retry that fails counts).
    errors: int
    #: The last error, kept after recovery; None if none ever happened.
    last_error: str | None
    #: Currently unable to write and retrying; events wait in the subscription meanwhile.
    failing: bool
    #: Gave up for good (fell behind: `SlowConsumer`, or a JSONL write error).
    stopped: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        data: dict[str, Any] = _converter.unstructure(self)
        return data


class Sink:
    """Base class: ``run`` consumes a subscription until it is closed and drained, and
    ``status`` reports how that goes. Subclasses set ``name``, ``kind`` and ``path``."""

    name: str
    kind: str
    path: str

    def __init__(self) -> None:
        self._written = 0
        self._batches = 0
        self._errors = 0
        self._last_error: str | None = None
        self._failing = False
        self._stopped = False
        #: Worker-thread calls in flight (the feed's shutdown drain waits while any is).
        self.threads_in_flight = 0
        #: Called as each worker-thread call starts and ends (the feed's shutdown drain
        #: watches progress with it).
        self.on_thread_activity: Callable[[], None] | None = None

    #: How sinks run their blocking calls: `trio.to_thread.run_sync`. Tests on a virtual
    #: clock swap in `run_inline`: a worker thread takes real time, which the autojump
    #: clock does not see, so it would make *when* a write lands vary from run to run.
    run_sync: ClassVar[Callable[..., Awaitable[Any]]] = staticmethod(trio.to_thread.run_sync)

    async def _in_thread(
        self, fn: Callable[..., _T], *args: object, limiter: trio.CapacityLimiter | None = None
    ) -> _T:
        """``fn(*args)`` in a worker thread, counted in `threads_in_flight`."""
        self.threads_in_flight += 1
        if self.on_thread_activity is not None:
            self.on_thread_activity()
        try:
            result: _T = await self.run_sync(fn, *args, limiter=limiter)
            return result
        finally:
            self.threads_in_flight -= 1
            if self.on_thread_activity is not None:
                self.on_thread_activity()

    async def run(self, sub: Subscription) -> None:
        """Write every event of ``sub`` until it is closed and drained; return once all of
        it is flushed or committed and the file is closed."""
        raise NotImplementedError

    def status(self) -> SinkStatus:
        """A snapshot of this sink's counters and health."""
        return SinkStatus(
            name=self.name,
            kind=self.kind,
            path=self.path,
            written=self._written,
            batches=self._batches,
            errors=self._errors,
            last_error=self._last_error,
            failing=self._failing,
            stopped=self._stopped,
        )

    def _count(self, events: int) -> None:
        self._written += events
        self._batches += 1

    def _record_error(self, exc: BaseException) -> None:
        self._errors += 1
        self._last_error = f"{type(exc).__name__}: {exc}"


# ---- JSON lines ---------------------------------------------------------------------------


class JsonlSink(Sink):
    """JSON lines to a file (appended) or to stdout (``path = "-"``), flushed per batch.

    A write error (disk full, closed pipe) stops it: a JSON lines file has no transaction
    to retry, and a half-written retry would duplicate lines.
    """

    kind = "jsonl"

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.name = f"jsonl:{path}"

    async def run(self, sub: Subscription) -> None:
        try:
            if self.path == "-":
                await write_jsonl(
                    sub, sys.stdout.buffer, on_written=self._count, run_sync=self._in_thread
                )
                return
            file: IO[bytes] = await self._in_thread(open, self.path, "ab")
            try:
                await write_jsonl(sub, file, on_written=self._count, run_sync=self._in_thread)
            finally:
                with trio.CancelScope(shield=True):
                    await self._in_thread(file.close)
        except SlowConsumer:
            self._stopped = True
            raise
        except OSError as exc:
            self._record_error(exc)
            self._stopped = True
            raise


async def write_jsonl(
    sub: Subscription,
    file: IO[bytes],
    *,
    on_written: Callable[[int], None] | None = None,
    run_sync: Callable[..., Awaitable[object]] = trio.to_thread.run_sync,
) -> None:
    """Write every event of ``sub`` to ``file`` as JSON lines until it is closed and drained.

    Each batch (everything buffered when the writer wakes) is written and flushed in a
    worker thread, so each line is complete and flushed before the writer waits again.
    ``on_written`` is told the number of events after each flushed batch.
    """
    while True:
        try:
            batch = await sub.receive_batch()
        except StopAsyncIteration:
            return
        data = b"".join([json_line(event) for event in batch])
        await run_sync(_write_flush, file, data)
        if on_written is not None:
            on_written(len(batch))


async def run_inline(
    fn: Callable[..., _T], *args: object, limiter: trio.CapacityLimiter | None = None
) -> _T:
    """`Sink.run_sync` for deterministic tests: the call runs on the event loop, between two
    checkpoints, so it takes no virtual time and always lands at the same point."""
    await trio.lowlevel.checkpoint()
    result = fn(*args)
    await trio.lowlevel.checkpoint()
    return result


def _write_flush(file: IO[bytes], data: bytes) -> None:
    file.write(data)
    file.flush()


# ---- SQLite -------------------------------------------------------------------------------


class EventStore(Protocol):
    """What `SqliteSink` needs of a store (`SqliteStore`; a fake in tests)."""

    def write(self, events: Sequence[object]) -> int: ...

    def close(self) -> None: ...


#: The errors a SQLite write is retried on: a lock held too long by another process, a
#: full disk, an I/O error. `sqlite3.OperationalError` is a `sqlite3.DatabaseError`.
_RETRYABLE = (sqlite3.DatabaseError, OSError)


class SqliteSink(Sink):
    """Closed klines, trades, mark prices and reconciliations into a SQLite file.

    One transaction per batch (at most `MAX_TRANSACTION_ROWS` rows; bigger batches are
    split). A write that fails with a database or OS error (locked, disk full) is retried,
    the same rows again, after a backoff doubling from `RETRY_BASE_DELAY` to
    `RETRY_MAX_DELAY`; the subscription keeps buffering meanwhile, and if the fault lasts
    longer than its bound allows, it ends with `SlowConsumer` (logged by the feed) and the
    sink stops. Nothing received is dropped while the sink runs; the store's writes are
    idempotent, so a retry never duplicates a row.

    ``open_store`` opens the store for a path (default `SqliteStore`); it runs in a worker
    thread and is retried like a write.
    """

    kind = "sqlite"

    def __init__(
        self,
        path: str,
        *,
        open_store: Callable[[str], EventStore] = SqliteStore,
    ) -> None:
        super().__init__()
        self.path = path
        self.name = f"sqlite:{path}"
        self._open_store = open_store

    async def run(self, sub: Subscription) -> None:
        # One thread at a time on the connection, whatever happens around it (the close
        # in `finally` runs after a cancelled write's thread has finished).
        limiter = trio.CapacityLimiter(1)
        store: EventStore | None = None
        pending = 0  # events received and not yet committed, for the log at exit
        try:
            store = await self._retry(
                sub, "open its file", self._open_store, self.path, limiter=limiter
            )
            while True:
                try:
                    batch = await sub.receive_batch()
                except StopAsyncIteration:
                    return
                except SlowConsumer:
                    # Everything received before the overflow is committed by now.
                    self._stopped = True
                    raise
                rows = [event for event in batch if is_stored(event)]
                pending = len(rows)
                for chunk in _chunks(rows, MAX_TRANSACTION_ROWS):
                    written = await self._retry(sub, "write", store.write, chunk, limiter=limiter)
                    self._count(written)
                    pending -= len(chunk)
        finally:
            if pending:
                log.error("sink %s stopped with %d events not written", self.name, pending)
            if store is not None:
                # Shielded: on cancellation (the feed's drain timeout) the file must still be
                # closed; every committed transaction is already safe on disk.
                with trio.CancelScope(shield=True):
                    try:
                        await self._in_thread(store.close, limiter=limiter)
                    except _RETRYABLE as exc:  # do not hide the error that got us here
                        log.error("sink %s: closing failed: %s", self.name, exc)

    async def _retry(
        self,
        sub: Subscription,
        what: str,
        fn: Callable[..., _T],
        *args: object,
        limiter: trio.CapacityLimiter,
    ) -> _T:
        """``fn(*args)`` in a worker thread, retried with backoff until it succeeds."""
        delay = RETRY_BASE_DELAY
        failures = 0
        overflow_logged = False
        while True:
            try:
                result = await self._in_thread(fn, *args, limiter=limiter)
            except _RETRYABLE as exc:
                self._record_error(exc)
                failures += 1
                if not self._failing:
                    # Once per streak: a locked or full disk can last for hours.
                    self._failing = True
                    log.error(
                        "sink %s cannot %s (%s); retrying with backoff, events wait in its buffer",
                        self.name,
                        what,
                        self._last_error,
                    )
                if sub.dropped and not overflow_logged:
                    overflow_logged = True
                    log.error(
                        "sink %s fell behind while failing (%d events lost so far); it stops "
                        "once what it holds is written",
                        self.name,
                        sub.dropped,
                    )
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_DELAY)
                continue
            if self._failing:
                self._failing = False
                log.warning("sink %s writes again after %d failed attempts", self.name, failures)
            return result


def _chunks(rows: list[Event], size: int) -> Iterable[list[Event]]:
    if len(rows) <= size:
        # The common case, without a copy. An empty batch gives no chunk (no transaction).
        if rows:
            yield rows
        return
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


# ---- configuration ------------------------------------------------------------------------


def check_sinks(sinks: Sequence[SinkConfig]) -> None:
    """Raise `ConfigError` if two sinks write the same file (their output would interleave
    or contend for one lock). Cheap and without I/O: paths are compared as written,
    normalised (``./data/x`` is ``data/x``), not resolved on disk."""
    seen: dict[str, int] = {}
    problems = []
    for i, sink in enumerate(sinks):
        key = sink.path if sink.path == "-" else os.path.normpath(sink.path)
        if key in seen:
            problems.append(
                f"sinks[{i}].path: {sink.path!r} is also the path of sinks[{seen[key]}]"
            )
        else:
            seen[key] = i
    if problems:
        raise ConfigError(problems)


def make_sink(config: SinkConfig) -> Sink:
    """The sink for one ``[[sinks]]`` table."""
    if config.kind == "jsonl":
        return JsonlSink(config.path)
    if config.kind == "sqlite":
        return SqliteSink(config.path)
    raise ConfigError(f"sinks: unsupported kind {config.kind!r}")
