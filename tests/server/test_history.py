"""History: per-room rings of recent messages, last ids, and the bound on rooms."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from machat.protocol import events as ev
from machat.server.history import History


def msg(room: str, id: int, text: str = "") -> ev.Message:
    return ev.Message(room, "Mina", text or f"m{id}", id, 1_700_000_000.0 + id)


def test_a_room_never_seen_is_empty_with_last_id_zero() -> None:
    history = History()
    assert history.recent("dev", 20) == ()
    assert history.last_id("dev") == 0
    assert "dev" not in history
    assert len(history) == 0


def test_recent_returns_the_last_count_oldest_first() -> None:
    history = History(per_room=5)
    for i in range(1, 9):
        history.record(msg("dev", i))
    assert [m.id for m in history.recent("dev", 3)] == [6, 7, 8]
    assert [m.id for m in history.recent("dev", 100)] == [4, 5, 6, 7, 8]
    assert history.recent("dev", 0) == ()
    assert history.recent("dev", -1) == ()
    assert history.last_id("dev") == 8


def test_rooms_are_folded_case_insensitively_and_kept_apart() -> None:
    history = History()
    history.record(msg("Dev", 1))
    history.record(msg("dev", 2))
    history.record(msg("ops", 1))
    assert [m.id for m in history.recent("DEV", 10)] == [1, 2]
    assert [m.room for m in history.recent("dev", 10)] == ["Dev", "dev"]
    assert history.last_id("OPS") == 1
    assert "DEV" in history


def test_load_seeds_rings_and_last_ids_in_id_order() -> None:
    history = History(per_room=2)
    history.load([msg("dev", 3), msg("ops", 7), msg("dev", 1), msg("dev", 2)])
    assert [m.id for m in history.recent("dev", 10)] == [2, 3]
    assert history.last_id("dev") == 3
    assert history.last_id("ops") == 7


def test_set_last_id_never_lowers() -> None:
    history = History()
    history.set_last_id("dev", 40)
    assert history.last_id("dev") == 40
    assert history.recent("dev", 5) == ()
    history.set_last_id("DEV", 10)
    assert history.last_id("dev") == 40


def test_least_recently_used_ring_is_dropped_but_its_last_id_is_kept() -> None:
    history = History(per_room=10, max_rooms=2)
    history.record(msg("a", 1))
    history.record(msg("b", 1))
    history.record(msg("a", 2))  # b is now the least recently used
    history.record(msg("c", 5))
    assert len(history) == 2
    assert "b" not in history
    assert history.rings_dropped == 1
    assert history.recent("b", 10) == ()
    assert history.last_id("b") == 1
    assert [m.id for m in history.recent("a", 10)] == [1, 2]
    history.recent("a", 1)  # reading counts as use: c goes next
    history.record(msg("b", 2))
    assert "c" not in history
    assert history.last_id("c") == 5
    assert [m.id for m in history.recent("b", 10)] == [2]


def test_per_room_zero_keeps_only_last_ids() -> None:
    history = History(per_room=0)
    history.record(msg("dev", 1))
    assert history.recent("dev", 5) == ()
    assert history.last_id("dev") == 1


ROOMS = st.sampled_from(["dev", "Dev", "ops", "x", "y"])


@settings(max_examples=300, deadline=None)
@given(
    per_room=st.integers(0, 6),
    max_rooms=st.integers(1, 4),
    ops=st.lists(st.tuples(st.booleans(), ROOMS, st.integers(0, 8)), max_size=60),
)
def test_ring_is_always_the_last_k_since_the_ring_was_made(
    per_room: int, max_rooms: int, ops: list[tuple[bool, str, int]]
) -> None:
    """Against a model: per folded room, what was recorded since its ring was (re)made."""
    history = History(per_room=per_room, max_rooms=max_rooms)
    last_ids: dict[str, int] = {}
    rings: dict[str, list[ev.Message]] = {}  # least recently used first (dicts keep order)
    for is_record, room, count in ops:
        key = room.casefold()
        if is_record:
            last_ids[key] = last_ids.get(key, 0) + 1
            message = msg(room, last_ids[key])
            history.record(message)
            ring = rings.pop(key, [])
            if not ring and len(rings) == max_rooms:
                del rings[next(iter(rings))]
            rings[key] = [*ring, message]
        else:
            got = history.recent(room, count)
            if key in rings:
                rings[key] = rings.pop(key)
            kept = rings.get(key, [])[-per_room:] if per_room else []
            assert list(got) == (kept[-count:] if count else [])
        assert len(history) == len(rings)
        for k in rings:
            assert k in history
        for k, last in last_ids.items():
            assert history.last_id(k) == last


class HistoryMachine(RuleBasedStateMachine):
    """Record and read in any order; the ring is always the last K recorded."""

    @initialize(per_room=st.integers(1, 5))
    def setup(self, per_room: int) -> None:
        self.per_room = per_room
        self.history = History(per_room=per_room)
        self.model: dict[str, list[ev.Message]] = {}

    @rule(room=ROOMS)
    def record(self, room: str) -> None:
        key = room.casefold()
        message = msg(room, self.history.last_id(room) + 1)
        self.history.record(message)
        self.model.setdefault(key, []).append(message)

    @rule(room=ROOMS, count=st.integers(0, 8))
    def read(self, room: str, count: int) -> None:
        expected = self.model.get(room.casefold(), [])[-self.per_room :]
        assert list(self.history.recent(room, count)) == (expected[-count:] if count else [])

    @invariant()
    def last_ids_match(self) -> None:
        for key, messages in self.model.items():
            assert self.history.last_id(key) == messages[-1].id == len(messages)


TestHistoryMachine = HistoryMachine.TestCase


# -- since: resume after the last id a client saw ------------------------------------


def test_since_returns_everything_newer_and_says_it_is_complete() -> None:
    history = History(per_room=10)
    for i in range(1, 8):
        history.record(msg("dev", i))
    messages, complete = history.since("DEV", 4)
    assert [m.id for m in messages] == [5, 6, 7]
    assert complete
    assert history.since("dev", 7) == ((), True)
    messages, complete = history.since("dev", 0)
    assert [m.id for m in messages] == list(range(1, 8))
    assert complete


def test_since_says_incomplete_when_older_messages_were_dropped() -> None:
    history = History(per_room=3)
    for i in range(1, 11):
        history.record(msg("dev", i))
    messages, complete = history.since("dev", 5)
    assert [m.id for m in messages] == [8, 9, 10]
    assert not complete
    messages, complete = history.since("dev", 7)
    assert [m.id for m in messages] == [8, 9, 10]
    assert complete


def test_since_beyond_the_last_id_is_incomplete() -> None:
    """An id this history never gave out (a restart without a store): say so."""
    history = History()
    history.record(msg("dev", 1))
    assert history.since("dev", 9) == ((), False)
    assert history.since("never", 0) == ((), True)
    assert history.since("never", 3) == ((), False)


def test_since_for_a_room_whose_ring_was_dropped_is_incomplete() -> None:
    history = History(per_room=5, max_rooms=1)
    history.record(msg("dev", 1))
    history.record(msg("ops", 1))  # drops dev's ring; its last id stays
    assert history.since("dev", 0) == ((), False)
    assert history.since("dev", 1) == ((), True)


@given(st.integers(1, 30), st.integers(1, 40), st.integers(0, 45))
def test_since_never_gives_a_duplicate_or_a_silent_gap(per_room: int, n: int, since: int) -> None:
    history = History(per_room=per_room)
    for i in range(1, n + 1):
        history.record(msg("dev", i))
    messages, complete = history.since("dev", since)
    ids = [m.id for m in messages]
    assert ids == sorted(set(ids))
    assert all(i > since for i in ids)
    if complete:
        assert ids == list(range(since + 1, n + 1))
    else:
        assert since > n or ids[:1] != [since + 1]


@settings(max_examples=50, deadline=None)
@given(
    passes=st.lists(
        st.tuples(st.sampled_from(["dev", "Dev", "ops"]), st.integers(1, 5)), max_size=12
    ),
    per_room=st.integers(0, 6),
)
def test_record_pass_is_record_of_each(passes: list[tuple[str, int]], per_room: int) -> None:
    one, bulk = History(per_room, max_rooms=2), History(per_room, max_rooms=2)
    ids: dict[str, int] = {}
    for room, count in passes:
        key = room.casefold()
        batch = []
        for _ in range(count):
            ids[key] = ids.get(key, 0) + 1
            batch.append(ev.Message(room, "Mina", f"m{ids[key]}", ids[key], 1.5))
        for m in batch:
            one.record(m)
        bulk.record_pass(batch)
    for room in ("dev", "ops"):
        assert bulk.recent(room, 10) == one.recent(room, 10)
        assert bulk.last_id(room) == one.last_id(room)
        assert bulk.since(room, 2) == one.since(room, 2)
    assert len(bulk) == len(one) and bulk.rings_dropped == one.rings_dropped
