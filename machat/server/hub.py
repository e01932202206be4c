"""The narrow interface between one connection and the rest of the server.

A connection (`machat.server.connection.serve_connection`) needs only these few
things from whoever hosts it, so a WebSocket listener, a cluster backplane or a
test can host connections without importing the whole server.  `ChatServer`
implements it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import trio

if TYPE_CHECKING:
    from ..protocol.handshake import Handshake
    from .config import ServerConfig
    from .member import Member
    from .state import Counters
    from .transport import Peer

__all__ = ["Hub"]


class Hub(Protocol):
    @property
    def config(self) -> ServerConfig: ...

    @property
    def nursery(self) -> trio.Nursery:
        """Where connections' helper tasks run: a socket's drainer, a stream's writer.

        It outlives every connection; a transport stops its own tasks in ``aclose``.
        """
        ...

    @property
    def counters(self) -> Counters:
        """Counters a connection adds to (refusals, lines in, evictions, throttles)."""
        ...

    def open_connection(self, peer: Peer) -> str | None:
        """Count a new connection; the refusal text if a cap forbids it (it is not counted)."""
        ...

    def close_connection(self, peer: Peer) -> None:
        """A connection that `open_connection` admitted has ended."""
        ...

    async def admit(self, member: Member, handshake: Handshake) -> None:
        """Register the member and put it in its room; raises `ChatError` to refuse."""
        ...

    def say_nowait(self, member: Member, texts: list[str]) -> bool:
        """The hot path: queue plain lines (`is_plain_line`) in the member's room
        without waiting.  False when they must wait (a full room channel, a muted
        or removed member): then `dispatch` each.
        """
        ...

    async def dispatch(self, member: Member, text: str) -> str | None:
        """Act on one line of text; returns a leave reason when the member quits."""
        ...

    def leave(self, member: Member, reason: str) -> None:
        """Forget the member (idempotent): its room hears it left."""
        ...
