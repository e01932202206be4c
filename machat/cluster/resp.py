"""A lean Redis connection for the cluster's hot path: RESP2 over one trio stream.

A coredis command costs a node about 150 us of CPU (its connection pool, anyio
streams and response callbacks), and a pub/sub message 16-70 us: at full load
that was most of what a cluster node spends beyond a single node.  The two paths
that run once per fan-out pass -- the publisher's script calls and the
subscription -- use this instead: commands packed by ``hiredis.pack_command``,
replies parsed by hiredis's C reader, one trio stream, no pool.  Everything else
(names, presence, history reads) stays on coredis.

Over TCP or a Unix socket (not TLS) the socket is read and written directly, as
`machat.server.transport` does a member's: a read waits for readability and then
reads once, a write is tried at once and waits only if the socket is full, and an
uncontended send takes its lock without a schedule point.  A trio stream yields
once more after every operation that succeeds, which at full load was a third of
the steps of the two tasks that use these connections.

A connection is used by one task at a time for calls (`call_many` sends every
command in one write and reads their replies in order: a pipeline), or by one
reading task in pub/sub mode (`receive`) while others `send` to it.  There are no
timeouts here: callers wrap what they do in ``trio.fail_after``, and a connection
whose call was cancelled half-way is closed, since its next reply would belong to
the call that gave up.

Errors: anything wrong with the connection (refused, reset, closed, a reply that
does not parse) is `ConnectionLost`, an `OSError`; its ``sent`` says whether the
commands of the call may have reached Redis (a call on a connection Redis had
already closed says False: `call_many` looks for that before it writes, as
anything at all to read on an idle connection).  An error
*reply* (``-ERR``, ``-NOSCRIPT``, ...) is a `ReplyError` value in the reply list;
`call` raises it.
"""

from __future__ import annotations

import os
import select
import ssl
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import attrs
import hiredis
import trio

__all__ = ["ConnectionLost", "Endpoint", "RedisConnection", "ReplyError", "open_connection"]

#: Bytes asked of the socket per read.
RECEIVE_SIZE = 1 << 16

Command = tuple[str | bytes | int | float, ...]


#: hiredis's own annotation takes a 1-tuple.
_pack = cast(Callable[[Command], bytes], hiredis.pack_command)


class ConnectionLost(ConnectionError):
    """The connection to Redis failed or was closed.  ``sent``: whether what the
    failed call wrote may have reached Redis (True unless known otherwise)."""

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class ReplyError(Exception):
    """Redis answered a command with an error, e.g. ``NOSCRIPT No matching script``."""

    @property
    def code(self) -> str:
        """The error's first word: ``ERR``, ``NOSCRIPT``, ``WRONGTYPE``..."""
        return str(self).partition(" ")[0]


class RedisConnection:
    """One connection: `call_many` / `call` for commands, `send` / `receive` for
    pub/sub.  Bulk strings come back as str (UTF-8, bad bytes replaced)."""

    def __init__(
        self, stream: trio.abc.Stream, fd: int | None = None, *, raw: bool = False
    ) -> None:
        self._stream = stream
        # The socket, polled to see whether Redis closed an idle connection.
        self._fd = fd
        self._poll: select.poll | None = None
        if fd is not None:
            self._poll = select.poll()
            self._poll.register(fd, select.POLLIN)
        #: The socket read and written directly (``stream`` is its plain SocketStream).
        self._raw_fd = fd if raw else None
        self._reader = hiredis.Reader(replyError=ReplyError, encoding="utf-8", errors="replace")
        self._send_lock = trio.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def send(self, commands: Iterable[Command]) -> None:
        """Write commands without waiting for their replies (safe from several tasks)."""
        data = b"".join(map(_pack, commands))
        lock = self._send_lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            if self._raw_fd is not None and self._closed:
                # (its number may belong to another socket by now: touch nothing)
                raise ConnectionLost("the connection is closed", sent=False)
            try:
                if self._raw_fd is not None:
                    await self._send_raw(self._raw_fd, data)
                else:
                    await self._stream.send_all(data)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._closed = True
                raise ConnectionLost(f"sending to Redis: {_describe(exc)}") from exc
        finally:
            lock.release()

    async def _send_raw(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(fd)
        except BaseException:
            if len(view) < len(data):  # (a command cut short: the stream is garbage)
                self._closed = True
            raise

    async def receive(self) -> list[Any]:
        """Every reply or pub/sub message that has arrived whole: at least one."""
        reader, replies = self._reader, []
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self._closed = True
                raise ConnectionLost(f"Redis sent what is not RESP: {exc}") from None
            if reply is not False:  # (False: not whole yet; RESP2 has no booleans)
                replies.append(reply)
                continue
            if replies:
                return replies
            data: bytes | bytearray
            if self._raw_fd is not None and self._closed:
                raise ConnectionLost("the connection is closed")
            try:
                if self._raw_fd is not None:
                    data = await _read_raw(self._raw_fd)
                else:
                    data = await self._stream.receive_some(RECEIVE_SIZE)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._closed = True
                raise ConnectionLost(f"reading from Redis: {_describe(exc)}") from exc
            if not data:
                self._closed = True
                raise ConnectionLost("Redis closed the connection")
            reader.feed(bytes(data))  # (bytes already, from a socket: no copy)

    async def call_many(self, commands: Sequence[Command]) -> list[Any]:
        """Send every command in one write; their replies, in order (a `ReplyError`
        where Redis answered with an error).  A cancelled call closes the connection."""
        if self._done_while_idle():
            # Redis closed the connection while it was idle (it stopped, or killed
            # the client): nothing of this call can reach it.
            self._closed = True
            await trio.aclose_forcefully(self._stream)
            raise ConnectionLost("Redis closed the connection", sent=False)
        done = False
        try:
            await self.send(commands)
            replies: list[Any] = []
            while len(replies) < len(commands):
                replies += await self.receive()
            done = True
        finally:
            if not done:
                await self.aclose()
        if len(replies) != len(commands):
            await self.aclose()
            raise ConnectionLost(f"Redis sent {len(replies)} replies to {len(commands)} commands")
        return replies

    async def call(self, *command: str | bytes | int | float) -> Any:
        """One command's reply; raises `ReplyError`."""
        (reply,) = await self.call_many([command])
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def _done_while_idle(self) -> bool:
        """Whether the socket has something to read between calls, when Redis sends
        nothing: that is its end of file, a reset, or (over TLS) the alert it sends
        as it closes; the connection is of no more use.  One poll."""
        return self._poll is not None and not self._closed and bool(self._poll.poll(0))

    async def aclose(self) -> None:
        self._closed = True
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self._stream)


@attrs.frozen
class Endpoint:
    """Where a Redis is and how to log in: a TCP ``host`` and ``port`` or a Unix
    socket ``path``; the database; credentials; TLS."""

    host: str | None = None
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl_context: ssl.SSLContext | None = None

    def __str__(self) -> str:
        return f"unix://{self.path}" if self.path else f"{self.host}:{self.port}"


async def open_connection(endpoint: Endpoint, *, client_name: str | None = None) -> RedisConnection:
    """Connect, log in, select the database and name the connection."""
    try:
        if endpoint.path is not None:
            sock: trio.SocketStream = await trio.open_unix_socket(endpoint.path)
        else:
            sock = await trio.open_tcp_stream(endpoint.host or "localhost", endpoint.port)
    except OSError as exc:
        raise ConnectionLost(
            f"connecting to Redis at {endpoint}: {_describe(exc)}", sent=False
        ) from exc
    stream: trio.abc.Stream = sock
    if endpoint.ssl_context is not None:
        stream = trio.SSLStream(sock, endpoint.ssl_context, server_hostname=endpoint.host)
    conn = RedisConnection(stream, sock.socket.fileno(), raw=endpoint.ssl_context is None)
    commands: list[Command] = []
    if endpoint.password is not None:
        commands.append(("AUTH", endpoint.username or "default", endpoint.password))
    if endpoint.db:
        commands.append(("SELECT", endpoint.db))
    if client_name:
        commands.append(("CLIENT", "SETNAME", client_name))
    if commands:
        for reply in await conn.call_many(commands):
            if isinstance(reply, ReplyError):
                await conn.aclose()
                raise ConnectionLost(f"Redis at {endpoint} refused the connection: {reply}")
    return conn


async def _read_raw(fd: int) -> bytes:
    """Wait until ``fd`` is readable, then read once (b"" at end of file)."""
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            return os.read(fd, RECEIVE_SIZE)
        except BlockingIOError:
            continue


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
