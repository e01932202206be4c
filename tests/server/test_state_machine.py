"""A hypothesis state machine over `ChatState`, checked against a simple model.

Synchronous, no trio run and no sockets: rooms are driven by hand (`send_nowait`
then `flush_nowait`; the spawn callback starts nothing), and what every member was
sent is read back from its outbox with `take_nowait` after each step.  Commands go
through the real parser where the server does (``/msg``, ``@``, ``/group``), so
the parser's de-duplication is part of what is checked.

The model is deliberately dumb: who is online (unique by `str.casefold`), which
room each person is in, the groups, and the exact lines each member should have
received since the last check.
"""

from __future__ import annotations

import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from machat.protocol.commands import Broadcast, Group, Msg, parse_line
from machat.protocol.errors import ChatError, ErrorCode, RemoteProtocolError
from machat.protocol.formatting import Format
from machat.server.member import Member
from machat.server.state import ChatState
from tests.helpers import QueueSender

#: Names that pass the rules, with case variants that collide.
NAMES = ["Mina", "mina", "Bob", "BOB", "Eve", "Zed-1"]
#: Names the rules refuse (100): reserved, bad first character, space, empty, too long.
BAD_NAMES = ["all", "ALL", "9lives", "a b", "", "x" * 33]
ROOMS = ["dev", "Dev", "ops", "lounge"]
BAD_ROOMS = ["_bad", "a b", ""]
GROUPS = ["#team", "#Team", "#ops"]
TEXTS = st.text(alphabet="ab :/@#*", min_size=1, max_size=6)
PICK = st.integers(min_value=0, max_value=31)


def key(name: str) -> str:
    return name.casefold()


@attrs.define
class Person:
    name: str
    room: str  # the room's key


@attrs.define
class ModelGroup:
    name: str
    owner: Member
    members: tuple[str, ...]


class ChatStateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = ChatState(spawn=lambda fn: None)
        self.people: dict[Member, Person] = {}  # online, in connection order
        self.room_names: dict[str, str] = {}  # room key -> display name, while it exists
        self.groups: dict[str, ModelGroup] = {}
        self.expected: dict[Member, list[str]] = {}  # lines sent since the last check
        self.gone: list[Member] = []  # disconnected: must receive nothing more

    # -- helpers ------------------------------------------------------------------

    def pick(self, i: int) -> Member:
        members = list(self.people)
        return members[i % len(members)]

    def online(self, name: str) -> Member | None:
        for member, person in self.people.items():
            if key(person.name) == key(name):
                return member
        return None

    def in_room(self, room: str) -> list[Member]:
        return [m for m, p in self.people.items() if p.room == room]

    def tell(self, members: list[Member], line: str) -> None:
        for member in members:
            self.expected[member].append(line)

    def model_leave(self, member: Member, reason: str = "") -> None:
        room = self.people[member].room
        self.people[member].room = ""
        suffix = f" ({reason})" if reason else ""
        self.tell(
            self.in_room(room), f"* {self.people[member].name} left {self.room_names[room]}{suffix}"
        )
        if not self.in_room(room):
            del self.room_names[room]

    def model_join(self, member: Member, room_name: str) -> None:
        room = key(room_name)
        self.room_names.setdefault(room, room_name)
        self.people[member].room = room
        self.tell(
            self.in_room(room), f"* {self.people[member].name} joined {self.room_names[room]}"
        )

    def expect_error(self, code: ErrorCode, message: str | None = None) -> pytest.RaisesExc:
        return pytest.raises(
            (ChatError, RemoteProtocolError),
            check=lambda e: e.code is code and (message is None or e.message == message),
        )

    # -- rules ----------------------------------------------------------------------

    @rule(name=st.sampled_from(NAMES), room=st.sampled_from(ROOMS))
    def connect(self, name: str, room: str) -> None:
        member = Member(name, Format.TEXT, QueueSender(1 << 20))
        if self.online(name) is not None:
            with self.expect_error(ErrorCode.NAME_IN_USE):
                self.state.register(member)
            return
        self.state.register(member)
        self.state.join(member, room)
        self.people[member] = Person(name, "")
        self.expected[member] = []
        self.model_join(member, room)

    @precondition(lambda self: self.people)
    @rule(i=PICK, new=st.sampled_from(NAMES + BAD_NAMES))
    def rename(self, i: int, new: str) -> None:
        member = self.pick(i)
        person = self.people[member]
        holder = self.online(new)
        if new in BAD_NAMES:
            with self.expect_error(ErrorCode.INVALID_NAME):
                self.state.rename(member, new)
            return
        if holder is not None and holder is not member:
            with self.expect_error(ErrorCode.NAME_IN_USE):
                self.state.rename(member, new)
            return
        self.state.rename(member, new)
        if new != person.name:
            self.tell(self.in_room(person.room), f"* {person.name} is now known as {new}")
            person.name = new

    @precondition(lambda self: self.people)
    @rule(i=PICK, room=st.sampled_from(ROOMS + BAD_ROOMS))
    def join(self, i: int, room: str) -> None:
        member = self.pick(i)
        if room in BAD_ROOMS:
            with self.expect_error(ErrorCode.INVALID_ROOM):
                self.state.join(member, room)
            return
        self.state.join(member, room)
        if key(room) != self.people[member].room:
            self.model_leave(member)
            self.model_join(member, room)

    @precondition(lambda self: self.people)
    @rule(i=PICK, text=TEXTS)
    def say(self, i: int, text: str) -> None:
        member = self.pick(i)
        person = self.people[member]
        room = member.room
        room.send_nowait(member.name, text)
        room.flush_nowait()
        self.tell(self.in_room(person.room), f"{person.name}:{text}")

    @precondition(lambda self: self.people)
    @rule(
        i=PICK,
        to=st.lists(st.sampled_from(NAMES + ["Ghost"] + GROUPS), min_size=1, max_size=4),
        text=TEXTS,
        at=st.booleans(),
    )
    def private(self, i: int, to: list[str], text: str, at: bool) -> None:
        sender = self.pick(i)
        line = f"@{','.join(to)}: {text}" if at else f"/msg {','.join(to)} {text}"
        if not text.strip():
            with self.expect_error(ErrorCode.BAD_COMMAND):
                parse_line(line)
            return
        command = parse_line(line)
        assert isinstance(command, Msg)
        unique: dict[str, str] = {}
        for target in to:
            unique.setdefault(key(target), target)
        assert command.targets == tuple(unique.values())
        name = self.people[sender].name
        delivered: list[str] = []
        unknown: list[str] = []
        for target in command.targets:
            if target.startswith("#"):
                group = self.groups.get(key(target))
                if group is None:
                    unknown.append(target)
                    continue
                recipients = [sender]
                for person in group.members:
                    member = self.online(person)
                    if member is None:
                        unknown.append(person)
                    elif member not in recipients:
                        recipients.append(member)
                self.tell(recipients, f"[{group.name}] {name}:{command.text}")
                continue
            member = self.online(target)
            if member is None:
                unknown.append(target)
                continue
            self.tell([member], f"[private] {name}:{command.text}")
            delivered.append(self.people[member].name)
        if delivered:
            self.tell([sender], f"* sent to {', '.join(delivered)}")
        if unknown:
            message = f"unable to send: no such user or group: {', '.join(unknown)}"
            with self.expect_error(ErrorCode.NO_SUCH_RECIPIENT, message):
                self.state.send_private(sender, command.targets, command.text)
        else:
            self.state.send_private(sender, command.targets, command.text)

    @precondition(lambda self: self.people)
    @rule(
        i=PICK,
        name=st.sampled_from(GROUPS + ["#bad!"]),
        members=st.lists(
            st.sampled_from(NAMES + ["Ghost", "ALL", "9lives", "#team"]), min_size=1, max_size=3
        ),
    )
    def define_group(self, i: int, name: str, members: list[str]) -> None:
        owner = self.pick(i)
        command = parse_line(f"/group {name} {','.join(members)}")
        assert isinstance(command, Group) and command.members is not None
        existing = self.groups.get(key(name))
        code = None
        if name == "#bad!":
            code = ErrorCode.BAD_COMMAND
        for person in command.members:
            if code is not None:
                break
            if person.startswith("#"):
                code = ErrorCode.BAD_COMMAND
            elif person in ("ALL", "9lives"):
                code = ErrorCode.INVALID_NAME
        if code is None and existing is not None and existing.owner is not owner:
            code = ErrorCode.BAD_COMMAND
        if code is not None:
            with self.expect_error(code):
                self.state.define_group(owner, command.name, command.members)
            return
        group = self.state.define_group(owner, command.name, command.members)
        assert (group.name, group.members) == (name, command.members)
        self.groups[key(name)] = ModelGroup(name, owner, command.members)

    @precondition(lambda self: self.people)
    @rule(i=PICK, text=TEXTS)
    def broadcast(self, i: int, text: str) -> None:
        sender = self.pick(i)
        if not text.strip():
            with self.expect_error(ErrorCode.BAD_COMMAND):
                parse_line(f"@ALL: {text}")
            return
        command = parse_line(f"@ALL: {text}")
        assert command == Broadcast(text)
        self.state.broadcast(sender, command.text)
        self.tell(list(self.people), f"[all] {self.people[sender].name}:{text}")

    @precondition(lambda self: self.people)
    @rule(i=PICK, reason=st.sampled_from(["", "quit", "gone fishing"]))
    def quit(self, i: int, reason: str) -> None:
        member = self.pick(i)
        self.state.unregister(member, reason)
        self.model_leave(member, reason)
        del self.people[member]
        self.groups = {k: g for k, g in self.groups.items() if g.owner is not member}
        self.gone.append(member)

    @precondition(lambda self: self.gone)
    @rule(i=PICK)
    def unregister_again(self, i: int) -> None:
        """Connections unregister twice on the way out; the second time is a no-op."""
        self.state.unregister(self.gone[i % len(self.gone)], "connection lost")

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def online_names_match(self) -> None:
        assert {k: m for k, m in self.state.users.items()} == {
            key(p.name): m for m, p in self.people.items()
        }
        assert all(m.name == p.name for m, p in self.people.items())
        assert self.state.names() == sorted((p.name for p in self.people.values()), key=key)

    @invariant()
    def rooms_match(self) -> None:
        assert set(self.state.rooms) == set(self.room_names)
        for room_key, room in self.state.rooms.items():
            assert room.members, "an empty room was kept"
            assert room.name == self.room_names[room_key]
            assert set(room.members) == set(self.in_room(room_key))
        for member, person in self.people.items():
            assert member.room is self.state.rooms[person.room]
        for member in self.gone:
            assert member.room is None

    @invariant()
    def groups_match(self) -> None:
        assert {k: (g.name, g.owner, g.members) for k, g in self.state.groups.items()} == {
            k: (g.name, g.owner, g.members) for k, g in self.groups.items()
        }

    @invariant()
    def everyone_received_exactly_what_the_model_says(self) -> None:
        for member, lines in self.expected.items():
            got = member.sender.take_nowait().decode()
            assert got == "".join(line + "\n" for line in lines), member
            lines.clear()


TestChatState = ChatStateMachine.TestCase
TestChatState.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
