"""A chat server that is one node of a cluster: `ChatServer` plus the `Backplane`.

Without ``--redis`` none of this is used, so the single-node path is unchanged.  In a
cluster the differences are these:

- A room's task (`ClusterRoom`) sends each fan-out pass to Redis in one publish
  call instead of numbering it itself; the pass comes back through the
  subscription, in the cluster's order, and is then fanned out to this node's
  members by the same `Room._deliver` the single node uses; the room's next pass is
  made once the last one is back (`ClusterRoom._wait_for_own`).  A pass Redis did
  not take is refused at once with ``! ERROR 113`` to each of its senders.
- Names are claimed cluster-wide before a member is registered or renamed.
- ``/list``, ``/who``, ``/rooms``, ``/msg``, group messages, ``@ALL:``, ``/history``
  and ``/stats`` ask the cluster.  Joins, leaves and renames are told to the other
  nodes' members of the room.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import attrs
import trio

from ..protocol import commands as cmd
from ..protocol import events as ev
from ..protocol.errors import ChatError, ErrorCode
from ..protocol.handshake import MAX_HISTORY, fold_name, validate_name
from ..server import admin
from ..server.accounts import Accounts
from ..server.config import ServerConfig
from ..server.member import Member, deliver_event
from ..server.passes import RoomPass
from ..server.room import Room
from ..server.server import ChatServer, ServerStatistics
from ..server.state import EventLog, Group, report_sent
from .backplane import Backplane, BackplaneStatistics, ClusterConfig, ClusterUnavailable
from .errors import PublishInDoubt
from .stores import RedisAccountStore, RedisModerationStore
from .wire import Run

__all__ = ["ClusterRoom", "ClusterServer", "ClusterStatistics"]

logger = logging.getLogger("machat.cluster")

#: Seconds between attempts to open a room's subscription while Redis is away.
OPEN_RETRY = 0.5
#: Seconds at most that a room waits for its last pass to come back before it
#: publishes the next (`ClusterRoom._wait_for_own`).
OWN_PASS_WAIT = 0.1


def _refusal(exc: ClusterUnavailable) -> ChatError:
    return ChatError(ErrorCode.CLUSTER_UNAVAILABLE, str(exc))


class ClusterRoom(Room):
    """A room whose order is the cluster's: passes go to Redis, deliveries come back."""

    def __init__(self, name: str, *, backplane: Backplane, **options: Any) -> None:
        super().__init__(name, **options)
        self._backplane = backplane
        self._open = False
        #: The last id this room's own publishing was given.
        self._published = 0
        #: Barriers waiting for an id to be delivered.
        self._waiters: list[tuple[int, trio.Event]] = []

    async def run(self) -> None:
        receive = self._receive
        async with receive:
            while True:
                if not self._open:
                    await self._try_open()
                item = None
                with trio.move_on_after(math.inf if self._open else OPEN_RETRY):
                    try:
                        item = await receive.receive()
                    except trio.EndOfChannel:
                        return
                if item is not None:
                    items = await self._gather(item)
                    await self._publish_pass(items)
                    self._passed(items)
                    await self._wait_for_own()

    async def _wait_for_own(self) -> None:
        """Wait (at most `OWN_PASS_WAIT`) until the last pass has come back and been
        fanned out here before making the next.

        Its answer comes a moment before its batch does, and a pass made at the
        answer takes only what came meanwhile: its senders, not yet shown their own
        lines, have not gone on.  Waiting for the batch as well, one room of 150 at
        full load (bench/cluster.py, pinned, medians) cost 0.040 us per delivery
        against 0.045 on one node, 0.067 against 0.070 on two, and about the same on
        three (0.075-0.077 against 0.075), with fewer passes (106 against 130 for
        18,000 messages on one node) and more deliveries per second (17.4 M against
        15.7 M on one node)."""
        back = trio.Event()
        self._set_when_back(back)
        if back.is_set():
            return
        with trio.move_on_after(OWN_PASS_WAIT):
            await back.wait()
        if not back.is_set():  # (it never came: lost, or in doubt)
            self._waiters = [w for w in self._waiters if w[1] is not back]

    def _set_when_back(self, event: trio.Event) -> None:
        """Set ``event`` once this room's last publish has been fanned out here (now,
        if it has: `deliver_cluster` sets the others)."""
        if self.last_id >= self._published:
            event.set()
        else:
            self._waiters.append((self._published, event))

    def _spacing(self) -> float:
        # A pass is a script call to Redis whatever the room's size, and a write per
        # member as in any room: a big room waits as long as on a single node.
        return max(self.fanout_interval, super()._spacing())

    def close(self) -> None:
        super().close()
        self._backplane.close_room(self.name)

    async def _try_open(self) -> None:
        try:
            last = await self._backplane.open_room(self.name)
        except ClusterUnavailable:
            return
        self._open = True
        if last > self.last_id:
            self.last_id = last

    async def _publish_pass(self, items: list[tuple[str, str | list[str] | trio.Event]]) -> None:
        runs: list[Run] = []  # (sender, its consecutive texts)
        for sender, said in items:
            if isinstance(said, trio.Event):  # a barrier: what came before goes first
                await self._publish(runs)
                runs = []
                self._set_when_back(said)
            else:
                runs.append((sender, said if isinstance(said, list) else (said,)))
        await self._publish(runs)

    async def _publish(self, runs: list[Run]) -> None:
        if not runs:
            return
        try:
            if not self._open:
                await self._backplane.open_room(self.name)
                self._open = True
            first = await self._backplane.publish(self.name, runs, floor=self.last_id)
        except PublishInDoubt as exc:
            # Neither refused nor accepted: they come back from the subscription
            # once the backplane has sent them again, or never if it gives up.
            logger.info("cluster: room %s: %d lines in doubt: %s", self.name, len(runs), exc)
            self._tell_in_doubt(runs)
            return
        except ClusterUnavailable as exc:
            self._refuse(runs, str(exc))
            return
        self._published = first + sum(len(texts) for _, texts in runs) - 1

    def _senders(self, runs: list[Run]) -> list[tuple[Member, int]]:
        """The members here who said ``runs``, each with how many lines."""
        counts: dict[str, int] = {}
        for sender, texts in runs:
            key = fold_name(sender)
            counts[key] = counts.get(key, 0) + len(texts)
        members = {fold_name(m.name): m for m in self.members}
        return [(members[key], n) for key, n in counts.items() if key in members]

    def _tell_in_doubt(self, runs: list[Run]) -> None:
        """Each sender hears, once, that their lines are not confirmed (not an error:
        they are not refused; they reach the room, once, when the cluster answers,
        or already did if Redis ran them)."""
        for member, count in self._senders(runs):
            said = (
                "your line was not confirmed; it reaches"
                if count == 1
                else f"your {count} lines were not confirmed; they reach"
            )
            member.send_event(
                ev.Info(
                    f"cluster unavailable: {said} the room once the cluster answers, and only once"
                )
            )

    def _refuse(self, runs: list[Run], reason: str) -> None:
        """None of these lines was accepted: each sender hears so at once, a line each."""
        error = ev.Error(ErrorCode.CLUSTER_UNAVAILABLE, f"{reason}; line not sent")
        for member, count in self._senders(runs):
            for _ in range(count):
                member.send_event(error)

    def deliver_cluster(self, messages: RoomPass) -> None:
        """Messages from the cluster, in id order: fan them out here."""
        self.last_id = messages.last_id
        self._deliver(messages)
        if self._waiters:
            last = self.last_id
            waiting = []
            for target, event in self._waiters:
                if target <= last:
                    event.set()
                else:
                    waiting.append((target, event))
            self._waiters = waiting


class _ClusterLog:
    """Hears the state's joins, leaves and renames; tells the cluster, then the
    transcript (if any)."""

    def __init__(self, backplane: Backplane, inner: EventLog | None) -> None:
        self._backplane = backplane
        self._inner = inner

    def join(self, room: str, name: str) -> None:
        self._backplane.set_room(name, room)
        self._backplane.notice(room, ev.Join(room, name))
        if self._inner is not None:
            self._inner.join(room, name)

    def leave(self, room: str, name: str, reason: str = "") -> None:
        self._backplane.set_room(name, None)
        self._backplane.notice(room, ev.Leave(room, name, reason))
        if self._inner is not None:
            self._inner.leave(room, name, reason)

    def nick(self, room: str | None, old: str, new: str) -> None:
        self._backplane.rename(old, new)
        if room is not None:
            self._backplane.notice(room, ev.Nick(old, new))
        if self._inner is not None:
            self._inner.nick(room, old, new)


@attrs.frozen
class ClusterStatistics:
    """This node's figures, and the cluster's."""

    node: ServerStatistics
    backplane: BackplaneStatistics
    nodes_alive: int
    cluster_users: int
    cluster_rooms: int

    def format(self) -> str:
        return (
            f"{self.node.format()}; node {self.backplane.node}; cluster: "
            f"{self.nodes_alive} nodes alive, {self.cluster_users} online, "
            f"{self.cluster_rooms} rooms"
            + (
                f"; {doubt} publishes in doubt"
                if (doubt := self.backplane.publishes_in_doubt)
                else ""
            )
        )


class ClusterServer(ChatServer):
    """`ChatServer` as one node of the cluster that ``cluster.url``'s Redis holds."""

    def __init__(self, config: ServerConfig, cluster: ClusterConfig) -> None:
        super().__init__(config)
        self.backplane = Backplane(cluster, self)
        # Accounts, bans and topics are the cluster's: kept in Redis.
        redis = (self.backplane.client, cluster.prefix, cluster.command_timeout)
        self.accounts = Accounts(RedisAccountStore(*redis))
        self.moderation.store = RedisModerationStore(*redis)
        state = self.state
        state.room_factory = partial(
            ClusterRoom, backplane=self.backplane, fanout_interval=config.fanout_interval
        )
        # The state tells its one event log of joins, leaves and renames: tee it.
        state._log = _ClusterLog(self.backplane, state._log)
        # History is read from the rooms' streams in Redis (`read_recent`,
        # `read_since`): a copy here would cost every message its rows for nothing.
        state.keeps_history = False
        #: Members whose name this node claimed, until they leave.
        self._claimed: dict[str, Member] = {}
        self._commands: dict[type, Callable[[Member, Any], Any]] = {
            cmd.ListUsers: self._list,
            cmd.Who: self._who,
            cmd.Rooms: self._rooms,
            cmd.Msg: self._msg,
            cmd.Group: self._group,
            cmd.Broadcast: self._broadcast,
            cmd.History: self._history,
            cmd.Stats: self._stats,
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Join the cluster (raises ClusterUnavailable if Redis cannot be reached), then
        serve as `ChatServer.run` does; leave the cluster after shutdown."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.backplane.run)
            await super().run(task_status=task_status)
            self.backplane.stop()

    # -- names --------------------------------------------------------------------------

    async def claim_name(self, member: Member) -> None:
        if self.state.lookup(member.name) is not None:
            return  # register refuses it, as on one node
        try:
            ok = await self.backplane.claim_name(member.name)
        except ClusterUnavailable as exc:
            raise _refusal(exc) from None
        if not ok:
            raise ChatError(
                ErrorCode.NAME_IN_USE, f"name {member.name} is already in use; pick another"
            )
        self._claimed[fold_name(member.name)] = member

    def _release(self, member: Member, name: str) -> None:
        key = fold_name(name)
        if self._claimed.get(key) is member:
            del self._claimed[key]
            self.backplane.release_name(name)

    async def admit(self, member: Member, handshake: Any) -> None:
        try:
            await super().admit(member, handshake)
        except BaseException:
            self._release(member, member.name)
            if fold_name(handshake.room) not in self.state.rooms:
                self.backplane.close_room(handshake.room)  # (if prepare_room opened it)
            raise

    async def prepare_room(self, room: str) -> None:
        """Open the room in the cluster before the member is told it joined: a room
        opened later (by its task) would start after whatever was said meanwhile."""
        if fold_name(room) in self.state.rooms:
            return
        with contextlib.suppress(ClusterUnavailable):  # (the room's task tries again)
            await self.backplane.open_room(room)

    def leave(self, member: Member, reason: str) -> None:
        super().leave(member, reason)
        self._release(member, member.name)

    # -- history ------------------------------------------------------------------------

    async def read_recent(self, room: str, count: int) -> tuple[ev.Message, ...]:
        try:
            return await self.backplane.recent(room, min(count, MAX_HISTORY))
        except ClusterUnavailable as exc:
            raise _refusal(exc) from None

    async def read_since(self, room: str, id: int) -> tuple[tuple[ev.Message, ...], bool]:
        try:
            return await self.backplane.since(room, id, self.config.history_limit)
        except ClusterUnavailable as exc:
            raise _refusal(exc) from None

    # -- commands that ask the cluster --------------------------------------------------

    async def dispatch(self, member: Member, text: str) -> str | None:
        if text[:1] in ("/", "@"):  # room lines (the hot path) go straight on
            if admin.removed(self, member):
                return "removed"
            command = cmd.parse_line(text)
            try:
                if type(command) is cmd.Nick:
                    await self._nick(member, command, text)
                    return None
                handler = self._commands.get(type(command))
                if handler is not None:
                    await handler(member, command)
                    return None
            except ClusterUnavailable as exc:
                raise _refusal(exc) from None
        return await super().dispatch(member, text)

    async def _nick(self, member: Member, c: cmd.Nick, text: str) -> None:
        """Claim the new name cluster-wide, then rename as one node does (with its
        checks: bans, mutes, registered names); give the claim back if that refuses."""
        key = fold_name(c.name)
        if key == fold_name(member.name) or self.state.lookup(c.name) is not None:
            await super().dispatch(member, text)  # decided here, as on one node
            return
        validate_name(c.name)
        if not await self.backplane.claim_name(c.name):
            raise ChatError(ErrorCode.NAME_IN_USE, f"name {c.name} is already in use; pick another")
        old = member.name
        renamed = False
        try:
            await super().dispatch(member, text)
            renamed = fold_name(member.name) == key and self.state.lookup(c.name) is member
        finally:
            if renamed:
                self._claimed.pop(fold_name(old), None)
                self._claimed[key] = member
            else:
                self.backplane.release_name(c.name)
        if renamed:  # its groups go with the new name (the old one's lease is gone)
            for group in [g for g in self.state.groups.values() if g.owner is member]:
                with contextlib.suppress(ClusterUnavailable):
                    await self.backplane.define_group(
                        member.name, group.name, group.members, renamed_from=old
                    )

    async def _list(self, member: Member, c: cmd.ListUsers) -> None:
        roster = await self.backplane.roster()
        names = sorted((name for name, _, _ in roster.users), key=str.casefold)
        member.send_event(ev.Users(tuple(names)))

    async def _who(self, member: Member, c: cmd.Who) -> None:
        if c.room is None:
            if member.room is None:
                raise ChatError(ErrorCode.INVALID_ROOM, f"no such room: {c.room}")
            wanted = member.room.name
        else:
            wanted = c.room
        key = fold_name(wanted)
        roster = await self.backplane.roster()
        here = (name for name, room, _ in roster.users if fold_name(room) == key)
        names = sorted(here, key=str.casefold)
        local = self.state.rooms.get(key)
        if not names and local is None:
            raise ChatError(ErrorCode.INVALID_ROOM, f"no such room: {c.room}")
        spelled = local.name if local is not None else roster.rooms()[key][0]
        member.send_event(ev.Members(spelled, tuple(names)))

    async def _rooms(self, member: Member, c: cmd.Rooms) -> None:
        rooms = (await self.backplane.roster()).rooms()
        for key, room in self.state.rooms.items():  # this node's spelling
            if key in rooms:
                rooms[key] = (room.name, rooms[key][1])
        listing = sorted(rooms.values(), key=lambda r: r[0].casefold())
        topics = ((name, self.moderation.topic(name)) for name, _ in listing)
        member.send_event(
            ev.RoomList(
                tuple(listing),
                tuple((name, topic.text) for name, topic in topics if topic is not None),
            )
        )

    async def _msg(self, member: Member, c: cmd.Msg) -> None:
        backplane = self.backplane
        people = [t for t in c.targets if not t.startswith("#")]
        delivered: list[str] = []
        unknown: list[str] = []
        if people:
            found = await backplane.route(member.name, people, c.text)
            for target, spelled in zip(people, found, strict=True):
                if spelled is None:
                    unknown.append(target)
                else:
                    delivered.append(spelled)
        for target in c.targets:
            if not target.startswith("#"):
                continue
            group = self.state.groups.get(fold_name(target)) or await backplane.find_group(target)
            if group is None:
                unknown.append(target)
                continue
            me = fold_name(member.name)
            others = [n for n in group.members if fold_name(n) != me]
            if others:
                found = await backplane.route(member.name, others, c.text, group=group.name)
                unknown += [n for n, spelled in zip(others, found, strict=True) if spelled is None]
            member.send_event(ev.GroupMessage(group.name, member.name, c.text, time.time()))
        report_sent(member, delivered, unknown)

    async def _group(self, member: Member, c: cmd.Group) -> None:
        """``/group``: a group defined here is known to every node (`Backplane.define_group`),
        and one defined on another node can be looked at from here."""
        state, key = self.state, fold_name(c.name)
        if c.members is None:
            group = state.groups.get(key) or await self.backplane.find_group(c.name)
            if group is None:
                raise ChatError(ErrorCode.NO_SUCH_RECIPIENT, f"no such group: {c.name}")
            member.send_event(ev.Members(group.name, group.members))
            return
        before = state.groups.get(key)
        defined = state.define_group(member, c.name, c.members)  # checks, as on one node
        try:
            theirs = await self.backplane.define_group(member.name, defined.name, defined.members)
        except BaseException:
            self._restore_group(key, before)  # refused: nothing changed
            raise
        if theirs is not None:
            self._restore_group(key, before)
            raise ChatError(ErrorCode.BAD_COMMAND, f"group {theirs.name} belongs to {theirs.owner}")
        member.send_event(ev.Members(defined.name, defined.members))

    def _restore_group(self, key: str, before: Group | None) -> None:
        if before is None:
            self.state.groups.pop(key, None)
        else:
            self.state.groups[key] = before

    async def _broadcast(self, member: Member, c: cmd.Broadcast) -> None:
        admin.check_speech(self, member)
        event = ev.Broadcast(member.name, c.text, time.time())
        await self.backplane.broadcast(event)
        deliver_event(self.state.users.values(), event)

    async def _history(self, member: Member, c: cmd.History) -> None:
        room = member.room
        if room is not None:
            member.send_event(ev.History(room.name, await self.read_recent(room.name, c.count)))

    async def _stats(self, member: Member, c: cmd.Stats) -> None:
        member.send_event(ev.Info((await self.cluster_statistics()).format()))

    async def cluster_statistics(self) -> ClusterStatistics:
        """This node's figures and the cluster's.  Raises ClusterUnavailable."""
        roster = await self.backplane.roster()
        return ClusterStatistics(
            node=self.statistics(),
            backplane=self.backplane.statistics(),
            nodes_alive=len(roster.nodes),
            cluster_users=len(roster.users),
            cluster_rooms=len(roster.rooms()),
        )

    # -- moderation across nodes ---------------------------------------------------------

    async def find_elsewhere(self, name: str) -> str | None:
        try:
            roster = await self.backplane.roster()
        except ClusterUnavailable as exc:
            raise _refusal(exc) from None
        key, here = fold_name(name), self.backplane.node
        for spelled, _, node in roster.users:
            if node != here and fold_name(spelled) == key:
                return spelled
        return None

    def moderated(self, event: ev.Moderation | ev.Topic) -> None:
        self.backplane.announce_moderation(event)

    # -- the Listener: what the backplane tells this node ------------------------------

    def moderated_elsewhere(self, event: ev.Moderation | ev.Topic) -> None:
        self._spawn(partial(self._carry_out, event))

    async def _carry_out(self, event: ev.Moderation | ev.Topic) -> None:
        try:
            await self.moderation.refresh()  # (what the other node wrote, first)
        except ChatError as exc:
            logger.warning("cluster: cannot re-read the moderation state: %s", exc.message)
        await admin.carry_out(self, event)

    def room_messages(self, room_key: str, messages: RoomPass) -> None:
        room = self.state.rooms.get(room_key)
        if isinstance(room, ClusterRoom):
            room.deliver_cluster(messages)

    def members_here(self, room_key: str) -> int:
        room = self.state.rooms.get(room_key)
        return len(room.members) if room is not None else 0

    def room_notice(self, room_key: str, event: ev.Join | ev.Leave | ev.Nick) -> None:
        room = self.state.rooms.get(room_key)
        if room is not None:
            room.broadcast_event(event)

    def direct(self, event: ev.Private | ev.GroupMessage, names: list[str]) -> None:
        members = [m for m in map(self.state.lookup, dict.fromkeys(names)) if m is not None]
        deliver_event(members, event)

    def broadcast(self, event: ev.Broadcast) -> None:
        deliver_event(self.state.users.values(), event)

    def node_gone(self, node: str, users: Sequence[tuple[str, str]]) -> None:
        for name, room_name in users:
            room = self.state.rooms.get(fold_name(room_name)) if room_name else None
            if room is not None:
                room.broadcast_event(ev.Leave(room.name, name, "connection lost"))

    def names_lost(self, names: Sequence[str], reason: str) -> None:
        for name in names:
            member = self.state.lookup(name)
            if member is not None:
                self._claimed.pop(fold_name(name), None)
                member.evict(ErrorCode.CLUSTER_UNAVAILABLE, reason)
