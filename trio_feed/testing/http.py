"""A minimal HTTP/1.1 server loop on h11, for the fake exchange's loopback REST.

Only what the fake needs: GET requests without bodies (a body is read and ignored),
keep-alive, ``Content-Length`` responses. `read_request_head` lets the caller peek at the
request line first, to route one TCP port between REST and WebSocket upgrades.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus

import h11
import trio

from .rest import RestResponse

__all__ = ["read_request_head", "request_target", "serve_http"]

_MAX_HEAD = 65536

#: Answers one request: (method, target with query) -> response.
RequestHandler = Callable[[str, str], Awaitable[RestResponse]]


async def read_request_head(stream: trio.abc.Stream) -> bytes | None:
    """Read from ``stream`` until the end of the first request head (the blank line).

    Returns every byte read (possibly more than the head), or None if the peer closed first
    or the head is unreasonably large.
    """
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(4096)
        if not data:
            return None
        buf += data
        if len(buf) > _MAX_HEAD:
            return None
    return buf


def request_target(head: bytes) -> str:
    """The request target (path and query) of a request head, or "" if unparseable."""
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3:
        return ""
    return parts[1].decode("latin-1")


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


async def serve_http(stream: trio.abc.Stream, handler: RequestHandler) -> None:
    """Serve HTTP/1.1 requests on ``stream`` until the peer closes or asks to close."""
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = await _next_event(conn, stream)
            if isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                return
            request = event
            while True:  # read and drop any body
                event = await _next_event(conn, stream)
                if isinstance(event, h11.EndOfMessage):
                    break
                if isinstance(event, h11.ConnectionClosed):
                    return
            response = await handler(request.method.decode(), request.target.decode("latin-1"))
            headers = [*response.headers, ("Content-Length", str(len(response.body)))]
            out = conn.send(
                h11.Response(
                    status_code=response.status, headers=headers, reason=_reason(response.status)
                )
            )
            out += conn.send(h11.Data(data=response.body)) if response.body else b""
            out += conn.send(h11.EndOfMessage())
            await stream.send_all(out)
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except h11.RemoteProtocolError:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = b'{"code":-1000,"msg":"Bad request"}'
            headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            try:
                out = conn.send(
                    h11.Response(status_code=400, headers=headers, reason=b"Bad Request")
                )
                out += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
                await stream.send_all(out)
            except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream) -> object:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
            continue
        return event
