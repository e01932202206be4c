"""One SQLite connection used from trio: each call runs on a worker thread, one at a time.

The accounts and the moderation state keep their own tables in the ``--db`` file,
beside the message history (`machat.server.store`, which has a connection of its
own: WAL mode lets them share the file).  Their writes are rare and small, so they
go one statement (or one short transaction) at a time rather than in batches; the
thread keeps a disk stall off the event loop, and the lock keeps the connection from
being used by two threads at once.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import TypeVar

import trio

__all__ = ["SqliteDatabase"]

T = TypeVar("T")


class SqliteDatabase:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = trio.Lock()

    def __repr__(self) -> str:
        return f"<SqliteDatabase {self.path!r}>"

    def open(self, schema: str) -> None:
        """Open the file and create what ``schema`` creates (idempotent statements)."""
        if self._conn is None:
            conn = sqlite3.connect(self.path, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=2000")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        with self._conn:
            self._conn.executescript(schema)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"{self!r} is not open")
        return self._conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on a worker thread, after any call still running."""
        conn = self.conn
        async with self._lock:
            return await trio.to_thread.run_sync(fn, conn)
