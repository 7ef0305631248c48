"""A local order book of one symbol (pure): sorted price levels, diffs, top-N views.

`OrderBook` holds each side as a `sortedcontainers.SortedDict` of `Decimal` price to
`Decimal` quantity, both sorted by ascending price (the best bid is the *last* bid, the best
ask the first ask). It knows nothing about update-id continuity: `BookSync`
(:mod:`trio_feed.core.book_sync`) decides which diffs may be applied; this module only applies
them. `BookView` is the immutable picture handed to users (``feed.book(symbol)``).

Diffs carry absolute quantities: a level with quantity zero (``"0"``, ``"0.000"``... all
compare equal to zero) is removed, and removing a level the book does not hold is normal
(it was outside the snapshot, or already gone) and ignored.

Trimming. A REST snapshot covers only the best 1000 levels per side. A diff that adds a level
beyond the snapshot's worst price adds one the snapshot never covered, and the levels between
it and the covered range are unknown (they exist on the exchange, we have never seen them).
Such levels are kept, because as the market moves they can move into the covered range and
become correct, but a side never grows past ``max_levels``: after each snapshot or diff, the
levels farthest from the best price are dropped until it fits. Reported views are only ever
the top ``book_depth`` levels (20 by default), which in practice lie well inside the covered
range; `OrderBook.view` with no depth returns every level, far ones included, and says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from attrs import frozen
from sortedcontainers import SortedDict  # type: ignore[import-untyped]

from ..events import BookLevel

__all__ = ["DEFAULT_MAX_LEVELS", "BookView", "OrderBook"]

#: Most levels one side keeps (see the module docstring on trimming).
DEFAULT_MAX_LEVELS = 5000

_TWO = Decimal(2)
_NO_LEVELS: tuple[BookLevel, ...] = ()


@frozen(slots=True)
class BookView:
    """An immutable picture of a book at one update id: what ``feed.book(symbol)`` returns.

    ``bids`` run from the highest price down, ``asks`` from the lowest up (best first), each
    level a ``(price, quantity)`` pair. ``time`` is the exchange time (ms) of the last update.
    """

    exchange: str
    symbol: str
    last_update_id: int
    time: int
    bids: tuple[BookLevel, ...]
    asks: tuple[BookLevel, ...]

    @property
    def best_bid(self) -> BookLevel | None:
        """The highest bid, or None when there is no bid."""
        return self.bids[0] if self.bids else None

    @property
    def best_ask(self) -> BookLevel | None:
        """The lowest ask, or None when there is no ask."""
        return self.asks[0] if self.asks else None

    @property
    def spread(self) -> Decimal | None:
        """Best ask minus best bid, or None when a side is empty."""
        if not self.bids or not self.asks:
            return None
        return self.asks[0][0] - self.bids[0][0]

    @property
    def mid(self) -> Decimal | None:
        """The mean of the best bid and ask prices, or None when a side is empty."""
        if not self.bids or not self.asks:
            return None
        return (self.asks[0][0] + self.bids[0][0]) / _TWO

    def depth(self, n: int) -> tuple[tuple[BookLevel, ...], tuple[BookLevel, ...]]:
        """The best ``n`` bids and asks (fewer where the view holds fewer)."""
        if n < 0:
            raise ValueError(f"depth must be >= 0, got {n}")
        return self.bids[:n], self.asks[:n]


class OrderBook:
    """Both sides of one symbol's book, updated in place by snapshots and diffs.

    ``last_update_id`` and ``time`` are None until the first `load_snapshot` (and again after
    `clear`). The book does not check update ids: callers (`BookSync`) do.
    """

    __slots__ = ("_asks", "_bids", "exchange", "last_update_id", "max_levels", "symbol", "time")

    def __init__(self, exchange: str, symbol: str, *, max_levels: int = DEFAULT_MAX_LEVELS) -> None:
        if max_levels < 1:
            raise ValueError(f"max_levels must be >= 1, got {max_levels}")
        self.exchange = exchange
        self.symbol = symbol
        self.max_levels = max_levels
        self.last_update_id: int | None = None
        self.time: int | None = None
        # Both ascending by price: the best bid is the last key, the best ask the first.
        self._bids: Any = SortedDict()
        self._asks: Any = SortedDict()

    def __repr__(self) -> str:
        return (
            f"<OrderBook {self.exchange} {self.symbol} id={self.last_update_id} "
            f"bids={len(self._bids)} asks={len(self._asks)}>"
        )

    @property
    def sizes(self) -> tuple[int, int]:
        """How many bid and ask levels the book holds."""
        return len(self._bids), len(self._asks)

    @property
    def loaded(self) -> bool:
        """True once a snapshot is loaded (and until `clear`)."""
        return self.last_update_id is not None

    def load_snapshot(
        self,
        last_update_id: int,
        bids: Iterable[BookLevel],
        asks: Iterable[BookLevel],
        time: int,
    ) -> None:
        """Replace everything with a snapshot at ``last_update_id``.

        Zero quantities are skipped; a price listed twice keeps its last quantity, as if the
        levels were applied to an empty book (a venue's snapshot never does that).
        """
        self._bids = SortedDict(_level_dict(bids))
        self._asks = SortedDict(_level_dict(asks))
        self._trim()
        self.last_update_id = last_update_id
        self.time = time

    def apply(
        self,
        bids: Iterable[BookLevel],
        asks: Iterable[BookLevel],
        final_update_id: int,
        time: int,
    ) -> None:
        """Apply one diff: set each level's absolute quantity, remove zero ones.

        This is the hot path. An existing level is updated through the plain dict (no
        sorted-list work); only new and removed prices touch the sorted key list.
        """
        max_levels = self.max_levels
        if bids:
            _update_side(self._bids, bids)
        if asks:
            _update_side(self._asks, asks)
        if len(self._bids) > max_levels or len(self._asks) > max_levels:
            self._trim()
        self.last_update_id = final_update_id
        self.time = time

    def top(self, n: int) -> tuple[tuple[BookLevel, ...], tuple[BookLevel, ...]]:
        """The best ``n`` bids (highest first) and asks (lowest first)."""
        return self._top_bids(n), self._top_asks(n)

    def view(self, depth: int | None = None) -> BookView:
        """An immutable `BookView` of the best ``depth`` levels per side (None: every level,
        including far levels outside the snapshot's range, see the module docstring).

        Raises `LookupError` when no snapshot is loaded.
        """
        if self.last_update_id is None or self.time is None:
            raise LookupError(f"{self.exchange} {self.symbol}: the book holds no snapshot")
        if depth is None:
            depth = max(len(self._bids), len(self._asks))
        return BookView(
            self.exchange,
            self.symbol,
            self.last_update_id,
            self.time,
            self._top_bids(depth),
            self._top_asks(depth),
        )

    def clear(self) -> None:
        """Drop every level and the update id: the book is empty and unloaded."""
        self._bids = SortedDict()
        self._asks = SortedDict()
        self.last_update_id = None
        self.time = None

    def levels(self) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
        """Every bid and ask level as plain dicts (a copy; for checks and tests)."""
        return dict(self._bids), dict(self._asks)

    # ---- internals ----------------------------------------------------------------------

    def _top_bids(self, n: int) -> tuple[BookLevel, ...]:
        side = self._bids
        if n <= 0 or not side:
            return _NO_LEVELS
        prices: list[Decimal] = side.keys()[-n:]
        prices.reverse()
        return tuple(zip(prices, map(side.__getitem__, prices), strict=True))

    def _top_asks(self, n: int) -> tuple[BookLevel, ...]:
        side = self._asks
        if n <= 0 or not side:
            return _NO_LEVELS
        prices: list[Decimal] = side.keys()[:n]
        return tuple(zip(prices, map(side.__getitem__, prices), strict=True))

    def _trim(self) -> None:
        """Drop the levels farthest from the best price beyond ``max_levels`` per side."""
        bids, asks, keep = self._bids, self._asks, self.max_levels
        while len(bids) > keep:
            bids.popitem(0)  # the lowest bid
        while len(asks) > keep:
            asks.popitem(-1)  # the highest ask


_set_existing = dict.__setitem__


def _update_side(side: Any, levels: Iterable[BookLevel]) -> None:
    """Set absolute quantities on one side; zero removes (absent levels are fine)."""
    for price, qty in levels:
        if qty:
            if price in side:
                # A known price: the plain dict store skips SortedDict's "new key?" test.
                _set_existing(side, price, qty)
            else:
                side[price] = qty
        elif price in side:
            del side[price]


def _level_dict(levels: Iterable[BookLevel]) -> dict[Decimal, Decimal]:
    out: dict[Decimal, Decimal] = {}
    for price, qty in levels:
        if qty:
            out[price] = qty
        else:
            out.pop(price, None)
    return out
