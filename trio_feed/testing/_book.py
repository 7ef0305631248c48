"""The simulated order book of one symbol, in integer ticks and lot steps.

`BookSim` keeps both sides (``book_levels`` levels each around the last trade price), changes
them one *step* at a time and keeps the recent steps, each covering a contiguous range of
update ids (one id per level change), so that any range of them can be merged into a diff.
It also keeps the book as it was just before the oldest retained step (the *base*), so the
book as of any retained step boundary can be rebuilt (`BookSim.book_at`).
`FakeMarket` turns its integers into `decimal.Decimal` records.
"""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right, insort
from collections import deque
from itertools import islice

from attrs import define

__all__ = ["BookSim", "Step", "random_qty"]


def random_qty(rng: random.Random) -> int:
    """A level quantity, 1 to 1000 lot steps."""
    # rng.random() rather than randint: the book step is the hot path of a long run.
    return int(rng.random() * 1000) + 1


@define(slots=True)
class Step:
    """One book change: update ids ``first_id``..``last_id``, new quantity per price."""

    first_id: int
    last_id: int
    time: int
    bids: dict[int, int]
    asks: dict[int, int]


class _Side:
    """One side of the book: quantity by price plus the prices kept sorted ascending."""

    __slots__ = ("prices", "qty")

    def __init__(self) -> None:
        self.qty: dict[int, int] = {}
        self.prices: list[int] = []

    def set(self, price: int, qty: int) -> None:
        if qty:
            if price not in self.qty:
                insort(self.prices, price)
            self.qty[price] = qty
        elif price in self.qty:
            del self.qty[price]
            del self.prices[bisect_left(self.prices, price)]

    def trim(self, keep: int, *, from_low: bool, changes: dict[int, int]) -> None:
        """Drop the levels farthest from the touch beyond ``keep``, noting them in ``changes``."""
        excess = len(self.prices) - keep
        if excess <= 0:
            return
        far = self.prices[:excess] if from_low else self.prices[-excess:]
        for p in far:
            changes[p] = 0
            del self.qty[p]
        if from_low:
            del self.prices[:excess]
        else:
            del self.prices[-excess:]


def _apply(side: dict[int, int], changes: dict[int, int]) -> None:
    for price, qty in changes.items():
        if qty:
            side[price] = qty
        else:
            side.pop(price, None)


class BookSim:
    """The book of one symbol (see the module docstring).

    The opening book, ``levels`` levels each side of ``price``, is itself the first step, so
    that even before the first change the diff streams can be a step behind a snapshot.
    """

    def __init__(
        self, price: int, time: int, *, levels: int, history: int, base_id: int, rng: random.Random
    ) -> None:
        self.levels = levels
        self.bids = _Side()
        self.asks = _Side()
        for k in range(1, levels + 1):
            self.bids.set(price - k, random_qty(rng))
            self.asks.set(price + k, random_qty(rng))
        n = len(self.bids.qty) + len(self.asks.qty)
        opening = Step(base_id + 1, base_id + n, time, dict(self.bids.qty), dict(self.asks.qty))
        self.history = history
        self.steps: deque[Step] = deque([opening])
        self.last_update_id = opening.last_id
        self.time = time
        # The book just before steps[0] (empty before the opening step), kept up as old
        # steps are forgotten; and the last book rebuilt by `book_at`, from which the next
        # call replays forward when it asks for a later id (tests walk ids upwards).
        self._base: tuple[dict[int, int], dict[int, int], int] = ({}, {}, time)
        self._base_is_a_book = False  # the empty base before the opening step is not
        self._cursor: tuple[int, dict[int, int], dict[int, int], int] | None = None

    def step(self, time: int, price: int, rng: random.Random) -> Step:
        """Change the book at ``time`` given the last trade ``price``; returns the step."""
        bids, asks = self.bids, self.asks
        bid_changes: dict[int, int] = {}
        ask_changes: dict[int, int] = {}
        # Keep the book consistent with the last trade: every bid below it, every ask above.
        for p in bids.prices[bisect_left(bids.prices, price) :]:
            bid_changes[p] = 0
        for p in asks.prices[: bisect_right(asks.prices, price)]:
            ask_changes[p] = 0
        if price - 1 not in bids.qty:
            bid_changes[price - 1] = random_qty(rng)
        if price + 1 not in asks.qty:
            ask_changes[price + 1] = random_qty(rng)
        # A few random changes, mostly near the touch; some remove a level (possibly one that
        # is not there, which the exchange also does and clients must ignore).
        for _ in range(1 + int(rng.random() * 4)):
            r = rng.random()
            offset = 1 + min(int(rng.expovariate(0.05)), self.levels - 1)
            qty = 0 if rng.random() < 0.25 else random_qty(rng)
            if r < 0.5:
                bid_changes[price - offset] = qty
            else:
                ask_changes[price + offset] = qty
        for p, q in bid_changes.items():
            bids.set(p, q)
        for p, q in ask_changes.items():
            asks.set(p, q)
        bids.trim(self.levels, from_low=True, changes=bid_changes)
        asks.trim(self.levels, from_low=False, changes=ask_changes)
        n = len(bid_changes) + len(ask_changes)
        step = Step(
            self.last_update_id + 1, self.last_update_id + n, time, bid_changes, ask_changes
        )
        self.last_update_id = step.last_id
        self.time = time
        self._retain(step)
        return step

    def _retain(self, step: Step) -> None:
        if len(self.steps) >= self.history:
            old = self.steps.popleft()
            bids, asks, _ = self._base
            _apply(bids, old.bids)
            _apply(asks, old.asks)
            self._base = (bids, asks, old.time)
            self._base_is_a_book = True
        self.steps.append(step)

    def _index(self, update_id: int) -> int:
        """The index of the retained step ending at ``update_id`` (-1: the base), or
        LookupError."""
        steps = self.steps
        if update_id == steps[0].first_id - 1 and self._base_is_a_book:
            return -1
        lo, hi = 0, len(steps)
        while lo < hi:
            mid = (lo + hi) // 2
            if steps[mid].last_id < update_id:
                lo = mid + 1
            else:
                hi = mid
        if lo == len(steps) or steps[lo].last_id != update_id:
            first, last = steps[0].first_id - 1, steps[-1].last_id
            raise LookupError(
                f"update id {update_id} is not a retained step boundary ({first}..{last})"
            )
        return lo

    def boundary_before(self, steps_back: int) -> int:
        """The update id ``steps_back`` steps before the current book (0: the current one),
        the oldest retained book if the history is shorter."""
        if steps_back < 0:
            raise ValueError("steps_back must not be negative")
        index = len(self.steps) - 1 - steps_back
        if index >= 0:
            return self.steps[index].last_id
        return self.steps[0].first_id - 1 if self._base_is_a_book else self.steps[0].last_id

    def book_at(self, update_id: int) -> tuple[dict[int, int], dict[int, int], int]:
        """Bids and asks (quantity by price) and time of the book as of ``update_id``, a
        retained step boundary (LookupError otherwise). The dicts are shared with the next
        call: copy them before keeping or changing them.

        Costs one replay of the steps from the base, or from the previous call's book when
        ``update_id`` is not older than it.
        """
        index = self._index(update_id)
        start = 0
        cursor = self._cursor
        base_id = self.steps[0].first_id - 1
        if cursor is not None and base_id <= cursor[0] <= update_id:
            _, bids, asks, time = cursor
            start = self._index(cursor[0]) + 1
        else:
            base_bids, base_asks, time = self._base
            bids, asks = dict(base_bids), dict(base_asks)
        for step in islice(self.steps, start, index + 1):
            _apply(bids, step.bids)
            _apply(asks, step.asks)
            time = step.time
        self._cursor = (update_id, bids, asks, time)
        return bids, asks, time

    def best(self) -> tuple[int, int, int, int]:
        """(best bid, its qty, best ask, its qty); zeros for an empty side."""
        bid = self.bids.prices[-1] if self.bids.prices else 0
        ask = self.asks.prices[0] if self.asks.prices else 0
        return bid, self.bids.qty.get(bid, 0), ask, self.asks.qty.get(ask, 0)

    def published_id(self) -> int:
        """The last update id of all steps but the newest (see
        `FakeMarket.published_update_id`)."""
        if len(self.steps) >= 2:
            return self.steps[-2].last_id
        return self.steps[0].first_id - 1

    def merged(self, after_id: int, up_to_id: int) -> tuple[dict[int, int], dict[int, int], int]:
        """Bid and ask changes of updates ``after_id + 1``..``up_to_id`` merged (later changes
        win), and the time of the last step. Both ids must be retained step boundaries."""
        # The wanted steps are almost always the newest few: walk back from the end.
        chunk: list[Step] = []
        for step in reversed(self.steps):
            if step.last_id <= after_id:
                break
            if step.last_id <= up_to_id:
                chunk.append(step)
        chunk.reverse()
        if not chunk or chunk[0].first_id != after_id + 1 or chunk[-1].last_id != up_to_id:
            raise LookupError(
                f"updates {after_id + 1}..{up_to_id} are not retained step boundaries"
            )
        bids: dict[int, int] = {}
        asks: dict[int, int] = {}
        for step in chunk:
            bids.update(step.bids)
            asks.update(step.asks)
        return bids, asks, chunk[-1].time
