"""One chat session over an already connected stream, without a terminal.

`run_client` sends the handshake, then runs two tasks until one of them ends the
session: the receiver prints every line the server sends (made safe for a terminal
by `sanitize`), and the sender forwards what the user types, line by line.

The session ends when

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

import trio

from machat.protocol import commands
from machat.protocol.errors import RemoteProtocolError
from machat.protocol.framing import LineBuffer
from machat.protocol.handshake import Handshake, encode_handshake

__all__ = [
    "CLOSED_NOTICE",
    "CLOSE_GRACE",
    "MAX_INPUT_LINE",
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


class _Session:
    def __init__(self, stream: trio.abc.Stream, out: Callable[[str], None]) -> None:
        self._stream = stream
        self._out = out
        self._leaving = False  # the user quit or the input ended
        self._first_line: str | None = None
        self._server_closed = False

    @property
    def exit_code(self) -> int:
        refused = self._first_line is not None and _is_error_line(self._first_line)
        return 1 if refused and self._server_closed else 0

    def _print(self, line: bytes) -> None:
        text = sanitize(line)  # JSON escapes control characters, so this keeps it intact
        if self._first_line is None:
            self._first_line = text
        self._out(text)

    async def run(self, handshake: Handshake, stdin: trio.abc.ReceiveStream) -> int:
        try:
            await self._stream.send_all(encode_handshake(handshake))
        except trio.BrokenResourceError:
            logger.debug("sending the handshake failed", exc_info=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_loop, stdin, nursery.cancel_scope)
            await self._receive_loop()
            nursery.cancel_scope.cancel()
        if not self._leaving:
            self._out(CLOSED_NOTICE)
        return self.exit_code

    async def _receive_loop(self) -> None:
        """Print what the server sends until it closes the connection."""
        lines = LineBuffer(MAX_SERVER_LINE)
        while True:
            try:
                data = await self._stream.receive_some()
            except trio.BrokenResourceError:
                logger.debug("connection lost", exc_info=True)
                data = b""
            if not data:
                lines.feed_eof()
            else:
                lines.feed(data)
            while True:
                try:
                    line = lines.next_line()
                except RemoteProtocolError as exc:
                    self._out(f"* skipped a line from the server: {exc.message}")
                    continue
                if line is None:
                    break
                self._print(line)
            if not data:
                self._server_closed = True
                return

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
                await self._stream.send_all(line + b"\n")
                if is_quit(line):
                    self._leaving = True
                    return
            if not data:
                self._leaving = True
                if isinstance(self._stream, trio.abc.HalfCloseableStream):
                    await self._stream.send_eof()
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
    return await _Session(stream, out).run(handshake, stdin)
