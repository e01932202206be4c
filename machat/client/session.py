"""One chat session over an already connected stream: the client's core.

`Session` is the core both front ends share. It sends the handshake, yields what the
server sends as typed events (`ServerLine`, `LineSkipped`, and last `ConnectionClosed`,
the end of the stream as an event) and takes typed commands (`SendLine`,
`EndInput`). A `ServerLine` carries the line made safe for a terminal by `sanitize`
and, in the JSON format, the event it decodes to.

`run_client` is the line front end: it prints every line as it comes and forwards
what the user types, line by line. (The full-screen front end is `machat.client.ui`.)
The line session ends when

- the server closes the connection: ``* connection closed by server`` is printed
  (unless the user was leaving anyway);
- the user quits (``/quit``, ``:quit``, ``exit``): the line is sent, since the
  server has these commands too, and we wait up to `CLOSE_GRACE` seconds for the
  server to close;
- the input ends: the last lines are sent, our side of the stream is half-closed
  when the stream allows it, and we wait up to `CLOSE_GRACE` seconds for the server
  to answer what is still in flight and close.

The exit code is 0, or 1 when the server refused us: its first line was an error
and it closed the connection.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable

import attrs
import trio

from machat.protocol import commands
from machat.protocol.client_events import ServerEvent, decode_server_line
from machat.protocol.errors import RemoteProtocolError
from machat.protocol.formatting import Format
from machat.protocol.framing import LineBuffer
from machat.protocol.handshake import Handshake, encode_handshake

__all__ = [
    "CLOSED_NOTICE",
    "CLOSE_GRACE",
    "MAX_INPUT_LINE",
    "Command",
    "ConnectionClosed",
    "EndInput",
    "LineSkipped",
    "SendLine",
    "ServerLine",
    "Session",
    "SessionEvent",
    "is_quit",
    "run_client",
    "sanitize",
]

logger = logging.getLogger(__name__)

CLOSE_GRACE = 2.0
"""Seconds to wait for the server to close after we quit or our input ended."""

MAX_INPUT_LINE = 64 * 1024
"""Longest line we read from the user; the server applies its own, smaller limit."""

MAX_SERVER_LINE = 64 * 1024
"""Longest line we accept from the server (history replies can be long)."""

CLOSED_NOTICE = "* connection closed by server"

_ESCAPE_SEQUENCE = re.compile(
    r"""
      \x1b \[ [0-?]* [ -/]* [@-~]?            # CSI: ESC [ params intermediates final
    | \x1b [\]PX^_] .*? (?: \x07 | \x1b\\ | $)  # OSC, DCS, SOS, PM, APC: up to BEL or ST
    | \x1b [ -/]* [0-~]?                      # any other escape
    """,
    re.VERBOSE,
)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")  # C0 but tab, DEL, C1


def sanitize(line: bytes) -> str:
    """Decode a line from the server so that it is safe to print to a terminal.

    Invalid UTF-8 becomes U+FFFD; escape sequences are removed whole, and every
    other control character (C0 except tab, DEL, C1) is dropped.
    """
    text = line.decode("utf-8", errors="replace")
    if text.isprintable():
        return text
    return _CONTROL.sub("", _ESCAPE_SEQUENCE.sub("", text))


def is_quit(line: bytes) -> bool:
    """Whether the user asked to leave: ``/quit [reason]``, ``:quit`` or ``exit``."""
    try:
        command = commands.parse_line(line.decode("utf-8", errors="replace"))
    except RemoteProtocolError:
        return False
    return isinstance(command, commands.Quit)


def _is_error_line(text: str) -> bool:
    if text.startswith("! ERROR"):
        return True
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            return False
        return isinstance(obj, dict) and obj.get("type") == "error"
    return False


@attrs.frozen
class ServerLine:
    """A line the server sent, without its newline.

    ``text`` is safe to print (`sanitize`); ``event`` is what it decodes to when the
    session speaks the JSON format, else None.
    """

    text: str
    event: ServerEvent | None = None


@attrs.frozen
class LineSkipped:
    """The server sent a line too long to accept; it was dropped."""

    reason: str


@attrs.frozen
class ConnectionClosed:
    """The server closed the connection (or it was lost): always the last event.

    ``refused``: the server's first line was an error, so it refused the handshake.
    """

    refused: bool


SessionEvent = ServerLine | LineSkipped | ConnectionClosed


@attrs.frozen
class SendLine:
    """Send one line as typed (a command or chat text), without its newline."""

    line: bytes


@attrs.frozen
class EndInput:
    """The user has nothing more to say: half-close our side when the stream allows it."""


Command = SendLine | EndInput


class Session:
    """The client's end of one connection, without a terminal.

    One task calls `receive` until it returns `ConnectionClosed`; any task may call
    `send` (one at a time). `send` raises `trio.BrokenResourceError` when the server
    has gone; the receiving side then sees `ConnectionClosed`. Neither closes the stream.
    """

    def __init__(self, stream: trio.abc.Stream, handshake: Handshake) -> None:
        self._stream = stream
        self.handshake = handshake
        self._lines = LineBuffer(MAX_SERVER_LINE)
        self._first_line: str | None = None
        self._eof = False  # the stream ended; the buffered lines come first
        self._closed: ConnectionClosed | None = None

    async def send_handshake(self) -> None:
        """Introduce ourselves; a server that is already gone is noticed by `receive`."""
        try:
            await self._stream.send_all(encode_handshake(self.handshake))
        except trio.BrokenResourceError:
            logger.debug("sending the handshake failed", exc_info=True)

    def _next_buffered(self) -> SessionEvent | None:
        try:
            line = self._lines.next_line()
        except RemoteProtocolError as exc:
            return LineSkipped(exc.message)
        if line is None:
            return None
        text = sanitize(line)  # JSON escapes control characters, so this keeps it intact
        if self._first_line is None:
            self._first_line = text
        event = decode_server_line(text) if self.handshake.format is Format.JSON else None
        return ServerLine(text, event)

    async def receive(self) -> SessionEvent:
        """The next event from the server; `ConnectionClosed` at the end, and after it."""
        while self._closed is None:
            event = self._next_buffered()
            if event is not None:
                await trio.lowlevel.checkpoint()
                return event
            if self._eof:
                refused = self._first_line is not None and _is_error_line(self._first_line)
                self._closed = ConnectionClosed(refused=refused)
                break
            try:
                data = await self._stream.receive_some()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                logger.debug("connection lost", exc_info=True)
                data = b""
            if data:
                self._lines.feed(data)
            else:
                self._lines.feed_eof()
                self._eof = True
        await trio.lowlevel.checkpoint()
        return self._closed

    async def send(self, command: Command) -> None:
        """Carry out ``command``; raises `trio.BrokenResourceError` if the server is gone."""
        if isinstance(command, SendLine):
            await self._stream.send_all(command.line + b"\n")
        elif isinstance(self._stream, trio.abc.HalfCloseableStream):
            await self._stream.send_eof()
        else:
            await trio.lowlevel.checkpoint()


async def _print_events(session: Session, out: Callable[[str], None]) -> ConnectionClosed:
    while True:
        event = await session.receive()
        if isinstance(event, ServerLine):
            out(event.text)
        elif isinstance(event, LineSkipped):
            out(f"* skipped a line from the server: {event.reason}")
        else:
            return event


class _LineFrontEnd:
    """Prints the session's lines and sends what is typed on ``stdin``."""

    def __init__(self, session: Session, out: Callable[[str], None]) -> None:
        self._session = session
        self._out = out
        self._leaving = False  # the user quit or the input ended

    async def run(self, stdin: trio.abc.ReceiveStream) -> int:
        await self._session.send_handshake()
        closed: ConnectionClosed | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_loop, stdin, nursery.cancel_scope)
            closed = await _print_events(self._session, self._out)
            nursery.cancel_scope.cancel()
        if not self._leaving:
            self._out(CLOSED_NOTICE)
        return 1 if closed is not None and closed.refused else 0

    async def _send_loop(self, stdin: trio.abc.ReceiveStream, cancel: trio.CancelScope) -> None:
        """Send what the user types; when done, give the server a moment to close."""
        try:
            await self._send_input(stdin)
        except trio.BrokenResourceError:
            logger.debug("sending failed: the server went away", exc_info=True)
        # The receiver ends the session when the server closes; if it does not
        # close in time, we end it here.
        await trio.sleep(CLOSE_GRACE)
        cancel.cancel()

    async def _send_input(self, stdin: trio.abc.ReceiveStream) -> None:
        lines = LineBuffer(MAX_INPUT_LINE)
        while True:
            try:
                data = await stdin.receive_some()
            except trio.BrokenResourceError:  # e.g. the terminal hung up
                logger.debug("reading input failed; treating it as its end", exc_info=True)
                data = b""
            if data:
                lines.feed(data)
            else:
                lines.feed_eof()
            while True:
                try:
                    line = lines.next_line()
                except RemoteProtocolError:
                    self._out(f"* line too long (over {MAX_INPUT_LINE} bytes), not sent")
                    continue
                if line is None:
                    break
                await self._session.send(SendLine(line))
                if is_quit(line):
                    self._leaving = True
                    return
            if not data:
                self._leaving = True
                await self._session.send(EndInput())
                return


async def run_client(
    stream: trio.abc.Stream,
    handshake: Handshake,
    stdin: trio.abc.ReceiveStream,
    out: Callable[[str], None],
) -> int:
    """Chat over ``stream`` until the server closes, the user quits or ``stdin`` ends.

    ``out`` is called with every line to show, without its newline, made safe by
    `sanitize` (JSON lines too: JSON escapes control characters, so a line from an
    honest server is unchanged). Returns the exit code: 0, or 1 if the server refused
    the handshake. Neither stream is closed.
    """
    return await _LineFrontEnd(Session(stream, handshake), out).run(stdin)
