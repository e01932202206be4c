"""The full-screen client's pure logic: no urwid, no trio, no terminal.

Nick colours, input history, name completion, unread counting and display widths
live here so that they can be tested on their own (with hypothesis).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence

import attrs
from urwid.str_util import calc_text_pos, calc_width

from machat.protocol.handshake import fold_name

__all__ = [
    "NICK_COLOURS",
    "Activity",
    "Completion",
    "InputHistory",
    "UnreadCounter",
    "complete",
    "display_width",
    "fit_width",
    "is_mention",
    "nick_colour",
]

NICK_COLOURS: tuple[str, ...] = (
    "light red",
    "light green",
    "yellow",
    "light blue",
    "light magenta",
    "light cyan",
    "dark red",
    "dark green",
    "brown",
    "dark cyan",
    "dark magenta",
    "dark blue",
)
"""The foregrounds nicks are drawn in; none is the default colour, so a nick stands out."""


def nick_colour(name: str) -> int:
    """The index into `NICK_COLOURS` for ``name``: the same on every run and machine,
    and the same for every spelling of a name the server treats as one (case)."""
    return zlib.crc32(fold_name(name).encode("utf-8")) % len(NICK_COLOURS)


def display_width(text: str) -> int:
    """Terminal cells ``text`` takes, as urwid lays it out: by grapheme cluster, 2 for
    wide characters (CJK, most emoji, flags, ZWJ sequences), 0 for combining marks."""
    return calc_width(text, 0, len(text))


def fit_width(text: str, width: int, ellipsis: str = "…") -> str:
    """The longest prefix of ``text`` that fits in ``width`` cells, ending in ``ellipsis``
    when something was cut. A cut never splits a grapheme cluster (a wide character,
    a letter and its combining marks, an emoji sequence)."""
    if display_width(text) <= width:
        return text
    room = width - display_width(ellipsis)
    if room < 0:
        return ""
    end, _ = calc_text_pos(text, 0, len(text), room)
    return text[:end] + ellipsis


def is_mention(text: str, name: str) -> bool:
    """Whether ``text`` names ``name`` as a word, in any case (``mina:``, ``@Mina``)."""
    if not name:
        return False
    pattern = r"(?<![A-Za-z0-9_-])" + re.escape(name) + r"(?![A-Za-z0-9_-])"
    return re.search(pattern, text, re.IGNORECASE) is not None


class InputHistory:
    """The lines the user sent, browsed with Up and Down like a shell's history.

    Browsing starts below the newest entry, at the draft being typed; Up goes back,
    Down comes forward and, past the newest, gives back the draft unchanged.
    """

    def __init__(self, limit: int = 500) -> None:
        self._entries: list[str] = []
        self._limit = limit
        self._position = 0  # == len(entries): at the draft
        self._draft = ""

    @property
    def entries(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def add(self, line: str) -> None:
        """Remember a sent line (not a repeat of the newest, not a blank one)."""
        if line.strip() and (not self._entries or self._entries[-1] != line):
            self._entries.append(line)
            del self._entries[: -self._limit]
        self._position = len(self._entries)
        self._draft = ""

    def previous(self, current: str) -> str:
        """The entry before the one shown (``current`` is what the input line holds)."""
        if self._position == len(self._entries):
            self._draft = current
        if self._position > 0:
            self._position -= 1
        return self._entries[self._position] if self._entries else current

    def next(self, current: str) -> str:
        """The entry after the one shown, or the draft past the newest."""
        if self._position >= len(self._entries):
            return current
        self._position += 1
        if self._position == len(self._entries):
            return self._draft
        return self._entries[self._position]


class Activity:
    """Who is in the room, most recently active first (for completion and the member list).

    Someone who spoke is ordered by when they last spoke; members who have not spoken
    follow in alphabetical order. Names compare case-insensitively.
    """

    def __init__(self) -> None:
        self._members: dict[str, str] = {}  # folded -> spelling
        self._spoke: dict[str, int] = {}  # folded -> tick of the last message
        self._tick = 0

    def set_members(self, names: Iterable[str]) -> None:
        self._members = {fold_name(n): n for n in names}

    def joined(self, name: str) -> None:
        self._members[fold_name(name)] = name

    def left(self, name: str) -> None:
        self._members.pop(fold_name(name), None)

    def renamed(self, old: str, new: str) -> None:
        key = fold_name(old)
        if key in self._members:
            del self._members[key]
            self._members[fold_name(new)] = new
        if key in self._spoke:
            self._spoke[fold_name(new)] = self._spoke.pop(key)

    def spoke(self, name: str) -> None:
        self._tick += 1
        self._spoke[fold_name(name)] = self._tick
        self._members.setdefault(fold_name(name), name)

    def members(self) -> list[str]:
        """Everyone present, alphabetically (the member list)."""
        return sorted(self._members.values(), key=fold_name)

    def recent_first(self) -> list[str]:
        """Everyone present, the most recent speaker first."""
        return sorted(
            self._members.values(),
            key=lambda n: (-self._spoke.get(fold_name(n), 0), fold_name(n)),
        )


@attrs.frozen
class Completion:
    """The input line after a completion, and the cursor in it."""

    text: str
    cursor: int


def _word_start(text: str, cursor: int) -> int:
    start = cursor
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    return start


def candidates(
    prefix: str,
    *,
    names: Sequence[str],
    commands: Sequence[str],
    rooms: Sequence[str],
) -> list[str]:
    """What ``prefix`` may complete to, in order: names as given (most recent first),
    then ``/commands``, then rooms; case-insensitive, each once."""
    folded = prefix.casefold()
    seen: set[str] = set()
    found = []
    for group in (names, commands, rooms):
        for word in group:
            if word.casefold().startswith(folded) and word.casefold() not in seen:
                seen.add(word.casefold())
                found.append(word)
    return found


def complete(
    text: str,
    cursor: int,
    choice: int,
    *,
    names: Sequence[str],
    commands: Sequence[str],
    rooms: Sequence[str],
) -> Completion | None:
    """Complete the word before ``cursor`` with its ``choice``-th candidate (cycling).

    A name at the start of the line becomes ``Name: `` (addressing someone); any
    other completion is followed by a space. None when nothing matches.
    """
    start = _word_start(text, cursor)
    prefix = text[start:cursor]
    if not prefix:
        return None
    found = candidates(prefix, names=names, commands=commands, rooms=rooms)
    if not found:
        return None
    word = found[choice % len(found)]
    is_name = any(word == n for n in names)
    suffix = ": " if is_name and start == 0 else " "
    rest = text[cursor:]
    if rest.startswith(" "):
        suffix = suffix.rstrip(" ")
    new = text[:start] + word + suffix
    return Completion(new + rest, len(new))


class UnreadCounter:
    """Messages that arrived below what the user has seen while scrolled up.

    Messages are numbered in arrival order from 0. `seen` is told the newest one on
    screen; everything newer is unread.
    """

    def __init__(self) -> None:
        self._count = 0  # messages that arrived
        self._seen = -1  # newest message index the user has had on screen

    @property
    def unread(self) -> int:
        return self._count - 1 - self._seen

    def arrived(self, *, visible: bool) -> int:
        """A message arrived; ``visible``: the view follows the newest. Returns its index."""
        index = self._count
        self._count += 1
        if visible:
            self._seen = index
        return index

    def seen(self, index: int) -> None:
        """The message ``index`` (and those before it) have been on screen."""
        self._seen = max(self._seen, min(index, self._count - 1))
