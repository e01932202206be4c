"""One connected, registered client, as the rest of the server sees it."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import trio

from ..protocol import events as ev
from ..protocol.errors import ErrorCode
from ..protocol.formatting import Format, encode

if TYPE_CHECKING:
    from .room import Room
    from .transport import Sender

__all__ = ["Member", "deliver_event"]

logger = logging.getLogger("machat.server")

#: How long an evicted member's writer may try to get its last error line out.
EVICTION_GRACE = 2.0


class Member:
    """A registered client: its name, wire format, room and sender.

    Everything here is synchronous; the connection's tasks own the I/O.
    """

    __slots__ = (
        "account",
        "addr",
        "cancel_scope",
        "evicted",
        "fmt",
        "ip",
        "name",
        "room",
        "sender",
    )

    def __init__(
        self, name: str, fmt: Format, sender: Sender, addr: str = "", ip: str = ""
    ) -> None:
        self.name = name
        self.fmt = fmt
        self.sender = sender
        self.addr = addr
        self.ip = ip
        self.room: Room | None = None  # set by the state
        self.cancel_scope: trio.CancelScope | None = None
        self.evicted = False
        #: The registered name (folded) whose password this member gave, if any.
        self.account: str | None = None

    def __repr__(self) -> str:
        return f"<Member {self.name} {self.addr}>"

    def send_event(self, event: ev.Event) -> None:
        """Deliver one event to this member alone."""
        self.deliver(encode(event, self.fmt))

    def deliver(self, data: bytes) -> None:
        sender = self.sender
        if not sender.send_nowait(data) and sender.overflowed:
            self.evict_too_slow()

    def evict_too_slow(self) -> None:
        self.evict(ErrorCode.TOO_SLOW, "too slow: output queue overflow, disconnecting")

    def evict(self, code: ErrorCode, message: str) -> None:
        """Disconnect this member: it gets one error line, if it reads in time."""
        if self.evicted:
            return
        self.evicted = True
        logger.info("evicting %s (%s): %s", self.name, self.addr, message)
        self.sender.evict(encode(ev.Error(code, message), self.fmt))
        if self.cancel_scope is not None:
            self.cancel_scope.deadline = min(
                self.cancel_scope.deadline, trio.current_time() + EVICTION_GRACE
            )


def deliver_event(members: Iterable[Member], event: ev.Event) -> None:
    """Deliver one event to many members, encoding it once per wire format."""
    encoded: dict[Format, bytes] = {}
    for member in list(members):  # delivering may evict: never iterate a live view
        data = encoded.get(member.fmt)
        if data is None:
            data = encoded[member.fmt] = encode(event, member.fmt)
        member.deliver(data)
