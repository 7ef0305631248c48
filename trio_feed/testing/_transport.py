"""Byte-stream plumbing under the fake exchange's WebSocket connections.

* `ServerStream` wraps the server end of a connection. It counts the WebSocket messages the
  client sends (pings, pongs and the close frame included, as the exchange's 10-per-second
  limit does) by reading the client's frame headers passively; it can *freeze* (the black
  hole: nothing read, nothing written, so pings go unanswered); it can withhold the client's
  close frame and hang (a peer that never answers a close); it applies backpressure like a
  kernel socket buffer when the client does not read; and it can be torn down without a
  WebSocket close frame (an abrupt TCP-level close, which the client sees as code 1006).
* `ClientStream` is the client end handed out by `FakeExchange.connect`: a
  `trio.testing.memory_stream_pair` end that reports how many bytes the client has read, which
  is what lets the server side model a full socket buffer.
* `PrefixedStream` replays bytes already read (the loopback server peeks at the request line
  to route between WebSocket and REST).
"""

from __future__ import annotations

from collections.abc import Callable

import trio
import trio.testing
from trio.lowlevel import ParkingLot

__all__ = ["BufferAccount", "ClientStream", "PrefixedStream", "ServerStream", "memory_connection"]

_HEADER_END = b"\r\n\r\n"


class BufferAccount:
    """Bytes written by the server minus bytes read by the client: the "socket buffer"."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.written = 0
        self.read = 0
        self.lot = ParkingLot()

    @property
    def unread(self) -> int:
        return self.written - self.read


class ClientStream(trio.abc.HalfCloseableStream):
    """The client end of an in-process connection (see `FakeExchange.connect`).

    It behaves like the `trio.StapledStream` of `trio.testing.memory_stream_pair` it wraps,
    whose halves are available as `send_stream` and `receive_stream` for the usual
    memory-stream tricks.
    """

    def __init__(
        self,
        inner: trio.StapledStream[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream],
        account: BufferAccount,
    ) -> None:
        self._inner = inner
        self._account = account

    @property
    def send_stream(self) -> trio.testing.MemorySendStream:
        """The client-to-exchange half."""
        return self._inner.send_stream

    @property
    def receive_stream(self) -> trio.testing.MemoryReceiveStream:
        """The exchange-to-client half."""
        return self._inner.receive_stream

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self._inner.receive_some(max_bytes)
        self._account.read += len(data)
        self._account.lot.unpark_all()
        return data

    async def aclose(self) -> None:
        await self._inner.aclose()


def memory_connection(buffer_bytes: int) -> tuple[ClientStream, trio.abc.Stream, BufferAccount]:
    """A connected (client, server, account) triple over `trio.testing.memory_stream_pair`."""
    client, server = trio.testing.memory_stream_pair()
    account = BufferAccount(buffer_bytes)
    return ClientStream(client, account), server, account


class PrefixedStream(trio.abc.Stream):
    """``inner`` with ``prefix`` put back in front of what it receives."""

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


# WebSocket opcodes (RFC 6455 section 5.2).
_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA_OPCODES = frozenset({_CONTINUATION, _TEXT, _BINARY})
_CONTROL_OPCODES = frozenset({_CLOSE, _PING, _PONG})


class _FrameCounter:
    """Counts the client's messages in its raw byte stream and finds its close frame.

    A message is a complete text or binary message (the frame with the FIN bit), or a ping,
    pong or close frame: everything the exchange's 10-per-second limit counts. Only frame
    headers are read (payloads are skipped by length, never unmasked), which is what lets
    `feed` say at which byte a close frame starts, so that `ServerStream` can withhold it.
    """

    def __init__(self, on_message: Callable[[], None]) -> None:
        self._on_message = on_message
        self._head = b""
        self._in_frames = False
        self._broken = False
        self._header = bytearray()
        self._payload_left = 0
        self._counts = False  # the frame being skipped completes a message

    def feed(self, data: bytes | bytearray) -> int | None:
        """Account for ``data``; return the offset in it where a close frame starts, if any."""
        if self._broken:
            return None
        base = 0
        if not self._in_frames:
            # The HTTP upgrade request comes first; frames start after its blank line.
            self._head += data
            end = self._head.find(_HEADER_END)
            if end < 0:
                if len(self._head) > 65536:
                    self._broken = True
                return None
            base = len(data) - (len(self._head) - end - len(_HEADER_END))
            self._head = b""
            self._in_frames = True
        close_at: int | None = None
        i, n = base, len(data)
        while i < n:
            if self._payload_left:
                step = min(self._payload_left, n - i)
                self._payload_left -= step
                i += step
                if not self._payload_left:
                    self._frame_done()
                continue
            if not self._header:
                opcode = data[i] & 0x0F
                if opcode not in _DATA_OPCODES and opcode not in _CONTROL_OPCODES:
                    self._broken = True  # trio-websocket will reject the same bytes
                    return close_at
                if opcode == _CLOSE and close_at is None:
                    close_at = i
            self._header.append(data[i])
            i += 1
            self._header_step()
        return close_at

    def _header_step(self) -> None:
        header = self._header
        if len(header) < 2:
            return
        length = header[1] & 0x7F
        need = 2 + (2 if length == 126 else 8 if length == 127 else 0)
        need += 4 if header[1] & 0x80 else 0  # the masking key
        if len(header) < need:
            return
        if length == 126:
            length = int.from_bytes(header[2:4], "big")
        elif length == 127:
            length = int.from_bytes(header[2:10], "big")
        opcode = header[0] & 0x0F
        fin = bool(header[0] & 0x80)
        self._counts = opcode in _CONTROL_OPCODES or fin
        self._header = bytearray()
        self._payload_left = length
        if not length:
            self._frame_done()

    def _frame_done(self) -> None:
        if self._counts:
            self._counts = False
            self._on_message()


class ServerStream(trio.abc.Stream):
    """The server end of one connection, as trio-websocket sees it (see module docstring).

    ``on_client_close`` is asked when the client's close frame starts arriving: True
    withholds the frame from trio-websocket, which therefore never answers it, and makes
    the stream *hung*: it writes nothing more and only reads on to notice the client going
    away (`FakeExchange.ignore_close_handshake`).
    """

    def __init__(
        self,
        inner: trio.abc.Stream,
        *,
        on_client_message: Callable[[], None],
        on_client_close: Callable[[], bool] | None = None,
        account: BufferAccount | None = None,
    ) -> None:
        self._inner = inner
        self._account = account
        self._counter = _FrameCounter(on_client_message)
        self._on_client_close = on_client_close
        self.frozen = False
        self.hung = False
        self.aborted = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        while True:
            if self.aborted:
                raise trio.ClosedResourceError("connection aborted by the exchange")
            if self.frozen or self.hung:
                await trio.sleep_forever()
            if self._account is not None and self._account.unread > self._account.capacity:
                # The client is not reading: block like a full kernel send buffer.
                await self._account.lot.park()
                continue
            break
        await self._inner.send_all(data)
        if self._account is not None:
            self._account.written += len(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self.frozen:
            await trio.sleep_forever()
        if self.hung:
            return await self._discard_until_eof(max_bytes)
        data = await self._inner.receive_some(max_bytes)
        if self.is_frozen():
            # Frozen while this read was in flight: the bytes vanish into the black hole.
            await trio.sleep_forever()
        close_at = self._counter.feed(data)
        if close_at is not None and self._on_client_close is not None and self._on_client_close():
            self.hung = True
            data = data[:close_at]  # what came before the close frame still counts
            if not data:
                return await self._discard_until_eof(max_bytes)
        return data

    async def _discard_until_eof(self, max_bytes: int | None) -> bytes | bytearray:
        # A hung peer reads (and drops) whatever else arrives, so that it still notices
        # the client closing the transport: b"" tells trio-websocket the peer is gone.
        while True:
            data = await self._inner.receive_some(max_bytes)
            if not data:
                return data

    async def aclose(self) -> None:
        await self._inner.aclose()

    def is_frozen(self) -> bool:
        """Whether `frozen` is set (a method, so type checkers re-read it after an await)."""
        return self.frozen

    async def abort(self) -> None:
        """Close the transport without a WebSocket close frame.

        Everything already written is still delivered (a memory stream flushes its buffer
        into the client's on close; a socket sends its FIN after the buffered data), so
        every frame the exchange recorded as sent can be read by the client, which then
        sees the connection end abnormally (1006).
        """
        self.aborted = True
        if self._account is not None:
            self._account.lot.unpark_all()
        await trio.aclose_forcefully(self._inner)
