"""One client's life on the server, written once for every transport.

`serve_connection` takes a `Transport` (what carries the bytes) and a `Hub` (what
the connection may ask of the server) and does everything a connection does: the
caps, the handshake under its timeout, admission, then reading lines under flood
control and the idle timeout, dispatching them, and leaving.  Output goes through
the transport's `Sender`, which never makes the reader (or a room) wait.

A connection's states, in order: the caps are checked; the handshake is read
(bounded by ``handshake_timeout``); the member is admitted; lines are read until
the client quits, goes quiet too long, breaks the protocol fatally, is evicted or
disconnects; output is flushed (bounded by ``flush_timeout``); the transport is
closed.  Whatever happens, the member is forgotten and the transport closed.
"""

from __future__ import annotations

import logging

import trio

from ..protocol import events as ev
from ..protocol.commands import is_plain_line, plain_lines
from ..protocol.errors import ChatError, ErrorCode, RemoteProtocolError
from ..protocol.formatting import Format, encode
from ..protocol.framing import Framer, HandshakeReceived, decode_text
from ..protocol.handshake import Handshake, decode_handshake
from ..protocol.ratelimit import TokenBucket
from .handlers import settle
from .hub import Hub
from .member import Member
from .transport import TRANSPORT_ERRORS, Sender, Transport

__all__ = ["serve_connection"]

logger = logging.getLogger("machat.server")

#: How long a refused client gets to read its error line.
REFUSAL_LINGER = 1.0


async def serve_connection(
    hub: Hub,
    transport: Transport,
    *,
    counted: bool = False,
    handshake_deadline: float | None = None,
) -> None:
    """Serve one client from its first byte to its disconnect.

    A listener that had to read the first bytes before it knew this was chat (the
    chat port also speaks HTTP) has already counted the connection against the caps
    (``counted``), and its handshake clock started then (``handshake_deadline``).
    """
    peer = transport.peer
    refusal = None if counted else hub.open_connection(peer)
    connection = _Connection(hub, transport, handshake_deadline)
    sender = connection.sender
    try:
        with connection.scope:
            try:
                if refusal is not None:
                    hub.counters.refused += 1
                    logger.warning("refusing %s: %s", peer.label, refusal)
                    _refuse(sender, ErrorCode.SERVER_FULL, refusal)
                    connection.linger()
                else:
                    await connection.run()
            except TRANSPORT_ERRORS as exc:
                logger.debug("connection from %s broke: %r", peer.label, exc)
            sender.close()
            await sender.wait_flushed()
    finally:
        if refusal is None:
            hub.close_connection(peer)
        await transport.aclose()


def _refuse(sender: Sender, code: ErrorCode, message: str, fmt: Format = Format.TEXT) -> None:
    """Queue one error line; the caller closes the sender, bounded by REFUSAL_LINGER."""
    sender.close(encode(ev.Error(code, message), fmt))


class _Connection:
    """One connection's state.  Its cancel scope bounds everything: the sender
    cancels it once it is done (flushed after a close or an eviction, or broken),
    eviction and shutdown move its deadline."""

    __slots__ = (
        "bucket",
        "framer",
        "handshake_deadline",
        "hub",
        "member",
        "scope",
        "sender",
        "throttled",
        "transport",
    )

    def __init__(self, hub: Hub, transport: Transport, handshake_deadline: float | None) -> None:
        self.hub = hub
        self.handshake_deadline = handshake_deadline
        self.transport = transport
        self.scope = trio.CancelScope()
        config = hub.config
        self.sender = transport.open_sender(config.outbox_limit, hub.nursery, self.scope.cancel)
        self.framer = Framer(config.max_line, config.max_handshake)
        self.bucket = (
            TokenBucket(config.rate, config.burst, trio.current_time()) if config.rate > 0 else None
        )
        self.throttled = False
        self.member: Member | None = None

    def linger(self) -> None:
        self.scope.deadline = min(self.scope.deadline, trio.current_time() + REFUSAL_LINGER)

    async def run(self) -> None:
        """Admit the member, then read and act on its lines until it leaves.

        The reading loop is written here rather than in a method of its own: an
        idle connection keeps every coroutine of its chain alive, and one more
        costs about 0.3 KiB per connection.
        """
        member = await self._admit()
        if member is None:
            return
        hub, framer, idle = self.hub, self.framer, self.hub.config.idle_timeout
        reason = "connection lost"
        try:
            while True:
                try:
                    lines = framer.next_lines()
                except RemoteProtocolError as exc:
                    member.send_event(ev.Error(exc.code, exc.message))
                    continue
                if lines:
                    if leaving := await self._act_on(member, lines):
                        reason = leaving
                        break
                    continue
                if framer.at_eof:
                    await settle(member)
                    reason = "disconnected"
                    break
                data = None
                try:
                    if idle:
                        with trio.move_on_after(idle):
                            data = await self.transport.receive_some()
                    else:
                        data = await self.transport.receive_some()
                except TRANSPORT_ERRORS:
                    break  # (connection lost)
                if data is None:
                    member.send_event(
                        ev.Error(
                            ErrorCode.TIMED_OUT, f"timed out: idle for {idle:g} s, disconnecting"
                        )
                    )
                    reason = "idle timeout"
                    break
                if data:
                    framer.feed(data)
                else:
                    framer.feed_eof()
        finally:
            if member.evicted:
                hub.counters.evictions += 1
                reason = "evicted"
            hub.leave(member, reason)
            logger.info("%s disconnected (%s)", member.name, reason)
        # Let what is pending flush, within bounds.
        self.scope.deadline = min(
            self.scope.deadline, trio.current_time() + hub.config.flush_timeout
        )

    async def _admit(self) -> Member | None:
        """Read the handshake and admit the member; None (a refusal queued) if not."""
        hub, peer = self.hub, self.transport.peer
        handshake = await self._read_handshake()
        if handshake is None:
            hub.counters.refused += 1
            self.linger()
            return None
        member = Member(handshake.name, handshake.format, self.sender, peer.label, peer.ip)
        member.cancel_scope = self.scope
        try:
            await hub.admit(member, handshake)
        except (ChatError, RemoteProtocolError) as exc:
            hub.counters.refused += 1
            logger.info("refused %s from %s: %s", handshake.name, peer.label, exc.message)
            _refuse(self.sender, exc.code, exc.message, handshake.format)
            self.linger()
            return None
        self.member = member
        logger.info("%s joined %s from %s", member.name, handshake.room, peer.label)
        return member

    async def _read_handshake(self) -> Handshake | None:
        """Read and decode the handshake; queue a refusal and return None on failure."""
        timeout = self.hub.config.handshake_timeout
        deadline = self.handshake_deadline
        if deadline is None:
            deadline = trio.current_time() + timeout
        framer = self.framer
        with trio.move_on_at(deadline):
            try:
                while (event := framer.next_event()) is None:
                    data = await self.transport.receive_some()
                    if not data:
                        return None
                    framer.feed(data)
                assert isinstance(event, HandshakeReceived)
                return decode_handshake(event.data)
            except RemoteProtocolError as exc:
                _refuse(self.sender, exc.code, exc.message)
                return None
        _refuse(
            self.sender,
            ErrorCode.TIMED_OUT,
            f"timed out: no complete handshake within {timeout:g} s",
        )
        return None

    async def _throttle(self, bucket: TokenBucket, delay: float) -> None:
        """Wait out the flood budget; meanwhile nothing is read (TCP backpressure)."""
        assert self.member is not None
        if not self.throttled:
            self.throttled = True
            self.hub.counters.throttles += 1
            self.member.send_event(
                ev.Error(
                    ErrorCode.RATE_LIMITED,
                    f"rate limited: more than {bucket.rate:g} lines/s (burst {bucket.burst}); "
                    "your lines are delayed, not dropped",
                )
            )
        await trio.sleep(delay)

    async def _act_on(self, member: Member, lines: list[bytes]) -> str | None:
        """Act on lines in order; returns a reason if the client is leaving.

        Plain lines gather in a run that goes to the room as one item (the hot path:
        no await per line); a line that must wait for the flood budget, is not valid
        text or is anything else sends the run first.  Many lines that are all plain
        and within the budget go as one run without a look at each (`plain_lines`).
        """
        if len(lines) > 1 and (texts := plain_lines(lines)) is not None:
            bucket = self.bucket
            if bucket is None or bucket.take_all(len(texts), trio.current_time()):
                self.throttled = False
                return await self._say(member, texts)
        run: list[str] = []
        for line in lines:
            bucket = self.bucket
            if bucket is not None and (delay := bucket.take(trio.current_time())):
                if reason := await self._say(member, run):
                    return reason
                run = []
                await self._throttle(bucket, delay)
            else:
                self.throttled = False
            try:
                text = decode_text(line)
            except RemoteProtocolError as exc:
                text, error = None, ev.Error(exc.code, exc.message)
            if text is not None and is_plain_line(text):
                run.append(text)
                continue
            if reason := await self._say(member, run):
                return reason
            run = []
            if text is None:
                member.send_event(error)
            elif reason := await self._dispatch(member, text):
                return reason
        return await self._say(member, run)

    async def _say(self, member: Member, texts: list[str]) -> str | None:
        """Plain lines: queued at once if they can be, else dispatched one by one."""
        if not texts or self.hub.say_nowait(member, texts):
            return None
        for text in texts:
            if reason := await self._dispatch(member, text):
                return reason
        return None

    async def _dispatch(self, member: Member, text: str) -> str | None:
        """Act on one line; returns a reason if the client is leaving."""
        try:
            return await self.hub.dispatch(member, text)
        except (ChatError, RemoteProtocolError) as exc:
            member.send_event(ev.Error(exc.code, exc.message))
            return None
