"""The WebSocket seam: connectors give a byte stream, a transport speaks WebSocket over it.

Two small pieces, in the shape of httpx's transports:

* a **connector** (``async (url) -> trio.abc.Stream``) opens the bytes: TCP (+TLS for
  ``wss://``) in production, a CONNECT-tunnelled stream behind a proxy, or one end of
  ``trio.testing.memory_stream_pair()`` from the fake exchange in tests;
* a **transport** runs the WebSocket protocol over that stream and returns a
  `WebSocketSession` (send, receive, ping, close). `TrioWebsocketTransport` wraps
  trio-websocket; another library (websockets' Trio implementation) can sit behind the
  same four calls.

The session's ``receive`` is trio-websocket's own ``get_message`` bound method, so the
reader adds no call layer of its own per frame.
"""

from __future__ import annotations

import ssl
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)
from wsproto.utilities import LocalProtocolError

__all__ = [
    "TRANSIENT_ERRORS",
    "Connector",
    "TcpConnector",
    "Transport",
    "TrioWebsocketTransport",
    "WebSocketSession",
    "describe_error",
]

#: Opens the byte stream for a WebSocket URL.
Connector = Callable[[str], Awaitable[trio.abc.Stream]]

#: Errors that mean "this connection is gone, reconnect": anything else is a bug and
#: propagates. LocalProtocolError: trio-websocket issue #184 (a ping arriving while we
#: close makes its reader raise it).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionClosed,
    HandshakeError,
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    LocalProtocolError,
)


class WebSocketSession(Protocol):
    """One open WebSocket. Every call may raise one of `TRANSIENT_ERRORS`."""

    #: Wait for the next message (text or binary).
    receive: Callable[[], Awaitable[str | bytes]]

    async def send(self, message: str) -> None:
        """Send a text message."""

    async def ping(self) -> None:
        """Send a protocol ping and wait for its pong (callers bound this with a timeout)."""

    async def aclose(self) -> None:
        """Close the session (idempotent)."""


class Transport(Protocol):
    """Speaks WebSocket over a byte stream."""

    async def open(
        self,
        nursery: trio.Nursery,
        stream: trio.abc.Stream,
        url: str,
        *,
        max_message_size: int,
    ) -> WebSocketSession:
        """Run the client handshake for ``url`` over ``stream``. Background tasks go in
        ``nursery``, which the caller scopes to this one connection attempt."""


class _TrioWebsocketSession:
    __slots__ = ("_ws", "receive")

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        self.receive: Callable[[], Awaitable[str | bytes]] = ws.get_message

    async def send(self, message: str) -> None:
        await self._ws.send_message(message)

    async def ping(self) -> None:
        await self._ws.ping()

    async def aclose(self) -> None:
        await self._ws.aclose()


class TrioWebsocketTransport:
    """`Transport` on trio-websocket.

    ``message_queue_size`` is the buffer between trio-websocket's reader task and ours.
    Our reader never blocks on consumers (see :mod:`trio_feed.runtime.fanout`), so the
    queue only absorbs scheduling jitter; a full queue would stop trio-websocket from
    answering the venue's pings, which is why the reader must keep draining it.
    """

    def __init__(self, *, message_queue_size: int = 256) -> None:
        self.message_queue_size = message_queue_size

    async def open(
        self,
        nursery: trio.Nursery,
        stream: trio.abc.Stream,
        url: str,
        *,
        max_message_size: int,
    ) -> WebSocketSession:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "localhost"
        default_port = 443 if parts.scheme == "wss" else 80
        host_header = host if parts.port in (None, default_port) else f"{host}:{parts.port}"
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        ws = await wrap_client_stream(
            nursery,
            stream,  # type: ignore[arg-type]  # any trio.abc.Stream works (see trio-stack.md)
            host_header,
            resource,
            message_queue_size=self.message_queue_size,
            max_message_size=max_message_size,
        )
        return _TrioWebsocketSession(ws)


class TcpConnector:
    """The production connector: TCP, plus TLS (verified, with SNI) for ``wss://``."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context

    async def __call__(self, url: str) -> trio.abc.Stream:
        parts = urllib.parse.urlsplit(url)
        secure = parts.scheme == "wss"
        host = parts.hostname
        if not host:
            raise OSError(f"no host in {url!r}")
        port = parts.port or (443 if secure else 80)
        if not secure:
            return await trio.open_tcp_stream(host, port)
        context = self._ssl_context or ssl.create_default_context()
        return await trio.open_ssl_over_tcp_stream(
            host, port, ssl_context=context, https_compatible=True
        )


def describe_error(exc: BaseException) -> str:
    """A short, secret-free description of why a connection attempt ended."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe_error(e) for e in exc.exceptions)
    if isinstance(exc, ConnectionClosed):
        reason = exc.reason
        if reason is None:
            return "closed by peer"
        text = f" {reason.reason}" if reason.reason else ""
        return f"closed by peer (code {int(reason.code)}{text})"
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    name = type(exc).__name__
    detail = str(exc)
    return f"{name}: {detail}" if detail else name
