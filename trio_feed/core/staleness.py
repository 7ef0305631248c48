"""Which streams of one connection are stale: silent for longer than they should be.

A quiet stream is not always a dead one. The venue pushes some streams on a fixed cadence
whether or not anyone trades (klines, continuous klines, depth diffs, the mark price): a
silence longer than the heartbeat ``timeout`` means the stream is broken. Others push only
when the market moves (aggregated trades, the best bid and ask): an illiquid symbol's
aggTrade stream can be silent for minutes while its kline stream ticks every second. Calling
that stale would flap its quality score and resubscribe it for nothing, and a fixed longer
timeout would miss a busy stream that really stopped. So the two kinds are judged apart
(`StreamKind`):

* **CONTINUOUS**: stale iff ``silence > timeout``.
* **ACTIVITY**: the monitor keeps a moving average of the stream's message rate and allows
  ``clamp(quiet_factor / rate, timeout, max_quiet_factor * timeout)`` of silence (the most,
  30 x timeout, while the rate is unknown or 0). A stream is stale when its silence exceeds
  that, **or** when it exceeds ``timeout`` while other evidence (`StalenessMonitor.
  market_activity`: the symbol's kline stream counted more trades) shows that the market
  traded more than ``activity_grace`` seconds after the stream's last message: the market
  moved and the stream said nothing.

So a busy stream that stops is caught after ``timeout``; a stream that normally sees a message
a minute tolerates up to 30 x timeout of quiet, unless the kline stream proves trading
happened. With messages arriving as a Poisson process, ``quiet_factor = 10`` makes a false
alarm on a healthy stream about an e**-10 (1 in 22 000) event per silence.

The rate average
----------------
`StalenessMonitor.check` updates it from the count of messages since its previous update,
over the time since then. Two choices keep it honest:

* While a stream is silent the average is left alone, and the whole silence is folded in when
  the next message arrives. A silence in progress must not argue for itself: decaying the rate
  through it would raise the allowed silence as fast as the silence grows, and a stream that
  had a message every few seconds and stopped would go unnoticed for 30 x timeout.
* The weight of an update grows with the time it covers: ``alpha`` (0.3) per ``timeout``
  seconds, i.e. ``1 - (1 - alpha) ** (dt / timeout)``, so the estimate does not depend on how
  often the shell checks, and a market that turns quiet is learned within a few silences.
  The first estimate spreads its messages over at least ``timeout`` seconds (a few messages
  in the first seconds after subscribing say little about the rate).

The rate survives `StalenessMonitor.watch` of the same stream after a reconnect: the market's
pace did not change because our socket did.

The hot path
------------
The connection reader holds each stream's `StreamActivity` and does ``activity.count += 1``
per message, nothing else: no clock read. The monitor dates new messages itself, to the time
of the check (or `StalenessMonitor.silence` call) that first sees the count move, which errs on
the side of "not stale" by at most one check interval. A reader that has the receive time at
hand anyway may also set ``activity.last``; the monitor then uses it.

Pure: time comes in as ``now`` (seconds, local monotonic time); no clock, no trio.
"""

from __future__ import annotations

import enum

__all__ = ["StalenessMonitor", "StreamActivity", "StreamKind", "stream_kind"]


class StreamKind(enum.Enum):
    """How a stream's silence is judged (see the module docstring)."""

    #: kline, continuousKline, depth diff, markPrice: the venue pushes on a fixed cadence
    #: whether or not anyone trades, so a silence longer than ``timeout`` is stale.
    CONTINUOUS = "continuous"
    #: aggTrade, bookTicker: the venue pushes only when the market moves.
    ACTIVITY = "activity"


_ACTIVITY_CHANNELS = frozenset({"aggTrade", "bookTicker"})


def stream_kind(channel: str) -> StreamKind:
    """The kind of a channel: ``"aggTrade"`` and ``"bookTicker"`` are ACTIVITY, everything
    else CONTINUOUS. A wire stream name (``"btcusdt@aggTrade"``) is accepted too."""
    if "@" in channel:
        channel = channel.split("@", 2)[1]
    return StreamKind.ACTIVITY if channel in _ACTIVITY_CHANNELS else StreamKind.CONTINUOUS


class StreamActivity:
    """Per-stream counters the connection reader bumps on the hot path: ONE attribute
    read-modify per message (``activity.count += 1``), nothing else."""

    __slots__ = ("count", "last")

    def __init__(self) -> None:
        #: Messages since the stream was (re)watched.
        self.count = 0
        #: When its last message arrived, as far as the monitor knows (None before the first).
        self.last: float | None = None

    def __repr__(self) -> str:
        return f"StreamActivity(count={self.count}, last={self.last})"


class _Watched:
    """The monitor's state of one stream."""

    __slots__ = (
        "activity",
        "kind",
        "rate",
        "rate_count",
        "rate_time",
        "seen_count",
        "seen_last",
        "since",
        "symbol",
    )

    def __init__(self, activity: StreamActivity, symbol: str, kind: StreamKind) -> None:
        self.activity = activity
        self.symbol = symbol
        self.kind = kind
        #: Messages per second (moving average); None until the first estimate.
        self.rate: float | None = None
        self.since = 0.0
        self.seen_count = 0
        self.seen_last: float | None = None
        self.rate_count = 0
        self.rate_time = 0.0

    def restart(self, now: float) -> None:
        self.since = now
        self.activity.count = self.seen_count = self.rate_count = 0
        self.activity.last = self.seen_last = None
        self.rate_time = now

    def sync(self, now: float) -> None:
        """Date messages counted since the last look (to ``now``, unless the reader dated
        them itself)."""
        activity = self.activity
        count = activity.count
        if count != self.seen_count:
            if activity.last == self.seen_last:
                activity.last = now if self.seen_last is None else max(now, self.seen_last)
            self.seen_count = count
            self.seen_last = activity.last

    def heard(self) -> float:
        """When the stream last spoke (or was watched, if it never did since)."""
        last = self.activity.last
        return self.since if last is None else last


class StalenessMonitor:
    """The streams of one connection and how long each has been silent.

    ``timeout`` is the heartbeat timeout (``[heartbeat] timeout``); see the module docstring
    for the rules and what ``quiet_factor``, ``max_quiet_factor``, ``activity_grace`` and
    ``alpha`` (the rate average's weight per ``timeout`` seconds) do.
    """

    __slots__ = (
        "_evidence",
        "_streams",
        "activity_grace",
        "alpha",
        "max_quiet_factor",
        "quiet_factor",
        "timeout",
    )

    def __init__(
        self,
        timeout: float,
        *,
        quiet_factor: float = 10.0,
        max_quiet_factor: float = 30.0,
        activity_grace: float = 5.0,
        alpha: float = 0.3,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        if not quiet_factor > 0:
            raise ValueError(f"quiet_factor must be > 0, got {quiet_factor}")
        if not max_quiet_factor >= 1:
            raise ValueError(f"max_quiet_factor must be >= 1, got {max_quiet_factor}")
        if not activity_grace >= 0:
            raise ValueError(f"activity_grace must be >= 0, got {activity_grace}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.timeout = float(timeout)
        self.quiet_factor = quiet_factor
        self.max_quiet_factor = max_quiet_factor
        self.activity_grace = activity_grace
        self.alpha = alpha
        self._streams: dict[str, _Watched] = {}
        # symbol -> the latest time other streams showed that it traded
        self._evidence: dict[str, float] = {}

    # -- what is watched --------------------------------------------------------------------

    def watch(self, stream: str, symbol: str, kind: StreamKind, now: float) -> StreamActivity:
        """Start (or restart, after a reconnect or resubscribe) watching ``stream``, a stream
        of ``symbol``; its silence counts from ``now``. Returns the counters for the reader:
        the same object across restarts (reset to zero), so a reader holding it keeps
        counting into the live one. A restart keeps the learned rate unless the kind changed.
        """
        watched = self._streams.get(stream)
        if watched is None:
            watched = self._streams[stream] = _Watched(StreamActivity(), symbol, kind)
        elif watched.kind is not kind:
            watched.kind = kind
            watched.rate = None
        watched.symbol = symbol
        watched.restart(now)
        return watched.activity

    def unwatch(self, stream: str) -> None:
        """Stop watching ``stream`` (no-op if it is not watched)."""
        watched = self._streams.pop(stream, None)
        if watched is not None and not any(
            w.symbol == watched.symbol for w in self._streams.values()
        ):
            self._evidence.pop(watched.symbol, None)

    def activity(self, stream: str) -> StreamActivity | None:
        """The counters of ``stream``, or None if it is not watched."""
        watched = self._streams.get(stream)
        return None if watched is None else watched.activity

    def streams(self) -> list[str]:
        """The watched streams, sorted."""
        return sorted(self._streams)

    def kind(self, stream: str) -> StreamKind:
        """The kind ``stream`` is judged as (KeyError if it is not watched)."""
        return self._streams[stream].kind

    def rate(self, stream: str) -> float | None:
        """The moving average of the message rate of ``stream``, per second; None before
        the first estimate (KeyError if it is not watched)."""
        return self._streams[stream].rate

    # -- evidence and checks ----------------------------------------------------------------

    def market_activity(self, symbol: str, now: float) -> None:
        """Evidence from elsewhere (the symbol's kline stream reported more trades) that
        ``symbol`` traded at about ``now``."""
        if now > self._evidence.get(symbol, -float("inf")):
            self._evidence[symbol] = now

    def check(self, now: float) -> list[str]:
        """The names of the streams stale at ``now``, sorted; also updates the rates."""
        stale = []
        for name, watched in self._streams.items():
            watched.sync(now)
            self._update_rate(watched, now)
            if self._stale_reason(watched, now) is not None:
                stale.append(name)
        stale.sort()
        return stale

    def stale_reason(self, stream: str, now: float) -> str | None:
        """Why ``stream`` counts as stale at ``now`` (e.g. ``"silent 75 s, allowed 60 s"``,
        ``"silent 70 s while BTCUSDT traded"``), or None if it does not. Unlike `check` it
        leaves the rate alone. KeyError if it is not watched."""
        watched = self._streams[stream]
        watched.sync(now)
        return self._stale_reason(watched, now)

    def silence(self, stream: str, now: float) -> float:
        """Seconds since the last message of ``stream`` (or since `watch`, before the first);
        KeyError if it is not watched."""
        watched = self._streams[stream]
        watched.sync(now)
        return now - watched.heard()

    def allowed_silence(self, stream: str) -> float:
        """The silence ``stream`` may have before it is stale by its rate (``timeout`` for a
        CONTINUOUS stream); KeyError if it is not watched."""
        return self._allowed(self._streams[stream])

    # -- internals --------------------------------------------------------------------------

    def _allowed(self, watched: _Watched) -> float:
        timeout = self.timeout
        if watched.kind is StreamKind.CONTINUOUS:
            return timeout
        most = self.max_quiet_factor * timeout
        rate = watched.rate
        if rate is None or rate <= 0.0:
            return most
        return min(max(self.quiet_factor / rate, timeout), most)

    def _stale_reason(self, watched: _Watched, now: float) -> str | None:
        heard = watched.heard()
        silence = now - heard
        allowed = self._allowed(watched)
        if silence > allowed:
            return f"silent {silence:.0f} s, allowed {allowed:.0f} s"
        if (
            watched.kind is StreamKind.ACTIVITY
            and silence > self.timeout
            and self._evidence.get(watched.symbol, -float("inf")) > heard + self.activity_grace
        ):
            return f"silent {silence:.0f} s while {watched.symbol} traded"
        return None

    def _update_rate(self, watched: _Watched, now: float) -> None:
        """Fold the messages since the last update into the rate average; a silence in
        progress is left out until it ends (see the module docstring)."""
        count = watched.activity.count
        delta = count - watched.rate_count
        if delta < 0:  # the reader's counter was reset under us: start over from here
            watched.rate_count, watched.rate_time = count, now
            return
        elapsed = now - watched.rate_time
        if delta == 0 or elapsed <= 0.0:
            return
        watched.rate_count, watched.rate_time = count, now
        if watched.rate is None:
            watched.rate = delta / max(elapsed, self.timeout)
            return
        weight = 1.0 - (1.0 - self.alpha) ** (elapsed / self.timeout)
        watched.rate += weight * (delta / elapsed - watched.rate)
