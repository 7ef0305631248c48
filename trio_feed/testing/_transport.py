"""Byte-stream plumbing under the fake exchange's WebSocket connections.

* `ServerStream` wraps the server end of a connection. It counts the WebSocket messages the
  client sends (pings and pongs included, as the exchange's 10-per-second limit does) by
  parsing the client's frames passively with wsproto's frame parser; it can *freeze* (the
  black hole: nothing read, nothing written, so pings go unanswered); it applies backpressure
  like a kernel socket buffer when the client does not read; and it can be torn down without a
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
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

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


class _FrameCounter:
    """Counts complete client messages, pings and pongs in the raw client byte stream."""

    def __init__(self, on_message: Callable[[], None]) -> None:
        self._on_message = on_message
        self._head = b""
        self._frames: FrameProtocol | None = None
        self._broken = False

    def feed(self, data: bytes | bytearray) -> None:
        if self._broken:
            return
        if self._frames is None:
            # The HTTP upgrade request comes first; frames start after its blank line.
            self._head += data
            end = self._head.find(_HEADER_END)
            if end < 0:
                if len(self._head) > 65536:
                    self._broken = True
                return
            data = self._head[end + len(_HEADER_END) :]
            self._head = b""
            self._frames = FrameProtocol(client=False, extensions=[])
        self._frames.receive_bytes(bytes(data))
        try:
            for frame in self._frames.received_frames():
                if frame.opcode in (Opcode.PING, Opcode.PONG):
                    if frame.frame_finished:
                        self._on_message()
                elif frame.opcode is Opcode.CLOSE:
                    self._broken = True
                    return
                elif frame.message_finished:
                    self._on_message()
        except ParseFailed:
            self._broken = True  # trio-websocket will reject the same bytes


class ServerStream(trio.abc.Stream):
    """The server end of one connection, as trio-websocket sees it (see module docstring)."""

    def __init__(
        self,
        inner: trio.abc.Stream,
        *,
        on_client_message: Callable[[], None],
        account: BufferAccount | None = None,
    ) -> None:
        self._inner = inner
        self._account = account
        self._counter = _FrameCounter(on_client_message)
        self.frozen = False
        self.aborted = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        while True:
            if self.aborted:
                raise trio.ClosedResourceError("connection aborted by the exchange")
            if self.frozen:
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
        data = await self._inner.receive_some(max_bytes)
        if self.is_frozen():
            # Frozen while this read was in flight: the bytes vanish into the black hole.
            await trio.sleep_forever()
        self._counter.feed(data)
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
