"""One venue's order books (pure): what the Trio shell drives for the ``depth`` channel.

`VenueBooks` keeps a `BookSync` per tracked symbol and turns what they do into events:

* `VenueBooks.on_diff` is the per-frame path. It routes a parsed diff to its symbol, appends a
  `BookUpdate` (the top ``depth`` levels) after each diff applied to a book in sync, and
  returns the reason when the shell must fetch a REST snapshot *now* (the first diff of a
  symbol, a sequence break). Only the broken symbol is re-synced; the others go on.
* `VenueBooks.on_snapshot` joins a fetched snapshot and emits one `BookUpdate` for the state
  after the buffered diffs were replayed. It returns why another snapshot is needed, if one is.
* `VenueBooks.begin_check` / `VenueBooks.check`: the periodic REST depth check (below).

No book is ever shown out of sync: while a symbol's book is not in sync, no `BookUpdate` of
it goes out and `VenueBooks.view` returns None.

Rate limit. With ``min_interval_ms`` > 0, a diff's `BookUpdate` is left out when one went out
for the symbol less than that long before, in exchange time. The book itself is always up to
date (`VenueBooks.view`); updates after a snapshot join or a repair always go out.

Depth check. Every ``depth_interval`` the shell calls `VenueBooks.begin_check`, fetches a
snapshot (update id ``L``) and hands it to `VenueBooks.check`. Between the two calls the top
``check_levels`` levels after each applied diff are remembered by update id (a bounded ring),
because the stream usually runs ahead of the REST answer. Then:

* out of sync, or lagging ``L`` by more than ``gap_resync`` updates: the book is re-synced
  from this snapshot (``"resynced"``);
* behind ``L`` by less: the comparison waits for the diff whose final id is ``L``
  (``"pending"``; `VenueBooks.on_diff` settles it with the same outcomes, see `last_check`);
* at ``L`` now or in the ring: the top levels are compared (``"match"`` or ``"mismatch"``);
* no state at exactly ``L`` is known (``L`` fell inside a diff, or before the ring):
  ``"skipped"``.

Only overlapping levels are compared: a price both sides list within their top
``check_levels``, and a price one side lists that the other side's top levels cover (between
its worst listed level and beyond its best, so it should be listed there too; see
`compare_top`). A mismatch appends a `Reconcile` event
(``Reconcile(symbol, "depth", L, mismatches, "resynced")``, e.g. ``"bid 100.5: 1.2 != 1.3"``
with ours first, ``"ask 101: missing locally"``), calls ``on_mismatch(symbol, text)`` (the
shell lowers the symbol's quality), and repairs the book from the snapshot, re-applying the
diffs applied since ``L``, then emits a `BookUpdate` of the repaired book.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from decimal import Decimal
from operator import itemgetter
from typing import Literal

from ..events import BookLevel, BookUpdate, DepthDiff, Reconcile
from .book import DEFAULT_MAX_LEVELS, BookView
from .book_sync import DEFAULT_MAX_BUFFER, GAP, INITIAL, BookSync, SequenceRules

__all__ = ["CHECK_HISTORY", "CHECK_LEVELS", "CheckOutcome", "VenueBooks", "compare_top"]

#: Levels per side compared by a depth check.
CHECK_LEVELS = 20
#: Applied states remembered while a depth-check snapshot is being fetched.
CHECK_HISTORY = 2000

#: What `VenueBooks.check` returns (and `VenueBooks.last_check` reports).
CheckOutcome = Literal["resynced", "match", "mismatch", "pending", "skipped"]

#: One remembered state: (update id, top bids, top asks, the diff that led to it).
_State = tuple[int, tuple[BookLevel, ...], tuple[BookLevel, ...], DepthDiff | None]

_NEVER = -(2**62)  # "no update sent yet", far below any exchange time
_price = itemgetter(0)


class _Symbol:
    """Per-symbol state of `VenueBooks`."""

    __slots__ = ("last_check", "last_emit", "pending", "ring", "sync")

    def __init__(self, sync: BookSync) -> None:
        self.sync = sync
        self.last_emit = _NEVER
        # Applied states since begin_check, until check (None: not recording).
        self.ring: deque[_State] | None = None
        # A check snapshot waiting for the book to reach its update id.
        self.pending: DepthDiff | None = None
        self.last_check: CheckOutcome | None = None


class VenueBooks:
    """The order books of one venue's tracked symbols (see the module docstring).

    ``depth`` is the levels per side of emitted `BookUpdate` events (``book_depth``).
    Counters for status: ``resyncs`` (snapshot requests after a book's first, and re-syncs
    done by checks), ``breaks`` (sequence breaks of books in sync), ``checks`` (calls of
    `check`), ``matches``, ``mismatches`` and ``skipped`` (check outcomes).
    """

    __slots__ = (
        "_books",
        "_check_history",
        "_check_levels",
        "_max_buffer",
        "_max_levels",
        "_min_interval",
        "_on_mismatch",
        "breaks",
        "checks",
        "depth",
        "exchange",
        "matches",
        "mismatches",
        "resyncs",
        "rules",
        "skipped",
    )

    def __init__(
        self,
        exchange: str,
        rules: SequenceRules,
        *,
        depth: int = 20,
        min_interval_ms: int = 0,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        max_levels: int = DEFAULT_MAX_LEVELS,
        on_mismatch: Callable[[str, str], None] | None = None,
        check_levels: int = CHECK_LEVELS,
        check_history: int = CHECK_HISTORY,
    ) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if check_levels < 1 or check_history < 1:
            raise ValueError("check_levels and check_history must be >= 1")
        self.exchange = exchange
        self.rules = rules
        self.depth = depth
        self._min_interval = min_interval_ms
        self._max_buffer = max_buffer
        self._max_levels = max_levels
        self._on_mismatch = on_mismatch
        self._check_levels = check_levels
        self._check_history = check_history
        self._books: dict[str, _Symbol] = {}
        self.resyncs = 0
        self.breaks = 0
        self.checks = 0
        self.matches = 0
        self.mismatches = 0
        self.skipped = 0

    # ---- symbols --------------------------------------------------------------------

    def track(self, symbol: str) -> None:
        """Keep a book of ``symbol`` (no-op if already tracked). It starts out of sync."""
        if symbol not in self._books:
            self._books[symbol] = _Symbol(
                BookSync(
                    self.exchange,
                    symbol,
                    self.rules,
                    max_buffer=self._max_buffer,
                    max_levels=self._max_levels,
                )
            )

    def untrack(self, symbol: str) -> None:
        """Forget ``symbol``'s book (no-op if not tracked)."""
        self._books.pop(symbol, None)

    def symbols(self) -> list[str]:
        """The tracked symbols, in the order they were tracked."""
        return list(self._books)

    def book_sync(self, symbol: str) -> BookSync | None:
        """The `BookSync` of ``symbol`` (for status: buffered, resyncs, last_break...)."""
        entry = self._books.get(symbol)
        return None if entry is None else entry.sync

    # ---- the stream and snapshots ---------------------------------------------------

    def on_diff(self, diff: DepthDiff, out: list[object]) -> str | None:
        """Route one parsed diff; append a `BookUpdate` if it was applied (rate limit
        permitting). Returns the reason when a snapshot must be fetched now, else None.
        Diffs of untracked symbols are ignored."""
        entry = self._books.get(diff.symbol)
        if entry is None:
            return None
        sync = entry.sync
        if diff.snapshot:
            # A full picture from the stream replaces the book: remembered states no longer
            # chain (and a snapshot frame must never be re-applied as if it were a diff).
            self._end_check(entry)
        step = sync.on_diff(diff)
        if step.applied:
            # Applied by on_diff means in sync now (a break never applies anything).
            if (entry.ring is not None or entry.pending is not None) and self._after_applied(
                entry, diff, out
            ):
                return None  # repaired, and the repaired book went out
            time = diff.time
            interval = self._min_interval
            if interval <= 0 or time - entry.last_emit >= interval:
                bids, asks = sync.book.top(self.depth)
                out.append(
                    BookUpdate(self.exchange, diff.symbol, diff.final_update_id, time, bids, asks)
                )
                entry.last_emit = time
            return None
        reason = step.resync
        if reason is not None:
            self._asked(entry, reason)
        return reason

    def on_snapshot(self, snapshot: DepthDiff, out: list[object]) -> str | None:
        """Join a fetched REST snapshot of ``snapshot.symbol``; append one `BookUpdate` if
        the book is in sync after it. Returns None when in sync, else why another snapshot is
        needed. A snapshot of an untracked symbol is ignored (None)."""
        entry = self._books.get(snapshot.symbol)
        if entry is None:
            return None
        sync = entry.sync
        loads = sync.snapshots
        step = sync.on_snapshot(snapshot)
        if sync.snapshots != loads:
            # The book jumped to the snapshot: states remembered for a check no longer chain.
            self._end_check(entry)
            if sync.synced:
                self._emit(entry, out)
        reason = step.resync
        if reason is not None:
            self._asked(entry, reason)
        return reason

    def reset(self, symbol: str, reason: str) -> None:
        """Drop ``symbol``'s book (e.g. its stream's connection was lost) and buffer again;
        the first diff after this returns ``reason`` as the snapshot request."""
        entry = self._books.get(symbol)
        if entry is not None:
            entry.sync.reset(reason)
            self._end_check(entry)

    def synced(self, symbol: str) -> bool:
        """True if ``symbol``'s book is tracked and in sync."""
        entry = self._books.get(symbol)
        return entry is not None and entry.sync.synced

    def needs_snapshot(self, symbol: str) -> str | None:
        """Why ``symbol``'s book waits for a snapshot (a request is outstanding), else None."""
        entry = self._books.get(symbol)
        if entry is None or not entry.sync.waiting:
            return None
        return entry.sync.last_break

    def view(self, symbol: str, depth: int | None = None) -> BookView | None:
        """An immutable view of the best ``depth`` levels (None: all), or None while the book
        is out of sync or ``symbol`` is not tracked."""
        entry = self._books.get(symbol)
        if entry is None or not entry.sync.synced:
            return None
        return entry.sync.book.view(depth)

    # ---- depth checks ---------------------------------------------------------------

    def begin_check(self, symbol: str) -> None:
        """A check snapshot of ``symbol`` is being fetched: remember the top levels after
        each applied diff from now on, until `check`."""
        entry = self._books.get(symbol)
        if entry is None:
            return
        self._end_check(entry)  # a check still pending is given up
        ring: deque[_State] = deque(maxlen=self._check_history)
        book = entry.sync.book
        if entry.sync.synced and book.last_update_id is not None:
            bids, asks = book.top(self._check_levels)
            ring.append((book.last_update_id, bids, asks, None))
        entry.ring = ring

    def check(
        self, symbol: str, snapshot: DepthDiff, *, gap_resync: int, out: list[object]
    ) -> CheckOutcome:
        """Compare ``symbol``'s book with a check snapshot (see the module docstring).

        Returns ``"resynced"``, ``"match"``, ``"mismatch"``, ``"pending"`` or ``"skipped"``
        (also for an untracked symbol). After ``"resynced"`` of a book that was out of sync
        it may still be out of sync, if the snapshot could not join its buffer: then the
        shell's outstanding snapshot request (`needs_snapshot`) still stands.
        """
        self.checks += 1
        entry = self._books.get(symbol)
        if entry is None:
            self.skipped += 1
            return "skipped"
        ring = entry.ring
        entry.ring = None
        entry.pending = None
        sync = entry.sync
        target = snapshot.final_update_id
        local = sync.book.last_update_id
        if not sync.synced or local is None or target - local > gap_resync:
            return self._check_resync(entry, snapshot, out)
        if target > local:
            entry.pending = snapshot
            entry.last_check = "pending"
            return "pending"
        if target == local:
            bids, asks = sync.book.top(self._check_levels)
            return self._settle(entry, snapshot, bids, asks, (), out)
        # The stream is ahead of the snapshot: look for the state at its id.
        if ring:
            states = list(ring)
            for i in range(len(states) - 1, -1, -1):
                uid, bids, asks, _ = states[i]
                if uid == target:
                    replay = [d for *_, d in states[i + 1 :] if d is not None]
                    return self._settle(entry, snapshot, bids, asks, replay, out)
                if uid < target:
                    break
        return self._skip(entry)

    def last_check(self, symbol: str) -> CheckOutcome | None:
        """The outcome of ``symbol``'s latest check (``"pending"`` while it waits)."""
        entry = self._books.get(symbol)
        return None if entry is None else entry.last_check

    # ---- internals ------------------------------------------------------------------

    def _emit(self, entry: _Symbol, out: list[object]) -> None:
        """A `BookUpdate` of the book as it is now (always; the rate limit is for diffs)."""
        book = entry.sync.book
        assert book.last_update_id is not None and book.time is not None
        bids, asks = book.top(self.depth)
        out.append(
            BookUpdate(self.exchange, book.symbol, book.last_update_id, book.time, bids, asks)
        )
        entry.last_emit = book.time

    def _asked(self, entry: _Symbol, reason: str) -> None:
        """A snapshot request goes to the shell: count it and drop any check in progress."""
        if reason != INITIAL:
            self.resyncs += 1
        if reason.startswith(GAP):
            self.breaks += 1
        self._end_check(entry)

    def _end_check(self, entry: _Symbol) -> None:
        entry.ring = None
        if entry.pending is not None:
            entry.pending = None
            self._skip(entry)

    def _skip(self, entry: _Symbol) -> CheckOutcome:
        entry.last_check = "skipped"
        self.skipped += 1
        return "skipped"

    def _after_applied(self, entry: _Symbol, diff: DepthDiff, out: list[object]) -> bool:
        """Check bookkeeping after an applied diff; True if a mismatch repaired the book
        (and its `BookUpdate` went out)."""
        book = entry.sync.book
        uid = diff.final_update_id
        if entry.ring is not None:
            bids, asks = book.top(self._check_levels)
            entry.ring.append((uid, bids, asks, diff))
        pending = entry.pending
        if pending is None:
            return False
        target = pending.final_update_id
        if uid < target:
            return False
        entry.pending = None
        if uid > target:
            self._skip(entry)  # the snapshot's id fell inside this diff
            return False
        bids, asks = book.top(self._check_levels)
        return self._settle(entry, pending, bids, asks, (), out) == "mismatch"

    def _settle(
        self,
        entry: _Symbol,
        snapshot: DepthDiff,
        bids: tuple[BookLevel, ...],
        asks: tuple[BookLevel, ...],
        replay: Iterable[DepthDiff],
        out: list[object],
    ) -> CheckOutcome:
        """Compare the state at the snapshot's id with it; repair the book on a mismatch."""
        n = self._check_levels
        mismatches = compare_top(
            bids, asks, _best(snapshot.bids, n, bids=True), _best(snapshot.asks, n, bids=False)
        )
        if not mismatches:
            entry.last_check = "match"
            self.matches += 1
            return "match"
        symbol = entry.sync.symbol
        target = snapshot.final_update_id
        self.mismatches += 1
        out.append(Reconcile(symbol, "depth", target, tuple(mismatches), "resynced"))
        if self._on_mismatch is not None:
            text = "; ".join(mismatches)
            self._on_mismatch(symbol, f"depth mismatch at update {target}: {text}")
        entry.sync.reload(snapshot, replay)
        self._emit(entry, out)
        entry.last_check = "mismatch"
        return "mismatch"

    def _check_resync(self, entry: _Symbol, snapshot: DepthDiff, out: list[object]) -> CheckOutcome:
        sync = entry.sync
        loads = sync.snapshots
        step = sync.on_snapshot(snapshot)
        if step.resync is not None:
            self._asked(entry, step.resync)
        else:
            self.resyncs += 1
        if sync.synced and sync.snapshots != loads:
            self._emit(entry, out)
        entry.last_check = "resynced"
        return "resynced"


def _best(levels: Iterable[BookLevel], n: int, *, bids: bool) -> tuple[BookLevel, ...]:
    """The best ``n`` non-empty levels of a snapshot side, best first."""
    live = [level for level in levels if level[1]]
    live.sort(key=_price, reverse=bids)
    return tuple(live[:n])


def compare_top(
    our_bids: tuple[BookLevel, ...],
    our_asks: tuple[BookLevel, ...],
    their_bids: tuple[BookLevel, ...],
    their_asks: tuple[BookLevel, ...],
) -> list[str]:
    """The differences between two books' top levels (each side best first), ours first.

    A price both list must have equal quantities (``"bid 100.5: 1.2 != 1.3"``). A price only
    one lists is reported only if the other *covers* it: a side's top levels claim to hold
    every level from its worst listed price towards and beyond its best, so a bid at or above
    the other's worst listed bid (an ask at or below its worst listed ask) should be there
    (``"ask 101: missing locally"``, ``"bid 99: missing in snapshot"``). Prices past the other's
    worst listed level are outside what it shows and are not compared; an empty side covers
    nothing. Bids come first, each side best first.
    """
    return _compare_side("bid", our_bids, their_bids, bids=True) + _compare_side(
        "ask", our_asks, their_asks, bids=False
    )


def _compare_side(
    name: str,
    ours: tuple[BookLevel, ...],
    theirs: tuple[BookLevel, ...],
    *,
    bids: bool,
) -> list[str]:
    mine, other = dict(ours), dict(theirs)
    my_worst = _worst(mine, bids=bids)
    their_worst = _worst(other, bids=bids)
    out: list[str] = []
    for price in sorted(mine.keys() | other.keys(), reverse=bids):
        a, b = mine.get(price), other.get(price)
        if a is not None and b is not None:
            if a != b:
                out.append(f"{name} {price}: {a} != {b}")
        elif a is None:
            if _covers(my_worst, price, bids=bids):
                out.append(f"{name} {price}: missing locally")
        elif _covers(their_worst, price, bids=bids):
            out.append(f"{name} {price}: missing in snapshot")
    return out


def _worst(levels: dict[Decimal, Decimal], *, bids: bool) -> Decimal | None:
    if not levels:
        return None
    return min(levels) if bids else max(levels)


def _covers(worst: Decimal | None, price: Decimal, *, bids: bool) -> bool:
    if worst is None:
        return False
    return price >= worst if bids else price <= worst
