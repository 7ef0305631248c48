"""Connectors through a proxy: an HTTP CONNECT tunnel or SOCKS5, then TLS to the venue.

trio-websocket and websockets' sans-IO client have no proxy support of their own, and need
none: a `~trio_feed.runtime.transport.Connector` hands them a byte stream, so a proxy is
just a connector that opens the tunnel first and wraps the stream in TLS for ``wss://``
(SNI and certificate checks against the *venue's* host name, never the proxy's).

* `HttpConnectConnector`: ``http://`` (or ``https://``, TLS to the proxy itself) proxies,
  ``CONNECT host:port`` with Basic credentials from the URL; the answer is parsed by h11.
* `Socks5Connector`: ``socks5://`` and ``socks5h://`` proxies through python-socks' Trio
  backend, with RFC 1929 username/password when the URL has them.
* `connector_for`: the connector for a venue's ``proxy`` setting (plain TCP without one).

Every failure of the proxy raises `ProxyError`, an `OSError` and so one of
`~trio_feed.runtime.transport.TRANSIENT_ERRORS`: the connection backs off and retries. Its
message names the proxy by its redacted URL (`~trio_feed.config.redact_url`) and what went
wrong; the password never appears in a message, a log line or the status. Importing this
module also redacts the credentials that httpcore (under httpx, for REST) writes into its
DEBUG trace of a SOCKS5 setup.
"""

from __future__ import annotations

import base64
import logging
import ssl
import urllib.parse

import h11
import python_socks
import trio
from python_socks.async_.trio import Proxy as _SocksProxy

from ..config import redact_url
from .transport import Connector, TcpConnector

__all__ = ["HttpConnectConnector", "ProxyError", "Socks5Connector", "connector_for"]

#: Largest proxy answer head we read: a CONNECT reply is a status line and a few headers.
_MAX_HEAD = 16 * 1024
_RECEIVE_SIZE = 4096


class _RedactSocksAuth(logging.Filter):
    """Hides the SOCKS credentials in httpcore's DEBUG trace of a SOCKS5 setup.

    httpcore logs ``setup_socks5_connection.started ... auth=(b'user', b'password')``
    verbatim; the REST client goes through it for ``socks5://`` proxies. ``auth`` is the
    last argument of that line, so everything from it on is replaced.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        at = message.find(" auth=")
        if at != -1 and not message.endswith(" auth=None"):
            record.msg, record.args = message[:at] + " auth=***", None
        return True


# httpcore's SOCKS logger (httpcore/_async/socks_proxy.py); filters belong to the logger
# that creates the record, so it goes on this one, for every embedding of the library.
logging.getLogger("httpcore.socks").addFilter(_RedactSocksAuth())


class ProxyError(OSError):
    """The proxy could not be reached, refused the tunnel, or broke the protocol.

    Attributes:
      proxy: the proxy URL with its password replaced by ``***``.
      status: the HTTP status of a refused CONNECT, or the SOCKS5 reply code; None when
        the proxy gave none (unreachable, closed, malformed answer).
    """

    def __init__(self, proxy: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"proxy {proxy}: {message}")
        self.proxy = proxy
        self.status = status


class _ProxyUrl:
    """A parsed proxy URL; ``shown`` is the only form that goes into messages."""

    __slots__ = ("host", "password", "port", "scheme", "shown", "username")

    def __init__(self, url: str, schemes: tuple[str, ...]) -> None:
        self.shown = redact_url(url)
        parts = urllib.parse.urlsplit(url)
        self.scheme = parts.scheme.lower()
        if self.scheme not in schemes:
            raise ValueError(f"{self.shown!r} is not a {' or '.join(schemes)} proxy URL")
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise ValueError(f"{self.shown!r} needs a host and a port")
        self.host = parts.hostname
        self.port = port
        # userinfo is percent-encoded in a URL ("p%40ss" for "p@ss").
        self.username = urllib.parse.unquote(parts.username) if parts.username else None
        self.password = urllib.parse.unquote(parts.password) if parts.password else None


def _target(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) of a ws:// or wss:// URL."""
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname
    if not host:
        raise OSError(f"no host in {url!r}")
    return host, parts.port or (443 if secure else 80), secure


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _start_tls(
    stream: trio.abc.Stream, context: ssl.SSLContext, host: str
) -> trio.SSLStream[trio.abc.Stream]:
    """TLS over ``stream`` with SNI and verification for ``host``, handshake done."""
    tls = trio.SSLStream(stream, context, server_hostname=host, https_compatible=True)
    await tls.do_handshake()
    return tls


class _PrefixedStream(trio.abc.Stream):
    """``inner`` with bytes already read (after the proxy's answer) put back in front."""

    def __init__(self, inner: trio.abc.Stream, prefix: bytes) -> None:
        self._inner = inner
        self._prefix = prefix

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            n = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:n], self._prefix[n:]
            return data
        return await self._inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._inner.aclose()


class HttpConnectConnector:
    """A `Connector` through an HTTP proxy's ``CONNECT`` tunnel.

    Args:
      proxy_url: ``http://[user:password@]host:port`` (or ``https://`` for TLS to the
        proxy). Credentials go out as ``Proxy-Authorization: Basic``.
      ssl_context: TLS settings for ``wss://`` venues (default: the system's verifying
        context; SNI and the certificate check use the venue's host name).
      proxy_ssl_context: TLS settings for an ``https://`` proxy itself (default: verifying).
    """

    def __init__(
        self,
        proxy_url: str,
        ssl_context: ssl.SSLContext | None = None,
        *,
        proxy_ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._proxy = _ProxyUrl(proxy_url, ("http", "https"))
        self._ssl_context = ssl_context
        self._proxy_ssl_context = proxy_ssl_context
        self._headers: list[tuple[str, str]] = []
        if self._proxy.username is not None or self._proxy.password is not None:
            pair = f"{self._proxy.username or ''}:{self._proxy.password or ''}"
            token = base64.b64encode(pair.encode()).decode("ascii")
            self._headers.append(("Proxy-Authorization", f"Basic {token}"))

    @property
    def proxy(self) -> str:
        """The proxy URL, password redacted."""
        return self._proxy.shown

    async def __call__(self, url: str) -> trio.abc.Stream:
        host, port, secure = _target(url)
        proxy = self._proxy
        try:
            stream: trio.abc.Stream = await trio.open_tcp_stream(proxy.host, proxy.port)
        except OSError as exc:
            raise ProxyError(proxy.shown, f"unreachable ({exc.strerror or exc})") from exc
        try:
            if proxy.scheme == "https":
                if self._proxy_ssl_context is None:
                    self._proxy_ssl_context = ssl.create_default_context()
                try:
                    stream = await _start_tls(stream, self._proxy_ssl_context, proxy.host)
                except trio.BrokenResourceError as exc:
                    raise ProxyError(proxy.shown, f"TLS to the proxy failed ({exc})") from exc
            stream = await self._connect(stream, _authority(host, port))
            if secure:
                if self._ssl_context is None:
                    self._ssl_context = ssl.create_default_context()
                stream = await _start_tls(stream, self._ssl_context, host)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return stream

    async def _connect(self, stream: trio.abc.Stream, authority: str) -> trio.abc.Stream:
        """Send ``CONNECT authority`` and read the answer; the tunnel on a 2xx."""
        shown = self._proxy.shown
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
        headers = [("Host", authority), *self._headers]
        request = h11.Request(method="CONNECT", target=authority, headers=headers)
        try:
            await stream.send_all(conn.send(request) + (conn.send(h11.EndOfMessage()) or b""))
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(_RECEIVE_SIZE)
                    if not data:
                        raise ProxyError(
                            shown, f"closed the connection before answering CONNECT {authority}"
                        )
                    conn.receive_data(bytes(data))
                elif isinstance(event, h11.Response):
                    break
                elif not isinstance(event, h11.InformationalResponse):  # pragma: no cover
                    raise ProxyError(
                        shown, f"unexpected answer to CONNECT ({type(event).__name__})"
                    )
        except h11.RemoteProtocolError as exc:
            raise ProxyError(shown, f"malformed answer to CONNECT {authority} ({exc})") from exc
        except (trio.BrokenResourceError, OSError) as exc:
            if isinstance(exc, ProxyError):
                raise
            raise ProxyError(shown, f"connection broke during CONNECT {authority} ({exc})") from exc
        status = event.status_code
        if not 200 <= status < 300:
            reason = event.reason.decode("latin-1", "replace")
            raise ProxyError(
                shown,
                f"refused CONNECT {authority}: HTTP {status} {reason}".rstrip(),
                status=status,
            )
        # Bytes after the answer's head already belong to the tunnel.
        rest, _closed = conn.trailing_data
        return _PrefixedStream(stream, bytes(rest)) if rest else stream


class Socks5Connector:
    """A `Connector` through a SOCKS5 proxy (python-socks' Trio backend).

    Args:
      proxy_url: ``socks5://[user:password@]host:port`` or ``socks5h://...``. Both let the
        proxy resolve the venue's host name, as httpx does for REST, so WebSocket and REST
        of a venue leave through the proxy alike and no DNS query leaks from this host.
      ssl_context: TLS settings for ``wss://`` venues (default: the system's verifying
        context; SNI and the certificate check use the venue's host name).
    """

    def __init__(self, proxy_url: str, ssl_context: ssl.SSLContext | None = None) -> None:
        self._proxy = _ProxyUrl(proxy_url, ("socks5", "socks5h"))
        self._ssl_context = ssl_context
        self._socks = _SocksProxy(
            python_socks.ProxyType.SOCKS5,
            self._proxy.host,
            self._proxy.port,
            username=self._proxy.username,
            password=self._proxy.password,
            rdns=True,
        )

    @property
    def proxy(self) -> str:
        """The proxy URL, password redacted."""
        return self._proxy.shown

    async def __call__(self, url: str) -> trio.abc.Stream:
        host, port, secure = _target(url)
        shown = self._proxy.shown
        try:
            # The caller's connect timeout bounds this; python-socks' own (60 s) stays longer.
            sock = await self._socks.connect(host, port)
        except python_socks.ProxyError as exc:
            # A SOCKS reply code (or an auth failure, which has none), from the proxy.
            raise ProxyError(
                shown, f"refused {_authority(host, port)}: {exc}", status=exc.error_code
            ) from exc
        except python_socks.ProxyTimeoutError as exc:
            raise ProxyError(shown, "timed out") from exc
        except python_socks.ProxyConnectionError as exc:
            raise ProxyError(shown, f"unreachable ({exc.strerror or exc})") from exc
        except OSError as exc:  # a reset during the handshake
            raise ProxyError(
                shown, f"connection broke during the SOCKS5 handshake ({exc})"
            ) from exc
        stream: trio.abc.Stream = trio.SocketStream(sock)
        if not secure:
            return stream
        try:
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            return await _start_tls(stream, self._ssl_context, host)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise


def connector_for(proxy: str | None, ssl_context: ssl.SSLContext | None = None) -> Connector:
    """The connector for a venue's ``proxy`` setting: `TcpConnector` without one,
    `HttpConnectConnector` for ``http(s)://``, `Socks5Connector` for ``socks5(h)://``."""
    if proxy is None:
        return TcpConnector(ssl_context)
    scheme = urllib.parse.urlsplit(proxy).scheme.lower()
    if scheme in ("http", "https"):
        return HttpConnectConnector(proxy, ssl_context)
    if scheme in ("socks5", "socks5h"):
        return Socks5Connector(proxy, ssl_context)
    raise ValueError(f"unsupported proxy {redact_url(proxy)!r}: use http://, https:// or socks5://")
