"""Fixtures for the web side: a real server on 127.0.0.1 port 0, and a WebSocket client.

Localhost only, port 0; every wait is bounded (the client's own timeouts inside,
trio.fail_after outside).  The WebSocket client is the independent `websockets`
library's sync client, run in a worker thread.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio
from websockets.sync.client import ClientConnection, connect

from machat.server import ChatServer, ServerConfig
from tests.helpers import LineClient

TIMEOUT = 10
REPO = Path(__file__).resolve().parents[2]


@attrs.define
class Running:
    server: ChatServer
    port: int
    nursery: trio.Nursery
    clients: list = attrs.Factory(list)
    clients_streams: list = attrs.Factory(list)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/mychat"

    async def tcp(self, name: str | None = None, room: str = "dev", **extra) -> LineClient:
        stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        client = LineClient(stream)
        self.clients.append(client)
        if name is not None:
            await client.handshake(name, room, **extra)
            await client.expect_prefix("* Welcome")
        return client

    async def ws(self, name: str | None = None, room: str = "dev", **kw) -> WsClient:
        client = await WsClient.open(self.url, **kw)
        self.clients.append(client)
        if name is not None:
            await client.send(json.dumps({"name": name, "room": room}))
            await client.expect_prefix("* Welcome")
        return client


@pytest.fixture
def config() -> ServerConfig:
    return ServerConfig(host="127.0.0.1", port=0, stats_interval=0)


async def start(nursery: trio.Nursery, config: ServerConfig) -> Running:
    server = ChatServer(config)
    listeners = await nursery.start(server.serve)
    return Running(server, listeners[0].socket.getsockname()[1], nursery)


@pytest.fixture
async def running(nursery: trio.Nursery, config: ServerConfig) -> AsyncIterator[Running]:
    run = await start(nursery, config)
    yield run
    for client in run.clients:
        if isinstance(client, WsClient):
            client.conn.socket.close()
        else:
            await trio.aclose_forcefully(client.stream)
    for stream in run.clients_streams:
        await trio.aclose_forcefully(stream)


async def in_thread(fn: Callable, *args):
    with trio.fail_after(TIMEOUT):
        return await trio.to_thread.run_sync(partial(fn, *args), abandon_on_cancel=True)


class WsClient:
    """The `websockets` sync client, driven from trio through a worker thread."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, url: str, **kw) -> WsClient:
        options = dict(
            proxy=None,
            open_timeout=5,
            compression=None,
            ping_interval=None,
            close_timeout=2,
            legacy=True,
        )
        options.update(kw)
        return cls(await in_thread(lambda: connect(url, **options)))

    async def send(self, message: str | bytes) -> None:
        await in_thread(self.conn.send, message)

    async def recv(self) -> str:
        return await in_thread(partial(self.conn.recv, timeout=5))

    async def line(self) -> str:
        message = await self.recv()
        assert isinstance(message, str) and message.endswith("\n"), message
        return message[:-1]

    async def expect(self, wanted: str) -> list[str]:
        skipped = []
        while (text := await self.line()) != wanted:
            skipped.append(text)
        return skipped

    async def expect_prefix(self, prefix: str) -> str:
        while not (text := await self.line()).startswith(prefix):
            pass
        return text

    async def close(self, code: int = 1000) -> None:
        await in_thread(partial(self.conn.close, code))

    async def closed(self) -> tuple[list[str], int | None]:
        """Every line until the server closes, and the close code it sent."""
        from websockets.exceptions import ConnectionClosed

        lines = []
        try:
            while True:
                lines.append(await self.line())
        except ConnectionClosed:
            pass
        rcvd = self.conn.protocol.close_rcvd
        return lines, (rcvd.code if rcvd is not None else None)
