"""Durable room history in SQLite, written in batches off the event loop.

The room task hands each published message to `MessageStore.put_nowait`, which only
appends to a list: the fan-out never waits for the disk.  One writer task
(`MessageStore.run`) collects what is pending for up to ``batch_interval`` seconds
(or until ``batch_size`` are pending) and writes the batch in one transaction, on a
worker thread.  Only that task and `flush` write, one at a time, so the connection is
never used by two threads at once.

The file is a log: a batch appends one row per room it touched, holding that room's
messages of the batch (see `_SCHEMA`), and updates the room's entry in a small table
of rooms.  Appending keeps a batch's cost to the pages at the end of the log, however
many rooms are busy; the first layout (a row per message, keyed by room and id)
dirtied a b-tree page per room in every batch, several microseconds per message.
Each row points at its room's previous row, so reading a room's recent history back
at startup follows that chain from the room's last row and needs no index.

The database is in WAL mode with ``synchronous=NORMAL``: a committed batch survives
the process being killed; after a power loss the last batches may be missing but
the file is consistent.  A failed write (disk full, database locked) is logged and
retried later; the server never stops because of the disk.  Pending messages are
bounded by ``max_pending``: beyond it the oldest are dropped and counted.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
from collections.abc import Iterable

import attrs
import trio

from ..protocol import events as ev
from ..protocol.handshake import fold_name

__all__ = ["MessageStore", "StoreStatistics"]

logger = logging.getLogger("machat.server.store")

SCHEMA_VERSION = 2

# message_batches: the log.  ``body`` is the JSON array ``[senders, texts,
# ts_offsets]``: the message with id ``first_id + i`` was sent by ``senders[i]`` at
# ``(ts_us + ts_offsets[i]) / 1e6``; ``ts_offsets`` is empty when they share one time
# (a room's pass stamps all its messages alike).  Times are kept to the microsecond,
# in integers: a float's repr was the dearest part of encoding a batch.
# ``prev_seq`` is the seq of the room's previous row (NULL for its first).
# message_rooms: per room, its highest id and its last row.
# messages: the rows of schema version 1, for people reading the file with sqlite3.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS message_batches (
    seq INTEGER PRIMARY KEY,
    room_key TEXT NOT NULL,
    first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    room TEXT NOT NULL,
    ts_us INTEGER NOT NULL,
    body TEXT NOT NULL,
    prev_seq INTEGER
);
CREATE TABLE IF NOT EXISTS message_rooms (
    room_key TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL,
    last_seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS messages (room_key, id, room, sender, text, ts) AS
    SELECT b.room_key, b.first_id + t.key, b.room,
        json_extract(b.body, '$[0][' || t.key || ']'), t.value,
        (b.ts_us + coalesce(json_extract(b.body, '$[2][' || t.key || ']'), 0)) / 1e6
    FROM message_batches AS b, json_each(b.body, '$[1]') AS t;
"""

#: The most messages one row holds.
_MAX_PER_ROW = 500

#: A row before it has a place in the log: room_key, first_id, last_id, room, ts_us, body.
_Row = tuple[str, int, int, str, int, str]


@functools.cache
def _append_sql(rows: int) -> str:
    """One INSERT for ``rows`` log rows: the sqlite3 module lets go of the GIL around
    every statement step, so a statement per row would make the writer thread and
    the event loop hand the GIL back and forth for every row."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return (
        "INSERT OR REPLACE INTO message_batches "
        f"(seq, room_key, first_id, last_id, room, ts_us, body, prev_seq) VALUES {values}"
    )


@functools.cache
def _rooms_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?)"] * rows)
    return (
        f"INSERT INTO message_rooms (room_key, last_id, last_seq) VALUES {values} "
        "ON CONFLICT (room_key) DO UPDATE SET "
        "last_id = max(last_id, excluded.last_id), last_seq = excluded.last_seq"
    )


class _Batch(list[ev.Message]):
    """Messages taken from the pending list together, with the rows that store them.

    The rows are encoded on the event loop's thread, where the messages came from:
    the writer thread then holds the GIL only to bind a few values per row, and
    does not make the event loop wait for the GIL while it encodes.
    """

    __slots__ = ("rows",)

    def __init__(self, messages: Iterable[ev.Message]) -> None:
        super().__init__(messages)
        self.rows = _batch_rows(self)


def _batch_rows(batch: list[ev.Message]) -> list[_Row]:
    """The rows that store ``batch``: one per run of consecutive ids of a room."""
    runs: dict[str, list[ev.Message]] = {}  # room spelling -> its current run
    rows: list[_Row] = []
    for m in batch:
        run = runs.get(m.room)
        if run is not None and m.id == run[-1].id + 1 and len(run) < _MAX_PER_ROW:
            run.append(m)
        else:
            if run is not None:
                rows.append(_row(run))
            runs[m.room] = [m]
    rows.extend(map(_row, runs.values()))
    return rows


def _row(run: list[ev.Message]) -> _Row:
    first = run[0]
    times = [m.ts for m in run]
    ts_us = round(times[0] * 1e6)
    if times.count(times[0]) == len(times):  # one pass: one time for all
        offsets = []
    else:
        offsets = [round(ts * 1e6) - ts_us for ts in times]
    body = json.dumps([[m.sender for m in run], [m.text for m in run], offsets])
    return (fold_name(first.room), first.id, run[-1].id, first.room, ts_us, body)


def _decode(first_id: int, room: str, ts_us: int, body: str) -> list[ev.Message]:
    senders, texts, offsets = json.loads(body)
    if not offsets:
        offsets = [0] * len(texts)
    return [
        ev.Message(room, sender, text, first_id + i, (ts_us + offset) / 1e6)
        for i, (sender, text, offset) in enumerate(zip(senders, texts, offsets, strict=True))
    ]


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
        self._log = _LogPosition()
        self._pending: list[ev.Message] = []
        self._wake = trio.Event()
        self._write_lock = trio.Lock()

    def __repr__(self) -> str:
        return f"<MessageStore {self.path!r} pending={len(self._pending)}>"

    # -- setup (synchronous, before serving) ------------------------------------------

    def open(self) -> None:
        """Open or create the database; raises `sqlite3.Error` if it cannot.

        A version-1 file (a row per message) is migrated to the log in one transaction.
        """
        conn = sqlite3.connect(self.path, check_same_thread=False)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                logger.warning("%s: journal mode is %s, not wal", self.path, mode)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=2000")
            with conn:
                conn.execute("BEGIN IMMEDIATE")  # DDL too: a migration is all or nothing
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version == 1:
                    conn.execute("ALTER TABLE messages RENAME TO messages_v1")
                elif version not in (0, SCHEMA_VERSION):
                    raise sqlite3.DatabaseError(
                        f"{self.path}: schema version {version}, expected {SCHEMA_VERSION}"
                    )
                _create_schema(conn)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                if version == 1:
                    _migrate_from_1(conn)
            self._log = _LogPosition.read(conn)
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

    def last_ids(self) -> dict[str, int]:
        """room key (`fold_name` of the room) -> the highest id stored for it."""
        return dict(self.conn.execute("SELECT room_key, last_id FROM message_rooms"))

    def load_recent(self, per_room: int) -> list[ev.Message]:
        """The last ``per_room`` messages of every room, oldest first within a room."""
        messages: list[ev.Message] = []
        if per_room <= 0:
            return messages
        conn = self.conn
        rooms = conn.execute("SELECT last_seq FROM message_rooms ORDER BY room_key").fetchall()
        for (seq,) in rooms:
            newest_first: list[list[ev.Message]] = []
            count = 0
            while seq is not None and count < per_room:  # back along the room's chain
                first_id, room, ts_us, body, seq = conn.execute(
                    "SELECT first_id, room, ts_us, body, prev_seq FROM message_batches "
                    "WHERE seq = ?",
                    (seq,),
                ).fetchone()
                newest_first.append(_decode(first_id, room, ts_us, body))
                count += len(newest_first[-1])
            by_id = {m.id: m for part in reversed(newest_first) for m in part}
            messages.extend(by_id[id] for id in sorted(by_id)[-per_room:])
        return messages

    # -- writing ----------------------------------------------------------------------

    def put_nowait(self, message: ev.Message) -> None:
        """Queue a message for writing; never blocks."""
        self.put_many_nowait((message,))

    def put_many_nowait(self, messages: Iterable[ev.Message]) -> None:
        """Queue messages for writing, in order (a room's pass); never blocks."""
        pending = self._pending
        was_empty = not pending
        pending.extend(messages)
        if len(pending) > self.max_pending:
            self._drop(len(pending) - self.max_pending)
        if was_empty or len(pending) >= self.batch_size:
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
            if not self._pending:
                return True
            batch = _Batch(self._pending[: self.batch_size])
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

    def _write_rows(self, batch: _Batch) -> None:
        """On a worker thread: append the batch's rows to the log, in one transaction."""
        log = self._log.copy()
        with self.conn:
            log.append(self.conn, batch.rows)
        self._log = log  # only once committed: a retry writes the same seqs again


@attrs.define
class _LogPosition:
    """Where the log ends: the next seq, and each room's last row."""

    next_seq: int = 1
    last_seq: dict[str, int] = attrs.Factory(dict)

    @classmethod
    def read(cls, conn: sqlite3.Connection) -> _LogPosition:
        (last,) = conn.execute("SELECT max(seq) FROM message_batches").fetchone()
        return cls(
            (last or 0) + 1, dict(conn.execute("SELECT room_key, last_seq FROM message_rooms"))
        )

    def copy(self) -> _LogPosition:
        return _LogPosition(self.next_seq, dict(self.last_seq))

    def append(self, conn: sqlite3.Connection, rows: list[_Row]) -> None:
        """Append ``rows`` (inside the caller's transaction) and move past them."""
        per_statement = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 8
        last_seq = self.last_seq
        values: list[object] = []
        rooms: dict[str, tuple[str, int, int]] = {}
        for key, first_id, last_id, room, ts_us, body in rows:
            seq = self.next_seq
            self.next_seq += 1
            values += (seq, key, first_id, last_id, room, ts_us, body, last_seq.get(key))
            last_seq[key] = seq
            rooms[key] = (key, last_id, seq)
        for start in range(0, len(rows), per_statement):
            chunk = values[start * 8 : (start + per_statement) * 8]
            conn.execute(_append_sql(len(chunk) // 8), chunk)
        room_rows = list(rooms.values())
        per_statement = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 3
        for start in range(0, len(room_rows), per_statement):
            part = room_rows[start : start + per_statement]
            conn.execute(_rooms_sql(len(part)), [v for row in part for v in row])


def _create_schema(conn: sqlite3.Connection) -> None:
    """The tables and view, inside the caller's transaction (`executescript` would commit)."""
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def _migrate_from_1(conn: sqlite3.Connection) -> None:
    """Version 1 to 2, inside the caller's transaction: rows per message to the log."""
    logger.info("migrating the message history to schema version %d", SCHEMA_VERSION)
    log = _LogPosition.read(conn)
    rows = conn.execute("SELECT room, sender, text, id, ts FROM messages_v1 ORDER BY room_key, id")
    while chunk := rows.fetchmany(_MAX_PER_ROW):
        log.append(conn, _batch_rows([ev.Message(*row) for row in chunk]))
    conn.execute("DROP TABLE messages_v1")
