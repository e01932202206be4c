"""The client-side decoder of JSON-format server lines (machat.protocol.client_events)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from machat.protocol import events as ev
from machat.protocol.client_events import Unrecognized, decode_server_line
from machat.protocol.errors import ErrorCode
from machat.protocol.formatting import encode_json

REPO = Path(__file__).resolve().parents[2]

text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20)
names = st.lists(text, max_size=4).map(tuple)
ts = st.floats(min_value=0, max_value=4e9, allow_nan=False)
messages = st.builds(ev.Message, room=text, sender=text, text=text, id=st.integers(0, 2**40), ts=ts)

events = st.one_of(
    st.builds(ev.Welcome, name=text, room=text, motd=text),
    messages,
    st.builds(ev.Join, room=text, name=text),
    st.builds(ev.Leave, room=text, name=text, reason=text),
    st.builds(ev.Nick, old=text, new=text),
    st.builds(ev.Info, text=text),
    st.builds(ev.Error, code=st.sampled_from(list(ErrorCode)), message=text),
    st.builds(ev.Private, sender=text, text=text, ts=ts),
    st.builds(ev.GroupMessage, group=text, sender=text, text=text, ts=ts),
    st.builds(ev.Broadcast, sender=text, text=text, ts=ts),
    st.builds(ev.Sent, targets=names),
    st.builds(ev.Users, names=names),
    st.builds(ev.Members, room=text, names=names),
    st.builds(ev.RoomList, rooms=st.lists(st.tuples(text, st.integers(0, 9999))).map(tuple)),
    st.builds(
        ev.History,
        room=text,
        messages=st.lists(messages, max_size=3).map(tuple),
        complete=st.booleans(),
    ),
)


@given(events)
def test_decodes_what_the_server_encodes(event: ev.Event) -> None:
    line = encode_json(event).decode().removesuffix("\n")
    assert decode_server_line(line) == event


def test_unknown_keys_are_ignored() -> None:
    line = '{"type":"join","room":"dev","name":"Bob","since":"later"}'
    assert decode_server_line(line) == ev.Join(room="dev", name="Bob")


def test_integer_timestamps_are_accepted() -> None:
    line = '{"type":"private","from":"Bob","text":"hi","ts":17}'
    assert decode_server_line(line) == ev.Private(sender="Bob", text="hi", ts=17.0)


def test_incomplete_history() -> None:
    m = {"type": "message", "room": "dev", "from": "Bob", "text": "hi", "id": 7, "ts": 1.5}
    line = json.dumps({"type": "history", "room": "dev", "messages": [m], "complete": False})
    kept = (ev.Message("dev", "Bob", "hi", 7, 1.5),)
    assert decode_server_line(line) == ev.History("dev", kept, complete=False)
    complete = json.dumps({"type": "history", "room": "dev", "messages": [m], "complete": True})
    assert decode_server_line(complete) == ev.History("dev", kept)


@pytest.mark.parametrize(
    "line",
    [
        "Bob:hello",
        "* Bob joined dev",
        "",
        "[1, 2]",
        '{"type": ["join"]}',
        '{"type":"teleport"}',
        '{"name":"Bob"}',
        '{"type":"join","room":"dev"}',
        '{"type":"join","room":"dev","name":5}',
        '{"type":"message","room":"dev","from":"Bob","text":"x","id":true,"ts":1}',
        '{"type":"message","room":"dev","from":"Bob","text":"x","id":1,"ts":"now"}',
        '{"type":"message","room":"dev","from":"Bob","text":"x","id":1,"ts":NaN}',
        '{"type":"error","code":999,"message":"x"}',
        '{"type":"rooms","rooms":[{"room":"dev"}]}',
        '{"type":"rooms","rooms":["dev"]}',
        '{"type":"history","room":"dev","messages":[1]}',
        '{"type":"history","room":"dev","messages":[],"complete":"no"}',
        '{"type":"users","names":["a",1]}',
        "[" * 100_000,
    ],
)
def test_anything_else_is_unrecognized(line: str) -> None:
    assert decode_server_line(line) == Unrecognized(line)


@given(st.text(max_size=200))
def test_never_raises(line: str) -> None:
    decode_server_line(line)


def test_imports_no_trio() -> None:
    code = "import machat.protocol.client_events, sys; assert 'trio' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
