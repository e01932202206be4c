"""Shared pieces for the account and moderation tests: a fast hasher, a fake clock,
and servers on loopback ports (`Setup`, `Chat`) with a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import argon2
import attrs
import pytest
import trio

from machat.server import ChatServer, ServerConfig
from tests.helpers import LineClient


class FakeClock:
    """A clock the test moves by hand: no test sleeps through a lockout minute."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingHasher(argon2.PasswordHasher):
    """A real argon2id hasher with the cheapest parameters, counting its verifications."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verified: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verified.append(hash if isinstance(hash, str) else hash.decode())
        return super().verify(hash, password)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


class Chat:
    """A server on a loopback port, and ways to connect to it."""

    def __init__(self, server: ChatServer, port: int) -> None:
        self.server = server
        self.port = port
        self.clients: list[LineClient] = []
        self.stopped = trio.Event()  # serve() returned: everything is written and closed

    async def open(self) -> LineClient:
        client = LineClient(await trio.open_tcp_stream("127.0.0.1", self.port))
        self.clients.append(client)
        return client

    async def join(self, name: str, room: str = "dev", **extra: object) -> LineClient:
        client = await self.open()
        await client.handshake(name, room, **extra)
        if extra.get("format") == "json":
            while (await client.json())["type"] != "join":
                pass
        else:
            await client.expect(f"* {name} joined {room}")
        return client

    async def refused(self, name: str, room: str = "dev", **extra: object) -> list[str]:
        client = await self.open()
        await client.handshake(name, room, **extra)
        lines = await client.until_closed()
        await client.aclose()
        return lines


@attrs.define
class Setup:
    tmp_path: Path
    nursery: trio.Nursery
    hasher: CountingHasher
    clock: FakeClock
    chats: list[Chat] = attrs.field(factory=list)

    @property
    def db(self) -> str:
        return str(self.tmp_path / "chat.db")

    @property
    def transcript(self) -> Path:
        return self.tmp_path / "transcript.log"

    async def start(self, **changes: object) -> Chat:
        config = ServerConfig(
            host="127.0.0.1",
            port=0,
            db_path=self.db,
            transcript_path=str(self.transcript),
            operators=("Mina",),
            stats_interval=0,
        )
        server = ChatServer(attrs.evolve(config, **changes), hasher=self.hasher)
        if server.accounts is not None:
            server.accounts.lockout.clock = self.clock
        stopped = trio.Event()

        async def serve(task_status: trio.TaskStatus[list[trio.SocketListener]]) -> None:
            await server.serve(task_status=task_status)
            stopped.set()

        listeners = await self.nursery.start(serve)
        chat = Chat(server, listeners[0].socket.getsockname()[1])
        chat.stopped = stopped
        self.chats.append(chat)
        return chat

    async def stop(self, chat: Chat) -> None:
        for client in chat.clients:
            await client.aclose()
        chat.server.shutdown()
        await chat.stopped.wait()


@pytest.fixture
async def setup(
    tmp_path: Path, nursery: trio.Nursery, hasher: CountingHasher, clock: FakeClock
) -> AsyncIterator[Setup]:
    s = Setup(tmp_path, nursery, hasher, clock)
    yield s
    with trio.fail_after(10):
        for chat in s.chats:
            await s.stop(chat)


@pytest.fixture
async def chat(setup: Setup) -> Chat:
    return await setup.start()


async def register(chat: Chat, name: str, password: str) -> None:
    """Join as ``name``, register it, and leave."""
    client = await chat.join(name)
    await client.send(f"/register {password}")
    await client.expect(f"* {name} is registered to you; from now on it needs its password to join")
    await client.send("/quit")
    await client.until_closed()
    await client.aclose()


async def operator(chat: Chat) -> LineClient:
    """Mina, registered and logged in: an operator (she is in ``operators``)."""
    await register(chat, "Mina", "mina-password")
    return await chat.join("Mina", auth="mina-password")
