"""The WebSocket seam: both transports against a raw wsproto server over memory streams."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from trio_feed.runtime.transport import (
    TRANSIENT_ERRORS,
    TrioWebsocketTransport,
    WebSocketSession,
    WebsocketsTransport,
    describe_error,
)
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)

URL = "wss://fake-exchange.test/market/stream?streams=btcusdt@aggTrade"
TRANSPORTS = [WebsocketsTransport, TrioWebsocketTransport]


class RawServer:
    """A scripted WebSocket server speaking wsproto over the server end of a stream pair."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.SERVER)
        self.received: list[object] = []
        self.path: str | None = None

    async def send(self, *events: object) -> None:
        data = b"".join(self.ws.send(e) for e in events)  # type: ignore[arg-type]
        await self.stream.send_all(data)

    async def next_events(self) -> list[object]:
        data = await self.stream.receive_some(65536)
        self.ws.receive_data(data or None)
        events = list(self.ws.events())
        self.received.extend(events)
        return events

    async def accept(self) -> None:
        while True:
            for event in await self.next_events():
                if isinstance(event, Request):
                    self.path = event.target
                    await self.send(AcceptConnection())
                    return

    async def reject(self, status: int) -> None:
        while True:
            for event in await self.next_events():
                if isinstance(event, Request):
                    await self.send(RejectConnection(status_code=status))
                    await self.stream.aclose()
                    return


async def run_pair(
    transport_cls: type,
    script: Callable[[RawServer], Awaitable[None]],
    client: Callable[[WebSocketSession], Awaitable[None]],
    *,
    max_size: int = 1 << 20,
) -> RawServer:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = RawServer(server_stream)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(script, server)
        session = await transport_cls().open(nursery, client_stream, URL, max_message_size=max_size)
        await client(session)
        nursery.cancel_scope.cancel()
    return server


@pytest.mark.parametrize("transport_cls", TRANSPORTS)
async def test_messages_arrive_in_batches_in_order(
    autojump_clock: trio.testing.MockClock, transport_cls: type
) -> None:
    async def script(server: RawServer) -> None:
        await server.accept()
        await server.send(*[TextMessage(data=f'{{"n":{i}}}') for i in range(50)])
        await trio.sleep_forever()

    got: list[str | bytes] = []

    async def client(session: WebSocketSession) -> None:
        while len(got) < 50:
            got.extend(await session.receive_batch())

    server = await run_pair(transport_cls, script, client)
    assert [m if isinstance(m, str) else m.decode() for m in got] == [
        f'{{"n":{i}}}' for i in range(50)
    ]
    assert server.path == "/market/stream?streams=btcusdt@aggTrade"


async def test_sans_io_session_reads_many_frames_per_wakeup(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def script(server: RawServer) -> None:
        await server.accept()
        await server.send(*[TextMessage(data=str(i)) for i in range(300)])
        await trio.sleep_forever()

    batches: list[int] = []

    async def client(session: WebSocketSession) -> None:
        while sum(batches) < 300:
            batches.append(len(await session.receive_batch()))

    await run_pair(WebsocketsTransport, script, client)
    assert len(batches) < 10  # one batch per socket read, not one per message


@pytest.mark.parametrize("transport_cls", TRANSPORTS)
async def test_fragmented_messages_are_reassembled(
    autojump_clock: trio.testing.MockClock, transport_cls: type
) -> None:
    async def script(server: RawServer) -> None:
        await server.accept()
        await server.send(
            TextMessage(data='{"part":', message_finished=False),
            TextMessage(data='"one",', message_finished=False),
            TextMessage(data='"end":1}', message_finished=True),
            TextMessage(data="after"),
        )
        await trio.sleep_forever()

    got: list[str | bytes] = []

    async def client(session: WebSocketSession) -> None:
        while len(got) < 2:
            got.extend(await session.receive_batch())

    await run_pair(transport_cls, script, client)
    assert [m if isinstance(m, str) else m.decode() for m in got] == [
        '{"part":"one","end":1}',
        "after",
    ]


@pytest.mark.parametrize("transport_cls", TRANSPORTS)
async def test_ping_waits_for_its_pong_and_server_pings_are_answered(
    autojump_clock: trio.testing.MockClock, transport_cls: type
) -> None:
    async def script(server: RawServer) -> None:
        await server.accept()
        await server.send(Ping(payload=b"srv"))
        while True:
            for event in await server.next_events():
                if isinstance(event, Ping):
                    await trio.sleep(2.5)  # a slow but live peer
                    await server.send(event.response())

    async def client(session: WebSocketSession) -> None:
        reader_scope = trio.CancelScope()

        async def read() -> None:
            with reader_scope:
                while True:
                    await session.receive_batch()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            start = trio.current_time()
            with trio.fail_after(5):
                await session.ping()
            assert trio.current_time() - start == pytest.approx(2.5)
            reader_scope.cancel()

    server = await run_pair(transport_cls, script, client)
    assert any(isinstance(e, Pong) and e.payload == b"srv" for e in server.received)


@pytest.mark.parametrize("transport_cls", TRANSPORTS)
async def test_too_large_a_message_ends_the_session_with_a_transient_error(
    autojump_clock: trio.testing.MockClock, transport_cls: type
) -> None:
    async def script(server: RawServer) -> None:
        await server.accept()
        await server.send(BytesMessage(data=b"x" * 5000))
        await trio.sleep_forever()

    async def client(session: WebSocketSession) -> None:
        with pytest.raises(TRANSIENT_ERRORS):
            with trio.fail_after(5):
                while True:
                    await session.receive_batch()

    await run_pair(transport_cls, script, client, max_size=1000)


@pytest.mark.parametrize("transport_cls", TRANSPORTS)
async def test_peer_close_is_reported_with_its_code(
    autojump_clock: trio.testing.MockClock, transport_cls: type
) -> None:
    async def script(server: RawServer) -> None:
        await server.accept()
        await server.send(TextMessage(data="last"), CloseConnection(code=1001, reason="bye"))
        while server.ws.state.name != "CLOSED":
            if not await server.next_events():
                break
        await server.stream.aclose()

    async def client(session: WebSocketSession) -> None:
        got = []
        with pytest.raises(TRANSIENT_ERRORS) as info:
            while True:
                got.extend(await session.receive_batch())
        assert [m if isinstance(m, str) else m.decode() for m in got] == ["last"]
        assert describe_error(info.value) == "closed by peer (code 1001 bye)"

    await run_pair(transport_cls, script, client)


@pytest.mark.parametrize("transport_cls", TRANSPORTS)
async def test_rejected_handshake_says_the_status(
    autojump_clock: trio.testing.MockClock, transport_cls: type
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = RawServer(server_stream)
    caught: list[BaseException] = []
    # trio-websocket raises it from its reader task, into the nursery: catch as the
    # supervisor does, with except*.
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.reject, 503)
            await transport_cls().open(nursery, client_stream, URL, max_message_size=1 << 20)
    except* TRANSIENT_ERRORS as group:
        caught.append(group)
    assert len(caught) == 1
    assert "503" in describe_error(caught[0])


async def test_sans_io_close_handshake_completes(autojump_clock: trio.testing.MockClock) -> None:
    closed_by_client: list[int] = []

    async def script(server: RawServer) -> None:
        await server.accept()
        while True:
            for event in await server.next_events():
                if isinstance(event, CloseConnection):
                    closed_by_client.append(event.code)
                    await server.send(event.response())
                    await server.stream.aclose()
                    return

    async def client(session: WebSocketSession) -> None:
        async def read() -> None:
            with pytest.raises(TRANSIENT_ERRORS):
                while True:
                    await session.receive_batch()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.sleep(1)
            with trio.fail_after(2):
                await session.aclose()

    await run_pair(WebsocketsTransport, script, client)
    assert closed_by_client == [1000]


async def test_sending_on_a_closing_socket_is_a_transient_error_not_a_bug() -> None:
    # A ping or send racing our own close handshake (state CLOSING) must look like a lost
    # connection to the supervisor; websockets' close_exc asserts CLOSED and would crash it.
    from trio_feed.runtime.transport import TRANSIENT_ERRORS, _ProtocolSession
    from websockets.client import ClientProtocol
    from websockets.protocol import CLOSING
    from websockets.uri import parse_uri

    client, _server = trio.testing.memory_stream_pair()
    protocol = ClientProtocol(parse_uri("ws://fake-exchange.test/"))
    protocol.state = CLOSING
    session = _ProtocolSession(client, protocol)
    with pytest.raises(TRANSIENT_ERRORS):
        await session.ping()
    with pytest.raises(TRANSIENT_ERRORS):
        await session.send("{}")
