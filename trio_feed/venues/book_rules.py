"""Order-book continuity rules of the venues (`SequenceRules` implementations).

The book mechanics (buffering, joining a snapshot, replay, re-sync) are in
:mod:`trio_feed.core.book_sync`, once for every venue; what differs per venue is only which
update ids must line up, and that is here. ``L`` below is the snapshot's ``lastUpdateId``,
``U``/``u`` a diff's first and final update id, ``pu`` its previous final id.

Both rule sets are pure predicates on `DepthDiff` ids; they hold no state.
"""

from __future__ import annotations

from ..core.book_sync import SequenceRules
from ..events import DepthDiff

__all__ = ["ConsecutiveIdRules", "PreviousIdRules", "SequenceRules"]


class PreviousIdRules:
    """Binance USD-M futures: drop ``u < L``; the first applied has ``U <= L <= u``; then
    each diff's ``pu`` equals the previous diff's ``u``.

    Ids are not contiguous across messages on futures (``U`` is usually well above the
    previous ``u + 1``), so only the ``pu`` chain proves that nothing was missed. A diff with
    ``u == L`` is not stale but the bridge: re-applying its absolute quantities on a snapshot
    that already contains them changes nothing.
    """

    __slots__ = ()

    name = "previous-id"

    def stale(self, diff: DepthDiff, snapshot_id: int) -> bool:
        """``u < L``: the snapshot already contains the whole diff."""
        return diff.final_update_id < snapshot_id

    def bridges(self, diff: DepthDiff, snapshot_id: int) -> bool:
        """``U <= L <= u``."""
        return diff.first_update_id <= snapshot_id <= diff.final_update_id

    def follows(self, previous: DepthDiff, diff: DepthDiff) -> str | None:
        """None if ``pu`` equals the previous ``u``, else why not."""
        if diff.prev_update_id == previous.final_update_id:
            return None
        if (diff.first_update_id, diff.final_update_id) == (
            previous.first_update_id,
            previous.final_update_id,
        ):
            return f"diff {diff.first_update_id}..{diff.final_update_id} repeated"
        return f"pu {diff.prev_update_id} != previous u {previous.final_update_id}"


class ConsecutiveIdRules:
    """Binance spot: drop ``u <= L``; the first applied has ``U <= L + 1 <= u``; then each
    diff's ``U`` is the previous diff's ``u + 1``.

    The spot documentation also says the first event should have ``L`` within ``[U, u]``,
    but recorded data shows the first usable event starting at ``U == L + 1``: the per-event
    rule ``U <= L + 1 <= u`` covers both.
    """

    __slots__ = ()

    name = "consecutive-id"

    def stale(self, diff: DepthDiff, snapshot_id: int) -> bool:
        """``u <= L``: the snapshot already contains the whole diff."""
        return diff.final_update_id <= snapshot_id

    def bridges(self, diff: DepthDiff, snapshot_id: int) -> bool:
        """``U <= L + 1 <= u``."""
        return diff.first_update_id <= snapshot_id + 1 <= diff.final_update_id

    def follows(self, previous: DepthDiff, diff: DepthDiff) -> str | None:
        """None if ``U`` is the previous ``u + 1``, else why not."""
        expected = previous.final_update_id + 1
        if diff.first_update_id == expected:
            return None
        if (diff.first_update_id, diff.final_update_id) == (
            previous.first_update_id,
            previous.final_update_id,
        ):
            return f"diff {diff.first_update_id}..{diff.final_update_id} repeated"
        return f"U {diff.first_update_id} != previous u + 1 ({expected})"


#: Both, typed as the protocol: mypy proves that each class satisfies it.
_ALL: tuple[SequenceRules, ...] = (PreviousIdRules(), ConsecutiveIdRules())
