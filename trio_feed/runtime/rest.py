"""The REST shell: executes the adapters' `RestRequest`s with httpx.

One long-lived ``httpx.AsyncClient`` per venue, owned by the feed's nursery tree so it
closes with it. The client keeps the venue's rate rules visible: it records the weight the
venue reports as used, and after a 429 or 418 it refuses every call to that venue until
``Retry-After`` has passed (hammering a venue that said stop is how IPs get banned).

httpx timeouts do not apply to mock transports, so every call is also bounded with
``trio.fail_after`` (which follows the virtual clock in tests).
"""

from __future__ import annotations

import logging
import math
from typing import NoReturn

import httpx
import trio
from attrs import frozen

from ..errors import FeedError
from ..venues.base import RestRequest, VenueAdapter

__all__ = ["RestClient", "RestError", "RestRateLimited", "RestResponse"]

log = logging.getLogger("trio_feed.rest")


class RestError(FeedError):
    """A REST call failed: transport error, timeout, or an error status."""

    def __init__(self, venue: str, target: str, status: int | None, detail: str) -> None:
        self.venue = venue
        self.target = target
        self.status = status
        super().__init__(f"{venue} {target}: {detail}")


class RestRateLimited(RestError):
    """The venue said stop (429/418), or we are still inside its Retry-After."""

    def __init__(self, venue: str, target: str, status: int | None, until: float) -> None:
        self.until = until
        super().__init__(venue, target, status, f"rate limited until t={until:.1f}")


@frozen(slots=True)
class RestResponse:
    """A successful REST answer."""

    status: int
    text: str


class RestClient:
    """Executes `RestRequest`s for one venue."""

    def __init__(
        self,
        adapter: VenueAdapter,
        base_url: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        proxy: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.adapter = adapter
        self.timeout = timeout
        self._client = httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            proxy=proxy if transport is None else None,
            timeout=httpx.Timeout(timeout),
            # TLS verification stays on; the environment's proxy variables are ignored so
            # that only the config decides where traffic goes.
            trust_env=False,
        )
        #: Weight the venue reported as used in its current window.
        self.used_weight: int | None = None
        #: trio time until which the venue told us to stay away (429/418 Retry-After).
        self.banned_until: float | None = None
        self.requests = 0
        self.errors = 0
        self.last_error: str | None = None

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(self, req: RestRequest) -> RestResponse:
        """Execute ``req``. Raises `RestRateLimited` or `RestError`; never hangs longer
        than ``timeout``."""
        venue = self.adapter.name
        now = trio.current_time()
        if self.banned_until is not None:
            if now < self.banned_until:
                raise RestRateLimited(venue, req.target, None, self.banned_until)
            self.banned_until = None
        self.requests += 1
        try:
            with trio.fail_after(self.timeout):
                resp = await self._client.request(req.method, req.path, params=list(req.params))
                text = resp.text
        except (httpx.HTTPError, trio.TooSlowError, OSError) as exc:
            self._fail(RestError(venue, req.target, None, _describe(exc)))
        header = self.adapter.rest_weight_header
        if header is not None and header in resp.headers:
            try:
                self.used_weight = int(resp.headers[header])
            except ValueError:
                pass
        status = resp.status_code
        if status in (418, 429):
            wait = _retry_after(resp.headers.get("Retry-After"), default=60.0)
            self.banned_until = trio.current_time() + wait
            log.warning(
                "%s answered %d to %s: no REST calls for %.0f s", venue, status, req.target, wait
            )
            self._fail(RestRateLimited(venue, req.target, status, self.banned_until))
        if status >= 400:
            self._fail(RestError(venue, req.target, status, f"HTTP {status}: {text[:200]}"))
        return RestResponse(status, text)

    def _fail(self, exc: RestError) -> NoReturn:
        self.errors += 1
        self.last_error = str(exc)
        raise exc


def _retry_after(value: str | None, *, default: float) -> float:
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
