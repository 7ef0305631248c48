"""Keeping one symbol's `OrderBook` in sync with the venue's update sequence (pure).

The venue's diff stream and its REST snapshots are joined as every exchange documents it
(Binance "How to manage a local order book correctly"):

1. While out of sync, diffs are *buffered*. The first diff buffered asks for a snapshot
   (`SyncStep.resync`): fetching only after a diff is in hand makes it likely that the
   snapshot is newer than the first buffered diff, which the join needs.
2. When the snapshot (update id ``L``) comes, buffered diffs that it already contains are
   dropped (`SequenceRules.stale`, wherever they sit in the buffer); the first remaining one
   must *bridge* the snapshot (`SequenceRules.bridges`), and every later one must *follow*
   its predecessor (`SequenceRules.follows`). A first diff that is neither stale nor
   bridging is newer than the snapshot: the snapshot is too old, another is asked for and
   buffering goes on.
3. In sync, each live diff must follow the one applied before it. Any break clears the book
   and starts a new buffer with the breaking diff (`SyncStep.resync` starts with ``"gap: "``).
   Right after a snapshot with nothing buffered, the next live diff must be stale (dropped)
   or bridge, exactly like a buffered one.

Which ids are compared is the venue's business: `SequenceRules` lives with the adapters
(:mod:`trio_feed.venues.book_rules`); this module holds the mechanics, once, for every venue.

Duplicates. A message delivered twice is a break under rules that chain on the previous
message (Binance USD-M: its ``pu`` equals the ``pu`` of the first copy, not that copy's ``u``),
and the book is re-synced. That is deliberate: a re-sync costs one snapshot, while guessing
that a repeated id range is harmless would trust the transport about exactly what the
sequence check is there to catch.

Bounded buffer. At most ``max_buffer`` diffs are held; on overflow the oldest is dropped and
remembered, and a snapshot is then accepted only if it contains that dropped diff (else
another is asked for). A diff frame marked ``snapshot`` (other venues' full-book frames,
e.g. Bybit and OKX) replaces the book directly and needs no REST snapshot.

Verification. Rules may also check the book's *content* after a diff, not only the ids:
a rule set with a ``verify(book, diff)`` method (see `VerifyingRules`; OKX compares a CRC32
of the top levels with the diff's ``checksum``) is asked after every diff applied from the
stream or replayed from the buffer, and after a stream snapshot is loaded. A reason back is
a break like any other: the book is cleared and re-synced from a snapshot. Rules without the
method cost nothing (it is looked up once, when the `BookSync` is made).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from attrs import frozen

from ..events import DepthDiff
from .book import DEFAULT_MAX_LEVELS, OrderBook

__all__ = ["GAP", "INITIAL", "BookSync", "SequenceRules", "SyncStep", "VerifyingRules"]

#: Prefix of every `SyncStep.resync` reason that is a break of a book that was in sync.
GAP = "gap: "
#: The `SyncStep.resync` reason of a book's first snapshot request.
INITIAL = "initial sync"

#: Default bound of the diff buffer kept while out of sync (100 s of a 100 ms stream).
DEFAULT_MAX_BUFFER = 10_000


class SequenceRules(Protocol):
    """A venue's update-id continuity rules (adapters provide them, see ``book_rules``).

    ``snapshot_id`` is a snapshot's last update id (``lastUpdateId`` on Binance).
    """

    @property
    def name(self) -> str:
        """A short name for logs (``"previous-id"``)."""
        ...

    def stale(self, diff: DepthDiff, snapshot_id: int) -> bool:
        """True if the snapshot already contains everything ``diff`` says (drop it)."""
        ...

    def bridges(self, diff: DepthDiff, snapshot_id: int) -> bool:
        """True if ``diff`` may be the first applied on top of the snapshot."""
        ...

    def follows(self, previous: DepthDiff, diff: DepthDiff) -> str | None:
        """None if ``diff`` continues right after ``previous``, else why it does not."""
        ...


class VerifyingRules(SequenceRules, Protocol):
    """`SequenceRules` that also check the book after each diff (optional for a venue)."""

    def verify(self, book: OrderBook, diff: DepthDiff) -> str | None:
        """None if ``book``, just after ``diff`` was applied (or loaded, for a snapshot
        frame), is what ``diff`` says it should be, else why not (a break: re-sync)."""
        ...


@frozen(slots=True)
class SyncStep:
    """What one `BookSync` call did.

    ``applied``: diffs applied to the book by this call. ``resync``: set when the book is
    out of sync and the caller must fetch a (new) snapshot now; the reason, for logs.
    """

    applied: int = 0
    resync: str | None = None


# The hot path returns these instead of allocating a new step per diff.
_NOTHING = SyncStep()
_APPLIED_ONE = SyncStep(1)


class BookSync:
    """One symbol's book and the state of its join with the diff stream.

    ``synced`` is true while ``book`` is a correct picture of the exchange's book at
    ``book.last_update_id``; never show the book while it is false. ``resyncs`` counts the
    snapshot requests made (`SyncStep.resync`), ``breaks`` the losses of sync caused by the
    stream, ``last_break`` is the latest reason a snapshot was asked for and ``overflows``
    counts diffs dropped from a full buffer.
    """

    __slots__ = (
        "_buffer",
        "_dropped",
        "_prev",
        "_requested",
        "_verify",
        "_why",
        "book",
        "breaks",
        "exchange",
        "last_break",
        "max_buffer",
        "overflows",
        "resyncs",
        "rules",
        "snapshots",
        "symbol",
        "synced",
    )

    def __init__(
        self,
        exchange: str,
        symbol: str,
        rules: SequenceRules,
        *,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        max_levels: int = DEFAULT_MAX_LEVELS,
    ) -> None:
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be >= 1, got {max_buffer}")
        self.exchange = exchange
        self.symbol = symbol
        self.rules = rules
        self.max_buffer = max_buffer
        self.book = OrderBook(exchange, symbol, max_levels=max_levels)
        self.synced = False
        self.resyncs = 0
        self.breaks = 0
        self.overflows = 0
        self.snapshots = 0
        self.last_break: str | None = None
        self._buffer: deque[DepthDiff] = deque()
        # The newest diff dropped from a full buffer since the last join: a snapshot must
        # contain it, or the book would miss what it changed.
        self._dropped: DepthDiff | None = None
        # The last diff applied; None right after a snapshot (the next must be stale or
        # bridge the snapshot's id, which is then ``book.last_update_id``).
        self._prev: DepthDiff | None = None
        # A snapshot was asked for since the book went out of sync.
        self._requested = False
        self._why = INITIAL
        #: The rules' optional content check (see `VerifyingRules`), looked up once.
        self._verify: Callable[[OrderBook, DepthDiff], str | None] | None = getattr(
            rules, "verify", None
        )

    def __repr__(self) -> str:
        state = "synced" if self.synced else f"buffering {len(self._buffer)}"
        return f"<BookSync {self.exchange} {self.symbol} {state} id={self.book.last_update_id}>"

    @property
    def buffered(self) -> int:
        """How many diffs wait in the buffer."""
        return len(self._buffer)

    @property
    def waiting(self) -> bool:
        """True while out of sync with a snapshot asked for and not yet joined."""
        return not self.synced and self._requested

    @property
    def last_applied(self) -> DepthDiff | None:
        """The last diff applied to the book (None right after a snapshot)."""
        return self._prev

    # ---- the stream -----------------------------------------------------------------

    def on_diff(self, diff: DepthDiff) -> SyncStep:
        """Take one diff from the stream: apply it, buffer it, or drop it as stale."""
        if diff.snapshot:
            return self._load_stream_snapshot(diff)
        if self.synced:
            prev = self._prev
            if prev is not None:
                reason = self.rules.follows(prev, diff)
                if reason is None:
                    self.book.apply(diff.bids, diff.asks, diff.final_update_id, diff.time)
                    self._prev = diff
                    if self._verify is not None:
                        return self._verified(diff)
                    return _APPLIED_ONE
                return self._break(diff, GAP + reason)
            # First live diff after a snapshot that found nothing buffered.
            snapshot_id = self.book.last_update_id
            assert snapshot_id is not None  # synced implies loaded
            if self.rules.stale(diff, snapshot_id):
                return _NOTHING
            if self.rules.bridges(diff, snapshot_id):
                self.book.apply(diff.bids, diff.asks, diff.final_update_id, diff.time)
                self._prev = diff
                if self._verify is not None:
                    return self._verified(diff)
                return _APPLIED_ONE
            return self._break(
                diff, GAP + f"snapshot {snapshot_id} older than the next diff {_ids(diff)}"
            )
        self._hold(diff)
        if not self._requested:
            self._requested = True
            return self._ask(self._why)
        return _NOTHING

    # ---- snapshots ------------------------------------------------------------------

    def on_snapshot(self, snapshot: DepthDiff) -> SyncStep:
        """Join a fetched snapshot (its first and final ids are its last update id).

        Out of sync: drop the buffered diffs it contains, check that the next bridges it and
        the rest follow, and replay them (`SyncStep.applied`). If it is older than what the
        buffer needs, `SyncStep.resync` asks for another and buffering goes on.

        In sync (a snapshot fetched for a check, or one that arrives late): one older than the
        book is ignored; one at the book's own id replaces the levels and keeps the chain;
        a newer one replaces the book, and the next live diffs must be stale or bridge it.
        """
        rules = self.rules
        snapshot_id = snapshot.final_update_id
        if self.synced:
            current = self.book.last_update_id
            assert current is not None
            if snapshot_id < current:
                return _NOTHING
            self._load(snapshot)
            if snapshot_id > current:
                self._prev = None
            return _NOTHING
        dropped = self._dropped
        if dropped is not None and not rules.stale(dropped, snapshot_id):
            return self._ask(
                f"snapshot {snapshot_id} older than diff {_ids(dropped)} "
                "dropped from the full buffer"
            )
        buffer = self._buffer
        if any(rules.stale(d, snapshot_id) for d in buffer):
            # Usually a run at the front; one further back came out of order, and since the
            # snapshot holds all it says, dropping it is right too (the others still chain).
            buffer = self._buffer = deque(d for d in buffer if not rules.stale(d, snapshot_id))
        if buffer and not rules.bridges(buffer[0], snapshot_id):
            return self._ask(
                f"snapshot {snapshot_id} older than the first buffered diff {_ids(buffer[0])}"
            )
        self._load(snapshot)
        self.synced = True
        self._requested = False
        self._dropped = None
        self._prev = None
        book = self.book
        verify = self._verify
        applied = 0
        prev: DepthDiff | None = None
        while buffer:
            diff = buffer[0]
            if prev is not None:  # the first one was checked to bridge above
                reason = rules.follows(prev, diff)
                if reason is not None:
                    # The rest of the buffer (from this diff on) is the new buffer.
                    return self._lose_sync(GAP + reason, applied)
            book.apply(diff.bids, diff.asks, diff.final_update_id, diff.time)
            if verify is not None:
                reason = verify(book, diff)
                if reason is not None:
                    # Snapshot and diffs disagree: this diff stays at the front of the new
                    # buffer, so that the next snapshot can take it over again.
                    return self._lose_sync(GAP + reason, applied)
            buffer.popleft()
            prev = diff
            applied += 1
        self._prev = prev
        return SyncStep(applied) if applied != 1 else _APPLIED_ONE

    def reload(self, snapshot: DepthDiff, replay: Iterable[DepthDiff] = ()) -> SyncStep:
        """Replace the levels of an in-sync book with ``snapshot``, taken at an update id the
        book has already passed, then re-apply ``replay``: the diffs applied since, in order
        (they passed the sequence checks when they came). The chain is kept.

        This repairs a book whose levels were found wrong at a known update id (a depth
        check's mismatch) without waiting for another snapshot.
        """
        if not self.synced:
            raise RuntimeError(f"{self.symbol}: reload needs a book in sync")
        book = self.book
        time = book.time
        self._load(snapshot)
        applied = 0
        for diff in replay:
            book.apply(diff.bids, diff.asks, diff.final_update_id, diff.time)
            self._prev = diff
            applied += 1
        if not applied:
            # The state is the one the stream reached at that id: keep the stream's time.
            book.time = time
        return SyncStep(applied)

    def reset(self, reason: str) -> SyncStep:
        """Drop the book and start buffering again (e.g. the stream's connection was lost).

        Nothing is asked for yet: the first diff that comes after this asks for a snapshot
        (with ``reason``), so that the snapshot is fetched once a diff is buffered.
        """
        self.book.clear()
        self.synced = False
        self._buffer.clear()
        self._dropped = None
        self._prev = None
        self._requested = False
        self._why = reason
        return _NOTHING

    # ---- internals ------------------------------------------------------------------

    def _load(self, snapshot: DepthDiff) -> None:
        self.book.load_snapshot(
            snapshot.final_update_id, snapshot.bids, snapshot.asks, snapshot.time
        )
        self.snapshots += 1

    def _load_stream_snapshot(self, snapshot: DepthDiff) -> SyncStep:
        # A full picture from the stream itself: everything buffered before it is older.
        self._buffer.clear()
        self._dropped = None
        self._load(snapshot)
        self.synced = True
        self._requested = False
        self._prev = None
        if self._verify is not None:
            reason = self._verify(self.book, snapshot)
            if reason is not None:
                return self._lose_sync(GAP + reason, 0)
        return _APPLIED_ONE

    def _verified(self, diff: DepthDiff) -> SyncStep:
        """After applying ``diff`` in sync: the rules' content check, a break if it fails."""
        assert self._verify is not None
        reason = self._verify(self.book, diff)
        if reason is None:
            return _APPLIED_ONE
        # The book is wrong from this diff on; the diff starts the new buffer (a snapshot at
        # or past its id drops it as stale, one before it replays it and checks it again).
        return self._break(diff, GAP + reason)

    def _hold(self, diff: DepthDiff) -> None:
        buffer = self._buffer
        if len(buffer) >= self.max_buffer:
            self._dropped = buffer.popleft()
            self.overflows += 1
        buffer.append(diff)

    def _ask(self, reason: str) -> SyncStep:
        self.resyncs += 1
        self.last_break = reason
        return SyncStep(0, reason)

    def _break(self, diff: DepthDiff, reason: str) -> SyncStep:
        """The stream broke the chain at ``diff``: it starts the new buffer."""
        self._buffer.clear()
        self._buffer.append(diff)
        return self._lose_sync(reason, 0)

    def _lose_sync(self, reason: str, applied: int) -> SyncStep:
        self.book.clear()
        self.synced = False
        self._prev = None
        self._dropped = None
        self._requested = True
        self.breaks += 1
        self.resyncs += 1
        self.last_break = reason
        return SyncStep(applied, reason)


def _ids(diff: DepthDiff) -> str:
    """``U..u`` of a diff, for reasons."""
    return f"{diff.first_update_id}..{diff.final_update_id}"
