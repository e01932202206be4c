"""Tests of the wire formats: an example of every server event in text and in JSON, and
the framing rules both formats keep (JSON: one object per line; text: one line per event,
except History).  Pure and synchronous.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from machat.protocol import events as ev
from machat.protocol.errors import ErrorCode
from machat.protocol.formatting import (
    Format,
    encode,
    encode_json,
    encode_messages_text,
    encode_text,
    format_time,
    text_run,
)

TS = 1_700_000_000.25  # 2023-11-14 22:13:20 UTC
MSG1 = ev.Message("dev", "Mina", "hello", 1, TS)
MSG2 = ev.Message("dev", "Oskar", 'hi {Mina} "quoted" \u00e9', 2, TS + 61)

# (event, text bytes, JSON object)
EXAMPLES = [
    (
        ev.Welcome("Mina", "dev"),
        b"* Welcome Mina! You are in room dev. Type /help for commands.\n",
        {"type": "welcome", "name": "Mina", "room": "dev", "motd": ""},
    ),
    (
        MSG1,
        b"Mina:hello\n",
        {"type": "message", "room": "dev", "from": "Mina", "text": "hello", "id": 1, "ts": TS},
    ),
    (
        ev.Message("dev", "Mina", " spaced ", 7, 0.0),
        b"Mina: spaced \n",
        {"type": "message", "room": "dev", "from": "Mina", "text": " spaced ", "id": 7, "ts": 0.0},
    ),
    (
        ev.Join("dev", "Mina"),
        b"* Mina joined dev\n",
        {"type": "join", "room": "dev", "name": "Mina"},
    ),
    (
        ev.Leave("dev", "Mina"),
        b"* Mina left dev\n",
        {"type": "leave", "room": "dev", "name": "Mina", "reason": ""},
    ),
    (
        ev.Leave("dev", "Mina", "timed out"),
        b"* Mina left dev (timed out)\n",
        {"type": "leave", "room": "dev", "name": "Mina", "reason": "timed out"},
    ),
    (
        ev.Nick("Mina", "Mina2"),
        b"* Mina is now known as Mina2\n",
        {"type": "nick", "old": "Mina", "new": "Mina2"},
    ),
    (ev.Info("bye"), b"* bye\n", {"type": "info", "text": "bye"}),
    (
        ev.Error(ErrorCode.LINE_TOO_LONG, "line too long"),
        b"! ERROR 105 line too long\n",
        {"type": "error", "code": 105, "message": "line too long"},
    ),
    (
        ev.Error(ErrorCode.INVALID_NAME, "invalid name 'ALL': reserved"),
        b"! ERROR 100 invalid name 'ALL': reserved\n",
        {"type": "error", "code": 100, "message": "invalid name 'ALL': reserved"},
    ),
    (
        ev.Private("Oskar", "psst", TS),
        b"[private] Oskar:psst\n",
        {"type": "private", "from": "Oskar", "text": "psst", "ts": TS},
    ),
    (
        ev.GroupMessage("Mina,Oskar", "Lee", "team", TS),
        b"[Mina,Oskar] Lee:team\n",
        {"type": "group", "group": "Mina,Oskar", "from": "Lee", "text": "team", "ts": TS},
    ),
    (
        ev.Broadcast("Mina", "hear ye", TS),
        b"[all] Mina:hear ye\n",
        {"type": "broadcast", "from": "Mina", "text": "hear ye", "ts": TS},
    ),
    (ev.Sent(("Oskar",)), b"* sent to Oskar\n", {"type": "sent", "to": ["Oskar"]}),
    (
        ev.Sent(("Oskar", "Lee")),
        b"* sent to Oskar, Lee\n",
        {"type": "sent", "to": ["Oskar", "Lee"]},
    ),
    (
        ev.Users(("Lee", "Mina")),
        b"* users: Lee, Mina\n",
        {"type": "users", "names": ["Lee", "Mina"]},
    ),
    (
        ev.Members("dev", ("Mina",)),
        b"* dev: Mina\n",
        {"type": "members", "room": "dev", "names": ["Mina"]},
    ),
    (
        ev.RoomList((("dev", 2), ("lounge", 5))),
        b"* rooms: dev (2), lounge (5)\n",
        {
            "type": "rooms",
            "rooms": [{"room": "dev", "members": 2}, {"room": "lounge", "members": 5}],
        },
    ),
    (ev.RoomList(()), b"* rooms: \n", {"type": "rooms", "rooms": []}),
    (
        ev.RoomList((("dev", 2), ("lounge", 5)), (("dev", "release day"),)),
        b"* rooms: dev (2, topic: release day), lounge (5)\n",
        {
            "type": "rooms",
            "rooms": [
                {"room": "dev", "members": 2, "topic": "release day"},
                {"room": "lounge", "members": 5},
            ],
        },
    ),
    (
        ev.Topic("dev", "release day", "Mina", TS),
        b"* topic of dev: release day (set by Mina)\n",
        {"type": "topic", "room": "dev", "text": "release day", "by": "Mina", "ts": TS},
    ),
    (
        ev.Topic("dev", ""),
        b"* no topic in dev\n",
        {"type": "topic", "room": "dev", "text": "", "by": "", "ts": 0.0},
    ),
    (
        ev.Moderation("kick", "Bob", "Mina", "spam"),
        b"* Bob was kicked by Mina (spam)\n",
        {"type": "moderation", "action": "kick", "name": "Bob", "by": "Mina", "reason": "spam",
         "minutes": 0},  # fmt: skip
    ),
    (
        ev.Moderation("ban", "Bob", "Mina", "", 10),
        b"* Bob was banned by Mina for 10 minutes\n",
        {"type": "moderation", "action": "ban", "name": "Bob", "by": "Mina", "reason": "",
         "minutes": 10},  # fmt: skip
    ),
    (
        ev.Moderation("mute", "Bob", "Mina"),
        b"* Bob was muted by Mina until /unmute\n",
        {"type": "moderation", "action": "mute", "name": "Bob", "by": "Mina", "reason": "",
         "minutes": 0},  # fmt: skip
    ),
    (
        ev.History("dev", ()),
        b"* no history in dev\n",
        {"type": "history", "room": "dev", "messages": []},
    ),
    (
        ev.History("dev", (MSG1, MSG2)),
        b"* [2023-11-14 22:13:20] Mina:hello\n"
        + '* [2023-11-14 22:14:21] Oskar:hi {Mina} "quoted" \u00e9\n'.encode(),
        {
            "type": "history",
            "room": "dev",
            "messages": [
                {
                    "type": "message",
                    "room": "dev",
                    "from": "Mina",
                    "text": "hello",
                    "id": 1,
                    "ts": TS,
                },
                {
                    "type": "message",
                    "room": "dev",
                    "from": "Oskar",
                    "text": 'hi {Mina} "quoted" \u00e9',
                    "id": 2,
                    "ts": TS + 61,
                },
            ],
        },
    ),
]

EVENT_CLASSES = {getattr(ev, name) for name in ev.__all__ if name != "Event"}


def _id(example) -> str:
    return type(example[0]).__name__


def test_examples_cover_every_event_type():
    assert {type(e) for e, _, _ in EXAMPLES} == EVENT_CLASSES
    assert set(ev.Event.__args__) == EVENT_CLASSES


@pytest.mark.parametrize(("event", "text", "obj"), EXAMPLES, ids=[_id(x) for x in EXAMPLES])
def test_text_format(event, text, obj):
    assert encode_text(event) == text
    assert encode(event, Format.TEXT) == text


@pytest.mark.parametrize(("event", "text", "obj"), EXAMPLES, ids=[_id(x) for x in EXAMPLES])
def test_json_format(event, text, obj):
    data = encode_json(event)
    assert encode(event, Format.JSON) == data
    assert json.loads(data) == obj
    assert data.endswith(b"\n") and data.count(b"\n") == 1


def test_json_is_compact_and_keeps_unicode():
    data = encode_json(ev.Info("caf\u00e9 \U0001f600"))
    assert data == '{"type":"info","text":"caf\u00e9 \U0001f600"}\n'.encode()


def test_message_text_has_no_space_after_colon():
    # MaChat-compatible: "<name>:<text>"
    assert encode_text(ev.Message("lounge", "a", "b", 1, 0)) == b"a:b\n"


def test_welcome_with_motd():
    event = ev.Welcome("Mina", "dev", "be nice")
    assert encode_text(event) == (
        b"* Welcome Mina! You are in room dev. Type /help for commands.\n* be nice\n"
    )
    assert json.loads(encode_json(event))["motd"] == "be nice"


def test_format_time():
    assert format_time(0) == "1970-01-01 00:00:00"
    assert format_time(TS) == "2023-11-14 22:13:20"
    assert format_time(TS + 0.7) == "2023-11-14 22:13:20"  # truncated, not rounded


def test_format_values():
    assert Format("text") is Format.TEXT
    assert Format("json") is Format.JSON


# --- properties: every event, arbitrary field values --------------------------------

# Text that can reach a peer: decode_text has refused C0 controls (but tab) and DEL.
chat_text = st.text(
    st.characters(blacklist_categories=["Cs"]).filter(
        lambda c: c == "\t" or not (c < " " or c == "\x7f")
    ),
    max_size=30,
)
names = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,31}", fullmatch=True)
rooms = st.from_regex(r"[A-Za-z0-9#][A-Za-z0-9_.#-]{0,63}", fullmatch=True)
ts = st.floats(0, 4e9)
messages = st.builds(ev.Message, rooms, names, chat_text, st.integers(0, 2**53), ts)
name_tuples = st.lists(names, max_size=5).map(tuple)

events = st.one_of(
    st.builds(ev.Welcome, names, rooms),
    messages,
    st.builds(ev.Join, rooms, names),
    st.builds(ev.Leave, rooms, names, chat_text),
    st.builds(ev.Nick, names, names),
    st.builds(ev.Info, chat_text),
    st.builds(ev.Error, st.sampled_from(ErrorCode), chat_text),
    st.builds(ev.Private, names, chat_text, ts),
    st.builds(ev.GroupMessage, names, names, chat_text, ts),
    st.builds(ev.Broadcast, names, chat_text, ts),
    st.builds(ev.Sent, name_tuples),
    st.builds(ev.Users, name_tuples),
    st.builds(ev.Members, rooms, name_tuples),
    st.builds(
        ev.RoomList, st.lists(st.tuples(rooms, st.integers(0, 10**6)), max_size=4).map(tuple)
    ),
    st.builds(ev.History, rooms, st.lists(messages, max_size=4).map(tuple)),
    st.builds(ev.Topic, rooms, chat_text, names, ts),
    st.builds(
        ev.Moderation,
        st.sampled_from(ev.MODERATION_ACTIONS),
        names,
        names,
        chat_text,
        st.integers(0, 525_600),
    ),
)


@settings(max_examples=300, deadline=None)
@given(event=events)
def test_every_event_encodes_in_both_formats(event):
    data = encode_json(event)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    obj = json.loads(data)
    assert isinstance(obj, dict) and isinstance(obj["type"], str)

    text = encode_text(event)
    assert text.endswith(b"\n")
    text.decode("utf-8")
    if isinstance(event, ev.History):
        assert text.count(b"\n") == max(1, len(event.messages))
    else:
        assert text.count(b"\n") == 1


@settings(max_examples=100, deadline=None)
@given(message=messages)
def test_message_both_formats(message):
    assert encode_text(message) == f"{message.sender}:{message.text}\n".encode()
    assert json.loads(encode_json(message)) == {
        "type": "message",
        "room": message.room,
        "from": message.sender,
        "text": message.text,
        "id": message.id,
        "ts": message.ts,
    }


@given(
    st.lists(
        st.builds(
            ev.Message,
            room=st.just("dev"),
            sender=st.sampled_from(["Mina", "Bob"]),
            text=st.text(max_size=20),
            id=st.integers(1, 1000),
            ts=st.just(1.5),
        ),
        max_size=8,
    )
)
def test_encode_messages_text_is_encode_text_of_each(messages: list[ev.Message]) -> None:
    assert encode_messages_text(messages) == b"".join(map(encode_text, messages))


@given(st.sampled_from(["Mina", "Bob"]), st.lists(st.text(max_size=20), min_size=1, max_size=8))
def test_text_run_is_encode_text_of_each_message(sender: str, texts: list[str]) -> None:
    messages = [ev.Message("dev", sender, text, i, 1.5) for i, text in enumerate(texts, 1)]
    assert text_run(sender, texts).encode("utf-8") == b"".join(map(encode_text, messages))
