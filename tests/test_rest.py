"""RestClient against the fake exchange and hand-written transports, in virtual time: bans
(429/418, Retry-After) hold every call, the weight budget holds per UTC minute, 5xx /
transport errors / timeouts are retried with backoff, other 4xx fail at once."""

from __future__ import annotations

import errno
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from trio_feed.core.backoff import BackoffPolicy
from trio_feed.core.clock import MarketClock
from trio_feed.core.weight import WINDOW_MS, WeightBudget
from trio_feed.runtime.rest import (
    DEFAULT_RETRY,
    RestClient,
    RestError,
    RestRateLimited,
)
from trio_feed.testing import FakeExchange
from trio_feed.venues.base import RestRequest
from trio_feed.venues.binance_usdm import BinanceUsdmAdapter

ADAPTER = BinanceUsdmAdapter()
BASE = "https://fapi.binance.com"
T0 = 1_767_225_600_000  # the fake's default start: 2026-01-01T00:00Z, a minute boundary
TIME = ADAPTER.server_time_request()
KLINES = ADAPTER.klines_request("BTCUSDT", "1m", limit=10)
RETRY = BackoffPolicy(base_delay=0.5, max_delay=30.0, jitter_ratio=0.1, max_retries=5)

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


@asynccontextmanager
async def open_client(
    transport: httpx.AsyncBaseTransport, clock: MarketClock, **kwargs: Any
) -> AsyncIterator[RestClient]:
    kwargs.setdefault("rng", random.Random(5))
    kwargs.setdefault("retry", RETRY)
    rest = RestClient(ADAPTER, BASE, transport=transport, clock=clock, **kwargs)
    try:
        yield rest
    finally:
        await rest.aclose()


def fake_client(fake: FakeExchange, **kwargs: Any) -> AbstractAsyncContextManager[RestClient]:
    """A client of ``fake``'s REST API, on the fake's exchange clock."""
    return open_client(fake.rest_transport, MarketClock(fake.now_ms), **kwargs)


def trio_clock(offset_ms: int) -> MarketClock:
    """Exchange time that starts ``offset_ms`` into a UTC minute and follows trio time."""
    start = trio.current_time()
    return MarketClock(lambda: T0 + offset_ms + round((trio.current_time() - start) * 1000))


def rest_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "trio_feed.rest" and r.levelno == logging.WARNING
    ]


def server_time(text: str) -> int:
    return ADAPTER.parse_server_time(text)


# ---- bans: 429 / 418 / Retry-After -----------------------------------------------------------


async def test_429_retry_after_holds_every_call_until_it_has_passed(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeExchange(seed=1, symbols=["BTCUSDT"]) as fake, fake_client(fake) as rest:
        fake.rest_fault("/fapi/v1/time", 429, retry_after=7)
        answers: list[int] = []

        async def call(req: RestRequest, delay: float) -> None:
            await trio.sleep(delay)
            answers.append((await rest.request(req)).status)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, TIME, 0.0)
            for i in range(4):  # other tasks arrive during the ban
                nursery.start_soon(call, KLINES, 1.3 + 0.71 * i)
            await trio.sleep(5.0)
            assert rest.waiting == 5  # the 429'd call and the four newcomers
            assert len(fake.rest_requests) == 1
            assert rest.banned_until is not None
        first, *later = fake.rest_requests
    assert first.status == 429
    assert len(later) == 5
    assert all(r.time >= first.time + 7_000 for r in later)
    assert [r.status for r in later] == [200] * 5
    assert answers == [200] * 5  # the call that got the 429 tried again and succeeded
    assert rest.retries == 0  # a ban is not a 5xx retry
    assert rest.waiting == 0
    assert rest.banned_until is None
    [warning] = rest_warnings(caplog)  # one warning per ban
    assert "429" in warning and "7.0 s" in warning


async def test_418_ban_holds_every_call(autojump_clock: trio.testing.MockClock) -> None:
    async with FakeExchange(seed=2, symbols=["BTCUSDT"]) as fake, fake_client(fake) as rest:
        fake.rest_fault("/fapi/v1/klines", 418, retry_after=125)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rest.request, KLINES)
            await trio.sleep(2.3)
            nursery.start_soon(rest.request, TIME)
            await trio.sleep(100.0)
            assert len(fake.rest_requests) == 1
        first, *later = fake.rest_requests
    assert first.status == 418
    assert sorted(r.path for r in later) == ["/fapi/v1/klines", "/fapi/v1/time"]
    assert all(r.time >= first.time + 125_000 and r.status == 200 for r in later)
    assert rest.errors == 1
    assert rest.last_error is not None and "rate limited" in rest.last_error


async def test_missing_retry_after_means_60_seconds(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeExchange(seed=3, symbols=["BTCUSDT"]) as fake, fake_client(fake) as rest:
        fake.rest_fault("/fapi/v1/time", 429)  # no Retry-After header
        response = await rest.request(TIME)
        first, second = fake.rest_requests
    assert (first.status, second.status, response.status) == (429, 200, 200)
    assert 60_000 <= second.time - first.time < 60_100
    [warning] = rest_warnings(caplog)
    assert "60.0 s" in warning


async def test_invalid_retry_after_means_60_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(trio.current_time())
        if len(sent) == 1:
            return httpx.Response(429, headers={"Retry-After": "soon"}, json={"code": -1003})
        return httpx.Response(200, json={"serverTime": 1})

    async with open_client(httpx.MockTransport(handler), trio_clock(1_000)) as rest:
        await rest.request(TIME)
    assert sent[1] - sent[0] == pytest.approx(60.0)


# ---- max_wait --------------------------------------------------------------------------------


async def test_max_wait_raises_at_once_during_a_ban(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with FakeExchange(seed=4, symbols=["BTCUSDT"]) as fake, fake_client(fake) as rest:
        fake.rest_fault("/fapi/v1/time", 429, retry_after=30)
        # The call that gets the 429 with a short max_wait gives up right after the answer.
        with pytest.raises(RestRateLimited) as info:
            await rest.request(TIME, max_wait=5.0)
        assert info.value.status == 429
        await trio.sleep(3.0)
        before, calls = trio.current_time(), len(fake.rest_requests)
        with pytest.raises(RestRateLimited) as info:
            await rest.request(KLINES, max_wait=20.0)
        assert trio.current_time() == before  # no waiting at all
        assert len(fake.rest_requests) == calls == 1  # nothing sent
        assert rest.banned_until is not None
        assert info.value.until == pytest.approx(rest.banned_until)
        # A call that may wait long enough waits out the ban and succeeds.
        assert (await rest.request(KLINES, max_wait=40.0)).status == 200
        assert fake.rest_requests[-1].time >= fake.rest_requests[0].time + 30_000
    assert rest.errors == 3  # the 429 and the two refusals


async def test_max_wait_raises_at_once_when_the_budget_is_spent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(trio.current_time())
        return httpx.Response(200, headers={"X-MBX-USED-WEIGHT-1M": "2300"}, json={})

    async with open_client(httpx.MockTransport(handler), trio_clock(10_000)) as rest:
        await rest.request(TIME)
        before = trio.current_time()
        with pytest.raises(RestRateLimited) as info:
            await rest.request(TIME, max_wait=30.0)  # the next minute is 50 s away
        assert trio.current_time() == before
        assert info.value.status is None
        assert info.value.until == pytest.approx(before + 50.05)
    assert len(sent) == 1


# ---- the weight budget ---------------------------------------------------------------------


def weight_per_window(fake: FakeExchange) -> Counter[int]:
    per_window: Counter[int] = Counter()
    for r in fake.rest_requests:
        per_window[r.time // WINDOW_MS] += r.weight
    return per_window


@pytest.mark.parametrize("start", [30.0137, 59.997])
async def test_200_concurrent_agg_trades_stay_within_the_budget_per_minute(
    autojump_clock: trio.testing.MockClock, start: float
) -> None:
    # 200 x weight 20 = 4000 > the 2160 budget of a minute (90 % of 2400). Starting at
    # 59.997 s, the first batch is sent in one minute and lands in the next (5 ms latency):
    # the used-weight headers must hold the second batch for another minute.
    req = ADAPTER.agg_trades_request("BTCUSDT", limit=5)
    assert req.weight == 20
    async with FakeExchange(seed=5, symbols=["BTCUSDT"]) as fake:
        await trio.sleep(start)
        async with fake_client(fake) as rest, trio.open_nursery() as nursery:
            for _ in range(200):
                nursery.start_soon(rest.request, req)
        assert rest.budget == 2160
    statuses = Counter(r.status for r in fake.rest_requests)
    assert statuses == {200: 200}  # no 429 and no 418
    per_window = weight_per_window(fake)
    assert max(per_window.values()) <= 2160
    assert len(per_window) == 2  # the budget made the rest wait for a later minute
    later = min(per_window)
    assert per_window[later] == 2160


async def test_used_weight_header_makes_the_next_request_wait_for_the_next_minute(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(trio.current_time())
        used = "2300" if len(sent) == 1 else "1"
        return httpx.Response(200, headers={"X-MBX-USED-WEIGHT-1M": used}, json={})

    async with open_client(httpx.MockTransport(handler), trio_clock(10_000)) as rest:
        assert rest.used_weight is None
        await rest.request(TIME)
        assert rest.used_weight == 2300  # other processes on the IP used most of it
        await rest.request(TIME)
        assert rest.used_weight == 1  # the new minute
    # 10 s into the minute: the second request waits for the next one (plus the margin).
    assert sent[1] - sent[0] == pytest.approx(50.05, abs=0.002)


async def test_waiting_calls_pass_in_arrival_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A heavy request that must wait for the next minute is not overtaken by light ones
    # that would still fit this minute.
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(int(request.url.params["w"]))
        return httpx.Response(200, json={})

    def req(weight: int) -> RestRequest:
        return RestRequest("GET", "/fapi/v1/ping", (("w", str(weight)),), weight)

    budget = WeightBudget(100, fraction=1.0)
    transport = httpx.MockTransport(handler)
    async with open_client(transport, trio_clock(1_000), budget=budget) as rest:
        await rest.request(req(90))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rest.request, req(50))
            await trio.sleep(1.1)
            for _ in range(2):
                nursery.start_soon(rest.request, req(5))
                await trio.sleep(0.3)
            assert rest.waiting == 3
    assert seen == [90, 50, 5, 5]


# ---- retries: 5xx, transport errors, timeouts ------------------------------------------------


async def test_5xx_is_retried_with_backoff_and_the_caller_gets_the_success(
    autojump_clock: trio.testing.MockClock,
) -> None:
    twin = random.Random(11)
    d0, d1 = RETRY.delay(0, twin), RETRY.delay(1, twin)
    hooked: list[tuple[str, int]] = []
    async with (
        FakeExchange(seed=6, symbols=["BTCUSDT"]) as fake,
        fake_client(
            fake, rng=random.Random(11), on_response=lambda t, s, _: hooked.append((t, s))
        ) as rest,
    ):
        fake.rest_fault("/fapi/v1/time", 503, count=2)
        response = await rest.request(TIME)
        times = [r.time for r in fake.rest_requests]
    assert [r.status for r in fake.rest_requests] == [503, 503, 200]
    assert server_time(response.text) == times[2]
    # Each attempt lands 5 ms (the fake's latency) after it was sent.
    assert times[1] - times[0] == pytest.approx(5 + d0 * 1000, abs=1.5)
    assert times[2] - times[1] == pytest.approx(5 + d1 * 1000, abs=1.5)
    assert (rest.retries, rest.errors, rest.requests) == (2, 2, 3)
    assert hooked == [("/fapi/v1/time", 503), ("/fapi/v1/time", 503), ("/fapi/v1/time", 200)]


async def test_a_5xx_storm_gives_up_after_max_retries(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeExchange(seed=7, symbols=["BTCUSDT"]) as fake, fake_client(fake) as rest:
        fake.rest_fault("/fapi/v1/time", 500, count=100)
        with pytest.raises(RestError) as info:
            await rest.request(TIME)
        assert type(info.value) is RestError
        assert fake.rest_calls["/fapi/v1/time"] == 1 + RETRY.max_retries
    assert info.value.status == 500
    assert info.value.code == -1000
    assert rest.retries == RETRY.max_retries
    assert rest.errors == 1 + RETRY.max_retries
    assert rest.last_error is not None and "HTTP 500" in rest.last_error
    warnings = rest_warnings(caplog)
    assert len(warnings) == 1 + RETRY.max_retries
    assert "giving up after 5 retries" in warnings[-1]


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("connection refused"), OSError(errno.ECONNRESET, "reset by peer")],
    ids=["httpx", "oserror"],
)
async def test_a_connection_error_is_retried(
    autojump_clock: trio.testing.MockClock, error: Exception
) -> None:
    sent: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(trio.current_time())
        if len(sent) == 1:
            raise error
        return httpx.Response(200, json={"serverTime": 42})

    async with open_client(
        httpx.MockTransport(handler), trio_clock(1_000), rng=random.Random(3)
    ) as rest:
        response = await rest.request(TIME)
    assert server_time(response.text) == 42
    assert sent[1] - sent[0] == pytest.approx(RETRY.delay(0, random.Random(3)))
    assert (rest.retries, rest.errors) == (1, 1)
    assert rest.last_error is not None and type(error).__name__ in rest.last_error


async def test_a_timeout_is_retried(autojump_clock: trio.testing.MockClock) -> None:
    sent: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sent.append(trio.current_time())
        if len(sent) == 1:
            await trio.sleep(25.0)  # longer than the client's 10 s timeout
        return httpx.Response(200, json={"serverTime": 7})

    async with open_client(
        httpx.MockTransport(handler), trio_clock(1_000), timeout=10.0, rng=random.Random(4)
    ) as rest:
        response = await rest.request(TIME)
    assert server_time(response.text) == 7
    assert sent[1] - sent[0] == pytest.approx(10.0 + RETRY.delay(0, random.Random(4)))
    assert rest.retries == 1
    assert rest.last_error is not None and "timed out" in rest.last_error


# ---- other 4xx: no retry ---------------------------------------------------------------------


async def test_a_400_with_a_binance_error_body_fails_at_once_with_its_code(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bad = ADAPTER.klines_request("NOPEUSDT", "1m", limit=10)
    async with FakeExchange(seed=8, symbols=["BTCUSDT"]) as fake, fake_client(fake) as rest:
        with pytest.raises(RestError) as info:
            await rest.request(bad)
        # The fake says a rejected request still costs weight; we counted it too.
        assert rest.used_weight == bad.weight
        await trio.sleep(120.0)  # no retry comes later either
        assert fake.rest_calls["/fapi/v1/klines"] == 1
    assert type(info.value) is RestError
    assert (info.value.status, info.value.code) == (400, -1121)
    assert "Invalid symbol." in str(info.value) and "-1121" in str(info.value)
    assert (rest.retries, rest.errors) == (0, 1)


async def test_a_4xx_without_a_json_body_keeps_the_first_200_characters(
    autojump_clock: trio.testing.MockClock,
) -> None:
    body = "<" + "x" * 199 + "y" * 100

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, text=body)

    async with open_client(httpx.MockTransport(handler), trio_clock(1_000)) as rest:
        with pytest.raises(RestError) as info:
            await rest.request(TIME)
    assert info.value.code is None and info.value.status == 403
    assert body[:200] in str(info.value) and "y" not in str(info.value).split(": ", 1)[1]


# ---- defaults --------------------------------------------------------------------------------


async def test_defaults_follow_the_adapter() -> None:
    rest = RestClient(ADAPTER, BASE, transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    try:
        assert rest.budget == 2160  # 90 % of USD-M's 2400
        assert rest.retry_policy == DEFAULT_RETRY
        assert rest.used_weight is None
        assert (rest.requests, rest.errors, rest.retries, rest.waiting) == (0, 0, 0, 0)
        # The default clock is the wall clock: exchange ms in a plausible range.
        assert rest.clock.now_ms() > T0
    finally:
        await rest.aclose()
