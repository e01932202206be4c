"""Every command, alias and error code, end to end over loopback sockets.

Rules: 127.0.0.1 only, port 0, every wait bounded by trio.fail_after, every stream
closed.  Replies addressed to one member (errors, ``* sent to``) may overtake that
member's own room echo, while room lines keep their order; so the tests wait for
the line they want with `LineClient.expect` rather than assume what comes next, and
prove that something was *not* relayed by sending a marker behind it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from machat.cmd.chatserver import build_parser, config_from_args
from machat.protocol.commands import USAGE
from machat.server import ChatServer, ServerConfig
from tests.helpers import LineClient

Connect = Callable[..., Awaitable[LineClient]]

PASSWORD = "s3cret"
WELCOME = "* Welcome {}! You are in room {}. Type /help for commands."

NICK_HELP = (
    "/nick NAME [PASSWORD] (alias /NCK): change your name; a registered name needs its password"
)


@pytest.fixture
def config() -> ServerConfig:
    return ServerConfig(host="127.0.0.1", port=0)


def with_password(password: str = PASSWORD) -> pytest.MarkDecorator:
    return pytest.mark.parametrize(
        "config", [ServerConfig(host="127.0.0.1", port=0, password=password)]
    )


async def start_server(nursery: trio.Nursery, config: ServerConfig) -> tuple[ChatServer, int]:
    server = ChatServer(config)
    listeners = await nursery.start(server.serve)
    return server, listeners[0].socket.getsockname()[1]


@pytest.fixture
async def port(nursery: trio.Nursery, config: ServerConfig) -> AsyncIterator[int]:
    server, port = await start_server(nursery, config)
    yield port
    server.shutdown()


@pytest.fixture
async def connect(port: int) -> AsyncIterator[Connect]:
    """Open a client; with a name it also shakes hands and waits for its own join."""
    opened: list[LineClient] = []

    async def _connect(name: str | None = None, room: str = "dev", **extra: object) -> LineClient:
        client = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
        opened.append(client)
        if name is not None:
            await client.handshake(name, room, **extra)
            if extra.get("format") == "json":
                while await client.json() != {"type": "join", "room": room, "name": name}:
                    pass
            else:
                await client.expect(f"* {name} joined {room}")
        return client

    yield _connect
    for client in opened:
        await client.aclose()


async def refused(client: LineClient, raw: bytes) -> list[str]:
    """Send a whole handshake and read every line until the server closes."""
    await client.send_raw(raw)
    return await client.until_closed()


async def nothing_more(sender: LineClient, *listeners: LineClient, marker: str) -> None:
    """Say ``marker`` in the room; each listener's next room line must be it.

    Run after something that must not have reached ``listeners``: room lines keep
    their order, so anything relayed before the marker would come first.
    """
    await sender.send(marker)
    for listener in listeners:
        line = await listener.line()
        assert line.endswith(":" + marker), (line, listener.seen)


def stamped(obj: dict[str, Any]) -> dict[str, Any]:
    """Check and drop the timestamp of a JSON event."""
    ts = obj.pop("ts")
    assert isinstance(ts, float) and ts > 1e9
    return obj


# --- room text -----------------------------------------------------------------


async def test_plain_text_goes_to_the_room_and_keeps_its_case(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        await mina.expect("* Bob joined dev")
        await mina.send("Hello  World /not a command @Bob: not private")
        for client in (mina, bob):
            assert await client.line() == "Mina:Hello  World /not a command @Bob: not private"


async def test_double_slash_sends_a_literal_slash_line(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        await mina.send("//nick Mia", "//", "///x")
        assert [await bob.line() for _ in range(3)] == ["Mina:/nick Mia", "Mina:/", "Mina://x"]
        await mina.expect("Mina://x")
        assert "* Mina is now known as Mia" not in mina.seen


# --- /nick -------------------------------------------------------------------------


@pytest.mark.parametrize("word", ["/nick", "/NCK", "/NiCk", "/nck"])
async def test_nick_renames_and_the_room_sees_it(connect: Connect, word: str) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        eve = await connect("Eve", room="ops")
        await mina.send(f"{word} MIA")
        for client in (mina, bob):
            await client.expect("* Mina is now known as MIA")
        await mina.send("hi")
        await bob.expect("MIA:hi")
        await eve.send("/list")
        await eve.expect("* users: Bob, Eve, MIA")
        # The old name is free again.
        await connect("Mina", room="ops")
    assert not [line for line in eve.seen if "known as" in line]


async def test_nick_to_a_different_case_of_ones_own_name(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        await mina.send("/nick mina")
        await mina.expect("* Mina is now known as mina")
        await mina.send("/list")
        await mina.expect("* users: mina")


async def test_nick_errors(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        await mina.send("/nick bob")
        await mina.expect("! ERROR 101 name bob is already in use; pick another")
        await mina.send("/nick 9lives")
        await mina.expect(
            "! ERROR 100 invalid name '9lives': 1-32 characters, a letter first, "
            "then letters, digits, '_' or '-'"
        )
        await mina.send("/nick All")
        await mina.expect("! ERROR 100 invalid name 'All': reserved")
        await mina.send("/nick " + "a" * 33)
        await mina.expect_prefix("! ERROR 100 invalid name")
        await mina.send("/nick")
        await mina.expect("! ERROR 103 usage: /nick NAME [PASSWORD]")
        await mina.send("/NCK three words here")
        await mina.expect("! ERROR 103 usage: /nick NAME [PASSWORD]")
        await nothing_more(mina, bob, marker="still Mina")
        await mina.send("/list")
        await mina.expect("* users: Bob, Mina")


# --- /list, /who, /rooms -----------------------------------------------------------


@pytest.mark.parametrize("word", ["/list", "/LST", "/LIST", "/lst"])
async def test_list_shows_everyone_online_sorted(connect: Connect, word: str) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        await connect("bob")
        await connect("Eve", room="ops")
        await connect("al", room="lab")
        await mina.send(word)
        await mina.expect("* users: al, bob, Eve, Mina")
        await mina.send(f"{word} extra")
        await mina.expect("! ERROR 103 usage: /list")


async def test_who_lists_a_rooms_members(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        await connect("bob")
        await connect("Eve", room="Ops")
        await mina.send("/who")
        await mina.expect("* dev: bob, Mina")
        await mina.send("/WHO Ops")
        await mina.expect("* Ops: Eve")
        await mina.send("/who OPS")  # rooms are found case-insensitively
        await mina.expect("* Ops: Eve")
        await mina.send("/who nowhere")
        await mina.expect("! ERROR 107 no such room: nowhere")
        await mina.send("/who a b")
        await mina.expect("! ERROR 103 usage: /who [ROOM]")


async def test_rooms_lists_rooms_with_counts(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        await connect("Bob")
        eve = await connect("Eve", room="ops")
        await connect("Al", room="Lab")
        await mina.send("/rooms")
        await mina.expect("* rooms: dev (2), Lab (1), ops (1)")
        await eve.send("/join dev")
        await mina.expect("* Eve joined dev")
        await mina.send("/ROOMS")
        await mina.expect("* rooms: dev (3), Lab (1)")
        await mina.send("/rooms please")
        await mina.expect("! ERROR 103 usage: /rooms")


# --- /join -----------------------------------------------------------------------


async def test_join_leaves_the_old_room_and_enters_the_new_one(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        eve = await connect("Eve", room="ops")
        await mina.send("/JOIN ops")
        await bob.expect("* Mina left dev")
        await eve.expect("* Mina joined ops")
        await mina.expect("* Mina joined ops")
        await mina.send("hi ops")
        await eve.expect("Mina:hi ops")
        await mina.expect("Mina:hi ops")
        await nothing_more(bob, bob, marker="alone")
        await mina.send("/join NewRoom")  # the argument keeps its case
        await mina.expect("* Mina joined NewRoom")
        await eve.expect("* Mina left ops")
        await mina.send("/rooms")
        await mina.expect("* rooms: dev (1), NewRoom (1), ops (1)")
    assert "Mina:hi ops" not in bob.seen


async def test_join_errors(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        await mina.send("/join _bad")
        await mina.expect_prefix("! ERROR 107 invalid room name '_bad'")
        await mina.send("/join " + "r" * 65)
        await mina.expect_prefix("! ERROR 107 invalid room name")
        await mina.send("/join")
        await mina.expect("! ERROR 103 usage: /join ROOM")
        await mina.send("/join a b")
        await mina.expect("! ERROR 103 usage: /join ROOM")
        await nothing_more(mina, bob, marker="still in dev")
    assert "* Mina left dev" not in bob.seen


# --- private messages --------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    ["/msg Bob,Eve Hello There", "/MSG Bob,Eve Hello There", "@Bob,Eve: Hello There"],
)
async def test_private_message_to_several_people(connect: Connect, line: str) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        eve = await connect("Eve", room="ops")
        zed = await connect("Zed")
        await mina.send(line)
        await mina.expect("* sent to Bob, Eve")
        await bob.expect("[private] Mina:Hello There")
        await eve.expect("[private] Mina:Hello There")
        await nothing_more(mina, zed, marker="public")
    assert not [line for line in zed.seen + mina.seen if line.startswith("[private]")]


@pytest.mark.parametrize(
    ("line", "text"),
    [
        ("@Bob:no space", "no space"),
        ("@Bob:  two spaces", " two spaces"),
        ("@bob: lower-case target", "lower-case target"),
        ("/msg BOB Case Kept: yes", "Case Kept: yes"),
        ("/msg Bob a:b @c /d", "a:b @c /d"),
    ],
)
async def test_private_message_text_is_kept_exactly(connect: Connect, line: str, text: str) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        await mina.send(line)
        await mina.expect("* sent to Bob")
        await bob.expect(f"[private] Mina:{text}")


async def test_unknown_recipient_is_named_and_the_others_still_get_it(
    connect: Connect,
) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        eve = await connect("Eve")
        await mina.send("/msg Bob,Ghost,Eve,Nobody hi")
        await mina.expect("* sent to Bob, Eve")
        assert await mina.line() == (
            "! ERROR 102 unable to send: no such user or group: Ghost, Nobody"
        )
        await bob.expect("[private] Mina:hi")
        await eve.expect("[private] Mina:hi")
        await mina.send("@Ghost: anyone?")
        await mina.expect("! ERROR 102 unable to send: no such user or group: Ghost")
        # Only one "sent to" in all: none for a message that reached nobody.
    assert [line for line in mina.seen if line.startswith("* sent to")] == ["* sent to Bob, Eve"]


async def test_duplicate_recipients_get_the_message_once(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        await mina.send("/msg Bob,bob,BOB once", "@Bob,Bob: twice?")
        await mina.send("@Bob: done")
        await bob.expect("[private] Mina:done")
        for _ in range(3):
            await mina.expect("* sent to Bob")
    assert [line for line in bob.seen if line.startswith("[private]")] == [
        "[private] Mina:once",
        "[private] Mina:twice?",
        "[private] Mina:done",
    ]
    assert [line for line in mina.seen if line.startswith("* sent")] == ["* sent to Bob"] * 3


async def test_private_message_usage_errors(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        for line, wanted in [
            ("/msg", "! ERROR 103 usage: /msg NAME[,NAME...] TEXT"),
            ("/msg Bob", "! ERROR 103 text required; usage: /msg NAME[,NAME...] TEXT"),
            ("/msg Bob   ", "! ERROR 103 text required; usage: /msg NAME[,NAME...] TEXT"),
            ("/msg Bob,,Eve hi", "! ERROR 103 empty name in list; usage: /msg NAME[,NAME...] TEXT"),
            ("@Bob:", "! ERROR 103 text required; usage: @NAME[,NAME...]: TEXT"),
            ("@Bob,: hi", "! ERROR 103 empty name in list; usage: @NAME[,NAME...]: TEXT"),
            ("@ALL:  ", "! ERROR 103 text required; usage: @NAME[,NAME...]: TEXT"),
        ]:
            await mina.send(line)
            await mina.expect(wanted)
        await nothing_more(mina, bob, marker="end")
    assert not [line for line in bob.seen if line.startswith(("[private]", "[all]"))]


# --- broadcast -----------------------------------------------------------------


@pytest.mark.parametrize("line", ["@ALL: Hi Everyone", "@all:Hi Everyone", "@All: Hi Everyone"])
async def test_broadcast_reaches_everyone_including_the_sender(connect: Connect, line: str) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        eve = await connect("Eve", room="ops")
        al = await connect("Al", room="lab")
        await mina.send(line)
        for client in (mina, bob, eve, al):
            await client.expect("[all] Mina:Hi Everyone")
    assert not [line for line in mina.seen if line.startswith("* sent")]


# --- groups --------------------------------------------------------------------


@pytest.mark.parametrize("word", ["/group", "/GRP", "/Group", "/grp"])
async def test_group_define_list_and_message(connect: Connect, word: str) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        eve = await connect("Eve", room="ops")
        zed = await connect("Zed")
        await mina.send(f"{word} #Team Bob,Eve")
        await mina.expect("* #Team: Bob, Eve")
        await bob.send(f"{word} #team")  # anyone may look; names are case-insensitive
        await bob.expect("* #Team: Bob, Eve")
        await mina.send("/msg #team Hello Team")
        for client in (mina, bob, eve):
            await client.expect("[#Team] Mina:Hello Team")
        # Any member may write to it; the owner is not a member unless listed.
        await bob.send("@#TEAM: reply")
        for client in (bob, eve):
            await client.expect("[#Team] Bob:reply")
        await nothing_more(mina, mina, zed, marker="public")
    # A group message confirms by its echo, with no "* sent to".
    assert not [line for line in mina.seen + bob.seen if line.startswith("* sent")]
    assert "[#Team] Bob:reply" not in mina.seen
    assert not [line for line in zed.seen if line.startswith("[#")]


async def test_group_and_people_in_one_message_each_get_it_once(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        eve = await connect("Eve")
        await mina.send("/group #t Bob,Mina")
        await mina.expect("* #t: Bob, Mina")
        await mina.send("/msg #t,#T,Eve x")
        assert await mina.line() == "[#t] Mina:x"
        assert await mina.line() == "* sent to Eve"
        await eve.expect("[private] Mina:x")
        await mina.send("@Bob: end")
        await bob.expect("[private] Mina:end")
        await mina.expect("* sent to Bob")
    assert [line for line in bob.seen if line.startswith("[")] == [
        "[#t] Mina:x",
        "[private] Mina:end",
    ]
    assert mina.seen.count("[#t] Mina:x") == 1


async def test_group_member_offline_is_named_the_rest_still_get_it(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        await mina.send("/group #g Bob,Ghost")
        await mina.expect("* #g: Bob, Ghost")
        await mina.send("/msg #g hi")
        assert await mina.line() == "[#g] Mina:hi"
        assert await mina.line() == "! ERROR 102 unable to send: no such user or group: Ghost"
        await bob.expect("[#g] Mina:hi")


async def test_group_errors(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        await mina.send("/group #team Bob")
        await mina.expect("* #team: Bob")
        for line, wanted in [
            (
                "/group #big Bob,#team",
                "! ERROR 103 a group may not contain a group (#team); "
                "usage: /group #NAME NAME,NAME...",
            ),
            (
                "/group team Bob",
                "! ERROR 103 a group name starts with #; usage: /group #NAME [NAME,NAME...]",
            ),
            (
                "/group # Bob",
                "! ERROR 103 a group name starts with #; usage: /group #NAME [NAME,NAME...]",
            ),
            ("/group", "! ERROR 103 usage: /group #NAME [NAME,NAME...]"),
            ("/group #a b c", "! ERROR 103 usage: /group #NAME [NAME,NAME...]"),
            ("/group #bad! Bob", "! ERROR 103 invalid group name '#bad!'"),
            ("/group #g 9lives", "! ERROR 100 invalid name '9lives'"),
            ("/group #nope", "! ERROR 102 no such group: #nope"),
        ]:
            await mina.send(line)
            assert (await mina.expect_prefix("! ")).startswith(wanted), line
        await bob.send("/group #TEAM Bob")
        await bob.expect("! ERROR 103 group #team belongs to Mina")
        # The owner may redefine it.
        await mina.send("/group #team Bob,Mina")
        await mina.expect("* #team: Bob, Mina")


async def test_a_group_lives_as_long_as_its_owners_connection(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        await mina.send("/group #team Bob")
        await mina.expect("* #team: Bob")
        await mina.send("/quit")
        await bob.expect("* Mina left dev (quit)")
        await bob.send("/msg #team anyone?")
        await bob.expect("! ERROR 102 unable to send: no such user or group: #team")
        await bob.send("/group #team")
        await bob.expect("! ERROR 102 no such group: #team")
        await bob.send("/group #team Bob")  # the name is free again
        await bob.expect("* #team: Bob")


# --- /help ---------------------------------------------------------------------


async def test_help_lists_every_command(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        await mina.send("/help")
        lines = [await mina.line() for _ in range(len(USAGE))]
    words = [line.split()[1].removesuffix(":") for line in lines]
    assert words == sorted(words)
    for word in ["/nick", "/list", "/who", "/rooms", "/join", "/msg", "/group", "/help", "/quit"]:
        assert word in words
    assert "* " + NICK_HELP in lines
    assert "* /list (alias /LST): list everyone online" in lines
    assert all(line.startswith("* /") for line in lines)


@pytest.mark.parametrize(
    ("line", "wanted"),
    [
        ("/help nick", "* " + NICK_HELP),
        ("/HELP NCK", "* " + NICK_HELP),
        ("/help /lst", "* /list (alias /LST): list everyone online"),
        (
            "/help GRP",
            "* /group #NAME [NAME,NAME...] (alias /GRP): define a group of people, or show it",
        ),
        ("/help quit", "* /quit [REASON]: leave the chat (also :quit or exit)"),
        ("/help bogus", "! ERROR 103 unknown command /bogus; try /help"),
        ("/help a b", "! ERROR 103 usage: /help [COMMAND]"),
    ],
)
async def test_help_for_one_command(connect: Connect, line: str, wanted: str) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        await mina.send(line)
        assert await mina.line() == wanted


# --- bad commands --------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "wanted"),
    [
        ("/frobnicate", "! ERROR 103 unknown command /frobnicate; try /help"),
        ("/FROB now", "! ERROR 103 unknown command /FROB; try /help"),
        ("/", "! ERROR 103 usage: /COMMAND [ARGUMENTS]; try /help"),
        ("/ nick", "! ERROR 103 usage: /COMMAND [ARGUMENTS]; try /help"),
    ],
)
async def test_unknown_commands_are_errors_not_room_text(
    connect: Connect, line: str, wanted: str
) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        await mina.send(line)
        await mina.expect(wanted)
        await nothing_more(mina, bob, marker="after")


# --- /quit ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("/quit", "quit"),
        ("/QUIT", "quit"),
        ("/quit Gone Fishing", "Gone Fishing"),
        (":quit", "quit"),
        (":QUIT", "quit"),
        ("exit", "quit"),
        ("  Exit  ", "quit"),
    ],
)
async def test_quit_says_bye_closes_and_the_room_sees_the_reason(
    connect: Connect, line: str, reason: str
) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        await mina.send(line, "never read")
        lines = await mina.until_closed()
        await bob.expect(f"* Mina left dev ({reason})")
        await bob.send("/list")
        await bob.expect("* users: Bob")
    assert lines[-1] == "* bye"
    assert "Mina:never read" not in bob.seen


async def test_exit_inside_a_line_is_just_text(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        await mina.send("exit now", ":quit please")
        await mina.expect("Mina:exit now")
        await mina.expect("Mina::quit please")


# --- handshake errors 100, 101, 106, 107 -------------------------------------------


@pytest.mark.parametrize(
    ("raw", "wanted"),
    [
        (b'{"name": "9lives", "room": "dev"}', "! ERROR 100 invalid name '9lives'"),
        (b'{"name": "all", "room": "dev"}', "! ERROR 100 invalid name 'all': reserved"),
        (b'{"name": "", "room": "dev"}', "! ERROR 100 invalid name ''"),
        (b'{"name": "mina", "room": "ops"}', "! ERROR 101 name mina is already in use"),
        (b"hello\n", "! ERROR 106 invalid handshake: expected a JSON object"),
        (b'{"name": 5}', "! ERROR 106 invalid handshake"),
        (b'{"name": "X", "colour": "red"}', "! ERROR 106 invalid handshake: unexpected field(s)"),
        (b'{"name": "X", "format": "xml"}', "! ERROR 106 invalid handshake"),
        (b'{"room": "dev"}', "! ERROR 106 invalid handshake"),
        (b'{"name": "X", "room": "-bad"}', "! ERROR 107 invalid room name '-bad'"),
        (b'{"name": "X", "room": "a b"}', "! ERROR 107 invalid room name"),
    ],
)
async def test_refused_handshakes_get_one_error_and_are_never_seen(
    connect: Connect, raw: bytes, wanted: str
) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        lines = await refused(await connect(), raw)
        await mina.send("/list")
        await mina.expect("* users: Mina")
        await mina.send("/rooms")
        await mina.expect("* rooms: dev (1)")
    assert len(lines) == 1 and lines[0].startswith(wanted), lines
    assert [line for line in mina.seen if "joined" in line] == ["* Mina joined dev"]


# --- errors 105 and 112 ------------------------------------------------------------


async def test_too_long_line_is_an_error_and_the_connection_goes_on(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        await mina.send_raw(b"x" * 5000 + b"\n")
        await mina.expect("! ERROR 105 line too long (limit 4096 bytes); line discarded")
        await mina.send("y" * 4096)  # exactly at the limit is fine
        await bob.expect("Mina:" + "y" * 4096)
        await nothing_more(mina, bob, marker="ok")
    assert not [line for line in bob.seen if line.startswith("Mina:x")]


@pytest.mark.parametrize(
    "raw",
    [
        b"esc \x1b[2J clear\n",
        b"bell\x07\n",
        b"del\x7f\n",
        b"carriage\rreturn\n",
        b"nul\x00\n",
        b"bad utf-8 \xff\xfe\n",
        b"/msg Bob \x1b[31mred\n",
        b"@ALL: \x08backspace\n",
    ],
)
async def test_control_characters_are_refused_and_relayed_to_nobody(
    connect: Connect, raw: bytes
) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        await mina.send_raw(raw)
        line = await mina.expect_prefix("! ")
        assert line.startswith("! ERROR 112 invalid text: "), line
        assert line.endswith("; line discarded")
        await mina.send("tab\tis fine")
        await bob.expect("Mina:tab\tis fine")
        await nothing_more(mina, bob, marker="ok")
    assert [line for line in bob.seen if line.startswith(("Mina:", "[", "!"))] == [
        "Mina:tab\tis fine",
        "Mina:ok",
    ]


# --- password (104) ----------------------------------------------------------------


@with_password()
async def test_right_password_is_welcome(connect: Connect) -> None:
    with trio.fail_after(5):
        mina = await connect()
        await mina.handshake("Mina", "dev", password=PASSWORD)
        assert await mina.line() == WELCOME.format("Mina", "dev")
        assert await mina.line() == "* Mina joined dev"


@with_password()
@pytest.mark.parametrize(
    "raw",
    [
        b'{"name": "Eve", "room": "dev"}',
        b'{"name": "Eve", "room": "dev", "password": "S3CRET"}',
        b'{"name": "Eve", "room": "dev", "password": ""}',
        b'{"name": "Mina", "room": "dev", "password": "wrong"}',  # a taken name, too
        b'{"name": "Eve", "room": "dev", "format": "json"}',
    ],
)
async def test_missing_or_wrong_password_is_refused_before_joining(
    connect: Connect, raw: bytes
) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina", password=PASSWORD)
        lines = await refused(await connect(), raw)
        await mina.send("/list")
        await mina.expect("* users: Mina")
    if b'"json"' in raw:  # a JSON-mode client is refused in JSON
        assert [json.loads(line) for line in lines] == [
            {"type": "error", "code": 104, "message": "bad password"}
        ]
    else:
        assert lines == ["! ERROR 104 bad password"]
    assert [line for line in mina.seen if "joined" in line] == ["* Mina joined dev"]


@pytest.mark.parametrize("source", ["file", "env"])
async def test_password_from_file_or_environment(
    nursery: trio.Nursery,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
) -> None:
    monkeypatch.delenv("MACHAT_PASSWORD", raising=False)
    args = ["-a", "127.0.0.1:0"]
    if source == "file":
        path = tmp_path / "password"
        path.write_text("from-file\nsecond line ignored\n")
        args += ["--password-file", str(path)]
        password = "from-file"
    else:
        monkeypatch.setenv("MACHAT_PASSWORD", "from-env")
        password = "from-env"
    config = config_from_args(build_parser().parse_args(args))
    server, port = await start_server(nursery, config)
    try:
        with trio.fail_after(5):
            for given, wanted in [("nope", "! ERROR 104 bad password"), (password, None)]:
                client = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
                try:
                    await client.handshake("Mina", "dev", password=given)
                    if wanted is None:
                        await client.expect("* Mina joined dev")
                    else:
                        assert await client.until_closed() == [wanted]
                finally:
                    await client.aclose()
    finally:
        server.shutdown()


# --- JSON mode -----------------------------------------------------------------


async def test_json_welcome_join_message_nick_and_leave(connect: Connect) -> None:
    with trio.fail_after(5):
        jay = await connect()
        await jay.handshake("Jay", "dev", format="json")
        assert await jay.json() == {"type": "welcome", "name": "Jay", "room": "dev", "motd": ""}
        assert await jay.json() == {"type": "join", "room": "dev", "name": "Jay"}
        mina = await connect("Mina")
        assert await jay.json() == {"type": "join", "room": "dev", "name": "Mina"}
        await mina.send("Hello Jay")
        first = stamped(await jay.json())
        assert first == {
            "type": "message",
            "room": "dev",
            "from": "Mina",
            "text": "Hello Jay",
            "id": first["id"],
        }
        assert isinstance(first["id"], int) and first["id"] >= 1
        await mina.send("/nick Mia", "/quit Gone")
        assert await jay.json() == {"type": "nick", "old": "Mina", "new": "Mia"}
        assert await jay.json() == {"type": "leave", "room": "dev", "name": "Mia", "reason": "Gone"}
        await jay.send("again")
        second = stamped(await jay.json())
        assert second["from"] == "Jay" and second["id"] == first["id"] + 1
        await jay.send("/join ops")
        assert await jay.json() == {"type": "join", "room": "ops", "name": "Jay"}


async def test_json_private_sent_group_and_broadcast(connect: Connect) -> None:
    with trio.fail_after(5):
        jay = await connect("Jay", format="json")
        mina = await connect("Mina", room="ops")
        await mina.send("@Jay: psst")
        assert stamped(await jay.json()) == {"type": "private", "from": "Mina", "text": "psst"}
        await jay.send("/msg Mina,Ghost back")
        assert await jay.json() == {"type": "sent", "to": ["Mina"]}
        assert await jay.json() == {
            "type": "error",
            "code": 102,
            "message": "unable to send: no such user or group: Ghost",
        }
        await mina.expect("[private] Jay:back")
        await jay.send("/group #pair Mina")
        assert await jay.json() == {"type": "members", "room": "#pair", "names": ["Mina"]}
        await jay.send("/msg #pair hi pair")
        assert stamped(await jay.json()) == {
            "type": "group",
            "group": "#pair",
            "from": "Jay",
            "text": "hi pair",
        }
        await mina.expect("[#pair] Jay:hi pair")
        await mina.send("@ALL: to all")
        assert stamped(await jay.json()) == {"type": "broadcast", "from": "Mina", "text": "to all"}
        await mina.expect("[all] Mina:to all")


async def test_json_queries_info_and_errors(connect: Connect) -> None:
    with trio.fail_after(5):
        jay = await connect("Jay", format="json")
        await connect("Mina", room="ops")
        await jay.send("/list")
        assert await jay.json() == {"type": "users", "names": ["Jay", "Mina"]}
        await jay.send("/who ops")
        assert await jay.json() == {"type": "members", "room": "ops", "names": ["Mina"]}
        await jay.send("/rooms")
        assert await jay.json() == {
            "type": "rooms",
            "rooms": [{"room": "dev", "members": 1}, {"room": "ops", "members": 1}],
        }
        await jay.send("/help nick")
        assert await jay.json() == {
            "type": "info",
            "text": NICK_HELP,
        }
        await jay.send("/bogus")
        assert await jay.json() == {
            "type": "error",
            "code": 103,
            "message": "unknown command /bogus; try /help",
        }
        await jay.send_raw(b"\x1b\n")
        assert (await jay.json())["code"] == 112
        await jay.send("/nick mina")
        assert (await jay.json())["code"] == 101
        await jay.send("/quit")
        assert await jay.json() == {"type": "info", "text": "bye"}
        assert await jay.until_closed() == []


async def test_json_lines_are_compact_and_keep_unicode(connect: Connect) -> None:
    with trio.fail_after(5):
        jay = await connect("Jay", format="json")
        await jay.send("caf\u00e9 \u2603")
        raw = await jay.line()
    assert '"text":"caf\u00e9 \u2603"' in raw
    assert json.loads(raw)["text"] == "caf\u00e9 \u2603"


async def test_json_client_refused_for_a_taken_name_gets_a_json_error(
    connect: Connect,
) -> None:
    with trio.fail_after(5):
        await connect("Mina")
        lines = await refused(await connect(), b'{"name": "mina", "format": "json"}')
    assert [json.loads(line) for line in lines] == [
        {"type": "error", "code": 101, "message": "name mina is already in use; pick another"}
    ]


# --- ordering of a member's own lines -------------------------------------------


@pytest.mark.parametrize(
    ("command", "notice"),
    [("/join ops", "* Mina left dev"), ("/nick Mia", "* Mina is now known as Mia")],
)
async def test_room_sees_a_members_message_before_its_later_join_or_nick(
    connect: Connect, command: str, notice: str
) -> None:
    with trio.fail_after(5):
        mina = await connect("Mina")
        bob = await connect("Bob")
        await mina.send("last words", command)  # one packet: both lines in one read
        skipped = await bob.expect(notice)
    assert "Mina:last words" in skipped


async def test_welcome_names_an_existing_room_as_it_is_spelled(connect: Connect) -> None:
    with trio.fail_after(5):
        await connect("Mina", room="dev")
        bob = await connect()
        await bob.handshake("Bob", "DEV")
        welcome = await bob.line()
        await bob.expect("* Bob joined dev")
    assert welcome == WELCOME.format("Bob", "dev")
