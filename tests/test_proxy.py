"""Proxies on real loopback sockets: WebSocket and REST through an HTTP CONNECT proxy and a
SOCKS5 proxy (trio_feed.testing.proxies), with and without credentials, and proxies that
refuse.

Real sockets rule out the autojump clock: these run on the real clock, each bounded by
``fail_after`` and waiting for what it needs, never sleeping for a fixed time.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
import trustme
from trio_feed import Feed, StateChange, Trade, config_from_dict, open_feed
from trio_feed.events import Event
from trio_feed.runtime.proxy import (
    HttpConnectConnector,
    ProxyError,
    Socks5Connector,
    connector_for,
)
from trio_feed.runtime.rest import RestClient
from trio_feed.runtime.transport import TRANSIENT_ERRORS, TcpConnector
from trio_feed.testing import FakeExchange
from trio_feed.testing.proxies import ConnectProxy, Socks5Proxy, forward
from trio_feed.venues import get_adapter

#: A password with characters that must be percent-encoded in a URL.
PASSWORD = "s3cr@t:pw/X"
QUOTED = "s3cr%40t%3Apw%2FX"
CREDENTIALS = ("trader", PASSWORD)

Proxy = ConnectProxy | Socks5Proxy
PROXY_KINDS: list[Callable[..., Proxy]] = [ConnectProxy, Socks5Proxy]


#: httpcore 1.0.9 (under httpx's REST) does not close its socket to a SOCKS5 proxy whose
#: handshake fails (AsyncSocks5Connection.handle_async_request); it is closed when collected,
#: with a ResourceWarning that this suite otherwise turns into an error.
HTTPCORE_SOCKS_LEAK = pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning")


def no_secret(text: str) -> None:
    assert PASSWORD not in text and QUOTED not in text


@asynccontextmanager
async def loopback(
    make_proxy: Callable[..., Proxy], **options: Any
) -> AsyncIterator[tuple[FakeExchange, Proxy, str, str, str, trio.Nursery]]:
    """A fake exchange and a proxy on loopback: (fake, proxy, proxy_url, ws_url, rest_url)."""
    async with FakeExchange(seed=5, trade_rate=20.0) as fake, trio.open_nursery() as nursery:
        ws_url, rest_url = await nursery.start(fake.serve)
        proxy = make_proxy(**options)
        proxy_url = await nursery.start(proxy.serve)
        yield fake, proxy, proxy_url, ws_url, rest_url, nursery
        nursery.cancel_scope.cancel()


def feed_config(ws_url: str, rest_url: str, proxy: str | None, **sections: Any) -> Any:
    venue = {
        "exchange": "binance-usdm",
        "ws_url": ws_url,
        "rest_url": rest_url,
        "symbols": ["BTCUSDT"],
        "channels": ["aggTrade"],
    }
    if proxy is not None:
        venue["proxy"] = proxy
    return config_from_dict({"venues": [venue], "sinks": [], **sections}, environ={})


async def collect(feed: Feed, done: Callable[[Sequence[Event]], bool]) -> list[Event]:
    seen: list[Event] = []
    with trio.fail_after(20):
        async for event in feed.events():
            seen.append(event)
            if done(seen):
                return seen
    raise AssertionError("the feed ended")  # pragma: no cover


def some_trades(events: Sequence[Event]) -> bool:
    return sum(isinstance(e, Trade) for e in events) >= 3


def authority(url: str) -> str:
    return url.split("://", 1)[1]


# ---- through the feed ------------------------------------------------------------------------


@pytest.mark.parametrize("make_proxy", PROXY_KINDS)
@pytest.mark.parametrize("credentials", [None, CREDENTIALS])
async def test_feed_streams_and_fetches_through_the_proxy(
    make_proxy: Callable[..., Proxy],
    credentials: tuple[str, str] | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with loopback(make_proxy, credentials=credentials) as (fake, proxy, url, ws, rest, _):
        if credentials is not None:
            assert QUOTED in url  # the server reports a ready-to-use URL
        config = feed_config(ws, rest, url)
        # No connector and no REST transport: the feed's own, through config.proxy.
        async with open_feed(config, seed=1) as feed:
            events = await collect(feed, some_trades)
            assert any(isinstance(e, StateChange) and e.state == "SUBSCRIBED" for e in events)
            rest_client = feed._venues[0].rest
            await rest_client.request(get_adapter("binance-usdm").server_time_request())
            status = repr(feed.status())
        assert authority(ws) in proxy.targets
        assert proxy.auth_failures == 0
        if isinstance(proxy, ConnectProxy):
            # The WebSocket's tunnel; http:// REST goes to an HTTP proxy in absolute form.
            assert proxy.tunnels >= 1 and proxy.forwarded >= 1
        else:
            assert proxy.tunnels >= 2  # the WebSocket's and REST's
        assert fake.rest.requests  # REST really reached the exchange
    no_secret(caplog.text)
    no_secret(status)


@pytest.mark.parametrize(
    ("make_proxy", "options", "expected"),
    [
        (ConnectProxy, {"credentials": CREDENTIALS}, "HTTP 407"),
        (ConnectProxy, {"refuse_status": 403}, "HTTP 403"),
        (ConnectProxy, {"hang_up": True}, "closed the connection before answering"),
        pytest.param(
            Socks5Proxy,
            {"credentials": CREDENTIALS},
            "authentication failure",
            marks=HTTPCORE_SOCKS_LEAK,
        ),
        pytest.param(Socks5Proxy, {"refuse_reply": 0x02}, "not allowed", marks=HTTPCORE_SOCKS_LEAK),
    ],
)
async def test_a_refusing_proxy_is_a_clear_transient_error_without_the_password(
    make_proxy: Callable[..., Proxy],
    options: dict[str, Any],
    expected: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with loopback(make_proxy, **options) as (_fake, proxy, url, ws, rest, _):
        scheme, _, where = url.partition("://")
        where = where.rpartition("@")[2]
        # A wrong password (or one the proxy never asked for): it must not leak either.
        given = f"{scheme}://trader:{QUOTED}x@{where}"
        shown = f"{scheme}://trader:***@{where}"
        config = feed_config(ws, rest, given, reconnect={"base_delay": 0.05, "max_delay": 0.1})
        async with open_feed(config, seed=1) as feed:

            def refused_twice() -> bool:
                status = feed.status()
                return (
                    proxy.refused >= 2  # it retried: the error is transient
                    and status.connections[0].last_error is not None
                    and status.venues[0].rest_last_error is not None
                )

            with trio.fail_after(20):
                while not refused_twice():
                    await trio.sleep(0.01)
            status = feed.status()
            error = status.connections[0].last_error
            assert error is not None
            assert error.startswith("ProxyError: proxy " + shown)
            assert expected in error
            assert status.connections[0].state in ("LOST", "RECONNECTING", "CONNECTING")
            # REST went to the same proxy and failed too (for http:// REST an HTTP proxy's
            # refusal is the answer itself; otherwise httpx's error, by class name only).
            rest_error = status.venues[0].rest_last_error
            assert rest_error is not None and rest_error.startswith("binance-usdm /fapi/v1/time")
            everything = repr(status)
    no_secret(caplog.text)
    no_secret(everything)
    assert shown in caplog.text  # the log names the proxy, redacted


# ---- the connectors --------------------------------------------------------------------------


async def echo_server(nursery: trio.Nursery) -> int:
    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                while data := await stream.receive_some(65536):
                    await stream.send_all(data)
            except trio.BrokenResourceError:
                pass

    listeners = await nursery.start(trio.serve_tcp, echo, 0)
    return int(listeners[0].socket.getsockname()[1])


async def roundtrip(stream: trio.abc.Stream, payload: bytes = b"hello through the tunnel") -> None:
    async with stream:
        await stream.send_all(payload)
        got = b""
        with trio.fail_after(10):
            while len(got) < len(payload):
                got += await stream.receive_some(65536)
        assert got == payload


@pytest.mark.parametrize("make_proxy", PROXY_KINDS)
async def test_connectors_tunnel_bytes_both_ways(make_proxy: Callable[..., Proxy]) -> None:
    async with trio.open_nursery() as nursery:
        port = await echo_server(nursery)
        proxy = make_proxy(credentials=CREDENTIALS)
        url = await nursery.start(proxy.serve)
        connector = connector_for(url)
        expected = HttpConnectConnector if url.startswith("http") else Socks5Connector
        assert isinstance(connector, expected)
        assert connector.proxy == url.replace(QUOTED, "***")
        for _ in range(2):
            await roundtrip(await connector(f"ws://127.0.0.1:{port}/path"))
        assert proxy.tunnels == 2 and proxy.targets == [f"127.0.0.1:{port}"] * 2
        with trio.fail_after(5):
            while proxy.active:  # closing the client end closes the tunnel
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


async def test_socks5_lets_the_proxy_resolve_host_names() -> None:
    async with trio.open_nursery() as nursery:
        port = await echo_server(nursery)
        proxy = Socks5Proxy()
        url = await nursery.start(proxy.serve)
        for scheme in ("socks5", "socks5h"):
            connector = Socks5Connector(url.replace("socks5", scheme, 1))
            await roundtrip(await connector(f"ws://localhost:{port}/"))
        # The name went to the proxy (no DNS query from here), as httpx does for REST.
        assert proxy.targets == [f"localhost:{port}"] * 2
        nursery.cancel_scope.cancel()


async def test_proxy_errors_are_transient_and_redacted() -> None:
    async with trio.open_nursery() as nursery:
        http = ConnectProxy(credentials=CREDENTIALS)
        http_url = await nursery.start(http.serve)
        socks = Socks5Proxy(credentials=CREDENTIALS)
        socks_url = await nursery.start(socks.serve)
        cases = [
            (http_url.replace(QUOTED, "wrong"), 407),
            (http_url.replace(f"trader:{QUOTED}@", ""), 407),  # none given
            (socks_url.replace(QUOTED, QUOTED + "x"), None),
        ]
        for url, status in cases:
            with pytest.raises(ProxyError) as caught:
                await connector_for(url)("wss://fstream.binance.com/ws")
            error = caught.value
            assert isinstance(error, TRANSIENT_ERRORS)
            assert isinstance(error, OSError)
            assert error.status == status
            assert error.proxy in str(error)
            no_secret(str(error))
        assert http.auth_failures == 2 and socks.auth_failures == 1
        nursery.cancel_scope.cancel()


async def test_unreachable_proxy_names_it_redacted() -> None:
    # A port that was just free: nobody listens there.
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    for scheme in ("http", "socks5"):
        url = f"{scheme}://trader:{QUOTED}@127.0.0.1:{port}"
        with pytest.raises(ProxyError, match="unreachable") as caught:
            await connector_for(url)("ws://127.0.0.1:1/")
        assert f"{scheme}://trader:***@127.0.0.1:{port}" in str(caught.value)
        no_secret(str(caught.value))


async def scripted_proxy(nursery: trio.Nursery, answer: bytes) -> str:
    """A proxy that reads the request head, writes ``answer`` and then echoes."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some(4096)
            await stream.send_all(answer)
            try:
                while data := await stream.receive_some(4096):
                    await stream.send_all(data)
            except trio.BrokenResourceError:
                pass

    listeners = await nursery.start(trio.serve_tcp, handle, 0)
    return f"http://u:{QUOTED}@127.0.0.1:{listeners[0].socket.getsockname()[1]}"


async def test_connect_keeps_bytes_that_came_with_the_answer() -> None:
    async with trio.open_nursery() as nursery:
        url = await scripted_proxy(nursery, b"HTTP/1.0 200 Connection established\r\n\r\nearly")
        stream = await HttpConnectConnector(url)("ws://venue.test:80/")
        with trio.fail_after(5):
            assert await stream.receive_some(5) == b"early"
        await roundtrip(stream)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n", "HTTP 502 Bad Gateway"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "malformed answer"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * 40000 + b"\r\n\r\n", "malformed answer"),
    ],
)
async def test_connect_refusals_and_garbage(answer: bytes, expected: str) -> None:
    async with trio.open_nursery() as nursery:
        url = await scripted_proxy(nursery, answer)
        with pytest.raises(ProxyError, match=expected) as caught:
            await HttpConnectConnector(url)("ws://venue.test:80/")
        assert caught.value.proxy == url.replace(QUOTED, "***")
        no_secret(str(caught.value))
        nursery.cancel_scope.cancel()


def test_connector_for_picks_by_scheme() -> None:
    assert isinstance(connector_for(None), TcpConnector)
    assert isinstance(connector_for("https://p.test:8443"), HttpConnectConnector)
    assert isinstance(connector_for("socks5h://p.test:1080"), Socks5Connector)
    with pytest.raises(ValueError, match=r"ftp://u:\*\*\*@p.test:21") as caught:
        connector_for(f"ftp://u:{QUOTED}@p.test:21")
    no_secret(str(caught.value))
    with pytest.raises(ValueError, match="port"):
        HttpConnectConnector("http://p.test")


# ---- TLS: to the venue through the tunnel, and to an https:// proxy ---------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, seen: list[str | None] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    if seen is not None:

        def record(_sock: Any, name: str | None, _context: Any) -> None:
            seen.append(name)

        context.sni_callback = record
    return context


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def tls_front(nursery: trio.Nursery, context: ssl.SSLContext, backend: int) -> int:
    """A TLS-terminating front for a plain TCP port (the fake exchange's)."""

    async def handle(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, context, server_side=True)
        try:
            inner = await trio.open_tcp_stream("127.0.0.1", backend)
        except OSError:
            await trio.aclose_forcefully(tls)
            return
        await forward(tls, inner)

    listeners = await nursery.start(trio.serve_tcp, handle, 0)
    return int(listeners[0].socket.getsockname()[1])


@pytest.mark.parametrize("make_proxy", PROXY_KINDS)
async def test_wss_through_the_tunnel_verifies_the_venue(
    make_proxy: Callable[..., Proxy], ca: trustme.CA
) -> None:
    sni: list[str | None] = []
    async with loopback(make_proxy, credentials=CREDENTIALS) as (_, proxy, url, ws, rest, nursery):
        port = await tls_front(nursery, server_context(ca, sni), int(ws.rpartition(":")[2]))
        wss = f"wss://localhost:{port}"
        # Verification is on by default: the throwaway CA is not trusted.
        with pytest.raises(trio.BrokenResourceError) as caught:
            await connector_for(url)(wss + "/ws")
        assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
        trusting = connector_for(url, client_context(ca))
        async with open_feed(feed_config(wss, rest, url), connector=trusting, seed=1) as feed:
            events = await collect(feed, some_trades)
        assert [e.symbol for e in events if isinstance(e, Trade)][:1] == ["BTCUSDT"]
        assert set(sni) == {"localhost"}  # SNI names the venue, not the proxy
        assert f"localhost:{port}" in proxy.targets


async def test_https_proxy_tls_to_the_proxy_then_to_the_venue(ca: trustme.CA) -> None:
    async with trio.open_nursery() as nursery:
        port = await echo_server(nursery)
        front = await tls_front(nursery, server_context(ca), port)
        proxy = ConnectProxy(credentials=CREDENTIALS, ssl_context=server_context(ca))
        url = await nursery.start(proxy.serve)
        assert url.startswith("https://")
        connector = HttpConnectConnector(
            url, client_context(ca), proxy_ssl_context=client_context(ca)
        )
        await roundtrip(await connector(f"wss://localhost:{front}/"))  # TLS inside TLS
        assert proxy.tunnels == 1
        with pytest.raises(ProxyError, match="TLS to the proxy failed") as caught:
            await HttpConnectConnector(url)(f"ws://127.0.0.1:{port}/")  # CA not trusted
        no_secret(str(caught.value))
        nursery.cancel_scope.cancel()


# ---- REST (httpx's own proxy support) ----------------------------------------------------------


@pytest.mark.parametrize("make_proxy", PROXY_KINDS)
async def test_rest_client_through_the_proxy(
    make_proxy: Callable[..., Proxy], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with loopback(make_proxy, credentials=CREDENTIALS) as (fake, proxy, url, _, rest, _n):
        adapter = get_adapter("binance-usdm")
        client = RestClient(adapter, rest, proxy=url)
        try:
            with trio.fail_after(10):
                answer = await client.request(adapter.server_time_request())
        finally:
            await client.aclose()
        assert answer.status == 200 and "serverTime" in answer.text
        assert [r.path for r in fake.rest.requests] == ["/fapi/v1/time"]
        counted = proxy.forwarded if isinstance(proxy, ConnectProxy) else proxy.tunnels
        assert counted == 1 and proxy.auth_failures == 0
    if isinstance(proxy, Socks5Proxy):
        # httpcore traces the SOCKS5 setup with the credentials: trio_feed redacts them.
        assert "setup_socks5_connection.started" in caplog.text and "auth=***" in caplog.text
    no_secret(caplog.text)


async def test_https_rest_through_connect_with_credentials(ca: trustme.CA) -> None:
    # https:// requests go through CONNECT (httpx), with the proxy's Basic credentials.
    async with loopback(ConnectProxy, credentials=CREDENTIALS) as (fake, proxy, url, _, rest, n):
        port = await tls_front(n, server_context(ca), int(rest.rpartition(":")[2]))
        async with httpx.AsyncClient(proxy=url, verify=client_context(ca)) as client:
            with trio.fail_after(10):
                answer = await client.get(f"https://localhost:{port}/fapi/v1/time")
        assert answer.status_code == 200 and "serverTime" in answer.text
        assert proxy.tunnels == 1 and proxy.targets == [f"localhost:{port}"]
        assert len(fake.rest.requests) == 1


def test_a_config_repr_never_shows_the_proxy_password() -> None:
    from trio_feed import config_from_dict

    config = config_from_dict(
        {
            "venues": [
                {
                    "exchange": "binance-usdm",
                    "symbols": ["BTCUSDT"],
                    "channels": ["aggTrade"],
                    "proxy": "http://trader:s3cr3t-pw@127.0.0.1:3128",
                }
            ],
            "sinks": [],
        },
        environ={},
    )
    assert config.venues[0].proxy == "http://trader:s3cr3t-pw@127.0.0.1:3128"
    assert "s3cr3t-pw" not in repr(config)
    assert "s3cr3t-pw" not in repr(config.venues[0])
    assert "trader:***@127.0.0.1:3128" in repr(config.venues[0])
