"""The delivery core over real loopback TCP, where members get the direct-write
`SocketSender`: order, eviction of a reader that stopped, shutdown flushing.

Rules: 127.0.0.1 only, port 0, every wait bounded by trio.fail_after.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import attrs
import pytest
import trio

from machat.server import ChatServer, ServerConfig
from tests.helpers import LineClient

CONFIG = ServerConfig(host="127.0.0.1", port=0, rate=0, max_per_ip=0)


@pytest.fixture
async def server(
    nursery: trio.Nursery, request: pytest.FixtureRequest
) -> AsyncIterator[ChatServer]:
    config = getattr(request, "param", CONFIG)
    srv = ChatServer(config)
    listeners = await nursery.start(srv.serve)
    srv.test_port = listeners[0].socket.getsockname()[1]  # type: ignore[attr-defined]
    yield srv
    srv.shutdown()


async def join(server: ChatServer, name: str, room: str = "dev") -> LineClient:
    stream = await trio.open_tcp_stream("127.0.0.1", server.test_port)  # type: ignore[attr-defined]
    client = LineClient(stream)
    await client.handshake(name, room)
    await client.expect(f"* {name} joined {room}")
    return client


async def test_plain_tcp_members_get_the_direct_socket_sender(server: ChatServer) -> None:
    with trio.fail_after(10):
        mina = await join(server, "Mina")
        await mina.send("hi")
        assert await mina.line() == "Mina:hi"
    member = server.state.lookup("Mina")
    assert member is not None
    assert type(member.sender).__name__ == "SocketSender"
    await mina.aclose()


async def test_concurrent_senders_keep_their_order_and_everyone_sees_one_order(
    server: ChatServer,
) -> None:
    n = 1500
    with trio.fail_after(30):
        senders = [await join(server, f"S{i}") for i in range(3)]
        readers = [await join(server, f"R{i}") for i in range(4)]
        for client in senders + readers:
            await client.send("/who")  # a barrier: every join notice is read past
            await client.expect_prefix("* dev: ")

        async def send(client: LineClient, tag: str) -> None:
            for start in range(0, n, 100):
                await client.send(*(f"{tag}-{i}" for i in range(start, start + 100)))

        async def read(client: LineClient, got: list[str]) -> None:
            while len(got) < 3 * n:
                line = await client.line()
                if ":" in line and not line.startswith("*"):
                    got.append(line)

        seen: list[list[str]] = [[] for _ in senders + readers]
        async with trio.open_nursery() as nursery:
            for i, client in enumerate(senders):
                nursery.start_soon(send, client, f"S{i}")
            for client, got in zip(senders + readers, seen, strict=True):
                nursery.start_soon(read, client, got)
    first = seen[0]
    assert all(got == first for got in seen)  # one order for the whole room
    for i in range(3):
        mine = [line for line in first if line.startswith(f"S{i}:")]
        assert mine == [f"S{i}:S{i}-{k}" for k in range(n)]  # each sender's order, no loss
    for client in senders + readers:
        await client.aclose()


@pytest.mark.parametrize("server", [attrs.evolve(CONFIG, outbox_limit=64 * 1024)], indirect=True)
async def test_a_reader_that_stopped_is_evicted_and_the_room_goes_on(server: ChatServer) -> None:
    with trio.fail_after(30):
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
        raw.connect(("127.0.0.1", server.test_port))  # type: ignore[attr-defined]
        stalled = LineClient(trio.SocketStream(trio.socket.from_stdlib_socket(raw)))
        await stalled.handshake("Stalled", "dev")
        await stalled.expect("* Stalled joined dev")
        mina = await join(server, "Mina")
        bob = await join(server, "Bob")
        member = server.state.lookup("Stalled")
        assert member is not None
        line = "x" * 500
        for batch in range(400):  # up to 10 MB: past 64 KiB plus what the kernel buffers
            await mina.send(*(f"{batch}:{line}" for _ in range(50)))
            await bob.expect(f"Mina:{batch}:{line}")
            if member.evicted:
                break
        assert member.evicted
        await mina.send("still here")
        await bob.expect("Mina:still here")
        lines = await stalled.until_closed()  # now it reads: whole lines, then the error
    assert lines[-1].startswith("! ERROR 111 too slow")
    body = lines[:-1]
    assert all(
        t.startswith("* ") or (t.startswith("Mina:") and t.endswith(f":{line}")) for t in body
    )  # whole lines only: the error never lands inside one
    assert server.statistics().evictions == 1
    for client in (mina, bob, stalled):
        await client.aclose()


async def test_shutdown_flushes_a_socket_members_pending_output_then_the_notice(
    server: ChatServer,
) -> None:
    with trio.fail_after(10):
        mina = await join(server, "Mina")
        await mina.send(*(f"line {i}" for i in range(200)))
        await mina.expect("Mina:line 0")
        server.shutdown()
        rest = await mina.until_closed()
    assert rest[-1] == "* server shutting down"  # after everything that was pending
    said = [t for t in rest if t.startswith("Mina:")]
    assert said == [f"Mina:line {i}" for i in range(1, len(said) + 1)]  # in order, no gap
    await mina.aclose()
