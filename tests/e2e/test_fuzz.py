"""A live server against hostile clients chosen by hypothesis.

Each example runs its own server on 127.0.0.1, port 0, in its own ``trio.run``
(hypothesis does not drive async tests): a well-behaved client chats in a room
while fuzzed clients send random bytes in random chunks, invalid UTF-8, giant
lines, handshakes that never end, and leave by closing, half-closing or resetting.
Afterwards the server must still serve, the good client must have every one of its
own messages in order, and nothing of the fuzzed clients may remain.

Rules: 127.0.0.1 only, port 0, every wait bounded by trio.fail_after, every stream closed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
from collections.abc import Iterator

import attrs
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from machat.server import ChatServer, ServerConfig
from tests.helpers import LineClient

GOOD_LINES = 15

INVALID_UTF8 = [
    b"\xff",
    b"\xfe\xfe",
    b"\xc3(",
    b"\xa0\xa1",
    b"\xe2\x28\xa1",
    b"\xf0\x28\x8c\xbc",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"\x00",
    b"\x1b[2J",
]
COMMANDS = [
    b"/join ops",
    b"/join dev",
    b"/nick Good",
    b"/nick Other",
    b"/stats",
    b"/list",
    b"/who",
    b"/rooms",
    b":quit",
    b"@ALL:hi",
    b"/msg Good hi",
    b"/msg Nobody hi",
    b"/group #g Good",
    b"/history 5",
    b"/help",
    b"/",
    b"/nick",
    b"\r",
    b"",
]


@attrs.frozen
class Behaviour:
    kind: str
    handshake: bool  # starts with a valid handshake
    payload: bytes
    chunks: tuple[int, ...]  # sizes of the first writes; the rest goes in one
    ending: str  # close | reset | eof | keep


def _lines(parts: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.lists(parts, max_size=8).map(lambda ls: b"".join(line + b"\n" for line in ls))


PAYLOADS = {
    "random": (False, st.binary(max_size=400)),
    "endless_handshake": (
        False,
        st.text('abcdefgh{[":, ', max_size=40).map(lambda t: b'{"name": "' + t.encode()),
    ),
    "giant_handshake": (False, st.integers(4097, 9000).map(lambda n: b"{" + b" " * n)),
    "garbage": (True, st.binary(max_size=400)),
    "invalid_utf8": (
        True,
        _lines(st.lists(st.sampled_from(INVALID_UTF8), min_size=1).map(b"x".join)),
    ),
    "giant_line": (
        True,
        st.tuples(st.integers(4097, 20000), st.booleans()).map(
            lambda t: b"a" * t[0] + (b"\nafter\n" if t[1] else b"")
        ),
    ),
    "commands": (True, _lines(st.sampled_from(COMMANDS))),
    "odd_handshake": (
        False,
        st.tuples(
            st.dictionaries(
                st.sampled_from(["name", "room", "format", "password", "history", "x"]),
                st.one_of(
                    st.sampled_from(["Good", "Fz", "dev", "json", "text", "", "a b", "#g"]),
                    st.text(max_size=8),
                    st.integers(),
                    st.none(),
                    st.booleans(),
                    st.lists(st.integers(), max_size=2),
                ),
            ),
            _lines(st.sampled_from(COMMANDS)),
        ).map(lambda t: json.dumps(t[0]).encode() + t[1]),
    ),
    "crlf_soup": (True, st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"x"])).map(b"".join)),
}


@st.composite
def behaviours(draw: st.DrawFn) -> Behaviour:
    kind = draw(st.sampled_from(sorted(PAYLOADS)))
    handshake, payload = PAYLOADS[kind]
    return Behaviour(
        kind=kind,
        handshake=handshake,
        payload=draw(payload),
        chunks=tuple(draw(st.lists(st.integers(1, 64), max_size=6))),
        ending=draw(st.sampled_from(["close", "reset", "eof", "keep"])),
    )


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(self.format(record))


@contextlib.contextmanager
def _server_errors() -> Iterator[list[str]]:
    handler = _ErrorLog()
    log = logging.getLogger("machat")
    log.addHandler(handler)
    try:
        yield handler.messages
    finally:
        log.removeHandler(handler)


async def _reset(stream: trio.SocketStream) -> None:
    """Close with an RST instead of a FIN."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


async def _fuzz(port: int, index: int, b: Behaviour, done: trio.Event) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        data = b.payload
        if b.handshake:
            data = b'{"name": "Fz%d", "room": "dev"}' % index + data
        for size in b.chunks:
            if not data:
                break
            chunk, data = data[:size], data[size:]
            await stream.send_all(chunk)
            await trio.sleep(0.001)
        if data:
            await stream.send_all(data)
    except trio.BrokenResourceError:  # the server may hang up on us first (e.g. :quit)
        pass
    if b.ending == "reset":
        await _reset(stream)
        return
    if b.ending == "close":
        await stream.aclose()
        return
    if b.ending == "eof":
        try:
            await stream.send_eof()
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
    else:  # keep: stay connected, never read, until the good client is done
        await done.wait()
    await stream.aclose()


async def _example(fuzzers: list[Behaviour]) -> None:
    config = ServerConfig(
        host="127.0.0.1", port=0, rate=0, max_per_ip=0, handshake_timeout=5.0, flush_timeout=1.0
    )
    server = ChatServer(config)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            port = listeners[0].socket.getsockname()[1]
            good = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
            await good.handshake("Good", "dev")
            await good.expect("* Good joined dev")
            done = trio.Event()
            async with trio.open_nursery() as clients:
                for i, b in enumerate(fuzzers):
                    clients.start_soon(_fuzz, port, i, b, done)
                for i in range(GOOD_LINES):
                    await good.send(f"n{i}")
                    await trio.sleep(0.002)
                await good.expect(f"Good:n{GOOD_LINES - 1}")
                done.set()
            # Every fuzzed connection is closed: the server must forget them all.
            # Members are forgotten before their connection ends, so this covers both.
            await server.wait_connections(at_most=1)
            assert [m.name for m in server.state.users.values()] == ["Good"]
            assert list(server.state.rooms) == ["dev"]
            assert server.state.groups == {}
            # And still serve.
            late = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
            await late.handshake("Late", "dev")
            await late.expect("* Late joined dev")
            await late.send("hello")
            await late.expect("Late:hello")
            await good.expect("Late:hello")
            await late.aclose()
            await good.aclose()
            server.shutdown()
    mine = [line for line in good.seen if line.startswith("Good:")]
    assert mine == [f"Good:n{i}" for i in range(GOOD_LINES)]
    assert not [line for line in good.seen if line.startswith("!")]


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(behaviours(), min_size=1, max_size=3))
def test_hostile_clients_never_hurt_the_server_or_a_good_client(fuzzers: list[Behaviour]) -> None:
    with _server_errors() as errors:
        trio.run(_example, fuzzers)
    assert not errors


def test_every_behaviour_kind_and_ending_runs() -> None:
    """Each kind of hostility once, explicitly, whatever hypothesis happens to draw."""
    examples = [
        Behaviour("random", False, bytes(range(256)) * 2, (1, 7, 3), "close"),
        Behaviour("endless_handshake", False, b'{"name": "Slo', (2, 2), "keep"),
        Behaviour("giant_handshake", False, b"{" + b" " * 5000, (), "eof"),
        Behaviour("garbage", True, b"\x00\xff\n\r\n\xfe" * 50, (5, 1), "reset"),
        Behaviour("invalid_utf8", True, b"\xc3(\n\xff\nok\n", (3,), "eof"),
        Behaviour("giant_line", True, b"a" * 9000 + b"\nafter\n", (), "keep"),
        Behaviour("giant_line", True, b"a" * 9000, (), "reset"),
        Behaviour("commands", True, b"/join ops\n@ALL:hi\n/group #g Good\nhalf a li", (), "close"),
        Behaviour("commands", True, b":quit\n", (), "reset"),
        Behaviour("crlf_soup", True, b"\r\r\n\n\rx\r", (1, 1, 1), "eof"),
    ]
    with _server_errors() as errors:
        trio.run(_example, examples)
    assert not errors
