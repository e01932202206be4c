"""The full-screen front end: urwid's loop and the chat session, in one trio nursery.

`run_ui` drives a `ChatView` with urwid's `TrioEventLoop` inside the caller's trio
run, next to the connection task. The connection task runs one `Session` after
another: it speaks the JSON format, shows every event, and when the server goes
away it says so and reconnects with backoff (`BACKOFF`), under the name and in the
room the user has now, asking with the handshake's ``since`` for the messages after
the last one shown.

The user leaves with ``/quit`` (``:quit``, ``exit``) or Ctrl+C: the quit line is
sent and the UI ends when the server closes, or after `CLOSE_GRACE` seconds. The
terminal is restored in every case (``MainLoop.start`` is a context manager).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator

import attrs
import trio
import urwid

from machat.protocol import events as ev
from machat.protocol.formatting import Format
from machat.protocol.handshake import Handshake, fold_name

from ..session import CLOSE_GRACE, ConnectionClosed, LineSkipped, SendLine, ServerLine, Session
from .view import PALETTE, ChatView

__all__ = ["BACKOFF", "RESUME_HISTORY", "UIOptions", "run_ui"]

logger = logging.getLogger(__name__)

BACKOFF: tuple[float, ...] = (1, 2, 4, 8, 15, 30)
"""Seconds between reconnection attempts; the last one repeats."""

RESUME_HISTORY = 100
"""Messages asked for when reconnecting to a room where we have seen no message yet
(otherwise the handshake's ``since`` asks for exactly those after the last one shown)."""

FRAME = 1 / 30
"""At most this many seconds between redraws for what the server sends (bursts coalesce)."""

OUTGOING_QUEUE = 64
"""Lines typed faster than they can be sent: past this many, a line is refused."""


@attrs.frozen
class UIOptions:
    bell: bool = True
    mouse: bool = True


def same_name(a: str, b: str) -> bool:
    return fold_name(a) == fold_name(b)


class _PaneHandler(logging.Handler):
    """Log records as lines of the message pane: stderr is the screen we draw on."""

    def __init__(self, view: ChatView) -> None:
        super().__init__(level=logging.WARNING)
        self._view = view

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._view.note(f"{record.levelname.lower()}: {record.getMessage()}", error=True)
        except Exception:  # a broken record must not take the UI down
            self.handleError(record)


@contextlib.contextmanager
def _logging_to(view: ChatView) -> Iterator[None]:
    """While the UI runs, warnings go to the pane instead of the root logger's stream handlers."""
    root = logging.getLogger()
    streams = [h for h in root.handlers if type(h) is logging.StreamHandler]
    handler = _PaneHandler(view)
    for h in streams:
        root.removeHandler(h)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        for h in streams:
            root.addHandler(h)


class CannotConnect(Exception):
    """Opening a new connection failed; the message says why in one line."""


OpenStream = Callable[[], Awaitable[trio.abc.Stream]]


class _Client:
    def __init__(
        self,
        handshake: Handshake,
        open_stream: OpenStream,
        options: UIOptions,
        screen: urwid.display.common.BaseScreen,
    ) -> None:
        self._handshake = attrs.evolve(handshake, format=Format.JSON)
        self._open_stream = open_stream
        self._options = options
        self._screen = screen
        self._outgoing_send, self._outgoing = trio.open_memory_channel[str](OUTGOING_QUEUE)
        self.view = ChatView(
            handshake.name, handshake.room, send=self._queue, quit=self._leave, bell=self._ring
        )
        self.loop = urwid.MainLoop(
            self.view,
            PALETTE,
            screen=screen,
            event_loop=urwid.TrioEventLoop(),
            handle_mouse=options.mouse,
        )
        self._connected = False
        self._welcomed_once = False
        self._session_welcomed = False
        self._leaving = False
        self._ui_scope = trio.CancelScope()
        self._dirty = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.refusal: str | None = None  # why the server refused us on the first connection

    @property
    def welcomed(self) -> bool:
        """Whether the server ever accepted us."""
        return self._welcomed_once

    # --- Callbacks from the view (synchronous: urwid calls them) -----------------

    def _queue(self, line: str) -> bool:
        if not self._connected:
            if not self._leaving:
                self.view.note("not connected: line not sent (it is kept below)", error=True)
            return False
        try:
            self._outgoing_send.send_nowait(line)
        except trio.WouldBlock:
            self.view.note("sending too fast: line not sent (it is kept below)", error=True)
            return False
        return True

    def _leave(self) -> None:
        if self._leaving:
            return
        self._leaving = True
        if not self._connected:
            self._ui_scope.cancel()
        elif self._nursery is not None:
            self._nursery.start_soon(self._grace)

    def _ring(self) -> None:
        if self._options.bell:
            self._screen.write("\a")  # type: ignore[attr-defined]
            self._screen.flush()  # type: ignore[attr-defined]

    async def _grace(self) -> None:
        await trio.sleep(CLOSE_GRACE)
        self._ui_scope.cancel()

    # --- The connection ---------------------------------------------------------

    def _next_handshake(self) -> Handshake:
        """Who we are now (after /nick and /join), asking for what we missed: the
        messages after the last one shown (``since``), or the recent ones."""
        handshake = attrs.evolve(self._handshake, name=self.view.name, room=self.view.room)
        if not self._welcomed_once:
            return handshake
        since = self.view.newest_id(self.view.room)
        if since is None:
            return attrs.evolve(handshake, history=RESUME_HISTORY, since=None)
        self.view.resuming = True  # the replay is what was missed
        return attrs.evolve(handshake, history=0, since=since)

    async def _send_loop(self, session: Session) -> None:
        async for line in self._outgoing:
            try:
                await session.send(SendLine(line.encode("utf-8")))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.view.note(f"not sent (connection lost): {line}", error=True)
                self._dirty.set()
                return

    def _ask(self, line: str, note: Callable[[], None]) -> None:
        try:
            self._outgoing_send.send_nowait(line)
        except trio.WouldBlock:
            return
        note()

    async def _session(self, stream: trio.abc.Stream) -> None:
        self._session_welcomed = False
        session = Session(stream, self._next_handshake())
        await session.send_handshake()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_loop, session)
            while True:
                event = await session.receive()
                if isinstance(event, ConnectionClosed):
                    break
                if isinstance(event, LineSkipped):
                    self.view.note(f"skipped a line from the server: {event.reason}", error=True)
                    self._dirty.set()
                    continue
                assert isinstance(event, ServerLine) and event.event is not None
                if isinstance(event.event, ev.Welcome):
                    self._connected = True
                    self._welcomed_once = self._session_welcomed = True
                    self.view.set_connection("connected")
                    self._ask("/rooms", self.view.asked_rooms)
                elif isinstance(event.event, ev.Join) and same_name(
                    event.event.name, self.view.name
                ):
                    # We are in a room (again): fill its member list.
                    self._ask("/who", self.view.asked_members)
                elif isinstance(event.event, ev.Error) and not self._welcomed_once:
                    self.refusal = event.event.message
                self.view.show(event.event)
                self._dirty.set()
            nursery.cancel_scope.cancel()
        self._connected = False

    async def _drain_outgoing(self) -> None:
        while True:
            try:
                self._outgoing.receive_nowait()
            except trio.WouldBlock:
                break
        await trio.lowlevel.checkpoint()

    async def connections(self, stream: trio.abc.Stream | None) -> None:
        """Run sessions until the user leaves (or the first handshake is refused)."""
        attempt = 0
        while True:
            if stream is None:
                self.view.set_connection("connecting")
                self._dirty.set()
                try:
                    stream = await self._open_stream()
                except CannotConnect as exc:
                    self.view.note(str(exc), error=True)
                    self._dirty.set()
            if stream is not None:
                welcomed_before = self._welcomed_once
                try:
                    await self._session(stream)
                finally:
                    await trio.aclose_forcefully(stream)
                    stream = None
                await self._drain_outgoing()
                if self._leaving or not self._welcomed_once:
                    break  # done, or refused at once: nothing to retry for
                self.view.note("lost the connection to the server", error=True)
                self._dirty.set()
                if self._session_welcomed or not welcomed_before:
                    attempt = 0
            delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
            attempt += 1
            self.view.set_connection(f"disconnected: retrying in {delay:g} s")
            self._dirty.set()
            await trio.sleep(delay)
        self._ui_scope.cancel()

    async def _redraw(self) -> None:
        """Redraw after what the connection task changed, at most once a `FRAME`.

        urwid redraws by itself after keys; this covers the server's side without
        depending on how urwid's idle emulation counts the work of other tasks."""
        while True:
            await self._dirty.wait()
            self._dirty = trio.Event()
            self.loop.draw_screen()
            await trio.sleep(FRAME)

    async def run(self, stream: trio.abc.Stream | None) -> None:
        with _logging_to(self.view):
            await self._run(stream)

    async def _run(self, stream: trio.abc.Stream | None) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.connections, stream)
            with self._ui_scope:
                with self.loop.start():
                    if hasattr(self._screen, "tty_signal_keys"):
                        self._screen.tty_signal_keys(intr="undefined")  # Ctrl+C is a key here
                    nursery.start_soon(self._redraw)
                    await self.loop.event_loop.run_async()  # type: ignore[attr-defined]
            nursery.cancel_scope.cancel()


async def run_ui(
    handshake: Handshake,
    open_stream: OpenStream,
    *,
    first: trio.abc.Stream | None = None,
    options: UIOptions = UIOptions(),
    screen: urwid.display.common.BaseScreen | None = None,
    started: Callable[[_Client], None] | None = None,
) -> tuple[int, str | None]:
    """Run the full-screen client until the user leaves; returns the exit code and,
    if the server refused the handshake, why.

    ``first`` is an already open stream to start with; ``open_stream`` opens the
    next one (raising `CannotConnect`). ``screen`` defaults to the terminal.
    """
    if screen is None:
        screen = urwid.display.raw.Screen(bracketed_paste_mode=True)
    client = _Client(handshake, open_stream, options, screen)
    if started is not None:
        started(client)
    await client.run(first)
    if not client.welcomed:
        return 1, client.refusal or "connection closed by server"
    return 0, None
