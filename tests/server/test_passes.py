"""RoomPass: a room's pass as rows and text, with events made only on demand."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from machat.protocol import events as ev
from machat.protocol.formatting import encode_messages_text
from machat.server.passes import RoomPass


def test_a_room_pass_makes_its_events_once_on_demand() -> None:
    rows = [("Dev", "Mina", "hi", 7, 1.5), ("Dev", "Bob", "yo: there", 8, 1.5)]
    made = RoomPass("Dev", rows, b"Mina:hi\nBob:yo: there\n", 1.5)
    assert (made.first_id, made.last_id, len(made), made.ts) == (7, 8, 2, 1.5)
    events = made.messages()
    assert events == [
        ev.Message("Dev", "Mina", "hi", 7, 1.5),
        ev.Message("Dev", "Bob", "yo: there", 8, 1.5),
    ]
    assert made.messages() is events


#: (sender, text, time) of a pass's messages.
SAID = st.lists(
    st.tuples(st.sampled_from(["Mina", "Bob"]), st.text(max_size=8), st.sampled_from([1.0, 2.5])),
    min_size=1,
    max_size=6,
)


@given(SAID)
def test_of_messages_keeps_them_and_says_whether_they_share_a_time(said) -> None:
    messages = [ev.Message("dev", s, t, 10 + i, ts) for i, (s, t, ts) in enumerate(said)]
    made = RoomPass.of_messages(messages)
    assert made.messages() == messages
    assert made.rows == [(m.room, m.sender, m.text, m.id, m.ts) for m in messages]
    assert made.text == encode_messages_text(messages)
    assert (made.first_id, made.last_id) == (10, 10 + len(messages) - 1)
    times = {ts for _, _, ts in said}
    assert made.ts == (times.pop() if len(times) == 1 else None)


@given(SAID)
def test_of_rows_is_of_messages_of_the_same_messages(said) -> None:
    rows = [("dev", s, t, 10 + i, ts) for i, (s, t, ts) in enumerate(said)]
    made = RoomPass.of_rows(rows)
    like = RoomPass.of_messages([ev.Message(*row) for row in rows])
    assert made.rows == like.rows == rows
    assert made.text == like.text
    assert made.ts == like.ts
    assert made.messages() == like.messages()
