"""RoomPass: a room's pass as rows and text, with events made only on demand."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from machat.protocol import events as ev
from machat.protocol.formatting import encode_messages_text, encode_rows_text
from machat.server.passes import RoomPass


def test_a_room_pass_makes_its_events_once_on_demand() -> None:
    rows = [("Dev", "Mina", "hi", 7, 1.5), ("Dev", "Bob", "yo: there", 8, 1.5)]
    made = RoomPass("Dev", 7, 2, b"Mina:hi\nBob:yo: there\n", 1.5, rows=rows)
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


#: (sender, text) of messages as chat lines hold them: a text holds no newline.
LINES = st.lists(
    st.tuples(
        st.sampled_from(["Mina", "Bob"]),
        st.text(st.characters(codec="utf-8", exclude_characters="\n\r"), max_size=8),
    ),
    min_size=1,
    max_size=6,
)


@given(LINES)
def test_of_text_makes_the_rows_of_rows_own_text(said) -> None:
    """A pass from the cluster (its text format and its first id, count and time)
    is, once asked for its rows, the pass its rows make."""
    rows = [("dev", s, t, 10 + i, 2.5) for i, (s, t) in enumerate(said)]
    text = encode_rows_text(rows)
    made = RoomPass.of_text("dev", 10, len(rows), text, 2.5)
    assert (made.first_id, made.last_id, len(made), made.ts, made.text) == (
        10,
        9 + len(rows),
        len(rows),
        2.5,
        text,
    )
    assert made.rows == rows
    assert made.messages() == RoomPass.of_rows(rows).messages()


@given(st.lists(st.tuples(LINES, st.sampled_from([1.0, 2.5])), min_size=1, max_size=4))
def test_joined_passes_are_one_pass_of_all_their_messages(parts) -> None:
    passes, rows = [], []
    for said, ts in parts:
        first = 10 + len(rows)
        these = [("dev", s, t, first + i, ts) for i, (s, t) in enumerate(said)]
        passes.append(RoomPass.of_text("dev", first, len(these), encode_rows_text(these), ts))
        rows += these
    made = RoomPass.joined(passes)
    like = RoomPass.of_rows(rows)
    assert (made.first_id, made.last_id, len(made)) == (like.first_id, like.last_id, len(like))
    assert made.text == like.text
    assert made.ts == like.ts  # the time they share, or None
    assert made.first_ts() == rows[0][4]
    assert made.rows == rows
