"""The human-readable transcript: one line per room event, like an IRC log.

::

    2026-11-21 14:03:07 [dev] <Mina> hello
    2026-11-21 14:03:07 [dev] * Mina joined
    2026-11-21 14:03:09 [dev] * Mina left (quit)
    2026-11-21 14:03:10 [dev] * Mina is now known as Mia

Times are UTC.  The event methods only append to a pending buffer; the writer task
(`Transcript.run`) writes what is pending once per ``batch_interval`` on a worker
thread.  A thread costs some tens of microseconds per batch (at most ten batches a
second by default), while a write done on the event loop would freeze every client
for as long as the disk stalls (a full or network file system), so the thread wins.

The file is opened unbuffered in append mode, so every batch is one ``write`` and
nothing lingers in a user-space buffer; a failed or partial write keeps exactly the
unwritten bytes for the next try.  `reopen` (on SIGHUP, after logrotate renamed the
file) makes the writer close the file and open ``path`` again before its next write.
"""

from __future__ import annotations

import logging
import os
import time
from typing import BinaryIO

import trio

from ..protocol import events as ev
from ..protocol.formatting import format_time

__all__ = ["Transcript"]

logger = logging.getLogger("machat.server.transcript")

# Control characters would break the one-line-per-event layout or a reader's terminal.
_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\t"})


def _clean(text: str) -> str:
    return text.translate(_ESCAPES)


class Transcript:
    """An append-only log file of room events; see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        batch_interval: float = 0.1,
        max_pending: int = 16 << 20,
        retry_interval: float = 1.0,
    ) -> None:
        self.path = os.fspath(path)
        self.batch_interval = batch_interval
        self.max_pending = max_pending  # bytes
        self.retry_interval = retry_interval
        self.lines = 0  # lines queued so far
        self.failures = 0
        self.dropped = 0  # bytes given up on because too much was pending
        self._file: BinaryIO | None = None
        self._pending = bytearray()
        self._reopen = False
        self._wake = trio.Event()
        self._write_lock = trio.Lock()

    def __repr__(self) -> str:
        return f"<Transcript {self.path!r} pending={len(self._pending)}>"

    def open(self) -> None:
        """Open (create) the file for appending; raises OSError if it cannot."""
        self._file = open(self.path, "ab", buffering=0)

    def close(self) -> None:
        """Write what is still pending (synchronously) and close; idempotent."""
        if self._pending:
            data = bytes(self._pending)
            try:
                self._write(data, self._reopen)
            except _WriteError as exc:
                logger.error(
                    "%s: transcript lost %d bytes",
                    self.path,
                    len(data) - exc.written,
                    exc_info=exc.__cause__,
                )
            self._pending.clear()
            self._reopen = False
        if self._file is not None:
            self._file.close()
            self._file = None

    def reopen(self) -> None:
        """Close and open ``path`` again before the next write (SIGHUP; any time)."""
        self._reopen = True
        self._wake.set()

    # -- events -----------------------------------------------------------------------

    def message(self, msg: ev.Message) -> None:
        self._add(msg.ts, msg.room, f"<{msg.sender}> {msg.text}")

    def join(self, room: str, name: str, *, ts: float | None = None) -> None:
        self._add(ts, room, f"* {name} joined")

    def leave(self, room: str, name: str, reason: str = "", *, ts: float | None = None) -> None:
        suffix = f" ({reason})" if reason else ""
        self._add(ts, room, f"* {name} left{suffix}")

    def nick(self, room: str | None, old: str, new: str, *, ts: float | None = None) -> None:
        """A rename; ``room`` None for someone in no room (the line has no ``[room]``)."""
        self._add(ts, room, f"* {old} is now known as {new}")

    def notice(self, room: str | None, text: str, *, ts: float | None = None) -> None:
        """Anything else worth a line: a moderation act, say (``room`` None: no ``[room]``)."""
        self._add(ts, room, f"* {text}")

    def _add(self, ts: float | None, room: str | None, text: str) -> None:
        where = f"[{room}] " if room is not None else ""
        line = _clean(f"{where}{text}")
        when = format_time(time.time() if ts is None else ts)
        self._pending += f"{when} {line}\n".encode("utf-8", "backslashreplace")
        self.lines += 1
        if len(self._pending) > self.max_pending:
            self._drop()
        self._wake.set()

    def _drop(self) -> None:
        """Drop the oldest whole lines beyond ``max_pending`` bytes."""
        excess = len(self._pending) - self.max_pending
        cut = self._pending.find(b"\n", excess - 1) + 1 or len(self._pending)
        if not self.dropped:
            logger.error(
                "%s: more than %d bytes pending; dropping the oldest lines",
                self.path,
                self.max_pending,
            )
        self.dropped += cut
        del self._pending[:cut]

    @property
    def pending(self) -> int:
        """Bytes waiting to be written."""
        return len(self._pending)

    # -- writing ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer; on cancellation it writes everything pending, then returns."""
        task_status.started()
        try:
            while True:
                if not self._pending and not self._reopen:
                    self._wake = trio.Event()
                    await self._wake.wait()
                await trio.sleep(self.batch_interval)
                if not await self.flush():
                    await trio.sleep(self.retry_interval)
        finally:
            with trio.CancelScope(shield=True):
                await self.flush()

    async def flush(self) -> bool:
        """Write everything pending now (and reopen if asked); False if that failed."""
        async with self._write_lock:
            if not self._pending and not self._reopen:
                return True
            data = bytes(self._pending)
            self._pending.clear()
            reopen, self._reopen = self._reopen, False
            try:
                await trio.to_thread.run_sync(self._write, data, reopen)
            except _WriteError as exc:
                self.failures += 1
                logger.error(
                    "%s: cannot write the transcript; will retry", self.path, exc_info=exc.__cause__
                )
                self._pending[:0] = data[exc.written :]
                self._reopen = self._reopen or exc.reopen
                if len(self._pending) > self.max_pending:
                    self._drop()
                return False
            return True

    def _write(self, data: bytes, reopen: bool) -> None:
        """On a worker thread: reopen if asked, then write all of ``data``."""
        written = 0
        try:
            if reopen or self._file is None:
                if self._file is not None:
                    file, self._file = self._file, None
                    file.close()
                self._file = open(self.path, "ab", buffering=0)
            view = memoryview(data)
            while written < len(data):
                count = self._file.write(view[written:])
                if not count:
                    raise OSError(f"write returned {count!r}")
                written += count
        except OSError as exc:
            raise _WriteError(written, self._file is None) from exc


class _WriteError(Exception):
    def __init__(self, written: int, reopen: bool) -> None:
        super().__init__(written, reopen)
        self.written = written
        self.reopen = reopen
