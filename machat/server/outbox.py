"""A member's bounded outbox: byte chunks waiting for the connection's writer.

Delivery is synchronous (`put_nowait`): whoever delivers never waits for a slow
peer.  The single writer task takes everything pending at once (`take`) and sends
it with one ``send_all``, which is what makes fan-out cheap.  Having one taker, the
outbox parks it with trio's low-level primitives instead of a ParkingLot.  When the pending
bytes pass the limit the outbox overflows: what was pending is dropped, the
outbox closes, and `overflowed` tells the owner to evict the member.
"""

from __future__ import annotations

import trio

__all__ = ["Outbox"]


class Outbox:
    __slots__ = ("_chunks", "_closed", "_limit", "_size", "_waiter", "overflowed")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._closed = False
        self._waiter: trio.lowlevel.Task | None = None  # the writer, parked in take()
        self.overflowed = False

    @property
    def pending_bytes(self) -> int:
        return self._size

    def put_nowait(self, data: bytes) -> bool:
        """Queue ``data``; False if the outbox is closed or has just overflowed."""
        if self._closed:
            return False
        self._chunks.append(data)
        self._size += len(data)
        if self._size > self._limit:
            self._chunks.clear()
            self._size = 0
            self.overflowed = True
            self._closed = True
            self._wake()
            return False
        if self._waiter is not None:
            self._wake()
        return True

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)

    def close(self, last: bytes = b"") -> None:
        """No more data will be accepted; ``last`` is queued first (even past the limit)."""
        if self._closed:
            return
        if last:
            self._chunks.append(last)
            self._size += len(last)
        self._closed = True
        self._wake()

    def replace_and_close(self, last: bytes) -> None:
        """Drop everything pending, queue ``last`` and close (used on eviction)."""
        self._chunks = [last] if last else []
        self._size = len(last)
        self._closed = True
        self._wake()

    def take_nowait(self) -> bytes:
        """Return and remove everything pending (b"" if nothing is)."""
        chunks = self._chunks
        self._chunks = []
        self._size = 0
        return b"".join(chunks)

    async def take(self) -> bytes:
        """Wait for pending data and return all of it; b"" once closed and drained."""
        while not self._chunks:
            if self._closed:
                return b""
            if self._waiter is not None:
                raise trio.BusyResourceError("another task is already taking from this outbox")
            self._waiter = trio.lowlevel.current_task()

            def abort(_: object) -> trio.lowlevel.Abort:
                self._waiter = None
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        chunks = self._chunks
        self._chunks = []
        self._size = 0
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
