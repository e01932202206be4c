"""Fixtures for server tests over trio.testing memory streams (no sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import attrs
import pytest
import trio
import trio.testing

from machat.server import ChatServer, ServerConfig
from tests.helpers import LineClient

Connect = Callable[..., Awaitable[LineClient]]


@pytest.fixture
def config() -> ServerConfig:
    return ServerConfig()


@pytest.fixture
async def server(nursery: trio.Nursery, config: ServerConfig) -> AsyncIterator[ChatServer]:
    srv = ChatServer(config)
    await nursery.start(srv.run)
    yield srv


@pytest.fixture
def connect(nursery: trio.Nursery, server: ChatServer) -> Connect:
    """Open a client over a memory stream; with ``name`` it also joins and reads the welcome."""

    async def _connect(
        name: str | None = None, room: str | None = "dev", *, lockstep: bool = False, **extra
    ) -> LineClient:
        make = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
        client_stream, server_stream = make()
        nursery.start_soon(server.handle, server_stream)
        client = LineClient(client_stream)
        if name is not None:
            await client.handshake(name, room, **extra)
            await client.expect_prefix("* Welcome")
            await client.expect(f"* {name} joined {room or 'lounge'}")
        return client

    return _connect


def with_config(**changes: object) -> pytest.MarkDecorator:
    """Parametrize the ``config`` fixture."""
    return pytest.mark.parametrize("config", [attrs.evolve(ServerConfig(), **changes)])
