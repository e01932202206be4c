"""The terminal's ends: standard input as a trio stream, standard output as a writer.

On POSIX, standard input is read through `trio.lowlevel.FdStream` on a duplicate of
its file descriptor, so waiting for the user never blocks the event loop. That puts
the open file into non-blocking mode, which on a terminal is shared with standard
output; `terminal_writer` therefore copes with ``EAGAIN``. Closing the stream puts
the blocking mode back. Where FdStream is unavailable, a thread reads the lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import sys
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO, TextIO

import trio

__all__ = ["ThreadLineStream", "open_stdin", "terminal_writer"]

logger = logging.getLogger(__name__)


class ThreadLineStream(trio.abc.ReceiveStream):
    """Reads a binary file line by line in a worker thread (the fallback)."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        # abandon_on_cancel: a thread blocked in readline cannot be interrupted;
        # we leave it behind when the session ends.
        return await trio.to_thread.run_sync(self._file.readline, abandon_on_cancel=True)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class _EmptyStream(trio.abc.ReceiveStream):
    """There is no standard input at all: it ends at once."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return b""

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def _stdin_stream() -> trio.abc.ReceiveStream:
    stdin = sys.stdin
    if stdin is None:
        return _EmptyStream()
    if sys.platform != "win32":
        try:
            return trio.lowlevel.FdStream(os.dup(stdin.fileno()))
        except (OSError, ValueError):
            logger.debug("no FdStream for stdin; reading it in a thread", exc_info=True)
    return ThreadLineStream(stdin.buffer)


@contextlib.asynccontextmanager
async def open_stdin() -> AsyncIterator[trio.abc.ReceiveStream]:
    """Standard input as a `trio.abc.ReceiveStream`, closed (and restored) on exit."""
    stream = _stdin_stream()
    async with stream:
        yield stream


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])  # the terminal is busy: wait, briefly
            continue
        except InterruptedError:
            continue
        view = view[written:]


def terminal_writer(file: TextIO) -> Callable[[str], None]:
    """A function printing one line to ``file``, even if its fd is non-blocking.

    Characters the file's encoding cannot show are replaced, never an error.
    """
    encoding = getattr(file, "encoding", None) or "utf-8"
    try:
        fd: int | None = file.fileno()
    except (OSError, ValueError, AttributeError):
        fd = None

    def write(line: str) -> None:
        data = (line + "\n").encode(encoding, errors="replace")
        if fd is None:
            file.write(data.decode(encoding))
            file.flush()
            return
        file.flush()  # anything printed before us goes first
        _write_fd(fd, data)

    return write
