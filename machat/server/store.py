"""Durable room history in SQLite, written in batches off the event loop.

The room task hands each published message to `MessageStore.put_nowait`, which only
appends to a list: the fan-out never waits for the disk.  One writer task
(`MessageStore.run`) collects what is pending for up to ``batch_interval`` seconds
(or until ``batch_size`` are pending) and writes the batch with one multi-row ``INSERT``
in one transaction, on a worker thread.  Only that task and `flush` write, one at
a time, so the connection is never used by two threads at once.

The database is in WAL mode with ``synchronous=NORMAL``: a committed batch survives
the process being killed; after a power loss the last batches may be missing but
the file is consistent.  A failed write (disk full, database locked) is logged and
retried later; the server never stops because of the disk.  Pending messages are
bounded by ``max_pending``: beyond it the oldest are dropped and counted.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
from collections.abc import Iterator

import attrs
import trio

from ..protocol import events as ev
from ..protocol.handshake import fold_name

__all__ = ["MessageStore", "StoreStatistics"]

logger = logging.getLogger("machat.server.store")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    room_key TEXT NOT NULL,
    id INTEGER NOT NULL,
    room TEXT NOT NULL,
    sender TEXT NOT NULL,
    text TEXT NOT NULL,
    ts REAL NOT NULL,
    PRIMARY KEY (room_key, id)
) WITHOUT ROWID
"""

# OR REPLACE: writing the same batch twice (a retry after an unclear failure) is harmless.
_COLUMNS = 6


@functools.cache
def _insert_sql(rows: int) -> str:
    """One INSERT for ``rows`` messages.

    One statement per batch rather than ``executemany``: the sqlite3 module lets go
    of the GIL around every statement step, and a step per row made the writer
    thread and the event loop hand the GIL back and forth for every message.
    """
    values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows)
    return f"INSERT OR REPLACE INTO messages (room_key, id, room, sender, text, ts) VALUES {values}"


@attrs.frozen
class StoreStatistics:
    written: int  # messages committed
    batches: int  # transactions committed
    pending: int  # accepted, not yet committed
    failures: int  # failed write attempts
    dropped: int  # given up on because too many were pending


class MessageStore:
    """Every room message, in a SQLite file; see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        batch_interval: float = 0.1,
        batch_size: int = 500,
        max_pending: int = 100_000,
        retry_interval: float = 1.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if max_pending < batch_size:
            raise ValueError("max_pending must be >= batch_size")
        self.path = os.fspath(path)
        self.batch_interval = batch_interval
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.retry_interval = retry_interval
        self.written = 0
        self.batches = 0
        self.failures = 0
        self.dropped = 0
        self._conn: sqlite3.Connection | None = None
        self._pending: list[ev.Message] = []
        self._wake = trio.Event()
        self._write_lock = trio.Lock()

    def __repr__(self) -> str:
        return f"<MessageStore {self.path!r} pending={len(self._pending)}>"

    # -- setup (synchronous, before serving) ------------------------------------------

    def open(self) -> None:
        """Open or create the database; raises `sqlite3.Error` if it cannot."""
        conn = sqlite3.connect(self.path, check_same_thread=False)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                logger.warning("%s: journal mode is %s, not wal", self.path, mode)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=2000")
            with conn:
                conn.execute(_SCHEMA)
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                elif version != SCHEMA_VERSION:
                    raise sqlite3.DatabaseError(
                        f"{self.path}: schema version {version}, expected {SCHEMA_VERSION}"
                    )
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def close(self) -> None:
        """Close the database; idempotent.  Only once `run` has returned."""
        if self._write_lock.locked():
            raise RuntimeError("MessageStore.close() while a write is in progress")
        if self._pending:
            logger.warning("%s: closing with %d messages unwritten", self.path, len(self._pending))
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("MessageStore is not open")
        return self._conn

    def _room_keys(self) -> Iterator[str]:
        """Every room key, via the primary key: one index seek per room."""
        key = ""
        while True:
            row = self.conn.execute(
                "SELECT room_key FROM messages WHERE room_key > ? ORDER BY room_key LIMIT 1",
                (key,),
            ).fetchone()
            if row is None:
                return
            key = row[0]
            yield key

    def last_ids(self) -> dict[str, int]:
        """room key (`fold_name` of the room) -> the highest id stored for it."""
        result = {}
        for key in self._room_keys():
            (last,) = self.conn.execute(
                "SELECT MAX(id) FROM messages WHERE room_key = ?", (key,)
            ).fetchone()
            result[key] = last
        return result

    def load_recent(self, per_room: int) -> list[ev.Message]:
        """The last ``per_room`` messages of every room, oldest first within a room."""
        messages: list[ev.Message] = []
        if per_room <= 0:
            return messages
        for key in self._room_keys():
            rows = self.conn.execute(
                "SELECT room, sender, text, id, ts FROM messages WHERE room_key = ? "
                "ORDER BY id DESC LIMIT ?",
                (key, per_room),
            ).fetchall()
            messages.extend(ev.Message(*row) for row in reversed(rows))
        return messages

    # -- writing ----------------------------------------------------------------------

    def put_nowait(self, message: ev.Message) -> None:
        """Queue a message for writing; never blocks."""
        pending = self._pending
        pending.append(message)
        if len(pending) > self.max_pending:
            self._drop(len(pending) - self.max_pending)
        if len(pending) == 1 or len(pending) >= self.batch_size:
            self._wake.set()

    def _drop(self, count: int) -> None:
        del self._pending[:count]
        if not self.dropped:
            logger.error(
                "%s: more than %d messages pending; dropping the oldest",
                self.path,
                self.max_pending,
            )
        self.dropped += count

    @property
    def pending(self) -> int:
        return len(self._pending)

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            written=self.written,
            batches=self.batches,
            pending=len(self._pending),
            failures=self.failures,
            dropped=self.dropped,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The batch writer; on cancellation it writes everything pending, then returns."""
        task_status.started()
        try:
            while True:
                if not self._pending:
                    self._wake = trio.Event()
                    await self._wake.wait()
                if len(self._pending) < self.batch_size:
                    self._wake = trio.Event()
                    with trio.move_on_after(self.batch_interval):
                        await self._wake.wait()
                if not await self._write_batch():
                    await trio.sleep(self.retry_interval)
        finally:
            with trio.CancelScope(shield=True):
                await self.flush()

    async def flush(self) -> None:
        """Write everything pending now, and wait for a batch being written.

        Stops early if a write fails (logged; the messages stay pending).
        """
        while await self._write_batch() and self._pending:
            pass

    async def _write_batch(self) -> bool:
        """Write up to ``batch_size`` pending messages; False if the write failed."""
        async with self._write_lock:
            batch = self._pending[: self.batch_size]
            if not batch:
                return True
            del self._pending[: len(batch)]
            try:
                await trio.to_thread.run_sync(self._write_rows, batch)
            except (sqlite3.Error, OSError):
                self.failures += 1
                logger.exception("%s: cannot write %d messages; will retry", self.path, len(batch))
                self._requeue(batch)
                return False
            except BaseException:
                # Cancelled before the thread started: nothing was written.
                self._requeue(batch)
                raise
            self.written += len(batch)
            self.batches += 1
            return True

    def _requeue(self, batch: list[ev.Message]) -> None:
        self._pending[:0] = batch
        if len(self._pending) > self.max_pending:
            self._drop(len(self._pending) - self.max_pending)

    def _write_rows(self, batch: list[ev.Message]) -> None:
        """On a worker thread: one transaction, one INSERT statement per batch."""
        conn = self.conn
        per_statement = max(1, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // _COLUMNS)
        keys: dict[str, str] = {}
        with conn:
            for start in range(0, len(batch), per_statement):
                chunk = batch[start : start + per_statement]
                params: list[object] = []
                for m in chunk:
                    key = keys.get(m.room)
                    if key is None:
                        key = keys[m.room] = fold_name(m.room)
                    params += (key, m.id, m.room, m.sender, m.text, m.ts)
                conn.execute(_insert_sql(len(chunk)), params)
