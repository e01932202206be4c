"""Registered names: argon2id hashes in a store, logins, and a lockout.

`Accounts` is what the server asks: whether a name is registered, and whether a
password is right for it.  It keeps hashes only (argon2id through argon2-cffi); a
hash is computed or checked on a worker thread, at most ``threads`` at once, so a
flood of logins costs bounded memory (argon2 takes 64 MiB per hash by default) and
never stalls the event loop.

A name that is not registered is checked against a dummy hash made at startup, so
a wrong password costs the same time whether or not the name exists.  Ten wrong
passwords for one name within a minute lock that name for a minute (`Lockout`,
with an injected clock); other names log in as before.

The accounts live behind `AccountStore`: `SqliteAccountStore` keeps them in the
``--db`` file, and a Redis store can keep them for a cluster.  Names are keyed by
`fold_name`, so registered names are unique case-insensitively.
"""

from __future__ import annotations

import logging
import math
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import argon2
import attrs
import trio

from ..protocol.commands import check_new_password
from ..protocol.errors import ChatError, ErrorCode
from ..protocol.handshake import fold_name
from .sqlite import SqliteDatabase

__all__ = [
    "Account",
    "AccountStore",
    "Accounts",
    "Lockout",
    "SqliteAccountStore",
]

logger = logging.getLogger("machat.server.accounts")

#: Wrong passwords for one name within `LOCKOUT_WINDOW` seconds that lock it.
MAX_FAILURES = 10
LOCKOUT_WINDOW = 60.0
#: Seconds a locked name stays locked.
LOCKOUT_TIME = 60.0


@attrs.frozen
class Account:
    key: str  # fold_name(name): unique
    name: str  # as it was registered
    hash: str = attrs.field(repr=False)  # argon2id, in the PHC string format
    created: float  # unix time


class AccountStore(Protocol):
    """Where accounts are kept (SQLite now; Redis for a cluster)."""

    async def get(self, key: str) -> Account | None: ...

    async def add(self, account: Account) -> bool:
        """Store a new account; False if its key is taken (atomically)."""
        ...

    async def replace(self, account: Account) -> None: ...

    async def remove(self, key: str) -> bool:
        """Forget an account; False if there was none."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    created REAL NOT NULL
) WITHOUT ROWID;
"""


class SqliteAccountStore:
    """Accounts in the ``accounts`` table of a SQLite file.

    The keys of every account are also kept in memory, read at `open` and kept up to
    date by `add` and `remove` (this server is the only writer of its ``--db``
    file): a handshake under a name nobody registered, most of them, then costs no
    round trip to the database thread.  Behind the database's one lock, those round
    trips had lined a crowd's handshakes up one after another.
    """

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        self._keys: set[str] = set()

    def open(self) -> None:
        self.db.open(_SCHEMA)
        self._keys = {key for (key,) in self.db.conn.execute("SELECT key FROM accounts")}

    async def get(self, key: str) -> Account | None:
        if key not in self._keys:
            await trio.lowlevel.checkpoint()
            return None

        def get(conn: sqlite3.Connection) -> Account | None:
            row = conn.execute(
                "SELECT key, name, hash, created FROM accounts WHERE key = ?", (key,)
            ).fetchone()
            return None if row is None else Account(*row)

        return await self.db.run(get)

    async def add(self, account: Account) -> bool:
        def add(conn: sqlite3.Connection) -> bool:
            with conn:
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO accounts (key, name, hash, created) VALUES (?, ?, ?, ?)",
                    (account.key, account.name, account.hash, account.created),
                )
            return cursor.rowcount == 1

        added = await self.db.run(add)
        if added:
            self._keys.add(account.key)
        return added

    async def replace(self, account: Account) -> None:
        def replace(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute(
                    "UPDATE accounts SET hash = ? WHERE key = ?", (account.hash, account.key)
                )

        await self.db.run(replace)

    async def remove(self, key: str) -> bool:
        def remove(conn: sqlite3.Connection) -> bool:
            with conn:
                return conn.execute("DELETE FROM accounts WHERE key = ?", (key,)).rowcount == 1

        removed = await self.db.run(remove)
        self._keys.discard(key)
        return removed


@attrs.define
class _Failures:
    times: deque[float] = attrs.field(factory=deque)
    locked_until: float = -math.inf


class Lockout:
    """Counts wrong passwords per name; ``clock`` is any monotonic clock (injected in tests).

    At most ``max_names`` names are remembered: beyond that the ones whose failures
    have aged out are forgotten first, then the oldest.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_failures: int = MAX_FAILURES,
        window: float = LOCKOUT_WINDOW,
        duration: float = LOCKOUT_TIME,
        max_names: int = 10_000,
    ) -> None:
        self.clock = clock
        self.max_failures = max_failures
        self.window = window
        self.duration = duration
        self.max_names = max_names
        self._names: dict[str, _Failures] = {}

    def __len__(self) -> int:
        return len(self._names)

    def locked_for(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        entry = self._names.get(key)
        if entry is None:
            return 0.0
        return max(0.0, entry.locked_until - self.clock())

    def failed(self, key: str) -> bool:
        """Count a wrong password for ``key``; True if that locked it."""
        now = self.clock()
        entry = self._names.get(key)
        if entry is None:
            if len(self._names) >= self.max_names:
                self._forget_some(now)
            entry = self._names[key] = _Failures()
        times = entry.times
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.max_failures:
            times.clear()
            entry.locked_until = now + self.duration
            return True
        return False

    def succeeded(self, key: str) -> None:
        self._names.pop(key, None)

    def _forget_some(self, now: float) -> None:
        for key, entry in list(self._names.items()):
            recent = entry.times and entry.times[-1] > now - self.window
            if not recent and entry.locked_until <= now:
                del self._names[key]
        while len(self._names) >= self.max_names:
            del self._names[next(iter(self._names))]


def default_hasher() -> argon2.PasswordHasher:
    """argon2id with argon2-cffi's defaults (RFC 9106's low-memory profile)."""
    return argon2.PasswordHasher()


class Accounts:
    """Registration and login; every refusal is a `ChatError` (103 or 114)."""

    def __init__(
        self,
        store: AccountStore,
        *,
        hasher: argon2.PasswordHasher | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        threads: int = 2,
    ) -> None:
        self.store = store
        self.hasher = hasher or default_hasher()
        self.lockout = Lockout(clock)
        self._wall_clock = wall_clock
        self._limiter = trio.CapacityLimiter(threads)
        # Checked in place of a missing account's hash: the same work either way.
        self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))

    # -- hashing, on worker threads ---------------------------------------------------

    async def _hash(self, password: str) -> str:
        return await trio.to_thread.run_sync(self.hasher.hash, password, limiter=self._limiter)

    async def _verify(self, hash: str, password: str) -> bool:
        def verify() -> bool:
            try:
                return self.hasher.verify(hash, password)
            except argon2.exceptions.VerifyMismatchError:
                return False
            except argon2.exceptions.InvalidHashError:
                logger.error("an account's stored hash is not an argon2 hash")
                return False

        return await trio.to_thread.run_sync(verify, limiter=self._limiter)

    # -- what the server asks ---------------------------------------------------------

    async def is_registered(self, name: str) -> bool:
        return await self.store.get(fold_name(name)) is not None

    async def authenticate(self, name: str, password: str | None, *, hint: str = "") -> bool:
        """May ``name`` be used with ``password``?  True: it is registered and logged in.

        False: it is not registered (anyone may use it).  Raises ``ChatError(114)``
        for a registered name without its password, with a wrong one, or locked.
        ``hint`` says how to give the password (added to the missing-password error).
        """
        key = fold_name(name)
        account = await self.store.get(key)
        if account is None:
            if password is not None:
                await self._verify(self._dummy_hash, password)
            return False
        if password is None:
            how = f"; {hint}" if hint else ""
            message = f"name registered: {name} is registered{how}"
            raise ChatError(ErrorCode.NAME_REGISTERED, message)
        await self._check(account, password)
        return True

    async def _check(self, account: Account, password: str) -> None:
        """Raise 114 unless ``password`` is the account's; counts failures."""
        wait = self.lockout.locked_for(account.key)
        if wait:
            raise ChatError(
                ErrorCode.NAME_REGISTERED,
                f"name registered: {account.name} is locked after too many wrong passwords; "
                f"try again in {math.ceil(wait)} s",
            )
        if not await self._verify(account.hash, password):
            if self.lockout.failed(account.key):
                logger.warning(
                    "account %s locked for %d s after %d wrong passwords",
                    account.name,
                    self.lockout.duration,
                    self.lockout.max_failures,
                )
            raise ChatError(
                ErrorCode.NAME_REGISTERED, f"name registered: wrong password for {account.name}"
            )
        self.lockout.succeeded(account.key)
        if self.hasher.check_needs_rehash(account.hash):
            await self.store.replace(attrs.evolve(account, hash=await self._hash(password)))

    async def _existing(self, name: str) -> Account:
        account = await self.store.get(fold_name(name))
        if account is None:
            raise ChatError(ErrorCode.BAD_COMMAND, f"{name} is not registered; see /help register")
        return account

    async def register(self, name: str, password: str) -> None:
        """Register ``name`` with ``password``; 103 if taken or the password breaks the rule."""
        _rule(password)
        key = fold_name(name)
        if await self.store.get(key) is not None:
            raise ChatError(ErrorCode.BAD_COMMAND, f"{name} is already registered")
        account = Account(key, name, await self._hash(password), self._wall_clock())
        if not await self.store.add(account):  # registered meanwhile (another node)
            raise ChatError(ErrorCode.BAD_COMMAND, f"{name} is already registered")
        logger.info("registered %s", name)

    async def change_password(self, name: str, old: str, new: str) -> None:
        _rule(new)
        account = await self._existing(name)
        await self._check(account, old)
        await self.store.replace(attrs.evolve(account, hash=await self._hash(new)))
        logger.info("password changed for %s", account.name)

    async def unregister(self, name: str, password: str) -> None:
        account = await self._existing(name)
        await self._check(account, password)
        await self.store.remove(account.key)
        logger.info("unregistered %s", account.name)


def _rule(password: str) -> None:
    try:
        check_new_password(password)
    except ValueError as exc:
        raise ChatError(ErrorCode.BAD_COMMAND, str(exc)) from None
