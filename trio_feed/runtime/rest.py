"""The REST shell: executes the adapters' `RestRequest`s with httpx, within the venue's
rate rules.

One long-lived ``httpx.AsyncClient`` per venue, owned by the feed's nursery tree so it
closes with it. Every call goes through one gate, in FIFO order, before it is sent:

* **Bans.** After a 429 or 418 every call to the venue waits until ``Retry-After`` has
  passed (60 s when the header is missing or invalid), the call that got it included, which
  then tries again. Hammering a venue that said stop is how IPs get banned for days.
* **Weight.** The request's weight must fit the `WeightBudget` of the current UTC minute of
  exchange time; if it does not, the call waits for the next minute. Each response's
  used-weight header (``X-MBX-USED-WEIGHT-1M`` on Binance) corrects the count for other
  processes on the same IP.

The gate is a FIFO lock held while waiting, so a heavy request is not starved by light
ones arriving later and a crowd of waiting calls does not wake at once. A call given
``max_wait`` raises `RestRateLimited` at once when the wait would be longer.

5xx answers ("outcome unknown"), transport errors and timeouts are retried with the
jittered `BackoffPolicy`; other 4xx answers raise `RestError` at once, with Binance's error
``code`` and ``msg`` when the body has them.

httpx timeouts do not apply to mock transports, so every attempt is also bounded with
``trio.fail_after`` (which follows the virtual clock in tests).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from typing import NoReturn

import httpx
import orjson
import trio
from attrs import frozen

from ..core.backoff import Backoff, BackoffPolicy
from ..core.clock import MarketClock
from ..core.weight import WeightBudget
from ..errors import FeedError
from ..venues.base import RestRequest, VenueAdapter

__all__ = [
    "DEFAULT_RETRY",
    "ResponseHook",
    "RestClient",
    "RestError",
    "RestRateLimited",
    "RestResponse",
]

log = logging.getLogger("trio_feed.rest")

#: Retries of 5xx answers, transport errors and timeouts: 0.5 s, 1 s, 2 s, 4 s, 8 s (±10 %).
DEFAULT_RETRY = BackoffPolicy(base_delay=0.5, max_delay=30.0, jitter_ratio=0.1, max_retries=5)

#: Wait when a 429/418 carries no usable ``Retry-After``.
DEFAULT_RETRY_AFTER = 60.0

#: Called with ``(target, status, text)`` for every response received (for captures).
ResponseHook = Callable[[str, int, str], None]


class RestError(FeedError):
    """A REST call failed: transport error, timeout, or an error status.

    ``status`` is the HTTP status (None for transport errors and timeouts); ``code`` the
    venue's error code from the body (Binance ``{"code":-1121,"msg":"Invalid symbol."}``),
    when there is one.
    """

    def __init__(
        self,
        venue: str,
        target: str,
        status: int | None,
        detail: str,
        *,
        code: int | None = None,
    ) -> None:
        self.venue = venue
        self.target = target
        self.status = status
        self.code = code
        self.detail = detail
        super().__init__(f"{venue} {target}: {detail}")


class RestRateLimited(RestError):
    """The venue said stop (429/418), or our weight budget is spent, and the call may not
    wait that long (``max_wait``). ``until`` is the trio time at which it could proceed."""

    def __init__(self, venue: str, target: str, status: int | None, until: float) -> None:
        self.until = until
        super().__init__(venue, target, status, f"rate limited until t={until:.1f}")


@frozen(slots=True)
class RestResponse:
    """A successful REST answer."""

    status: int
    text: str


class RestClient:
    """Executes `RestRequest`s for one venue, within its rate rules (see the module
    docstring).

    Args:
      adapter: the venue (its name, weight header and weight limit).
      base_url: the REST base URL.
      transport: an httpx transport (a `MockTransport` in tests); None for the network.
      proxy: proxy URL, used only with the network transport. Never logged.
      timeout: seconds one attempt may take.
      clock: the venue's market clock, for the UTC-minute windows (default: the local wall
        clock, uncorrected).
      budget: the weight budget (default ``WeightBudget(adapter.rest_weight_per_minute)``).
      retry: backoff of 5xx/transport/timeout retries (default `DEFAULT_RETRY`).
      rng: randomness of the backoff jitter (seed it for reproducible tests).
      on_response: called with ``(target, status, text)`` for every response received.
    """

    def __init__(
        self,
        adapter: VenueAdapter,
        base_url: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        proxy: str | None = None,
        timeout: float = 10.0,
        clock: MarketClock | None = None,
        budget: WeightBudget | None = None,
        retry: BackoffPolicy | None = None,
        rng: random.Random | None = None,
        on_response: ResponseHook | None = None,
    ) -> None:
        self.adapter = adapter
        self.timeout = timeout
        self.clock = clock if clock is not None else MarketClock(_wall_ms)
        self.weight_budget = (
            budget if budget is not None else WeightBudget(adapter.rest_weight_per_minute)
        )
        self.retry_policy = retry if retry is not None else DEFAULT_RETRY
        self.on_response = on_response
        self._rng = rng if rng is not None else random.Random()
        self._client = httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            proxy=proxy if transport is None else None,
            timeout=httpx.Timeout(timeout),
            # TLS verification stays on; the environment's proxy variables are ignored so
            # that only the config decides where traffic goes.
            trust_env=False,
        )
        # trio.Lock hands over in FIFO order: calls pass the gate in the order they came.
        self._gate = trio.Lock()
        self._sent_any = False
        #: trio time until which the venue told us to stay away (429/418 Retry-After).
        self.banned_until: float | None = None
        self._ban_status: int | None = None
        #: Requests sent (attempts, retries included).
        self.requests = 0
        #: Failures: error answers, transport errors and timeouts (retried or not), and
        #: calls refused because the rate-limit wait exceeded their ``max_wait``.
        self.errors = 0
        #: Retries after 5xx answers, transport errors and timeouts.
        self.retries = 0
        #: Calls currently waiting for a ban to end or for the weight budget.
        self.waiting = 0
        self.last_error: str | None = None

    @property
    def used_weight(self) -> int | None:
        """The weight used in the current window as the budget counts it (None before the
        first request)."""
        if not self._sent_any:
            return None
        return self.weight_budget.used(self.clock.now_ms())

    @property
    def budget(self) -> int:
        """The weight we allow ourselves per window."""
        return self.weight_budget.budget

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def request(self, req: RestRequest, *, max_wait: float | None = None) -> RestResponse:
        """Execute ``req`` and return its 2xx/3xx answer.

        Waits out bans and the weight budget (raising `RestRateLimited` at once if that
        would take longer than ``max_wait`` seconds from the start of the call), retries
        5xx answers, transport errors and timeouts with backoff, and raises `RestError`
        for other 4xx answers or when the retries are spent.
        """
        venue, target = self.adapter.name, req.target
        deadline = None if max_wait is None else trio.current_time() + max_wait
        backoff = Backoff(self.retry_policy, self._rng)
        while True:
            await self._admit(req, deadline)
            self.requests += 1
            self._sent_any = True
            try:
                with trio.fail_after(self.timeout):
                    resp = await self._client.request(req.method, req.path, params=list(req.params))
                    text = resp.text
            except (httpx.HTTPError, trio.TooSlowError, OSError) as exc:
                await self._retry(backoff, RestError(venue, target, None, _describe(exc)))
                continue
            status = resp.status_code
            self._observe_weight(resp)
            if self.on_response is not None:
                self.on_response(target, status, text)
            if status in (418, 429):
                self._ban(req, status, resp.headers.get("Retry-After"))
                continue  # the gate waits the ban out (or raises for max_wait)
            if status >= 500:
                await self._retry(backoff, _status_error(venue, target, status, text))
                continue
            if status >= 400:
                error = _status_error(venue, target, status, text)
                self._failure(error, "no retry")
                raise error
            return RestResponse(status, text)

    # ---- the gate -----------------------------------------------------------------------

    async def _admit(self, req: RestRequest, deadline: float | None) -> None:
        """Wait until ``req`` may be sent (no ban, weight fits), then spend its weight."""
        self._check_deadline(req, deadline, self._wait(req))
        try:
            self._gate.acquire_nowait()
        except trio.WouldBlock:
            self.waiting += 1
            try:
                with trio.move_on_at(math.inf if deadline is None else deadline) as queued:
                    await self._gate.acquire()
            finally:
                self.waiting -= 1
            if queued.cancelled_caught:
                # Still queued behind other waiting calls at the deadline.
                assert deadline is not None
                self._refuse(req, deadline)
        try:
            while (wait := self._wait(req)) > 0:
                self._check_deadline(req, deadline, wait)
                self.waiting += 1
                try:
                    await trio.sleep(wait)
                finally:
                    self.waiting -= 1
            self.weight_budget.spend(req.weight, self.clock.now_ms())
        finally:
            self._gate.release()

    def _wait(self, req: RestRequest) -> float:
        """Seconds before ``req`` may be sent: the ban first, then the budget."""
        if self.banned_until is not None:
            left = self.banned_until - trio.current_time()
            if left > 0:
                return left
            self.banned_until = self._ban_status = None
        return self.weight_budget.delay(req.weight, self.clock.now_ms())

    def _check_deadline(self, req: RestRequest, deadline: float | None, wait: float) -> None:
        if deadline is not None and wait > 0 and trio.current_time() + wait > deadline:
            self._refuse(req, trio.current_time() + wait)

    def _refuse(self, req: RestRequest, until: float) -> NoReturn:
        exc = RestRateLimited(self.adapter.name, req.target, self._ban_status, until)
        self._failure(exc, "max_wait exceeded")
        raise exc

    def _ban(self, req: RestRequest, status: int, retry_after: str | None) -> None:
        wait = _retry_after(retry_after, default=DEFAULT_RETRY_AFTER)
        now = trio.current_time()
        until = now + wait
        exc = RestRateLimited(self.adapter.name, req.target, status, until)
        self.errors += 1
        self.last_error = str(exc)
        if self.banned_until is not None and self.banned_until > now:
            # Already banned (an answer to a request that was in flight): extend, one
            # warning per ban is enough.
            if until > self.banned_until:
                self.banned_until, self._ban_status = until, status
            return
        self.banned_until, self._ban_status = until, status
        log.warning(
            "%s answered %d to %s: no REST calls for %.1f s",
            self.adapter.name,
            status,
            req.target,
            wait,
        )

    def _observe_weight(self, resp: httpx.Response) -> None:
        header = self.adapter.rest_weight_header
        if header is None:
            return
        value = resp.headers.get(header)
        if value is None:
            return
        try:
            used = int(value)
        except ValueError:
            return
        self.weight_budget.observe(used, self.clock.now_ms())

    # ---- failures -----------------------------------------------------------------------

    async def _retry(self, backoff: Backoff, exc: RestError) -> None:
        """Sleep before the next attempt after ``exc``, or raise it when retries are spent."""
        delay = backoff.next_delay(trio.current_time())
        if delay is None:
            self._failure(exc, f"giving up after {backoff.retry} retries")
            raise exc
        self.retries += 1
        self._failure(exc, f"retry {backoff.retry} in {delay:.2f} s")
        await trio.sleep(delay)

    def _failure(self, exc: RestError, outcome: str) -> None:
        self.errors += 1
        self.last_error = str(exc)
        # The message holds the venue, the path and query, and a short description: never
        # the base URL or the proxy (which may carry credentials).
        log.warning("%s (%s)", exc, outcome)


def _status_error(venue: str, target: str, status: int, text: str) -> RestError:
    """A `RestError` for an error status, with Binance's ``code``/``msg`` if the body has them."""
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        code, msg = body.get("code"), body.get("msg")
        if isinstance(code, int) and not isinstance(code, bool) and isinstance(msg, str):
            return RestError(venue, target, status, f"HTTP {status} {code}: {msg}", code=code)
    return RestError(venue, target, status, f"HTTP {status}: {text[:200]}")


def _retry_after(value: str | None, *, default: float) -> float:
    """``Retry-After`` in seconds (the delta form, which Binance sends), else ``default``."""
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        return default
    return seconds if math.isfinite(seconds) and seconds >= 0 else default


def _describe(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    # httpx messages may contain the proxy URL, credentials included: keep the class name.
    return type(exc).__name__


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000
