"""The web side of the server over trio memory streams, on the autojump clock.

No sockets: `ChatServer.handle` gets one end of a memory stream pair, and a wsproto
client drives the other.  Timeouts (handshake, pings, idle) take no real time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
import wsproto
import wsproto.events as wse

from machat.server import ChatServer, ServerConfig
from tests.helpers import LineClient


class MemoryWs:
    """A WebSocket client over a memory stream; answers pings unless told not to."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.answer_pings = True
        self.pings = 0
        self.closed_with: int | None = None
        self._pending: list[wse.Event] = []

    async def upgrade(self) -> None:
        await self.stream.send_all(self.ws.send(wse.Request(host="machat", target="/mychat")))
        assert isinstance(await self.event(), wse.AcceptConnection)

    async def send(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(wse.TextMessage(text)))

    async def event(self) -> wse.Event:
        while not self._pending:
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(data or None)
            for event in self.ws.events():
                if isinstance(event, wse.Ping):
                    self.pings += 1
                    if self.answer_pings:
                        try:
                            await self.stream.send_all(self.ws.send(event.response()))
                        except trio.BrokenResourceError:  # the server closed meanwhile
                            pass
                    continue
                self._pending.append(event)
        return self._pending.pop(0)

    async def line(self) -> str:
        """The next text message (without its \\n); EOFError once closed."""
        event = await self.event()
        if isinstance(event, wse.CloseConnection):
            self.closed_with = event.code
            raise EOFError
        assert isinstance(event, wse.TextMessage) and event.data.endswith("\n"), event
        return event.data[:-1]

    async def until_closed(self) -> list[str]:
        lines = []
        try:
            while True:
                lines.append(await self.line())
        except EOFError:
            return lines


def with_config(**changes):
    return pytest.mark.parametrize("config", [ServerConfig(**changes)], ids=[""])


@pytest.fixture
def config() -> ServerConfig:
    return ServerConfig()


@pytest.fixture
async def server(nursery: trio.Nursery, config: ServerConfig) -> AsyncIterator[ChatServer]:
    srv = ChatServer(config)
    await nursery.start(srv.run)
    yield srv


@pytest.fixture
def pair(nursery: trio.Nursery, server: ChatServer):
    def _pair() -> trio.abc.Stream:
        client, served = trio.testing.memory_stream_pair()
        nursery.start_soon(server.handle, served)
        return client

    return _pair


async def test_handshake_timeout_counts_from_the_first_http_byte(
    pair, autojump_clock: trio.testing.MockClock
):
    client = MemoryWs(pair())
    start = trio.current_time()
    request = client.ws.send(wse.Request(host="machat", target="/mychat"))
    with trio.fail_after(60):
        await client.stream.send_all(request[:5])
        await trio.sleep(6)
        await client.stream.send_all(request[5:])
        assert isinstance(await client.event(), wse.AcceptConnection)
        lines = await client.until_closed()
    assert len(lines) == 1 and lines[0].startswith("! ERROR 110 timed out"), lines
    assert lines[0].endswith("within 10 s")
    assert trio.current_time() - start == pytest.approx(10, abs=0.1)


async def test_an_http_request_must_come_in_time(pair, autojump_clock: trio.testing.MockClock):
    stream = pair()
    with trio.fail_after(60):
        await stream.send_all(b"GET / HTTP/1.1\r\n")
        answer = b""
        while chunk := await stream.receive_some(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert trio.current_time() == pytest.approx(10, abs=0.1)


async def test_a_silent_connection_still_times_out_as_chat(
    pair, autojump_clock: trio.testing.MockClock
):
    client = LineClient(pair())
    with trio.fail_after(60):
        lines = await client.until_closed()
    assert lines == ["! ERROR 110 timed out: no complete handshake within 10 s"]
    assert trio.current_time() == pytest.approx(10, abs=0.1)


@with_config(ws_ping_interval=30, ws_ping_timeout=20)
async def test_quiet_clients_are_pinged_and_dead_ones_dropped(
    pair, server: ChatServer, autojump_clock: trio.testing.MockClock
):
    watcher = LineClient(pair())
    await watcher.handshake("Tess")
    alive, dead = MemoryWs(pair()), MemoryWs(pair())
    dead.answer_pings = False
    with trio.fail_after(600):
        for client, name in ((alive, "Alive"), (dead, "Dead")):
            await client.upgrade()
            await client.send(f'{{"name": "{name}", "room": "dev"}}')
            await client.line()  # the welcome
            await watcher.expect(f"* {name} joined dev")

        async def listen(client: MemoryWs) -> None:
            try:
                await client.until_closed()
            except trio.BrokenResourceError:
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen, alive)
            nursery.start_soon(listen, dead)
            start = trio.current_time()
            await watcher.expect("* Dead left dev (connection lost)")
            assert trio.current_time() - start == pytest.approx(50, abs=1)
            await trio.sleep(300)
            assert alive.pings >= 10
            assert set(server.state.users) == {"tess", "alive"}
            nursery.cancel_scope.cancel()


@with_config(idle_timeout=100, ws_ping_interval=30)
async def test_idle_timeout_counts_chat_lines_not_pongs(
    pair, autojump_clock: trio.testing.MockClock
):
    client = MemoryWs(pair())
    with trio.fail_after(600):
        await client.upgrade()
        await client.send('{"name": "Idle"}')
        await client.line()
        await client.line()  # joined
        with trio.move_on_after(60) as quiet:
            await client.line()  # nothing comes; pings are answered meanwhile
        assert quiet.cancelled_caught
        await client.send("still here")
        start = trio.current_time()
        lines = await client.until_closed()
    assert lines[0] == "Idle:still here"
    assert lines[1].startswith("! ERROR 110 timed out: idle for 100 s")
    assert trio.current_time() - start == pytest.approx(100, abs=1)
    assert client.pings >= 3


@with_config(rate=1, burst=2)
async def test_flood_control_holds_for_websocket_lines(
    pair, autojump_clock: trio.testing.MockClock
):
    client = MemoryWs(pair())
    with trio.fail_after(60):
        await client.upgrade()
        await client.send('{"name": "Fast"}')
        await client.line()
        await client.line()
        start = trio.current_time()
        await client.send("a\nb\nc\nd")
        lines = [await client.line() for _ in range(5)]
    # The error is a reply, delivered at once: it may overtake the room's echo.
    errors = [line for line in lines if line.startswith("! ERROR 108 ")]
    assert len(errors) == 1
    assert [line for line in lines if line not in errors] == [
        "Fast:a",
        "Fast:b",
        "Fast:c",
        "Fast:d",
    ]
    assert trio.current_time() - start == pytest.approx(2, abs=0.1)


async def test_a_chat_client_on_the_same_port_is_unaffected(pair):
    client = LineClient(pair())
    await client.send_raw(b'  \n{"name": "Tcp"}hello\n')
    with trio.fail_after(10):
        await client.expect("Tcp:hello")
