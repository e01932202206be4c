"""Slowloris on real sockets and the real clock: half handshakes are cut off in time.

Rules: 127.0.0.1 only, port 0, every wait bounded by trio.fail_after, every stream closed.
"""

from __future__ import annotations

import resource

import pytest
import trio

from machat.server import ChatServer, ServerConfig
from tests.helpers import LineClient

LORIS = 200
HANDSHAKE_TIMEOUT = 1.0  # long enough for 200 connects on a busy 2-core machine


@pytest.fixture(autouse=True)
def _enough_file_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * LORIS + 100  # both ends of every connection, and some
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@pytest.fixture(autouse=True)
def _no_server_errors(caplog: pytest.LogCaptureFixture):
    yield
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert not errors, [r.getMessage() for r in errors]


async def test_half_handshakes_are_closed_at_the_timeout_while_others_chat(
    nursery: trio.Nursery,
) -> None:
    config = ServerConfig(
        host="127.0.0.1", port=0, handshake_timeout=HANDSHAKE_TIMEOUT, max_per_ip=0
    )
    server = ChatServer(config)
    listeners = await nursery.start(server.serve)
    port = listeners[0].socket.getsockname()[1]
    outcomes: list[tuple[float, list[str]]] = []

    async def loris(sent: trio.Event) -> None:
        # The server's clock starts when it accepts, which can be before this task
        # runs again after connecting on a busy machine: time from the connect.
        start = trio.current_time()
        client = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
        try:
            await client.send_raw(b'{"name": "Slow", "ro')
            sent.set()
            lines = await client.until_closed()
            outcomes.append((trio.current_time() - start, lines))
        finally:
            await client.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as attack:
            for _ in range(LORIS):
                sent = trio.Event()
                attack.start_soon(loris, sent)
                await sent.wait()
            # Meanwhile a normal client joins and chats.
            norm = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
            await norm.handshake("Norm", "dev")
            await norm.expect("* Norm joined dev")
            await norm.send("hello under attack")
            assert await norm.line() == "Norm:hello under attack"
            assert not outcomes  # all of this well inside the handshake timeout
        await norm.send("and after")
        assert await norm.line() == "Norm:and after"
        await server.wait_connections(at_most=1)

    assert len(outcomes) == LORIS
    for took, lines in outcomes:
        assert len(lines) == 1 and lines[0].startswith("! ERROR 110 "), lines
        assert HANDSHAKE_TIMEOUT * 0.8 <= took <= 3, took
    assert [m.name for m in server.state.users.values()] == ["Norm"]
    assert server.state.counters.refused == LORIS
    await norm.aclose()
    server.shutdown()
