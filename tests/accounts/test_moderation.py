"""Moderation state: operators, bans (by name and address), mutes, topics, persistence.

Expiry runs on a fake wall clock; the store is a real SQLite file in tmp_path.
"""

from __future__ import annotations

import pytest

from machat.server.moderation import Moderation, SqliteModerationStore, describe_until
from machat.server.sqlite import SqliteDatabase

from .conftest import FakeClock


def open_store(path) -> SqliteModerationStore:
    store = SqliteModerationStore(SqliteDatabase(path))
    store.open()
    return store


@pytest.fixture
def db_path(tmp_path) -> str:
    return str(tmp_path / "chat.db")


async def loaded(path: str, clock: FakeClock) -> Moderation:
    moderation = Moderation(open_store(path), clock=clock)
    await moderation.load()
    return moderation


def test_operators_are_names_in_any_case() -> None:
    moderation = Moderation(operators=["Mina"])
    assert moderation.is_operator_name("mina")
    assert not moderation.is_operator_name("Oskar")
    assert moderation.set_operators(["MINA", "Oskar"]) == (["oskar"], [])
    assert moderation.set_operators(["Oskar"]) == ([], ["mina"])
    assert not moderation.is_operator_name("Mina")


async def test_bans_by_name_and_address(clock: FakeClock) -> None:
    moderation = Moderation(clock=clock)
    await moderation.ban("Bob", by="Mina", reason="spam", address="10.0.0.7")
    ban = moderation.find_ban("BOB", None, authenticated=False)
    assert ban is not None and (ban.name, ban.by, ban.reason, ban.until) == (
        "Bob",
        "Mina",
        "spam",
        None,
    )
    # His address is refused to anyone not logged in to a registered name.
    assert moderation.find_ban("Carol", "10.0.0.7", authenticated=False) is ban
    assert moderation.find_ban("Carol", "10.0.0.7", authenticated=True) is None
    assert moderation.find_ban("Carol", "10.0.0.8", authenticated=False) is None
    # The name stays banned even for its owner, logged in.
    assert moderation.find_ban("bob", "10.0.0.8", authenticated=True) is ban
    assert await moderation.unban("bob") == ban
    assert moderation.find_ban("Bob", "10.0.0.7", authenticated=False) is None
    assert await moderation.unban("bob") is None


async def test_bans_expire(clock: FakeClock) -> None:
    moderation = Moderation(clock=clock)
    ban = await moderation.ban("Bob", by="Mina", minutes=10)
    assert ban.until == clock.now + 600
    assert describe_until(ban.until).startswith("until 1970-01-12 ")
    assert describe_until(None) == "until lifted"
    clock.advance(599)
    assert moderation.find_ban("Bob", None, authenticated=False) is ban
    assert moderation.bans() == [ban]
    clock.advance(1)
    assert moderation.find_ban("Bob", None, authenticated=False) is None
    assert moderation.bans() == []
    assert await moderation.unban("Bob") is None  # nothing in force to lift


async def test_bans_list_is_sorted(clock: FakeClock) -> None:
    moderation = Moderation(clock=clock)
    for name in ["zed", "Amy", "bob"]:
        await moderation.ban(name, by="Mina")
    assert [ban.name for ban in moderation.bans()] == ["Amy", "bob", "zed"]


async def test_bans_and_topics_survive_a_restart(db_path: str, clock: FakeClock) -> None:
    first = await loaded(db_path, clock)
    forever = await first.ban("Bob", by="Mina", reason="spam", address="10.0.0.7")
    await first.ban("Eve", by="Mina", minutes=1)
    await first.ban("Gone", by="Mina")
    await first.unban("Gone")
    topic = await first.set_topic("Dev", "release day", by="Mina")
    await first.set_topic("lounge", "to be cleared", by="Mina")
    await first.set_topic("lounge", "", by="Mina")
    first.store.db.close()  # type: ignore[union-attr]

    clock.advance(61)  # Eve's ban ends while the server is down
    second = await loaded(db_path, clock)
    assert second.bans() == [forever]
    assert second.find_ban("carol", "10.0.0.7", authenticated=False) == forever
    assert second.topic("dev") == topic
    assert second.topic("lounge") is None
    second.store.db.close()  # type: ignore[union-attr]
    # The expired ban was deleted from the file when it was loaded.
    bans, topics, mutes = await open_store(db_path).load()
    assert [ban.name for ban in bans] == ["Bob"]
    assert [t.room for t in topics] == ["Dev"]
    assert mutes == []


async def test_mutes(clock: FakeClock) -> None:
    moderation = Moderation(clock=clock)
    assert moderation.muted("Bob") is None
    mute = await moderation.mute("Bob", by="Mina", minutes=5)
    assert moderation.muted("bob") is mute
    clock.advance(300)
    assert moderation.muted("Bob") is None
    await moderation.mute("Bob", by="Mina")
    clock.advance(10**9)
    assert moderation.muted("Bob") is not None  # until lifted
    assert await moderation.unmute("BOB") is not None
    assert moderation.muted("Bob") is None
    assert await moderation.unmute("Bob") is None


async def test_mutes_survive_a_restart_until_they_end(db_path: str, clock: FakeClock) -> None:
    first = await loaded(db_path, clock)
    forever = await first.mute("Bob", by="Mina")
    await first.mute("Eve", by="Mina", minutes=1)
    await first.mute("Gone", by="Mina")
    await first.unmute("gone")
    first.store.db.close()  # type: ignore[union-attr]

    clock.advance(61)  # Eve's mute ends while the server is down
    second = await loaded(db_path, clock)
    assert second.muted("bob") == forever
    assert second.muted("Eve") is None and second.muted("Gone") is None
    second.store.db.close()  # type: ignore[union-attr]
    _, _, mutes = await open_store(db_path).load()  # the expired one was deleted
    assert [mute.name for mute in mutes] == ["Bob"]


async def test_topics(clock: FakeClock) -> None:
    moderation = Moderation(clock=clock)
    assert moderation.topic("dev") is None
    topic = await moderation.set_topic("Dev", "hello", by="Mina")
    assert topic is not None
    assert (topic.room, topic.text, topic.by, topic.ts) == ("Dev", "hello", "Mina", clock.now)
    assert moderation.topic("DEV") is topic
    assert await moderation.set_topic("dev", "", by="Mina") is None
    assert moderation.topic("dev") is None
