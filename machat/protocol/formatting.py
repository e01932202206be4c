"""Turn server events into wire bytes, in the text or the JSON format.

Text format (one line each, MaChat-compatible for room messages):

- room message: ``<name>:<text>``
- notice: ``* <text>``
- error: ``! ERROR <code> <text>``

JSON format: one object per line with a ``type`` key (docs/PROTOCOL.md).
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import events as ev

__all__ = [
    "Format",
    "encode",
    "encode_json",
    "encode_messages_text",
    "encode_rows_text",
    "encode_text",
    "format_time",
    "text_run",
]


class Format(enum.Enum):
    TEXT = "text"
    JSON = "json"


def format_time(ts: float) -> str:
    """``2026-11-21 14:03:07``: the UTC time of a unix timestamp, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _line(text: str) -> bytes:
    return (text + "\n").encode("utf-8")


def _message_text(m: ev.Message) -> str:
    return f"{m.sender}:{m.text}"


def _message_json(m: ev.Message) -> dict[str, Any]:
    return {
        "type": "message",
        "room": m.room,
        "from": m.sender,
        "text": m.text,
        "id": m.id,
        "ts": m.ts,
    }


def _history_text(h: ev.History) -> str:
    lines = [] if h.complete else [f"* some earlier messages of {h.room} are no longer kept"]
    if not h.messages:
        lines.append(f"* no history in {h.room}")
    lines.extend(f"* [{format_time(m.ts)}] {_message_text(m)}" for m in h.messages)
    return "\n".join(lines)


def _history_json(h: ev.History) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "type": "history",
        "room": h.room,
        "messages": [_message_json(m) for m in h.messages],
    }
    if not h.complete:
        obj["complete"] = False
    return obj


def _leave_text(e: ev.Leave) -> str:
    suffix = f" ({e.reason})" if e.reason else ""
    return f"* {e.name} left {e.room}{suffix}"


def _welcome_text(e: ev.Welcome) -> str:
    text = f"* Welcome {e.name}! You are in room {e.room}. Type /help for commands."
    if e.motd:
        text += f"\n* {e.motd}"
    return text


def _room_list_text(e: ev.RoomList) -> str:
    topics = dict(e.topics)
    entries = []
    for room, count in e.rooms:
        topic = topics.get(room)
        entries.append(f"{room} ({count}, topic: {topic})" if topic else f"{room} ({count})")
    return "* rooms: " + ", ".join(entries)


def _room_list_json(e: ev.RoomList) -> dict[str, Any]:
    topics = dict(e.topics)
    rooms = []
    for room, count in e.rooms:
        entry: dict[str, Any] = {"room": room, "members": count}
        if topics.get(room):
            entry["topic"] = topics[room]
        rooms.append(entry)
    return {"type": "rooms", "rooms": rooms}


def _topic_text(e: ev.Topic) -> str:
    if not e.text:
        return f"* no topic in {e.room}"
    by = f" (set by {e.by})" if e.by else ""
    return f"* topic of {e.room}: {e.text}{by}"


_PAST = {"kick": "kicked", "ban": "banned", "unban": "unbanned", "mute": "muted",
         "unmute": "unmuted"}  # fmt: skip


def _moderation_text(e: ev.Moderation) -> str:
    text = f"* {e.name} was {_PAST[e.action]} by {e.by}"
    if e.action in ("ban", "mute"):
        minutes = "minute" if e.minutes == 1 else "minutes"
        text += f" for {e.minutes} {minutes}" if e.minutes else f" until /un{e.action}"
    if e.reason:
        text += f" ({e.reason})"
    return text


_TEXT: dict[type, Callable[[Any], str]] = {
    ev.Welcome: _welcome_text,
    ev.Message: _message_text,
    ev.Join: lambda e: f"* {e.name} joined {e.room}",
    ev.Leave: _leave_text,
    ev.Nick: lambda e: f"* {e.old} is now known as {e.new}",
    ev.Info: lambda e: f"* {e.text}",
    ev.Error: lambda e: f"! ERROR {int(e.code)} {e.message}",
    ev.Private: lambda e: f"[private] {e.sender}:{e.text}",
    ev.GroupMessage: lambda e: f"[{e.group}] {e.sender}:{e.text}",
    ev.Broadcast: lambda e: f"[all] {e.sender}:{e.text}",
    ev.Sent: lambda e: f"* sent to {', '.join(e.targets)}",
    ev.Users: lambda e: f"* users: {', '.join(e.names)}",
    ev.Members: lambda e: f"* {e.room}: {', '.join(e.names)}",
    ev.RoomList: _room_list_text,
    ev.History: _history_text,
    ev.Topic: _topic_text,
    ev.Moderation: _moderation_text,
}

_JSON: dict[type, Callable[[Any], dict[str, Any]]] = {
    ev.Welcome: lambda e: {"type": "welcome", "name": e.name, "room": e.room, "motd": e.motd},
    ev.Message: _message_json,
    ev.Join: lambda e: {"type": "join", "room": e.room, "name": e.name},
    ev.Leave: lambda e: {"type": "leave", "room": e.room, "name": e.name, "reason": e.reason},
    ev.Nick: lambda e: {"type": "nick", "old": e.old, "new": e.new},
    ev.Info: lambda e: {"type": "info", "text": e.text},
    ev.Error: lambda e: {"type": "error", "code": int(e.code), "message": e.message},
    ev.Private: lambda e: {"type": "private", "from": e.sender, "text": e.text, "ts": e.ts},
    ev.GroupMessage: lambda e: {
        "type": "group",
        "group": e.group,
        "from": e.sender,
        "text": e.text,
        "ts": e.ts,
    },
    ev.Broadcast: lambda e: {"type": "broadcast", "from": e.sender, "text": e.text, "ts": e.ts},
    ev.Sent: lambda e: {"type": "sent", "to": list(e.targets)},
    ev.Users: lambda e: {"type": "users", "names": list(e.names)},
    ev.Members: lambda e: {"type": "members", "room": e.room, "names": list(e.names)},
    ev.RoomList: _room_list_json,
    ev.History: _history_json,
    ev.Topic: lambda e: {"type": "topic", "room": e.room, "text": e.text, "by": e.by, "ts": e.ts},
    ev.Moderation: lambda e: {
        "type": "moderation",
        "action": e.action,
        "name": e.name,
        "by": e.by,
        "reason": e.reason,
        "minutes": e.minutes,
    },
}


def encode_text(event: ev.Event) -> bytes:
    return _line(_TEXT[type(event)](event))


def encode_messages_text(messages: Sequence[ev.Message]) -> bytes:
    """``b"".join(map(encode_text, messages))``, with one UTF-8 encoding for them all
    (a room's pass)."""
    return "".join([f"{m.sender}:{m.text}\n" for m in messages]).encode("utf-8")


def encode_rows_text(rows: Sequence[tuple[str, str, str, int, float]]) -> bytes:
    """`encode_messages_text` of messages kept as (room, sender, text, id, ts) rows."""
    return "".join([f"{row[1]}:{row[2]}\n" for row in rows]).encode("utf-8")


def text_run(sender: str, texts: Sequence[str]) -> str:
    """The text format of one sender's consecutive messages (one or more), not yet
    encoded: ``encode_messages_text`` of them is the UTF-8 of this (a room's pass
    joins runs)."""
    head = sender + ":"
    return head + ("\n" + head).join(texts) + "\n"


def encode_json(event: ev.Event) -> bytes:
    obj = _JSON[type(event)](event)
    return _line(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))


def encode(event: ev.Event, fmt: Format) -> bytes:
    return encode_text(event) if fmt is Format.TEXT else encode_json(event)
