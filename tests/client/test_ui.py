"""The full-screen client in-process: urwid's real MainLoop on trio's loop, a screen
that renders canvases to text at a fixed size, and a real in-process machat server
over memory streams.

Rules: memory streams only, an autojump clock (`ui_clock`), every wait bounded by
`trio.fail_after` and made by polling the drawn screen after each redraw.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
import urwid
import urwid.testing
from urwid.display.common import BaseScreen

from machat.client.ui import view as view_module
from machat.client.ui.logic import display_width, nick_colour
from machat.client.ui.runner import BACKOFF, CannotConnect, UIOptions, run_ui
from machat.client.ui.view import ChatView
from machat.protocol import events as ev
from machat.protocol.errors import ErrorCode
from machat.protocol.handshake import Handshake
from machat.server import ChatServer, ServerConfig
from tests.helpers import LineClient

WAIT = 30  # seconds of the autojump clock


class TextScreen(BaseScreen):
    """A terminal of a fixed size: it keeps the last canvas urwid drew, as text and
    attributes, and hands keys to the main loop as a terminal would."""

    def __init__(self, cols: int = 80, rows: int = 16) -> None:
        super().__init__()
        self.size = (cols, rows)
        self.canvas: urwid.Canvas | None = None
        self.bells = 0
        self._callback: Callable[[list[Any], list[int]], Any] | None = None
        self._pending: collections.deque[list[Any]] = collections.deque()
        self._drawn = trio.Event()

    def get_cols_rows(self) -> tuple[int, int]:
        return self.size

    def draw_screen(self, size: tuple[int, int], canvas: urwid.Canvas) -> None:
        self.canvas = canvas
        self._drawn.set()
        self._drawn = trio.Event()

    def hook_event_loop(self, event_loop: Any, callback: Callable[..., Any]) -> None:
        # Keys arrive as a terminal's do: the loop watches a descriptor for them.
        self._keys_rd, self._keys_wr = socket.socketpair()
        self._keys_rd.setblocking(False)
        self._event_loop = event_loop
        self._watch = event_loop.watch_file(self._keys_rd.fileno(), self._keys_ready)
        self._callback = callback

    def unhook_event_loop(self, event_loop: Any) -> None:
        if self._callback is None:
            return
        event_loop.remove_watch_file(self._watch)
        self._keys_rd.close()
        self._keys_wr.close()
        self._callback = None

    def _keys_ready(self) -> None:
        self._keys_rd.recv(65536)
        while self._pending and self._callback is not None:
            self._callback(self._pending.popleft(), [])

    def write(self, data: str) -> None:
        self.bells += data.count("\a")

    def flush(self) -> None:
        pass

    # --- What a test does -------------------------------------------------------

    @property
    def lines(self) -> list[str]:
        assert self.canvas is not None
        return list(self.canvas.decoded_text)

    @property
    def text(self) -> str:
        return "\n".join(self.lines) if self.canvas is not None else ""

    @property
    def cursor(self) -> tuple[int, int] | None:
        assert self.canvas is not None
        return self.canvas.cursor

    def attrs_of(self, needle: str) -> set[Any]:
        """The display attributes of the runs that contain ``needle``; adjacent runs of
        one attribute are merged first, since how a canvas splits them depends on what
        was redrawn."""
        assert self.canvas is not None
        found = set()
        for row in self.canvas.content():
            runs: list[tuple[Any, str]] = []
            for attr, _cs, text in row:
                decoded = text.decode("utf-8")
                if runs and runs[-1][0] == attr:
                    runs[-1] = (attr, runs[-1][1] + decoded)
                else:
                    runs.append((attr, decoded))
            found |= {attr for attr, text in runs if needle in text}
        return found

    def press(self, *keys: str | tuple[str, int, int, int]) -> None:
        assert self._callback is not None, "the UI is not running"
        self._pending.append(list(keys))
        self._keys_wr.send(b"k")

    def type(self, text: str) -> None:
        self.press(*text)

    def resize(self, cols: int, rows: int) -> None:
        self.size = (cols, rows)
        self.press("window resize")

    async def wait_for(self, predicate: Callable[[], object]) -> None:
        while self.canvas is None or not predicate():
            await self._drawn.wait()

    async def wait_text(self, pattern: str) -> None:
        await self.wait_for(lambda: re.search(pattern, self.text, re.MULTILINE))


class Cuttable(trio.abc.Stream):
    """A stream to the server that a test can cut, as a network outage would."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._cut = trio.Event()

    def cut(self) -> None:
        self._cut.set()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._cut.is_set():
            raise trio.BrokenResourceError("cut")
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = b""
        async with trio.open_nursery() as nursery:

            async def receive() -> None:
                nonlocal data
                data = await self._stream.receive_some(max_bytes)
                nursery.cancel_scope.cancel()

            async def cut() -> None:
                await self._cut.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(receive)
            nursery.start_soon(cut)
        return b"" if self._cut.is_set() else data

    async def aclose(self) -> None:
        await self._stream.aclose()


@attrs.define
class Chat:
    """A server, the UI under test, and a way to bring other people in."""

    nursery: trio.Nursery
    server: ChatServer
    screen: TextScreen
    streams: list[Cuttable] = attrs.Factory(list)
    result: tuple[int, str | None] | None = None
    done: trio.Event = attrs.Factory(trio.Event)
    refuse: bool = False  # open_stream fails, as with the server down

    async def open_stream(self) -> trio.abc.Stream:
        if self.refuse:
            await trio.lowlevel.checkpoint()
            raise CannotConnect("cannot connect to test: Connection refused")
        client_stream, server_stream = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.server.handle, server_stream)
        stream = Cuttable(client_stream)
        self.streams.append(stream)
        await trio.lowlevel.checkpoint()
        return stream

    async def join(self, name: str, room: str = "dev") -> LineClient:
        client_stream, server_stream = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.server.handle, server_stream)
        client = LineClient(client_stream)
        await client.handshake(name, room)
        await client.expect(f"* {name} joined {room}")
        return client

    def start(self, name: str = "Mina", room: str = "dev", **options: Any) -> None:
        handshake = Handshake(name=name, room=room, history=options.pop("history", 0))

        async def run() -> None:
            self.result = await run_ui(
                handshake,
                lambda: self.open_stream(),
                options=UIOptions(**options),
                screen=self.screen,
            )
            self.done.set()

        self.nursery.start_soon(run)

    async def started(self, name: str = "Mina", **options: Any) -> None:
        self.start(name, **options)
        await self.screen.wait_text(rf"\[connected\] dev │ {name}")

    async def finished(self) -> tuple[int, str | None]:
        await self.done.wait()
        assert self.result is not None
        return self.result


@pytest.fixture
def ui_clock() -> trio.testing.MockClock:
    """An autojump clock that waits a few real milliseconds before jumping: urwid's
    loop redraws in trio's last moment before it waits for I/O, which a threshold of
    0 never leaves it. pytest-trio runs a test on a Clock among its own arguments,
    so every test names ``ui_clock``."""
    return trio.testing.MockClock(autojump_threshold=0.005)


@pytest.fixture
async def chat(nursery: trio.Nursery) -> AsyncIterator[Chat]:
    # Without flood control: its throttling of Bob's bursts would spend seconds of the
    # virtual clock that every test bounds.
    server = ChatServer(ServerConfig(rate=0))
    await nursery.start(server.run)
    chat = Chat(nursery, server, TextScreen())
    yield chat
    print("the screen at the end:", chat.screen.text, sep="\n")  # shown when a test fails


async def test_typing_survives_arriving_messages(
    ui_clock: trio.testing.MockClock, chat: Chat
) -> None:
    with trio.fail_after(WAIT):
        bob = await chat.join("Bob")
        await chat.started()
        chat.screen.type("half typed li")
        for i in range(30):
            await bob.send(f"interrupting you {i}")
        await chat.screen.wait_text(r"^\d\d:\d\d <Bob> interrupting you 29")
        lines = chat.screen.lines
        assert lines[-1].rstrip() == "> half typed li"
        assert chat.screen.cursor == (len("> half typed li"), len(lines) - 1)
        assert not any("liBob" in line or "li<Bob>" in line for line in lines)
        chat.screen.type("ne")
        chat.screen.press("enter")
        assert await bob.expect("Mina:half typed line") is not None
        await chat.screen.wait_text(r"<Mina> half typed line")
        assert chat.screen.lines[-1].rstrip() == ">"


async def test_layout_timestamps_day_separator_and_colours(
    ui_clock: trio.testing.MockClock, chat: Chat
) -> None:
    with trio.fail_after(WAIT):
        bob = await chat.join("Bob")
        await chat.started()
        await bob.send("hello")
        await chat.screen.wait_text(r"^\d\d:\d\d <Bob> hello")
        text = chat.screen.text
        assert re.search(r"──── \w+day \d\d \w+ \d{4} ────", text)
        assert re.search(r"^\d\d:\d\d → Mina joined dev", text, re.MULTILINE)
        status = chat.screen.lines[-2]
        assert "[connected] dev │ Mina" in status and "F1 help" in status
        # Bob's name is drawn in his colour, the same one the member list uses.
        (colour,) = {a for a in chat.screen.attrs_of("Bob") if str(a).startswith("nick ")}
        assert colour == f"nick {nick_colour('Bob')}"


async def test_scrolling_holds_still_and_counts_unread(
    ui_clock: trio.testing.MockClock, chat: Chat
) -> None:
    with trio.fail_after(WAIT):
        bob = await chat.join("Bob")
        await chat.started()
        for i in range(40):
            await bob.send(f"line {i}")
        await chat.screen.wait_text(r"<Bob> line 39")
        chat.screen.press("page up")
        await chat.screen.wait_text(r"scrolled up")
        shown = chat.screen.lines[:-2]
        assert "<Bob> line 39" not in "\n".join(shown)
        for i in range(3):
            await bob.send(f"more {i}")
        await chat.screen.wait_text(r"3 unread")
        assert chat.screen.lines[:-2] == shown  # nothing moved
        chat.screen.press("page up")
        await chat.screen.wait_for(lambda: chat.screen.lines[:-2] != shown)
        chat.screen.press("page down", "page down", "page down")
        await chat.screen.wait_text(r"<Bob> more 2")
        assert "unread" not in chat.screen.lines[-2]
        chat.screen.press("page up")
        await chat.screen.wait_text(r"scrolled up")
        chat.screen.press("end")
        await chat.screen.wait_for(lambda: "scrolled up" not in chat.screen.text)
        assert "<Bob> more 2" in chat.screen.text


async def test_mouse_wheel_scrolls(ui_clock: trio.testing.MockClock, chat: Chat) -> None:
    with trio.fail_after(WAIT):
        bob = await chat.join("Bob")
        await chat.started()
        for i in range(40):
            await bob.send(f"line {i}")
        await chat.screen.wait_text(r"<Bob> line 39")
        chat.screen.press(("mouse press", 4, 10, 3))
        await chat.screen.wait_text(r"scrolled up")
        assert "<Bob> line 39" not in chat.screen.text
        for _ in range(3):
            chat.screen.press(("mouse press", 5, 10, 3))
        await chat.screen.wait_for(lambda: "scrolled up" not in chat.screen.text)


async def test_completion_names_recent_first_then_commands_then_rooms(
    ui_clock: trio.testing.MockClock, chat: Chat
) -> None:
    with trio.fail_after(WAIT):
        bea = await chat.join("Bea")
        bob = await chat.join("Bob")
        await chat.started()
        await bea.send("first")
        await bob.send("second")  # Bob spoke last: he comes first
        await chat.screen.wait_text(r"<Bob> second")
        chat.screen.type("b")
        chat.screen.press("tab")
        await chat.screen.wait_for(lambda: chat.screen.lines[-1].rstrip() == "> Bob:")
        chat.screen.press("tab")
        await chat.screen.wait_for(lambda: chat.screen.lines[-1].rstrip() == "> Bea:")
        chat.screen.type("hi b")
        chat.screen.press("tab")  # not at the start of the line: no colon
        await chat.screen.wait_for(lambda: chat.screen.lines[-1].rstrip() == "> Bea: hi Bob")
        chat.screen.press("enter")
        await bob.expect("Mina:Bea: hi Bob ")  # a completed word is followed by a space
        chat.screen.type("/jo")
        chat.screen.press("tab")
        await chat.screen.wait_for(lambda: chat.screen.lines[-1].rstrip() == "> /join")
        chat.screen.type("de")
        chat.screen.press("tab")
        await chat.screen.wait_for(lambda: chat.screen.lines[-1].rstrip() == "> /join dev")


async def test_input_history(ui_clock: trio.testing.MockClock, chat: Chat) -> None:
    with trio.fail_after(WAIT):
        bob = await chat.join("Bob")
        await chat.started()
        for line in ("one", "two"):
            chat.screen.type(line)
            chat.screen.press("enter")
            await bob.expect(f"Mina:{line}")
        chat.screen.type("draft")
        chat.screen.press("up")
        await chat.screen.wait_for(lambda: chat.screen.lines[-1].rstrip() == "> two")
        chat.screen.press("up", "up")
        await chat.screen.wait_for(lambda: chat.screen.lines[-1].rstrip() == "> one")
        chat.screen.press("down", "down")
        await chat.screen.wait_for(lambda: chat.screen.lines[-1].rstrip() == "> draft")


async def test_resizing_and_the_member_list(ui_clock: trio.testing.MockClock, chat: Chat) -> None:
    chat.screen.size = (120, 20)
    with trio.fail_after(WAIT):
        await chat.join("Bob")
        await chat.started()
        await chat.screen.wait_text(r"dev \(2\)")
        assert re.search(r"│? ?Bob\s*$", chat.screen.text, re.MULTILINE)
        chat.screen.press("f2")
        await chat.screen.wait_for(lambda: "dev (2)" not in chat.screen.text)
        chat.screen.press("f2")
        await chat.screen.wait_text(r"dev \(2\)")
        eve = await chat.join("Eve")
        await chat.screen.wait_text(r"dev \(3\)")
        chat.screen.resize(70, 10)
        await chat.screen.wait_for(
            lambda: len(chat.screen.lines) == 10 and len(chat.screen.lines[0]) == 70
        )
        assert "dev (3)" not in chat.screen.text
        assert all(display_width(line) == 70 for line in chat.screen.lines)
        assert chat.screen.lines[-1].startswith("> ")
        await eve.send("still here")
        await chat.screen.wait_text(r"<Eve> still here")
        chat.screen.resize(100, 12)
        await chat.screen.wait_text(r"dev \(3\)")


async def test_join_moves_the_member_list(ui_clock: trio.testing.MockClock, chat: Chat) -> None:
    chat.screen.size = (120, 20)
    with trio.fail_after(WAIT):
        await chat.join("Bob")
        eve = await chat.join("Eve", "ops")
        await chat.started()
        await chat.screen.wait_text(r"dev \(2\)")
        chat.screen.type("/join ops")
        chat.screen.press("enter")
        await chat.screen.wait_text(r"\[connected\] ops │ Mina")
        await chat.screen.wait_text(r"ops \(2\)")
        assert re.search(r"Eve\s*$", chat.screen.text, re.MULTILINE)
        await eve.expect("* Mina joined ops")
        # The /who the UI asked for itself is not shown as a notice.
        assert "ops: Eve, Mina" not in chat.screen.text


async def test_warnings_are_shown_in_the_pane(ui_clock: trio.testing.MockClock, chat: Chat) -> None:
    with trio.fail_after(WAIT):
        await chat.started()
        logging.getLogger("machat.test").warning("disk on fire")
        chat.screen.press("f2")  # any redraw
        await chat.screen.wait_text(r"warning: disk on fire")
        assert chat.screen.attrs_of("warning: disk on fire") == {"error"}


async def test_quit_command_and_ctrl_c(ui_clock: trio.testing.MockClock, chat: Chat) -> None:
    with trio.fail_after(WAIT):
        bob = await chat.join("Bob")
        await chat.started()
        chat.screen.type("/quit see you")
        chat.screen.press("enter")
        await bob.expect("* Mina left dev (see you)")
        assert await chat.finished() == (0, None)


async def test_ctrl_c_leaves(ui_clock: trio.testing.MockClock, chat: Chat) -> None:
    with trio.fail_after(WAIT):
        bob = await chat.join("Bob")
        await chat.started()
        chat.screen.press("ctrl c")
        await bob.expect("* Mina left dev (quit)")
        assert await chat.finished() == (0, None)


@pytest.mark.parametrize("word", [":quit", "exit"])
async def test_quit_words(ui_clock: trio.testing.MockClock, chat: Chat, word: str) -> None:
    with trio.fail_after(WAIT):
        bob = await chat.join("Bob")
        await chat.started()
        chat.screen.type(word)
        chat.screen.press("enter")
        await bob.expect("* Mina left dev (quit)")
        assert await chat.finished() == (0, None)


@pytest.mark.parametrize("bell", [True, False])
async def test_mentions_are_highlighted_and_ring(
    ui_clock: trio.testing.MockClock, chat: Chat, bell: bool
) -> None:
    with trio.fail_after(WAIT):
        bob = await chat.join("Bob")
        await chat.started(bell=bell)
        await bob.send("nothing for you")
        await bob.send("hey mina, look")
        await chat.screen.wait_text(r"<Bob> hey mina, look")
        assert "mention" in chat.screen.attrs_of("hey mina, look")
        assert "mention" not in chat.screen.attrs_of("nothing for you")
        assert chat.screen.bells == (1 if bell else 0)


async def test_a_paste_of_several_lines_asks_first(
    ui_clock: trio.testing.MockClock, chat: Chat
) -> None:
    with trio.fail_after(WAIT):
        bob = await chat.join("Bob")
        await chat.started()
        chat.screen.press("begin paste", *"first", "enter", *"second", "end paste")
        await chat.screen.wait_text(r"Send these 2 lines\?")
        assert "first" in chat.screen.text and "second" in chat.screen.text
        chat.screen.press("enter")
        await bob.expect("Mina:first")
        await bob.expect("Mina:second")
        # Esc drops a paste; a one-line paste just lands in the input line.
        chat.screen.press("begin paste", *"x", "enter", *"y", "end paste")
        await chat.screen.wait_text(r"Send these 2 lines\?")
        chat.screen.press("esc")
        await chat.screen.wait_for(lambda: "Send these" not in chat.screen.text)
        chat.screen.press("begin paste", *"one line", "end paste")
        await chat.screen.wait_for(lambda: chat.screen.lines[-1].rstrip() == "> one line")


async def test_help_shows_the_keys(ui_clock: trio.testing.MockClock, chat: Chat) -> None:
    with trio.fail_after(WAIT):
        await chat.started()
        chat.screen.press("f1")
        await chat.screen.wait_text(r"PageUp / PageDown")
        chat.screen.press("x")
        await chat.screen.wait_for(lambda: "PageUp" not in chat.screen.text)
        assert chat.screen.lines[-1].rstrip() == ">"  # the key only closed the help


async def test_history_under_an_earlier_separator(
    ui_clock: trio.testing.MockClock, chat: Chat
) -> None:
    with trio.fail_after(WAIT):
        bob = await chat.join("Bob")
        for i in range(3):
            await bob.send(f"old {i}")
            await bob.expect(f"Bob:old {i}")
        await chat.started(history=2)
        text = chat.screen.text
        assert re.search(
            r"──── earlier ────\s*\n.*<Bob> old 1\s*\n.*<Bob> old 2\s*\n\s*──── now", text
        )
        assert "old 0" not in text


async def test_errors_are_distinct(ui_clock: trio.testing.MockClock, chat: Chat) -> None:
    with trio.fail_after(WAIT):
        await chat.started()
        chat.screen.type("/nick 9lives")
        chat.screen.press("enter")
        await chat.screen.wait_text(r"\(error 100\)")
        assert re.search(r"^\d\d:\d\d ! invalid name '9lives'", chat.screen.text, re.MULTILINE)
        assert chat.screen.attrs_of("! invalid name") == {"error"}


async def test_refused_handshake_ends_with_the_reason(
    ui_clock: trio.testing.MockClock, chat: Chat
) -> None:
    with trio.fail_after(WAIT):
        await chat.join("Mina")
        chat.start("Mina")
        code, why = await chat.finished()
    assert code == 1
    assert why is not None and "already in use" in why


async def test_reconnects_and_resumes_where_it_left_off(
    ui_clock: trio.testing.MockClock, chat: Chat
) -> None:
    with trio.fail_after(WAIT):
        bob = await chat.join("Bob")
        await chat.started()
        await bob.send("before")
        await chat.screen.wait_text(r"<Bob> before")
        chat.streams[-1].cut()
        await chat.screen.wait_text(r"\[disconnected: retrying in 1 s\]")
        assert "lost the connection" in chat.screen.text
        chat.screen.type("typed while away")
        chat.screen.press("enter")  # refused for now, and kept
        await chat.screen.wait_text(r"not connected: line not sent")
        assert chat.screen.lines[-1].rstrip() == "> typed while away"
        await bob.expect("* Mina left dev (disconnected)")
        await bob.send("while away")
        await chat.screen.wait_text(r"\[connected\]")
        await chat.screen.wait_text(r"──── missed while disconnected ────\s*\n.*<Bob> while away")
        assert chat.screen.text.count("<Bob> before") == 1
        assert len(chat.streams) == 2
        await bob.send("after")
        await chat.screen.wait_text(r"<Bob> after")


async def test_backoff_grows_while_the_server_is_away(
    ui_clock: trio.testing.MockClock, chat: Chat
) -> None:
    with trio.fail_after(sum(BACKOFF) + WAIT):
        await chat.started()
        chat.refuse = True
        chat.streams[-1].cut()
        for delay in BACKOFF[:4]:
            await chat.screen.wait_text(rf"retrying in {delay:g} s")
        assert chat.screen.text.count("cannot connect to test: Connection refused") >= 3
        chat.refuse = False
        await chat.screen.wait_text(r"\[connected\]")


SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "tui-screenshot.txt"


def screenshot_scene() -> list[str]:
    """A fixed scene, rendered at 100x24: the README's screenshot."""
    day = 1764590400.0  # 2025-12-01 12:00 UTC
    view = ChatView("Mina", "dev", send=lambda line: True, quit=lambda: None, now=lambda: day - 120)
    view.set_connection("connected")
    events: list[Any] = [
        ev.Welcome("Mina", "dev", "be kind; logs are kept for a week"),
        ev.History(
            "dev",
            (
                ev.Message("dev", "Bob", "the deploy is green", 41, day - 86400 + 3600),
                ev.Message("dev", "Eve", "thanks! 🎉", 42, day - 86400 + 3700),
            ),
        ),
        ev.Join("dev", "Mina"),
        ev.Members("dev", ("Bob", "Eve", "Mina", "Zed")),
    ]
    view.asked_members()
    for e in events:
        view.show(e)
    for i, (who, text) in enumerate(
        [
            ("Bob", "morning all"),
            ("Eve", "漢字 and emoji 👍 keep their width"),
            ("Bob", "mina: can you review #42?"),
            ("Mina", "on it"),
        ]
    ):
        view.show(ev.Message("dev", who, text, 43 + i, day + 60 * i))
    view.show(ev.Private("Eve", "lunch later?", day + 300))
    view.show(ev.Error(ErrorCode.NO_SUCH_RECIPIENT, "unable to send: no such user or group: Ghost"))
    view.edit.set_edit_text("sure, after the stand-up — half typed")
    view.edit.set_edit_pos(len(view.edit.edit_text))
    return urwid.testing.render_text(view, (100, 24), focus=True, strip=True)


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_screenshot_is_current(utc: None) -> None:
    """docs/tui-screenshot.txt is what the UI draws (MACHAT_UPDATE_SCREENSHOT=1 rewrites it)."""
    lines = screenshot_scene()
    rendered = "\n".join(lines) + "\n"
    if os.environ.get("MACHAT_UPDATE_SCREENSHOT"):
        SCREENSHOT.write_text(rendered, encoding="utf-8")
    assert SCREENSHOT.read_text(encoding="utf-8") == rendered
    assert "──── earlier ────" in rendered and "dev (4)" in rendered


def test_scrollback_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(view_module, "SCROLLBACK", 50)
    monkeypatch.setattr(view_module, "SCROLLBACK_DROP", 10)
    view = ChatView("Mina", "dev", send=lambda line: True, quit=lambda: None)
    for i in range(200):
        view.show(ev.Message("dev", "Bob", f"m{i}", i, 1764590400.0 + i))
        assert len(view.pane.walker) <= 60
    rows = urwid.testing.render_text(view, (40, 8), strip=True)
    assert rows[-3].endswith("<Bob> m199")
    assert len(view.pane.message_at) == len(view.pane.walker)
    # Scrolled up while rows go: the view still shows the rows it showed.
    view.keypress((40, 8), "page up")
    shown = urwid.testing.render_text(view, (40, 8), strip=True)[:-2]
    for i in range(200, 215):
        view.show(ev.Message("dev", "Bob", f"m{i}", i, 1764590400.0 + i))
    assert urwid.testing.render_text(view, (40, 8), strip=True)[:-2] == shown
