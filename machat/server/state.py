"""The server's shared state: who is online, which rooms exist, who is where.

All changes happen in synchronous methods, so every change is atomic with respect
to the other tasks, and the whole thing can be driven without sockets.
Rooms are created on first join and freed when their last member leaves; their
fan-out tasks are started through ``spawn``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs

from ..protocol import events as ev
from ..protocol.errors import ChatError, ErrorCode, RemoteProtocolError
from ..protocol.handshake import fold_name, validate_name, validate_room
from .history import History
from .member import Member, deliver_event
from .passes import RoomPass
from .room import Room

__all__ = ["ChatState", "Counters", "EventLog", "Group", "report_sent"]

_GROUP_RE = re.compile(r"#[A-Za-z0-9_-]{1,63}", re.ASCII)


@attrs.frozen
class Group:
    """A named list of people, owned by the connection that defined it."""

    name: str
    owner: Member
    members: tuple[str, ...]


@attrs.define
class Counters:
    connections: int = 0  # accepted so far
    refused: int = 0  # closed before joining (bad handshake, full, ...)
    messages_in: int = 0
    #: Room messages delivered by rooms that have since been freed.
    delivered_by_freed_rooms: int = 0
    evictions: int = 0
    throttles: int = 0


class EventLog(Protocol):
    """Who wants to hear of joins, leaves and renames (the transcript)."""

    def join(self, room: str, name: str) -> None: ...
    def leave(self, room: str, name: str, reason: str = "") -> None: ...
    def nick(self, room: str | None, old: str, new: str) -> None: ...


def report_sent(sender: Member, delivered: list[str], unknown: list[str]) -> None:
    """After a private or group message: tell the sender who got it, and raise
    NO_SUCH_RECIPIENT for the targets nobody answers to (the rest were still served)."""
    if delivered:
        sender.send_event(ev.Sent(tuple(delivered)))
    if unknown:
        raise ChatError(
            ErrorCode.NO_SUCH_RECIPIENT,
            f"unable to send: no such user or group: {', '.join(unknown)}",
        )


class ChatState:
    """Users, rooms and groups.

    ``spawn`` starts a room's fan-out task; ``history`` numbers rooms' messages on
    from where they stopped and keeps the recent ones; ``on_messages`` hears
    every pass of messages a room publishes; ``log`` hears joins, leaves and renames.
    """

    def __init__(
        self,
        spawn: Callable[[Callable[[], Awaitable[None]]], None],
        *,
        history: History | None = None,
        on_messages: Callable[[RoomPass], None] | None = None,
        log: EventLog | None = None,
    ) -> None:
        self._spawn = spawn
        self.history = history if history is not None else History()
        self._on_messages = on_messages
        self._log = log
        #: What makes a room: a cluster node puts its own `Room` subclass here.
        self.room_factory: Callable[..., Room] = Room
        #: Whether rooms' passes go into ``history`` (a cluster node's history is
        #: Redis's: it keeps none of its own).
        self.keeps_history = True
        self.users: dict[str, Member] = {}
        self.rooms: dict[str, Room] = {}
        self.groups: dict[str, Group] = {}
        self.counters = Counters()

    # -- users ------------------------------------------------------------------------

    def lookup(self, name: str) -> Member | None:
        return self.users.get(fold_name(name))

    def register(self, member: Member) -> None:
        key = fold_name(member.name)
        if key in self.users:
            raise ChatError(
                ErrorCode.NAME_IN_USE, f"name {member.name} is already in use; pick another"
            )
        self.users[key] = member

    def unregister(self, member: Member, reason: str = "") -> None:
        """Forget everything about a member (idempotent)."""
        if member.room is not None:
            self.leave(member, reason)
        key = fold_name(member.name)
        if self.users.get(key) is member:
            del self.users[key]
        for name, group in list(self.groups.items()):
            if group.owner is member:
                del self.groups[name]

    def rename(self, member: Member, new_name: str) -> None:
        """Change a member's name; its room (or, outside a room, itself) is told."""
        validate_name(new_name)
        old_key, new_key = fold_name(member.name), fold_name(new_name)
        holder = self.users.get(new_key)
        if holder is not None and holder is not member:
            raise ChatError(
                ErrorCode.NAME_IN_USE, f"name {new_name} is already in use; pick another"
            )
        if new_name == member.name:
            return
        old_name = member.name
        del self.users[old_key]
        self.users[new_key] = member
        member.name = new_name
        event = ev.Nick(old_name, new_name)
        if self._log is not None:
            self._log.nick(member.room.name if member.room else None, old_name, new_name)
        if member.room is not None:
            member.room.broadcast_event(event)
        else:
            member.send_event(event)

    # -- private, group and server-wide messages ------------------------------------

    def send_private(self, sender: Member, targets: tuple[str, ...], text: str) -> None:
        """Deliver to people and groups; unknown targets are reported, the rest still served."""
        now = time.time()
        delivered: list[str] = []
        unknown: list[str] = []
        for target in targets:
            if target.startswith("#"):
                group = self.groups.get(fold_name(target))
                if group is None:
                    unknown.append(target)
                    continue
                self._send_group(sender, group, text, now, unknown)
                continue
            recipient = self.lookup(target)
            if recipient is None:
                unknown.append(target)
                continue
            recipient.send_event(ev.Private(sender.name, text, now))
            delivered.append(recipient.name)
        report_sent(sender, delivered, unknown)

    def _send_group(
        self, sender: Member, group: Group, text: str, now: float, unknown: list[str]
    ) -> None:
        event = ev.GroupMessage(group.name, sender.name, text, now)
        recipients: dict[Member, None] = {sender: None}
        for name in group.members:
            member = self.lookup(name)
            if member is None:
                unknown.append(name)
            else:
                recipients[member] = None
        deliver_event(recipients, event)

    def broadcast(self, sender: Member, text: str) -> None:
        """``@ALL:`` -- to everyone connected, the sender included."""
        deliver_event(self.users.values(), ev.Broadcast(sender.name, text, time.time()))

    def define_group(self, owner: Member, name: str, members: tuple[str, ...]) -> Group:
        if not _GROUP_RE.fullmatch(name):
            raise RemoteProtocolError(
                ErrorCode.BAD_COMMAND,
                f"invalid group name {name[:70]!r}: '#' then 1-63 letters, digits, '_' or '-'; "
                "usage: /group #NAME NAME,NAME...",
            )
        for person in members:
            if person.startswith("#"):
                raise RemoteProtocolError(
                    ErrorCode.BAD_COMMAND,
                    f"a group may not contain a group ({person}); usage: /group #NAME NAME,NAME...",
                )
            validate_name(person)
        key = fold_name(name)
        existing = self.groups.get(key)
        if existing is not None and existing.owner is not owner:
            raise ChatError(
                ErrorCode.BAD_COMMAND, f"group {existing.name} belongs to {existing.owner.name}"
            )
        group = self.groups[key] = Group(name, owner, members)
        return group

    def find_group(self, name: str) -> Group:
        group = self.groups.get(fold_name(name))
        if group is None:
            raise ChatError(ErrorCode.NO_SUCH_RECIPIENT, f"no such group: {name}")
        return group

    def names(self) -> list[str]:
        return sorted((m.name for m in self.users.values()), key=str.casefold)

    def messages_out(self) -> int:
        """Room messages delivered to members so far, one per member reached."""
        open_rooms = sum(room.messages_out for room in self.rooms.values())
        return self.counters.delivered_by_freed_rooms + open_rooms

    # -- rooms ------------------------------------------------------------------------

    def room_name(self, name: str) -> str:
        """How an existing room is spelled (rooms are case-insensitive), else ``name``."""
        room = self.rooms.get(fold_name(name))
        return name if room is None else room.name

    def join(self, member: Member, room_name: str) -> Room:
        """Move ``member`` into a room, creating it if needed; everyone there is told."""
        validate_room(room_name)
        key = fold_name(room_name)
        room = self.rooms.get(key)
        if room is not None and room is member.room:
            return room
        if member.room is not None:
            self.leave(member)
        if room is None:
            room = self.rooms[key] = self.room_factory(
                room_name, first_id=self.history.last_id(room_name), on_messages=self._record
            )
            self._spawn(room.run)
        room.add(member)
        member.room = room
        room.broadcast_event(ev.Join(room.name, member.name))
        if self._log is not None:
            self._log.join(room.name, member.name)
        return room

    def _record(self, published: RoomPass) -> None:
        if self.keeps_history:
            self.history.record_rows(published.rows)
        if self._on_messages is not None:
            self._on_messages(published)

    def leave(self, member: Member, reason: str = "") -> None:
        room = member.room
        if room is None:
            return
        room.remove(member)
        member.room = None
        room.broadcast_event(ev.Leave(room.name, member.name, reason))
        if self._log is not None:
            self._log.leave(room.name, member.name, reason)
        if not room.members:
            del self.rooms[fold_name(room.name)]
            self.counters.delivered_by_freed_rooms += room.messages_out
            room.close()
