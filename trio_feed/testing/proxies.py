"""Loopback proxies for tests: an HTTP CONNECT proxy and a SOCKS5 proxy, on real TCP ports.

Both are small `trio.serve_tcp` servers that forward bytes both ways once the tunnel is up,
count what they did, and can be told to ask for credentials or to refuse. Point a feed's
``proxy`` setting (or a `~trio_feed.runtime.proxy` connector, or an httpx client) at the URL
``serve`` reports, on the real clock::

    async with trio.open_nursery() as nursery:
        proxy = ConnectProxy(credentials=("user", "secret"))
        proxy_url = await nursery.start(proxy.serve)   # "http://user:secret@127.0.0.1:PORT"
        ...                                            # connect through it
        assert proxy.tunnels == 1
        nursery.cancel_scope.cancel()

`ConnectProxy` also relays plain-HTTP requests in absolute form (``GET http://host/path``),
which is how HTTP clients such as httpx send ``http://`` requests through an HTTP proxy; only
``https://`` requests use ``CONNECT``.
"""

from __future__ import annotations

import base64
import socket
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable
from functools import partial

import h11
import trio

from ._transport import PrefixedStream

__all__ = ["ConnectProxy", "Socks5Proxy", "forward"]

_CHUNK = 65536
_HOP_HEADERS = frozenset(
    {b"proxy-authorization", b"proxy-connection", b"connection", b"keep-alive"}
)
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


async def forward(a: trio.abc.Stream, b: trio.abc.Stream) -> None:
    """Copy bytes both ways between ``a`` and ``b``, then close both.

    An end of stream on one side is passed on as a half-close where the other side can take
    one (TCP), so a peer's closing handshake still gets through; otherwise, or when a side
    breaks, both directions stop.
    """
    try:
        async with trio.open_nursery() as nursery:

            async def pump(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
                try:
                    while data := await src.receive_some(_CHUNK):
                        await dst.send_all(data)
                    if not isinstance(dst, trio.abc.HalfCloseableStream):
                        nursery.cancel_scope.cancel()
                        return
                    await dst.send_eof()
                except _GONE:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(pump, a, b)
            nursery.start_soon(pump, b, a)
    finally:
        # Nested: under cancellation the first close raises Cancelled (after closing), and
        # the second stream must be closed all the same.
        try:
            await trio.aclose_forcefully(a)
        finally:
            await trio.aclose_forcefully(b)


def _proxy_url(scheme: str, host: str, port: int, credentials: tuple[str, str] | None) -> str:
    auth = ""
    if credentials is not None:
        user, password = (urllib.parse.quote(part, safe="") for part in credentials)
        auth = f"{user}:{password}@"
    return f"{scheme}://{auth}{host}:{port}"


async def _listen(
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    host: str,
    port: int,
    task_status: trio.TaskStatus[int],
) -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, port, host=host))
        task_status.started(listeners[0].socket.getsockname()[1])


def _split_authority(authority: str) -> tuple[str, int]:
    host, _, port = authority.rpartition(":")
    return host.strip("[]"), int(port)


class ConnectProxy:
    """An HTTP proxy on loopback: ``CONNECT`` tunnels and absolute-form request relaying.

    Args:
      credentials: ``(user, password)`` to require as ``Proxy-Authorization: Basic``
        (answered 407 when missing or wrong); None accepts everyone.
      refuse_status: answer every request with this status (e.g. 403 or 502) instead.
      hang_up: close every connection after reading its request, without an answer.
      ssl_context: a server-side context to speak TLS to clients (an ``https://`` proxy).

    ``credentials``, ``refuse_status`` and ``hang_up`` may be changed while it serves.

    Counters: ``requests`` (CONNECT and relayed requests received), ``tunnels`` (CONNECT
    tunnels opened), ``forwarded`` (requests relayed), ``refused`` (answered with an error
    or hung up on), ``auth_failures`` (407s), ``targets`` (each request's host:port),
    ``active`` (tunnels open now).
    """

    def __init__(
        self,
        *,
        credentials: tuple[str, str] | None = None,
        refuse_status: int | None = None,
        hang_up: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.credentials = credentials
        self.refuse_status = refuse_status
        self.hang_up = hang_up
        self._ssl_context = ssl_context
        self.requests = 0
        self.tunnels = 0
        self.forwarded = 0
        self.refused = 0
        self.auth_failures = 0
        self.active = 0
        self.targets: list[str] = []

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (0: any free port) until cancelled. Reports the proxy URL
        through ``task_status``, with the credentials in it when they are required."""
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(_listen, self._handle, host, port)
            scheme = "https" if self._ssl_context is not None else "http"
            task_status.started(_proxy_url(scheme, host, bound, self.credentials))

    async def _handle(self, client: trio.SocketStream) -> None:
        stream: trio.abc.Stream = client
        if self._ssl_context is not None:
            stream = trio.SSLStream(client, self._ssl_context, server_side=True)
        try:
            await self._serve_client(stream)
        except (*_GONE, h11.ProtocolError):
            pass  # the client left or spoke nonsense: nothing to answer
        finally:
            await trio.aclose_forcefully(stream)

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        if self.credentials is None:
            return True
        user, password = self.credentials
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        expected = f"Basic {token}".encode()
        return any(n == b"proxy-authorization" and v == expected for n, v in headers)

    async def _serve_client(self, stream: trio.abc.Stream) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            event = await _next_event(conn, stream)
            if not isinstance(event, h11.Request):
                return
            request = event
            body = bytearray()
            while not isinstance(event := await _next_event(conn, stream), h11.EndOfMessage):
                if not isinstance(event, h11.Data):
                    return
                body += event.data
            self.requests += 1
            target = request.target.decode("latin-1")
            connect = request.method == b"CONNECT"
            authority = target if connect else urllib.parse.urlsplit(target).netloc
            self.targets.append(authority)
            if self.hang_up:
                self.refused += 1
                return
            if not self._authorized(list(request.headers)):
                self.auth_failures += 1
                await self._refuse(
                    conn, stream, 407, [("Proxy-Authenticate", 'Basic realm="trio-feed"')]
                )
                return
            if self.refuse_status is not None:
                await self._refuse(conn, stream, self.refuse_status)
                return
            if connect:
                await self._tunnel(conn, stream, authority)
                return
            if not await self._relay(conn, stream, request, bytes(body)):
                return
            conn.start_next_cycle()

    async def _refuse(
        self,
        conn: h11.Connection,
        stream: trio.abc.Stream,
        status: int,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.refused += 1
        head = [*(headers or []), ("Content-Length", "0"), ("Connection", "close")]
        out = conn.send(h11.Response(status_code=status, headers=head))
        await stream.send_all(out + (conn.send(h11.EndOfMessage()) or b""))

    async def _tunnel(self, conn: h11.Connection, stream: trio.abc.Stream, authority: str) -> None:
        try:
            upstream = await trio.open_tcp_stream(*_split_authority(authority))
        except (OSError, ValueError):
            await self._refuse(conn, stream, 502)
            return
        # Counted before the answer: the client may look as soon as it has it.
        self.tunnels += 1
        self.active += 1
        try:
            answer = h11.Response(status_code=200, headers=[], reason=b"Connection established")
            await stream.send_all(conn.send(answer) or b"")
            early, _closed = conn.trailing_data  # bytes the client sent after its request
            if early:
                await upstream.send_all(bytes(early))
            await forward(stream, upstream)
        finally:
            await trio.aclose_forcefully(upstream)
            self.active -= 1

    async def _relay(
        self, conn: h11.Connection, stream: trio.abc.Stream, request: h11.Request, body: bytes
    ) -> bool:
        """Relay one absolute-form request over a fresh upstream connection; False when
        the client connection must end."""
        parts = urllib.parse.urlsplit(request.target.decode("latin-1"))
        if parts.scheme != "http" or not parts.hostname:
            await self._refuse(conn, stream, 400)
            return False
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = [(n, v) for n, v in request.headers if n not in _HOP_HEADERS]
        headers.append((b"connection", b"close"))
        try:
            upstream = await trio.open_tcp_stream(parts.hostname, parts.port or 80)
        except OSError:
            await self._refuse(conn, stream, 502)
            return False
        async with upstream:
            up = h11.Connection(h11.CLIENT)
            out = up.send(h11.Request(method=request.method, target=path, headers=headers))
            out = (out or b"") + (up.send(h11.Data(data=body)) or b"" if body else b"")
            await upstream.send_all(out + (up.send(h11.EndOfMessage()) or b""))
            while True:
                event = await _next_event(up, upstream)
                if isinstance(event, h11.Response):
                    self.forwarded += 1
                    kept = [(n, v) for n, v in event.headers if n not in _HOP_HEADERS]
                    answer = h11.Response(
                        status_code=event.status_code, headers=kept, reason=event.reason
                    )
                    await stream.send_all(conn.send(answer) or b"")
                elif isinstance(event, h11.Data):
                    await stream.send_all(conn.send(h11.Data(data=event.data)) or b"")
                elif isinstance(event, h11.EndOfMessage):
                    await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
                    break
                elif not isinstance(event, h11.InformationalResponse):
                    return False  # upstream closed mid-answer
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream) -> object:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(_CHUNK)))
            continue
        return event


# ---- SOCKS5 (RFC 1928, RFC 1929) ------------------------------------------------------------

_SOCKS_VERSION = 5
_NO_AUTH, _USER_PASS, _NO_METHOD = 0x00, 0x02, 0xFF
_CMD_CONNECT = 1
_ATYP_IPV4, _ATYP_DOMAIN, _ATYP_IPV6 = 1, 3, 4
_REP_OK, _REP_REFUSED, _REP_COMMAND, _REP_ADDRESS = 0x00, 0x05, 0x07, 0x08


class _Reader:
    """Exact-length reads from a stream, keeping what arrived beyond them."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = b""

    async def exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            data = await self.stream.receive_some(_CHUNK)
            if not data:
                raise trio.BrokenResourceError("peer closed during the SOCKS5 handshake")
            self.buffer += data
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out


class Socks5Proxy:
    """A SOCKS5 proxy on loopback (``CONNECT`` only).

    Args:
      credentials: ``(user, password)`` to require (RFC 1929 username/password); None
        offers "no authentication" only.
      refuse_reply: answer every CONNECT with this SOCKS5 reply code instead (e.g. 0x02,
        "connection not allowed by ruleset").
      hang_up: close every connection right after the client's greeting.

    ``credentials``, ``refuse_reply`` and ``hang_up`` may be changed while it serves.

    Counters: ``greetings`` (clients that said hello), ``tunnels`` (CONNECTs forwarded),
    ``refused`` (refusals, failed logins and hang-ups), ``auth_failures`` (wrong or
    missing credentials), ``targets`` (each CONNECT's host:port; domain names as sent,
    so a test sees whether the client let the proxy resolve them), ``active`` (tunnels
    open now).
    """

    def __init__(
        self,
        *,
        credentials: tuple[str, str] | None = None,
        refuse_reply: int | None = None,
        hang_up: bool = False,
    ) -> None:
        self.credentials = credentials
        self.refuse_reply = refuse_reply
        self.hang_up = hang_up
        self.greetings = 0
        self.tunnels = 0
        self.refused = 0
        self.auth_failures = 0
        self.active = 0
        self.targets: list[str] = []

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (0: any free port) until cancelled. Reports the proxy URL
        (``socks5://...``) through ``task_status``, with the credentials when required."""
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(_listen, self._handle, host, port)
            task_status.started(_proxy_url("socks5", host, bound, self.credentials))

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            await self._serve_client(stream)
        except _GONE:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve_client(self, stream: trio.SocketStream) -> None:
        reader = _Reader(stream)
        version, n_methods = await reader.exactly(2)
        if version != _SOCKS_VERSION:
            return
        methods = await reader.exactly(n_methods)
        self.greetings += 1
        if self.hang_up:
            self.refused += 1
            return
        wanted = _NO_AUTH if self.credentials is None else _USER_PASS
        if wanted not in methods:
            self.refused += 1
            await stream.send_all(bytes([_SOCKS_VERSION, _NO_METHOD]))
            return
        await stream.send_all(bytes([_SOCKS_VERSION, wanted]))
        if self.credentials is not None and not await self._login(reader, self.credentials):
            return
        _version, command, _reserved, address_type = await reader.exactly(4)
        if address_type == _ATYP_IPV4:
            host = socket.inet_ntop(socket.AF_INET, await reader.exactly(4))
        elif address_type == _ATYP_IPV6:
            host = socket.inet_ntop(socket.AF_INET6, await reader.exactly(16))
        elif address_type == _ATYP_DOMAIN:
            (length,) = await reader.exactly(1)
            host = (await reader.exactly(length)).decode("ascii", "replace")
        else:
            await self._reply(stream, _REP_ADDRESS)
            return
        port = int.from_bytes(await reader.exactly(2), "big")
        self.targets.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        if command != _CMD_CONNECT:
            await self._reply(stream, _REP_COMMAND)
            return
        if self.refuse_reply is not None:
            self.refused += 1
            await self._reply(stream, self.refuse_reply)
            return
        try:
            upstream = await trio.open_tcp_stream(host, port)
        except OSError:
            self.refused += 1
            await self._reply(stream, _REP_REFUSED)
            return
        # Counted before the answer: the client may look as soon as it has it.
        self.tunnels += 1
        self.active += 1
        try:
            await self._reply(stream, _REP_OK)
            # Bytes the client sent after its request (none, usually) go first.
            client = PrefixedStream(stream, reader.buffer) if reader.buffer else stream
            await forward(client, upstream)
        finally:
            await trio.aclose_forcefully(upstream)
            self.active -= 1

    async def _login(self, reader: _Reader, credentials: tuple[str, str]) -> bool:
        _version, user_length = await reader.exactly(2)
        user = await reader.exactly(user_length)
        (password_length,) = await reader.exactly(1)
        password = await reader.exactly(password_length)
        ok = (user, password) == (credentials[0].encode(), credentials[1].encode())
        if not ok:
            self.auth_failures += 1
            self.refused += 1
        await reader.stream.send_all(bytes([1, 0 if ok else 1]))
        return ok

    @staticmethod
    async def _reply(stream: trio.abc.Stream, code: int) -> None:
        # Bound address 0.0.0.0:0: clients do not use it for CONNECT.
        await stream.send_all(bytes([_SOCKS_VERSION, code, 0, _ATYP_IPV4, 0, 0, 0, 0, 0, 0]))
