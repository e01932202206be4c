"""A room: its members and the task that fans its messages out to them.

Senders put ``(sender, text)`` into the room's bounded memory channel.  The room's
task wakes, yields once so that readers woken in the same tick can add their lines,
then takes everything queued in one pass: it numbers and stamps each message,
joins the pass's bytes once per wire format, and hands the same bytes object to
every member's sender (`Sender.send_nowait`, which never awaits).  The order in
which the room's channel receives messages is the order every member sees them in.

A pass costs a write per member, whatever it carries.  Paced senders in a big room
would make a pass of one message each, so a room of `BIG_ROOM` members or more
whose last pass carried `FEW` messages or fewer starts its next pass no sooner
than ``fanout_interval`` after it (Nagle's rule, for a room), longer in a bigger
room, whose pass costs more: ``fanout_interval`` times its size over `BIG_ROOM`,
at most `MAX_SPACING` times.  What arrives meanwhile shares that pass.  A quiet
room's message still goes out at once (its last pass is long past), and a busy
one's passes are full anyway; only a steady trickle into a big room waits.  (In
one of 500 members, two senders of 200 lines a second each: 1.53-1.59 us of CPU
per delivery with passes 10 ms apart, 2.08-2.37 at 5 ms; p50 9.3-10 ms against
6.7-8.7.)
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from ..protocol import events as ev
from ..protocol.formatting import Format, encode_json, text_run
from .member import Member, deliver_event
from .passes import RoomPass, Row

__all__ = ["Room"]

#: How many messages may wait in a room's channel before senders wait.
ROOM_BUFFER = 256

#: Rooms this big space out passes of `FEW` items or fewer by ``fanout_interval``.
BIG_ROOM = 100
FEW = 8
#: A room's spacing grows with its size up to this many times ``fanout_interval``.
MAX_SPACING = 2.0

#: What the room's channel carries: a message (sender, text), several of one sender
#: (sender, [text, ...]), or a barrier's Event.  A pass takes a list of them.
_Item = tuple[str, str | list[str] | trio.Event]


class Room:
    """A named set of members with a single ordered stream of messages."""

    def __init__(
        self,
        name: str,
        *,
        first_id: int = 0,
        on_messages: Callable[[RoomPass], None] | None = None,
        buffer: int = ROOM_BUFFER,
        fanout_interval: float = 0.0,
    ) -> None:
        self.name = name
        self.members: dict[Member, None] = {}
        self.last_id = first_id
        self.messages_out = 0
        self._on_messages = on_messages
        self.fanout_interval = fanout_interval
        #: When the last pass of FEW messages or fewer was made (None: the last was full).
        self._thin_pass_at: float | None = None
        self._send, self._receive = trio.open_memory_channel[_Item](buffer)

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

    def send_many_nowait(self, sender: str, texts: list[str]) -> None:
        """Queue one sender's consecutive messages as one item (one channel operation)."""
        self._send.send_nowait((sender, texts))

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
        """The room's fan-out task: one pass per wake-up, over everything queued."""
        receive = self._receive
        async with receive:
            async for item in receive:
                items = await self._gather(item)
                self._fan_out(items)
                self._passed(items)

    def flush_nowait(self) -> None:
        """Fan out everything already queued, without yielding."""
        try:
            item = self._receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return
        self._fan_out(self._take(item))

    def _spacing(self) -> float:
        """How long after a thin pass the next one waits.  A pass here costs a write
        per member, so a room smaller than `BIG_ROOM` never waits, and a bigger one
        waits ``fanout_interval`` at `BIG_ROOM` members, longer in proportion to its
        size, at most `MAX_SPACING` times as long (a cluster room, whose pass is a
        script call, waits at least ``fanout_interval`` whatever its size)."""
        size = len(self.members)
        if size < BIG_ROOM:
            return 0.0
        return self.fanout_interval * min(size / BIG_ROOM, MAX_SPACING)

    async def _gather(self, first: _Item) -> list[_Item]:
        """A pass's items, ``first`` received: after one checkpoint (readers woken in
        this same tick add their lines to this pass instead of each costing a pass of
        its own) and, after a thin pass, what is left of the fan-out interval."""
        await trio.lowlevel.checkpoint()
        if self._thin_pass_at is not None and (spacing := self._spacing()) > 0:
            await trio.sleep_until(self._thin_pass_at + spacing)
        return self._take(first)

    def _passed(self, items: list[_Item]) -> None:
        """A pass is done: note when, if it was thin (the interval runs from its end)."""
        thin = len(items) <= FEW and _lines(items) <= FEW
        self._thin_pass_at = trio.current_time() if thin else None

    def _take(self, first: _Item) -> list[_Item]:
        """``first`` and everything queued behind it, in the channel's order."""
        items = [first]
        receive_nowait = self._receive.receive_nowait
        while True:
            try:
                items.append(receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return items

    def _fan_out(self, items: list[_Item]) -> None:
        """Number, stamp and deliver a pass's messages; barriers are kept in place.

        The text format is built one sender's run at a time (`text_run`), so that a
        pass joins a piece per run rather than formatting each message, and each
        message becomes a plain row (`RoomPass`), not an event."""
        now = round(time.time(), 6)  # what the store keeps exactly
        room = self.name
        rows: list[Row] = []
        text: list[str] = []
        for sender, said in items:
            if isinstance(said, list):
                first = self.last_id + 1
                self.last_id += len(said)
                rows += [(room, sender, t, i, now) for i, t in enumerate(said, first)]
                text.append(text_run(sender, said))
            elif isinstance(said, str):
                self.last_id += 1
                rows.append((room, sender, said, self.last_id, now))
                text.append(text_run(sender, (said,)))
            else:  # a barrier: what came before goes out first
                self._pass_out(rows, text, now)
                rows, text = [], []
                said.set()
        self._pass_out(rows, text, now)

    def _pass_out(self, rows: list[Row], text: list[str], now: float) -> None:
        if rows:
            text_bytes = "".join(text).encode("utf-8")
            self._deliver(RoomPass(self.name, rows[0][3], len(rows), text_bytes, now, rows=rows))

    def _deliver(self, published: RoomPass) -> None:
        """Hand the same bytes, joined once per wire format, to every member's sender."""
        text_format = Format.TEXT
        text_bytes = published.text
        json_bytes = b""
        for member in self.members:  # the hot loop: Member.deliver, inlined
            if member.fmt is text_format:
                data = text_bytes
            else:
                if not json_bytes:
                    json_bytes = b"".join([encode_json(m) for m in published.messages()])
                data = json_bytes
            sender = member.sender
            if not sender.send_nowait(data) and sender.overflowed:
                member.evict_too_slow()
        self.messages_out += len(self.members) * len(published)
        if self._on_messages is not None:
            self._on_messages(published)


def _lines(items: list[_Item]) -> int:
    """How many messages ``items`` hold (a barrier counts as one)."""
    return sum(len(said) if isinstance(said, list) else 1 for _, said in items)
