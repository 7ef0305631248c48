"""One WebSocket connection of the fake exchange: handshake, tasks, limits and closing.

`serve_websocket` runs a connection from the upgrade request to the end: it wraps the byte
stream with trio-websocket's `wrap_server_stream`, refuses or accepts the handshake, and runs
a `Connection`'s four tasks (writer, reader, pinger, close timer) until something closes it.
The close timer ends the connection at its lifetime or, after a ``serverShutdown``
announcement, once the shutdown grace has passed.
Everything the exchange-wide state needs (subscriptions, control replies, the sent log,
counters) goes through the `ConnectionOwner` protocol, which `FakeExchange` implements.

Closing is always decided in one place, `Connection.request_close`: it records why and
cancels the tasks; `Connection.run` then either sends a close frame (bounded in time) or
ends the transport abruptly, after which nothing is written, so the frames recorded as sent
are exactly the frames the client can still read.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from typing import Any, Protocol

import orjson
import trio
from attrs import define, field
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream
from wsproto.utilities import LocalProtocolError

from ._transport import BufferAccount, ServerStream
from .wire import BinanceWire, WsPath

__all__ = ["GONE", "Connection", "ConnectionOwner", "ConnectionRecord", "serve_websocket"]

# Errors that only mean "this connection is gone"; anything else is a bug in the fake and
# is allowed to propagate. LocalProtocolError is trio-websocket issue #184 (a pong sent
# while the connection is closing).
GONE = (
    ConnectionClosed,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    LocalProtocolError,
)

#: Seconds a clean close (close frame and its answer) may take before the transport is cut.
_CLOSE_TIMEOUT = 5.0


@define(slots=True, eq=False)
class ConnectionRecord:
    """What the fake knows about one accepted WebSocket connection (for tests).

    Attributes:
      id: 1, 2, ... in order of acceptance.
      path: the request path, e.g. ``/market/stream?streams=btcusdt@aggTrade``.
      route: ``"public"``, ``"market"`` or ``"ws"`` (the legacy unrouted paths).
      combined: whether frames carry the ``{"stream", "data"}`` envelope.
      streams: the streams subscribed, in subscription order (including any that deliver
        nothing on this route); after the close, those subscribed at the end.
      opened_at / closed_at: trio clock times; opened_at_ms / closed_at_ms: exchange time.
      close_reason: why it ended: ``"client"`` (the client closed or vanished),
        ``"dropped"`` (`FakeExchange.drop_connections`), ``"lifetime"``, ``"shutdown"``
        (closed at the end of the grace after `FakeExchange.announce_shutdown`),
        ``"incoming-limit"``, ``"slow-client"``, ``"pong-timeout"`` or ``"exchange-closed"``
        (the fake shut down). Set as soon as the close is decided.
      close_code: the code of the close frame the fake sent or received; None when the
        connection ended without one (the client then sees 1006), and when the client's
        close frame was ignored.
      messages_received: WebSocket messages from the client: text and binary messages,
        pings, pongs and the close frame.
      max_messages_in_window: the most client messages seen within any one second (the
        figure the incoming limit compares with ``max_incoming_per_second``).
      control_messages: the client's text messages, as received.
      incoming_limit_exceeded: the client broke the incoming-messages-per-second limit.
      frames_sent: frames written to the client (data, replies and malformed frames).
      malformed_sent: malformed frames queued by `FakeExchange.send_malformed`.
      pings_sent: WebSocket pings the fake sent.
      black_holed: `FakeExchange.black_hole` froze this connection.
      close_frame_ignored: the client sent a close frame while
        `FakeExchange.ignore_close_handshake` was on; the fake never answered it and the
        connection hung until the client closed the transport.
      streams_stalled: `FakeExchange.stall_connection_streams` silenced every stream of
        this connection.
      shutdown_at: trio clock time at which the fake closes the connection after
        `FakeExchange.announce_shutdown` (None if never announced).
    """

    id: int
    path: str
    route: str
    combined: bool
    opened_at: float
    opened_at_ms: int
    streams: list[str] = field(factory=list)
    closed_at: float | None = None
    closed_at_ms: int | None = None
    close_reason: str | None = None
    close_code: int | None = None
    messages_received: int = 0
    max_messages_in_window: int = 0
    control_messages: list[str] = field(factory=list)
    incoming_limit_exceeded: bool = False
    frames_sent: int = 0
    malformed_sent: int = 0
    pings_sent: int = 0
    black_holed: bool = False
    close_frame_ignored: bool = False
    streams_stalled: bool = False
    shutdown_at: float | None = None

    @property
    def is_open(self) -> bool:
        """True until the connection has ended."""
        return self.closed_at is None


class ConnectionOwner(Protocol):
    """What a `Connection` needs from the exchange that owns it."""

    server_ping_interval: float
    pong_timeout: float
    lifetime: float
    timer_offset: float
    max_incoming_per_second: int
    send_queue_size: int
    handshake_timeout: float
    wire: BinanceWire

    def now_ms(self) -> int: ...

    def _ignores_close(self) -> bool: ...

    def _next_connection_id(self) -> int: ...

    def _opened(self, conn: Connection, parsed: WsPath) -> None: ...

    def _closed(self, conn: Connection) -> None: ...

    def _close_requested(self, conn: Connection, kind: str) -> None: ...

    def _control_reply(self, conn: Connection, text: str) -> dict[str, Any]: ...

    def _record_sent(self, stream: str, connection_id: int, payload: str) -> None: ...


@define(slots=True, eq=False)
class _Outgoing:
    stream: str | None  # None: a control reply or a malformed frame
    payload: str | None  # the "data" part, recorded once written
    text: str


class Connection:
    """An accepted connection: its record, its outgoing queue and its tasks."""

    def __init__(
        self,
        owner: ConnectionOwner,
        record: ConnectionRecord,
        server: ServerStream,
        ws: WebSocketConnection,
    ) -> None:
        self.owner = owner
        self.record = record
        self.server = server
        self.ws = ws
        self.close_request: tuple[str, int | None, str | None, bool] | None = None
        self.malformed_index = 0
        self._incoming: deque[float] = deque()
        self._send, self._recv = trio.open_memory_channel[_Outgoing](owner.send_queue_size)
        self._scope: trio.CancelScope | None = None
        # The close timer's scope: its deadline is the lifetime, or the end of a shutdown
        # grace if that comes first (`schedule_shutdown` moves it).
        self._lifetime_end = record.opened_at + owner.timer_offset + owner.lifetime
        self._timer = trio.CancelScope(deadline=self._lifetime_end)

    @property
    def closing(self) -> bool:
        """A close has been decided (the connection may still be winding down)."""
        return self.close_request is not None

    def enqueue(self, stream: str | None, payload: str | None, text: str) -> None:
        """Queue a frame; an overflowing queue (the client does not read) drops the client."""
        if self.close_request is not None or self.server.frozen or self.server.hung:
            return
        try:
            self._send.send_nowait(_Outgoing(stream, payload, text))
        except trio.WouldBlock:
            self.request_close("slow-client")
        except trio.ClosedResourceError:
            pass  # already finished

    def request_close(
        self,
        kind: str,
        *,
        code: int | None = None,
        reason: str | None = None,
        abrupt: bool = True,
    ) -> None:
        """Decide to close: with a close frame (``code``, ``reason``) or abruptly."""
        if self.close_request is not None:
            return
        self.close_request = (kind, code, reason, abrupt)
        self.record.close_reason = kind
        self.owner._close_requested(self, kind)
        if self._scope is not None:
            self._scope.cancel()

    def on_client_message(self) -> None:
        """Count one client message (from the byte tap) against the per-second limit."""
        self.record.messages_received += 1
        now = trio.current_time()
        window = self._incoming
        window.append(now)
        # Messages exactly one second apart are not in the same window (the epsilon keeps
        # float sums of 0.1 s sleeps from deciding that).
        while window and window[0] <= now - 1.0 + 1e-6:
            window.popleft()
        # Every window that holds the most messages ends at a message: checking here, after
        # each one, finds the maximum over all windows.
        if len(window) > self.record.max_messages_in_window:
            self.record.max_messages_in_window = len(window)
        over = len(window) > self.owner.max_incoming_per_second
        if over and not self.record.incoming_limit_exceeded:
            self.record.incoming_limit_exceeded = True
            self.request_close(
                "incoming-limit", code=1008, reason="Too many messages", abrupt=False
            )

    def on_client_close(self) -> bool:
        """The client's close frame is arriving: True to ignore it (never answer it).

        Only a close the client starts is ignored; one that answers a close the fake has
        decided on goes through, so the fake's own closes still complete.
        """
        if self.close_request is not None or not self.owner._ignores_close():
            return False
        self.record.close_frame_ignored = True
        return True

    def schedule_shutdown(self, at: float) -> None:
        """Close with 1001 at trio time ``at`` (the earliest of several calls wins)."""
        if self.record.shutdown_at is None or at < self.record.shutdown_at:
            self.record.shutdown_at = at
        self._timer.deadline = min(self._timer.deadline, at)

    async def run(self) -> None:
        """Run the connection's tasks until a close is decided, then close."""
        with trio.CancelScope() as scope:
            self._scope = scope
            if self.close_request is not None:
                scope.cancel()
            async with trio.open_nursery() as tasks:
                tasks.start_soon(self._writer)
                tasks.start_soon(self._reader)
                tasks.start_soon(self._pinger)
                tasks.start_soon(self._close_timer)
        _kind, code, reason, abrupt = self.close_request or ("exchange-closed", None, None, True)
        if not abrupt and self.ws.closed is None:
            self.record.close_code = code
            with trio.move_on_after(_CLOSE_TIMEOUT):
                try:
                    await self.ws.aclose(code or 1000, reason)
                except GONE:
                    pass

    def finish(self) -> None:
        """Mark the record closed (idempotent)."""
        record = self.record
        if record.closed_at is None:
            if record.close_reason is None:
                record.close_reason = "exchange-closed"
            record.closed_at = trio.current_time()
            record.closed_at_ms = self.owner.now_ms()
            self._send.close()

    def _client_gone(self) -> None:
        if self.close_request is None:
            closed = self.ws.closed
            self.request_close("client")
            code = closed.code if closed is not None else None
            self.record.close_code = None if code == 1006 else code

    async def _writer(self) -> None:
        try:
            async for item in self._recv:
                await self.ws.send_message(item.text)
                # Recorded only once written: "sent" means "the client can read it".
                self.record.frames_sent += 1
                if item.stream is not None and item.payload is not None:
                    self.owner._record_sent(item.stream, self.record.id, item.payload)
        except GONE:
            self._client_gone()

    async def _reader(self) -> None:
        try:
            while True:
                message = await self.ws.get_message()
                if isinstance(message, bytes):
                    message = message.decode("utf-8", "replace")
                self.record.control_messages.append(message)
                reply = self.owner._control_reply(self, message)
                self.enqueue(None, None, orjson.dumps(reply).decode())
        except GONE:
            self._client_gone()

    async def _pinger(self) -> None:
        owner = self.owner
        start = self.record.opened_at + owner.timer_offset
        for n in itertools.count(1):
            await trio.sleep_until(start + n * owner.server_ping_interval)
            await self._stay_if_hung()
            self.record.pings_sent += 1
            try:
                with trio.move_on_after(owner.pong_timeout) as timeout:
                    await self.ws.ping(n.to_bytes(4, "big"))
            except GONE:
                self._client_gone()
                return
            if timeout.cancelled_caught:
                await self._stay_if_hung()  # the ping was stuck behind the hang, not lost
                self.request_close("pong-timeout")
                return

    async def _close_timer(self) -> None:
        with self._timer:
            await trio.sleep_forever()
        await self._stay_if_hung()
        shutdown_at = self.record.shutdown_at
        if shutdown_at is not None and shutdown_at <= self._lifetime_end:
            self.request_close("shutdown", code=1001, reason="server shutdown", abrupt=False)
        else:
            self.request_close(
                "lifetime", code=1001, reason="connection lifetime exceeded", abrupt=False
            )

    async def _stay_if_hung(self) -> None:
        # A hung connection (its client's close frame ignored) never closes by itself: only
        # the client going away, a fault injected by the test or the fake's exit end it.
        if self.server.hung:
            await trio.sleep_forever()


async def serve_websocket(
    owner: ConnectionOwner,
    stream: trio.abc.Stream,
    account: BufferAccount | None,
    refusal: tuple[int | None, float | None] | None,
) -> None:
    """Serve one WebSocket connection on ``stream`` until it ends.

    ``refusal`` (from `FakeExchange.refuse_next`) rejects the handshake with its status.
    """
    holder: list[Connection] = []

    def on_client_message() -> None:
        if holder:  # nothing to count during the handshake
            holder[0].on_client_message()

    def on_client_close() -> bool:
        return bool(holder) and holder[0].on_client_close()

    server = ServerStream(
        stream,
        on_client_message=on_client_message,
        on_client_close=on_client_close,
        account=account,
    )
    try:
        async with trio.open_nursery() as nursery:
            try:
                await _handshake_and_run(owner, nursery, server, refusal, holder)
            except* GONE:
                pass
            nursery.cancel_scope.cancel()
    except* GONE:
        pass  # trio-websocket's reader task saw the transport go away
    finally:
        with trio.CancelScope(shield=True):
            await server.abort()
        if holder:
            holder[0].finish()
            owner._closed(holder[0])


async def _handshake_and_run(
    owner: ConnectionOwner,
    nursery: trio.Nursery,
    server: ServerStream,
    refusal: tuple[int | None, float | None] | None,
    holder: list[Connection],
) -> None:
    request = None
    # The offset keeps this deadline off a client's round-numbered connect timeout.
    with trio.move_on_after(owner.handshake_timeout + owner.timer_offset):
        request = await wrap_server_stream(nursery, server)
    if request is None:
        return  # no upgrade request in time
    if refusal is not None:
        status, retry_after = refusal
        assert status is not None
        headers = []
        if retry_after is not None:
            headers.append((b"Retry-After", str(math.ceil(retry_after)).encode()))
        await request.reject(status, extra_headers=headers, body=b"refused by FakeExchange")
        return
    parsed = owner.wire.parse_ws_path(request.path)
    if parsed is None:
        await request.reject(404, body=b"unknown path")
        return
    ws = await request.accept()
    record = ConnectionRecord(
        id=owner._next_connection_id(),
        path=request.path,
        route=parsed.route,
        combined=parsed.combined,
        opened_at=trio.current_time(),
        opened_at_ms=owner.now_ms(),
    )
    conn = Connection(owner, record, server, ws)
    holder.append(conn)
    owner._opened(conn, parsed)
    await conn.run()
