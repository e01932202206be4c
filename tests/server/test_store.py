"""MessageStore: the SQLite history, its batch writer, and how it survives failures.

Every trio test runs on the autojump clock, so batch intervals and retry waits take
no real time.  The autojump clock also jumps while a worker thread writes, so tests
never sleep until a write "must" be done: they call `flush`, which waits for the
writer's batch in progress (the write lock) and writes anything left.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from machat.protocol import events as ev
from machat.server.passes import RoomPass
from machat.server.store import MessageStore


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "history.db"


@pytest.fixture
def store(db: Path) -> Iterator[MessageStore]:
    s = MessageStore(db)
    s.open()
    yield s
    s.close()


def msg(room: str, id: int, text: str | None = None) -> ev.Message:
    return ev.Message(room, "Mina", f"m{id}" if text is None else text, id, 1_790_000_000.25 + id)


def reload(db: Path, per_room: int = 1000) -> tuple[list[ev.Message], dict[str, int]]:
    other = MessageStore(db)
    other.open()
    try:
        return other.load_recent(per_room), other.last_ids()
    finally:
        other.close()


def test_open_creates_the_schema_in_wal_mode(store: MessageStore, db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # The rows of schema version 1 stay readable, as a view over the log.
        columns = [row[1] for row in conn.execute("PRAGMA table_info(messages)")]
        assert columns == ["room_key", "id", "room", "sender", "text", "ts"]
        # The log is appended to in seq order; the rooms table is keyed by room.
        for table, key in [("message_batches", ["seq"]), ("message_rooms", ["room_key"])]:
            info = sorted(conn.execute(f"PRAGMA table_info({table})"))
            assert [row[1] for row in info if row[5]] == key
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    finally:
        conn.close()
    assert store.load_recent(10) == []
    assert store.last_ids() == {}


def test_open_twice_keeps_the_data_and_a_foreign_schema_version_is_refused(db: Path) -> None:
    for _ in range(2):
        s = MessageStore(db)
        s.open()
        s.close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(sqlite3.DatabaseError, match="schema version 99"):
        MessageStore(db).open()


async def test_a_thousand_at_once_are_written_in_two_batches(
    db: Path, autojump_clock: object
) -> None:
    store = MessageStore(db, batch_size=500)
    store.open()
    sent = [msg("dev", i) for i in range(1, 1001)]
    for m in sent:
        store.put_nowait(m)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await trio.sleep(1)
        await store.flush()
        assert (store.written, store.batches, store.pending) == (1000, 2, 0)
        nursery.cancel_scope.cancel()
    store.close()
    messages, last_ids = reload(db)
    assert messages == sent
    assert last_ids == {"dev": 1000}


async def test_a_batch_holds_up_to_the_default_batch_size(
    store: MessageStore, nursery: trio.Nursery, autojump_clock: object
) -> None:
    for i in range(1, store.batch_size + 2):
        store.put_nowait(msg("dev", i))
    await nursery.start(store.run)
    await trio.sleep(1)
    await store.flush()
    assert store.batch_size == 4000
    assert (store.written, store.batches, store.pending) == (4001, 2, 0)


async def test_messages_arriving_within_the_interval_share_one_batch(
    store: MessageStore, nursery: trio.Nursery, autojump_clock: object
) -> None:
    await nursery.start(store.run)
    for i in range(1, 11):
        store.put_nowait(msg("dev", i))
    await trio.sleep(store.batch_interval / 2)
    for i in range(11, 21):
        store.put_nowait(msg("dev", i))
    await trio.sleep(1)  # the writer has taken the batch by now
    await store.flush()
    assert (store.written, store.batches) == (20, 1)
    store.put_nowait(msg("dev", 21))
    await trio.sleep(1)
    await store.flush()
    assert (store.written, store.batches) == (21, 2)


async def test_reload_gives_the_same_messages_per_room_oldest_first(
    store: MessageStore, db: Path
) -> None:
    sent = [msg("Dev", 1), msg("ops", 1), msg("dev", 2), msg("ops", 2, "é ✓ 'quoted' \t tab")]
    sent += [msg("dev", i) for i in range(3, 8)]
    for m in sent:
        store.put_nowait(m)
    await store.flush()
    messages, last_ids = reload(db, per_room=3)
    assert messages == [msg("dev", 5), msg("dev", 6), msg("dev", 7), sent[1], sent[3]]
    assert last_ids == {"dev": 7, "ops": 2}
    messages, _ = reload(db)
    assert [m for m in messages if m.room.casefold() == "dev"] == [
        m for m in sent if m.room.casefold() == "dev"
    ]
    assert messages[0].room == "Dev"  # the room's spelling at the time is kept
    assert reload(db, per_room=0)[0] == []


async def test_cancellation_writes_everything_pending(
    store: MessageStore, db: Path, autojump_clock: object
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        for i in range(1, 1201):
            store.put_nowait(msg("dev", i))
        await trio.lowlevel.checkpoint()  # the writer may start its first batch
        nursery.cancel_scope.cancel()
    assert (store.written, store.pending) == (1200, 0)
    assert reload(db)[1] == {"dev": 1200}


async def test_a_flush_cancelled_before_its_thread_starts_keeps_the_batch(
    store: MessageStore, db: Path
) -> None:
    store.put_nowait(msg("dev", 1))
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.flush()
    assert (store.written, store.pending) == (0, 1)
    await store.flush()
    assert [m.id for m in reload(db)[0]] == [1]


async def test_cancellation_while_idle_returns_at_once(
    store: MessageStore, autojump_clock: object
) -> None:
    with trio.move_on_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            nursery.cancel_scope.cancel()
    assert trio.current_time() == 0
    assert (store.written, store.batches) == (0, 0)


def fail_once(store: MessageStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the store's first write fail; returns the sizes of the batches tried."""
    real = store._write_rows
    calls: list[int] = []

    def write_rows(batch: list[ev.Message]) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            raise sqlite3.OperationalError("database or disk is full")
        real(batch)

    monkeypatch.setattr(store, "_write_rows", write_rows)
    return calls


@pytest.mark.allow_server_errors  # a storage failure is logged on purpose
async def test_a_failed_write_is_logged_and_retried_by_the_writer(
    store: MessageStore,
    db: Path,
    nursery: trio.Nursery,
    autojump_clock: object,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = fail_once(store, monkeypatch)
    await nursery.start(store.run)
    for i in range(1, 6):
        store.put_nowait(msg("dev", i))
    await trio.sleep(store.retry_interval * 3)
    await store.flush()
    assert calls == [5, 5]
    assert (store.failures, store.written, store.batches, store.pending) == (1, 5, 1, 0)
    assert [m.id for m in reload(db)[0]] == [1, 2, 3, 4, 5]
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 1
    assert "cannot write 5 messages; will retry" in failures[0].getMessage()
    assert failures[0].exc_info is not None


@pytest.mark.allow_server_errors  # a storage failure is logged on purpose
async def test_messages_kept_after_a_failure_go_first_in_the_next_batch(
    store: MessageStore, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fail_once(store, monkeypatch)
    for i in range(1, 6):
        store.put_nowait(msg("dev", i))
    await store.flush()
    assert (store.failures, store.written, store.pending) == (1, 0, 5)
    for i in range(6, 9):
        store.put_nowait(msg("dev", i))
    await store.flush()
    assert calls == [5, 8]
    assert (store.written, store.batches, store.pending) == (8, 1, 0)
    assert [m.id for m in reload(db)[0]] == list(range(1, 9))


@pytest.mark.allow_server_errors  # a storage failure is logged on purpose
async def test_a_locked_database_delays_but_loses_nothing(
    store: MessageStore, db: Path, autojump_clock: object
) -> None:
    store.conn.execute("PRAGMA busy_timeout=0")
    locker = sqlite3.connect(db, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            store.put_nowait(msg("dev", 1))
            await trio.sleep(store.retry_interval * 2.5)
            await store.flush()  # fails too: still locked
            assert (store.written, store.pending) == (0, 1)
            assert store.failures >= 1
            locker.execute("ROLLBACK")
            await store.flush()
            assert (store.written, store.pending) == (1, 0)
            nursery.cancel_scope.cancel()
    finally:
        locker.close()


@pytest.mark.allow_server_errors  # a storage failure is logged on purpose
def test_pending_is_bounded_by_dropping_the_oldest(db: Path) -> None:
    store = MessageStore(db, batch_size=5, max_pending=10)
    for i in range(1, 16):
        store.put_nowait(msg("dev", i))
    assert (store.pending, store.dropped) == (10, 5)
    store.open()
    try:
        trio.run(store.flush)
    finally:
        store.close()
    assert [m.id for m in reload(db)[0]] == list(range(6, 16))
    assert store.statistics().written == 10


async def test_messages_put_during_a_write_are_kept(store: MessageStore, db: Path) -> None:
    real = store._write_rows

    def slow(batch) -> None:  # a store._Batch
        if batch.rows[0][1] == 1:  # the first row's first id
            trio.from_thread.run_sync(store.put_nowait, msg("dev", 2))
        real(batch)

    store._write_rows = slow  # type: ignore[method-assign]
    store.put_nowait(msg("dev", 1))
    await store.flush()
    assert [m.id for m in reload(db)[0]] == [1, 2]
    assert store.batches == 2


def test_invalid_settings_are_refused(db: Path) -> None:
    with pytest.raises(ValueError):
        MessageStore(db, batch_size=0)
    with pytest.raises(ValueError):
        MessageStore(db, batch_size=10, max_pending=5)


async def test_a_batch_takes_one_row_per_room_and_the_view_shows_every_message(
    db: Path,
) -> None:
    store = MessageStore(db, batch_size=1000)
    store.open()
    sent = [msg(room, i) for i in range(1, 201) for room in ("dev", "ops", "Ops2")]
    sent.append(ev.Message("dev", "Bob", "later", 201, 1_790_000_999.5))  # another time
    store.put_many_nowait(sent)
    await store.flush()
    store.close()
    assert store.batches == 1
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT room_key, first_id, last_id FROM message_batches").fetchall()
        assert sorted(rows) == [("dev", 1, 201), ("ops", 1, 200), ("ops2", 1, 200)]
        view = conn.execute("SELECT room, id, sender, text, ts FROM messages").fetchall()
    finally:
        conn.close()
    expected = [(m.room, m.id, m.sender, m.text, m.ts) for m in sent]
    assert sorted(view) == sorted(expected)
    messages, last_ids = reload(db, per_room=5)
    assert [m.id for m in messages if m.room == "dev"] == [197, 198, 199, 200, 201]
    assert sent[-1] in messages  # its own time, not its row's
    assert last_ids == {"dev": 201, "ops": 200, "ops2": 200}


async def test_reload_follows_each_rooms_chain_across_many_batches(
    store: MessageStore, db: Path
) -> None:
    for i in range(1, 31):  # thirty batches, the rooms' rows interleaved in the log
        store.put_nowait(msg("dev", i))
        store.put_nowait(msg("ops", i))
        await store.flush()
    store.put_nowait(msg("quiet", 1))
    await store.flush()
    messages, last_ids = reload(db, per_room=12)
    assert [m.id for m in messages if m.room == "dev"] == list(range(19, 31))
    assert [m.id for m in messages if m.room == "ops"] == list(range(19, 31))
    assert [m.id for m in messages if m.room == "quiet"] == [1]
    assert last_ids == {"dev": 30, "ops": 30, "quiet": 1}
    # Reopened, the store appends after the rows already there.
    again = MessageStore(db)
    again.open()
    try:
        again.put_nowait(msg("dev", 31))
        await again.flush()
    finally:
        again.close()
    messages, _ = reload(db, per_room=2)
    assert [m.id for m in messages if m.room == "dev"] == [30, 31]


def test_a_version_1_file_is_migrated_with_every_message(db: Path) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "CREATE TABLE messages (room_key TEXT NOT NULL, id INTEGER NOT NULL, "
            "room TEXT NOT NULL, sender TEXT NOT NULL, text TEXT NOT NULL, ts REAL NOT NULL, "
            "PRIMARY KEY (room_key, id)) WITHOUT ROWID"
        )
        old = [msg("Dev", i) for i in range(1, 1201)] + [msg("ops", 1, "é ✓ \t tab")]
        conn.executemany(
            "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)",
            [(m.room.casefold(), m.id, m.room, m.sender, m.text, m.ts) for m in old],
        )
        conn.execute("PRAGMA user_version=1")
    conn.close()
    messages, last_ids = reload(db, per_room=2000)
    assert messages == old
    assert last_ids == {"dev": 1200, "ops": 1}
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (1201,)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "messages_v1" not in tables
    finally:
        conn.close()


_V2_SCHEMA = """
CREATE TABLE message_batches (
    seq INTEGER PRIMARY KEY, room_key TEXT NOT NULL, first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL, room TEXT NOT NULL, ts_us INTEGER NOT NULL,
    body TEXT NOT NULL, prev_seq INTEGER
);
CREATE TABLE message_rooms (
    room_key TEXT PRIMARY KEY, last_id INTEGER NOT NULL, last_seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE VIEW messages (room_key, id, room, sender, text, ts) AS
    SELECT b.room_key, b.first_id + t.key, b.room,
        json_extract(b.body, '$[0][' || t.key || ']'), t.value,
        (b.ts_us + coalesce(json_extract(b.body, '$[2][' || t.key || ']'), 0)) / 1e6
    FROM message_batches AS b, json_each(b.body, '$[1]') AS t;
PRAGMA user_version=2;
"""


def test_a_version_2_file_is_migrated_row_for_row(db: Path) -> None:
    """Version 2 kept each row as JSON; version 3 keeps the same rows, with the same
    seqs and chains, as lines."""
    t0 = 1_790_000_000_250_000
    rows = [  # seq, room_key, first_id, last_id, room, ts_us, body, prev_seq
        (1, "dev", 1, 2, "Dev", t0, '[["Mina","Bob"],["hi: there","caf\\u00e9 \\t"],[]]', None),
        (2, "ops", 1, 1, "ops", t0, '[["Bob"],["up"],[]]', None),
        (3, "dev", 3, 4, "Dev", t0 + 10, '[["Mina","Mina"],["a","b"],[0,1500000]]', 1),
    ]
    conn = sqlite3.connect(db)
    with conn:
        conn.executescript(_V2_SCHEMA)
        conn.executemany("INSERT INTO message_batches VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.executemany(
            "INSERT INTO message_rooms VALUES (?, ?, ?)", [("dev", 4, 3), ("ops", 1, 2)]
        )
    before = sorted(conn.execute("SELECT * FROM messages"))
    conn.close()
    assert len(before) == 5

    messages, last_ids = reload(db)
    ts = t0 / 1e6
    assert messages == [
        ev.Message("Dev", "Mina", "hi: there", 1, ts),
        ev.Message("Dev", "Bob", "café \t", 2, ts),
        ev.Message("Dev", "Mina", "a", 3, (t0 + 10) / 1e6),
        ev.Message("Dev", "Mina", "b", 4, (t0 + 10 + 1_500_000) / 1e6),
        ev.Message("ops", "Bob", "up", 1, ts),
    ]
    assert last_ids == {"dev": 4, "ops": 1}
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        assert sorted(conn.execute("SELECT * FROM messages")) == before  # the view agrees
        log = conn.execute("SELECT seq, first_id, lines, ts_offsets, prev_seq FROM message_batches")
        assert sorted(log) == [
            (1, 1, "Mina:hi: there\nBob:café \t\n".encode(), "", None),
            (2, 1, b"Bob:up\n", "", None),
            (3, 3, b"Mina:a\nMina:b\n", "[0,1500000]", 1),
        ]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "message_batches_v2" not in tables
    finally:
        conn.close()


async def test_a_pass_is_stored_as_the_bytes_the_room_sent(db: Path) -> None:
    store = MessageStore(db)
    store.open()
    first = [ev.Message("dev", "Mina", f"line {i}", i, 1_790_000_000.5) for i in (1, 2, 3)]
    second = [ev.Message("dev", "Bob", "x:y", 4, 1_790_000_001.0)]
    store.put_pass(RoomPass.of_messages(first, b"Mina:line 1\nMina:line 2\nMina:line 3\n"))
    store.put_pass(RoomPass.of_messages(second))  # the text made from the events
    await store.flush()
    store.close()
    conn = sqlite3.connect(db)
    try:
        ((lines, offsets),) = conn.execute("SELECT lines, ts_offsets FROM message_batches")
    finally:
        conn.close()
    assert lines == b"Mina:line 1\nMina:line 2\nMina:line 3\nBob:x:y\n"
    assert offsets == "[0,0,0,500000]"
    assert reload(db)[0] == first + second


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["dev", "Ops"]),
            st.lists(
                st.tuples(
                    st.sampled_from(["Mina", "Bob"]),
                    st.text(st.characters(codec="utf-8", exclude_characters="\n\r"), max_size=12),
                ),
                min_size=1,
                max_size=4,
            ),
            st.integers(0, 3_000_000),
            st.booleans(),
        ),
        max_size=12,
    )
)
def test_what_is_put_is_what_is_loaded(tmp_path_factory, passes) -> None:
    """Passes of any rooms, texts and times (one per pass, or one per message as a
    cluster's passes may have) come back exactly, whatever rows they share."""
    db = tmp_path_factory.mktemp("roundtrip") / "h.db"
    store = MessageStore(db, batch_size=7)
    store.open()
    last: dict[str, int] = {}
    sent: list[ev.Message] = []
    for room, lines, dt_us, mixed in passes:
        first = last.get(room, 0) + 1
        messages = [
            ev.Message(room, s, t, first + i, (1_790_000_000_000_000 + dt_us + mixed * i) / 1e6)
            for i, (s, t) in enumerate(lines)
        ]
        last[room] = messages[-1].id
        store.put_pass(RoomPass.of_messages(messages))
        sent += messages
    trio.run(store.flush)
    store.close()
    loaded, last_ids = reload(db, per_room=100)
    key = lambda m: (m.room.casefold(), m.id)  # noqa: E731
    assert sorted(loaded, key=key) == sorted(sent, key=key)
    assert last_ids == {room.casefold(): id for room, id in last.items()}
