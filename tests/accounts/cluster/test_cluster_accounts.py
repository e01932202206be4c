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
        mina = await a.join("Mina")
        await mina.send("/register mina-password")
        await mina.expect_prefix("* Mina is registered to you")
        await mina.send("/quit")
        await mina.until_closed()

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
