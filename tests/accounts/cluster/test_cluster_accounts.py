"""Accounts, bans and topics across the nodes of a cluster: kept in Redis.

Two machat processes on one real redis-server; 127.0.0.1, port 0, every wait
bounded by trio.fail_after.  Hashing is argon2-cffi's default (as in production).
"""

from __future__ import annotations

import pytest
import trio

pytestmark = pytest.mark.cluster


async def test_an_account_made_on_one_node_holds_on_the_other(start_process) -> None:
    a = await start_process("a", "--operator", "Mina")
    b = await start_process("b", "--operator", "Mina")
    with trio.fail_after(30):
        await register(a, "Mina", "mina-password")
        refused = await b.connect("Mina")
        assert await refused.until_closed() == [
            '! ERROR 114 name registered: Mina is registered; send its password as "auth" '
            "in the handshake"
        ]
        mina = await b.join("Mina", auth="mina-password")  # an operator on b as well

        # A ban made on b refuses the name on a; a topic set on b is read on a.
        await mina.send("/ban Troll 0 spam")
        await mina.expect("* Troll was banned by Mina until /unban (spam)")
        banned = await a.connect("troll")
        assert await banned.until_closed() == [
            "! ERROR 117 banned: Troll is banned until lifted (spam)"
        ]
        await mina.send("/topic shared by every node")
        await mina.expect("* topic of dev: shared by every node (set by Mina)")
        eve = await a.join("Eve")
        await eve.send("/topic")
        await eve.expect("* topic of dev: shared by every node (set by Mina)")

        # Lifted on b, lifted everywhere.
        await mina.send("/unban troll")
        await mina.expect("* Troll was unbanned by Mina")
        await a.join("Troll")
    await a.close_clients()
    await b.close_clients()


async def test_an_operator_reaches_people_on_other_nodes(start_process) -> None:
    """Kick, mute, unmute, ban and topic from node a, for people on node b: carried out
    there at once, and a ban holds on every node."""
    a = await start_process("a", "--operator", "Mina")
    b = await start_process("b", "--operator", "Mina")
    with trio.fail_after(20):
        await register(a, "Mina", "mina-password")
        mina = await a.join("Mina", auth="mina-password")
        bob, eve = await b.join("Bob"), await b.join("Eve")

        await mina.send("/mute bob 5")
        await mina.expect("* Bob was muted by Mina for 5 minutes")
        await bob.expect("* Bob was muted by Mina for 5 minutes")
        await bob.send("can anyone hear me")
        await bob.expect_prefix("! ERROR 115 muted: Mina muted you until 20")
        await mina.send("/unmute Bob")
        await mina.expect("* Bob was unmuted by Mina")
        await bob.expect("* Bob was unmuted by Mina")
        await bob.send("thanks")
        await eve.expect("Bob:thanks")  # (and nothing of the muted line before it)

        await mina.send("/topic Release day")
        await eve.expect_prefix("* topic of dev: Release day (set by Mina)")

        await mina.send("/kick eve  off topic")
        await mina.expect("* Eve was kicked by Mina (off topic)")
        assert (await eve.until_closed())[-1] == "* Eve was kicked by Mina (off topic)"
        await bob.expect("* Eve left dev (kicked by Mina (off topic))")

        await mina.send("/ban Bob spam")
        await mina.expect("* Bob was banned by Mina until /unban (spam)")
        assert (await bob.until_closed())[-1] == "* Bob was banned by Mina until /unban (spam)"
        for node in (a, b):
            again = await node.connect("Bob")
            assert await again.line() == "! ERROR 117 banned: Bob is banned until lifted (spam)"
            # Bob's name was not registered: his node held his address too, as one
            # server does (every client here comes from 127.0.0.1).
            renamed = await node.connect("Robert")
            assert await renamed.line() == (
                "! ERROR 117 banned: your address is banned until lifted (spam)"
            )
        await mina.send("/kick Nobody")
        await mina.expect("! ERROR 102 no such user: Nobody")


async def register(node, name: str, password: str) -> None:
    """Join ``node`` as ``name``, register it, and leave."""
    client = await node.join(name)
    await client.send(f"/register {password}")
    await client.expect(f"* {name} is registered to you; from now on it needs its password to join")
    await client.send("/quit")
    await client.until_closed()
