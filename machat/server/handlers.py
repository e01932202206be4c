"""What the server does with each line a member sends.

`parse_line` (sans-IO) turns the line into a command; `dispatch` runs it against
the server's state.  Only saying something in a room awaits (the room's channel
may be full); every other command is a synchronous change plus replies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ..protocol import commands as cmd
from ..protocol import events as ev
from ..protocol.errors import ChatError, ErrorCode
from ..protocol.handshake import fold_name
from . import admin
from .member import Member

if TYPE_CHECKING:
    from .server import ChatServer

__all__ = ["dispatch", "say_nowait", "settle"]

#: How long a leaving member waits for its own last lines to be fanned out.
SETTLE_TIMEOUT = 1.0


async def dispatch(server: ChatServer, member: Member, text: str) -> str | None:
    """Act on one decoded line; returns a leave reason when the member quits."""
    if admin.removed(server, member):
        return "removed"  # kicked or banned: the connection is on its way out
    command = cmd.parse_line(text)
    if type(command) is cmd.Say:
        await _say(server, member, command.text)
        return None
    if type(command) is cmd.Quit:
        await settle(member)  # its last lines reach the room (and its own echo) first
        member.send_event(ev.Info("bye"))
        return command.reason or "quit"
    if type(command) in _AFTER_OWN_LINES:
        await settle(member)  # the room hears what was said before the member moves on
    handler = admin.HANDLERS.get(type(command))
    if handler is not None:
        await handler(server, member, command)
        return None
    _HANDLERS[type(command)](server, member, command)
    return None


def say_nowait(server: ChatServer, member: Member, texts: list[str]) -> bool:
    """`dispatch` for the commonest lines, plain ones (`cmd.is_plain_line`) into the
    member's room, when they can be queued at once, as one item of the room's
    channel.  False leaves them to `dispatch`, one by one (which then decides as for
    any line: mutes, removals, a full room)."""
    room = member.room
    if room is None:
        return False
    if server.state.lookup(member.name) is not member or server.moderation.muted(member.name):
        return False
    try:
        room.send_many_nowait(member.name, texts)
    except (trio.WouldBlock, trio.ClosedResourceError):
        return False
    server.state.counters.messages_in += len(texts)
    return True


async def settle(member: Member) -> None:
    """Wait (bounded) until the lines the member has said have been fanned out."""
    room = member.room
    if room is not None:
        with trio.move_on_after(SETTLE_TIMEOUT):
            await room.barrier()


async def _say(server: ChatServer, member: Member, text: str) -> None:
    room = member.room
    if not text or room is None:
        return
    admin.check_speech(server, member)
    server.state.counters.messages_in += 1
    try:
        # Queue without yielding while the room's channel has room: the room task then
        # fans out many lines at once and every writer sends them in one call.
        room.send_nowait(member.name, text)
    except trio.WouldBlock:
        try:
            await room.send(member.name, text)
        except trio.ClosedResourceError:
            pass
    except trio.ClosedResourceError:  # the room closed under us: shutting down
        pass


def _list(server: ChatServer, member: Member, c: cmd.ListUsers) -> None:
    member.send_event(ev.Users(tuple(server.state.names())))


def _who(server: ChatServer, member: Member, c: cmd.Who) -> None:
    if c.room is None:
        room = member.room
    else:
        room = server.state.rooms.get(fold_name(c.room))
    if room is None:
        raise ChatError(ErrorCode.INVALID_ROOM, f"no such room: {c.room}")
    member.send_event(ev.Members(room.name, tuple(room.names())))


def _rooms(server: ChatServer, member: Member, c: cmd.Rooms) -> None:
    rooms = sorted(server.state.rooms.values(), key=lambda r: r.name.casefold())
    topics = ((r.name, server.moderation.topic(r.name)) for r in rooms)
    member.send_event(
        ev.RoomList(
            tuple((r.name, len(r)) for r in rooms),
            tuple((name, topic.text) for name, topic in topics if topic is not None),
        )
    )


def _join(server: ChatServer, member: Member, c: cmd.Join) -> None:
    before = member.room
    room = server.state.join(member, c.room)
    if room is not before:
        admin.send_topic(server, member, room.name)


def _msg(server: ChatServer, member: Member, c: cmd.Msg) -> None:
    server.state.send_private(member, c.targets, c.text)


def _broadcast(server: ChatServer, member: Member, c: cmd.Broadcast) -> None:
    admin.check_speech(server, member)
    server.state.broadcast(member, c.text)


def _group(server: ChatServer, member: Member, c: cmd.Group) -> None:
    state = server.state
    group = (
        state.find_group(c.name)
        if c.members is None
        else state.define_group(member, c.name, c.members)
    )
    member.send_event(ev.Members(group.name, group.members))


def _help(server: ChatServer, member: Member, c: cmd.Help) -> None:
    for line in cmd.help_lines(c.command):
        member.send_event(ev.Info(line))


def _history(server: ChatServer, member: Member, c: cmd.History) -> None:
    server.send_history(member, c.count)


def _stats(server: ChatServer, member: Member, c: cmd.Stats) -> None:
    member.send_event(ev.Info(server.statistics().format()))


#: Commands the room must see after the member's earlier lines.
_AFTER_OWN_LINES = frozenset({cmd.Nick, cmd.Join})

_HANDLERS: dict[type, Callable[[ChatServer, Member, Any], None]] = {
    cmd.ListUsers: _list,
    cmd.Who: _who,
    cmd.Rooms: _rooms,
    cmd.Join: _join,
    cmd.Msg: _msg,
    cmd.Broadcast: _broadcast,
    cmd.Group: _group,
    cmd.Help: _help,
    cmd.History: _history,
    cmd.Stats: _stats,
}
