"""Operators, bans, mutes and topics: the moderation state of a server.

`Moderation` answers synchronously from memory (is this name banned, muted, an
operator; what is this room's topic), so a join or a room line never waits for a
disk; changes are written through to a `ModerationStore` (`SqliteModerationStore`
with ``--db``: bans, mutes and topics survive a restart; a Redis store keeps them for
a cluster, loading them the same way).  Without a store they last as long as the
process.

Bans and mutes expire on the injected wall clock (``clock``, unix seconds: a ban
that outlives a restart must keep its end).  An expired entry is dropped the next
time anyone looks at it.  A ban holds a name, and for a name that was not
registered also the address it came from: that address is then refused to anyone
who does not log in to a registered name.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Protocol

import attrs

from ..protocol.handshake import fold_name
from .sqlite import SqliteDatabase

__all__ = [
    "Ban",
    "Moderation",
    "ModerationStore",
    "Mute",
    "SqliteModerationStore",
    "Topic",
    "describe_until",
]

logger = logging.getLogger("machat.server.moderation")


@attrs.frozen
class Ban:
    key: str  # fold_name(name)
    name: str
    address: str | None  # the address it came from, if the name was not registered
    by: str
    reason: str
    created: float  # unix time
    until: float | None  # unix time; None: until /unban

    def expired(self, now: float) -> bool:
        return self.until is not None and self.until <= now


@attrs.frozen
class Mute:
    key: str
    name: str
    by: str
    until: float | None

    def expired(self, now: float) -> bool:
        return self.until is not None and self.until <= now


@attrs.frozen
class Topic:
    room_key: str
    room: str
    text: str
    by: str
    ts: float


def describe_until(until: float | None) -> str:
    """``until 2026-12-01 10:30:00 UTC``, or ``until lifted``."""
    if until is None:
        return "until lifted"
    return "until " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(until))


class ModerationStore(Protocol):
    """Where bans, mutes and topics are kept (SQLite; Redis for a cluster)."""

    async def load(self) -> tuple[list[Ban], list[Topic], list[Mute]]: ...
    async def put_ban(self, ban: Ban) -> None: ...
    async def delete_ban(self, key: str) -> None: ...
    async def put_mute(self, mute: Mute) -> None: ...
    async def delete_mute(self, key: str) -> None: ...
    async def put_topic(self, topic: Topic) -> None: ...
    async def delete_topic(self, room_key: str) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS bans (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    address TEXT,
    by TEXT NOT NULL,
    reason TEXT NOT NULL,
    created REAL NOT NULL,
    until REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS topics (
    room_key TEXT PRIMARY KEY,
    room TEXT NOT NULL,
    text TEXT NOT NULL,
    by TEXT NOT NULL,
    ts REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mutes (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    by TEXT NOT NULL,
    until REAL
) WITHOUT ROWID;
"""


class SqliteModerationStore:
    """Bans, topics and mutes in the ``bans``, ``topics`` and ``mutes`` tables of a
    SQLite file (a file from before mutes were kept gets the table at open)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    def open(self) -> None:
        self.db.open(_SCHEMA)

    async def load(self) -> tuple[list[Ban], list[Topic], list[Mute]]:
        def load(conn: sqlite3.Connection) -> tuple[list[Ban], list[Topic], list[Mute]]:
            bans = conn.execute(
                "SELECT key, name, address, by, reason, created, until FROM bans"
            ).fetchall()
            topics = conn.execute("SELECT room_key, room, text, by, ts FROM topics").fetchall()
            mutes = conn.execute("SELECT key, name, by, until FROM mutes").fetchall()
            return (
                [Ban(*row) for row in bans],
                [Topic(*row) for row in topics],
                [Mute(*row) for row in mutes],
            )

        return await self.db.run(load)

    async def put_ban(self, ban: Ban) -> None:
        await self._put("bans", ban)

    async def delete_ban(self, key: str) -> None:
        await self._execute("DELETE FROM bans WHERE key = ?", (key,))

    async def put_mute(self, mute: Mute) -> None:
        await self._put("mutes", mute)

    async def delete_mute(self, key: str) -> None:
        await self._execute("DELETE FROM mutes WHERE key = ?", (key,))

    async def put_topic(self, topic: Topic) -> None:
        await self._put("topics", topic)

    async def delete_topic(self, room_key: str) -> None:
        await self._execute("DELETE FROM topics WHERE room_key = ?", (room_key,))

    async def _put(self, table: str, record: Ban | Mute | Topic) -> None:
        """Write ``record`` as its table's row (the columns are its fields)."""
        columns = [field.name for field in attrs.fields(type(record))]
        await self._execute(
            f"INSERT OR REPLACE INTO {table} ({', '.join(columns)})"
            f" VALUES ({', '.join('?' * len(columns))})",
            attrs.astuple(record),
        )

    async def _execute(self, sql: str, params: tuple[object, ...]) -> None:
        def execute(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute(sql, params)

        await self.db.run(execute)


class Moderation:
    """See the module docstring.  ``operators`` are names (any case)."""

    def __init__(
        self,
        store: ModerationStore | None = None,
        *,
        operators: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.clock = clock
        self.operators: frozenset[str] = frozenset()
        self.set_operators(operators)
        self._bans: dict[str, Ban] = {}
        self._mutes: dict[str, Mute] = {}
        self._topics: dict[str, Topic] = {}

    async def load(self) -> None:
        """Read the stored bans, mutes and topics (at startup)."""
        if self.store is None:
            return
        bans, topics, mutes = await self.store.load()
        now = self.clock()
        self._bans = {ban.key: ban for ban in bans if not ban.expired(now)}
        self._mutes = {mute.key: mute for mute in mutes if not mute.expired(now)}
        self._topics = {topic.room_key: topic for topic in topics}
        for ban in bans:
            if ban.expired(now):
                await self._write(self.store.delete_ban, ban.key)
        for mute in mutes:
            if mute.expired(now):
                await self._write(self.store.delete_mute, mute.key)
        logger.info(
            "moderation: %d bans, %d mutes, %d topics",
            len(self._bans),
            len(self._mutes),
            len(self._topics),
        )

    async def refresh(self) -> None:
        """Re-read a store that other servers change too (a cluster's Redis)."""
        store = self.store
        if store is None or not getattr(store, "shared", False):
            return
        bans, topics, mutes = await store.load()
        self._bans = {ban.key: ban for ban in bans}
        self._mutes = {mute.key: mute for mute in mutes}
        self._topics = {topic.room_key: topic for topic in topics}

    async def _write(self, method: Callable[..., object], *args: object) -> None:
        """Write through; a failure is logged, and memory stays right until a restart."""
        try:
            await method(*args)  # type: ignore[misc]
        except (sqlite3.Error, OSError) as exc:
            logger.error("cannot save the moderation state: %s", exc)

    # -- operators --------------------------------------------------------------------

    def set_operators(self, names: Iterable[str]) -> tuple[list[str], list[str]]:
        """Replace the operators; returns the names added and removed (folded, sorted)."""
        new = frozenset(fold_name(name) for name in names)
        added, removed = sorted(new - self.operators), sorted(self.operators - new)
        self.operators = new
        return added, removed

    def is_operator_name(self, name: str) -> bool:
        return fold_name(name) in self.operators

    # -- bans -------------------------------------------------------------------------

    def find_ban(self, name: str, address: str | None, *, authenticated: bool) -> Ban | None:
        """The ban refusing ``name`` from ``address``, if any.

        An address ban does not apply to someone ``authenticated`` as a registered name.
        """
        now = self.clock()
        ban = self._bans.get(fold_name(name))
        if ban is not None and not ban.expired(now):
            return ban
        if authenticated or address is None:
            return None
        for ban in self._bans.values():
            if ban.address == address and not ban.expired(now):
                return ban
        return None

    async def ban(
        self, name: str, *, by: str, minutes: int = 0, reason: str = "", address: str | None = None
    ) -> Ban:
        now = self.clock()
        until = now + 60 * minutes if minutes else None
        ban = Ban(fold_name(name), name, address, by, reason, now, until)
        self._bans[ban.key] = ban
        if self.store is not None:
            await self._write(self.store.put_ban, ban)
        return ban

    async def unban(self, name: str) -> Ban | None:
        """Lift the ban of ``name``; None if it had none (or it had expired)."""
        ban = self._bans.pop(fold_name(name), None)
        if ban is not None and self.store is not None:
            await self._write(self.store.delete_ban, ban.key)
        if ban is None or ban.expired(self.clock()):
            return None
        return ban

    def bans(self) -> list[Ban]:
        """The bans in force, by name."""
        now = self.clock()
        return sorted(
            (ban for ban in self._bans.values() if not ban.expired(now)), key=lambda b: b.key
        )

    # -- mutes ------------------------------------------------------------------------

    async def mute(self, name: str, *, by: str, minutes: int = 0) -> Mute:
        until = self.clock() + 60 * minutes if minutes else None
        mute = self._mutes[fold_name(name)] = Mute(fold_name(name), name, by, until)
        if self.store is not None:
            await self._write(self.store.put_mute, mute)
        return mute

    async def unmute(self, name: str) -> Mute | None:
        """Lift the mute of ``name``; None if it had none (or it had expired)."""
        mute = self._mutes.pop(fold_name(name), None)
        if mute is not None and self.store is not None:
            await self._write(self.store.delete_mute, mute.key)
        if mute is None or mute.expired(self.clock()):
            return None
        return mute

    def muted(self, name: str) -> Mute | None:
        key = fold_name(name)
        mute = self._mutes.get(key)
        if mute is not None and mute.expired(self.clock()):
            del self._mutes[key]
            return None
        return mute

    # -- topics -----------------------------------------------------------------------

    def topic(self, room: str) -> Topic | None:
        return self._topics.get(fold_name(room))

    async def set_topic(self, room: str, text: str, *, by: str) -> Topic | None:
        """Set (``text`` non-empty) or clear a room's topic; returns the new one."""
        key = fold_name(room)
        if not text:
            if self._topics.pop(key, None) is not None and self.store is not None:
                await self._write(self.store.delete_topic, key)
            return None
        topic = self._topics[key] = Topic(key, room, text, by, self.clock())
        if self.store is not None:
            await self._write(self.store.put_topic, topic)
        return topic
