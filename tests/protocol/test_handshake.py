"""Tests of the handshake: decoding, every refusal with its code and text, name and room
rules, and properties (round trip; arbitrary JSON or bytes never escape as anything but a
Handshake or a RemoteProtocolError).  Pure and synchronous.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from machat.protocol.errors import ErrorCode, RemoteProtocolError
from machat.protocol.formatting import Format
from machat.protocol.framing import Framer, HandshakeReceived, LineReceived
from machat.protocol.handshake import (
    DEFAULT_ROOM,
    MAX_HISTORY,
    Handshake,
    decode_handshake,
    encode_handshake,
    fold_name,
    validate_name,
    validate_room,
)

BAD = ErrorCode.INVALID_HANDSHAKE


def refusal(raw: bytes) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        decode_handshake(raw)
    exc = info.value
    assert exc.message == str(exc)
    assert "\n" not in exc.message and "\r" not in exc.message
    assert exc.message.isprintable()
    return exc


# --- accepted --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"name": "Mina", "room": "dev"}', Handshake("Mina", "dev")),
        (b'{"name": "Mina"}', Handshake("Mina", DEFAULT_ROOM)),
        (
            b'{"name":"Mina","room":"#dev","password":"s3cret","format":"json","history":20}',
            Handshake("Mina", "#dev", "s3cret", Format.JSON, 20),
        ),
        (b'{"name":"Mina","format":"text"}', Handshake("Mina")),
        (b'{"name":"Mina","password":null}', Handshake("Mina")),
        (b'{"name":"Mina","password":""}', Handshake("Mina", password="")),
        (b'{"name":"Mina","history":0}', Handshake("Mina")),
        (b'{"name":"Mina","history":500}', Handshake("Mina", history=500)),
        # history is capped, not refused
        (b'{"name":"Mina","history":501}', Handshake("Mina", history=MAX_HISTORY)),
        (b'{"name":"Mina","history":10000000000000}', Handshake("Mina", history=MAX_HISTORY)),
        (b' \r\n{"name":"Mina"}\n ', Handshake("Mina")),
        (
            '{"name":"Mina","password":"p\u00e4ss\u00a7}{"}'.encode(),
            Handshake("Mina", password="p\u00e4ss\u00a7}{"),
        ),
        (b'{"name":"Mina","name":"Oskar"}', Handshake("Oskar")),  # JSON: the last wins
    ],
)
def test_decode_accepts(raw, expected):
    assert decode_handshake(raw) == expected


def test_defaults():
    h = decode_handshake(b'{"name":"Mina"}')
    assert (h.room, h.password, h.format, h.history) == ("lounge", None, Format.TEXT, 0)


# --- refused -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        # unknown keys
        (b'{"name":"Mina","nmae":"x"}', "invalid handshake: unexpected field(s): nmae"),
        (b'{"name":"Mina","b":1,"a":2}', "invalid handshake: unexpected field(s): a, b"),
        # strings must be strings
        (b'{"name":5}', "invalid handshake: invalid value for type, expected str @ $.name"),
        (
            b'{"name":"Mina","room":5}',
            "invalid handshake: invalid value for type, expected str @ $.room",
        ),
        (b'{"name":null}', "invalid handshake: invalid value for type, expected str @ $.name"),
        (b'{"name":["Mina"]}', "invalid handshake: invalid value for type, expected str @ $.name"),
        (b'{"name":"Mina","password":5}', "@ $.password"),
        (b'{"name":"Mina","password":true}', "@ $.password"),
        # ints must be ints, not bools, floats or strings
        (
            b'{"name":"Mina","history":true}',
            "invalid handshake: invalid value for type, expected int @ $.history",
        ),
        (b'{"name":"Mina","history":1.0}', "expected int @ $.history"),
        (b'{"name":"Mina","history":"5"}', "expected int @ $.history"),
        (b'{"name":"Mina","history":null}', "expected int @ $.history"),
        (b'{"name":"Mina","history":NaN}', "expected int @ $.history"),
        (b'{"name":"Mina","history":-1}', "invalid handshake: history must be >= 0"),
        # format is "text" or "json"
        (
            b'{"name":"Mina","format":"xml"}',
            "invalid handshake: 'xml' is not a valid Format @ $.format",
        ),
        (b'{"name":"Mina","format":"JSON"}', "@ $.format"),
        (b'{"name":"Mina","format":1}', "@ $.format"),
        (b'{"name":"Mina","format":[]}', "@ $.format"),
        # missing name
        (b"{}", "invalid handshake: required field missing @ $.name"),
        (b'{"room":"dev"}', "invalid handshake: required field missing @ $.name"),
        # several problems: all reported, on one line
        (b'{"nmae":"Mina"}', "required field missing @ $.name; unexpected field(s): nmae"),
        (
            b'{"name":1,"history":"x"}',
            "expected str @ $.name; invalid value for type, expected int @ $.history",
        ),
        # not an object
        (b"[]", "invalid handshake: expected a JSON object, not list"),
        (b'"Mina"', "invalid handshake: expected a JSON object, not str"),
        (b"5", "invalid handshake: expected a JSON object, not int"),
        (b"null", "invalid handshake: expected a JSON object, not NoneType"),
        # broken JSON
        (b"", "invalid handshake: broken JSON"),
        (b"{", "invalid handshake: broken JSON"),
        (b'{"name":"Mina",}', "invalid handshake: broken JSON"),
        (b"{'name':'Mina'}", "invalid handshake: broken JSON"),
        (b'{"name":"Mina"} {}', "invalid handshake: broken JSON: Extra data"),
        (b'{"name":"Mi\nna"}', "invalid handshake: broken JSON"),  # raw control char
        # bad UTF-8
        (b'{"name":"\xff"}', "invalid handshake: not valid UTF-8"),
        (b'{"name":"Mina","password":"\xed\xa0\x80"}', "invalid handshake: not valid UTF-8"),
        (b"\xef\xbb\xbf{}", "invalid handshake: "),  # a BOM is not JSON
        # hostile numbers and nesting
        (b'{"name":"Mina","history":' + b"9" * 5000 + b"}", "invalid handshake: "),
        (b'{"name":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "invalid handshake: "),
    ],
)
def test_decode_refuses(raw, message):
    exc = refusal(raw)
    assert exc.code == BAD
    assert exc.message.startswith("invalid handshake: ")
    assert message in exc.message


def test_control_chars_in_unknown_keys_are_not_echoed():
    exc = refusal(b'{"name":"Mina","a\\nb":1,"\\u001b[2J":2,"\\ud800":3,"ok":4}')
    assert exc.code == BAD
    assert "\x1b" not in exc.message
    assert "'a\\nb'" in exc.message and "ok" in exc.message


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"name":""}', ErrorCode.INVALID_NAME),
        (b'{"name":"1abc"}', ErrorCode.INVALID_NAME),
        (b'{"name":"ALL"}', ErrorCode.INVALID_NAME),
        (b'{"name":"aLl"}', ErrorCode.INVALID_NAME),
        (b'{"name":"Mina","room":""}', ErrorCode.INVALID_ROOM),
        (b'{"name":"Mina","room":"-dev"}', ErrorCode.INVALID_ROOM),
        (b'{"name":"Mina","room":"a b"}', ErrorCode.INVALID_ROOM),
    ],
)
def test_decode_applies_name_and_room_rules(raw, code):
    assert refusal(raw).code == code


# --- names and rooms -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["a", "Z", "Mina", "mina_2", "a-b", "x" * 32, "A" + "0" * 31, "Alla", "all_", "allx"]
)
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "x" * 33,
        "1mina",
        "_mina",
        "-mina",
        "mi na",
        "mina!",
        "mi.na",
        "m#",
        "m\u00e4",  # ASCII letters only
        "\uff2d",  # a fullwidth letter
        "mina\n",
        "mina\x00",
        "all",
        "ALL",
        "All",
    ],
)
def test_invalid_names(name):
    with pytest.raises(RemoteProtocolError) as info:
        validate_name(name)
    assert info.value.code == ErrorCode.INVALID_NAME
    assert "\n" not in info.value.message
    assert info.value.message.startswith("invalid name ")


def test_reserved_name_message():
    with pytest.raises(RemoteProtocolError) as info:
        validate_name("ALL")
    assert info.value.message == "invalid name 'ALL': reserved"


@pytest.mark.parametrize(
    "room", ["lounge", "#dev", "0", "a.b", "a_b", "a-b", "##", "r" * 64, "Dev.2026#x"]
)
def test_valid_rooms(room):
    assert validate_room(room) == room


@pytest.mark.parametrize(
    "room", ["", "r" * 65, "_x", ".x", "-x", "a b", "a/b", "caf\u00e9", "a\n", "a:b", "a,b"]
)
def test_invalid_rooms(room):
    with pytest.raises(RemoteProtocolError) as info:
        validate_room(room)
    assert info.value.code == ErrorCode.INVALID_ROOM
    assert "\n" not in info.value.message
    assert info.value.message.startswith("invalid room name ")


def test_fold_name():
    assert fold_name("Mina") == fold_name("MINA") == fold_name("mina")
    assert fold_name("Mina") != fold_name("Mina2")


def test_history_must_not_be_negative_in_python_either():
    with pytest.raises(ValueError):
        Handshake("Mina", history=-1)


# --- encode --------------------------------------------------------------------------


def test_encode_is_compact_json_and_a_newline():
    assert encode_handshake(Handshake("Mina", "dev")) == b'{"name":"Mina","room":"dev"}\n'
    # The room is always sent, even the default one: MaChat servers expect it.
    assert encode_handshake(Handshake("Mina")) == b'{"name":"Mina","room":"lounge"}\n'
    raw = encode_handshake(Handshake("Mina", "dev", "pw", Format.JSON, 5))
    assert json.loads(raw) == {
        "name": "Mina",
        "room": "dev",
        "password": "pw",
        "format": "json",
        "history": 5,
    }
    assert raw.count(b"\n") == 1 and raw.endswith(b"\n")


# --- properties ----------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,31}", fullmatch=True).filter(
    lambda n: n.casefold() != "all"
)
rooms = st.from_regex(r"[A-Za-z0-9#][A-Za-z0-9_.#-]{0,63}", fullmatch=True)
handshakes = st.builds(
    Handshake,
    name=names,
    room=rooms,
    password=st.none() | st.text(max_size=64),
    format=st.sampled_from(Format),
    history=st.integers(0, MAX_HISTORY),
)


@settings(max_examples=200, deadline=None)
@given(h=handshakes)
def test_round_trip(h):
    raw = encode_handshake(h)
    assert raw.endswith(b"\n")
    assert decode_handshake(raw.removesuffix(b"\n")) == h
    assert decode_handshake(raw) == h  # JSON allows the trailing whitespace


@settings(max_examples=100, deadline=None)
@given(h=handshakes, data=st.data())
def test_round_trip_through_framer(h, data):
    stream = encode_handshake(h) + b"hello\n"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    framer = Framer()
    events = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        framer.feed(stream[a:b])
        while (event := framer.next_event()) is not None:
            events.append(event)
    assert len(events) == 2
    assert isinstance(events[0], HandshakeReceived)
    assert decode_handshake(events[0].data) == h
    assert events[1] == LineReceived(b"hello")


def check_outcome(raw: bytes) -> None:
    try:
        h = decode_handshake(raw)
    except RemoteProtocolError as exc:
        assert exc.code in (BAD, ErrorCode.INVALID_NAME, ErrorCode.INVALID_ROOM)
        assert "\n" not in exc.message
        assert exc.message.isprintable()
        exc.message.encode("utf-8")  # it can be sent
    else:
        assert isinstance(h, Handshake)
        validate_name(h.name)
        validate_room(h.room)
        assert 0 <= h.history <= MAX_HISTORY


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.sampled_from(["text", "json", "Mina", "dev"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
keys = st.sampled_from(["name", "room", "password", "format", "history"]) | st.text(max_size=6)


@settings(max_examples=300, deadline=None)
@given(value=json_values | st.dictionaries(keys, json_values, max_size=6))
def test_arbitrary_json_gives_handshake_or_protocol_error(value):
    check_outcome(json.dumps(value).encode())
    check_outcome(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=100))
def test_arbitrary_bytes_give_handshake_or_protocol_error(raw):
    check_outcome(raw)
    check_outcome(b'{"name":"Mina","password":"' + raw)


# --- since ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "since"),
    [
        (b'{"name":"Mina","since":0}', 0),
        (b'{"name":"Mina","since":12345}', 12345),
        (b'{"name":"Mina","since":null}', None),
        (b'{"name":"Mina"}', None),
    ],
)
def test_since_is_an_optional_non_negative_integer(raw, since):
    assert decode_handshake(raw).since == since


@pytest.mark.parametrize(
    "raw",
    [b'{"name":"Mina","since":-1}', b'{"name":"Mina","since":"5"}', b'{"name":"Mina","since":1.5}',
     b'{"name":"Mina","since":true}'],
)
def test_a_bad_since_is_refused(raw):
    with pytest.raises(RemoteProtocolError) as info:
        decode_handshake(raw)
    assert info.value.code is ErrorCode.INVALID_HANDSHAKE
    assert "since" in info.value.message
