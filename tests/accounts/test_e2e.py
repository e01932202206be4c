"""Accounts and moderation end to end, over real loopback sockets.

Rules: 127.0.0.1 only, port 0, every wait bounded by trio.fail_after.  The server
runs in this process with a real SQLite file in tmp_path and real argon2id hashing
(the cheapest parameters, so the tests stay fast); the lockout's clock is a fake
one the test moves, so no test waits out a minute.
"""

from __future__ import annotations

import json
from functools import partial

import pytest
import trio

from .conftest import Chat, Setup, operator, register

AUTH_NEEDED = (
    '! ERROR 114 name registered: {} is registered; send its password as "auth" in the handshake'
)


# --- accounts -----------------------------------------------------------------------


async def test_register_log_in_and_wrong_password(chat: Chat) -> None:
    with trio.fail_after(10):
        mina = await chat.join("Mina")
        await mina.send("/register short")
        await mina.expect(
            "! ERROR 103 a password has at least 8 characters; usage: /register PASSWORD"
        )
        await mina.send("/register correct-horse")
        await mina.expect("* Mina is registered to you; from now on it needs its password to join")
        await mina.send("/register correct-horse")
        await mina.expect("! ERROR 103 Mina is already registered")
        await mina.send("/quit")
        await mina.until_closed()

        assert await chat.refused("Mina") == [AUTH_NEEDED.format("Mina")]
        assert await chat.refused("mina", auth="wrong-horse") == [
            "! ERROR 114 name registered: wrong password for Mina"
        ]
        again = await chat.join("MINA", auth="correct-horse")  # any case
        await again.send("/list")
        await again.expect("* users: MINA")


async def test_json_client_refusal_is_json(chat: Chat) -> None:
    with trio.fail_after(10):
        await register(chat, "Mina", "correct-horse")
        (line,) = await chat.refused("Mina", format="json")
        assert json.loads(line) == {
            "type": "error",
            "code": 114,
            "message": 'name registered: Mina is registered; send its password as "auth" in '
            "the handshake",
        }


async def test_nick_to_a_registered_name_needs_its_password(chat: Chat) -> None:
    with trio.fail_after(10):
        await register(chat, "Mina", "correct-horse")
        bob = await chat.join("Bob")
        await bob.send("/nick mina")
        await bob.expect("! ERROR 114 name registered: mina is registered; use /nick mina PASSWORD")
        await bob.send("/nick Mina wrong-horse")
        await bob.expect("! ERROR 114 name registered: wrong password for Mina")
        await bob.send("/list")
        await bob.expect("* users: Bob")  # the nick is kept
        await bob.send("/nick Mina correct-horse")
        await bob.expect("* Bob is now known as Mina")
        # Logged in: a new name and back needs no password again, nor does a case change.
        await bob.send("/nick Guest")
        await bob.expect("* Mina is now known as Guest")
        await bob.send("/nick Mina")
        await bob.expect("* Guest is now known as Mina")
        await bob.send("/nick MINA")
        await bob.expect("* Mina is now known as MINA")


async def test_a_name_race_against_a_registered_name(chat: Chat) -> None:
    with trio.fail_after(20):
        await register(chat, "Mina", "correct-horse")
        results: dict[str, list[str]] = {}

        async def attempt(label: str, name: str, **extra: object) -> None:
            client = await chat.open()
            await client.handshake(name, "dev", **extra)
            first = await client.line()
            results[label] = [first]
            if first.startswith("* Welcome"):
                await client.expect(f"* {name} joined dev")
                await client.send("/quit")
            await client.until_closed()
            await client.aclose()

        async with trio.open_nursery() as nursery:
            for i, name in enumerate(["Mina", "mina", "MINA", "MiNa"]):
                nursery.start_soon(attempt, f"guest{i}", name)
            nursery.start_soon(partial(attempt, "owner", "Mina", auth="correct-horse"))
            nursery.start_soon(partial(attempt, "guesser", "mina", auth="not-the-one"))
        for i, name in enumerate(["Mina", "mina", "MINA", "MiNa"]):
            assert results[f"guest{i}"] == [AUTH_NEEDED.format(name)]
        assert results["guesser"] == ["! ERROR 114 name registered: wrong password for Mina"]
        assert results["owner"][0].startswith("* Welcome Mina!")

        # While the owner is online, even the right password finds the name in use.
        await chat.join("Mina", auth="correct-horse")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(attempt, "first", "MINA", auth="correct-horse"))
            nursery.start_soon(partial(attempt, "second", "mina", auth="correct-horse"))
        assert results["first"] == ["! ERROR 101 name MINA is already in use; pick another"]
        assert results["second"] == ["! ERROR 101 name mina is already in use; pick another"]


async def test_ten_wrong_passwords_lock_the_name_for_a_minute(chat: Chat, setup: Setup) -> None:
    with trio.fail_after(20):
        await register(chat, "Mina", "correct-horse")
        await register(chat, "Oskar", "oskar-password")
        for _ in range(10):
            setup.clock.advance(3)
            assert await chat.refused("Mina", auth="guess") == [
                "! ERROR 114 name registered: wrong password for Mina"
            ]
        locked = await chat.refused("Mina", auth="correct-horse")
        assert locked == [
            "! ERROR 114 name registered: Mina is locked after too many wrong passwords; "
            "try again in 60 s"
        ]
        oskar = await chat.join("Oskar", auth="oskar-password")  # others log in as before
        await oskar.send("/nick Mina correct-horse")  # the lock holds for /nick too
        await oskar.expect_prefix("! ERROR 114 name registered: Mina is locked")
        setup.clock.advance(60)
        mina = await chat.join("Mina", auth="correct-horse")
        await mina.send("/list")
        await mina.expect("* users: Mina, Oskar")


async def test_password_change_and_unregister(chat: Chat) -> None:
    with trio.fail_after(10):
        await register(chat, "Mina", "correct-horse")
        mina = await chat.join("Mina", auth="correct-horse")
        await mina.send("/password wrong-horse battery-staple")
        await mina.expect("! ERROR 114 name registered: wrong password for Mina")
        await mina.send("/password correct-horse short")
        await mina.expect(
            "! ERROR 103 a password has at least 8 characters; usage: /password OLD NEW"
        )
        await mina.send("/password correct-horse battery-staple")
        await mina.expect("* password changed for Mina")
        await mina.send("/quit")
        await mina.until_closed()
        assert await chat.refused("Mina", auth="correct-horse") == [
            "! ERROR 114 name registered: wrong password for Mina"
        ]
        mina = await chat.join("Mina", auth="battery-staple")
        await mina.send("/unregister battery-staple")
        await mina.expect("* Mina is no longer registered")
        await mina.send("/unregister battery-staple")
        await mina.expect("! ERROR 103 Mina is not registered; see /help register")
        await mina.send("/quit")
        await mina.until_closed()
        await chat.join("Mina")  # free for anyone again


async def test_accounts_need_a_database(setup: Setup) -> None:
    chat = await setup.start(db_path=None)
    with trio.fail_after(10):
        mina = await chat.join("Mina", auth="ignored-here")
        await mina.send("/register correct-horse")
        await mina.expect("! ERROR 116 not permitted: accounts need a server started with --db")
        await mina.send("/kick Bob")  # no accounts: nobody can be an operator
        await mina.expect_prefix("! ERROR 116 not permitted: /kick is for operators")


# --- moderation ---------------------------------------------------------------------

OPERATOR_COMMANDS = [
    ("/kick Bob", "kick"),
    ("/ban Bob 5 spam", "ban"),
    ("/unban Bob", "unban"),
    ("/bans", "bans"),
    ("/mute Bob", "mute"),
    ("/unmute Bob", "unmute"),
    ("/topic new topic", "topic"),
]


@pytest.mark.parametrize(("line", "word"), OPERATOR_COMMANDS)
async def test_non_operators_are_not_permitted(chat: Chat, line: str, word: str) -> None:
    with trio.fail_after(10):
        await register(chat, "Oskar", "oskar-password")
        oskar = await chat.join("Oskar", auth="oskar-password")  # registered, not an operator
        mina = await chat.join("Mina")  # listed as an operator, but not logged in
        bob = await chat.join("Bob")
        for client in (oskar, mina):
            await client.send(line)
            await client.expect(
                f"! ERROR 116 not permitted: /{word} is for operators, logged in with their "
                "password"
            )
        await bob.send("/list")
        await bob.expect("* users: Bob, Mina, Oskar")  # nobody was kicked


async def test_kick(chat: Chat, setup: Setup) -> None:
    with trio.fail_after(10):
        mina = await operator(chat)
        bob = await chat.join("Bob")
        eve = await chat.join("Eve")
        await mina.send("/kick Nobody")
        await mina.expect("! ERROR 102 no such user: Nobody")
        await mina.send("/kick Mina")
        await mina.expect("! ERROR 103 you cannot /kick yourself")
        await mina.send("/kick bob  spamming links")
        await mina.expect("* Bob was kicked by Mina (spamming links)")
        assert await bob.until_closed() == [
            "* Eve joined dev",
            "* Bob was kicked by Mina (spamming links)",
        ]
        await eve.expect("* Bob left dev (kicked by Mina (spamming links))")
        await eve.send("/list")
        await eve.expect("* users: Eve, Mina")
        await chat.join("Bob")  # a kick is not a ban
    await setup.stop(chat)
    transcript = setup.transcript.read_text()
    assert "[dev] * Mina kicked Bob (spamming links)\n" in transcript
    assert "[dev] * Bob left (kicked by Mina (spamming links))\n" in transcript


async def test_ban_by_name_and_address_then_unban(chat: Chat, setup: Setup) -> None:
    with trio.fail_after(15):
        mina = await operator(chat)
        await register(chat, "Oskar", "oskar-password")
        bob = await chat.join("Bob")
        await mina.expect("* Bob joined dev")
        await mina.send("/ban Bob 10 flooding")
        await mina.expect("* Bob left dev (banned by Mina (flooding))")
        await mina.expect("* Bob was banned by Mina for 10 minutes (flooding)")
        assert (await bob.until_closed())[
            -1
        ] == "* Bob was banned by Mina for 10 minutes (flooding)"
        (refusal,) = await chat.refused("Bob")
        assert refusal.startswith("! ERROR 117 banned: Bob is banned until 20")
        assert refusal.endswith(" UTC (flooding)")
        # Bob's name was not registered: his address is banned too, for the unregistered.
        (refusal,) = await chat.refused("Carol")
        assert refusal.startswith("! ERROR 117 banned: your address is banned until ")
        oskar = await chat.join("Oskar", auth="oskar-password")  # a registered name passes
        await oskar.send("/bans")
        await oskar.expect_prefix("! ERROR 116 not permitted")
        await mina.send("/bans")
        line = await mina.expect_prefix("* ban: ")
        assert line.startswith("* ban: Bob and 127.0.0.1 by Mina until 20")
        assert line.endswith(" UTC (flooding)")
        await mina.send("/unban bob")
        await mina.expect("* Bob was unbanned by Mina")
        await mina.send("/unban bob")
        await mina.expect("! ERROR 102 bob is not banned")
        await mina.send("/bans")
        await mina.expect("* no bans")
        await chat.join("Bob")
        await chat.join("Carol")
    await setup.stop(chat)
    transcript = setup.transcript.read_text()
    assert "[dev] * Mina banned Bob and 127.0.0.1 for 10 minutes (flooding)\n" in transcript
    assert "* Mina unbanned Bob\n" in transcript


async def test_ban_of_a_registered_name_holds_the_name_only(chat: Chat) -> None:
    with trio.fail_after(15):
        mina = await operator(chat)
        await register(chat, "Oskar", "oskar-password")
        oskar = await chat.join("Oskar", auth="oskar-password")
        await mina.send("/ban Oskar")
        await mina.expect("* Oskar was banned by Mina until /unban")
        await oskar.until_closed()
        assert await chat.refused("Oskar", auth="oskar-password") == [
            "! ERROR 117 banned: Oskar is banned until lifted"
        ]
        await chat.join("Carol")  # the address is not banned
        await chat.join("Guest")
        await mina.send("/nick Oskar")  # nobody may take a banned name
        await mina.expect("! ERROR 117 banned: Oskar is banned until lifted")
        # An offline name can be banned ahead.
        await mina.send("/ban Troll 0 pre-emptive")
        await mina.expect("* Troll was banned by Mina until /unban (pre-emptive)")
        assert await chat.refused("troll") == [
            "! ERROR 117 banned: Troll is banned until lifted (pre-emptive)"
        ]


async def test_bans_and_topics_survive_a_restart(setup: Setup) -> None:
    chat = await setup.start()
    with trio.fail_after(15):
        mina = await operator(chat)
        await mina.send("/ban Bob 0 spam")
        await mina.expect("* Bob was banned by Mina until /unban (spam)")
        await mina.send("/topic Release day")
        await mina.expect("* topic of dev: Release day (set by Mina)")
    await setup.stop(chat)
    again = await setup.start()
    with trio.fail_after(15):
        assert await again.refused("Bob") == [
            "! ERROR 117 banned: Bob is banned until lifted (spam)"
        ]
        carol = await again.open()
        await carol.handshake("Carol", "DEV")
        assert (
            await carol.line() == "* Welcome Carol! You are in room DEV. Type /help for commands."
        )
        assert await carol.line() == "* topic of DEV: Release day (set by Mina)"
        assert await carol.line() == "* Carol joined DEV"


async def test_mute(chat: Chat, setup: Setup) -> None:
    with trio.fail_after(15):
        mina = await operator(chat)
        bob = await chat.join("Bob")
        eve = await chat.join("Eve")
        await mina.send("/mute Bob 5")
        await mina.expect("* Bob was muted by Mina for 5 minutes")
        await bob.expect("* Bob was muted by Mina for 5 minutes")
        await bob.send("can anyone hear me")
        line = await bob.line()
        assert line.startswith("! ERROR 115 muted: Mina muted you until 20")
        assert line.endswith(" UTC; nobody hears you")
        await bob.send("@ALL: and now?")
        await bob.expect_prefix("! ERROR 115 muted: ")
        await bob.send("/nick Robert")
        await bob.expect_prefix("! ERROR 115 muted: ")
        await bob.send("/msg Mina please unmute me")  # private messages still go
        await mina.expect("[private] Bob:please unmute me")
        await eve.send("marker")
        assert await eve.line() == "Eve:marker"  # nothing of Bob's came first
        await mina.send("/unmute bob")
        await mina.expect("* Bob was unmuted by Mina")
        await bob.expect("* Bob was unmuted by Mina")
        await mina.send("/unmute bob")
        await mina.expect("! ERROR 102 bob is not muted")
        await bob.send("thanks")
        assert await eve.line() == "Bob:thanks"
    await setup.stop(chat)
    transcript = setup.transcript.read_text()
    assert "[dev] * Mina muted Bob for 5 minutes\n" in transcript
    assert "[dev] * Mina unmuted Bob\n" in transcript


async def test_topics(chat: Chat, setup: Setup) -> None:
    with trio.fail_after(15):
        mina = await operator(chat)
        eve = await chat.join("Eve")
        await eve.send("/topic")
        await eve.expect("* no topic in dev")
        await mina.send("/topic   Release day: be nice ")
        for client in (mina, eve):
            await client.expect("* topic of dev: Release day: be nice (set by Mina)")
        await eve.send("/topic")
        await eve.expect("* topic of dev: Release day: be nice (set by Mina)")
        jay = await chat.open()
        await jay.handshake("Jay", "dev", format="json")
        assert (await jay.json())["type"] == "welcome"
        topic = await jay.json()
        assert topic.pop("ts") > 1e9
        assert topic == {
            "type": "topic",
            "room": "dev",
            "text": "Release day: be nice",
            "by": "Mina",
        }
        assert (await jay.json())["type"] == "join"
        await jay.send("/rooms")
        while (obj := await jay.json())["type"] != "rooms":
            pass
        assert obj["rooms"] == [{"room": "dev", "members": 3, "topic": "Release day: be nice"}]
        await eve.send("/join ops")
        await eve.expect("* Eve joined ops")
        await eve.send("/rooms")
        await eve.expect("* rooms: dev (2, topic: Release day: be nice), ops (1)")
        await eve.send("/join dev")
        assert await eve.line() == "* Eve joined dev"
        assert await eve.line() == "* topic of dev: Release day: be nice (set by Mina)"
        await mina.send("/topic -")
        await mina.expect_prefix("* Eve joined dev")
        await mina.expect("* no topic in dev")
        await eve.send("/topic")
        await eve.expect("* no topic in dev")
    await setup.stop(chat)
    transcript = setup.transcript.read_text()
    assert "[dev] * Mina set the topic: Release day: be nice\n" in transcript
    assert "[dev] * Mina cleared the topic\n" in transcript


async def test_moderation_events_in_json(chat: Chat) -> None:
    with trio.fail_after(10):
        mina = await operator(chat)
        bob = await chat.join("Bob", format="json")
        await mina.send("/kick Bob bye")
        lines = [json.loads(line) for line in await bob.until_closed()]
        assert lines[-1] == {
            "type": "moderation",
            "action": "kick",
            "name": "Bob",
            "by": "Mina",
            "reason": "bye",
            "minutes": 0,
        }


async def test_operators_are_operators_only_while_logged_in_under_their_name(chat: Chat) -> None:
    with trio.fail_after(10):
        mina = await operator(chat)
        await mina.send("/nick Someone")
        await mina.expect("* Mina is now known as Someone")
        await mina.send("/topic hi")
        await mina.expect_prefix("! ERROR 116 not permitted")
        await mina.send("/nick Mina")
        await mina.expect("* Someone is now known as Mina")
        await mina.send("/topic hi")
        await mina.expect("* topic of dev: hi (set by Mina)")


async def test_exit_when_empty(setup: Setup) -> None:
    chat = await setup.start(exit_when_empty=True)
    with trio.fail_after(10):
        mina = await chat.join("Mina")
        refused = await chat.refused("Mina")  # a refused client does not count
        assert refused[0].startswith("! ERROR 101")
        bob = await chat.join("Bob")
        await mina.send("/quit")
        await mina.until_closed()
        assert not chat.server.shutting_down  # Bob is still here
        await bob.send("/quit")
        await bob.until_closed()
        await chat.stopped.wait()  # serve() returned by itself
        assert chat.server.shutting_down


async def test_a_websocket_client_logs_in_with_auth(chat: Chat) -> None:
    """What the web client does: the handshake's auth over WebSocket, on the chat port."""
    from tests.web.conftest import WsClient

    url = f"ws://127.0.0.1:{chat.port}/mychat"
    with trio.fail_after(20):
        await register(chat, "Mina", "correct-horse")
        refused = await WsClient.open(url)
        await refused.send(json.dumps({"name": "Mina", "room": "dev"}))
        lines, _ = await refused.closed()
        assert lines == [AUTH_NEEDED.format("Mina")]
        mina = await WsClient.open(url)
        try:
            await mina.send(json.dumps({"name": "Mina", "room": "dev", "auth": "correct-horse"}))
            await mina.expect("* Mina joined dev")
            await mina.send("/topic from the web")
            await mina.expect("* topic of dev: from the web (set by Mina)")
        finally:
            await mina.close()
