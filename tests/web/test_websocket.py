"""The sans-IO WebSocket side: messages become chat lines, whatever the chunking."""

from __future__ import annotations

import pytest
import wsproto
import wsproto.events as wse
from hypothesis import given
from hypothesis import strategies as st

from machat.protocol.framing import Framer, HandshakeReceived, LineReceived
from machat.protocol.http import HttpError
from machat.protocol.websocket import (
    CLOSE_INVALID_DATA,
    CLOSE_NORMAL,
    CLOSE_UNSUPPORTED_DATA,
    ChatData,
    Closed,
    WebSocketChat,
    accept,
    frame_lines,
)
from tests.web.wsclient import client_events, parse_request, upgrade_request


def connect(trailing: bytes = b"") -> tuple[wsproto.WSConnection, WebSocketChat]:
    client, data = upgrade_request()
    response, chat = accept(parse_request(data + trailing))
    events = client_events(client, response)
    assert isinstance(events[0], wse.AcceptConnection)
    return client, chat


def drain(chat: WebSocketChat) -> tuple[bytes, Closed | None]:
    data = bytearray()
    closed = None
    while (event := chat.next_event()) is not None:
        if isinstance(event, ChatData):
            assert closed is None, "chat data after the close"
            data += event.data
        else:
            assert closed is None, "closed twice"
            closed = event
    return bytes(data), closed


def test_accept_gives_101_with_the_accept_token():
    client, data = upgrade_request()
    response, _ = accept(parse_request(data))
    assert response.startswith(b"HTTP/1.1 101 ")
    (event,) = client_events(client, response)
    assert isinstance(event, wse.AcceptConnection)
    assert b"sec-websocket-extensions" not in response.lower()


def test_deflate_is_not_negotiated():
    client, data = upgrade_request(headers=[(b"Sec-WebSocket-Extensions", b"permessage-deflate")])
    response, _ = accept(parse_request(data))
    assert b"permessage-deflate" not in response


@pytest.mark.parametrize(
    ("drop", "status"),
    [(b"sec-websocket-key", 400), (b"sec-websocket-version", 400), (b"connection", 400)],
)
def test_a_broken_upgrade_is_refused(drop, status):
    _, data = upgrade_request()
    head, _, _ = data.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(drop + b":")]
    with pytest.raises(HttpError) as info:
        accept(parse_request(b"\r\n".join(lines) + b"\r\n\r\n"))
    assert info.value.response.status == status


def test_wrong_version_gets_426():
    _, data = upgrade_request()
    data = data.replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8")
    with pytest.raises(HttpError) as info:
        accept(parse_request(data))
    assert info.value.response.status == 426
    assert ("Sec-WebSocket-Version", "13") in info.value.response.headers


def test_frames_sent_with_the_request_are_kept():
    client, data = upgrade_request()
    response, _ = accept(parse_request(data))
    client_events(client, response)
    frames = client.send(wse.TextMessage('{"name": "Mina"}'))
    # A client that does not wait for the 101 sends its first frames with the request.
    _, chat = accept(parse_request(data + frames))
    assert drain(chat) == (b'{"name": "Mina"}\n', None)


@pytest.mark.parametrize(
    ("message", "chat_bytes"),
    [
        ("hello", b"hello\n"),
        ("hello\n", b"hello\n"),
        ("hello\r\n", b"hello\r\n"),
        ("a\nb\nc", b"a\nb\nc\n"),
        ("a\n\nb\n", b"a\n\nb\n"),
        ("", b"\n"),
        ("\n", b"\n"),
        ("gr\u00fc\u00df dich \U0001f600", "gr\u00fc\u00df dich \U0001f600\n".encode()),
    ],
)
def test_a_message_ends_in_exactly_one_newline(message, chat_bytes):
    client, chat = connect()
    chat.receive_data(client.send(wse.TextMessage(message)))
    assert drain(chat) == (chat_bytes, None)


def test_binary_closes_with_1003():
    client, chat = connect()
    chat.receive_data(client.send(wse.TextMessage("hi")) + client.send(wse.BytesMessage(b"x")))
    data, closed = drain(chat)
    assert data == b"hi\n"
    assert closed == Closed(CLOSE_UNSUPPORTED_DATA, closed.reason, by_peer=False)
    assert chat.data_to_send() == b""
    (event,) = client_events(client, chat.close(closed.code))
    assert isinstance(event, wse.CloseConnection) and event.code == CLOSE_UNSUPPORTED_DATA
    assert not chat.may_send


def _masked_text_frame(payload: bytes) -> bytes:
    key = b"\x01\x02\x03\x04"
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes((0x81, 0x80 | len(payload))) + key + masked


def test_invalid_utf8_closes_with_1007():
    client, chat = connect()
    chat.receive_data(_masked_text_frame(b"ok \xff\xfe"))
    data, closed = drain(chat)
    assert closed is not None and closed.code == CLOSE_INVALID_DATA and not closed.by_peer
    (event,) = client_events(client, chat.close(closed.code))
    assert event.code == CLOSE_INVALID_DATA


def test_unmasked_client_frames_are_a_protocol_error():
    client, chat = connect()
    chat.receive_data(b"\x81\x02hi")
    _, closed = drain(chat)
    assert closed is not None and closed.code == 1002


def test_ping_is_answered_and_pong_is_quiet():
    client, chat = connect()
    chat.receive_data(client.send(wse.Ping(b"are you there")))
    assert drain(chat) == (b"", None)
    (event,) = client_events(client, chat.data_to_send())
    assert event == wse.Pong(payload=b"are you there")
    chat.receive_data(client.send(wse.Pong(b"x")))
    assert drain(chat) == (b"", None)
    assert chat.data_to_send() == b""


def test_server_ping_reaches_the_client():
    client, chat = connect()
    (event,) = client_events(client, chat.ping(b"p"))
    assert event == wse.Ping(payload=b"p")


def test_peer_close_is_answered():
    client, chat = connect()
    chat.receive_data(client.send(wse.CloseConnection(code=CLOSE_NORMAL, reason="bye")))
    assert drain(chat) == (b"", Closed(CLOSE_NORMAL, "bye", by_peer=True))
    assert chat.may_send  # what is pending may still go out
    text, close = client_events(client, frame_lines(b"* bye\n") + chat.close())
    assert text == wse.TextMessage("* bye\n")
    assert isinstance(close, wse.CloseConnection) and close.code == CLOSE_NORMAL
    assert chat.close() == b""  # already sent
    chat.receive_data(b"more bytes after the close are ignored")
    assert drain(chat) == (b"", None)


def test_network_gone_is_a_close():
    _, chat = connect()
    chat.receive_data(None)
    _, closed = drain(chat)
    assert closed is not None and closed.code == 1006 and closed.by_peer


def test_our_close_then_the_answer():
    client, chat = connect()
    (event,) = client_events(client, chat.close(1001, "server shutting down"))
    assert event.code == 1001
    assert not chat.may_send
    chat.receive_data(client.send(event.response()))
    _, closed = drain(chat)
    assert closed is not None and closed.by_peer


# -- chunking invariance --------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


def _client_bytes(client: wsproto.WSConnection, messages: list[list[str]]) -> bytes:
    """Each message sent as the given fragments, pings mixed in."""
    out = bytearray()
    for fragments in messages:
        for i, fragment in enumerate(fragments):
            out += client.send(wse.TextMessage(fragment, message_finished=i == len(fragments) - 1))
        out += client.send(wse.Ping(b"p"))
    return bytes(out)


def _expected(messages: list[list[str]]) -> bytes:
    out = b""
    for fragments in messages:
        text = "".join(fragments)
        out += text.encode() + (b"" if text.endswith("\n") else b"\n")
    return out


@given(
    messages=st.lists(st.lists(_text, min_size=1, max_size=3), max_size=8),
    data=st.data(),
)
def test_any_chunking_gives_the_same_chat_bytes(messages, data):
    client, chat = connect()
    stream = _client_bytes(client, messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    got = bytearray()
    start = 0
    for cut in [*cuts, len(stream)]:
        chat.receive_data(stream[start:cut])
        start = cut
        chunk, closed = drain(chat)
        assert closed is None
        got += chunk
    assert bytes(got) == _expected(messages)


@given(st.lists(st.text(max_size=30), min_size=1, max_size=6), st.data())
def test_websocket_lines_through_the_framer(lines, data):
    # The framer sees exactly the lines sent, one per message, like a TCP client's.
    lines = [line.replace("\n", " ").replace("\r", " ") for line in lines]
    client, chat = connect()
    stream = client.send(wse.TextMessage('{"name": "Mina"}'))
    for line in lines:
        stream += client.send(wse.TextMessage(line))
    framer = Framer()
    step = data.draw(st.integers(1, 50))
    for i in range(0, len(stream), step):
        chat.receive_data(stream[i : i + step])
        piece, _ = drain(chat)
        framer.feed(piece)
    events = []
    while (event := framer.next_event()) is not None:
        events.append(event)
    assert events == [
        HandshakeReceived(b'{"name": "Mina"}'),
        *(LineReceived(line.encode()) for line in lines),
    ]


@given(st.binary(max_size=300), st.integers(1, 64))
def test_arbitrary_bytes_give_events_or_a_close(garbage, step):
    _, chat = connect()
    closes = 0
    for i in range(0, len(garbage), step):
        chat.receive_data(garbage[i : i + step])
        while (event := chat.next_event()) is not None:
            assert isinstance(event, ChatData | Closed)
            closes += isinstance(event, Closed)
    chat.receive_data(None)
    while (event := chat.next_event()) is not None:
        closes += isinstance(event, Closed)
    assert closes == 1
    chat.data_to_send()


# -- what the server sends ------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"Mina:hello\n",
        b"a\nb\nc\n",
        b"no newline",
        b"x" * 125 + b"\n",
        b"x" * 70000 + b"\n" + b"y" * 200 + b"\n",
    ],
)
def test_frame_lines_one_message_per_line(data):
    client, _ = connect()
    events = client_events(client, frame_lines(data))
    assert [e.data for e in events] == [line.decode() for line in data.splitlines(keepends=True)]
    assert all(isinstance(e, wse.TextMessage) and e.message_finished for e in events)


def test_frame_lines_of_nothing():
    assert frame_lines(b"") == b""
