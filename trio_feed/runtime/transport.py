"""The WebSocket seam: connectors give a byte stream, a transport speaks WebSocket over it.

Two small pieces, in the shape of httpx's transports:

* a **connector** (``async (url) -> trio.abc.Stream``) opens the bytes: TCP (+TLS for
  ``wss://``) in production, a CONNECT-tunnelled stream behind a proxy, or one end of
  ``trio.testing.memory_stream_pair()`` from the fake exchange in tests;
* a **transport** runs the WebSocket protocol over that stream and returns a
  `WebSocketSession` (receive a batch, send, ping, close).

`WebsocketsTransport` (the default) is a thin Trio shell around websockets' sans-IO
``ClientProtocol``: the reader itself reads the socket and gets every message of a read
at once. `TrioWebsocketTransport` wraps trio-websocket, which runs its own reader task and
hands messages over a channel; we drain that channel in batches.
"""

from __future__ import annotations

import logging
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed as WebsocketsClosed
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.frames import Frame, Opcode
from websockets.protocol import CLOSED, CONNECTING, OPEN
from websockets.uri import parse_uri
from wsproto.utilities import LocalProtocolError

__all__ = [
    "TRANSIENT_ERRORS",
    "Connector",
    "TcpConnector",
    "Transport",
    "TrioWebsocketTransport",
    "WebSocketSession",
    "WebsocketsTransport",
    "describe_error",
]

#: websockets logs every frame it sends and receives at DEBUG: frames may carry secrets (a
#: gateway's token in its handshake), so its logger is kept above DEBUG unless a user lowers
#: it on purpose.
_PROTOCOL_LOG = logging.getLogger("trio_feed.transport.websockets")
_PROTOCOL_LOG.setLevel(logging.INFO)

#: Bytes asked for per socket read: enough for hundreds of typical frames.
_RECEIVE_SIZE = 256 * 1024

#: Opens the byte stream for a WebSocket URL.
Connector = Callable[[str], Awaitable[trio.abc.Stream]]

#: Errors that mean "this connection is gone, reconnect": anything else is a bug and
#: propagates. LocalProtocolError: trio-websocket issue #184 (a ping arriving while we
#: close makes its reader raise it). WebSocketException: every error of websockets'.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionClosed,
    HandshakeError,
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    LocalProtocolError,
    WebSocketException,
)


class WebSocketSession(Protocol):
    """One open WebSocket. Every call may raise one of `TRANSIENT_ERRORS`."""

    async def receive_batch(self) -> list[str | bytes]:
        """Wait for at least one message, then return every message already received.

        Batching is what keeps the reader lean: a scheduler round-trip costs more than
        parsing a frame, so the reader pays one per batch, not one per message.
        """

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
        """Run the client handshake for ``url`` over ``stream``. Background tasks (if the
        transport has any) go in ``nursery``, which the caller scopes to this attempt."""


# ---- websockets' sans-IO protocol under a thin Trio shell (the default) -------------------


class _ProtocolSession:
    """A WebSocket client session driving websockets' sans-IO ``ClientProtocol``.

    No background task and no channel: whoever calls `receive_batch` reads the socket,
    feeds the bytes to the protocol and gets back every complete message they held. The
    protocol answers pings and close frames itself; we only write out what it queues.
    """

    def __init__(self, stream: trio.abc.Stream, protocol: ClientProtocol) -> None:
        self._stream = stream
        self._protocol = protocol
        self._send_lock = trio.Lock()
        self._ready: list[str | bytes] = []  # messages parsed but not yet returned
        self._fragments: list[bytes] = []
        self._pings: dict[bytes, trio.Event] = {}
        self._ping_count = 0
        self._reading = False
        self._closed = trio.Event()

    async def handshake(self, extra_headers: list[tuple[str, str]]) -> None:
        protocol = self._protocol
        request = protocol.connect()
        for name, value in extra_headers:
            request.headers[name] = value
        protocol.send_request(request)
        await self._flush()
        while protocol.state is CONNECTING:
            data = await self._stream.receive_some(_RECEIVE_SIZE)
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
            events = protocol.events_received()
            if protocol.handshake_exc is not None:
                raise protocol.handshake_exc
            if protocol.state is CONNECTING and not data:
                raise OSError("peer closed the connection during the WebSocket handshake")
            # Frames that arrived in the same read as the response are messages already.
            self._take(events)

    async def receive_batch(self) -> list[str | bytes]:
        if self._ready:
            await trio.lowlevel.checkpoint()
            ready, self._ready = self._ready, []
            return ready
        protocol = self._protocol
        receive_some = self._stream.receive_some
        self._reading = True
        try:
            while True:
                if protocol.state is CLOSED:
                    raise protocol.close_exc
                try:
                    data = await receive_some(_RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    data = b""
                if data:
                    protocol.receive_data(data)
                else:
                    protocol.receive_eof()
                self._take(protocol.events_received())
                if protocol.writes:  # pongs, close replies
                    await self._flush()
                if not data:
                    self._closed.set()
                    raise protocol.close_exc
                if self._ready:
                    ready, self._ready = self._ready, []
                    return ready
        finally:
            self._reading = False

    def _take(self, events: Sequence[object]) -> None:
        for event in events:
            if not isinstance(event, Frame):
                continue
            opcode = event.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if event.fin:
                    # orjson parses UTF-8 bytes directly: no decode for text frames.
                    self._ready.append(bytes(event.data))
                else:
                    self._fragments = [bytes(event.data)]
            elif opcode is Opcode.CONT:
                self._fragments.append(bytes(event.data))
                if event.fin:
                    self._ready.append(b"".join(self._fragments))
                    self._fragments = []
            elif opcode is Opcode.PONG:
                waiter = self._pings.pop(bytes(event.data), None)
                if waiter is not None:
                    waiter.set()

    async def _flush(self) -> None:
        async with self._send_lock:
            for chunk in self._protocol.data_to_send():
                if chunk:
                    await self._stream.send_all(chunk)

    def _not_open(self) -> Exception:
        """What sending on a socket that is no longer OPEN raises: websockets' close error
        once CLOSED (its ``close_exc`` asserts that), a transient error while CLOSING."""
        protocol = self._protocol
        if protocol.state is CLOSED:
            return protocol.close_exc
        return trio.BrokenResourceError(f"WebSocket is {protocol.state.name.lower()}")

    async def send(self, message: str) -> None:
        if self._protocol.state is not OPEN:
            raise self._not_open()
        self._protocol.send_text(message.encode())
        await self._flush()

    async def ping(self) -> None:
        if self._protocol.state is not OPEN:
            raise self._not_open()
        self._ping_count += 1
        payload = self._ping_count.to_bytes(4, "big")
        waiter = self._pings[payload] = trio.Event()
        self._protocol.send_ping(payload)
        await self._flush()
        try:
            await waiter.wait()
        finally:
            self._pings.pop(payload, None)

    async def aclose(self) -> None:
        protocol = self._protocol
        try:
            if protocol.state is OPEN:
                protocol.send_close(1000)
                await self._flush()
                if self._reading:
                    # The reader sees the peer's close reply and the end of the stream.
                    await self._closed.wait()
        finally:
            await trio.aclose_forcefully(self._stream)


class WebsocketsTransport:
    """`Transport` on websockets' sans-IO ``ClientProtocol``, driven directly by our reader.

    The default: one socket read yields every message it held as one batch, with no
    background task and no channel hop per message (see ``bench/bench_feed.py``). TLS and
    proxies belong to the connector; liveness and deadlines to the supervisor.
    """

    def __init__(self, *, user_agent: str = "trio-feed") -> None:
        self.user_agent = user_agent

    async def open(
        self,
        nursery: trio.Nursery,
        stream: trio.abc.Stream,
        url: str,
        *,
        max_message_size: int,
    ) -> WebSocketSession:
        protocol = ClientProtocol(parse_uri(url), max_size=max_message_size, logger=_PROTOCOL_LOG)
        session = _ProtocolSession(stream, protocol)
        await session.handshake([("User-Agent", self.user_agent)])
        return session


# ---- trio-websocket -------------------------------------------------------------------------


class _TrioWebsocketSession:
    __slots__ = ("_channel", "_ws")

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        # trio-websocket queues each message through a memory channel; draining it without
        # waiting turns N scheduler round-trips into one. It is a private attribute, so
        # fall back to one message per call if it ever disappears.
        self._channel = getattr(ws, "_recv_channel", None)

    async def receive_batch(self) -> list[str | bytes]:
        batch = [await self._ws.get_message()]
        channel = self._channel
        if channel is not None:
            try:
                while True:
                    batch.append(channel.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                pass
        return batch

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

    def __init__(self, *, message_queue_size: int = 1024) -> None:
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
    if isinstance(exc, WebsocketsClosed):
        frame = exc.rcvd
        if frame is None:
            return "closed by peer (no close frame)"
        text = f" {frame.reason}" if frame.reason else ""
        return f"closed by peer (code {frame.code}{text})"
    if isinstance(exc, InvalidStatus):
        return f"handshake rejected with HTTP {exc.response.status_code}"
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    name = type(exc).__name__
    detail = str(exc)
    return f"{name}: {detail}" if detail else name
