"""One client's life on the server: handshake, then a reader and one writer.

The reader parses lines and acts on them; the writer is the only task that calls
``send_all``, and sends everything pending in one call.  Whatever happens to the
connection, the member is forgotten and the stream closed on the way out.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from ..protocol import events as ev
from ..protocol.errors import ErrorCode, RemoteProtocolError
from ..protocol.formatting import Format, encode
from ..protocol.framing import Framer, HandshakeReceived, LineReceived, decode_text
from ..protocol.handshake import Handshake, decode_handshake
from .member import Member
from .outbox import Outbox

if TYPE_CHECKING:
    from .server import ChatServer

__all__ = ["handle_connection"]

logger = logging.getLogger("machat.server")

RECEIVE_SIZE = 65536
#: How long a refused client gets to read its error line.
REFUSAL_LINGER = 1.0


def _peer(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    if sock is None:
        return "memory"
    try:
        host, port, *_ = sock.getpeername()
    except (OSError, ValueError):
        return "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _refuse(stream: trio.abc.Stream, code: ErrorCode, message: str) -> None:
    """Send one error line (bounded in time) before the stream is closed."""
    with trio.move_on_after(REFUSAL_LINGER):
        try:
            await stream.send_all(encode(ev.Error(code, message), Format.TEXT))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
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
            await _refuse(stream, exc.code, exc.message)
            return None
    await _refuse(
        stream,
        ErrorCode.TIMED_OUT,
        f"timed out: no complete handshake within {config.handshake_timeout:g} s",
    )
    return None


async def handle_connection(server: ChatServer, stream: trio.abc.Stream) -> None:
    """Serve one client from its first byte to its disconnect."""
    addr = _peer(stream)
    state = server.state
    state.counters.connections += 1
    member: Member | None = None
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
            await _refuse(stream, exc.code, exc.message)
            member = None
            return
        logger.info("%s connected from %s", member.name, addr)
        reason = await _serve_member(server, stream, framer, member)
        state.unregister(member, reason)
        logger.info("%s disconnected (%s)", member.name, reason or "left")
    finally:
        if member is not None:
            state.unregister(member, "connection lost")
        await trio.aclose_forcefully(stream)


async def _serve_member(
    server: ChatServer, stream: trio.abc.Stream, framer: Framer, member: Member
) -> str:
    """Run the reader and the writer until either ends; returns the leave reason."""
    reason = "connection lost"
    with trio.CancelScope() as scope:
        member.cancel_scope = scope
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_writer, stream, member.outbox, nursery.cancel_scope)
            reason = await _reader(server, stream, framer, member)
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
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        done.cancel()


async def _reader(
    server: ChatServer, stream: trio.abc.Stream, framer: Framer, member: Member
) -> str:
    """Read and act on lines until the client leaves; returns the leave reason."""
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
            reason = await _on_line(server, member, event.data)
            if reason is not None:
                return reason
        if framer.at_eof:
            await _settle(member)
            return "disconnected"
        try:
            data = await stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return "connection lost"
        if data:
            framer.feed(data)
        else:
            framer.feed_eof()


async def _settle(member: Member) -> None:
    """Wait (bounded) until the member's own messages have been fanned out."""
    room = member.room
    if room is not None:
        with trio.move_on_after(1.0):
            await room.barrier()


async def _on_line(server: ChatServer, member: Member, data: bytes) -> str | None:
    """Act on one line; returns a reason if the client is leaving."""
    try:
        text = decode_text(data)
        return await server.dispatch(member, text)
    except RemoteProtocolError as exc:
        member.send_event(ev.Error(exc.code, exc.message))
        return None
