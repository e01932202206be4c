"""The topic and moderation events, both wire formats, and the client's decoding of them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from machat.protocol import events as ev
from machat.protocol.client_events import Unrecognized, decode_server_line
from machat.protocol.formatting import encode_json

text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20)
ts = st.floats(min_value=0, max_value=4e9, allow_nan=False)


@st.composite
def room_lists(draw: st.DrawFn) -> ev.RoomList:
    rooms = draw(st.lists(text, unique=True, max_size=4))
    counts = [draw(st.integers(0, 9999)) for _ in rooms]
    with_topic = [r for r in rooms if draw(st.booleans())]
    topics = tuple((r, draw(text.filter(bool))) for r in with_topic)
    return ev.RoomList(tuple(zip(rooms, counts, strict=True)), topics)


events = st.one_of(
    st.builds(ev.Topic, room=text, text=text, by=text, ts=ts),
    st.builds(
        ev.Moderation,
        action=st.sampled_from(ev.MODERATION_ACTIONS),
        name=text,
        by=text,
        reason=text,
        minutes=st.integers(0, 525_600),
    ),
    room_lists(),
)


@given(events)
def test_the_client_decodes_what_the_server_encodes(event: ev.Event) -> None:
    line = encode_json(event).decode().removesuffix("\n")
    assert decode_server_line(line) == event


def test_a_moderation_event_with_an_unknown_action_is_unrecognized() -> None:
    line = '{"type":"moderation","action":"smite","name":"Bob","by":"Mina"}'
    assert decode_server_line(line) == Unrecognized(line)
