"""The full-screen client's screen: urwid widgets that show server events and read keys.

`ChatView` owns every widget and all the screen's state; it does no I/O. The runner
(`machat.client.ui.runner`) feeds it server events (`show`) and connection states
(`set_connection`), and gets back what the user did through two callbacks: a line to
send, and a request to quit.

Layout, top to bottom: the message pane (with the member list on its right on
terminals at least `MEMBERS_MIN_COLS` wide), the status bar, the input line. The
input line is its own widget, redrawn as a whole, so nothing that arrives can
clobber what is being typed.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from typing import Any

import urwid

from machat.client.session import is_quit
from machat.protocol import commands
from machat.protocol import events as ev
from machat.protocol.client_events import ServerEvent, Unrecognized
from machat.protocol.handshake import fold_name

from .logic import (
    NICK_COLOURS,
    Activity,
    InputHistory,
    UnreadCounter,
    complete,
    fit_width,
    is_mention,
    nick_colour,
)

__all__ = ["HELP", "MEMBERS_MIN_COLS", "PALETTE", "ChatView", "Mode"]

MEMBERS_MIN_COLS = 100
"""The member list is shown on terminals at least this wide (F2 toggles it)."""

SCROLLBACK = 10_000
"""Rows kept in the message pane; past it the oldest `SCROLLBACK_DROP` go at once."""
SCROLLBACK_DROP = 1_000

MEMBERS_WIDTH = 20
WHEEL_LINES = 3

COMMANDS: tuple[str, ...] = tuple("/" + name for name in sorted(commands.USAGE))

HELP: tuple[tuple[str, str], ...] = (
    ("Enter", "send the line"),
    ("Up / Down", "browse what you sent"),
    ("Tab", "complete a name (most recent first), a /command or a room; again: next"),
    ("PageUp / PageDown", "scroll the messages; mouse wheel too"),
    ("End", "back to the newest message"),
    ("F1", "this help (any key closes it)"),
    ("F2", "show or hide the member list"),
    ("Ctrl+C, /quit", "leave (also :quit and exit)"),
    ("/help", "the server's commands"),
)

PALETTE: list[tuple[Any, ...]] = [
    ("time", "dark gray", ""),
    ("notice", "dark gray", ""),
    ("error", "light red,bold", ""),
    ("mention", "yellow,bold", ""),
    ("private", "light magenta", ""),
    ("separator", "dark cyan", ""),
    ("earlier", "dark cyan,bold", ""),
    ("status", "white", "dark blue"),
    ("status ok", "light green,bold", "dark blue"),
    ("status bad", "light red,bold", "dark blue"),
    ("status unread", "yellow,bold", "dark blue"),
    ("members", "light gray", ""),
    ("members title", "white,bold", ""),
    ("prompt", "light cyan,bold", ""),
    ("dialog", "white", "dark gray"),
    ("self", "white,bold", ""),
    *((f"nick {i}", colour, "") for i, colour in enumerate(NICK_COLOURS)),
]


class Mode(enum.Enum):
    """What the keys do right now."""

    #: typing into the input line
    NORMAL = "normal"
    #: the help is shown; any key closes it
    HELP = "help"
    #: between the terminal's begin-paste and end-paste: keys are pasted text
    PASTING = "pasting"
    #: a paste of several lines waits for Enter (send) or Esc (drop)
    CONFIRM_PASTE = "confirm paste"


def _hhmm(ts: float) -> str:
    return time.strftime("%H:%M", time.localtime(ts))


def _day(ts: float) -> str:
    return time.strftime("%A %d %B %Y", time.localtime(ts))


class MessagePane(urwid.ListBox):
    """The scrollback. It follows the newest line unless the user scrolled up."""

    def __init__(self) -> None:
        self.walker: urwid.SimpleFocusListWalker[Any] = urwid.SimpleFocusListWalker([])
        super().__init__(self.walker)
        self.following = True
        self.size: tuple[int, int] = (80, 20)
        self.message_at: list[int] = []  # per row: index of the newest message at or above it

    def render(self, size: tuple[int, int], focus: bool = False) -> urwid.Canvas:  # type: ignore[override]
        self.size = size
        if self.following and self.walker:
            self.set_focus(len(self.walker) - 1, coming_from="above")
            self.set_focus_valign("bottom")
        return super().render(size, focus)

    def append(self, widget: urwid.Widget, message: int | None) -> None:
        previous = self.message_at[-1] if self.message_at else -1
        self.message_at.append(previous if message is None else message)
        self.walker.append(widget)
        if len(self.walker) > SCROLLBACK + SCROLLBACK_DROP:
            self._forget_oldest(SCROLLBACK_DROP)
        if self.following:
            self.set_focus(len(self.walker) - 1)

    def _forget_oldest(self, count: int) -> None:
        """Keep memory bounded: drop the oldest rows (in batches, so it is rare)."""
        focus = max(self.focus_position - count, 0)
        del self.walker[:count]
        del self.message_at[:count]
        self.set_focus(focus)

    def newest_visible(self) -> int:
        """Index of the newest message on screen (-1: none)."""
        if not self.walker:
            return -1
        middle, _top, bottom = self.calculate_visible(self.size, focus=False)
        if middle is None or bottom is None:
            return -1
        position = middle[2]
        fill_below = bottom[1]
        if fill_below:
            position = fill_below[-1][1]
        return self.message_at[position]

    def scroll(self, key: str) -> None:
        """``page up``, ``page down``, ``up``, ``down`` or ``end``."""
        if not self.walker:
            return
        if key == "end":
            self.following = True
            self.set_focus(len(self.walker) - 1)
            return
        self.following = False
        if key in ("page up", "up") and self.focus_position == len(self.walker) - 1:
            # Focus sits on the newest row at the bottom: start scrolling from the top row shown.
            middle, top, _bottom = self.calculate_visible(self.size, focus=False)
            if middle is not None and top is not None and top[1]:
                self.set_focus(top[1][-1][1], coming_from="below")
                self.set_focus_valign("top")
        super().keypress(self.size, key)
        if "bottom" in self.ends_visible(self.size):
            self.following = True


class ChatView(urwid.WidgetWrap):
    """Everything on the screen. ``send`` is called with each line to send and says
    whether it was taken, ``quit`` when the user leaves, ``bell`` on a mention."""

    def __init__(
        self,
        name: str,
        room: str,
        *,
        send: Callable[[str], bool],
        quit: Callable[[], None],
        bell: Callable[[], None] = lambda: None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.room = room
        self._send = send
        self._quit = quit
        self._bell = bell
        self._now = now
        self.mode = Mode.NORMAL
        self.connection = "connecting"
        self.history = InputHistory()
        self.activity = Activity()
        self.unread = UnreadCounter()
        self.rooms: list[str] = [room]
        self.show_members = True
        self._last_day: str | None = None
        self._last_ids: dict[str, int] = {}  # folded room -> id of the last message shown
        self.resuming = False  # the next history is what we missed while disconnected
        self._quiet_who = 0  # /who replies we asked for ourselves: not shown
        self._quiet_rooms = 0
        self._completion: tuple[str, int, int, str, int] | None = None
        self._paste: list[str] = []
        self._pasted_lines: list[str] = []

        self.pane = MessagePane()
        self.edit = urwid.Edit(("prompt", "> "))
        self.status_left = urwid.Text("", wrap="clip")
        self.status_right = urwid.Text("F1 help ", align="right", wrap="clip")
        status = urwid.AttrMap(urwid.Columns([self.status_left, (9, self.status_right)]), "status")
        self.members: urwid.SimpleFocusListWalker[Any] = urwid.SimpleFocusListWalker([])
        self._members_box = urwid.ListBox(self.members)
        self.columns = urwid.Columns([self.pane], dividechars=1)
        self._members_shown = False
        self.frame: urwid.Frame[Any, Any, Any] = urwid.Frame(
            self.columns, footer=urwid.Pile([status, self.edit]), focus_part="footer"
        )
        super().__init__(self.frame)
        self._refresh_status()
        self._refresh_members()

    # --- What the runner tells us -------------------------------------------------

    def set_connection(self, state: str) -> None:
        """``connected``, ``connecting``, ``disconnected: retrying in 2 s``, ..."""
        self.connection = state
        self._refresh_status()

    def note(self, text: str, *, error: bool = False) -> None:
        """A line from the client itself (not the server)."""
        self._add_line(self._now(), [("error" if error else "notice", text)])

    def show(self, event: ServerEvent) -> None:
        """Show one event from the server."""
        handler = getattr(self, "_on_" + type(event).__name__, None)
        if handler is None:  # pragma: no cover - every event type has a handler
            self.note(repr(event))
            return
        handler(event)
        self._refresh_status()

    def asked_members(self) -> None:
        """The runner sent ``/who`` for us: its reply fills the member list, unseen."""
        self._quiet_who += 1

    def asked_rooms(self) -> None:
        """The runner sent ``/rooms`` for us: its reply feeds room completion, unseen."""
        self._quiet_rooms += 1

    def newest_id(self, room: str) -> int | None:
        """The id of the newest message shown from ``room`` (for resuming)."""
        return self._last_ids.get(fold_name(room))

    # --- Rows -----------------------------------------------------------------------

    def _separator(self, text: str, attr: str = "separator") -> None:
        self.pane.append(urwid.Text((attr, f"──── {text} ────"), align="center"), None)

    def _day_of(self, ts: float) -> None:
        day = _day(ts)
        if day != self._last_day:
            self._last_day = day
            self._separator(day)

    def _add_line(self, ts: float, markup: list[Any], *, message: bool = False) -> None:
        self._day_of(ts)
        row = urwid.Columns(
            [(6, urwid.Text(("time", _hhmm(ts)))), urwid.Text(markup)], dividechars=0
        )
        index = None
        if message:
            index = self.unread.arrived(visible=self.pane.following)
        self.pane.append(row, index)

    def _nick(self, name: str) -> tuple[str, str]:
        if fold_name(name) == fold_name(self.name):
            return ("self", name)
        return (f"nick {nick_colour(name)}", name)

    def _said(self, ts: float, sender: str, text: str, tag: str = "", live: bool = True) -> None:
        mine = fold_name(sender) == fold_name(self.name)
        mentioned = not mine and (is_mention(text, self.name) or tag == "[private]")
        markup: list[Any] = []
        if tag:
            markup.append(("private", tag + " "))
        markup += ["<", self._nick(sender), "> ", ("mention", text) if mentioned else text]
        self._add_line(ts, markup, message=True)
        if mentioned and live:
            self._bell()

    def _message(self, m: ev.Message, live: bool) -> None:
        self._last_ids[fold_name(m.room)] = m.id
        tag = "" if fold_name(m.room) == fold_name(self.room) else f"[{m.room}]"
        self._said(m.ts, m.sender, m.text, tag, live)

    # --- One handler per event type -----------------------------------------------

    def _on_Welcome(self, e: ev.Welcome) -> None:
        self.name, self.room = e.name, e.room
        self.note(f"Welcome {e.name}! You are in room {e.room}. F1 shows the keys.")
        if e.motd:
            self.note(e.motd)

    def _on_Message(self, e: ev.Message) -> None:
        if fold_name(e.room) == fold_name(self.room):
            self.activity.spoke(e.sender)
        self._message(e, live=True)

    def _on_History(self, h: ev.History) -> None:
        # A replay after reconnecting may overlap what is shown: each message once.
        last = self._last_ids.get(fold_name(h.room), -1)
        fresh = [m for m in h.messages if m.id > last]
        label = "missed while disconnected" if self.resuming else "earlier"
        self.resuming = False
        if not h.complete:
            self.note(f"some earlier messages of {h.room} are no longer kept")
        if not fresh:
            if not h.messages and label == "earlier":
                self.note(f"no history in {h.room}")
            return
        self._separator(label, "earlier")
        for m in fresh:
            self._message(m, live=False)
        self._separator("now", "earlier")

    def _on_Join(self, e: ev.Join) -> None:
        if fold_name(e.name) == fold_name(self.name):
            self.room = e.room
            if e.room not in self.rooms:
                self.rooms.append(e.room)
            self.activity.set_members([e.name])
        elif fold_name(e.room) == fold_name(self.room):
            self.activity.joined(e.name)
        self._add_line(
            self._now(), [("notice", "→ "), self._nick(e.name), ("notice", f" joined {e.room}")]
        )
        self._refresh_members()

    def _on_Leave(self, e: ev.Leave) -> None:
        if fold_name(e.room) == fold_name(self.room):
            self.activity.left(e.name)
        reason = f" ({e.reason})" if e.reason else ""
        self._add_line(
            self._now(),
            [("notice", "← "), self._nick(e.name), ("notice", f" left {e.room}{reason}")],
        )
        self._refresh_members()

    def _on_Nick(self, e: ev.Nick) -> None:
        if fold_name(e.old) == fold_name(self.name):
            self.name = e.new
        self.activity.renamed(e.old, e.new)
        self._add_line(
            self._now(), [self._nick(e.old), ("notice", " is now known as "), self._nick(e.new)]
        )
        self._refresh_members()

    def _on_Info(self, e: ev.Info) -> None:
        self.note(e.text)

    def _on_Error(self, e: ev.Error) -> None:
        self._add_line(self._now(), [("error", f"! {e.message} (error {int(e.code)})")])

    def _on_Private(self, e: ev.Private) -> None:
        self._said(e.ts, e.sender, e.text, "[private]")

    def _on_GroupMessage(self, e: ev.GroupMessage) -> None:
        self._said(e.ts, e.sender, e.text, f"[{e.group}]")

    def _on_Broadcast(self, e: ev.Broadcast) -> None:
        self._said(e.ts, e.sender, e.text, "[all]")

    def _on_Sent(self, e: ev.Sent) -> None:
        self.note(f"sent to {', '.join(e.targets)}")

    def _on_Users(self, e: ev.Users) -> None:
        self.note(f"online: {', '.join(e.names)}")

    def _on_Members(self, e: ev.Members) -> None:
        if fold_name(e.room) == fold_name(self.room):
            self.activity.set_members(e.names)
            self._refresh_members()
            if self._quiet_who:
                self._quiet_who -= 1
                return
        self.note(f"{e.room}: {', '.join(e.names)}")

    def _on_RoomList(self, e: ev.RoomList) -> None:
        known = {fold_name(r) for r in self.rooms}
        self.rooms += [r for r, _ in e.rooms if fold_name(r) not in known]
        if self._quiet_rooms:
            self._quiet_rooms -= 1
            return
        self.note("rooms: " + ", ".join(f"{r} ({n})" for r, n in e.rooms))

    def _on_Unrecognized(self, e: Unrecognized) -> None:
        self.note(e.text)

    # --- Status bar and member list ----------------------------------------------

    def _refresh_status(self) -> None:
        ok = self.connection == "connected"
        markup: list[Any] = [
            ("status ok" if ok else "status bad", f" [{self.connection}]"),
            f" {self.room} │ {self.name}",
        ]
        unread = self.unread.unread
        if not self.pane.following and unread:
            markup.append(("status unread", f" │ {unread} unread ▼ (End)"))
        elif not self.pane.following:
            markup.append(" │ scrolled up (End)")
        self.status_left.set_text(markup)

    def _refresh_members(self) -> None:
        names = self.activity.members()
        rows: list[urwid.Widget] = [
            urwid.Text(("members title", fit_width(f"{self.room} ({len(names)})", MEMBERS_WIDTH)))
        ]
        for n in names:
            attr, _ = self._nick(n)
            rows.append(urwid.Text((attr, fit_width(n, MEMBERS_WIDTH)), wrap="clip"))
        self.members[:] = rows

    def _layout(self, cols: int) -> None:
        want = self.show_members and cols >= MEMBERS_MIN_COLS
        if want != self._members_shown:
            self._members_shown = want
            if want:
                border = urwid.AttrMap(urwid.SolidFill("│"), "separator")
                self.columns.contents += [
                    (border, self.columns.options("given", 1)),
                    (
                        urwid.AttrMap(self._members_box, "members"),
                        self.columns.options("given", MEMBERS_WIDTH),
                    ),
                ]
            else:
                del self.columns.contents[1:]
            self.columns.focus_position = 0

    @property
    def members_shown(self) -> bool:
        return self._members_shown

    # --- Rendering and input --------------------------------------------------------

    def selectable(self) -> bool:
        return True  # keys always come here, a dialog open or not

    def render(self, size: tuple[int, int], focus: bool = False) -> urwid.Canvas:  # type: ignore[override]
        self._layout(size[0])
        self._refresh_status()
        return super().render(size, focus)

    def _open_dialog(self, lines: Sequence[Any], title: str) -> None:
        body = urwid.LineBox(urwid.Pile([urwid.Text(line) for line in lines]), title=title)
        self._w = urwid.Overlay(
            urwid.AttrMap(body, "dialog"),
            self.frame,
            align="center",
            width=("relative", 80),
            valign="middle",
            height="pack",
            min_width=20,
        )

    def _close_dialog(self) -> None:
        self._w = self.frame
        self.mode = Mode.NORMAL

    def _show_help(self) -> None:
        width = max(len(k) for k, _ in HELP)
        lines = [[("prompt", k.ljust(width + 2)), d] for k, d in HELP]
        self._open_dialog(lines, "keys")
        self.mode = Mode.HELP

    def _submit(self) -> None:
        text = self.edit.edit_text
        if not text.strip():
            return
        if _is_quit(text):
            self._send(text)
            self.edit.set_edit_text("")
            self._quit()
            return
        self.history.add(text)
        if self._send(text):
            self.edit.set_edit_text("")
        # else: not sent (e.g. while reconnecting); it stays in the input line

    def _tab(self) -> None:
        text, cursor = self.edit.edit_text, self.edit.edit_pos
        choice = 0
        base_text, base_cursor = text, cursor
        if self._completion is not None:
            b_text, b_cursor, b_choice, r_text, r_cursor = self._completion
            if (text, cursor) == (r_text, r_cursor):
                base_text, base_cursor, choice = b_text, b_cursor, b_choice + 1
        names = [n for n in self.activity.recent_first() if fold_name(n) != fold_name(self.name)]
        done = complete(
            base_text, base_cursor, choice, names=names, commands=COMMANDS, rooms=self.rooms
        )
        if done is None:
            self._completion = None
            return
        self.edit.set_edit_text(done.text)
        self.edit.set_edit_pos(done.cursor)
        self._completion = (base_text, base_cursor, choice, done.text, done.cursor)

    def _paste_key(self, key: str) -> None:
        if key == "end paste":
            text = "".join(self._paste)
            self._paste = []
            lines = [line for line in text.split("\n") if line.strip()]
            if len(lines) <= 1:
                self.mode = Mode.NORMAL
                self.edit.insert_text(lines[0] if lines else "")
                return
            self._pasted_lines = lines
            preview = [f"{line}" for line in lines[:5]] + (["…"] if len(lines) > 5 else [])
            self._open_dialog(
                [
                    *preview,
                    "",
                    ("prompt", f"Send these {len(lines)} lines? Enter: send, Esc: drop"),
                ],
                "paste",
            )
            self.mode = Mode.CONFIRM_PASTE
        elif key == "enter":
            self._paste.append("\n")
        elif key == "tab":
            self._paste.append("\t")
        elif len(key) == 1 or (not key.isascii() and " " not in key):
            self._paste.append(key)

    def _confirm_paste(self, key: str) -> None:
        if key == "enter" or key == "y":
            for line in self._pasted_lines:
                self.history.add(line)
                self._send(line)
        elif key not in ("esc", "n"):
            return
        self._pasted_lines = []
        self._close_dialog()

    def keypress(self, size: tuple[int, int], key: str) -> str | None:  # type: ignore[override]
        if key == "window resize":
            return None
        if key == "begin paste":
            self.mode = Mode.PASTING
            self._paste = []
            return None
        if self.mode is Mode.PASTING:
            self._paste_key(key)
            return None
        if self.mode is Mode.CONFIRM_PASTE:
            self._confirm_paste(key)
            return None
        if self.mode is Mode.HELP:
            self._close_dialog()
            return None
        if key != "tab":
            self._completion = None
        if key == "ctrl c":
            self._send("/quit")
            self._quit()
        elif key == "enter":
            self._submit()
        elif key == "up":
            self.edit.set_edit_text(self.history.previous(self.edit.edit_text))
            self.edit.set_edit_pos(len(self.edit.edit_text))
        elif key == "down":
            self.edit.set_edit_text(self.history.next(self.edit.edit_text))
            self.edit.set_edit_pos(len(self.edit.edit_text))
        elif key == "tab":
            self._tab()
        elif key in ("page up", "page down"):
            self._scroll(key)
        elif key in ("end", "ctrl end"):
            self._scroll("end")
            self.edit.set_edit_pos(len(self.edit.edit_text))
        elif key == "f1":
            self._show_help()
        elif key == "f2":
            self.show_members = not self.show_members
            self._invalidate()
        else:
            return self.frame.keypress(size, key)
        return None

    def _scroll(self, key: str) -> None:
        self.pane.scroll(key)
        if self.pane.following:
            self.unread.seen(self.unread_total_seen())
        else:
            self.unread.seen(self.pane.newest_visible())
        self._refresh_status()

    def unread_total_seen(self) -> int:
        return self.pane.message_at[-1] if self.pane.message_at else -1

    def mouse_event(  # type: ignore[override]
        self, size: tuple[int, int], event: str, button: int, col: int, row: int, focus: bool
    ) -> bool:
        if self.mode is not Mode.NORMAL:
            return False
        if event == "mouse press" and button in (4, 5):
            for _ in range(WHEEL_LINES):
                self._scroll("up" if button == 4 else "down")
            return True
        return bool(self.frame.mouse_event(size, event, button, col, row, focus))


def _is_quit(text: str) -> bool:
    return is_quit(text.encode("utf-8"))
