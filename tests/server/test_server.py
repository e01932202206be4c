"""The server over memory streams, on trio's autojump clock: no sockets, no real time."""

from __future__ import annotations

import trio
import trio.testing

from machat.server import ChatServer

from .conftest import Connect, with_config


async def test_room_members_see_each_other_and_their_own_echo(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        await mina.expect("* Bob joined dev")
        other = await connect("Eve", room="ops")
        await mina.send("hello")
        await bob.send("hi mina")
        assert await mina.line() == "Mina:hello"
        assert await mina.line() == "Bob:hi mina"
        assert await bob.line() == "Mina:hello"
        assert await bob.line() == "Bob:hi mina"
        await other.send("anyone?")
        assert await other.line() == "Eve:anyone?"
    # Eve's room is isolated: nothing of dev reached her, nothing of hers reached dev.
    assert not [line for line in other.seen if "Mina" in line or "Bob" in line]
    assert "Eve:anyone?" not in mina.seen + bob.seen


async def test_bytes_sent_with_the_handshake_are_not_lost(connect: Connect) -> None:
    with trio.fail_after(5):
        client = await connect()
        # MaChat's client sends no newline; chat lines may follow in the same packet.
        await client.send_raw(b'{"name": "Mina", "room": "dev"}first\nsecond\n')
        await client.expect("Mina:first")
        assert await client.line() == "Mina:second"


async def test_exactly_one_newline_after_the_handshake_is_skipped(connect: Connect) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.send_raw(b'{"name": "Mina", "room": "dev"}\r\n')
        await client.expect("* Mina joined dev")
        await client.send_raw(b"x\n")
        assert await client.line() == "Mina:x"


@with_config(rate=0)
async def test_lines_are_delivered_in_the_order_the_room_received_them(
    connect: Connect,
) -> None:
    with trio.fail_after(30):
        a = await connect("A")
        b = await connect("B")
        c = await connect("C")
        await a.expect("* C joined dev")
        await b.expect("* C joined dev")

        async def talk(client, tag: str) -> None:
            for i in range(200):
                await client.send(f"{tag}{i}")
                if i % 7 == 0:
                    await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(talk, a, "a")
            nursery.start_soon(talk, b, "b")
        got = {}
        for name, client in (("A", a), ("B", b), ("C", c)):
            got[name] = [await client.line() for _ in range(400)]
    # Everyone sees the same total order, and each sender's lines in sending order.
    assert got["A"] == got["B"] == got["C"]
    assert [x for x in got["C"] if x.startswith("A:")] == [f"A:a{i}" for i in range(200)]
    assert [x for x in got["C"] if x.startswith("B:")] == [f"B:b{i}" for i in range(200)]


async def test_handshake_timeout_closes_with_an_error(
    connect: Connect, autojump_clock: trio.testing.MockClock
) -> None:
    client = await connect()
    await client.send_raw(b'{"name": "Mi')  # half a handshake, then nothing
    with trio.fail_after(60):
        lines = await client.until_closed()
    assert lines == ["! ERROR 110 timed out: no complete handshake within 10 s"]
    assert trio.current_time() >= 10


@with_config(handshake_timeout=2.0)
async def test_handshake_timeout_is_configurable(
    connect: Connect, autojump_clock: trio.testing.MockClock
) -> None:
    client = await connect()
    start = trio.current_time()
    with trio.fail_after(60):
        lines = await client.until_closed()
    assert lines[0].startswith("! ERROR 110")
    assert 2 <= trio.current_time() - start < 3


async def test_refused_handshakes_get_one_error_line_and_are_closed(
    connect: Connect, server: ChatServer
) -> None:
    cases = [
        (b"hello\n", "! ERROR 106 "),
        (b'{"name": 5}', "! ERROR 106 invalid handshake: invalid value for type"),
        (b'{"nmae": "x", "name": "y"}', "! ERROR 106 invalid handshake: unexpected field(s): nmae"),
        (b"[1, 2]", "! ERROR 106 "),
        (b'{"name": "x"', None),  # incomplete, then EOF: just closed
        (b'{"name": "9lives"}', "! ERROR 100 "),
        (b'{"name": "ALL"}', "! ERROR 100 "),
        (b'{"name": "ok", "room": "-bad"}', "! ERROR 107 "),
        (b'{"name": "ok", "room": "' + b"r" * 65 + b'"}', "! ERROR 107 "),
        (b"{" + b" " * 5000, "! ERROR 106 invalid handshake: larger than 4096 bytes"),
        (b'{"name": "\xff"}', "! ERROR 106 invalid handshake: not valid UTF-8"),
    ]
    for raw, expected in cases:
        with trio.fail_after(5):
            client = await connect()
            await client.send_raw(raw)
            if expected is None:
                await client.stream.send_eof()
                await client.aclose()
                continue
            lines = await client.until_closed()
        assert len(lines) == 1, (raw, lines)
        assert lines[0].startswith(expected), (raw, lines)
    await trio.testing.wait_all_tasks_blocked()
    assert server.state.users == {}
    assert server.state.rooms == {}


async def test_names_are_unique_case_insensitively(connect: Connect, server: ChatServer) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        impostor = await connect()
        await impostor.handshake("mina", "other")
        lines = await impostor.until_closed()
    assert lines == ["! ERROR 101 name mina is already in use; pick another"]
    # The refused client was never seen by anyone.
    await mina.send("still here")
    with trio.fail_after(5):
        assert await mina.line() == "Mina:still here"
    assert list(server.state.rooms) == ["dev"]


async def test_long_lines_and_bad_text_get_errors_and_the_connection_stays_usable(
    connect: Connect,
) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        await mina.send_raw(b"x" * 5000 + b"\n")
        assert (await mina.line()).startswith("! ERROR 105 line too long")
        await mina.send_raw(b"caf\xc3\n")
        assert (await mina.line()).startswith("! ERROR 112 invalid text: not valid UTF-8")
        await mina.send_raw(b"\x1b[31mred\n")
        assert (await mina.line()).startswith("! ERROR 112 invalid text: control characters")
        await mina.send("tab\tand caf\u00e9 ok")
        assert await mina.line() == "Mina:tab\tand caf\u00e9 ok"


@with_config(max_line=10)
async def test_max_line_is_configurable(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        await mina.send("0123456789", "0123456789X", "ok")
        lines = [await mina.line() for _ in range(3)]
    # Direct replies (errors) may overtake the room's echo; room lines keep their order.
    assert [x for x in lines if not x.startswith("!")] == ["Mina:0123456789", "Mina:ok"]
    assert [x for x in lines if x.startswith("!")] == [
        "! ERROR 105 line too long (limit 10 bytes); line discarded"
    ]


async def test_empty_rooms_are_freed_and_members_forgotten(
    connect: Connect, server: ChatServer
) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob", room="ops")
        assert sorted(server.state.rooms) == ["dev", "ops"]
        await mina.send("/quit")
        assert await mina.until_closed() == ["* bye"]
        await bob.aclose()
        await trio.testing.wait_all_tasks_blocked()
    assert server.state.rooms == {}
    assert server.state.users == {}


async def test_leaving_is_announced_to_the_room(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        await bob.send(":quit")
        await mina.expect("* Bob left dev (quit)")
        await (await connect("Eve")).aclose()
        await mina.expect("* Eve left dev (disconnected)")


@with_config(outbox_limit=64 * 1024, rate=0)
async def test_a_client_that_never_reads_is_evicted_and_the_room_goes_on(
    connect: Connect, server: ChatServer, autojump_clock: trio.testing.MockClock
) -> None:
    talker = await connect("Talker")
    # A lockstep pair has no buffer at all: the server's writes wait for reads that
    # never come, like a client whose TCP window is full.
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle, server_stream)
        with trio.fail_after(60):
            await client_stream.send_all(b'{"name": "Sloth", "room": "dev"}\n')
            await talker.expect("* Sloth joined dev")
            payload = "x" * 1000
            peak = 0
            for i in range(500):
                await talker.send(f"{i} {payload}")
                assert (await talker.line()).startswith(f"Talker:{i} ")
                member = server.state.lookup("Sloth")
                if member is not None:
                    peak = max(peak, member.sender.pending_bytes)
            await talker.expect("* Sloth left dev (evicted)")
        nursery.cancel_scope.cancel()
    assert peak <= 64 * 1024
    assert server.state.lookup("Sloth") is None
    assert server.state.counters.evictions == 1


async def test_shutdown_tells_everyone_and_ends(connect: Connect, server: ChatServer) -> None:
    with trio.fail_after(10):
        mina = await connect("Mina")
        bob = await connect("Bob", room="ops")
        server.shutdown()
        assert (await mina.until_closed())[-1] == "* server shutting down"
        assert (await bob.until_closed())[-1] == "* server shutting down"


async def test_messages_out_are_counted_after_their_room_is_freed(
    connect: Connect, server: ChatServer
) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        await mina.send("one", "two")
        await bob.expect("Mina:two")
        assert server.state.messages_out() == 4  # two messages, two members each
        await mina.aclose()
        await bob.aclose()
        await trio.testing.wait_all_tasks_blocked()
    assert server.state.rooms == {}
    assert server.state.messages_out() == 4


async def test_wait_connections_returns_once_enough_have_ended(
    connect: Connect, server: ChatServer
) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        done = trio.Event()

        async def waiter() -> None:
            await server.wait_connections(at_most=1)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()  # two connections are still open
            await bob.aclose()
        assert server.active_connections == 1
        await mina.aclose()


async def test_since_in_the_handshake_replays_exactly_what_was_missed(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina", "dev")
        await mina.send("one", "two", "three")
        await mina.expect("Mina:three")
        bob = await connect()
        await bob.handshake("Bob", "dev", since=1, format="json")
        welcome = await bob.json()
        assert welcome["type"] == "welcome"
        replay = await bob.json()
        assert replay["type"] == "history"
        assert [m["text"] for m in replay["messages"]] == ["two", "three"]
        assert [m["id"] for m in replay["messages"]] == [2, 3]
        assert "complete" not in replay
        eve = await connect()
        await eve.handshake("Eve", "dev", since=3)
        await eve.expect_prefix("* Welcome")
        assert await eve.line() == "* no history in dev"
        await eve.expect("* Eve joined dev")


@with_config(history_limit=2)
async def test_since_says_when_some_messages_are_gone(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina", "dev")
        await mina.send("one", "two", "three")
        await mina.expect("Mina:three")
        bob = await connect()
        await bob.handshake("Bob", "dev", since=0, format="json")
        await bob.json()
        replay = await bob.json()
        assert replay["complete"] is False
        assert [m["text"] for m in replay["messages"]] == ["two", "three"]
        eve = await connect()
        await eve.handshake("Eve", "dev", since=0)
        await eve.expect_prefix("* Welcome")
        assert await eve.line() == "* some earlier messages of dev are no longer kept"
        assert (await eve.line()).endswith("] Mina:two")
