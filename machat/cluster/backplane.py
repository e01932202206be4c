"""The backplane: what one node does in Redis so that several act as one server.

Design (after Centrifugo's Redis engine):

- **Room messages.**  A node sends each room one `scripts.PUBLISH` call per fan-out
  pass with every line of that pass; the calls of rooms that publish meanwhile go
  in one pipeline.  The script numbers them (the room's ``seq``), appends them to
  the room's stream (``XADD ... MAXLEN ~ N``) and publishes them with their ids on
  the room's channel.  Publishing and the subscription run once per pass, so they
  have lean connections of their own (`resp`; a coredis command costs about 150 us
  of the node's CPU); coredis does the rest.  Every node -- the sender's too -- delivers
  from its subscription through a `RoomFeed`: in id order, each id once, gaps filled
  from the stream (``XRANGE``).  A publish carries (incarnation, batch number), so a
  retry after a lost reply is not added twice; and its batch, when the node's own
  subscription brings it back, says that Redis ran it, so a publish whose reply
  was lost after that is settled without a retry.  A retry that Redis no longer
  knows (it came back empty) is a new batch of a new stream; every batch, published
  or stored, names the publish that made it, and a node that delivered the first
  copy takes the second's ids without delivering it (`RoomFeed.discard`).
- **Epochs.**  A room's stream starts after its epoch: Redis's clock in microseconds
  when it began, or higher.  If Redis comes back without it, the next publish starts
  a new stream above every id used before; nodes notice the new epoch.
- **Names** are leases (`scripts.CLAIM`: set if absent, with an expiry) that only
  their owner releases (compare and delete), refreshed by the heartbeat.
- **Presence**: each node's users in a hash with an expiry, and the node's
  liveness in a sorted set; the heartbeat (every ``presence_ttl / 10``) refreshes
  both and reaps nodes that stopped beating, so their users leave every room.
- **Failures.**  Every command has a timeout; a failed one marks the cluster down
  (`ClusterUnavailable` at once for what needs it) until a heartbeat gets through.
  The subscription is re-made by this module, and every new session catches up
  every room from the stream; a silent one is pinged (`_check_subscription`).  A
  node that cannot beat for longer than it is known alive gives up its users
  (`Listener.names_lost`).

The server sees this through a small surface: claim and release names, say where
users are, open and close rooms, publish, route, read, and the `Listener` callbacks.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import secrets
import time
from collections.abc import Sequence
from typing import Any, Protocol

import attrs
import coredis
import trio
from coredis.connection import TCPLocation, UnixDomainSocketLocation
from coredis.exceptions import RedisError
from coredis.retry import ConstantRetryPolicy

from ..protocol import events as ev
from ..protocol.handshake import fold_name
from ..server.passes import RoomPass, Row
from . import resp, scripts, wire
from .errors import ClusterUnavailable, PublishInDoubt
from .feed import RoomFeed
from .keys import Keys
from .url import check_url
from .wire import Run

__all__ = [
    "Backplane",
    "BackplaneStatistics",
    "ClusterConfig",
    "ClusterUnavailable",
    "Group",
    "Listener",
    "Roster",
    "check_url",
]

logger = logging.getLogger("machat.cluster")

#: What a failed Redis operation raises, from coredis, `resp` or the sockets under them.
_REDIS_ERRORS = (RedisError, resp.ReplyError, OSError)

#: Seconds before the one retry of a command whose connection failed.
RETRY_DELAY = 0.05

#: Seconds between attempts while Redis cannot be reached.
PROBE_INTERVAL = 0.2
#: How many stored messages one gap-filling read asks for.
FILL_CHUNK = 1000
#: Notices kept for later while Redis cannot be reached; older ones are dropped.
MAX_PENDING_NOTICES = 10000
#: Seconds of silence after which the subscription is pinged (`_check_subscription`).
SUBSCRIPTION_IDLE = 1.0
#: How many scheduling ticks the deliverer waits for the subscriber to hand over more.
COALESCE_TICKS = 8
#: Seconds a busy room's hand-over may wait for the other nodes' batches (the
#: default of `ClusterConfig.gather`; see `Backplane._deliverer`).
GATHER = 0.001
#: Rooms with fewer members on this node never wait: their writes cost less than a wake.
GATHER_MEMBERS = 16
#: A room is busy if its last hand-over was less than this many gather times ago.
BUSY_GATHERS = 10
#: This node's latest batches seen on the subscription, kept by batch number for a
#: publish whose answer is lost (`Backplane._came_back`).
OWN_BATCHES_KEPT = 1024
#: Copies a room remembers having discarded, for `Backplane.since`.
COPIES_KEPT = 64


@attrs.frozen
class ClusterConfig:
    url: str
    node: str
    #: Seconds within which a node that died is noticed and its names are freed.
    presence_ttl: float = 10.0
    #: Messages kept in each room's stream (history, and what a late node can catch up).
    stream_length: int = 1000
    #: Seconds an unused room's stream is kept.
    room_ttl: float = 7 * 86400.0
    prefix: str = "machat:"
    connect_timeout: float = 1.0
    command_timeout: float = 1.0
    #: Seconds a busy room's messages may wait here so that batches from several
    #: nodes share one write per member (0: never wait).
    gather: float = GATHER

    @property
    def heartbeat(self) -> float:
        return self.presence_ttl / 10

    @property
    def alive_window(self) -> float:
        """How long after a heartbeat a node counts as alive: the others then reap it
        within one more heartbeat, so within ``presence_ttl`` of its death."""
        return self.presence_ttl - 2 * self.heartbeat

    @property
    def give_up_after(self) -> float:
        """A node that has not beaten for this long gives up its users, before the
        others can reap it and hand its names to someone else."""
        return self.alive_window - self.heartbeat


class Listener(Protocol):
    """What the backplane tells the server.  Every method is synchronous."""

    def room_messages(self, room_key: str, messages: RoomPass) -> None:
        """Messages of a room open on this node, in id order, each once."""

    def members_here(self, room_key: str) -> int:
        """How many members a room open here has on this node (what a hand-over of its
        messages costs in writes)."""

    def room_notice(self, room_key: str, event: ev.Join | ev.Leave | ev.Nick) -> None:
        """A join, leave or rename on another node in a room open here."""

    def direct(self, event: ev.Private | ev.GroupMessage, names: list[str]) -> None:
        """A private or group message for these users of this node."""

    def broadcast(self, event: ev.Broadcast) -> None:
        """``@ALL:`` from another node, for everyone here."""

    def node_gone(self, node: str, users: Sequence[tuple[str, str]]) -> None:
        """Another node died or left; its users (name, room) are gone."""

    def moderated_elsewhere(self, event: ev.Moderation | ev.Topic) -> None:
        """An operator on another node acted (its state is in the shared store)."""

    def names_lost(self, names: Sequence[str], reason: str) -> None:
        """These users of this node no longer hold their names: disconnect them."""


@attrs.frozen
class Roster:
    """Who is online in the whole cluster."""

    #: Nodes alive, sorted.
    nodes: tuple[str, ...]
    #: (name, room, node) of everyone.
    users: tuple[tuple[str, str, str], ...]

    def rooms(self) -> dict[str, tuple[str, int]]:
        """Folded room name -> (spelling, members)."""
        out: dict[str, tuple[str, int]] = {}
        for _, room, _ in self.users:
            if room:
                key = fold_name(room)
                spelled, count = out.get(key, (room, 0))
                out[key] = (spelled, count + 1)
        return out


@attrs.frozen
class Group:
    """A group as the cluster knows it (``/group``): defined on its owner's node."""

    name: str
    owner: str
    members: tuple[str, ...]


@attrs.frozen
class BackplaneStatistics:
    node: str
    available: bool
    rooms_open: int
    users_here: int
    batches_published: int
    #: Round trips that carried them: a script call, or a pipeline of several rooms'.
    publish_round_trips: int
    lines_published: int
    batches_received: int
    messages_delivered: int
    gaps_filled: int
    messages_lost: int
    stream_restarts: int
    sessions: int
    outages: int
    #: Publishes whose answer was lost, waiting to be sent again.
    publishes_in_doubt: int = 0
    #: Copies of batches delivered here already (published again after Redis came
    #: back empty), not delivered again.
    copies_discarded: int = 0


@attrs.define(eq=False)
class _User:
    name: str
    lease: str
    room: str = ""
    #: Groups (folded) it defined: deleted from Redis with its lease (`_let_go`).
    groups: set[str] = attrs.Factory(set)


@attrs.define(eq=False)
class _Room:
    name: str
    key: str
    channel: str
    feed: RoomFeed = attrs.Factory(RoomFeed)
    #: Batches that arrived while the room was being opened.
    early: list[wire.Batch] | None = attrs.Factory(list)
    opened: trio.Event = attrs.Factory(trio.Event)
    filling: bool = False
    #: feed.head at the last keeper round (what should have arrived by the next one).
    checked_head: int = 0
    #: origin node -> (the publish that made its latest batch, epoch, first id).
    #: A copy (`Backplane._copy_of`) is a publish in doubt when Redis went, and a
    #: node has at most one of those per room: its last (a room awaits each publish,
    #: and none is accepted during the outage; the one in doubt goes first after).
    made: dict[str, tuple[wire.Made, int, int]] = attrs.Factory(dict)
    #: The latest copies discarded: first id -> (the first copy's first id, count).
    copies: dict[int, tuple[int, int]] = attrs.Factory(dict)


class Backplane:
    """One node's side of the cluster.  `run` it in a nursery before using it."""

    def __init__(self, config: ClusterConfig, listener: Listener) -> None:
        self.config = config
        self.node = config.node
        self.incarnation = secrets.token_hex(8)
        #: The cluster protocol this node speaks (`wire.PROTOCOL`).
        self.protocol = wire.PROTOCOL
        self.keys = keys = Keys(config.prefix)
        self._listener = listener
        self._node_channel = keys.node_channel(config.node)
        self._client: coredis.Redis[str] = coredis.Redis.from_url(
            check_url(config.url),
            decode_responses=True,
            connect_timeout=config.connect_timeout,
            stream_timeout=config.command_timeout,
            pool_timeout=config.command_timeout,
            # Every write below is idempotent (a lease value, a set), so one quick
            # retry after a dropped connection is safe; never more, so a dead Redis
            # is reported at once rather than retried forever.  Only connection
            # failures: an error reply is final (and NOSCRIPT, which coredis answers
            # by loading the script, would otherwise wait RETRY_DELAY first).
            retry_policy=ConstantRetryPolicy(
                (coredis.exceptions.ConnectionError, OSError), retries=1, delay=RETRY_DELAY
            ),
            client_name=f"machat-{config.node}",
        )
        client = self._client
        self._endpoint = _endpoint(client)  # for the lean connections (`resp`)
        self._publish = client.register_script(scripts.PUBLISH)
        self._read = client.register_script(scripts.READ)
        self._claim = client.register_script(scripts.CLAIM)
        self._presence = client.register_script(scripts.PRESENCE)
        self._heartbeat_script = client.register_script(scripts.HEARTBEAT)
        self._roster = client.register_script(scripts.ROSTER)
        self._route = client.register_script(scripts.ROUTE)
        self._group_script = client.register_script(scripts.GROUP)
        self._record_copy_script = client.register_script(scripts.RECORD_COPY)

        self._nursery: trio.Nursery | None = None
        self._stopping = trio.Event()
        self._up = False
        self._availability = trio.Event()  # set (and replaced) as _up changes
        self._down_reason = "not connected yet"
        self._outages = 0
        self._last_beat = -math.inf  # trio time the last successful heartbeat was sent
        self._gave_up = False
        self._beat_now = trio.Event()

        self._users: dict[str, _User] = {}
        self._claims = itertools.count(1)
        self._pending_set: dict[str, str | None] = {}
        self._pending_release: list[tuple[str, str]] = []
        self._pending_group_drops: list[tuple[str, str]] = []  # (folded group, lease)
        self._pending_notices: list[tuple[str, str]] = []
        self._presence_changed = trio.Event()
        self._presence_lock = trio.Lock()

        self._rooms: dict[str, _Room] = {}
        self._by_channel: dict[str, _Room] = {}
        self._pubsub: resp.RedisConnection | None = None
        self._sub_lock = trio.Lock()
        # Channels subscribed to and not yet confirmed by Redis.
        self._confirming: dict[str, trio.Event] = {}
        self._sub_heard = -math.inf  # trio time the subscription last brought anything
        self._sub_pinged = -math.inf  # and when it was last pinged
        self._sessions = 0
        self._batch_seq = itertools.count(1)
        #: batch number -> the script's reply, for this node's batches the
        #: subscription brought back (the latest `OWN_BATCHES_KEPT`).
        self._own_batches: dict[int, list[Any]] = {}
        # Publishes asked for and not yet sent: the publisher sends them together.
        self._to_publish: list[_Publish] = []
        self._publish_wanted = trio.Event()
        self._publishing = False  # the publisher runs
        # Publishes that reached Redis (or may have) without an answer: sent again,
        # before anything else, once Redis answers (`_fail`).
        self._in_doubt: list[_Publish] = []
        self._publish_conn: resp.RedisConnection | None = None

        # Messages ready for the listener, per room, in order: the deliverer hands
        # each room everything that came in one go as one pass (`_emit`).
        self._ready: dict[str, list[RoomPass]] = {}
        self._ready_changed = trio.Event()
        self._handed_over_at: dict[str, float] = {}  # room key -> its last hand-over
        self._remote_at: dict[str, float] = {}  # room key -> another node's last batch
        self._held_until: dict[str, float] = {}  # room key -> when its ready rows go
        self._received = 0  # batches and fills that reached _emit, for the deliverer

        self._batches_published = 0
        self._publish_round_trips = 0
        self._lines_published = 0
        self._batches_received = 0
        self._delivered = 0
        self._gaps_filled = 0
        self._copies_discarded = 0

    def __repr__(self) -> str:
        return f"<Backplane {self.node} {self.config.url} up={self._up}>"

    # -- state -------------------------------------------------------------------------

    @property
    def client(self) -> coredis.Redis[str]:
        """The Redis client, usable while `run` runs (the account and moderation stores)."""
        return self._client

    @property
    def available(self) -> bool:
        return self._up

    def _unavailable(self) -> ClusterUnavailable:
        return ClusterUnavailable(f"cluster unavailable: {self._down_reason}")

    def _note_down(self, exc: BaseException | str) -> None:
        reason = exc if isinstance(exc, str) else f"Redis at {self.config.url}: {_describe(exc)}"
        if self._up:
            self._outages += 1
            logger.warning("cluster unavailable: %s", reason)
            self._availability_changed()
        self._up = False
        self._down_reason = reason
        self._beat_now.set()

    def _note_up(self) -> None:
        if not self._up:
            logger.info("cluster available again (Redis at %s)", self.config.url)
            self._availability_changed()
        self._up = True

    def _availability_changed(self) -> None:
        self._availability.set()
        self._availability = trio.Event()

    async def wait_available(self, available: bool = True) -> None:
        """Until this node finds Redis reachable (or, given False, unreachable)."""
        while self._up != available:
            await self._availability.wait()

    def statistics(self) -> BackplaneStatistics:
        feeds = [room.feed for room in self._rooms.values()]
        return BackplaneStatistics(
            node=self.node,
            available=self._up,
            rooms_open=len(self._rooms),
            users_here=len(self._users),
            batches_published=self._batches_published,
            publish_round_trips=self._publish_round_trips,
            lines_published=self._lines_published,
            batches_received=self._batches_received,
            messages_delivered=self._delivered,
            gaps_filled=self._gaps_filled,
            messages_lost=sum(f.lost for f in feeds),
            stream_restarts=sum(f.restarts for f in feeds),
            sessions=self._sessions,
            outages=self._outages,
            publishes_in_doubt=len(self._in_doubt),
            copies_discarded=self._copies_discarded,
        )

    # -- life --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Join the cluster and keep this node in it until cancelled.

        Raises ClusterUnavailable if Redis cannot be reached at first, or another
        running node has this node's name.
        """
        failure = None
        async with self._client:  # (raising in here would come out as an ExceptionGroup)
            failure = await self._join()
            if failure is None:
                await self._serve(task_status)
        if failure is not None:
            raise ClusterUnavailable(failure)

    async def _join(self) -> str | None:
        config = self.config
        try:
            with trio.fail_after(2 * config.connect_timeout + config.command_timeout):
                await self._client.ping()
                status, *detail = await self._beat("start")
        except (*_REDIS_ERRORS, trio.TooSlowError) as exc:
            return f"cannot reach Redis at {config.url}: {_describe(exc)}"
        if status == "taken":
            return (
                f"node name {self.node} is in use by another running node "
                f"(--node NAME must be unique; a node that died frees it within "
                f"{config.presence_ttl:g} s)"
            )
        if status == "protocol":
            other, spoken = detail
            theirs = f"cluster protocol {spoken}" if spoken else "an older cluster protocol"
            return (
                f"node {other} of this cluster speaks {theirs}, this node {self.protocol}: "
                "nodes of different versions cannot share rooms, so upgrade every node "
                "together (stop the old ones, then start the new)"
            )
        self._note_up()
        return None

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        config = self.config
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._deliverer)
                nursery.start_soon(self._publisher)
                await nursery.start(self._subscriber)
                nursery.start_soon(self._keeper)
                nursery.start_soon(self._watchdog)
                nursery.start_soon(self._presence_writer)
                logger.info("cluster: node %s joined through Redis at %s", self.node, config.url)
                task_status.started()
                # Cancelled, this node just stops beating (the others reap it);
                # stopped, it says goodbye first.  coredis's connections live in
                # this task's scope, so a goodbye is only possible before cancelling.
                await self._stopping.wait()
                stats = self.statistics()
                logger.info(
                    "cluster: leaving; published %d lines in %d batches, received %d "
                    "batches, delivered %d messages, filled %d gaps, lost %d, discarded "
                    "%d copies",
                    stats.lines_published,
                    stats.batches_published,
                    stats.batches_received,
                    stats.messages_delivered,
                    stats.gaps_filled,
                    stats.messages_lost,
                    stats.copies_discarded,
                )
                with trio.move_on_after(config.command_timeout):
                    await self._retire()
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None

    def stop(self) -> None:
        """Leave the cluster: `run` tells the others that this node's users left, then
        returns."""
        self._stopping.set()

    async def _retire(self) -> None:
        """Leave the cluster at once: the others hear that this node's users left."""
        try:
            await self._flush_presence()
            await self._heartbeat_script(args=self._beat_args("retire"))
        except _REDIS_ERRORS:
            pass

    def _spawn(self, fn: Any, *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    # -- heartbeat, presence, reaping --------------------------------------------------

    def _beat_args(self, mode: str) -> list[str]:
        config = self.config
        args = [
            self.keys.prefix,
            self.node,
            self.incarnation,
            str(int(config.alive_window * 1000)),
            str(int(config.presence_ttl * 1000)),
            str(int(2 * config.presence_ttl * 1000)),
            mode,
            str(self.protocol),
        ]
        if mode != "retire":
            for key, user in self._users.items():
                args += (key, user.name, user.room, user.lease)
        return args

    async def _beat(self, mode: str) -> list[str]:
        """The heartbeat (`scripts.HEARTBEAT`): its status, and for ``protocol`` (only at
        start) the node that kept this one out and the protocol it speaks."""
        sent = trio.current_time()
        result: Any = await self._heartbeat_script(args=self._beat_args(mode))
        status = result[0]
        if status == "protocol":
            return [status, str(result[2]), str(result[3])]
        if status == "taken":
            return [status]
        self._last_beat = sent
        self._gave_up = False
        lost = list(result[2:])
        if status == "fresh" and mode != "start":
            logger.warning("cluster: presence re-announced (Redis had lost it)")
        if lost:
            for name in lost:
                user = self._users.pop(fold_name(name), None)
                if user is not None:
                    self._pending_set[fold_name(name)] = None
            self._listener.names_lost(lost, "cluster unavailable: name taken over while cut off")
        return [status]

    async def _keeper(self) -> None:
        """Heartbeat (and reap) every ``heartbeat`` seconds; probe quickly while down."""
        config = self.config
        while True:
            try:
                with trio.fail_after(config.command_timeout * 2):
                    async with self._presence_lock:
                        status, *_ = await self._beat("beat")
                        await self._flush_presence()
            except (*_REDIS_ERRORS, trio.TooSlowError) as exc:
                self._note_down(exc)
            else:
                if status == "taken":
                    self._note_down(f"node name {self.node} was taken by another process")
                    self._give_up("cluster unavailable: this node's name was taken over")
                else:
                    was_down = not self._up
                    self._note_up()
                    if was_down:
                        self._presence_changed.set()
                    if self._in_doubt:
                        self._publish_wanted.set()
                    self._check_rooms()
            with trio.move_on_after(config.command_timeout):
                await self._check_subscription()
            self._beat_now = trio.Event()
            with trio.move_on_after(config.heartbeat if self._up else PROBE_INTERVAL):
                await self._beat_now.wait()

    async def _watchdog(self) -> None:
        """Give up this node's users once it has been cut off too long to hold names."""
        while True:
            deadline = self._last_beat + self.config.give_up_after
            if trio.current_time() < deadline:
                await trio.sleep_until(deadline)
                continue
            if not self._gave_up:
                self._give_up(
                    f"cluster unavailable: cut off from Redis for more than "
                    f"{self.config.give_up_after:.1f} s ({self._down_reason}); "
                    "disconnecting so that no name is held twice"
                )
            await trio.sleep(self.config.heartbeat)

    def _give_up(self, reason: str) -> None:
        self._gave_up = True
        names = [user.name for user in self._users.values()]
        logger.warning("cluster: giving up %d users: %s", len(names), reason)
        for key, user in list(self._users.items()):
            self._let_go(key, user)
        self._users.clear()
        if names:
            self._listener.names_lost(names, reason)
        # Publishes in doubt stay: their senders were told that their lines reach the
        # room once the cluster answers, and only once (`_fail`), gone or not.
        # What they said on the way out is stale by now; the others reap us anyway.
        self._pending_notices.clear()

    async def _presence_writer(self) -> None:
        while True:
            await self._presence_changed.wait()
            self._presence_changed = trio.Event()
            if not self._up:
                continue  # the keeper sets the event again once Redis is back
            try:
                with trio.fail_after(self.config.command_timeout * 2):
                    await self.flush_presence()
            except (*_REDIS_ERRORS, trio.TooSlowError) as exc:
                self._note_down(exc)

    async def flush_presence(self) -> None:
        """Write what this node's presence has pending (names, rooms, notices) now,
        after any write in progress, rather than when the writer next wakes."""
        async with self._presence_lock:
            await self._flush_presence()

    async def _flush_presence(self) -> None:
        sets, self._pending_set = self._pending_set, {}
        releases, self._pending_release = self._pending_release, []
        drops, self._pending_group_drops = self._pending_group_drops, []
        notices, self._pending_notices = self._pending_notices, []
        if not (sets or releases or drops or notices):
            return
        args: list[str] = [
            self.keys.prefix,
            self.node,
            str(int(2 * self.config.presence_ttl * 1000)),
        ]
        to_set: list[tuple[str, str]] = [(k, v) for k, v in sets.items() if v is not None]
        to_del = [k for k, v in sets.items() if v is None]
        args.append(str(len(to_set)))
        for k, v in to_set:
            args += (k, v)
        args.append(str(len(to_del)))
        args += to_del
        args.append(str(len(releases)))
        for k, lease in releases:
            args += (k, lease)
        args.append(str(len(drops)))
        for group, lease in drops:
            args += (group, lease)
        args.append(str(len(notices)))
        for channel, payload in notices:
            args += (channel, payload)
        try:
            await self._presence(args=args)
        except BaseException:
            for key, value in sets.items():  # newer changes win
                self._pending_set.setdefault(key, value)
            self._pending_release[:0] = releases
            self._pending_group_drops[:0] = drops
            self._pending_notices[:0] = notices[-MAX_PENDING_NOTICES:]
            raise

    def _presence_dirty(self) -> None:
        self._presence_changed.set()

    # -- names -------------------------------------------------------------------------

    async def claim_name(self, name: str) -> bool:
        """Take ``name`` for a user of this node; False if someone holds it.

        Raises ClusterUnavailable.  The name is this node's until `release_name`.
        """
        if not self._up:
            raise self._unavailable()
        key = fold_name(name)
        lease = f"{self.node}\t{self.incarnation}\t{name}\t{next(self._claims)}"
        try:
            ok: Any = await self._claim(
                keys=[self.keys.name(key)], args=[lease, str(int(self.config.presence_ttl * 1000))]
            )
        except _REDIS_ERRORS as exc:
            self._note_down(exc)
            raise self._unavailable() from None
        if not ok:
            return False
        self._users[key] = _User(name, lease)
        self._pending_set[key] = f"{name}\t"
        self._presence_dirty()
        return True

    def release_name(self, name: str) -> None:
        """The user left: free its name (at once if Redis is reachable)."""
        key = fold_name(name)
        user = self._users.pop(key, None)
        if user is None:
            return
        self._let_go(key, user)
        self._presence_dirty()

    def _let_go(self, key: str, user: _User) -> None:
        """Queue what frees a user's name: its presence, its lease, its groups."""
        self._pending_set[key] = None
        self._pending_release.append((key, user.lease))
        self._pending_group_drops += [(group, user.lease) for group in sorted(user.groups)]

    def rename(self, old: str, new: str) -> None:
        """A user renamed: ``new`` was claimed (or differs from ``old`` only in case)."""
        old_key, new_key = fold_name(old), fold_name(new)
        user = self._users.get(old_key)
        if user is None:
            return
        if old_key == new_key:
            user.name = new
            self._pending_set[new_key] = f"{new}\t{user.room}"
            self._presence_dirty()
            return
        claimed = self._users.get(new_key)
        if claimed is None:
            return
        claimed.room = user.room
        self._pending_set[new_key] = f"{new}\t{user.room}"
        self.release_name(old)

    def set_room(self, name: str, room: str | None) -> None:
        """Where a user of this node is now (None: in no room)."""
        key = fold_name(name)
        user = self._users.get(key)
        if user is None:
            return
        user.room = room or ""
        self._pending_set[key] = f"{user.name}\t{user.room}"
        self._presence_dirty()

    # -- rooms -------------------------------------------------------------------------

    async def open_room(self, name: str) -> int:
        """Start delivering ``name``'s messages here; returns the room's last id.

        Messages after that id reach `Listener.room_messages`.  Raises
        ClusterUnavailable.
        """
        key = fold_name(name)
        room = self._rooms.get(key)
        if room is not None:
            await room.opened.wait()
            if self._rooms.get(key) is not room:
                raise self._unavailable()
            return room.feed.last
        if not self._up or self._pubsub is None:
            raise self._unavailable()
        room = _Room(name, key, self.keys.room_channel(key))
        self._rooms[key] = room
        self._by_channel[room.channel] = room
        try:
            await self._subscribe(room.channel)
            stored = await self._read_room(key, "after", 0, 0)
        except (*_REDIS_ERRORS, ClusterUnavailable, trio.TooSlowError) as exc:
            if self._rooms.get(key) is room:
                self._forget_room(room)
            room.opened.set()
            if isinstance(exc, ClusterUnavailable):
                raise
            self._note_down(exc)
            raise self._unavailable() from None
        room.feed = RoomFeed(stored.epoch, stored.seq)
        early, room.early = room.early or [], None
        for batch in early:
            self._offer(room, batch)
        room.opened.set()
        return room.feed.last

    def close_room(self, name: str) -> None:
        """No member of the room is left here: stop delivering it."""
        room = self._rooms.get(fold_name(name))
        if room is not None:
            self._forget_room(room)
            self._spawn(self._unsubscribe, room.channel)

    def _forget_room(self, room: _Room) -> None:
        del self._rooms[room.key]
        self._by_channel.pop(room.channel, None)
        self._handed_over_at.pop(room.key, None)
        self._remote_at.pop(room.key, None)

    async def _subscribe(self, channel: str) -> None:
        """Add ``channel`` to the subscription; returns once Redis has confirmed it
        (in this session or, if it broke meanwhile, the next one)."""
        confirmed = self._confirming.setdefault(channel, trio.Event())
        try:
            async with self._sub_lock:
                conn = self._pubsub
                if conn is None:
                    raise self._unavailable()
                with trio.fail_after(self.config.command_timeout):
                    await conn.send([("SUBSCRIBE", channel)])
            with trio.fail_after(self.config.command_timeout):
                await confirmed.wait()
        finally:
            if self._confirming.get(channel) is confirmed and not confirmed.is_set():
                del self._confirming[channel]  # (a later session confirms it anew)

    async def _unsubscribe(self, channel: str) -> None:
        async with self._sub_lock:
            conn = self._pubsub
            if conn is None or channel in self._by_channel:
                return
            try:
                with trio.move_on_after(self.config.command_timeout):
                    await conn.send([("UNSUBSCRIBE", channel)])
            except _REDIS_ERRORS:
                pass  # the session is going; the next one will not have it

    def last_id(self, name: str) -> int:
        room = self._rooms.get(fold_name(name))
        return room.feed.last if room is not None else 0

    async def publish(self, room: str, runs: Sequence[Run], floor: int = 0) -> int:
        """Append lines to a room, given as runs of one sender's texts (as a room's
        pass holds them); returns the first line's id.

        They are delivered from the subscription, like everyone else's.  ``floor``
        is the highest id this node knows the room used (a new stream starts above
        it).  Raises ClusterUnavailable, and then none of the lines was accepted;
        or its `PublishInDoubt`, when the lines reached Redis (or may have) and its
        answer was lost: they are sent again once Redis answers, and so either were
        published already or are published then.
        """
        if not (self._up and self._publishing):
            raise self._unavailable()
        key = fold_name(room)
        config = self.config
        count = sum(len(texts) for _, texts in runs)
        seq = next(self._batch_seq)
        args: list[str | int] = [
            self.keys.room_channel(key),
            config.stream_length,
            self.node,
            self.incarnation,
            seq,
            floor,
            count,
            wire.encode_lines(runs),
            int(config.room_ttl * 1000),
        ]
        request = _Publish(
            [self.keys.room_meta(key), self.keys.room_log(key)], args, key, count, seq
        )
        self._to_publish.append(request)
        self._publish_wanted.set()
        await request.done.wait()
        if request.error is not None:
            self._note_down(request.error)
            if request.resent:  # (it is in doubt: `_fail`)
                raise PublishInDoubt(
                    f"{self._unavailable()}; the lines may have been published: "
                    "they are sent again once Redis answers"
                )
            raise self._unavailable()
        self._note_published(request, request.result)
        return int(request.result[0])

    def _note_published(self, request: _Publish, result: Any) -> None:
        first, epoch = int(result[0]), int(result[1])
        self._batches_published += 1
        self._lines_published += request.count
        state = self._rooms.get(request.room_key)
        if state is not None and state.early is None:
            state.feed.note_head(epoch, first + request.count - 1)

    async def _publisher(self) -> None:
        """Send the publishes asked for: those that came while the last went out, all
        in one pipeline on the publisher's own connection (`resp`), behind those in
        doubt (a room's batches reach Redis in the order they were made)."""
        leaving = RedisError("the node is leaving the cluster")
        self._publishing = True
        try:
            while True:
                await self._publish_wanted.wait()
                self._publish_wanted = trio.Event()
                requests = self._in_doubt + self._to_publish
                self._in_doubt, self._to_publish = [], []
                try:
                    await self._send_publishes(requests)
                finally:  # cancelled on the way: whatever was not answered
                    for request in requests:
                        request.settle(error=leaving)
        finally:
            self._publishing = False
            self._down_reason = "the node is leaving the cluster"
            for request in self._to_publish:
                request.settle(error=leaving)
            self._to_publish = []
            if self._in_doubt:
                logger.warning("cluster: leaving with %d publishes in doubt", len(self._in_doubt))
            if self._publish_conn is not None:
                await self._publish_conn.aclose()
                self._publish_conn = None

    async def _send_publishes(self, requests: list[_Publish]) -> None:
        """One round trip for them all, retried once as a whole (each is idempotent:
        its batch number).  Those that come back NOSCRIPT (Redis restarted and lost
        the script) are sent again as EVAL, which loads it."""
        sha = self._publish.sha
        commands = [("EVALSHA", sha, 2, *r.keys, *r.args) for r in requests]
        again = await self._settle_round_trip(requests, commands, noscript_again=True)
        if again:
            commands = [("EVAL", scripts.PUBLISH, 2, *r.keys, *r.args) for r in again]
            await self._settle_round_trip(again, commands, noscript_again=False)

    async def _settle_round_trip(
        self, requests: list[_Publish], commands: Sequence[resp.Command], *, noscript_again: bool
    ) -> list[_Publish]:
        """Send ``commands`` (one per request) and settle each request by its reply;
        returns those answered NOSCRIPT, if ``noscript_again``."""
        try:
            replies = await self._publish_round_trip(commands)
        except _Unanswered as failed:
            for request in requests:
                self._fail(request, failed.cause, in_doubt=failed.sent)
            return []
        again = []
        for request, reply in zip(requests, replies, strict=True):
            if not isinstance(reply, resp.ReplyError):
                self._succeed(request, reply)
            elif noscript_again and reply.code == "NOSCRIPT":
                again.append(request)
            else:
                self._fail(request, reply, in_doubt=False)
        return again

    def _succeed(self, request: _Publish, reply: Any) -> None:
        if not request.resent:
            request.settle(result=reply)  # (`publish` notes it)
            return
        self._note_published(request, reply)
        how = "had been published" if str(reply[3]) == "1" else "is published now"
        logger.info("cluster: a publish in doubt to %s %s", request.room_key, how)

    def _fail(self, request: _Publish, error: BaseException, *, in_doubt: bool) -> None:
        """A publish that failed: refused if Redis cannot have taken it, else in doubt
        until Redis answers a new attempt (which, for one already in doubt, any
        failure is: its first attempt may have been taken) or the subscription
        brings its batch back (`_came_back`)."""
        if (in_doubt or request.resent) and not isinstance(error, resp.ReplyError):
            reply = self._own_batches.get(request.seq)
            if reply is not None:  # Redis ran it: the answer, not the publish, was lost
                logger.info(
                    "cluster: the answer to a publish to %s was lost, but its batch came "
                    "back on the subscription: published",
                    request.room_key,
                )
                self._succeed(request, reply)
                return
        if request.resent and not isinstance(error, resp.ReplyError):
            self._in_doubt.append(request)
        elif request.resent:
            logger.warning(
                "cluster: giving up a publish in doubt to %s: %s", request.room_key, error
            )
        elif in_doubt:
            request.resent = True
            self._in_doubt.append(request)
            request.settle(error=error)
        else:
            request.settle(error=error)

    async def _publish_round_trip(self, commands: Sequence[resp.Command]) -> list[Any]:
        """The replies to ``commands`` sent as one pipeline; retried once on a new
        connection after one that failed or timed out.  Raises `_Unanswered`, which
        says whether Redis may have run them."""
        config = self.config
        sent = False
        for attempt in range(2):
            self._publish_round_trips += 1
            calling = False
            try:
                conn = self._publish_conn
                if conn is None or conn.closed:
                    with trio.fail_after(config.connect_timeout):
                        conn = self._publish_conn = await resp.open_connection(
                            self._endpoint, client_name=f"machat-{self.node}-publish"
                        )
                calling = True
                with trio.fail_after(config.command_timeout):
                    return await conn.call_many(commands)
            except (OSError, trio.TooSlowError) as exc:
                # (a call that timed out was sent; one on a connection Redis had
                # closed was not: `resp.ConnectionLost.sent`)
                sent = sent or (calling and getattr(exc, "sent", True))
                if self._publish_conn is not None:
                    await self._publish_conn.aclose()
                    self._publish_conn = None
                if attempt:
                    raise _Unanswered(exc, sent) from exc
            await trio.sleep(RETRY_DELAY)
        raise AssertionError("unreachable")

    def notice(self, room: str, event: ev.Join | ev.Leave | ev.Nick) -> None:
        """Tell the room's members on other nodes (whenever Redis can be reached)."""
        channel = self.keys.room_channel(fold_name(room))
        self._queue_notice(channel, wire.encode_notice(self.node, event))

    def _queue_notice(self, channel: str, payload: str) -> None:
        if self._gave_up:
            return
        notices = self._pending_notices
        notices.append((channel, payload))
        if len(notices) > MAX_PENDING_NOTICES:
            del notices[: len(notices) - MAX_PENDING_NOTICES]
        self._presence_dirty()

    # -- reading the stream ------------------------------------------------------------

    async def _read_room(
        self,
        key: str,
        mode: str,
        after: int,
        count: int,
        spelled: str | None = None,
        *,
        copies: bool = False,
    ) -> _Stored:
        """What the room's stream holds: ``count`` rows after ``after``, or its
        last ``count`` (``mode``: "after" or "last").  The rows' room is
        ``spelled``, else as the room is open here, else ``key``.  ``copies``: ask
        for the copies recorded (`_record_copy`) as well."""
        result: Any = await self._read(
            keys=[self.keys.room_meta(key), self.keys.room_log(key)],
            args=[mode, after, count, int(copies)],
        )
        epoch = int(result[0]) if result[0] else 0
        seq = int(result[1]) if result[1] else 0
        if spelled is None:
            room = self._rooms.get(key)
            spelled = room.name if room is not None else key
        stored = _Stored(epoch, seq)
        for line in result[2].splitlines():
            first, original, n = line.split("\t")
            stored.copies[int(first)] = (int(original), int(n))
        for i in range(3, len(result), 5):
            stored.rows.append(
                (spelled, result[i + 1], result[i + 2], int(result[i]), float(result[i + 3]))
            )
            if result[i + 4] and (batch := wire.decode_made(result[i + 4])) is not None:
                stored.made.append((batch[0], int(result[i]), batch[1]))
        return stored

    async def recent(self, room: str, count: int) -> tuple[ev.Message, ...]:
        """The room's last ``count`` messages, oldest first.  Raises ClusterUnavailable."""
        if count <= 0:
            return ()
        try:
            stored = await self._read_room(fold_name(room), "last", 0, count, room)
        except _REDIS_ERRORS as exc:
            self._note_down(exc)
            raise self._unavailable() from None
        return tuple(ev.Message(*row) for row in reversed(stored.rows))

    async def since(self, room: str, after: int, limit: int) -> tuple[tuple[ev.Message, ...], bool]:
        """Up to ``limit`` messages with ids above ``after``, and whether none were lost.

        A copy (`_copy_of`) of messages the client had (``after`` or before, in a
        stream Redis has lost since) is left out: those this node discarded, and
        those any node recorded (`_record_copy`).  Only a copy no node that had the
        first has seen yet is given."""
        key = fold_name(room)
        try:
            stored = await self._read_room(key, "after", after, limit, room, copies=True)
        except _REDIS_ERRORS as exc:
            self._note_down(exc)
            raise self._unavailable() from None
        rows, copies = stored.rows, stored.copies
        if (here := self._rooms.get(key)) is not None:
            copies.update(here.copies)
        if copies:
            had: set[int] = set()
            for first, (original, count) in copies.items():
                # (the first copy's ids up to ``after`` reached the client)
                had.update(range(first, first + min(count, after - original + 1)))
            rows = [row for row in rows if row[3] not in had]
        if rows:
            complete = rows[0][3] == after + 1
        else:
            epoch, seq = stored.epoch, stored.seq
            complete = bool(epoch) and seq <= after or not epoch and after == 0
        return tuple(ev.Message(*row) for row in rows), complete

    # -- the subscription --------------------------------------------------------------

    async def _subscriber(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Keep one pub/sub session on its own connection (`resp`); every new one
        catches every room up from the stream."""
        config = self.config
        started = False
        while True:
            conn = None
            try:
                with trio.fail_after(config.connect_timeout):
                    conn = await resp.open_connection(
                        self._endpoint, client_name=f"machat-{self.node}-subscribe"
                    )
                with trio.fail_after(config.command_timeout * 2):
                    async with self._sub_lock:
                        channels = [self._node_channel, self.keys.all_channel, *self._by_channel]
                        waiting = [self._confirming.setdefault(c, trio.Event()) for c in channels]
                        await conn.send([("SUBSCRIBE", *channels)])
                        while not all(event.is_set() for event in waiting):
                            self._on_replies(await conn.receive())
                        self._pubsub = conn
                self._sessions += 1
                if not started:
                    started = True
                    task_status.started()
                else:
                    logger.info("cluster: subscription re-established; catching up")
                    for room in list(self._rooms.values()):
                        if room.early is None:
                            self._start_fill(room)
                while True:
                    self._on_replies(await conn.receive())
            except (*_REDIS_ERRORS, trio.TooSlowError) as exc:
                # Not necessarily an outage (Redis drops slow subscribers): the keeper
                # decides that; this loop only makes a new session.
                logger.info("cluster: subscription lost: %s", _describe(exc))
            finally:
                self._pubsub = None
                if conn is not None:
                    await conn.aclose()
            if not started:
                raise ClusterUnavailable(f"cannot subscribe at Redis at {config.url}")
            await trio.sleep(PROBE_INTERVAL)

    def _on_replies(self, replies: list[Any]) -> None:
        """What the subscription's connection brought: messages, confirmations, pongs."""
        self._sub_heard = trio.current_time()
        for reply in replies:
            if type(reply) is list and len(reply) == 3:
                kind = reply[0]
                if kind == "message":
                    self._on_message(reply[1], reply[2])
                    continue
                if kind == "subscribe":
                    confirmed = self._confirming.pop(reply[1], None)
                    if confirmed is not None:
                        confirmed.set()
                    continue
                if kind == "unsubscribe":
                    continue
            if type(reply) is list and reply and reply[0] == "pong":
                continue
            logger.warning("cluster: unexpected reply on the subscription: %.200r", reply)

    async def _check_subscription(self) -> None:
        """Redis sends a quiet subscription nothing: after two heartbeats (at least
        ``SUBSCRIPTION_IDLE`` seconds) of silence, PING it; without an answer within
        the command timeout, close it (the subscriber makes a new one).  A half-open
        connection would otherwise stay silent forever."""
        conn = self._pubsub
        if conn is None:
            return
        now = trio.current_time()
        if now - self._sub_heard < max(SUBSCRIPTION_IDLE, 2 * self.config.heartbeat):
            return
        if self._sub_pinged <= self._sub_heard:  # (not pinged since it last spoke)
            self._sub_pinged = now
            with contextlib.suppress(*_REDIS_ERRORS):  # (the subscriber hears of it)
                await conn.send([("PING",)])
        elif now - self._sub_pinged > self.config.command_timeout:
            logger.info("cluster: the subscription did not answer a PING; making a new one")
            await conn.aclose()

    def _on_message(self, channel: str, data: str) -> None:
        try:
            room = self._by_channel.get(channel)
            if room is not None:
                if data.startswith("R"):
                    batch = wire.decode_batch(data)
                    self._batches_received += 1
                    if batch.origin != self.node:
                        self._remote_at[room.key] = trio.current_time()
                    elif batch.incarnation == self.incarnation:
                        self._came_back(batch)
                    if room.early is not None:
                        room.early.append(batch)
                    else:
                        self._offer(room, batch)
                else:
                    origin, event = wire.decode_room_notice(data, room.name)
                    if origin != self.node:
                        self._flush_ready(room.key)  # what came before it goes first
                        self._listener.room_notice(room.key, event)
            elif channel == self._node_channel:
                direct, names = wire.decode_direct(data)
                self._listener.direct(direct, names)
            elif channel == self.keys.all_channel:
                decoded = wire.decode_all(data)
                if isinstance(decoded, wire.NodeGone):
                    if decoded.node != self.node:
                        logger.info(
                            "cluster: node %s is gone with %d users",
                            decoded.node,
                            len(decoded.users),
                        )
                        self._listener.node_gone(decoded.node, decoded.users)
                elif isinstance(decoded, wire.Moderated):
                    if decoded.origin != self.node:
                        self._listener.moderated_elsewhere(decoded.event)
                elif decoded[0] != self.node:
                    self._listener.broadcast(decoded[1])
        except wire.WireError as exc:
            logger.warning("cluster: ignoring a payload on %s: %s", channel, exc)

    def _came_back(self, batch: wire.Batch) -> None:
        """One of this node's batches, on the subscription: Redis ran that publish.
        Kept a while, for a publish whose answer is lost after that (`_fail`); one in
        doubt already is settled now, without being sent again."""
        kept = self._own_batches
        kept[batch.seq] = reply = [batch.first, batch.epoch, batch.ts, 1]
        if len(kept) > OWN_BATCHES_KEPT:
            del kept[next(iter(kept))]
        for request in self._in_doubt:
            if request.seq == batch.seq:
                self._in_doubt.remove(request)
                self._succeed(request, reply)
                return

    def _offer(self, room: _Room, batch: wire.Batch) -> None:
        feed = room.feed
        restarts = feed.restarts
        epoch = batch.epoch
        out: RoomPass | None
        if self._copy_of(room, batch.made, epoch, batch.first, batch.count):
            rows = feed.discard(epoch, batch.first, batch.count)
            out = RoomPass.of_rows(rows) if rows else None
        else:
            out = feed.offer_pass(epoch, batch.room_pass(room.name))
        if feed.restarts != restarts:
            logger.warning("cluster: room %s's stream was lost; restarted at %d", room.name, epoch)
        if out is not None:
            self._emit(room.key, out)
        if feed.first_ahead() is not None:
            self._start_fill(room)

    def _offer_stored(self, room: _Room, stored: _Stored) -> list[Row]:
        """`RoomFeed.offer` of rows read from the stream, the copies among them
        discarded (`_copy_of`)."""
        feed = room.feed
        epoch, rows = stored.epoch, stored.rows
        copies = [
            (f, n) for publish, f, n in stored.made if self._copy_of(room, publish, epoch, f, n)
        ]
        if not copies:
            return feed.offer(epoch, rows)
        out = []
        for first, count in copies:
            out += feed.discard(epoch, first, count)
        kept = [r for r in rows if not any(f <= r[3] < f + n for f, n in copies)]
        return out + feed.offer(epoch, kept)

    def _copy_of(self, room: _Room, made: wire.Made, epoch: int, first: int, count: int) -> bool:
        """Whether a batch is a copy of one this room delivered: made by the same
        publish, in another stream (sent again after Redis lost the first).  Else
        the batch is kept as that publish's."""
        known = room.made.get(made[0])
        if known is not None and known[0] == made:
            if known[1] == epoch:
                return False  # the same batch again (the feed knows its ids)
            if room.feed.delivered(known[1], known[2] + count - 1):
                self._copies_discarded += 1
                logger.info(
                    "cluster: room %s: %d messages from node %s were published again "
                    "after Redis lost them; delivered here already (as %d-%d), not again",
                    room.name,
                    count,
                    made[0],
                    known[2],
                    known[2] + count - 1,
                )
                room.copies[first] = (known[2], count)
                if len(room.copies) > COPIES_KEPT:
                    del room.copies[next(iter(room.copies))]
                self._spawn(self._record_copy, room, epoch, first, known[2], count)
                return True
            # (the first copy never reached the members here: this one does)
        if known is None or (epoch, first) > known[1:]:  # (a fill may bring older ones)
            room.made[made[0]] = (made, epoch, first)
        return False

    async def _record_copy(
        self, room: _Room, epoch: int, first: int, original: int, count: int
    ) -> None:
        """Tell Redis that a batch is a copy, for `since` on the nodes that did not
        deliver the first (a client may resume on any node).  Best effort: if Redis
        cannot be told, this node's `since` still knows it."""
        try:
            await self._record_copy_script(
                keys=[self.keys.room_meta(room.key)], args=[epoch, first, original, count]
            )
        except _REDIS_ERRORS as exc:
            logger.info(
                "cluster: room %s: could not record a copy (ids %d-%d): %s",
                room.name,
                first,
                first + count - 1,
                _describe(exc),
            )

    # -- handing messages to the listener ------------------------------------------------

    def _emit(self, key: str, messages: RoomPass) -> None:
        """Queue a room's next messages for the deliverer."""
        self._received += 1
        ready = self._ready.get(key)
        if ready is None:
            self._ready[key] = [messages]
            self._ready_changed.set()
        else:
            ready.append(messages)

    def _flush_ready(self, key: str) -> None:
        """Hand a room's queued messages over now (before a notice for that room)."""
        passes = self._ready.pop(key, None)
        if passes:
            self._hand_over(key, passes)

    def _hand_over(self, key: str, passes: list[RoomPass]) -> None:
        """Give the listener a room's queued passes as one (their text joined once)."""
        self._held_until.pop(key, None)
        if key in self._rooms:  # (not for a room closed meanwhile: nothing to keep)
            self._handed_over_at[key] = trio.current_time()
        messages = RoomPass.joined(passes)
        self._delivered += len(messages)
        self._listener.room_messages(key, messages)

    async def _deliverer(self) -> None:
        """Hand the listener each room's queued messages as one pass.

        Every node's batches arrive on one subscription, one pub/sub message each,
        and each hand-over costs a write per member here: delivered one by one, a
        room with senders on three nodes would cost its members three writes where
        one node costs one.  So, after a batch arrives, this task waits while the
        subscriber is still handing over what it has already read (at most
        `COALESCE_TICKS` scheduling ticks).  And a busy room that other nodes publish
        to (handed over, and sent a batch by another node, less than `BUSY_GATHERS`
        gather times ago) with `GATHER_MEMBERS` members here or more is held up to
        ``config.gather`` after its first batch: Redis runs the nodes' publishes of
        one moment one after another, so their batches come a script's run apart,
        and held, they share a write.  A quiet room's message goes at once (Nagle's
        rule, as for a room's passes), and so does a room only this node publishes
        to: holding it would merge nothing.
        """
        gather = self.config.gather
        busy = BUSY_GATHERS * gather
        ready = self._ready
        while True:
            if not ready:
                self._ready_changed = trio.Event()
                await self._ready_changed.wait()
            now = trio.current_time()
            if any(self._due_at(key, now, gather, busy) <= now for key in ready):
                # Something goes now: first let the subscriber hand over what else
                # it has read, to go with it.  (A room held anyway needs no ticks.)
                for _ in range(COALESCE_TICKS):
                    seen = self._received
                    await trio.lowlevel.checkpoint()
                    if self._received == seen:
                        break
                now = trio.current_time()
            wake = math.inf
            for key in list(ready):
                until = self._due_at(key, now, gather, busy)
                if until <= now:
                    self._hand_over(key, ready.pop(key))
                else:
                    wake = min(wake, until)
            if wake < math.inf:
                self._ready_changed = trio.Event()
                with trio.move_on_at(wake):
                    await self._ready_changed.wait()

    def _due_at(self, key: str, now: float, gather: float, busy: float) -> float:
        """When a ready room is handed over: ``now``, or when its hold ends (the hold
        starts at its first look, `_holds`)."""
        until = self._held_until.get(key)
        if until is None:
            if not (gather > 0 and self._holds(key, now, busy)):
                return now
            until = self._held_until[key] = now + gather
        return until

    def _holds(self, key: str, now: float, busy: float) -> bool:
        """Whether a room's next hand-over waits for more (`_deliverer`)."""
        return (
            now - self._handed_over_at.get(key, -math.inf) < busy
            and now - self._remote_at.get(key, -math.inf) < busy
            and self._listener.members_here(key) >= GATHER_MEMBERS
        )

    def _check_rooms(self) -> None:
        """Fill what a room should have received by now (e.g. its own last publish)."""
        for room in list(self._rooms.values()):
            if room.early is not None:
                continue
            if room.feed.last < room.checked_head:
                self._start_fill(room)
            room.checked_head = room.feed.head

    def _start_fill(self, room: _Room) -> None:
        if not room.filling:
            room.filling = True
            self._spawn(self._fill, room)

    async def _fill(self, room: _Room) -> None:
        """Catch a room up from its stream: what is missing, and what came since."""
        try:
            while self._rooms.get(room.key) is room:
                feed = room.feed
                start = feed.last + 1
                stored = await self._read_room(room.key, "after", feed.last, FILL_CHUNK)
                rows = stored.rows
                feed.note_head(stored.epoch, stored.seq)
                out = self._offer_stored(room, stored) if stored.epoch else []
                if feed.last < start and feed.gap() is not None:
                    # The stream no longer holds what comes next: give it up.
                    candidates = [row[3] for row in rows if row[3] > feed.last]
                    if (ahead := feed.first_ahead()) is not None:
                        candidates.append(ahead)
                    upto = (min(candidates) - 1) if candidates else feed.head
                    logger.warning(
                        "cluster: room %s: messages %d-%d are no longer stored",
                        room.name,
                        feed.last + 1,
                        upto,
                    )
                    out += feed.skip(upto)
                if out:
                    self._gaps_filled += 1
                    self._emit(room.key, RoomPass.of_rows(out))
                if len(rows) < FILL_CHUNK and feed.gap() is None:
                    return
                if feed.last < start:
                    return  # no progress; the keeper tries again
        except _REDIS_ERRORS as exc:
            self._note_down(exc)
        finally:
            room.filling = False

    # -- groups ------------------------------------------------------------------------

    async def define_group(
        self, owner: str, name: str, members: Sequence[str], *, renamed_from: str = ""
    ) -> Group | None:
        """Make ``name`` (``#Team``) the group of ``members``, owned by ``owner``, a user
        of this node, for every node; it lasts while ``owner`` holds its name.  If
        someone else owns the group, nothing changes and this returns theirs (the
        owner's name before a rename, ``renamed_from``, is not someone else).
        Raises ClusterUnavailable."""
        user = self._users.get(fold_name(owner))
        if not self._up or user is None:
            raise self._unavailable()
        record = "\n".join([fold_name(owner), user.lease, name, *members])
        folded = fold_name(owner)
        theirs = await self._call_group(
            "define", name, record, folded, fold_name(renamed_from) if renamed_from else folded
        )
        if theirs is None:
            user.groups.add(fold_name(name))
        return theirs

    async def find_group(self, name: str) -> Group | None:
        """A group defined on any node, or None.  Raises ClusterUnavailable."""
        if not self._up:
            raise self._unavailable()
        return await self._call_group("get", name)

    async def _call_group(self, mode: str, name: str, *args: str) -> Group | None:
        try:
            record: Any = await self._group_script(
                args=[self.keys.prefix, mode, fold_name(name), *args]
            )
        except _REDIS_ERRORS as exc:
            self._note_down(exc)
            raise self._unavailable() from None
        if not record:
            return None
        _, lease, spelled, *members = str(record).split("\n")
        owner = lease.split("\t")[2] if lease.count("\t") >= 3 else "?"  # node, inc, Name, n
        return Group(spelled, owner, tuple(members))

    # -- private, group, @ALL ----------------------------------------------------------

    async def route(
        self, sender: str, names: Sequence[str], text: str, *, group: str | None = None
    ) -> list[str | None]:
        """Send a private (or ``group``) message to users wherever they are.

        Returns, per name, its spelling if that user is online, else None.  Raises
        ClusterUnavailable.
        """
        if not self._up:
            raise self._unavailable()
        ts = time.time()
        kind = "P" if group is None else f"G\t{group}"
        header = f"{kind}\t{ts!r}\t{sender}"
        args = [self.keys.prefix, header, text, *(fold_name(n) for n in names)]
        try:
            found: Any = await self._route(args=args)
        except _REDIS_ERRORS as exc:
            self._note_down(exc)
            raise self._unavailable() from None
        return [spelled or None for spelled in found]

    async def broadcast(self, event: ev.Broadcast) -> None:
        """``@ALL:`` to the other nodes (this node delivers its own)."""
        if not self._up:
            raise self._unavailable()
        payload = wire.encode_broadcast(self.node, event.sender, event.text, event.ts)
        try:
            await self._client.publish(self.keys.all_channel, payload)
        except _REDIS_ERRORS as exc:
            self._note_down(exc)
            raise self._unavailable() from None

    def announce_moderation(self, event: ev.Moderation | ev.Topic) -> None:
        """Tell the other nodes that an operator here acted (after its state was
        written), so that they carry it out for their users: a notice on the ``all``
        channel, sent with the presence writer's next call, so that while Redis
        cannot be reached it waits, and goes once Redis answers."""
        self._queue_notice(self.keys.all_channel, wire.encode_moderated(self.node, event))

    async def roster(self) -> Roster:
        """Everyone online in the cluster.  Raises ClusterUnavailable."""
        if not self._up:
            raise self._unavailable()
        try:
            result: Any = await self._roster(args=[self.keys.prefix])
        except _REDIS_ERRORS as exc:
            self._note_down(exc)
            raise self._unavailable() from None
        nodes: list[str] = []
        users: list[tuple[str, str, str]] = []
        i = 0
        while i < len(result):
            node, count = result[i], int(result[i + 1])
            nodes.append(node)
            for value in result[i + 2 : i + 2 + count]:
                name, _, room = value.partition("\t")
                users.append((name, room, node))
            i += 2 + count
        return Roster(tuple(sorted(nodes)), tuple(users))


@attrs.define(eq=False)
class _Stored:
    """What `Backplane._read_room` read: epoch and seq (0 for a room without a
    stream), rows, ``made`` (publish, first id, count) of each batch whose first
    entry is among the rows, and, if asked, the copies recorded (first id -> the
    first copy's first id, count)."""

    epoch: int
    seq: int
    rows: list[Row] = attrs.Factory(list)
    made: list[tuple[wire.Made, int, int]] = attrs.Factory(list)
    copies: dict[int, tuple[int, int]] = attrs.Factory(dict)


@attrs.define(eq=False)
class _Publish:
    """One room's publish, waiting for the publisher: its keys and arguments, and then
    the script's reply or the error."""

    keys: list[str]
    args: list[str | int]
    room_key: str
    count: int
    #: Its batch number (in ``args``): a batch on the subscription says it.
    seq: int
    done: trio.Event = attrs.Factory(trio.Event)
    result: Any = None
    error: BaseException | None = None
    #: Its answer was lost: it is in doubt, sent again with no one waiting (the room
    #: was told `PublishInDoubt`; `Backplane._fail`).
    resent: bool = False

    def settle(self, *, result: Any = None, error: BaseException | None = None) -> None:
        """Give the waiting room its answer; the first one counts."""
        if not self.done.is_set():
            self.result, self.error = result, error
            self.done.set()


class _Unanswered(Exception):
    """A publish round trip that failed: ``cause``, and whether Redis may have run it."""

    def __init__(self, cause: BaseException, sent: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.sent = sent


def _endpoint(client: coredis.Redis[str]) -> resp.Endpoint:
    """The Redis that coredis connects to, as it read the URL (the same database,
    credentials and TLS settings for both kinds of connection)."""
    pool = client.connection_pool
    where, options = pool.location, pool.connection_kwargs
    db = int(options.get("db") or 0)
    user, password = options.get("username"), options.get("password")
    if isinstance(where, UnixDomainSocketLocation):
        return resp.Endpoint(path=where.path, db=db, username=user, password=password)
    assert isinstance(where, TCPLocation), where
    return resp.Endpoint(
        host=where.host,
        port=where.port,
        db=db,
        username=user,
        password=password,
        ssl_context=options.get("ssl_context"),
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError | TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} ({cause})"
    return text
