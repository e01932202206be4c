"""The transport seam: senders over a real socket pair, the room's one-pass fan-out,
and a connection served through the narrow `Hub` interface by a fake transport.

Socket tests use `trio.socket.socketpair` (a Unix socket pair: no network at all)
with small kernel buffers, so that "the kernel's buffer is full" happens quickly.
"""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from machat.protocol import events as ev
from machat.protocol.errors import ChatError, ErrorCode
from machat.protocol.formatting import Format
from machat.protocol.handshake import Handshake
from machat.server import ChatServer, ServerConfig
from machat.server.connection import serve_connection
from machat.server.member import Member
from machat.server.room import Room
from machat.server.state import Counters
from machat.server.transport import (
    MEMORY_PEER,
    Peer,
    SenderState,
    SocketSender,
    StreamSender,
    transport_for_stream,
)
from tests.helpers import QueueSender


def _small_socketpair() -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    a, b = trio.socket.socketpair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return a, b


async def _read_exactly(sock: trio.socket.SocketType, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = await sock.recv(65536)
        assert chunk, f"EOF after {len(data)} of {n} bytes"
        data += chunk
    return bytes(data)


class _Closed:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


# -- SocketSender ------------------------------------------------------------------


async def test_a_keeping_up_reader_is_written_directly_with_no_task(
    nursery: trio.Nursery,
) -> None:
    a, b = _small_socketpair()
    with a, b:
        closed = _Closed()
        sender = SocketSender(a.fileno(), 1 << 20, nursery, closed)
        tasks_before = len(nursery.child_tasks)
        assert sender.send_nowait(b"hello\n")
        assert sender.pending_bytes == 0
        assert len(nursery.child_tasks) == tasks_before  # written from this call: no drainer
        with trio.fail_after(5):
            assert await _read_exactly(b, 6) == b"hello\n"
        sender.close(b"bye\n")
        assert sender.state is SenderState.CLOSED
        assert closed.calls == 1
        with trio.fail_after(5):
            await sender.wait_flushed()
            assert await _read_exactly(b, 4) == b"bye\n"
        assert not sender.send_nowait(b"late\n")


async def test_a_full_kernel_buffer_starts_one_drainer_and_order_is_kept(
    nursery: trio.Nursery,
) -> None:
    a, b = _small_socketpair()
    with a, b:
        sender = SocketSender(a.fileno(), 1 << 20, nursery, _Closed())
        chunks = [f"line {i:05d} ".encode() + b"x" * 100 + b"\n" for i in range(2000)]
        for chunk in chunks:
            assert sender.send_nowait(chunk)
        assert sender.pending_bytes > 0  # the kernel could not take 230 KB at once
        await trio.testing.wait_all_tasks_blocked()
        drainers = [t for t in nursery.child_tasks if "_drain" in t.name]
        assert len(drainers) == 1
        expected = b"".join(chunks)
        with trio.fail_after(10):
            got = await _read_exactly(b, len(expected))
        assert got == expected
        await trio.testing.wait_all_tasks_blocked()
        assert sender.pending_bytes == 0
        assert not [t for t in nursery.child_tasks if "_drain" in t.name]  # it ended


async def test_overflow_then_evict_sends_the_error_after_a_whole_line(
    nursery: trio.Nursery,
) -> None:
    a, b = _small_socketpair()
    with a, b:
        closed = _Closed()
        sender = SocketSender(a.fileno(), 50_000, nursery, closed)
        line = b"y" * 999 + b"\n"
        accepted = 0
        while sender.send_nowait(line):
            accepted += 1
        assert sender.overflowed
        assert sender.pending_bytes <= len(line)  # only the rest of a half-written line is kept
        sender.evict(b"! ERROR 111 too slow\n")
        assert not sender.send_nowait(line)
        with trio.fail_after(10):
            data = bytearray()
            while not data.endswith(b"! ERROR 111 too slow\n"):
                chunk = await b.recv(65536)
                assert chunk
                data += chunk
            await sender.wait_flushed()
        body = bytes(data).removesuffix(b"! ERROR 111 too slow\n")
        assert body == line * (len(body) // len(line))  # whole lines only, in order
        assert len(body) // len(line) <= accepted
        assert closed.calls == 1


async def test_a_peer_that_went_away_closes_the_sender(nursery: trio.Nursery) -> None:
    a, b = _small_socketpair()
    with a, b:
        closed = _Closed()
        sender = SocketSender(a.fileno(), 1 << 20, nursery, closed)
        b.close()
        sender.send_nowait(b"anyone?\n")
        for _ in range(3):  # the first write may land before the kernel notices
            sender.send_nowait(b"anyone?\n")
        with trio.fail_after(5):
            await sender.wait_flushed()
        assert sender.state is SenderState.CLOSED
        assert closed.calls == 1


async def test_stream_sender_flushes_then_reports_closed(nursery: trio.Nursery) -> None:
    left, right = trio.testing.memory_stream_pair()
    closed = _Closed()
    sender = StreamSender(left, 1 << 20, nursery, closed)
    assert sender.send_nowait(b"one\n")
    sender.close(b"two\n")
    with trio.fail_after(5):
        await sender.wait_flushed()
        assert await right.receive_some() == b"one\ntwo\n"
    assert closed.calls == 1


async def test_plain_tcp_gets_the_direct_socket_transport() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    async with listener:
        port = listener.socket.getsockname()[1]
        with trio.fail_after(5):
            client = await trio.open_tcp_stream("127.0.0.1", port)
            accepted = await listener.accept()
        async with client, accepted:
            transport = transport_for_stream(accepted)
            assert type(transport).__name__ == "SocketTransport"
            assert transport.peer.ip == "127.0.0.1"
            assert transport.peer.label == f"127.0.0.1:{client.socket.getsockname()[1]}"
            memory, _ = trio.testing.memory_stream_pair()
            assert type(transport_for_stream(memory)).__name__ == "StreamTransport"


# -- the room's pass ---------------------------------------------------------------


class _RecordingSender(QueueSender):
    def __init__(self) -> None:
        super().__init__(1 << 20)
        self.calls: list[bytes] = []

    def send_nowait(self, data: bytes) -> bool:
        self.calls.append(data)
        return super().send_nowait(data)


class _TimedSender(QueueSender):
    """Notes when each pass reaches it."""

    def __init__(self) -> None:
        super().__init__(1 << 20)
        self.times: list[float] = []

    def send_nowait(self, data: bytes) -> bool:
        self.times.append(trio.current_time())
        return super().send_nowait(data)


async def test_one_pass_hands_every_member_the_same_joined_bytes(nursery: trio.Nursery) -> None:
    room = Room("dev")
    members = [
        Member(f"M{i}", Format.TEXT if i % 2 else Format.JSON, _RecordingSender())
        for i in range(4)
    ]
    for m in members:
        room.add(m)
    nursery.start_soon(room.run)
    for i in range(5):
        room.send_nowait("M1", f"hello {i}")
    await trio.testing.wait_all_tasks_blocked()
    calls = [m.sender.calls for m in members]  # type: ignore[attr-defined]
    assert all(len(c) == 1 for c in calls)  # one send per member for the whole pass
    text = b"".join(f"M1:hello {i}\n".encode() for i in range(5))
    assert calls[1][0] == calls[3][0] == text
    assert calls[1][0] is calls[3][0]  # the same object, not a copy per member
    assert calls[0][0] is calls[2][0]
    assert calls[0][0].count(b'"type":"message"') == 5
    assert room.last_id == 5
    assert room.messages_out == 20


async def test_a_barrier_waits_for_what_was_queued_before_it(nursery: trio.Nursery) -> None:
    room = Room("dev")
    member = Member("Mina", Format.TEXT, _RecordingSender())
    room.add(member)
    nursery.start_soon(room.run)
    room.send_nowait("Mina", "before")
    with trio.fail_after(1):
        await room.barrier()
    assert member.sender.take_nowait() == b"Mina:before\n"  # type: ignore[attr-defined]


# -- a connection over a fake transport, hosted by a minimal hub ---------------------


class _ChunkTransport:
    """Plays a fixed list of chunks, then EOF; output goes to a QueueSender."""

    def __init__(self, chunks: list[bytes], peer: Peer = MEMORY_PEER) -> None:
        self._chunks = list(chunks)
        self.peer = peer
        self.sender: QueueSender | None = None
        self.closed = False

    async def receive_some(self) -> bytes:
        await trio.lowlevel.checkpoint()
        return self._chunks.pop(0) if self._chunks else b""

    def open_sender(self, limit, nursery, on_closed):  # noqa: ANN001
        self.sender = QueueSender(limit)
        return self.sender

    async def aclose(self) -> None:
        self.closed = True


class _EchoHub:
    """The smallest Hub: admits one name, echoes lines, refuses the name 'Taken'."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.config = ServerConfig(rate=0)
        self.counters = Counters()
        self.events: list[str] = []

    def open_connection(self, peer: Peer) -> str | None:
        self.events.append(f"open {peer.ip}")
        return None

    def close_connection(self, peer: Peer) -> None:
        self.events.append(f"close {peer.ip}")

    async def admit(self, member: Member, handshake: Handshake) -> None:
        if member.name == "Taken":
            raise ChatError(ErrorCode.NAME_IN_USE, "name Taken is already in use; pick another")
        self.events.append(f"admit {member.name} {handshake.room}")

    def say_nowait(self, member: Member, texts: list[str]) -> bool:
        return False  # every line goes to dispatch

    async def dispatch(self, member: Member, text: str) -> str | None:
        member.send_event(ev.Info(f"echo {text}"))
        return None

    def leave(self, member: Member, reason: str) -> None:
        self.events.append(f"leave {member.name} {reason}")


async def test_a_connection_needs_only_the_hub(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    hub = _EchoHub(nursery)
    transport = _ChunkTransport([b'{"name": "Mina", "room": "dev"}\n', b"hi\nthere\n"])
    with trio.fail_after(10):
        await serve_connection(hub, transport)
    assert transport.sender is not None
    assert transport.sender.take_nowait() == b"* echo hi\n* echo there\n"
    assert hub.events == [
        "open memory",
        "admit Mina dev",
        "leave Mina disconnected",
        "close memory",
    ]
    assert transport.closed


async def test_a_chat_error_refuses_with_its_line(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    hub = _EchoHub(nursery)
    transport = _ChunkTransport([b'{"name": "Taken"}'])
    with trio.fail_after(10):
        await serve_connection(hub, transport)
    assert transport.sender is not None
    assert transport.sender.take_nowait() == (
        b"! ERROR 101 name Taken is already in use; pick another\n"
    )
    assert hub.counters.refused == 1
    assert hub.events == ["open memory", "close memory"]


# -- statistics are data --------------------------------------------------------------


async def test_statistics_is_a_frozen_snapshot(nursery: trio.Nursery) -> None:
    server = ChatServer(ServerConfig(rate=0))
    await nursery.start(server.run)
    before = server.statistics()
    assert (before.users, before.rooms, before.messages_in) == (0, 0, 0)
    client_stream, server_stream = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle, server_stream)
    from tests.helpers import LineClient

    client = LineClient(client_stream)
    with trio.fail_after(5):
        await client.handshake("Mina", "dev")
        await client.expect("* Mina joined dev")
        await client.send("one", "two")
        await client.expect("Mina:two")
    after = server.statistics()
    assert (after.users, after.rooms, after.connections_open) == (1, 1, 1)
    assert (after.messages_in, after.messages_out) == (2, 2)
    assert before.users == 0  # a snapshot, not a live view
    with pytest.raises(AttributeError):
        after.users = 5  # type: ignore[misc]
    assert after.format().startswith("stats: 1 online, 1 connections, 1 rooms")


async def _big_room(interval: float, size: int) -> tuple[Room, list[_RecordingSender]]:
    room = Room("big", fanout_interval=interval)
    senders = [_RecordingSender() for _ in range(size)]
    for i, sender in enumerate(senders):
        room.add(Member(f"M{i}", Format.TEXT, sender))
    return room, senders


async def test_a_big_room_lets_a_trickle_of_lines_share_passes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    room, senders = await _big_room(0.005, 100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        for i in range(20):  # one line a millisecond (on the autojump clock)
            room.send_nowait("M1", f"line {i}")
            await trio.sleep(0.001)
        room.close()  # the room fans out what is queued, then its task ends
    calls = senders[0].calls
    # The first line goes out at once; then a pass every 5 ms, each with the lines
    # that came meanwhile: 20 lines in 5 passes, not 20.
    assert calls[0] == b"M1:line 0\n"
    counts = [c.count(b"\n") for c in calls]
    assert counts[0] == 1 and len(counts) == 5 and max(counts) <= 6, counts
    assert b"".join(calls) == b"".join(f"M1:line {i}\n".encode() for i in range(20))
    assert all(c is s.calls[k] for s in senders for k, c in enumerate(calls))


@pytest.mark.parametrize(
    ("size", "spacing"), [(100, 0.005), (150, 0.0075), (200, 0.01), (500, 0.01)]
)
async def test_a_bigger_room_spaces_a_trickle_more(
    autojump_clock: trio.testing.MockClock, size: int, spacing: float
) -> None:
    """A pass costs a write per member: the interval grows with the room, from the
    fan-out interval at 100 members to twice that at 200 and beyond."""
    room, _ = await _big_room(0.005, size - 1)
    watcher = _TimedSender()
    room.add(Member("Watcher", Format.TEXT, watcher))
    passes = watcher.times
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        start = trio.current_time()
        for i in range(40):  # a line every 2 ms, for 80 ms: passes stay thin
            room.send_nowait("M1", f"line {i}")
            await trio.sleep(0.002)
        room.close()
    gaps = [round(b - a, 6) for a, b in zip(passes, passes[1:], strict=False)]
    assert passes[0] == start  # the first line at once
    assert min(gaps) == pytest.approx(spacing), gaps
    assert len(passes) <= 2 + 0.080 / spacing, gaps


async def test_a_quiet_or_small_room_never_waits(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    big, big_senders = await _big_room(0.005, 100)
    small, small_senders = await _big_room(0.005, 99)
    nursery.start_soon(big.run)
    nursery.start_soon(small.run)
    for room, senders, gap in [(big, big_senders, 0.006), (small, small_senders, 0.001)]:
        for i in range(5):
            start = trio.current_time()
            room.send_nowait("M1", f"line {i}")
            await trio.testing.wait_all_tasks_blocked()
            assert trio.current_time() == start  # delivered without waiting
            assert senders[0].calls[-1] == f"M1:line {i}\n".encode()
            await trio.sleep(gap)


async def test_a_full_pass_does_not_make_the_next_wait(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    room, senders = await _big_room(0.005, 100)
    nursery.start_soon(room.run)
    for i in range(9):  # nine lines in one pass: not a thin one
        room.send_nowait("M1", f"a{i}")
    await trio.testing.wait_all_tasks_blocked()
    start = trio.current_time()
    room.send_nowait("M1", "b")
    await trio.testing.wait_all_tasks_blocked()
    assert trio.current_time() == start
    assert senders[0].calls == [b"".join(f"M1:a{i}\n".encode() for i in range(9)), b"M1:b\n"]
