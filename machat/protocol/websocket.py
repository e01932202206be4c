"""The chat over WebSocket, sans-IO, on top of wsproto.

A WebSocket client speaks the same chat as a TCP client, one text message at a
time, and `WebSocketChat` turns its messages back into the chat byte stream the
server already reads (`machat.protocol.framing`):

- the first text message is the JSON handshake; each later one is one line;
- a trailing ``\\n`` (or ``\\r\\n``) of a message is dropped, and a message that
  holds several newlines is several lines, each checked like a TCP line;
- so every message becomes its text, UTF-8, ending in exactly one ``\\n``.

The server writes one text message per line, ending in ``\\n``, as MaChat does
(`frame_lines`).  A binary message closes the connection with 1003 and invalid
UTF-8 with 1007 (RFC 6455 7.4.1); wsproto finds broken frames and bad UTF-8.

wsproto owns the state machine (`wsproto.connection.ConnectionState`); this
module adds only the mapping to chat bytes and which close code to send.
"""

from __future__ import annotations

import struct

import attrs
import wsproto
import wsproto.events as wse
import wsproto.utilities
from wsproto.connection import ConnectionState
from wsproto.handshake import H11Handshake

from .http import HttpError, Request

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INVALID_DATA",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_UNSUPPORTED_DATA",
    "ChatData",
    "Closed",
    "WebSocketChat",
    "accept",
    "frame_lines",
]

CLOSE_NORMAL = 1000  #: /quit, a refusal, the client left
CLOSE_GOING_AWAY = 1001  #: the server is shutting down
CLOSE_PROTOCOL_ERROR = 1002  #: broken frames
CLOSE_UNSUPPORTED_DATA = 1003  #: a binary message
CLOSE_INVALID_DATA = 1007  #: a text message that is not UTF-8
CLOSE_POLICY = 1008  #: evicted as too slow, or no answer to a ping


@attrs.frozen
class ChatData:
    """Bytes of the chat stream: the handshake or lines, each ending in ``\\n``."""

    data: bytes


@attrs.frozen
class Closed:
    """The connection is over: the peer closed it, or broke the protocol.

    ``code`` is what the peer sent, or the code to close with for a protocol error.
    Either way the caller ends with `WebSocketChat.close` (after any pending output).
    """

    code: int
    reason: str
    by_peer: bool


def accept(request: Request) -> tuple[bytes, WebSocketChat]:
    """Accept a WebSocket upgrade: the 101 response and the connection.

    Raises `HttpError` when the request is not a valid upgrade (a missing key, a
    version other than 13, ...).  No extension is negotiated: permessage-deflate
    would let a small frame inflate into a large message.
    """
    handshake = H11Handshake(wsproto.ConnectionType.SERVER)
    try:
        headers = [(k.encode("ascii"), v.encode("latin-1")) for k, v in request.headers]
        handshake.initiate_upgrade_connection(headers, request.target)
        for event in handshake.events():
            if isinstance(event, wse.Request):
                break
        else:
            raise HttpError(400, "bad WebSocket upgrade")
        response = handshake.send(wse.AcceptConnection())
    except wsproto.utilities.RemoteProtocolError as exc:
        hint = exc.event_hint
        status = hint.status_code if isinstance(hint, wse.RejectConnection) else 400
        extra = []
        if isinstance(hint, wse.RejectConnection):
            extra = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in hint.headers]
        raise HttpError(status, f"bad WebSocket upgrade: {exc}", extra) from None
    except (UnicodeError, ValueError) as exc:  # e.g. a Host that is not IDNA
        raise HttpError(400, f"bad WebSocket upgrade: {exc}") from None
    connection = handshake.connection
    assert connection is not None
    return response, WebSocketChat(connection, request.trailing)


class WebSocketChat:
    """One accepted WebSocket connection, seen as a chat byte stream.

    `receive_data` the bytes read from the network (``None``: the network closed),
    then `next_event` until it returns None: `ChatData`, or `Closed` once.  Send
    `data_to_send` (pongs) after each call.  `frame_lines`, `ping` and `close` make
    outgoing bytes; `close` also answers the peer's close.
    """

    def __init__(self, connection: wsproto.connection.Connection, trailing: bytes = b"") -> None:
        self._ws = connection
        self._out = bytearray()
        self._in = bytearray()  # chat bytes decoded but not yet returned
        self._message_ends_nl = True  # the current message so far ends with "\n"
        self._message_empty = True
        self._closed: Closed | None = None
        self._reported = False
        if trailing:
            self.receive_data(trailing)

    @property
    def closed(self) -> bool:
        """True once the connection is over (reported or not yet)."""
        return self._closed is not None

    @property
    def may_send(self) -> bool:
        """Whether data frames may still be sent (no close frame sent yet)."""
        return self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING)

    def receive_data(self, data: bytes | None) -> None:
        if self._closed is not None:
            return  # after the close, whatever else arrives is ignored
        if data is None:
            self._ws.receive_data(None)
        else:
            self._ws.receive_data(data)
        self._pump()

    def _pump(self) -> None:
        for event in self._ws.events():
            if isinstance(event, wse.TextMessage):
                self._text(event)
            elif isinstance(event, wse.BytesMessage):
                self._fail(CLOSE_UNSUPPORTED_DATA, "binary messages are not supported; send text")
                return
            elif isinstance(event, wse.Ping):
                self._out += self._ws.send(event.response())
            elif isinstance(event, wse.CloseConnection):
                self._on_close(event)
                return
            # Pong: liveness is any byte received, which the caller sees itself.

    def _text(self, event: wse.TextMessage) -> None:
        data = event.data
        if data:
            self._in += data.encode("utf-8")
            self._message_ends_nl = data.endswith("\n")
            self._message_empty = False
        if event.message_finished:
            if self._message_empty or not self._message_ends_nl:
                self._in += b"\n"
            self._message_ends_nl = True
            self._message_empty = True

    def _on_close(self, event: wse.CloseConnection) -> None:
        reason = event.reason or ""
        state = self._ws.state
        if state is ConnectionState.REMOTE_CLOSING:
            # The peer closed; `close` answers it once what is pending has been sent.
            self._closed = Closed(event.code, reason, by_peer=True)
        elif state is ConnectionState.CLOSED:
            # The peer answered our close, or the network went away (1006).
            self._closed = Closed(event.code, reason or "connection lost", by_peer=True)
        else:
            # wsproto reports a protocol error as a CloseConnection while OPEN.
            self._fail(event.code, reason)

    def _fail(self, code: int, reason: str) -> None:
        # The caller sends `close(code)` after what is pending (nothing more is read).
        self._closed = Closed(code, reason, by_peer=False)

    def next_event(self) -> ChatData | Closed | None:
        if self._in:
            data = bytes(self._in)
            self._in.clear()
            return ChatData(data)
        if self._closed is not None and not self._reported:
            self._reported = True
            return self._closed
        return None

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def ping(self, payload: bytes = b"machat") -> bytes:
        if self._ws.state is not ConnectionState.OPEN:
            return b""
        return self._ws.send(wse.Ping(payload=payload))

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> bytes:
        """The close frame to send (once; b"" if one was sent already)."""
        if not self.may_send:
            return b""
        return self._ws.send(wse.CloseConnection(code=code, reason=reason or None))


def _header(length: int) -> bytes:
    if length < 126:
        return bytes((0x81, length))
    if length < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)


def frame_lines(data: bytes) -> bytes:
    """Server-to-client text frames, one per line of ``data``, each keeping its ``\\n``.

    ``data`` is UTF-8 the server wrote (whole lines; a last line without ``\\n`` is
    one message too).  Server frames are not masked (RFC 6455 5.1), so the frame
    of a line is the same for everyone: the caller can frame a room's message once
    for all its WebSocket members.  This is the one thing done without wsproto,
    which frames through a ``str`` and costs a decode per member.
    """
    if not data:
        return b""
    first_nl = data.find(b"\n")
    if first_nl == -1 or first_nl == len(data) - 1:
        return _header(len(data)) + data  # one line: the common case
    parts = []
    start = 0
    n = len(data)
    while start < n:
        nl = data.find(b"\n", start)
        end = n if nl == -1 else nl + 1
        parts.append(_header(end - start))
        parts.append(data[start:end])
        start = end
    return b"".join(parts)
