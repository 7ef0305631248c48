"""The Trio shell of the order books: snapshots when a book is out of sync, and depth
reconciliation.

The books themselves are pure (:mod:`trio_feed.core.books`): the connection readers hand
every depth diff to `~trio_feed.core.books.VenueBooks` through the venue's data keeper, and
a book that is not in sync (at start, after a sequence break, after its connection was lost)
comes back as a `~trio_feed.core.keeper.BookGap`. `VenueBookSync` turns each into one snapshot
task for that symbol alone (never every book of the feed), inside the venue's REST weight
budget: a 1000-level USD-M snapshot weighs 20, so after a reconnect of 200 symbols the
snapshots queue in the `RestClient` rather than earn a 429. While a snapshot is fetched the
diffs are buffered and no ``book`` event is published for that symbol.

Depth reconciliation runs beside it: every ``reconciliation.depth_interval`` seconds per
symbol (spread evenly, and never more than a quarter of the venue's REST budget), a snapshot
is compared with the local book at the same update id where that is observable; a book that
lags by more than ``depth_gap_resync`` updates, or differs, is re-synced from it. Mismatches
are ``reconcile`` events and lower the symbol's quality score.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable

import trio
import trio.lowlevel

from ..config import ReconciliationConfig
from ..core.backoff import Backoff, BackoffPolicy
from ..core.books import VenueBooks
from ..core.keeper import BookGap
from ..errors import MalformedFrame
from ..events import DepthDiff, Event, StateChange
from ..venues.base import StreamSpec, VenueAdapter
from .rest import RestClient, RestError, RestRateLimited

__all__ = ["BookSyncStats", "VenueBookSync"]

log = logging.getLogger("trio_feed.books")

#: Levels of a sync snapshot: the deepest the venue serves (USD-M: 1000, weight 20).
SNAPSHOT_LIMIT = 1000
#: Share of the venue's REST budget the depth checks may use (the rest is for syncs and fills).
CHECK_BUDGET_SHARE = 0.25
#: Retry pacing of a failed snapshot request: a book cannot be given up, only delayed.
SNAPSHOT_RETRY = BackoffPolicy(base_delay=1.0, max_delay=30.0, jitter_ratio=0.2, max_retries=0)


class BookSyncStats:
    """Counters behind ``status()``."""

    __slots__ = ("check_mismatches", "checks", "last_error", "snapshot_errors", "snapshots")

    def __init__(self) -> None:
        self.snapshots = 0
        self.snapshot_errors = 0
        self.checks = 0
        self.check_mismatches = 0
        self.last_error: str | None = None


class VenueBookSync:
    """Snapshot tasks and depth reconciliation of one venue's books."""

    def __init__(
        self,
        *,
        adapter: VenueAdapter,
        rest: RestClient,
        books: VenueBooks,
        publish: Callable[[list[Event]], None],
        reconciliation: ReconciliationConfig,
        rng: random.Random,
    ) -> None:
        self.adapter = adapter
        self.name = adapter.name
        self.rest = rest
        self.books = books
        self._publish = publish
        self.reconciliation = reconciliation
        self._rng = rng
        self.stats = BookSyncStats()
        self._nursery: trio.Nursery | None = None
        self._waiting: dict[str, str] = {}
        self._syncing: set[str] = set()

    @property
    def syncing(self) -> int:
        """Snapshot requests running or queued for the budget."""
        return len(self._syncing)

    # ---- from the readers (synchronous, never blocks) ----------------------------------------

    def request_snapshot(self, gap: BookGap) -> None:
        """``gap.symbol``'s book is out of sync: fetch a snapshot (one task per symbol)."""
        symbol = gap.symbol
        if symbol in self._syncing:
            return
        if self._nursery is None:
            self._waiting.setdefault(symbol, gap.reason)
            return
        self._syncing.add(symbol)
        self._nursery.start_soon(self._sync, symbol, gap.reason, name=f"book {self.name} {symbol}")

    def connection_state(self, event: StateChange, streams: Iterable[StreamSpec]) -> None:
        """A connection holding ``streams`` changed state: when it is lost, its books are no
        longer in sync (diffs are missed from now on), so none of them may be shown."""
        if event.state != "LOST":
            return
        for spec in streams:
            if spec.channel == "depth" and spec.symbol in self.books.symbols():
                self.books.reset(spec.symbol, f"connection {event.connection} lost")

    # ---- tasks ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the snapshot tasks and the depth reconciliation until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            waiting, self._waiting = self._waiting, {}
            for symbol, reason in waiting.items():
                self.request_snapshot(BookGap(symbol, reason))
            nursery.start_soon(self._reconcile, name=f"depth checks {self.name}")
            task_status.started()
            await trio.sleep_forever()

    async def _snapshot(self, symbol: str, limit: int) -> DepthDiff:
        request = self.adapter.depth_request(symbol, limit)
        response = await self.rest.request(request)
        return self.adapter.parse_depth(response.text, symbol)

    async def _sync(self, symbol: str, reason: str) -> None:
        log.info(
            "%s %s: order book out of sync (%s): fetching a snapshot", self.name, symbol, reason
        )
        backoff = Backoff(SNAPSHOT_RETRY, self._rng)
        try:
            while symbol in self.books.symbols() and not self.books.synced(symbol):
                try:
                    snapshot = await self._snapshot(symbol, SNAPSHOT_LIMIT)
                except RestRateLimited as exc:
                    self._failed(symbol, exc)
                    await trio.sleep(max(1.0, exc.until - trio.current_time()))
                    continue
                except (RestError, MalformedFrame) as exc:
                    self._failed(symbol, exc)
                    await trio.sleep(backoff.next_delay(trio.current_time()) or 1.0)
                    continue
                self.stats.snapshots += 1
                out: list[object] = []
                again = self.books.on_snapshot(snapshot, out)
                if out:
                    self._publish(out)  # type: ignore[arg-type]
                if again is not None:
                    # E.g. a snapshot older than the first buffered diff: ask for a newer one.
                    log.info("%s %s: snapshot not usable (%s): again", self.name, symbol, again)
                    await trio.lowlevel.checkpoint()
        finally:
            self._syncing.discard(symbol)

    def _failed(self, symbol: str, exc: Exception) -> None:
        self.stats.snapshot_errors += 1
        self.stats.last_error = f"{symbol}: {exc}"
        log.warning("%s %s: depth snapshot failed, will retry: %s", self.name, symbol, exc)

    async def _reconcile(self) -> None:
        """Check each book once per ``depth_interval``, spread evenly, within a share of the
        venue's REST budget."""
        interval = self.reconciliation.depth_interval
        budget = self.rest.budget or self.adapter.rest_weight_per_minute
        while True:
            symbols = self.books.symbols()
            if not symbols:
                await trio.sleep(interval)
                continue
            weight = self.adapter.depth_request(symbols[0], SNAPSHOT_LIMIT).weight
            # Seconds per check, so that the checks use at most their share of the budget.
            floor = weight / (CHECK_BUDGET_SHARE * budget / 60.0)
            step = max(interval / len(symbols), floor)
            for symbol in symbols:
                await trio.sleep(step)
                if symbol in self._syncing or not self.books.synced(symbol):
                    continue
                await self._check(symbol)

    async def _check(self, symbol: str) -> None:
        self.books.begin_check(symbol)
        try:
            snapshot = await self._snapshot(symbol, SNAPSHOT_LIMIT)
        except (RestError, MalformedFrame) as exc:
            log.warning("%s %s: depth check skipped: %s", self.name, symbol, exc)
            return
        self.stats.checks += 1
        out: list[object] = []
        result = self.books.check(
            symbol,
            snapshot,
            gap_resync=self.reconciliation.depth_gap_resync,
            out=out,
        )
        if result == "mismatch":
            self.stats.check_mismatches += 1
        if result in ("mismatch", "resynced"):
            log.warning("%s %s: depth check: %s", self.name, symbol, result)
        if out:
            self._publish(out)  # type: ignore[arg-type]
