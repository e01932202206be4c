"""The chat server: listeners, the shared state, and shutdown.

`ChatServer.run` opens the nursery that owns every connection and every room task;
`serve` adds TCP listeners.  Tests can hand `handle` any trio stream, and any
`Transport` to `serve_transport`.  `ChatServer` is the `Hub` its connections use.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from functools import partial

import attrs
import trio
from argon2 import PasswordHasher

from ..protocol import events as ev
from ..protocol.errors import ChatError, ErrorCode
from ..protocol.formatting import encode
from ..protocol.handshake import Handshake
from . import admin
from .accounts import Accounts, SqliteAccountStore
from .config import ServerConfig
from .connection import serve_connection
from .handlers import dispatch, say_nowait
from .history import History
from .member import Member
from .memory import MemoryReleaser
from .moderation import Moderation, SqliteModerationStore
from .passes import RoomPass
from .room import Room
from .sqlite import SqliteDatabase
from .state import ChatState, Counters
from .store import MessageStore
from .transcript import Transcript
from .transport import Peer, Transport
from .web import serve_stream

__all__ = ["ChatServer", "ServerStatistics"]

logger = logging.getLogger("machat.server")

#: Seconds after a crowd left before free memory is handed back to the system.
MEMORY_RELEASE_DELAY = 1.0


@attrs.frozen
class ServerStatistics:
    """A snapshot of the server's figures (`ChatServer.statistics`)."""

    #: Members online now.
    users: int
    #: Connections being served now (joined or not).
    connections_open: int
    rooms: int
    #: Connections accepted since start, and those closed before joining.
    connections_accepted: int
    refused: int
    #: Room lines received, and room messages delivered (one per member reached).
    messages_in: int
    messages_out: int
    #: Members disconnected for reading too slowly.
    evictions: int
    #: Flood-control episodes (each sent one ERROR 108).
    throttles: int

    def format(self) -> str:
        """The ``/stats`` reply and the periodic log line."""
        return (
            f"stats: {self.users} online, {self.connections_open} connections, "
            f"{self.rooms} rooms, {self.connections_accepted} connections accepted, "
            f"{self.refused} refused, {self.messages_in} messages in, "
            f"{self.messages_out} messages out, {self.evictions} evictions, "
            f"{self.throttles} throttles"
        )


class ChatServer:
    def __init__(
        self, config: ServerConfig | None = None, *, hasher: PasswordHasher | None = None
    ) -> None:
        self.config = config = config or ServerConfig()
        self.history = History(config.history_limit)
        self.store = MessageStore(config.db_path) if config.db_path else None
        self.transcript = Transcript(config.transcript_path) if config.transcript_path else None
        self.state = ChatState(
            spawn=self._spawn,
            history=self.history,
            on_messages=self._archive if self.store or self.transcript else None,
            log=self.transcript,
        )
        self.state.room_factory = partial(Room, fanout_interval=config.fanout_interval)
        # Accounts, bans and topics: in the --db file beside the history.
        self.database = SqliteDatabase(config.db_path) if config.db_path else None
        self.accounts: Accounts | None = None
        self._sqlite_stores: list[SqliteAccountStore | SqliteModerationStore] = []
        if self.database is not None:
            account_store = SqliteAccountStore(self.database)
            moderation_store = SqliteModerationStore(self.database)
            self._sqlite_stores += [account_store, moderation_store]
            self.accounts = Accounts(account_store, hasher=hasher)
        self.moderation = Moderation(
            moderation_store if self.database is not None else None, operators=config.operators
        )
        self._nursery: trio.Nursery | None = None
        self._archives_open = False
        self._listen_scope: trio.CancelScope | None = None
        self._stopping = trio.Event()  # set by shutdown()
        self._active = 0  # connections being handled
        self._per_ip: dict[str, int] = {}
        self._memory = MemoryReleaser()
        self._connections_changed = trio.lowlevel.ParkingLot()

    @property
    def active_connections(self) -> int:
        return self._active

    async def wait_connections(self, at_most: int) -> None:
        """Wait until no more than ``at_most`` connections are being served."""
        while self._active > at_most:
            await self._connections_changed.park()

    @property
    def shutting_down(self) -> bool:
        return self._stopping.is_set()

    def _spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        assert self._nursery is not None, "ChatServer.run() is not running"
        self._nursery.start_soon(fn)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the tasks of the server; returns after `shutdown` once all have ended."""
        self.open_archives()
        try:
            await self._run(task_status)
        finally:
            if self.store is not None:
                self.store.close()
            if self.transcript is not None:
                self.transcript.close()
            if self.database is not None:
                self.database.close()

    def open_archives(self) -> None:
        """Open the database and transcript and load history; raises if they cannot be.

        `run` calls this; calling it first (idempotent) surfaces errors early.
        """
        if self._archives_open:
            return
        self._archives_open = True
        if self.store is not None:
            self.store.open()
            self.history.load(self.store.load_recent(self.config.history_limit))
            for room_key, last_id in self.store.last_ids().items():
                self.history.set_last_id(room_key, last_id)
            logger.info("history: %s, %d rooms", self.store.path, len(self.history))
        if self.transcript is not None:
            self.transcript.open()
        for store in self._sqlite_stores:
            store.open()

    def _archive(self, published: RoomPass) -> None:
        if self.store is not None:
            self.store.put_pass(published)
        if self.transcript is not None:
            for message in published.messages():
                self.transcript.message(message)

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        await self.moderation.load()
        async with trio.open_nursery() as archives:
            # The archive writers outlive every room, so their final flush sees all.
            if self.store is not None:
                await archives.start(self.store.run)
            if self.transcript is not None:
                await archives.start(self.transcript.run)
            await self._run_rooms(task_status)
            archives.cancel_scope.cancel()

    async def _run_rooms(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.config.stats_interval > 0:
                nursery.start_soon(self._log_stats)
            task_status.started()
            await self._stopping.wait()
            with trio.move_on_after(self.config.flush_timeout + 1.0):
                await self.wait_connections(at_most=0)
            nursery.cancel_scope.cancel()

    async def serve(
        self,
        listeners: list[trio.SocketListener] | None = None,
        *,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve TCP clients until `shutdown`; reports the listeners when ready.

        Without ``listeners``, listens on the configured host and port.
        """
        if listeners is None:
            listeners = await trio.open_tcp_listeners(self.config.port, host=self.config.host)
        served: list[trio.abc.Listener[trio.abc.Stream]] = list(listeners)
        if self.config.ssl_context is not None:
            served = [
                trio.SSLListener(listener, self.config.ssl_context, https_compatible=False)
                for listener in listeners
            ]
        async with trio.open_nursery() as nursery:
            await nursery.start(self.run)
            with trio.CancelScope() as self._listen_scope:
                async with trio.open_nursery() as listen_nursery:
                    await listen_nursery.start(
                        partial(trio.serve_listeners, handler_nursery=self._nursery),
                        self.handle,
                        served,
                    )
                    task_status.started(listeners)

    #: Serve one client stream (a socket, or anything else in tests).  The chat port
    #: speaks chat, HTTP and WebSocket, and the first bytes decide (machat.server.web).
    #: A plain function, not a wrapper: every idle connection keeps its stack of
    #: coroutine frames alive.
    handle = serve_stream

    async def serve_transport(self, transport: Transport) -> None:
        """Serve one client over any `Transport`."""
        try:
            await serve_connection(self, transport)
        except Exception:
            logger.exception("error serving %s", transport.peer.label)

    # -- the Hub: what connections call -------------------------------------------------

    @property
    def counters(self) -> Counters:
        return self.state.counters

    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None, "ChatServer.run() is not running"
        return self._nursery

    def open_connection(self, peer: Peer) -> str | None:
        refusal = self._over_capacity(peer.ip)
        if refusal is not None:
            return refusal
        self._active += 1
        self._memory.connections_changed(self._active)
        self._per_ip[peer.ip] = self._per_ip.get(peer.ip, 0) + 1
        self.state.counters.connections += 1
        return None

    def close_connection(self, peer: Peer) -> None:
        self._active -= 1
        if self._memory.connections_changed(self._active) and self._nursery is not None:
            self._nursery.start_soon(self._release_memory)
        left = self._per_ip[peer.ip] - 1
        if left:
            self._per_ip[peer.ip] = left
        else:
            del self._per_ip[peer.ip]
        self._connections_changed.unpark_all()

    def leave(self, member: Member, reason: str) -> None:
        self.state.unregister(member, reason)
        if self.config.exit_when_empty and not self.state.users and not self.shutting_down:
            logger.info("the last client left: shutting down (--exit-when-empty)")
            self.shutdown()

    async def _release_memory(self) -> None:
        await trio.sleep(MEMORY_RELEASE_DELAY)  # let the leavers' tasks end first
        self._memory.release()

    def _over_capacity(self, ip: str) -> str | None:
        config = self.config
        if config.max_clients and self._active >= config.max_clients:
            return f"server full: {config.max_clients} connections; try again later"
        if config.max_per_ip and self._per_ip.get(ip, 0) >= config.max_per_ip:
            return (
                f"server full: too many connections from your address (limit {config.max_per_ip})"
            )
        return None

    async def _log_stats(self) -> None:
        while True:
            await trio.sleep(self.config.stats_interval)
            logger.info("%s", self.statistics().format())

    async def admit(self, member: Member, handshake: Handshake) -> None:
        """Register a new member and put it in its room, or raise `ChatError`."""
        self._check_password(handshake)
        await admin.check_admission(self, member, handshake)
        await self.claim_name(member)
        self.state.register(member)
        try:
            room = self.state.room_name(handshake.room)
            member.send_event(ev.Welcome(member.name, room, self.config.motd))
            admin.send_topic(self, member, room)
            await self.prepare_room(room)
            if handshake.since is not None:
                messages, complete = await self.read_since(room, handshake.since)
                member.send_event(ev.History(room, messages, complete))
            elif handshake.history:
                recent = await self.read_recent(room, handshake.history)
                member.send_event(ev.History(room, recent))
            self.state.join(member, room)
        except BaseException:
            self.state.unregister(member)
            raise

    # Hooks a cluster node (machat.cluster.node) overrides: names and history that
    # live beyond this process.

    async def claim_name(self, member: Member) -> None:
        """Before registering: raise `ChatError` if the name is taken elsewhere."""

    async def prepare_room(self, room: str) -> None:
        """Before a handshake's history and join: make ``room`` ready to deliver."""

    async def find_elsewhere(self, name: str) -> str | None:
        """How ``name`` is spelled if that user is online on another node."""
        return None

    def moderated(self, event: ev.Moderation | ev.Topic) -> None:
        """An operator here banned, kicked, muted... or set a topic: what other nodes
        must carry out for their users (`admin.carry_out`)."""

    async def read_recent(self, room: str, count: int) -> tuple[ev.Message, ...]:
        return self.history.recent(room, count)

    async def read_since(self, room: str, id: int) -> tuple[tuple[ev.Message, ...], bool]:
        return self.history.since(room, id)

    def _check_password(self, handshake: Handshake) -> None:
        expected = self.config.password
        if expected is None:
            return
        given = handshake.password or ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise ChatError(ErrorCode.BAD_PASSWORD, "bad password")

    def say_nowait(self, member: Member, texts: list[str]) -> bool:
        return say_nowait(self, member, texts)

    async def dispatch(self, member: Member, text: str) -> str | None:
        """Act on one line of text; returns a leave reason when the member quits."""
        return await dispatch(self, member, text)

    def send_history(self, member: Member, count: int) -> None:
        room = member.room
        if room is None:
            return
        member.send_event(ev.History(room.name, self.history.recent(room.name, count)))

    def statistics(self) -> ServerStatistics:
        state = self.state
        c = state.counters
        return ServerStatistics(
            users=len(state.users),
            connections_open=self._active,
            rooms=len(state.rooms),
            connections_accepted=c.connections,
            refused=c.refused,
            messages_in=c.messages_in,
            messages_out=state.messages_out(),
            evictions=c.evictions,
            throttles=c.throttles,
        )

    def reopen_logs(self) -> None:
        """SIGHUP: reopen the transcript (for logrotate)."""
        if self.transcript is not None:
            self.transcript.reopen()

    # -- shutdown ---------------------------------------------------------------------

    def shutdown(self, notice: str = "server shutting down") -> None:
        """Stop accepting, tell everyone, give output a bounded time to flush, stop."""
        if self._stopping.is_set():
            return
        logger.info("shutting down: %d clients", len(self.state.users))
        if self._listen_scope is not None:
            self._listen_scope.cancel()
        deadline = trio.current_time() + self.config.flush_timeout
        for member in list(self.state.users.values()):
            member.sender.close(encode(ev.Info(notice), member.fmt))
            if member.cancel_scope is not None:
                member.cancel_scope.deadline = min(member.cancel_scope.deadline, deadline)
        for room in list(self.state.rooms.values()):
            room.close()
        self._stopping.set()
