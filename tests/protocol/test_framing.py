"""Tests of the sans-IO framing: the handshake scanner, the line buffer, decode_text.

As in h11's tests, every example is fed whole, byte by byte, and in chunks that
hypothesis chooses, and must give the same events each way.  Pure and synchronous.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from machat.protocol.errors import ErrorCode, RemoteProtocolError
from machat.protocol.framing import (
    DEFAULT_MAX_HANDSHAKE,
    DEFAULT_MAX_LINE,
    Framer,
    HandshakeReceived,
    LineBuffer,
    LineReceived,
    decode_text,
)

HS = b'{"name":"a"}'
Hs = HandshakeReceived
L = LineReceived
TOO_LONG = ErrorCode.LINE_TOO_LONG
BAD_HS = ErrorCode.INVALID_HANDSHAKE


# --- drivers -------------------------------------------------------------------------


def run_framer(chunks, *, eof=True, **kwargs):
    """Feed ``chunks`` one at a time, draining events after each; errors become codes.

    LINE_TOO_LONG is recoverable and recorded in place; any other RemoteProtocolError
    is fatal, recorded, and ends the run.
    """
    framer = Framer(**kwargs)
    out: list = []

    def drain() -> bool:
        while True:
            try:
                event = framer.next_event()
            except RemoteProtocolError as exc:
                out.append(exc.code)
                if exc.code != TOO_LONG:
                    return False
                continue
            if event is None:
                return True
            out.append(event)

    for chunk in chunks:
        framer.feed(chunk)
        if not drain():
            return out
    if eof:
        framer.feed_eof()
        drain()
    return out


def run_lines(chunks, *, eof=True, max_line=DEFAULT_MAX_LINE, bulk=False):
    """Feed ``chunks`` and drain after each: lines and LINE_TOO_LONG codes, in order.

    ``bulk`` drains with `LineBuffer.next_lines` instead of `next_line`."""
    buf = LineBuffer(max_line)
    out: list = []

    def drain() -> None:
        while True:
            try:
                lines = buf.next_lines() if bulk else [buf.next_line()]
            except RemoteProtocolError as exc:
                assert exc.code == TOO_LONG
                out.append(exc.code)
                continue
            if lines in ([], [None]):
                return
            out.extend(lines)

    for chunk in chunks:
        buf.feed(chunk)
        drain()
    if eof:
        buf.feed_eof()
        drain()
    return out


def whole(data: bytes) -> list[bytes]:
    return [data]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def split_at(data: bytes, cuts) -> list[bytes]:
    points = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def draw_split(draw, data: bytes) -> list[bytes]:
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=12), label="cuts")
    return split_at(data, cuts)


def framer_model(rest: bytes, max_line: int, eof: bool = True) -> list:
    """What the Framer must produce for the bytes after a complete handshake."""
    if rest.startswith(b"\r\n"):
        rest = rest[2:]
    elif rest.startswith(b"\n"):
        rest = rest[1:]
    *complete, last = rest.split(b"\n")
    lines = [line.removesuffix(b"\r") for line in complete]
    if eof and last:
        lines.append(last.removesuffix(b"\r"))
    return [L(line) if len(line) <= max_line else TOO_LONG for line in lines]


# --- the Framer: table ---------------------------------------------------------------

FRAMER_CASES = [
    # the handshake ends at its closing brace, no newline needed
    (HS, [Hs(HS)]),
    # exactly one newline after the object is skipped
    (HS + b"\nhello\n", [Hs(HS), L(b"hello")]),
    (HS + b"\r\nhello\r\n", [Hs(HS), L(b"hello")]),
    (HS + b"hello\n", [Hs(HS), L(b"hello")]),
    (HS + b"\n\nx\n", [Hs(HS), L(b""), L(b"x")]),
    (HS + b"\r\n\r\nx\n", [Hs(HS), L(b""), L(b"x")]),
    (HS + b"\n\r\nx\n", [Hs(HS), L(b""), L(b"x")]),
    (HS + b"\n", [Hs(HS)]),
    (HS + b"\r\n", [Hs(HS)]),
    # a lone \r is not a newline: kept as part of the first line
    (HS + b"\rx\n", [Hs(HS), L(b"\rx")]),
    # lines: \r\n and \n both end a line, a \r elsewhere is kept
    (HS + b"\na\nb\r\nc\rd\n", [Hs(HS), L(b"a"), L(b"b"), L(b"c\rd")]),
    (HS + b"\na\r\r\n", [Hs(HS), L(b"a\r")]),
    # an unterminated last line comes out at EOF, without a trailing \r
    (HS + b"\nlast", [Hs(HS), L(b"last")]),
    (HS + b"\nlast\r", [Hs(HS), L(b"last")]),
    (HS + b"last", [Hs(HS), L(b"last")]),
    # leading whitespace before the object is allowed
    (b" \t\r\n" + HS + b"\nx\n", [Hs(HS), L(b"x")]),
    # braces and escaped quotes inside strings do not end the object
    (b'{"name":"a","password":"}{"}\nx\n', [Hs(b'{"name":"a","password":"}{"}'), L(b"x")]),
    (
        b'{"name":"a","password":"\\"}\\\\"}x\n',
        [Hs(b'{"name":"a","password":"\\"}\\\\"}'), L(b"x")],
    ),
    (b'{"a":{"b":[1,{"c":"]}"}]}}\n', [Hs(b'{"a":{"b":[1,{"c":"]}"}]}}')]),
    # a line that looks like a handshake after the handshake is just a line
    (HS + HS + b"\n", [Hs(HS), L(HS)]),
    # anything but whitespace before "{" is refused
    (b"hello\n", [BAD_HS]),
    (b"[1]", [BAD_HS]),
    (b'"x"', [BAD_HS]),
    (b"\xef\xbb\xbf" + HS, [BAD_HS]),  # not even a BOM
    (b"  x{}", [BAD_HS]),
    # incomplete: nothing but whitespace, or an open object, gives no event
    (b"", []),
    (b"   \n", []),
    (b'{"name":"a"', []),
    (b'{"name":"}', []),
]


def _ids(cases):
    return [repr(data[:40]) for data, _ in cases]


@pytest.mark.parametrize(("data", "expected"), FRAMER_CASES, ids=_ids(FRAMER_CASES))
def test_framer_table_whole(data, expected):
    assert run_framer(whole(data)) == expected


@pytest.mark.parametrize(("data", "expected"), FRAMER_CASES, ids=_ids(FRAMER_CASES))
def test_framer_table_bytewise(data, expected):
    assert run_framer(bytewise(data)) == expected


# Inputs that end where a new line may begin, or that are refused outright.
TRAILING_CASES = [
    (data, expected)
    for data, expected in FRAMER_CASES
    if expected and (expected[-1] == BAD_HS or data.endswith(b"\n") or data == HS)
]


@pytest.mark.parametrize(("data", "expected"), TRAILING_CASES, ids=_ids(TRAILING_CASES))
def test_framer_table_trailing_data(data, expected):
    # Without EOF and with another line after: the same events, then that line.
    out = run_framer([data, b"more\n"], eof=False)
    if expected[-1] == BAD_HS:
        assert out == expected
    else:
        assert out == [*expected, L(b"more")]


@settings(max_examples=60, deadline=None)
@given(case=st.sampled_from(FRAMER_CASES), data=st.data())
def test_framer_table_any_split(case, data):
    raw, expected = case
    assert run_framer(draw_split(data.draw, raw)) == expected


def test_handshake_event_as_soon_as_closing_brace_arrives():
    framer = Framer()
    framer.feed(HS[:-1])
    assert framer.next_event() is None
    assert not framer.handshake_done
    framer.feed(b"}")
    assert framer.next_event() == Hs(HS)
    assert framer.handshake_done
    assert framer.next_event() is None


def test_cr_and_lf_in_different_chunks_after_handshake():
    framer = Framer()
    framer.feed(HS + b"\r")
    assert framer.next_event() == Hs(HS)
    assert framer.next_event() is None  # the \r may start a \r\n: wait
    framer.feed(b"\n")
    assert framer.next_event() is None
    framer.feed(b"hi\r")
    assert framer.next_event() is None
    framer.feed(b"\n")
    assert framer.next_event() == L(b"hi")
    assert framer.next_event() is None


def test_cr_then_other_byte_after_handshake_is_kept():
    framer = Framer()
    framer.feed(HS + b"\r")
    assert framer.next_event() == Hs(HS)
    assert framer.next_event() is None
    framer.feed(b"x\n")
    assert framer.next_event() == L(b"\rx")


def test_feed_before_pulling_handshake():
    framer = Framer()
    for chunk in (b'{"na', b'me":"a"}', b"\r", b"\n", b"one\n", b"two\n"):
        framer.feed(chunk)
    assert [framer.next_event() for _ in range(4)] == [Hs(HS), L(b"one"), L(b"two"), None]


def test_eof_during_handshake_gives_nothing():
    framer = Framer()
    framer.feed(b'{"name":')
    framer.feed_eof()
    assert framer.at_eof
    assert framer.next_event() is None


def test_eof_right_after_handshake_cr():
    assert run_framer([HS + b"\r"]) == [Hs(HS), L(b"")]
    assert run_framer([HS + b"\r\n"]) == [Hs(HS)]


@pytest.mark.parametrize("split", [whole, bytewise])
def test_handshake_size_limit(split):
    # exactly max_handshake bytes is fine ...
    pad = DEFAULT_MAX_HANDSHAKE - len(b'{"name":"a","password":""}')
    ok = b'{"name":"a","password":"' + b"x" * pad + b'"}'
    assert len(ok) == DEFAULT_MAX_HANDSHAKE
    assert run_framer(split(ok + b"\nhi\n")) == [Hs(ok), L(b"hi")]
    # ... one more is refused, as soon as the limit is passed
    big = b'{"name":"a","password":"' + b"x" * (pad + 1) + b'"}'
    assert run_framer(split(big)) == [BAD_HS]


def test_handshake_size_limit_without_closing_brace():
    framer = Framer()
    framer.feed(b"{" + b" " * (DEFAULT_MAX_HANDSHAKE - 2))
    assert framer.next_event() is None
    framer.feed(b" ")
    with pytest.raises(RemoteProtocolError) as info:
        framer.next_event()
    assert info.value.code == BAD_HS
    assert str(DEFAULT_MAX_HANDSHAKE) in info.value.message


def test_endless_whitespace_before_handshake_is_refused():
    framer = Framer()
    with pytest.raises(RemoteProtocolError) as info:
        for _ in range(10):
            framer.feed(b" " * 1024)
            framer.next_event()
    assert info.value.code == BAD_HS


def test_small_max_handshake():
    assert run_framer([b'{"name":"abc"}'], max_handshake=8) == [BAD_HS]
    assert run_framer([b'{"a":1}'], max_handshake=8) == [Hs(b'{"a":1}')]


def test_invalid_handshake_start_message():
    with pytest.raises(RemoteProtocolError) as info:
        run_once(b"GET / HTTP/1.1\r\n")
    assert info.value.code == BAD_HS
    assert info.value.message.startswith("invalid handshake: ")
    assert "\n" not in info.value.message


def run_once(data: bytes):
    framer = Framer()
    framer.feed(data)
    return framer.next_event()


# --- the Framer: properties ----------------------------------------------------------

printable_handshakes = st.builds(
    lambda name, pw: json.dumps({"name": name, "password": pw}).encode(),
    st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,31}", fullmatch=True),
    st.text(max_size=20),
)
small_alphabet = st.binary(max_size=80) | st.lists(
    st.sampled_from([b"\n", b"\r", b"\r\n", b"a", b"bb", b"{", b"}", b'"', b"\xff"]),
    max_size=40,
).map(b"".join)


@settings(max_examples=200, deadline=None)
@given(hs=printable_handshakes, rest=small_alphabet, data=st.data())
def test_bytes_after_handshake_are_lines(hs, rest, data):
    max_line = 8
    chunks = draw_split(data.draw, hs + rest)
    out = run_framer(chunks, max_line=max_line)
    assert out[0] == Hs(hs)
    assert all(isinstance(e, LineReceived) or e == TOO_LONG for e in out[1:])
    assert out[1:] == framer_model(rest, max_line)
    # and the same whole and byte by byte
    assert run_framer([hs + rest], max_line=max_line) == out
    assert run_framer(bytewise(hs + rest), max_line=max_line) == out


@settings(max_examples=100, deadline=None)
@given(rest=small_alphabet, data=st.data())
def test_lines_without_eof_hold_back_the_unterminated_tail(rest, data):
    out = run_framer(draw_split(data.draw, HS + rest), eof=False, max_line=8)
    expected = framer_model(rest, 8, eof=False)
    # The unterminated tail yields nothing yet, unless it is already too long.
    tail = out[1 + len(expected) :]
    assert out[: 1 + len(expected)] == [Hs(HS), *expected]
    assert tail in ([], [TOO_LONG])


@settings(max_examples=200, deadline=None)
@given(stream=st.binary(max_size=200), data=st.data())
def test_arbitrary_stream_gives_events_or_protocol_errors(stream, data):
    chunks = draw_split(data.draw, stream)
    out = run_framer(chunks, max_line=16, max_handshake=64)
    assert all(isinstance(e, HandshakeReceived | LineReceived | ErrorCode) for e in out)
    if out and isinstance(out[0], HandshakeReceived):
        assert all(isinstance(e, LineReceived) or e == TOO_LONG for e in out[1:])
    else:
        assert out in ([], [BAD_HS])
    assert run_framer([stream], max_line=16, max_handshake=64) == out


@settings(max_examples=200, deadline=None)
@given(
    stream=st.lists(
        st.sampled_from([b" ", b"\n", b"{", b"}", b"[", b"]", b'"', b"\\", b"a", b":", b","]),
        max_size=60,
    ).map(b"".join),
    data=st.data(),
)
def test_json_like_streams_split_anywhere(stream, data):
    chunks = draw_split(data.draw, stream)
    expected = run_framer([stream])
    assert run_framer(chunks) == expected
    assert run_framer(bytewise(stream)) == expected
    if expected and isinstance(expected[0], HandshakeReceived):
        raw = expected[0].data
        assert stream.lstrip(b" \n").startswith(raw)
        assert raw.startswith(b"{") and raw.endswith((b"}", b"]"))


# --- LineBuffer ----------------------------------------------------------------------

LINE_CASES = [
    (b"", []),
    (b"a\n", [b"a"]),
    (b"a\r\n", [b"a"]),
    (b"\n\n", [b"", b""]),
    (b"a\nb\r\nc", [b"a", b"b", b"c"]),
    (b"a\r", [b"a"]),
    (b"a\rb\n", [b"a\rb"]),
    (b"\r\r\n", [b"\r"]),
    # max_line is 4 here: 4 bytes fit, with or without \r\n ...
    (b"abcd\nabcd\r\n", [b"abcd", b"abcd"]),
    # ... 5 do not; the line is discarded, the stream goes on
    (b"abcde\nok\n", [TOO_LONG, b"ok"]),
    (b"abcd\r\r\nok\n", [TOO_LONG, b"ok"]),
    (b"abcdefghijklmnop\nok\n", [TOO_LONG, b"ok"]),
    (b"x\nabcdefghij\r\n\nok", [b"x", TOO_LONG, b"", b"ok"]),
    (b"abcde", [TOO_LONG]),
    (b"abcd\r", [b"abcd"]),
]


@pytest.mark.parametrize(("data", "expected"), LINE_CASES, ids=_ids(LINE_CASES))
@pytest.mark.parametrize("split", [whole, bytewise])
def test_line_buffer_table(data, expected, split):
    assert run_lines(split(data), max_line=4) == expected


@settings(max_examples=100, deadline=None)
@given(case=st.sampled_from(LINE_CASES), data=st.data())
def test_line_buffer_table_any_split(case, data):
    raw, expected = case
    assert run_lines(draw_split(data.draw, raw), max_line=4) == expected


@pytest.mark.parametrize("split", [whole, bytewise])
def test_line_buffer_trailing_data(split):
    assert run_lines(split(b"a\nb\n") + [b"tail"], eof=False, max_line=4) == [b"a", b"b"]


def test_line_too_long_raised_once_as_soon_as_limit_passed():
    buf = LineBuffer(max_line=4)
    buf.feed(b"abcd")
    assert buf.next_line() is None
    buf.feed(b"\r")  # could still be "abcd\r\n"
    assert buf.next_line() is None
    buf.feed(b"x")
    with pytest.raises(RemoteProtocolError) as info:
        buf.next_line()
    assert info.value.code == TOO_LONG
    assert "4" in info.value.message
    # the rest of the line is discarded silently
    for chunk in (b"y" * 100, b"z" * 100, b"\r"):
        buf.feed(chunk)
        assert buf.next_line() is None
    buf.feed(b"\nnext\n")
    assert buf.next_line() == b"next"
    assert buf.next_line() is None


def test_line_too_long_without_cr_raised_at_max_line_plus_one():
    buf = LineBuffer(max_line=4)
    buf.feed(b"abcde")
    with pytest.raises(RemoteProtocolError):
        buf.next_line()
    assert buf.next_line() is None


def test_long_line_discard_then_recovery():
    buf = LineBuffer(max_line=10)
    buf.feed(b"short\n" + b"L" * 50)
    assert buf.next_line() == b"short"
    with pytest.raises(RemoteProtocolError):
        buf.next_line()
    buf.feed(b"L" * 50 + b"\n" + b"after\n")
    assert buf.next_line() == b"after"
    buf.feed(b"0123456789\n")
    assert buf.next_line() == b"0123456789"
    assert buf.next_line() is None


def test_memory_bounded_during_huge_line():
    max_line = DEFAULT_MAX_LINE
    chunk_size = 4096
    buf = LineBuffer(max_line)
    errors = 0
    for _ in range(1024 * 1024 // chunk_size):
        buf.feed(b"x" * chunk_size)
        try:
            assert buf.next_line() is None
        except RemoteProtocolError as exc:
            assert exc.code == TOO_LONG
            errors += 1
        assert len(buf) <= max_line + 1
        # the storage behind it is bounded too, not only the unconsumed part
        assert len(buf._data) <= max_line + 1 + chunk_size
    assert errors == 1
    buf.feed(b"\nok\n")
    assert buf.next_line() == b"ok"
    assert buf.next_line() is None


def test_framer_memory_bounded_during_huge_line():
    framer = Framer()
    framer.feed(HS + b"\n")
    assert framer.next_event() == Hs(HS)
    codes = []
    for _ in range(256):
        framer.feed(b"x" * 4096)
        try:
            assert framer.next_event() is None
        except RemoteProtocolError as exc:
            codes.append(exc.code)
        assert len(framer._lines) <= DEFAULT_MAX_LINE + 1
    assert codes == [TOO_LONG]
    framer.feed(b"\nback\n")
    assert framer.next_event() == L(b"back")


def test_many_lines_in_one_chunk():
    data = b"".join(b"line %d\n" % i for i in range(10_000))
    assert run_lines([data]) == [b"line %d" % i for i in range(10_000)]


def test_take_rest():
    buf = LineBuffer()
    buf.feed(b"a\nbc")
    assert buf.next_line() == b"a"
    assert buf.take_rest() == b"bc"
    assert len(buf) == 0
    assert buf.next_line() is None


def test_feed_after_eof_is_a_bug():
    buf = LineBuffer()
    buf.feed_eof()
    with pytest.raises(RuntimeError):
        buf.feed(b"x")


def test_max_line_must_be_positive():
    with pytest.raises(ValueError):
        LineBuffer(0)


@settings(max_examples=200, deadline=None)
@given(
    stream=st.lists(
        st.sampled_from([b"\n", b"\r", b"\r\n", b"a", b"bcd", b"\xff"]), max_size=40
    ).map(b"".join),
    max_line=st.integers(1, 6),
    data=st.data(),
)
def test_line_buffer_model(stream, max_line, data):
    *complete, last = stream.split(b"\n")
    lines = [x.removesuffix(b"\r") for x in complete]
    if last:
        lines.append(last.removesuffix(b"\r"))
    expected = [x if len(x) <= max_line else TOO_LONG for x in lines]
    assert run_lines(draw_split(data.draw, stream), max_line=max_line) == expected
    assert run_lines(bytewise(stream), max_line=max_line) == expected
    chunks = draw_split(data.draw, stream)
    assert run_lines(chunks, max_line=max_line, bulk=True) == expected


def test_next_lines_splits_a_chunk_in_one_go_and_keeps_the_tail():
    buf = LineBuffer(10)
    buf.feed(b"one\r\ntwo\n\nthree\nfo")
    assert buf.next_lines() == [b"one", b"two", b"", b"three"]
    assert buf.next_lines() == []
    buf.feed(b"ur\n")
    assert buf.next_lines() == [b"four"]
    # A line over the limit: the lines before it come first, then the error, once.
    buf.feed(b"ok\n" + b"x" * 11 + b"\nafter\n")
    assert buf.next_lines() == [b"ok"]
    with pytest.raises(RemoteProtocolError) as info:
        buf.next_lines()
    assert info.value.code == TOO_LONG
    assert buf.next_lines() == [b"after"]


def test_framer_next_lines_only_after_the_handshake():
    framer = Framer()
    framer.feed(b'{"name": "Mina", "room": "dev"}\r\nhi\nthere\n')
    with pytest.raises(RuntimeError):
        framer.next_lines()
    assert isinstance(framer.next_event(), HandshakeReceived)
    assert framer.next_lines() == [b"hi", b"there"]
    assert framer.next_lines() == []


# --- decode_text ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"", ""),
        (b"hello", "hello"),
        (b"tab\there", "tab\there"),
        ("h\u00e9llo \u4e16\u754c \U0001f600".encode(), "h\u00e9llo \u4e16\u754c \U0001f600"),
        ("\u200b\u2028\xa0".encode(), "\u200b\u2028\xa0"),  # odd, but not control chars
        (b"{}[]\\\"'", "{}[]\\\"'"),
    ],
)
def test_decode_text_accepts(data, text):
    assert decode_text(data) == text


@pytest.mark.parametrize(
    "data",
    [
        b"\xff",
        b"\xc3",  # truncated sequence
        b"\xc0\xaf",  # overlong
        b"\xed\xa0\x80",  # encoded surrogate
        b"\xf4\x90\x80\x80",  # beyond U+10FFFF
        b"ok\x80",
    ],
)
def test_decode_text_refuses_bad_utf8(data):
    with pytest.raises(RemoteProtocolError) as info:
        decode_text(data)
    assert info.value.code == ErrorCode.INVALID_TEXT
    assert "UTF-8" in info.value.message


@pytest.mark.parametrize("c", [c for c in range(0x20) if c != 0x09] + [0x7F])
def test_decode_text_refuses_control_chars(c):
    with pytest.raises(RemoteProtocolError) as info:
        decode_text(b"a" + bytes([c]) + b"b")
    assert info.value.code == ErrorCode.INVALID_TEXT
    assert "control" in info.value.message


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_decode_text_property(text):
    bad = any((ord(ch) < 0x20 and ch != "\t") or 0x7F <= ord(ch) < 0xA0 for ch in text)
    if bad:
        with pytest.raises(RemoteProtocolError):
            decode_text(text.encode("utf-8", "surrogatepass"))
    else:
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates cannot be sent as UTF-8
            return
        assert decode_text(data) == text


@given(st.binary(max_size=50))
def test_decode_text_arbitrary_bytes(data):
    try:
        text = decode_text(data)
    except RemoteProtocolError as exc:
        assert exc.code == ErrorCode.INVALID_TEXT
    else:
        assert text.encode("utf-8") == data


@pytest.mark.parametrize("char", ["\x1b", "\x7f", "\x85", "\x9b", "\x00"])
def test_decode_text_refuses_c0_del_and_c1_controls(char):
    with pytest.raises(RemoteProtocolError) as info:
        decode_text(f"a{char}b".encode())
    assert info.value.code == ErrorCode.INVALID_TEXT
