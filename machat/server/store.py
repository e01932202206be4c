"""Durable room history in SQLite, written in batches off the event loop.

The room task hands each fan-out pass to `MessageStore.put_pass`, which only appends
to a list: the fan-out never waits for the disk.  One writer task
(`MessageStore.run`) collects what is pending for up to ``batch_interval`` seconds
(or until ``batch_size`` are pending) and writes the batch in one transaction, on a
worker thread.  Only that task and `flush` write, one at a time, so the connection is
never used by two threads at once.

The file is a log: a batch appends one row per room it touched, holding that room's
messages of the batch (see `_SCHEMA`), and updates the room's entry in a small table
of rooms.  A row keeps its messages as the bytes the room sent, ``sender:text`` lines
(`put_pass` takes them from the room's `RoomPass`), so storing a message costs the event
loop next to nothing: schema version 2 encoded each batch as JSON, and that
encoding, over messages no longer in the cache, cost 0.7 us per message.
Appending keeps a batch's cost to the pages at the end of the log, however many
rooms are busy; the first layout (a row per message, keyed by room and id)
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
from .passes import RoomPass

__all__ = ["MessageStore", "StoreStatistics"]

logger = logging.getLogger("machat.server.store")

SCHEMA_VERSION = 3

# message_batches: the log.  ``lines`` holds the row's messages in the text wire
# format, ``sender:text\n`` each (a name holds no colon, a text no newline): the
# message with id ``first_id + i`` is line i.  Its time is ``(ts_us + offset) / 1e6``,
# where ``ts_offsets`` is the JSON array of the offsets, or '' when every offset is 0
# (a room's pass stamps all its messages alike).  Times are kept to the microsecond,
# in integers.  ``prev_seq`` is the seq of the room's previous row (NULL for its first).
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
    lines BLOB NOT NULL,
    ts_offsets TEXT NOT NULL,
    prev_seq INTEGER
);
CREATE TABLE IF NOT EXISTS message_rooms (
    room_key TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL,
    last_seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS messages (room_key, id, room, sender, text, ts) AS
    WITH RECURSIVE split (seq, i, line, rest) AS (
        SELECT seq, -1, NULL, CAST(lines AS TEXT) FROM message_batches
        UNION ALL
        SELECT seq, i + 1, substr(rest, 1, instr(rest, char(10)) - 1),
            substr(rest, instr(rest, char(10)) + 1)
        FROM split WHERE rest <> ''
    )
    SELECT b.room_key, b.first_id + s.i, b.room,
        substr(s.line, 1, instr(s.line, ':') - 1), substr(s.line, instr(s.line, ':') + 1),
        (b.ts_us + coalesce(json_extract(nullif(b.ts_offsets, ''), '$[' || s.i || ']'), 0))
            / 1e6
    FROM split AS s JOIN message_batches AS b USING (seq) WHERE s.i >= 0;
"""

#: The most messages a row gathers from several passes (a bigger pass is one row).
_MAX_PER_ROW = 500

#: A row before it has a place in the log: room_key, first_id, last_id, room, ts_us,
#: lines, ts_offsets.
_Row = tuple[str, int, int, str, int, bytes, str]
_COLUMNS = 9


@functools.cache
def _append_sql(rows: int) -> str:
    """One INSERT for ``rows`` log rows: the sqlite3 module lets go of the GIL around
    every statement step, so a statement per row would make the writer thread and
    the event loop hand the GIL back and forth for every row."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return (
        "INSERT OR REPLACE INTO message_batches (seq, room_key, first_id, last_id, room,"
        f" ts_us, lines, ts_offsets, prev_seq) VALUES {values}"
    )


@functools.cache
def _rooms_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?)"] * rows)
    return (
        f"INSERT INTO message_rooms (room_key, last_id, last_seq) VALUES {values} "
        "ON CONFLICT (room_key) DO UPDATE SET "
        "last_id = max(last_id, excluded.last_id), last_seq = excluded.last_seq"
    )


class _Batch:
    """Passes taken from the pending list together, with the rows that store them.

    The rows are made on the event loop's thread, where the passes came from: the
    writer thread then holds the GIL only to bind a few values per row.
    """

    __slots__ = ("count", "passes", "rows")

    def __init__(self, passes: list[RoomPass]) -> None:
        self.passes = passes
        self.count = sum(len(p) for p in passes)
        self.rows = _batch_rows(passes)

    def __len__(self) -> int:
        """How many messages."""
        return self.count


def _batch_rows(passes: list[RoomPass]) -> list[_Row]:
    """The rows that store ``passes``: one per run of consecutive ids of a room."""
    runs: dict[str, list[RoomPass]] = {}  # room spelling -> its current run of passes
    sizes: dict[str, int] = {}
    rows: list[_Row] = []
    for p in passes:
        room = p.room
        run = runs.get(room)
        if (
            run is not None
            and p.first_id == run[-1].last_id + 1
            and sizes[room] + len(p) <= _MAX_PER_ROW
        ):
            run.append(p)
            sizes[room] += len(p)
        else:
            if run is not None:
                rows.append(_row(run))
            runs[room] = [p]
            sizes[room] = len(p)
    rows.extend(map(_row, runs.values()))
    return rows


def _row(run: list[RoomPass]) -> _Row:
    first = run[0]
    ts = first.first_ts()
    ts_us = round(ts * 1e6)
    lines = first.text if len(run) == 1 else b"".join([p.text for p in run])
    if all(p.ts == ts for p in run):  # one pass, or passes of one time
        offsets = ""
    else:
        # The JSON array of every message's offset, as json.dumps writes one: a
        # pass's messages mostly share its time, so one number repeated (json.dumps
        # of the ints was 45% of making a burst's batch on the event loop).
        pieces = []
        for p in run:
            if p.ts is not None:
                pieces.append(",".join([str(round(p.ts * 1e6) - ts_us)] * len(p)))
            else:
                pieces.append(",".join([str(round(row[4] * 1e6) - ts_us) for row in p.rows]))
        offsets = "[" + ",".join(pieces) + "]"
    return (
        fold_name(first.room),
        first.first_id,
        run[-1].last_id,
        first.room,
        ts_us,
        lines,
        offsets,
    )


def _runs(messages: Iterable[ev.Message]) -> list[list[ev.Message]]:
    """``messages`` cut into runs of consecutive ids of one room."""
    runs: list[list[ev.Message]] = []
    for m in messages:
        if runs and runs[-1][-1].room == m.room and runs[-1][-1].id + 1 == m.id:
            runs[-1].append(m)
        else:
            runs.append([m])
    return runs


def _decode(first_id: int, room: str, ts_us: int, lines: bytes, offsets: str) -> list[ev.Message]:
    texts = lines.decode("utf-8").split("\n")
    texts.pop()  # after the last newline
    deltas = json.loads(offsets) if offsets else [0] * len(texts)
    messages = []
    for i, (line, delta) in enumerate(zip(texts, deltas, strict=True)):
        sender, _, text = line.partition(":")
        messages.append(ev.Message(room, sender, text, first_id + i, (ts_us + delta) / 1e6))
    return messages


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
        # A transaction costs the writer thread about 50 us beyond its rows: at 500
        # messages a batch, 40,000 burst messages (C=100) took 13.5-23 ms of its CPU
        # in 230 wakes, at 4,000 they took 6.6-10 ms in 30.
        batch_size: int = 4000,
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
        self._pending: list[RoomPass] = []
        self._pending_count = 0  # messages in _pending
        self._wake = trio.Event()
        self._write_lock = trio.Lock()

    def __repr__(self) -> str:
        return f"<MessageStore {self.path!r} pending={self.pending}>"

    # -- setup (synchronous, before serving) ------------------------------------------

    def open(self) -> None:
        """Open or create the database; raises `sqlite3.Error` if it cannot.

        A file of an earlier version (1: a row per message; 2: the log with JSON rows)
        is migrated in one transaction.
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
                elif version == 2:
                    conn.execute("DROP VIEW messages")
                    conn.execute("ALTER TABLE message_batches RENAME TO message_batches_v2")
                elif version not in (0, SCHEMA_VERSION):
                    raise sqlite3.DatabaseError(
                        f"{self.path}: schema version {version}, expected {SCHEMA_VERSION}"
                    )
                _create_schema(conn)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                if version == 1:
                    _migrate_from_1(conn)
                elif version == 2:
                    _migrate_from_2(conn)
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
            logger.warning("%s: closing with %d messages unwritten", self.path, self.pending)
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
                first_id, room, ts_us, lines, offsets, seq = conn.execute(
                    "SELECT first_id, room, ts_us, lines, ts_offsets, prev_seq"
                    " FROM message_batches WHERE seq = ?",
                    (seq,),
                ).fetchone()
                newest_first.append(_decode(first_id, room, ts_us, lines, offsets))
                count += len(newest_first[-1])
            by_id = {m.id: m for part in reversed(newest_first) for m in part}
            messages.extend(by_id[id] for id in sorted(by_id)[-per_room:])
        return messages

    # -- writing ----------------------------------------------------------------------

    def put_nowait(self, message: ev.Message) -> None:
        """Queue a message for writing; never blocks."""
        self.put_pass(RoomPass.of_messages((message,)))

    def put_many_nowait(self, messages: Iterable[ev.Message]) -> None:
        """Queue messages for writing, in order, of any rooms; never blocks."""
        for run in _runs(messages):
            self.put_pass(RoomPass.of_messages(run))

    def put_pass(self, published: RoomPass) -> None:
        """Queue a room's pass for writing; never blocks.  The log keeps its text
        format (``published.text``) as it is."""
        was_empty = not self._pending
        self._pending.append(published)
        self._pending_count += len(published)
        if self._pending_count > self.max_pending:
            self._drop(self._pending_count - self.max_pending)
        if was_empty or self._pending_count >= self.batch_size:
            self._wake.set()

    def _drop(self, count: int) -> None:
        """Drop the oldest passes that hold ``count`` messages (whole passes: a little
        more when the last one straddles)."""
        dropped = taken = 0
        while dropped < count and taken < len(self._pending):
            dropped += len(self._pending[taken])
            taken += 1
        del self._pending[:taken]
        self._pending_count -= dropped
        if not self.dropped:
            logger.error(
                "%s: more than %d messages pending; dropping the oldest",
                self.path,
                self.max_pending,
            )
        self.dropped += dropped

    @property
    def pending(self) -> int:
        return self._pending_count

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            written=self.written,
            batches=self.batches,
            pending=self._pending_count,
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
                if self._pending_count < self.batch_size:
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
            taken = count = 0  # whole passes, at least one
            while taken < len(self._pending) and count < self.batch_size:
                count += len(self._pending[taken])
                taken += 1
            batch = _Batch(self._pending[:taken])
            del self._pending[:taken]
            self._pending_count -= batch.count
            try:
                await trio.to_thread.run_sync(self._write_rows, batch)
            except (sqlite3.Error, OSError):
                self.failures += 1
                logger.exception("%s: cannot write %d messages; will retry", self.path, batch.count)
                self._requeue(batch)
                return False
            except BaseException:
                # Cancelled before the thread started: nothing was written.
                self._requeue(batch)
                raise
            self.written += batch.count
            self.batches += 1
            return True

    def _requeue(self, batch: _Batch) -> None:
        self._pending[:0] = batch.passes
        self._pending_count += batch.count
        if self._pending_count > self.max_pending:
            self._drop(self._pending_count - self.max_pending)

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
        per_statement = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // _COLUMNS
        last_seq = self.last_seq
        values: list[object] = []
        rooms: dict[str, tuple[str, int, int]] = {}
        for key, first_id, last_id, room, ts_us, lines, offsets in rows:
            seq = self.next_seq
            self.next_seq += 1
            values += (seq, key, first_id, last_id, room, ts_us, lines, offsets, last_seq.get(key))
            last_seq[key] = seq
            rooms[key] = (key, last_id, seq)
        for start in range(0, len(rows), per_statement):
            chunk = values[start * _COLUMNS : (start + per_statement) * _COLUMNS]
            conn.execute(_append_sql(len(chunk) // _COLUMNS), chunk)
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
    """Version 1, inside the caller's transaction: rows per message to the log."""
    logger.info("migrating the message history from schema version 1 to %d", SCHEMA_VERSION)
    log = _LogPosition.read(conn)
    rows = conn.execute("SELECT room, sender, text, id, ts FROM messages_v1 ORDER BY room_key, id")
    while chunk := rows.fetchmany(_MAX_PER_ROW):
        runs = _runs(ev.Message(*row) for row in chunk)
        log.append(conn, _batch_rows([RoomPass.of_messages(run) for run in runs]))
    conn.execute("DROP TABLE messages_v1")


def _migrate_from_2(conn: sqlite3.Connection) -> None:
    """Version 2, inside the caller's transaction: each JSON row becomes a row of lines,
    with the same seq (the rooms' chains and last rows stay as they are)."""
    logger.info("migrating the message history from schema version 2 to %d", SCHEMA_VERSION)
    rows = conn.execute(
        "SELECT seq, room_key, first_id, last_id, room, ts_us, body, prev_seq"
        " FROM message_batches_v2 ORDER BY seq"
    )
    per_statement = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // _COLUMNS
    while chunk := rows.fetchmany(min(_MAX_PER_ROW, per_statement)):
        values: list[object] = []
        for seq, key, first_id, last_id, room, ts_us, body, prev_seq in chunk:
            senders, texts, offsets = json.loads(body)
            lines = "".join([f"{s}:{t}\n" for s, t in zip(senders, texts, strict=True)])
            packed = json.dumps(offsets, separators=(",", ":")) if offsets else ""
            values += (seq, key, first_id, last_id, room, ts_us, lines.encode(), packed, prev_seq)
        conn.execute(_append_sql(len(chunk)), values)
    conn.execute("DROP TABLE message_batches_v2")
