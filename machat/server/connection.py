"""One client's life on the server: handshake, then a reader and one writer.

The reader parses lines and acts on them; the writer is the only task that calls
``send_all``, and sends everything pending in one call.  Whatever happens to the
connection, the member is forgotten and the stream closed on the way out.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

import trio

from ..protocol import events as ev
from ..protocol.errors import ErrorCode, RemoteProtocolError
from ..protocol.formatting import Format, encode
from ..protocol.framing import Framer, HandshakeReceived, LineReceived, decode_text
from ..protocol.handshake import Handshake, decode_handshake
from ..protocol.ratelimit import TokenBucket
from .handlers import settle
from .member import Member
from .outbox import Outbox

if TYPE_CHECKING:
    from .server import ChatServer

__all__ = ["close_stream", "handle_connection", "peer_address", "refuse"]

logger = logging.getLogger("machat.server")

RECEIVE_SIZE = 65536
#: How long a refused client gets to read its error line.
REFUSAL_LINGER = 1.0
#: How long closing a stream may wait for the peer (a TLS close_notify).
CLOSE_TIMEOUT = 1.0
#: Transport failures: the peer went away or the TLS layer broke.
TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)


def _socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return getattr(stream, "socket", None)


def peer_address(stream: trio.abc.Stream) -> tuple[str, str]:
    """(ip, "ip:port") of the peer; ("memory", "memory") for in-process streams."""
    sock = _socket_of(stream)
    if sock is None:
        return "memory", "memory"
    try:
        host, port, *_ = sock.getpeername()
    except (OSError, ValueError):
        return "?", "?"
    return host, (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


def enable_keepalive(stream: trio.abc.Stream) -> None:
    sock = _socket_of(stream)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 15)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4)
    except OSError:  # not every platform or socket type has these
        pass


async def close_stream(stream: trio.abc.Stream) -> None:
    """Close politely (TLS sends close_notify), but never wait long for a peer."""
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = trio.current_time() + CLOSE_TIMEOUT
        try:
            await stream.aclose()
        except TRANSPORT_ERRORS:
            pass
    if scope.cancelled_caught:
        await trio.aclose_forcefully(stream)


async def refuse(
    stream: trio.abc.Stream, code: ErrorCode, message: str, fmt: Format = Format.TEXT
) -> None:
    """Send one error line (bounded in time) before the stream is closed."""
    with trio.move_on_after(REFUSAL_LINGER):
        try:
            await stream.send_all(encode(ev.Error(code, message), fmt))
        except TRANSPORT_ERRORS:
            pass


async def _read_handshake(
    server: ChatServer, stream: trio.abc.Stream, framer: Framer
) -> Handshake | None:
    """Read and decode the handshake; refuse the client and return None on failure."""
    config = server.config
    with trio.move_on_after(config.handshake_timeout):
        try:
            while (event := framer.next_event()) is None:
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:
                    return None
                framer.feed(data)
            assert isinstance(event, HandshakeReceived)
            return decode_handshake(event.data)
        except RemoteProtocolError as exc:
            await refuse(stream, exc.code, exc.message)
            return None
    await refuse(
        stream,
        ErrorCode.TIMED_OUT,
        f"timed out: no complete handshake within {config.handshake_timeout:g} s",
    )
    return None


async def handle_connection(server: ChatServer, stream: trio.abc.Stream, addr: str) -> None:
    """Serve one client from its first byte to its disconnect."""
    state = server.state
    member: Member | None = None
    enable_keepalive(stream)
    try:
        framer = Framer(server.config.max_line, server.config.max_handshake)
        handshake = await _read_handshake(server, stream, framer)
        if handshake is None:
            state.counters.refused += 1
            return
        member = Member(handshake.name, handshake.format, Outbox(server.config.outbox_limit), addr)
        try:
            server.admit(member, handshake)
        except RemoteProtocolError as exc:
            state.counters.refused += 1
            logger.info("refused %s from %s: %s", handshake.name, addr, exc.message)
            member = None
            await refuse(stream, exc.code, exc.message, handshake.format)
            return
        logger.info("%s joined %s from %s", member.name, handshake.room, addr)
        reason = await _serve_member(server, stream, framer, member)
        state.unregister(member, reason)
        logger.info("%s disconnected (%s)", member.name, reason)
    except TRANSPORT_ERRORS as exc:
        logger.debug("connection from %s broke: %r", addr, exc)
    finally:
        if member is not None:
            state.unregister(member, "connection lost")
        await close_stream(stream)


async def _serve_member(
    server: ChatServer, stream: trio.abc.Stream, framer: Framer, member: Member
) -> str:
    """Run the reader and the writer until either ends; returns the leave reason."""
    reason = "connection lost"
    with trio.CancelScope() as scope:
        member.cancel_scope = scope
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_writer, stream, member.outbox, nursery.cancel_scope)
            reason = await _Reader(server, stream, framer, member).run()
            # Let the writer flush what is pending, within bounds.
            member.outbox.close()
            scope.deadline = min(scope.deadline, trio.current_time() + server.config.flush_timeout)
    if member.evicted:
        server.state.counters.evictions += 1
        reason = "evicted"
    return reason


async def _writer(stream: trio.abc.Stream, outbox: Outbox, done: trio.CancelScope) -> None:
    try:
        while data := await outbox.take():
            await stream.send_all(data)
    except TRANSPORT_ERRORS:
        pass
    finally:
        done.cancel()


class _Reader:
    """Reads a member's lines and acts on them, under flood control."""

    def __init__(
        self, server: ChatServer, stream: trio.abc.Stream, framer: Framer, member: Member
    ) -> None:
        self.server = server
        self.stream = stream
        self.framer = framer
        self.member = member
        config = server.config
        self.bucket = (
            TokenBucket(config.rate, config.burst, trio.current_time()) if config.rate > 0 else None
        )
        self.throttled = False

    async def run(self) -> str:
        """Read and act on lines until the client leaves; returns the leave reason."""
        framer, member = self.framer, self.member
        idle = self.server.config.idle_timeout or float("inf")
        while True:
            while True:
                try:
                    event = framer.next_event()
                except RemoteProtocolError as exc:
                    member.send_event(ev.Error(exc.code, exc.message))
                    continue
                if event is None:
                    break
                assert isinstance(event, LineReceived)
                bucket = self.bucket
                if bucket is not None:
                    delay = bucket.take(trio.current_time())
                    if delay:
                        await self._throttle(bucket, delay)
                    else:
                        self.throttled = False
                reason = await self._on_line(event.data)
                if reason is not None:
                    return reason
            if framer.at_eof:
                await settle(member)
                return "disconnected"
            with trio.move_on_after(idle):
                try:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                except TRANSPORT_ERRORS:
                    return "connection lost"
                if data:
                    framer.feed(data)
                else:
                    framer.feed_eof()
                continue
            member.send_event(
                ev.Error(ErrorCode.TIMED_OUT, f"timed out: idle for {idle:g} s, disconnecting")
            )
            return "idle timeout"

    async def _throttle(self, bucket: TokenBucket, delay: float) -> None:
        """Wait out the flood budget; meanwhile nothing is read (TCP backpressure)."""
        if not self.throttled:
            self.throttled = True
            self.server.state.counters.throttles += 1
            self.member.send_event(
                ev.Error(
                    ErrorCode.RATE_LIMITED,
                    f"rate limited: more than {bucket.rate:g} lines/s (burst {bucket.burst}); "
                    "your lines are delayed, not dropped",
                )
            )
        await trio.sleep(delay)

    async def _on_line(self, data: bytes) -> str | None:
        """Act on one line; returns a reason if the client is leaving."""
        try:
            text = decode_text(data)
            return await self.server.dispatch(self.member, text)
        except RemoteProtocolError as exc:
            self.member.send_event(ev.Error(exc.code, exc.message))
            return None
