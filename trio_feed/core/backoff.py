"""Reconnect backoff: exponential, capped, jittered, with a retry budget that heals.

``delay = min(base_delay * 2**retry, max_delay) * (1 + u)``, ``u`` uniform in
``[-jitter_ratio, +jitter_ratio]`` from an injected ``random.Random`` (seed it for
reproducible tests). ``retry`` counts consecutive failed attempts, starting at 0 for the
first reconnect. After ``max_retries`` of them (0 = never give up) the connection FAILs.

When is a connection "healthy" enough to reset the count? Only after it has stayed
SUBSCRIBED for ``stable_after`` seconds, ``max(max_delay, 2 * ping_interval)`` by
default (60 s with the contract defaults). Resetting as soon as the socket opens would let
a venue that accepts and then drops us at once (an IP ban, a bad stream, an overloaded
edge) pin the delay at ``base_delay`` and turn the loop into a reconnect storm that burns
the venue's connection-attempt budget (300 per 5 minutes per IP on Binance). A session
that outlived the longest backoff and two full ping round-trips is not flapping.
"""

from __future__ import annotations

import random

from attrs import frozen

__all__ = ["Backoff", "BackoffPolicy"]

_MAX_EXPONENT = 60  # 2**60 * any sane base_delay is far past any max_delay


@frozen(slots=True)
class BackoffPolicy:
    """The numbers behind a `Backoff`."""

    base_delay: float = 1.0
    max_delay: float = 60.0
    jitter_ratio: float = 0.1
    max_retries: int = 10
    stable_after: float = 60.0

    def __attrs_post_init__(self) -> None:
        if self.base_delay <= 0 or self.max_delay < self.base_delay:
            raise ValueError("need 0 < base_delay <= max_delay")
        if not 0 <= self.jitter_ratio < 1:
            raise ValueError("need 0 <= jitter_ratio < 1")
        if self.max_retries < 0 or self.stable_after < 0:
            raise ValueError("need max_retries >= 0 and stable_after >= 0")

    def delay(self, retry: int, rng: random.Random) -> float:
        """The delay before reconnect number ``retry`` (0-based), jittered by ``rng``."""
        raw = min(self.base_delay * 2.0 ** min(retry, _MAX_EXPONENT), self.max_delay)
        return raw * (1.0 + rng.uniform(-self.jitter_ratio, self.jitter_ratio))


class Backoff:
    """The retry state of one connection. Pure: time comes in as ``now`` (seconds)."""

    __slots__ = ("_healthy_since", "policy", "retry", "rng")

    def __init__(self, policy: BackoffPolicy, rng: random.Random) -> None:
        self.policy = policy
        self.rng = rng
        #: Consecutive failed attempts so far (the ``retry`` of ``state`` events).
        self.retry = 0
        self._healthy_since: float | None = None

    def healthy(self, now: float) -> None:
        """The connection reached SUBSCRIBED at ``now``."""
        self._healthy_since = now

    def reset_if_stable(self, now: float) -> bool:
        """Reset the retry count if the connection has been healthy for ``stable_after``.

        Called on loss (and may be called periodically while healthy, so ``status()``
        shows the healed count). Returns whether it reset.
        """
        since = self._healthy_since
        if since is not None and now - since >= self.policy.stable_after and self.retry:
            self.retry = 0
            return True
        return False

    def next_delay(self, now: float) -> float | None:
        """The connection was lost at ``now``: the delay before the next attempt, or None
        when the retry budget is spent and the connection should FAIL."""
        self.reset_if_stable(now)
        self._healthy_since = None
        max_retries = self.policy.max_retries
        if max_retries and self.retry >= max_retries:
            return None
        delay = self.policy.delay(self.retry, self.rng)
        self.retry += 1
        return delay
