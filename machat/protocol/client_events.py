"""The client's side of the JSON format: one server line in, one typed event out.

`decode_server_line` is the inverse of `machat.protocol.formatting.encode_json` and
returns the same event classes (`machat.protocol.events`). It is written for a client,
so it is lenient where a server may grow: unknown keys are ignored, and a line it
cannot read (not JSON, an unknown ``type``, a missing or mistyped field) becomes an
`Unrecognized` event carrying the line, never an exception. Nothing here does I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import attrs

from . import events as ev
from .errors import ErrorCode

__all__ = ["ServerEvent", "Unrecognized", "decode_server_line"]


@attrs.frozen
class Unrecognized:
    """A line that is not a JSON event this client knows; ``text`` is the line."""

    text: str


ServerEvent = ev.Event | Unrecognized
"""What a server line decodes to."""


class _Bad(Exception):
    """A field is missing or has the wrong type."""


def _str(obj: dict[str, Any], key: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise _Bad(key)
    return value


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(key)
    return value


def _ts(obj: dict[str, Any]) -> float:
    value = obj.get("ts")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Bad("ts")
    return float(value)


def _names(obj: dict[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key)
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise _Bad(key)
    return tuple(value)


def _message(obj: Any) -> ev.Message:
    if not isinstance(obj, dict):
        raise _Bad("messages")
    return ev.Message(
        room=_str(obj, "room"),
        sender=_str(obj, "from"),
        text=_str(obj, "text"),
        id=_int(obj, "id"),
        ts=_ts(obj),
    )


def _error(obj: dict[str, Any]) -> ev.Error:
    code = _int(obj, "code")
    try:
        error_code = ErrorCode(code)
    except ValueError:
        raise _Bad("code") from None
    return ev.Error(code=error_code, message=_str(obj, "message"))


def _rooms(obj: dict[str, Any]) -> ev.RoomList:
    rooms = obj.get("rooms")
    if not isinstance(rooms, list):
        raise _Bad("rooms")
    pairs = []
    topics = []
    for entry in rooms:
        if not isinstance(entry, dict):
            raise _Bad("rooms")
        pairs.append((_str(entry, "room"), _int(entry, "members")))
        if "topic" in entry:
            topics.append((pairs[-1][0], _str(entry, "topic")))
    return ev.RoomList(rooms=tuple(pairs), topics=tuple(topics))


def _moderation(obj: dict[str, Any]) -> ev.Moderation:
    action = _str(obj, "action")
    if action not in ev.MODERATION_ACTIONS:
        raise _Bad("action")
    minutes = obj.get("minutes", 0)
    if isinstance(minutes, bool) or not isinstance(minutes, int):
        raise _Bad("minutes")
    return ev.Moderation(
        action=action,
        name=_str(obj, "name"),
        by=_str(obj, "by"),
        reason=_str(obj, "reason", ""),
        minutes=minutes,
    )


def _history(obj: dict[str, Any]) -> ev.History:
    messages = obj.get("messages")
    if not isinstance(messages, list):
        raise _Bad("messages")
    complete = obj.get("complete", True)
    if not isinstance(complete, bool):
        raise _Bad("complete")
    return ev.History(
        room=_str(obj, "room"), messages=tuple(_message(m) for m in messages), complete=complete
    )


_DECODERS: dict[str, Callable[[dict[str, Any]], ServerEvent]] = {
    "welcome": lambda o: ev.Welcome(
        name=_str(o, "name"), room=_str(o, "room"), motd=_str(o, "motd", "")
    ),
    "message": _message,
    "join": lambda o: ev.Join(room=_str(o, "room"), name=_str(o, "name")),
    "leave": lambda o: ev.Leave(
        room=_str(o, "room"), name=_str(o, "name"), reason=_str(o, "reason", "")
    ),
    "nick": lambda o: ev.Nick(old=_str(o, "old"), new=_str(o, "new")),
    "info": lambda o: ev.Info(text=_str(o, "text")),
    "error": _error,
    "private": lambda o: ev.Private(sender=_str(o, "from"), text=_str(o, "text"), ts=_ts(o)),
    "group": lambda o: ev.GroupMessage(
        group=_str(o, "group"), sender=_str(o, "from"), text=_str(o, "text"), ts=_ts(o)
    ),
    "broadcast": lambda o: ev.Broadcast(sender=_str(o, "from"), text=_str(o, "text"), ts=_ts(o)),
    "sent": lambda o: ev.Sent(targets=_names(o, "to")),
    "users": lambda o: ev.Users(names=_names(o, "names")),
    "members": lambda o: ev.Members(room=_str(o, "room"), names=_names(o, "names")),
    "rooms": _rooms,
    "history": _history,
    "topic": lambda o: ev.Topic(
        room=_str(o, "room"), text=_str(o, "text"), by=_str(o, "by", ""), ts=_ts(o)
    ),
    "moderation": _moderation,
}


def decode_server_line(line: str) -> ServerEvent:
    """The event a JSON-format server line stands for, or `Unrecognized`."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return Unrecognized(line)
    if not isinstance(obj, dict):
        return Unrecognized(line)
    kind = obj.get("type")
    decoder = _DECODERS.get(kind) if isinstance(kind, str) else None
    if decoder is None:
        return Unrecognized(line)
    try:
        return decoder(obj)
    except _Bad:
        return Unrecognized(line)
