"""What the server says to a client: small frozen event classes.

The server builds events; `machat.protocol.formatting` turns them into the bytes of
the text or the JSON wire format. Nothing here does I/O.
"""

from __future__ import annotations

import attrs

from .errors import ErrorCode

__all__ = [
    "Broadcast",
    "Error",
    "Event",
    "GroupMessage",
    "History",
    "Info",
    "Join",
    "Leave",
    "Members",
    "Message",
    "Moderation",
    "Nick",
    "Private",
    "RoomList",
    "Sent",
    "Topic",
    "Users",
    "Welcome",
]


@attrs.frozen
class Welcome:
    """Sent once, right after a handshake is accepted."""

    name: str
    room: str
    motd: str = ""


@attrs.frozen
class Message:
    """A line said in a room. ``id`` increases per room; ``ts`` is unix seconds."""

    room: str
    sender: str
    text: str
    id: int
    ts: float


@attrs.frozen
class Join:
    room: str
    name: str


@attrs.frozen
class Leave:
    room: str
    name: str
    reason: str = ""


@attrs.frozen
class Nick:
    old: str
    new: str


@attrs.frozen
class Info:
    """A free-form notice (``* text``)."""

    text: str


@attrs.frozen
class Error:
    code: ErrorCode
    message: str


@attrs.frozen
class Private:
    sender: str
    text: str
    ts: float


@attrs.frozen
class GroupMessage:
    group: str
    sender: str
    text: str
    ts: float


@attrs.frozen
class Broadcast:
    sender: str
    text: str
    ts: float


@attrs.frozen
class Sent:
    """Confirms to the sender of a private message who received it."""

    targets: tuple[str, ...]


@attrs.frozen
class Users:
    """Everyone online (``/list``)."""

    names: tuple[str, ...]


@attrs.frozen
class Members:
    """The members of one room (``/who``)."""

    room: str
    names: tuple[str, ...]


@attrs.frozen
class RoomList:
    """Rooms with their member counts (``/rooms``), and the topics of those that have one."""

    rooms: tuple[tuple[str, int], ...]
    topics: tuple[tuple[str, str], ...] = ()  # (room, topic)


@attrs.frozen
class Topic:
    """A room's topic: on join, on ``/topic``, and to the room when it changes.

    ``text`` is empty when the room has none; ``by`` and ``ts`` (unix seconds) say
    who set it and when.
    """

    room: str
    text: str
    by: str = ""
    ts: float = 0.0


#: What `Moderation.action` can be.
MODERATION_ACTIONS = ("kick", "ban", "unban", "mute", "unmute")


@attrs.frozen
class Moderation:
    """An operator acted on someone: told to that someone and to the operator.

    ``minutes`` is the length of a ban or mute, 0 for until lifted.
    """

    action: str = attrs.field(validator=attrs.validators.in_(MODERATION_ACTIONS))
    name: str
    by: str
    reason: str = ""
    minutes: int = 0


@attrs.frozen
class History:
    """Past messages of a room, oldest first (``/history``, or the handshake's
    ``history`` or ``since``).  ``complete`` is False when some of the messages
    asked for are no longer kept."""

    room: str
    messages: tuple[Message, ...]
    complete: bool = True


Event = (
    Welcome
    | Message
    | Join
    | Leave
    | Nick
    | Info
    | Error
    | Private
    | GroupMessage
    | Broadcast
    | Sent
    | Users
    | Members
    | RoomList
    | History
    | Topic
    | Moderation
)
