"""A room: its members and the task that fans its messages out to them.

Senders put ``(sender, text)`` into the room's bounded memory channel; the room's
task takes them in order, numbers and stamps each one, encodes it once per wire
format, and delivers the same bytes to every member's outbox without awaiting any
member.  The order in which the room's channel receives messages is the order
every member sees them in.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from ..protocol import events as ev
from ..protocol.formatting import Format, encode_json, encode_text
from .member import Member, deliver_event

__all__ = ["Room"]

#: How many messages may wait in a room's channel before senders wait.
ROOM_BUFFER = 256


class Room:
    """A named set of members with a single ordered stream of messages."""

    def __init__(
        self,
        name: str,
        *,
        first_id: int = 0,
        on_message: Callable[[ev.Message], None] | None = None,
        buffer: int = ROOM_BUFFER,
    ) -> None:
        self.name = name
        self.members: dict[Member, None] = {}
        self.last_id = first_id
        self.messages_out = 0
        self._on_message = on_message
        self._send, self._receive = trio.open_memory_channel[tuple[str, str | trio.Event]](buffer)

    def __repr__(self) -> str:
        return f"<Room {self.name} members={len(self.members)}>"

    def __len__(self) -> int:
        return len(self.members)

    # -- membership (synchronous; notices go straight out) ---------------------------

    def add(self, member: Member) -> None:
        self.members[member] = None

    def remove(self, member: Member) -> None:
        self.members.pop(member, None)

    def names(self) -> list[str]:
        return sorted((m.name for m in self.members), key=str.casefold)

    def broadcast_event(self, event: ev.Event) -> None:
        """Deliver an event to every member now, encoded once per format."""
        deliver_event(self.members, event)

    # -- messages --------------------------------------------------------------------

    async def send(self, sender: str, text: str) -> None:
        """Queue a message; waits only while the room's channel is full."""
        await self._send.send((sender, text))

    def send_nowait(self, sender: str, text: str) -> None:
        self._send.send_nowait((sender, text))

    async def barrier(self) -> None:
        """Wait until everything queued before this call has been fanned out."""
        done = trio.Event()
        try:
            await self._send.send(("", done))
        except trio.ClosedResourceError:
            return
        await done.wait()

    def close(self) -> None:
        """No more messages: the task fans out what is queued, then returns."""
        self._send.close()

    async def run(self) -> None:
        """The room's fan-out task."""
        receive = self._receive
        async with receive:
            async for item in receive:
                self._publish(*item)
                self.flush_nowait()

    def flush_nowait(self) -> None:
        """Fan out everything already queued, without yielding."""
        receive = self._receive
        while True:
            try:
                item = receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            self._publish(*item)

    def _publish(self, sender: str, text: str | trio.Event) -> None:
        if isinstance(text, trio.Event):  # a barrier
            text.set()
            return
        self.last_id += 1
        message = ev.Message(self.name, sender, text, self.last_id, time.time())
        text_bytes = encode_text(message)
        json_bytes = b""
        text_format = Format.TEXT
        for member in self.members:  # the hot loop: Member.deliver, inlined
            if member.fmt is text_format:
                data = text_bytes
            else:
                if not json_bytes:
                    json_bytes = encode_json(message)
                data = json_bytes
            outbox = member.outbox
            if not outbox.put_nowait(data) and outbox.overflowed:
                member.evict_too_slow()
        self.messages_out += len(self.members)
        if self._on_message is not None:
            self._on_message(message)
