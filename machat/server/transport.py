"""The transport seam: what a connection reads from, and what a room writes to.

A connection is served the same way whatever carries it (`machat.server.connection`);
only two small things differ per transport:

- the **receive side**, `Transport.receive_some`, yields chunks of the chat byte
  stream: the JSON handshake, then ``\\n``-terminated lines (a WebSocket transport
  turns each message into such a line);
- the **sender**, `Sender.send_nowait`, takes bytes for the peer and never awaits,
  so a room's fan-out can hand the same bytes object to every member in one
  synchronous pass.  Its backlog is bounded; past the bound it overflows and the
  member is evicted.

Two senders exist:

- `SocketSender` (plain TCP) writes straight to the non-blocking socket from the
  fan-out pass.  Only when the kernel's buffer is full does it keep a backlog and
  start a drainer task, which waits with `trio.lowlevel.wait_writable` until the
  backlog is gone and then ends.  An idle or keeping-up member has no task at all.
- `StreamSender` (TLS, in-memory streams, anything with ``send_all``) queues into
  an `Outbox` that one writer task empties with one ``send_all`` per wake-up.

A sender's life, said once (`SenderState`): OPEN accepts data; CLOSING accepts no
more and flushes what it holds; CLOSED is done (flushed, evicted and flushed,
overflowed, or broken).
"""

from __future__ import annotations

import enum
import errno
import os
import socket
from collections.abc import Callable
from typing import Protocol

import attrs
import trio

from .outbox import Outbox

__all__ = [
    "RECEIVE_SIZE",
    "TRANSPORT_ERRORS",
    "Peer",
    "Sender",
    "SenderState",
    "SocketSender",
    "SocketTransport",
    "StreamSender",
    "StreamTransport",
    "Transport",
    "enable_keepalive",
    "peer_of_stream",
    "transport_for_stream",
]

RECEIVE_SIZE = 65536
#: How long closing a stream may wait for the peer (a TLS close_notify).
CLOSE_TIMEOUT = 1.0
#: Transport failures: the peer went away or the TLS layer broke.
TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)


@attrs.frozen
class Peer:
    """Who is on the other end: ``ip`` keys the per-address caps, ``label`` is for logs."""

    ip: str
    label: str

    @classmethod
    def from_sockaddr(cls, sockaddr: object) -> Peer:
        if not isinstance(sockaddr, tuple) or len(sockaddr) < 2:
            return cls("?", "?")
        host, port = str(sockaddr[0]), sockaddr[1]
        return cls(host, f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


MEMORY_PEER = Peer("memory", "memory")


class Sender(Protocol):
    """A member's output: bytes in, never awaiting, with a bounded backlog."""

    @property
    def overflowed(self) -> bool:
        """True once the backlog passed its limit (the member must be evicted)."""
        ...

    @property
    def pending_bytes(self) -> int: ...

    def send_nowait(self, data: bytes) -> bool:
        """Queue or write ``data``; False if closed, or if this call overflowed it."""
        ...

    def close(self, last: bytes = b"") -> None:
        """Accept no more; flush what is pending, then ``last`` (even past the limit)."""
        ...

    def evict(self, last: bytes) -> None:
        """Drop the backlog, flush only ``last`` (after any line half written), close."""
        ...

    async def wait_flushed(self) -> None:
        """Wait until closed and everything is written, or the transport broke."""
        ...


class Transport(Protocol):
    """One client connection, whatever carries it."""

    @property
    def peer(self) -> Peer: ...

    async def receive_some(self) -> bytes:
        """The next chunk of the chat byte stream; b"" at the end of input.

        Raises `trio.BrokenResourceError` if the transport broke.
        """
        ...

    def open_sender(
        self, limit: int, nursery: trio.Nursery, on_closed: Callable[[], None]
    ) -> Sender:
        """The connection's sender; its tasks, if any, run in ``nursery`` (which
        outlives the connection: `aclose` stops them).

        ``on_closed`` is called (synchronously, once) when the sender is done: it
        has flushed everything after `Sender.close` or `Sender.evict`, or writing
        failed.  The connection then has nothing left to do.
        """
        ...

    async def aclose(self) -> None:
        """Close, politely but within a bound."""
        ...


class SenderState(enum.Enum):
    #: Accepting data.
    OPEN = "open"
    #: No more data; what is pending is being flushed.
    CLOSING = "closing"
    #: Done: flushed, overflowed or broken.  Nothing more is written.
    CLOSED = "closed"


# -- plain TCP: write from the fan-out, drain only when the kernel is full ------------


class SocketSender:
    """Writes straight to a non-blocking socket; a drainer task only under backpressure."""

    __slots__ = (
        "_backlog",
        "_drained",
        "_draining",
        "_fd",
        "_limit",
        "_nursery",
        "_on_closed",
        "_partial",
        "_size",
        "overflowed",
        "state",
    )

    def __init__(
        self, fd: int, limit: int, nursery: trio.Nursery, on_closed: Callable[[], None]
    ) -> None:
        self._fd = fd
        self._limit = limit
        self._nursery = nursery
        self._on_closed = on_closed
        self._backlog: list[bytes] = []  # what the kernel has not taken yet
        self._draining = False  # a drainer task is running
        self._size = 0
        self._partial = False  # the backlog's first chunk is the rest of a half-written one
        self._drained: trio.Event | None = None  # set when a closing sender has flushed
        self.overflowed = False
        self.state = SenderState.OPEN

    @property
    def pending_bytes(self) -> int:
        return self._size

    def send_nowait(self, data: bytes) -> bool:
        if self.state is not SenderState.OPEN:
            return False
        if self._draining:
            self._backlog.append(data)
            self._size += len(data)
            if self._size > self._limit:
                self._overflow()
                return False
            return True
        # `_write_or_queue`, inlined: this runs once per member per pass.
        try:
            written = os.write(self._fd, data)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            self._broken(exc)
            return False
        if written < len(data):
            self._queue_rest(data, written)
        return True

    def _write(self, data: bytes) -> int | None:
        """Write what the kernel takes now: the count (0 if none), None if broken."""
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            self._broken(exc)
            return None

    def _write_or_queue(self, data: bytes) -> None:
        """Write ``data`` now; whatever the kernel does not take goes to a new backlog."""
        written = self._write(data)
        if written is not None and written < len(data):
            self._queue_rest(data, written)

    def _queue_rest(self, data: bytes, written: int) -> None:
        """What the kernel did not take of ``data`` starts a backlog and its drainer."""
        self._backlog.append(data[written:])
        self._size += len(data) - written
        self._partial = written > 0
        if not self._draining:
            self._draining = True
            self._nursery.start_soon(self._drain)

    def _overflow(self) -> None:
        self.overflowed = True
        self._keep_partial_only()
        self.state = SenderState.CLOSED

    def _keep_partial_only(self) -> None:
        """Drop the backlog but the rest of a half-written chunk (a line is never cut)."""
        if self._partial and self._backlog:
            del self._backlog[1:]
            self._size = len(self._backlog[0])
        else:
            self._backlog.clear()
            self._size = 0

    def _finish(self, last: bytes) -> None:
        if last:
            if self._draining:
                self._backlog.append(last)
                self._size += len(last)
            else:
                self._write_or_queue(last)
        if self.state is SenderState.CLOSED:  # broken while writing
            return
        if self._backlog:
            self.state = SenderState.CLOSING
        else:
            self.state = SenderState.CLOSED
            self._set_drained()

    def close(self, last: bytes = b"") -> None:
        if self.state is not SenderState.OPEN:
            return
        self._finish(last)

    def evict(self, last: bytes) -> None:
        if self.state is SenderState.CLOSED and not self.overflowed:
            return
        self._keep_partial_only()
        self.state = SenderState.OPEN  # so that _finish may queue ``last``
        self._finish(last)

    async def wait_flushed(self) -> None:
        if self._drained is None:
            self._drained = trio.Event()
        await self._drained.wait()

    def _set_drained(self) -> None:
        """Closed and flushed (or broken): wake `wait_flushed`, tell the owner once."""
        if self._drained is None:
            self._drained = trio.Event()
        if not self._drained.is_set():
            self._drained.set()
            self._on_closed()

    def _broken(self, exc: BaseException | None = None) -> None:
        self._backlog.clear()
        self._size = 0
        self.overflowed = False
        self.state = SenderState.CLOSED
        self._set_drained()

    async def _drain(self) -> None:
        """Write the backlog as the kernel takes it, then end."""
        try:
            await self._drain_backlog()
        finally:
            self._draining = False
        if self.state is SenderState.CLOSING:
            self.state = SenderState.CLOSED
        if self.state is SenderState.CLOSED:
            self._set_drained()

    async def _drain_backlog(self) -> None:
        try:
            while self._backlog:
                await trio.lowlevel.wait_writable(self._fd)
                backlog = self._backlog
                data = backlog[0] if len(backlog) == 1 else b"".join(backlog)
                written = self._write(data)
                if written is None:
                    return
                rest = data[written:]
                if rest:
                    self._backlog = [rest]
                    self._size = len(rest)
                    self._partial = written > 0 or self._partial
                else:
                    self._backlog = []
                    self._size = 0
                    self._partial = False
        except trio.ClosedResourceError:  # the connection closed the socket
            self._broken()


class SocketTransport:
    """A plain TCP connection, read and written without trio's stream layer.

    Reading waits for readability first and then reads once: under chat load a
    socket is usually empty when its reader comes back, so trying first would cost
    a failed system call per line.  It is written out here rather than shared with
    `machat.cluster.resp`'s: an idle connection holds its reader's chain of
    coroutines, and one more (a helper both call) measured 0.2 KiB more per idle
    connection (docs/DESIGN.md says what an idle connection holds).
    """

    __slots__ = ("_fd", "_prefix", "_stream", "peer")

    def __init__(self, stream: trio.SocketStream, peer: Peer, prefix: bytes = b"") -> None:
        self._stream = stream
        self._fd = stream.socket.fileno()
        self._prefix = prefix
        self.peer = peer

    async def receive_some(self) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix, b""
            await trio.lowlevel.checkpoint()
            return data
        fd = self._fd
        while True:
            try:
                await trio.lowlevel.wait_readable(fd)
            except trio.ClosedResourceError:
                raise trio.BrokenResourceError("connection closed") from None
            try:
                return os.read(fd, RECEIVE_SIZE)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno in (errno.ECONNRESET, errno.ETIMEDOUT, errno.EPIPE):
                    raise trio.BrokenResourceError(str(exc)) from None
                raise trio.BrokenResourceError(repr(exc)) from exc

    def open_sender(
        self, limit: int, nursery: trio.Nursery, on_closed: Callable[[], None]
    ) -> SocketSender:
        return SocketSender(self._fd, limit, nursery, on_closed)

    async def aclose(self) -> None:
        await close_stream(self._stream)


# -- any trio stream: a writer task ----------------------------------------------------


class _SendsAll(Protocol):
    async def send_all(self, data: bytes) -> None: ...


class StreamSender:
    """An `Outbox` emptied by one writer task with one ``send_all`` per wake-up.

    The writer runs in a nursery that outlives the connection, so it has a cancel
    scope of its own: `StreamTransport.aclose` stops it before closing the stream.
    """

    __slots__ = ("_done", "_on_closed", "_scope", "_stream", "outbox")

    def __init__(
        self,
        stream: _SendsAll,
        limit: int,
        nursery: trio.Nursery,
        on_closed: Callable[[], None],
    ) -> None:
        self._stream = stream
        self._on_closed = on_closed
        self.outbox = Outbox(limit)
        self._done = trio.Event()
        self._scope = trio.CancelScope()
        nursery.start_soon(self._write)

    @property
    def overflowed(self) -> bool:
        return self.outbox.overflowed

    @property
    def pending_bytes(self) -> int:
        return self.outbox.pending_bytes

    def send_nowait(self, data: bytes) -> bool:
        return self.outbox.put_nowait(data)

    def close(self, last: bytes = b"") -> None:
        self.outbox.close(last)

    def evict(self, last: bytes) -> None:
        self.outbox.replace_and_close(last)

    async def wait_flushed(self) -> None:
        await self._done.wait()

    async def _write(self) -> None:
        try:
            with self._scope:
                while data := await self.outbox.take():
                    await self._stream.send_all(data)
        except TRANSPORT_ERRORS:
            self.outbox.replace_and_close(b"")
        finally:
            self._done.set()
            self._on_closed()

    async def stop(self) -> None:
        """Stop the writer now, whatever is pending, and wait until it has."""
        self._scope.cancel()
        with trio.CancelScope(shield=True):
            await self._done.wait()


class StreamTransport:
    """Any trio stream: TLS, or memory streams in tests."""

    __slots__ = ("_prefix", "_sender", "_stream", "peer")

    def __init__(self, stream: trio.abc.Stream, peer: Peer, prefix: bytes = b"") -> None:
        self._stream = stream
        self._prefix = prefix
        self._sender: StreamSender | None = None
        self.peer = peer

    async def receive_some(self) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix, b""
            await trio.lowlevel.checkpoint()
            return data
        try:
            return bytes(await self._stream.receive_some(RECEIVE_SIZE))
        except trio.ClosedResourceError:
            raise trio.BrokenResourceError("connection closed") from None

    def open_sender(
        self, limit: int, nursery: trio.Nursery, on_closed: Callable[[], None]
    ) -> StreamSender:
        self._sender = StreamSender(self._stream, limit, nursery, on_closed)
        return self._sender

    async def aclose(self) -> None:
        if self._sender is not None:
            await self._sender.stop()
        await close_stream(self._stream)


# -- helpers ------------------------------------------------------------------------


def _socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return getattr(stream, "socket", None)


def peer_of_stream(stream: trio.abc.Stream) -> Peer:
    """The peer of a socket stream (TLS or not); `MEMORY_PEER` for in-process streams."""
    sock = _socket_of(stream)
    if sock is None:
        return MEMORY_PEER
    try:
        return Peer.from_sockaddr(sock.getpeername())
    except (OSError, ValueError):
        return Peer("?", "?")


def enable_keepalive(stream: trio.abc.Stream) -> None:
    """Let the kernel notice a peer that vanished without a word (a half-open socket)."""
    sock = _socket_of(stream)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 15)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4)
    except OSError:  # not every platform or socket type has these
        pass


def transport_for_stream(
    stream: trio.abc.Stream, prefix: bytes = b"", peer: Peer | None = None
) -> Transport:
    """The cheapest transport for ``stream``: direct socket I/O for plain TCP.

    Sockets get TCP keepalive either way.  ``peer``: who was counted at accept.
    """
    enable_keepalive(stream)
    if peer is None:
        peer = peer_of_stream(stream)
    if type(stream) is trio.SocketStream and stream.socket.family in _INET:
        return SocketTransport(stream, peer, prefix)
    return StreamTransport(stream, peer, prefix)


_INET = frozenset({trio.socket.AF_INET, trio.socket.AF_INET6, getattr(trio.socket, "AF_UNIX", -1)})


async def close_stream(stream: trio.abc.AsyncResource) -> None:
    """Close politely (TLS sends close_notify), but never wait long for a peer."""
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = trio.current_time() + CLOSE_TIMEOUT
        try:
            await stream.aclose()
        except TRANSPORT_ERRORS:
            pass
    if scope.cancelled_caught:
        await trio.aclose_forcefully(stream)
