"""Accounts and moderation as the server uses them: admission checks and the commands.

`check_admission` runs for every handshake, after the server password: a banned
name is refused (117), a registered name needs its password as ``"auth"`` (114),
then a banned address is refused (117) unless the client logged in to a
registered name.  The command handlers here are async (hashing and the stores run
on worker threads); `machat.server.handlers` dispatches to them through
`HANDLERS`.

A member is logged in to the account whose password it gave (``member.account``,
the folded name); it is an operator while its current name is that account and is
listed as an operator (``operators`` in the config, ``--operator``).  Everyone else
gets ``116 not permitted`` from the operator commands.

Every moderation act is logged (logger ``machat.server.moderation``) and written
to the transcript.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..protocol import commands as cmd
from ..protocol import events as ev
from ..protocol.errors import ChatError, ErrorCode
from ..protocol.formatting import encode
from ..protocol.handshake import Handshake, fold_name, validate_name
from .accounts import Accounts
from .member import Member
from .moderation import Ban, describe_until

if TYPE_CHECKING:
    from .server import ChatServer

__all__ = [
    "HANDLERS",
    "check_admission",
    "check_speech",
    "is_operator",
    "removed",
    "send_topic",
]

logger = logging.getLogger("machat.server.moderation")

#: How long a kicked member's connection may take to get its notice out.
KICK_GRACE = 2.0

_AUTH_HINT = 'send its password as "auth" in the handshake'


# -- admission and speech -------------------------------------------------------------


def _banned(ban: Ban, *, by_address: bool) -> ChatError:
    who = "your address" if by_address else ban.name
    why = f" ({ban.reason})" if ban.reason else ""
    return ChatError(ErrorCode.BANNED, f"banned: {who} is banned {describe_until(ban.until)}{why}")


async def check_admission(server: ChatServer, member: Member, handshake: Handshake) -> None:
    """Refuse a banned name or address, or a registered name without its password."""
    moderation = server.moderation
    await moderation.refresh()  # in a cluster: what the other nodes decided
    ban = moderation.find_ban(handshake.name, None, authenticated=True)
    if ban is not None:
        raise _banned(ban, by_address=False)
    authenticated = False
    if server.accounts is not None:
        authenticated = await server.accounts.authenticate(
            handshake.name, handshake.auth, hint=_AUTH_HINT
        )
    ban = moderation.find_ban(handshake.name, member.ip, authenticated=authenticated)
    if ban is not None:
        raise _banned(ban, by_address=True)
    if authenticated:
        member.account = fold_name(handshake.name)


def check_speech(server: ChatServer, member: Member) -> None:
    """Raise 115 if the member is muted: what it says in rooms is relayed to nobody."""
    mute = server.moderation.muted(member.name)
    if mute is not None:
        raise ChatError(
            ErrorCode.MUTED,
            f"muted: {mute.by} muted you {describe_until(mute.until)}; nobody hears you",
        )


def removed(server: ChatServer, member: Member) -> bool:
    """Whether the member was kicked or banned (it is no longer among the users)."""
    return server.state.lookup(member.name) is not member


def send_topic(server: ChatServer, member: Member, room: str) -> None:
    """Show a room's topic to a member who just came in, if it has one."""
    topic = server.moderation.topic(room)
    if topic is not None:
        member.send_event(ev.Topic(room, topic.text, topic.by, topic.ts))


def is_operator(server: ChatServer, member: Member) -> bool:
    key = fold_name(member.name)
    return member.account == key and server.moderation.is_operator_name(member.name)


def _require_operator(server: ChatServer, member: Member, word: str) -> None:
    if not is_operator(server, member):
        raise ChatError(
            ErrorCode.NOT_PERMITTED,
            f"not permitted: /{word} is for operators, logged in with their password",
        )


def _accounts(server: ChatServer) -> Accounts:
    if server.accounts is None:
        raise ChatError(
            ErrorCode.NOT_PERMITTED, "not permitted: accounts need a server started with --db"
        )
    return server.accounts


def _record(server: ChatServer, room: str | None, text: str) -> None:
    """Log a moderation act and write it to the transcript."""
    logger.info("moderation: %s%s", f"[{room}] " if room else "", text)
    if server.transcript is not None:
        server.transcript.notice(room, text)


def _online(server: ChatServer, name: str) -> Member:
    validate_name(name)
    target = server.state.lookup(name)
    if target is None:
        raise ChatError(ErrorCode.NO_SUCH_RECIPIENT, f"no such user: {name}")
    return target


def _not_yourself(member: Member, name: str, word: str) -> None:
    if fold_name(name) == fold_name(member.name):
        raise ChatError(ErrorCode.BAD_COMMAND, f"you cannot /{word} yourself")


def _disconnect(server: ChatServer, target: Member, event: ev.Moderation, reason: str) -> None:
    """Take ``target`` out at once (its room sees it leave), tell it why, and close."""
    server.state.unregister(target, reason)
    target.sender.close(encode(event, target.fmt))
    if target.cancel_scope is not None:
        target.cancel_scope.deadline = min(
            target.cancel_scope.deadline, trio.current_time() + KICK_GRACE
        )


async def carry_out(server: ChatServer, event: ev.Moderation | ev.Topic) -> None:
    """What another node's operator did, done to this node's users (a cluster; the
    moderation state itself was re-read from the shared store first)."""
    if isinstance(event, ev.Topic):
        room = server.state.rooms.get(fold_name(event.room))
        if room is not None:
            room.broadcast_event(attrs.evolve(event, room=room.name))
        return
    target = server.state.lookup(event.name)
    if target is None or event.action == "unban":
        return
    if event.action == "ban" and await _easily_renamed(server, target):
        # The operator's node could not know the address: hold it from here, as a
        # ban made on this node would.
        await server.moderation.ban(
            target.name, by=event.by, minutes=event.minutes, reason=event.reason,
            address=target.ip,
        )  # fmt: skip
    if event.action in ("kick", "ban"):
        verb = "kicked" if event.action == "kick" else "banned"
        _disconnect(server, target, event, f"{verb} by {event.by}{_because(event.reason)}")
    else:  # mute, unmute: the member hears of it
        target.send_event(event)


async def _easily_renamed(server: ChatServer, target: Member) -> bool:
    """Whether a ban of ``target`` should hold its address too: it has one, and its
    name is not registered (an unregistered name is easily changed)."""
    if not target.ip:
        return False
    accounts = server.accounts
    return accounts is None or not await accounts.is_registered(target.name)


async def _spelling(server: ChatServer, target: Member | None, name: str) -> str:
    """How ``name`` is spelled: as the member here has it, else as someone online on
    another node does (a cluster), else as given."""
    if target is not None:
        return target.name
    return await server.find_elsewhere(name) or name


def _because(reason: str) -> str:
    return f" ({reason})" if reason else ""


def _for(minutes: int) -> str:
    if not minutes:
        return ""
    return f" for {minutes} minute{'s' if minutes != 1 else ''}"


# -- accounts -----------------------------------------------------------------------


async def _nick(server: ChatServer, member: Member, c: cmd.Nick) -> None:
    validate_name(c.name)
    if fold_name(c.name) != fold_name(member.name):
        check_speech(server, member)  # a new name would shed the mute
        ban = server.moderation.find_ban(c.name, None, authenticated=True)
        if ban is not None:
            raise _banned(ban, by_address=False)
    key = fold_name(c.name)
    logged_in = member.account == key
    if server.accounts is not None and not logged_in:
        hint = f"use /nick {c.name} PASSWORD"
        logged_in = await server.accounts.authenticate(c.name, c.password, hint=hint)
    server.state.rename(member, c.name)
    if logged_in:
        member.account = key


async def _register(server: ChatServer, member: Member, c: cmd.Register) -> None:
    name = member.name
    await _accounts(server).register(name, c.password)
    member.account = fold_name(name)
    member.send_event(
        ev.Info(f"{name} is registered to you; from now on it needs its password to join")
    )


async def _password(server: ChatServer, member: Member, c: cmd.Password) -> None:
    await _accounts(server).change_password(member.name, c.old, c.new)
    member.send_event(ev.Info(f"password changed for {member.name}"))


async def _unregister(server: ChatServer, member: Member, c: cmd.Unregister) -> None:
    await _accounts(server).unregister(member.name, c.password)
    member.account = None
    member.send_event(ev.Info(f"{member.name} is no longer registered"))


# -- moderation ---------------------------------------------------------------------


async def _kick(server: ChatServer, member: Member, c: cmd.Kick) -> None:
    _require_operator(server, member, "kick")
    validate_name(c.name)
    if server.state.lookup(c.name) is None and (spelled := await server.find_elsewhere(c.name)):
        event = ev.Moderation("kick", spelled, member.name, c.reason)
        server.moderated(event)  # its node takes it out
        _record(server, None, f"{member.name} kicked {spelled}{_because(c.reason)}")
        member.send_event(event)
        return
    target = _online(server, c.name)
    _not_yourself(member, c.name, "kick")
    room = target.room.name if target.room is not None else None
    event = ev.Moderation("kick", target.name, member.name, c.reason)
    _disconnect(server, target, event, f"kicked by {member.name}{_because(c.reason)}")
    _record(server, room, f"{member.name} kicked {target.name}{_because(c.reason)}")
    member.send_event(event)


async def _ban(server: ChatServer, member: Member, c: cmd.Ban) -> None:
    _require_operator(server, member, "ban")
    validate_name(c.name)
    _not_yourself(member, c.name, "ban")
    target = server.state.lookup(c.name)
    name = await _spelling(server, target, c.name)
    address = None
    if target is not None and await _easily_renamed(server, target):
        address = target.ip  # hold its address too
    await server.moderation.ban(
        name, by=member.name, minutes=c.minutes, reason=c.reason, address=address
    )
    event = ev.Moderation("ban", name, member.name, c.reason, c.minutes)
    room = None
    if target is not None and not removed(server, target):
        room = target.room.name if target.room is not None else None
        reason = f"banned by {member.name}{_because(c.reason)}"
        _disconnect(server, target, event, reason)
    server.moderated(event)  # another node may have the name online
    also = f" and {address}" if address else ""
    _record(server, room, f"{member.name} banned {name}{also}{_for(c.minutes)}{_because(c.reason)}")
    member.send_event(event)


async def _unban(server: ChatServer, member: Member, c: cmd.Unban) -> None:
    _require_operator(server, member, "unban")
    await server.moderation.refresh()
    ban = await server.moderation.unban(c.name)
    if ban is None:
        raise ChatError(ErrorCode.NO_SUCH_RECIPIENT, f"{c.name} is not banned")
    _record(server, None, f"{member.name} unbanned {ban.name}")
    event = ev.Moderation("unban", ban.name, member.name)
    server.moderated(event)
    member.send_event(event)


async def _bans(server: ChatServer, member: Member, c: cmd.Bans) -> None:
    _require_operator(server, member, "bans")
    await server.moderation.refresh()
    bans = server.moderation.bans()
    if not bans:
        member.send_event(ev.Info("no bans"))
    for ban in bans:
        also = f" and {ban.address}" if ban.address else ""
        member.send_event(
            ev.Info(
                f"ban: {ban.name}{also} by {ban.by} {describe_until(ban.until)}"
                f"{_because(ban.reason)}"
            )
        )


async def _mute(server: ChatServer, member: Member, c: cmd.Mute) -> None:
    _require_operator(server, member, "mute")
    validate_name(c.name)
    _not_yourself(member, c.name, "mute")
    target = server.state.lookup(c.name)
    name = await _spelling(server, target, c.name)
    await server.moderation.mute(name, by=member.name, minutes=c.minutes)
    event = ev.Moderation("mute", name, member.name, minutes=c.minutes)
    room = None
    if target is not None:
        room = target.room.name if target.room is not None else None
        target.send_event(event)
    server.moderated(event)
    _record(server, room, f"{member.name} muted {name}{_for(c.minutes)}")
    member.send_event(event)


async def _unmute(server: ChatServer, member: Member, c: cmd.Unmute) -> None:
    _require_operator(server, member, "unmute")
    await server.moderation.refresh()
    mute = await server.moderation.unmute(c.name)
    if mute is None:
        raise ChatError(ErrorCode.NO_SUCH_RECIPIENT, f"{c.name} is not muted")
    event = ev.Moderation("unmute", mute.name, member.name)
    target = server.state.lookup(c.name)
    room = None
    if target is not None:
        room = target.room.name if target.room is not None else None
        target.send_event(event)
    server.moderated(event)
    _record(server, room, f"{member.name} unmuted {mute.name}")
    member.send_event(event)


async def _topic(server: ChatServer, member: Member, c: cmd.Topic) -> None:
    room = member.room
    if room is None:
        raise ChatError(ErrorCode.INVALID_ROOM, "you are in no room")
    if c.text is None:
        await server.moderation.refresh()
        topic = server.moderation.topic(room.name)
        if topic is None:
            member.send_event(ev.Topic(room.name, ""))
        else:
            member.send_event(ev.Topic(room.name, topic.text, topic.by, topic.ts))
        return
    _require_operator(server, member, "topic")
    topic = await server.moderation.set_topic(room.name, c.text, by=member.name)
    if topic is None:
        event = ev.Topic(room.name, "", member.name)
        _record(server, room.name, f"{member.name} cleared the topic")
    else:
        event = ev.Topic(room.name, topic.text, topic.by, topic.ts)
        _record(server, room.name, f"{member.name} set the topic: {topic.text}")
    room.broadcast_event(event)
    server.moderated(event)


HANDLERS: dict[type, Callable[[ChatServer, Member, Any], Awaitable[None]]] = {
    cmd.Nick: _nick,
    cmd.Register: _register,
    cmd.Password: _password,
    cmd.Unregister: _unregister,
    cmd.Kick: _kick,
    cmd.Ban: _ban,
    cmd.Unban: _unban,
    cmd.Bans: _bans,
    cmd.Mute: _mute,
    cmd.Unmute: _unmute,
    cmd.Topic: _topic,
}
