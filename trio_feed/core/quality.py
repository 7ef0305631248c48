"""Per-symbol data-quality scores in [0, 1]: how much of a symbol's data is arriving, and
how much of it agreed with the exchange's REST record lately.

The model
---------
* A symbol has a set of streams (wire stream names, e.g. ``btcusdt@aggTrade``). Some may be
  *missing*: their connection is down, or the heartbeat found the stream stale.
* The streams set a **ceiling** on the score: 1.0 with no stream missing; 0.20 when all of
  the symbol's streams are missing; otherwise ``1.0 - 0.10 * missing``, but never below 0.30
  (1 missing: 0.90, 2: 0.80, 3: 0.70, ...). A symbol with a single stream that is missing has
  all of its streams missing: 0.20.
* A **REST mismatch** (a kline or book reconciliation that found our data different from the
  exchange's) lowers the score at once by ``mismatch_penalty`` (0.05), down to 0.0 at most.
* **Drops are immediate**: the moment a stream goes missing the score becomes
  ``min(score, ceiling)``.
* **Recovery is gradual**: the score climbs by ``recovery_per_second`` (0.002/s: 0.10 per
  50 s, 0.20 to 1.0 in 400 s) for the time that passes, never above the ceiling in force at
  the time, and the climb is applied only by `QualityBoard.tick`. A stream that comes back
  raises the ceiling, not the score, so a flapping stream cannot bounce straight back to
  1.0: it earns its score back second by second.
* Scores are rounded to 4 decimals; a change smaller than 0.0001 is no change.

The climb counts only time under the current ceiling: if a stream comes back at 110 s and
the board ticks at 100 s and 130 s, the tick at 130 s adds 20 s of recovery (0.04), not 30.
Time before a mismatch still counts, as if a tick had run just before it: from a score
well below the ceiling, ticks at 0 s and 30 s with a mismatch at 10 s give
``score + 0.02 - 0.05 + 0.04`` at 30 s.

Every change comes out as a `QualityUpdate` (the shell turns it into a ``quality`` event)
with a readable, specific reason. Reasons, by cause:

* ``"stream missing: btcusdt@aggTrade (stale)"`` from `QualityBoard.set_missing` (the part in
  brackets is the caller's ``why``; several streams at once, via
  `QualityBoard.set_missing_streams`: ``"streams missing: a, b (connection lost: c)"``);
* ``"REST mismatch: kline 1m @1767225600000: close: 1 != 2"`` from `QualityBoard.mismatch`
  (after the colon, the caller's ``what``);
* ``"streams delivering again: btcusdt@aggTrade"`` for the first climb after streams came
  back, then ``"recovering"`` for the climbs after it;
* ``"stream set changed; missing: btcusdt@aggTrade"`` when `QualityBoard.track` removed the
  streams that were still delivering (reported by the next `QualityBoard.tick`).

Pure: time comes in as ``now`` (seconds, any monotonic origin).
"""

from __future__ import annotations

from collections.abc import Iterable

from attrs import frozen

__all__ = [
    "ALL_MISSING_CEILING",
    "MIN_PARTIAL_CEILING",
    "PER_MISSING_STREAM",
    "QualityBoard",
    "QualityUpdate",
    "stream_ceiling",
]

#: The ceiling when every stream of a symbol is missing.
ALL_MISSING_CEILING = 0.20
#: What each missing stream takes off the ceiling while some still deliver...
PER_MISSING_STREAM = 0.10
#: ...down to this.
MIN_PARTIAL_CEILING = 0.30

_DECIMALS = 4


def stream_ceiling(streams: int, missing: int) -> float:
    """The highest score a symbol with ``streams`` streams, ``missing`` of them missing, can
    have: 1.0, 0.90, 0.80, ... down to 0.30 while some stream delivers, 0.20 when none does."""
    if missing <= 0:
        return 1.0
    if missing >= streams:
        return ALL_MISSING_CEILING
    return round(max(MIN_PARTIAL_CEILING, 1.0 - PER_MISSING_STREAM * missing), _DECIMALS)


@frozen(slots=True)
class QualityUpdate:
    """One change of one symbol's score; the shell turns it into a ``quality`` event."""

    symbol: str
    #: The new score, in [0, 1], rounded to 4 decimals.
    score: float
    #: Why it changed, e.g. ``"stream missing: btcusdt@aggTrade (stale)"`` (see the module
    #: docstring for every form).
    reason: str


class _Symbol:
    """The board's state of one symbol."""

    __slots__ = ("credit", "last", "missing", "raw", "reason", "reported", "returning", "streams")

    def __init__(self, streams: frozenset[str], now: float) -> None:
        self.streams = streams
        self.missing: set[str] = set()
        #: Streams that came back since the last update; named by the next climb's reason.
        self.returning: set[str] = set()
        #: The score before rounding (rounding each step would lose slow climbs).
        self.raw = 1.0
        #: Recovery earned since the last tick but not applied yet (only tick() raises the
        #: score); raw + credit never exceeds the ceiling.
        self.credit = 0.0
        #: Until when recovery has been counted.
        self.last = now
        self.reason = "initial"
        #: The score of the last update that went out (or the initial 1.0).
        self.reported = 1.0

    @property
    def ceiling(self) -> float:
        return stream_ceiling(len(self.streams), len(self.missing))

    @property
    def score(self) -> float:
        return round(self.raw, _DECIMALS)


def _names(streams: Iterable[str]) -> str:
    return ", ".join(sorted(streams))


class QualityBoard:
    """The quality scores of every tracked symbol (see the module docstring for the model).

    Calls about symbols or streams the board does not track are ignored (they return None):
    streams come and go while the feed runs, and a late report about one that was just
    unsubscribed is not an error.
    """

    __slots__ = ("_symbols", "mismatch_penalty", "recovery_per_second")

    def __init__(
        self, *, mismatch_penalty: float = 0.05, recovery_per_second: float = 0.002
    ) -> None:
        if not 0.0 <= mismatch_penalty <= 1.0:
            raise ValueError(f"mismatch_penalty must be in [0, 1], got {mismatch_penalty}")
        if not recovery_per_second >= 0.0:
            raise ValueError(f"recovery_per_second must be >= 0, got {recovery_per_second}")
        #: What one REST mismatch takes off the score.
        self.mismatch_penalty = mismatch_penalty
        #: How fast the score climbs back towards its ceiling, per second.
        self.recovery_per_second = recovery_per_second
        self._symbols: dict[str, _Symbol] = {}

    # -- tracking ---------------------------------------------------------------------------

    def track(self, symbol: str, streams: Iterable[str], now: float) -> None:
        """Set or replace the stream set of ``symbol``.

        A new symbol starts at 1.0 with nothing missing. For a tracked one, missing streams
        that are no longer in the set are forgotten; if the change lowers the ceiling (the
        streams still delivering were removed) the score drops at once and the next `tick`
        reports it; if it raises the ceiling the score climbs from the next `tick` on.
        """
        stream_set = frozenset(streams)
        state = self._symbols.get(symbol)
        if state is None:
            self._symbols[symbol] = _Symbol(stream_set, now)
            return
        self._accrue(state, now)
        state.streams = stream_set
        state.missing &= stream_set
        state.returning &= stream_set
        before = state.score
        self._cap(state)
        if state.score != before:
            state.reason = f"stream set changed; missing: {_names(state.missing)}"

    def untrack(self, symbol: str) -> None:
        """Forget ``symbol`` (no-op if it is not tracked)."""
        self._symbols.pop(symbol, None)

    def symbols(self) -> list[str]:
        """The tracked symbols, sorted."""
        return sorted(self._symbols)

    def streams(self, symbol: str) -> tuple[str, ...]:
        """The stream set of ``symbol``, sorted (KeyError if it is not tracked)."""
        return tuple(sorted(self._symbols[symbol].streams))

    # -- reading ----------------------------------------------------------------------------

    def score(self, symbol: str) -> float:
        """The current score of ``symbol``, rounded to 4 decimals (KeyError if untracked)."""
        return self._symbols[symbol].score

    def reason(self, symbol: str) -> str:
        """Why the score of ``symbol`` last changed (``"initial"`` before any change)."""
        return self._symbols[symbol].reason

    def missing(self, symbol: str) -> tuple[str, ...]:
        """The missing streams of ``symbol``, sorted."""
        return tuple(sorted(self._symbols[symbol].missing))

    def ceiling(self, symbol: str) -> float:
        """The highest score ``symbol`` can have with its streams as they are now."""
        return self._symbols[symbol].ceiling

    # -- changes ----------------------------------------------------------------------------

    def set_missing(
        self, symbol: str, stream: str, missing: bool, why: str, now: float
    ) -> QualityUpdate | None:
        """Mark one stream of ``symbol`` missing (``why``: ``"stale"``, ``"connection lost:
        <id>"``...) or present again; the update if the score changed, else None.

        Present again never raises the score by itself (only `tick` does): it returns None
        and the next climb's reason names the stream.
        """
        return self.set_missing_streams(symbol, (stream,), missing, why, now)

    def set_missing_streams(
        self, symbol: str, streams: Iterable[str], missing: bool, why: str, now: float
    ) -> QualityUpdate | None:
        """`set_missing` for several streams of one symbol at once (a connection that
        carried them was lost): one update, naming them all."""
        state = self._symbols.get(symbol)
        if state is None:
            return None
        if missing:
            changed = {s for s in streams if s in state.streams and s not in state.missing}
        else:
            changed = {s for s in streams if s in state.missing}
        if not changed:
            return None
        self._accrue(state, now)  # the time before the change counts under the old ceiling
        if not missing:
            state.missing -= changed
            state.returning |= changed
            return None
        state.missing |= changed
        state.returning -= changed
        before = state.score
        self._cap(state)
        if state.score == before:
            return None
        state.returning.clear()  # this drop's reason is the news now, not the earlier return
        plural = "streams" if len(changed) > 1 else "stream"
        suffix = f" ({why})" if why else ""
        return self._report(state, symbol, f"{plural} missing: {_names(changed)}{suffix}")

    def mismatch(self, symbol: str, what: str, now: float) -> QualityUpdate | None:
        """A REST reconciliation of ``symbol`` found ``what`` (e.g. ``"kline 1m
        @1767225600000: close: 1 != 2"``) different: the score drops by `mismatch_penalty`
        at once. The update, or None if the score was already 0 (or ``symbol`` untracked)."""
        state = self._symbols.get(symbol)
        if state is None:
            return None
        self._accrue(state, now)
        before = state.score
        # The credit stays: raw + credit only got further below the ceiling.
        state.raw = max(0.0, state.raw - self.mismatch_penalty)
        if state.score == before:
            return None
        return self._report(state, symbol, f"REST mismatch: {what}")

    def tick(self, now: float) -> list[QualityUpdate]:
        """Apply the recovery earned up to ``now``; the updates of the symbols whose score
        changed (or changed since their last update, see `track`), in symbol order."""
        updates: list[QualityUpdate] = []
        for symbol in sorted(self._symbols):
            state = self._symbols[symbol]
            self._accrue(state, now)
            if state.credit > 0.0:
                state.raw = min(state.raw + state.credit, state.ceiling)
                state.credit = 0.0
            if state.score == state.reported:
                continue
            if state.score > state.reported:
                returning = state.returning
                state.reason = (
                    f"streams delivering again: {_names(returning)}" if returning else "recovering"
                )
                returning.clear()
            updates.append(self._report(state, symbol, state.reason))
        return updates

    # -- internals --------------------------------------------------------------------------

    def _accrue(self, state: _Symbol, now: float) -> None:
        """Earn the recovery from ``state.last`` to ``now`` under the current ceiling."""
        elapsed = now - state.last
        if elapsed <= 0.0:  # a time from the past earns nothing (and moves nothing back)
            return
        state.last = now
        room = state.ceiling - state.raw
        if room > 0.0:
            state.credit = min(state.credit + self.recovery_per_second * elapsed, room)

    @staticmethod
    def _cap(state: _Symbol) -> None:
        """Drop the score to the ceiling if it is above (drops are immediate)."""
        ceiling = state.ceiling
        state.raw = min(state.raw, ceiling)
        state.credit = max(0.0, min(state.credit, ceiling - state.raw))

    @staticmethod
    def _report(state: _Symbol, symbol: str, reason: str) -> QualityUpdate:
        state.reason = reason
        state.reported = state.score
        return QualityUpdate(symbol, state.score, reason)
