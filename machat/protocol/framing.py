"""Byte-stream framing for machat: the JSON handshake, then newline-delimited lines.

Sans-IO, in the manner of h11's receive buffer: `feed` bytes in, pull events out
with `next_event`, which returns ``None`` until a whole event is buffered.  Both
searches remember where they stopped, so hostile input costs O(n) overall, and
hard size caps bound memory.

The handshake is one JSON object and ends at its closing brace: MaChat's own
client sends no newline after it, so we never wait for one.  Exactly one newline
(``\\n`` or ``\\r\\n``) directly after the object is skipped; every later byte is
read as chat lines.
"""

from __future__ import annotations

import attrs

from .errors import ErrorCode, RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_HANDSHAKE",
    "DEFAULT_MAX_LINE",
    "Framer",
    "HandshakeReceived",
    "LineBuffer",
    "LineReceived",
    "decode_text",
]

DEFAULT_MAX_LINE = 4096
DEFAULT_MAX_HANDSHAKE = 4096

_WHITESPACE = b" \t\r\n"


@attrs.frozen
class HandshakeReceived:
    """The raw bytes of the handshake object, braces included."""

    data: bytes


@attrs.frozen
class LineReceived:
    """One line, without its ``\\n`` (and without a ``\\r`` before it)."""

    data: bytes


class LineBuffer:
    """Splits a byte stream into lines of at most ``max_line`` bytes.

    `next_line` returns the next complete line or ``None``.  A line longer than
    ``max_line`` raises `RemoteProtocolError` (LINE_TOO_LONG) once, as soon as the
    limit is passed, and is then discarded up to and including its newline, so the
    stream stays usable and the buffer never holds more than ``max_line`` bytes of
    an unfinished line.
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self._max_line = max_line
        self._data = bytearray()
        self._start = 0  # where the unconsumed data begins
        self._searched = 0  # bytes from _start already known to hold no newline
        self._discarding = False
        self._eof = False

    def __len__(self) -> int:
        return len(self._data) - self._start

    def feed(self, data: bytes | bytearray) -> None:
        if self._eof:
            raise RuntimeError("feed() after feed_eof()")
        self._data += data

    def feed_eof(self) -> None:
        """The peer closed its side: an unterminated last line is returned as is."""
        self._eof = True

    def _compact(self) -> None:
        if self._start > 65536 or self._start * 2 > len(self._data):
            del self._data[: self._start]
            self._start = 0

    def next_line(self) -> bytes | None:
        data = self._data
        while True:
            nl = data.find(b"\n", self._start + self._searched)
            if nl == -1:
                pending = len(data) - self._start
                if self._discarding:
                    self._start = len(data)
                    self._searched = 0
                    self._compact()
                    return None
                # Over the limit, unless the one extra byte is a \r that a \n may follow.
                if pending > self._max_line and not (
                    pending == self._max_line + 1 and data[-1] == 0x0D
                ):
                    self._discarding = True
                    self._start = len(data)
                    self._searched = 0
                    self._compact()
                    raise RemoteProtocolError(
                        ErrorCode.LINE_TOO_LONG,
                        f"line too long (limit {self._max_line} bytes); line discarded",
                    )
                self._searched = pending
                if self._eof and pending:
                    line = bytes(data[self._start :])
                    self._start = len(data)
                    self._searched = 0
                    self._compact()
                    return line.removesuffix(b"\r")
                self._compact()
                return None
            start = self._start
            self._start = nl + 1
            self._searched = 0
            if self._discarding:
                self._discarding = False
                continue
            end = nl - 1 if nl > start and data[nl - 1] == 0x0D else nl
            if end - start > self._max_line:
                self._compact()
                raise RemoteProtocolError(
                    ErrorCode.LINE_TOO_LONG,
                    f"line too long (limit {self._max_line} bytes); line discarded",
                )
            line = bytes(data[start:end])
            self._compact()
            return line

    def next_lines(self) -> list[bytes]:
        """Every complete line buffered, in order (``[]`` when there is none).

        The same lines, errors and limits as calling `next_line` until it returns
        None; a chunk of many short lines is split in one go.  Where a line breaks a
        rule (too long, or discarding one that was), it falls back to `next_line`,
        one line at a time, so that the error comes exactly where it did.
        """
        data = self._data
        start = self._start
        first = -1 if self._discarding else data.find(b"\n", start + self._searched)
        last = data.rfind(b"\n", first + 1) if first != -1 else -1
        if last != -1:  # two lines or more (one at a time costs less for one)
            block = bytes(data[start:last])
            lines = block.split(b"\n")
            if b"\r" in block:
                lines = [line.removesuffix(b"\r") for line in lines]
            if max(map(len, lines)) <= self._max_line:
                self._start = last + 1
                self._searched = 0
                self._compact()
                return lines
        line = self.next_line()
        return [] if line is None else [line]

    def take_rest(self) -> bytes:
        """Remove and return everything buffered but not yet returned."""
        rest = bytes(self._data[self._start :])
        self._data.clear()
        self._start = self._searched = 0
        return rest


class _HandshakeScanner:
    """Finds the end of one JSON object, incrementally, without parsing it."""

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._data = bytearray()
        self._pos = 0
        self._began = -1
        self._depth = 0
        self._in_string = False
        self._escape = False

    def feed(self, data: bytes | bytearray) -> None:
        self._data += data

    def scan(self) -> tuple[bytes, bytes] | None:
        """Return (object bytes, leftover bytes) once the object is complete."""
        data = self._data
        n = len(data)
        pos = self._pos
        if self._began < 0:
            while pos < n and data[pos] in _WHITESPACE:
                pos += 1
            if pos == n:
                self._pos = pos
                self._check_size(pos)
                return None
            if data[pos] != 0x7B:  # "{"
                raise RemoteProtocolError(
                    ErrorCode.INVALID_HANDSHAKE,
                    "invalid handshake: expected a JSON object like "
                    '{"name": "Mina", "room": "dev"}',
                )
            self._began = pos
        depth, in_string, escape = self._depth, self._in_string, self._escape
        limit = min(n, self._began + self._max_size)
        while pos < limit:
            c = data[pos]
            pos += 1
            if in_string:
                if escape:
                    escape = False
                elif c == 0x5C:  # backslash
                    escape = True
                elif c == 0x22:  # quote
                    in_string = False
            elif c == 0x22:
                in_string = True
            elif c == 0x7B or c == 0x5B:  # { [
                depth += 1
            elif c == 0x7D or c == 0x5D:  # } ]
                depth -= 1
                if depth == 0:
                    return bytes(data[self._began : pos]), bytes(data[pos:])
        self._pos, self._depth, self._in_string, self._escape = pos, depth, in_string, escape
        self._check_size(pos - max(self._began, 0))
        return None

    def _check_size(self, size: int) -> None:
        if size >= self._max_size:
            raise RemoteProtocolError(
                ErrorCode.INVALID_HANDSHAKE,
                f"invalid handshake: larger than {self._max_size} bytes",
            )


class Framer:
    """The server's view of a client's byte stream: a handshake, then lines.

    Feed bytes with `feed`; call `next_event` until it returns ``None``.  The first
    event is always `HandshakeReceived`; all later ones are `LineReceived`.
    `RemoteProtocolError` from the handshake is fatal; LINE_TOO_LONG is not.
    """

    def __init__(
        self,
        max_line: int = DEFAULT_MAX_LINE,
        max_handshake: int = DEFAULT_MAX_HANDSHAKE,
    ) -> None:
        self._scanner: _HandshakeScanner | None = _HandshakeScanner(max_handshake)
        self._lines = LineBuffer(max_line)
        self._skip_newline = False
        self._pending = bytearray()  # bytes after the handshake, before newline-skip is decided
        self._eof = False

    @property
    def handshake_done(self) -> bool:
        return self._scanner is None

    @property
    def at_eof(self) -> bool:
        """True once `feed_eof` was called: no more events will come after ``None``."""
        return self._eof

    def feed(self, data: bytes | bytearray) -> None:
        if self._scanner is not None:
            self._scanner.feed(data)
        elif self._skip_newline:
            self._pending += data
        else:
            self._lines.feed(data)

    def feed_eof(self) -> None:
        self._eof = True
        if self._scanner is not None:
            return
        self._settle_newline(eof=True)
        self._lines.feed_eof()

    def _settle_newline(self, eof: bool = False) -> None:
        if not self._skip_newline:
            return
        p = self._pending
        if p[:1] == b"\n":
            skip = 1
        elif p[:2] == b"\r\n":
            skip = 2
        elif p == b"\r" and not eof:
            return  # wait to see whether "\n" follows
        else:
            skip = 0
        if not p and not eof:
            return
        self._skip_newline = False
        self._lines.feed(bytes(p[skip:]))
        self._pending = bytearray()

    def next_event(self) -> HandshakeReceived | LineReceived | None:
        if self._scanner is not None:
            found = self._scanner.scan()
            if found is None:
                return None
            raw, rest = found
            self._scanner = None
            self._skip_newline = True
            self._pending = bytearray(rest)
            self._settle_newline()
            return HandshakeReceived(raw)
        self._settle_newline()
        if self._skip_newline:
            return None
        line = self._lines.next_line()
        return None if line is None else LineReceived(line)

    def next_lines(self) -> list[bytes]:
        """After the handshake: every complete line buffered, as `LineBuffer.next_lines`.

        The bulk form of `next_event` for the reader's hot path (no event object per
        line); raises RuntimeError before the handshake has been returned.
        """
        if self._scanner is not None:
            raise RuntimeError("next_lines() before the handshake")
        self._settle_newline()
        if self._skip_newline:
            return []
        return self._lines.next_lines()


#: C0 controls but tab, DEL, and the C1 controls (U+009B is a one-character CSI).
_BAD_CHARS = frozenset(chr(c) for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x09)


def decode_text(data: bytes) -> str:
    """Decode one line of chat text: strict UTF-8, no control characters but tab.

    Raises `RemoteProtocolError` (INVALID_TEXT) otherwise, so that nobody can send
    terminal escape sequences to other people's screens.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError(
            ErrorCode.INVALID_TEXT, "invalid text: not valid UTF-8; line discarded"
        ) from None
    if not text.isprintable() and not _BAD_CHARS.isdisjoint(text):
        raise RemoteProtocolError(
            ErrorCode.INVALID_TEXT,
            "invalid text: control characters are not allowed; line discarded",
        )
    return text
