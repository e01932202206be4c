"""Fixtures for cluster tests: real redis-server processes, backplanes, recording listeners.

Rules: Redis listens on a Unix socket in the test's temporary directory (or a free
loopback port); every wait is bounded by ``trio.fail_after``; waiting for a
condition parks on an event that the listener sets, never on a fixed sleep.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import pytest
import trio

from machat.cluster import Backplane, ClusterConfig
from machat.protocol import events as ev
from machat.protocol.formatting import encode_rows_text
from machat.server.passes import RoomPass
from tests.cluster.support import ROOT, NodeProcess, RedisProcess, node_command


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path / "redis")
    server.start()
    yield server
    server.kill()


class Recorder:
    """A `Listener` that writes down everything it hears."""

    def __init__(self) -> None:
        self.messages: dict[str, list[ev.Message]] = {}
        self.notices: list[tuple[str, ev.Event]] = []
        self.direct_events: list[tuple[ev.Event, list[str]]] = []
        self.broadcasts: list[ev.Broadcast] = []
        self.gone: list[tuple[str, tuple[tuple[str, str], ...]]] = []
        self.lost: list[tuple[tuple[str, ...], str]] = []
        self.moderated: list[ev.Moderation | ev.Topic] = []
        #: What `members_here` answers for every room (0: the deliverer never holds).
        self.members = 0
        #: Every hand-over: (room key, ids).
        self.hand_overs: list[tuple[str, list[int]]] = []
        #: Hand-overs (ids) and room notices, in the order they came.
        self.timeline: list[list[int] | ev.Event] = []
        self._changed = trio.Event()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, condition: Callable[[], bool], within: float = 5.0) -> None:
        with trio.fail_after(within):
            while not condition():
                await self._changed.wait()

    def ids(self, room: str) -> list[int]:
        return [m.id for m in self.messages.get(room, [])]

    def texts(self, room: str) -> list[str]:
        return [m.text for m in self.messages.get(room, [])]

    # -- Listener --
    def room_messages(self, room_key: str, messages: RoomPass) -> None:
        rows = messages.rows
        assert messages.text == encode_rows_text(rows)  # what the members are sent
        assert (messages.first_id, messages.last_id) == (rows[0][3], rows[-1][3])
        self.messages.setdefault(room_key, []).extend(ev.Message(*row) for row in rows)
        self.hand_overs.append((room_key, [row[3] for row in rows]))
        self.timeline.append([row[3] for row in rows])
        self._poke()

    def members_here(self, room_key: str) -> int:
        return self.members

    def room_notice(self, room_key: str, event: ev.Join | ev.Leave | ev.Nick) -> None:
        self.notices.append((room_key, event))
        self.timeline.append(event)
        self._poke()

    def direct(self, event: ev.Private | ev.GroupMessage, names: list[str]) -> None:
        self.direct_events.append((event, names))
        self._poke()

    def broadcast(self, event: ev.Broadcast) -> None:
        self.broadcasts.append(event)
        self._poke()

    def node_gone(self, node: str, users: Sequence[tuple[str, str]]) -> None:
        self.gone.append((node, tuple(users)))
        self._poke()

    def moderated_elsewhere(self, event: ev.Moderation | ev.Topic) -> None:
        self.moderated.append(event)
        self._poke()

    def names_lost(self, names: Sequence[str], reason: str) -> None:
        self.lost.append((tuple(names), reason))
        self._poke()


class Node:
    def __init__(self, backplane: Backplane, recorder: Recorder, scope: trio.CancelScope) -> None:
        self.bp = backplane
        self.rec = recorder
        self.scope = scope


@pytest.fixture
async def start_node(
    nursery: trio.Nursery, redis: RedisProcess
) -> AsyncIterator[Callable[..., object]]:
    """``await start_node("a", presence_ttl=2)``: a running backplane with a recorder."""

    async def _start(name: str, url: str | None = None, **options: object) -> Node:
        recorder = Recorder()
        config = ClusterConfig(url=url or redis.url, node=name, **options)  # type: ignore[arg-type]
        backplane = Backplane(config, recorder)
        scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[None]) -> None:
            with scope:
                await backplane.run(task_status=task_status)

        with trio.fail_after(5):
            await nursery.start(run)
        return Node(backplane, recorder, scope)

    yield _start


@pytest.fixture
async def start_process(
    nursery: trio.Nursery, redis: RedisProcess
) -> AsyncIterator[Callable[..., Awaitable[NodeProcess]]]:
    """``await start_process("a", "--presence-ttl", "2")``: a node as a real subprocess."""
    processes: list[NodeProcess] = []

    async def _start(name: str, *args: str, url: str | None = None) -> NodeProcess:
        process = await trio.lowlevel.open_process(
            node_command(url or redis.url, name, *args), stderr=subprocess.PIPE, cwd=ROOT
        )
        node = NodeProcess(process, name)
        processes.append(node)
        nursery.start_soon(node.read_log)
        try:
            with trio.fail_after(10):
                await node.joined.wait()
        except trio.TooSlowError:
            raise AssertionError(f"node {name} did not join:\n" + "\n".join(node.log)) from None
        return node

    yield _start
    for node in processes:
        await node.close_clients()
        if node.process.returncode is None:
            node.process.kill()
    with trio.move_on_after(10):
        for node in processes:
            await node.process.wait()
            await node.ended.wait()
