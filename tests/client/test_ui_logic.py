"""The full-screen client's pure logic (machat.client.ui.logic), mostly with hypothesis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from machat.client.ui.logic import (
    NICK_COLOURS,
    Activity,
    InputHistory,
    UnreadCounter,
    candidates,
    complete,
    display_width,
    fit_width,
    is_mention,
    nick_colour,
)

REPO = Path(__file__).resolve().parents[2]

names = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,8}", fullmatch=True)


# --- Nick colours -------------------------------------------------------------------


@given(names)
def test_nick_colour_is_stable_and_case_blind(name: str) -> None:
    colour = nick_colour(name)
    assert 0 <= colour < len(NICK_COLOURS)
    assert nick_colour(name.upper()) == nick_colour(name.lower()) == colour


@pytest.mark.parametrize("name", ["Mina", "Bob", "Eve", "zed-42"])
def test_nick_colour_is_the_same_in_another_process(name: str) -> None:
    # Python's hash() is salted per process; the colour must not be.
    code = f"from machat.client.ui.logic import nick_colour; print(nick_colour({name!r}))"
    env = {"PYTHONHASHSEED": "random", "PATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == nick_colour(name)


def test_nick_colours_spread() -> None:
    used = {nick_colour(f"user{i}") for i in range(200)}
    assert used == set(range(len(NICK_COLOURS)))


# --- Input history ------------------------------------------------------------------


class HistoryMachine(RuleBasedStateMachine):
    """Up and Down against a model: the entries, a position in them, and the draft."""

    def __init__(self) -> None:
        super().__init__()
        self.history = InputHistory(limit=5)
        self.entries: list[str] = []
        self.position = 0  # == len(entries): at the draft
        self.draft = ""
        self.shown = ""  # what the input line holds

    @rule(line=st.sampled_from(["a", "b", "c", "  ", "a b"]))
    def send(self, line: str) -> None:
        self.history.add(line)
        if line.strip() and (not self.entries or self.entries[-1] != line):
            self.entries = [*self.entries, line][-5:]
        self.position = len(self.entries)
        self.draft = self.shown = ""

    @rule(text=st.sampled_from(["", "x", "draft"]))
    def type(self, text: str) -> None:
        self.shown = text

    @rule()
    def up(self) -> None:
        got = self.history.previous(self.shown)
        if self.position == len(self.entries):
            self.draft = self.shown
        self.position = max(self.position - 1, 0)
        if self.entries:
            self.shown = self.entries[self.position]
        assert got == self.shown

    @rule()
    def down(self) -> None:
        got = self.history.next(self.shown)
        if self.position < len(self.entries):
            self.position += 1
            at_draft = self.position == len(self.entries)
            self.shown = self.draft if at_draft else self.entries[self.position]
        assert got == self.shown

    @invariant()
    def keeps_the_entries(self) -> None:
        assert self.history.entries == tuple(self.entries)


TestInputHistory = HistoryMachine.TestCase


def test_history_gives_back_the_draft() -> None:
    h = InputHistory()
    for line in ("one", "two"):
        h.add(line)
    assert h.previous("draft") == "two"
    assert h.previous("two") == "one"
    assert h.previous("one") == "one"  # the oldest stays
    assert h.next("one") == "two"
    assert h.next("two") == "draft"
    assert h.next("draft") == "draft"


def test_history_on_nothing_keeps_the_line() -> None:
    h = InputHistory()
    assert h.previous("typed") == "typed"
    assert h.next("typed") == "typed"


# --- Completion ------------------------------------------------------------------------


@given(st.lists(names, unique_by=str.casefold, max_size=8), st.data())
def test_names_most_recent_first(people: list[str], data: st.DataObject) -> None:
    activity = Activity()
    activity.set_members(people)
    spoken = data.draw(st.lists(st.sampled_from(people), max_size=12) if people else st.just([]))
    for name in spoken:
        activity.spoke(name)
    order = activity.recent_first()
    # Model: the last time each spoke, newest first; the silent ones alphabetically after.
    last = {n.casefold(): i for i, n in enumerate(spoken)}
    expected = sorted(people, key=lambda n: (-last.get(n.casefold(), -1), n.casefold()))
    assert order == expected
    assert activity.members() == sorted(people, key=str.casefold)


@given(
    st.lists(names, unique_by=str.casefold, max_size=6),
    st.lists(st.from_regex(r"/[a-z]{1,6}", fullmatch=True), unique=True, max_size=6),
    st.lists(st.from_regex(r"[a-z#][a-z]{0,6}", fullmatch=True), unique=True, max_size=6),
    st.from_regex(r"[A-Za-z/#][a-z]{0,2}", fullmatch=True),
)
def test_candidates_are_names_then_commands_then_rooms(
    people: list[str], commands: list[str], rooms: list[str], prefix: str
) -> None:
    found = candidates(prefix, names=people, commands=commands, rooms=rooms)
    assert all(f.casefold().startswith(prefix.casefold()) for f in found)
    assert len({f.casefold() for f in found}) == len(found)
    # A word found is credited to the first group that has it (a room may share a name).
    groups = [0 if f in people else 1 if f in commands else 2 for f in found]
    assert groups == sorted(groups)
    for number, group in enumerate((people, commands, rooms)):
        kept = [f for f, g in zip(found, groups, strict=True) if g == number]
        assert kept == [w for w in group if w in kept]  # each group keeps its order


def test_complete_at_the_start_and_in_the_middle() -> None:
    kw = {"names": ["Bob", "Bea"], "commands": ["/join", "/nick"], "rooms": ["dev"]}
    assert complete("b", 1, 0, **kw).text == "Bob: "
    assert complete("b", 1, 1, **kw).text == "Bea: "
    assert complete("b", 1, 2, **kw).text == "Bob: "  # cycles
    assert complete("hi b", 4, 0, **kw).text == "hi Bob "
    assert complete("/j", 2, 0, **kw).text == "/join "
    assert complete("/join d", 7, 0, **kw).text == "/join dev "
    done = complete("say b now", 5, 0, **kw)
    assert done is not None and (done.text, done.cursor) == ("say Bob now", 7)
    assert complete("x", 1, 0, **kw) is None
    assert complete("", 0, 0, **kw) is None
    assert complete("hi ", 3, 0, **kw) is None


# --- Unread counting ----------------------------------------------------------------


class UnreadMachine(RuleBasedStateMachine):
    """The count is the messages newer than the newest one the user has had on screen."""

    def __init__(self) -> None:
        super().__init__()
        self.counter = UnreadCounter()
        self.arrived = 0
        self.seen = -1
        self.following = True

    @rule()
    def arrive(self) -> None:
        index = self.counter.arrived(visible=self.following)
        assert index == self.arrived
        self.arrived += 1
        if self.following:
            self.seen = index

    @rule()
    def scroll_up(self) -> None:
        self.following = False

    @rule(data=st.data())
    def look_at(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(-1, self.arrived + 2))
        self.counter.seen(index)
        self.seen = max(self.seen, min(index, self.arrived - 1))

    @rule()
    def back_to_the_newest(self) -> None:
        self.following = True
        self.counter.seen(self.arrived - 1)
        self.seen = self.arrived - 1

    @invariant()
    def counts(self) -> None:
        assert self.counter.unread == self.arrived - 1 - self.seen
        assert 0 <= self.counter.unread <= self.arrived
        if self.following:
            assert self.counter.unread == 0


TestUnread = UnreadMachine.TestCase


# --- Display widths -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "width"),
    [
        ("abc", 3),
        ("漢字", 4),  # CJK: two cells each
        ("한국어", 6),
        ("👍", 2),  # emoji
        ("👨‍👩‍👧", 2),  # a ZWJ family is one glyph
        ("🇫🇷", 2),  # a flag: two regional indicators, one glyph
        ("e\u0301", 1),  # e + combining acute
        ("a\u0308\u0323", 1),  # two combining marks
    ],
)
def test_display_width(text: str, width: int) -> None:
    assert display_width(text) == width


wide_text = st.lists(
    st.sampled_from(["a", "Z", " ", "漢", "字", "👍", "👨‍👩‍👧", "🇫🇷", "e\u0301", "é", "ß"]),
    max_size=20,
).map("".join)


@given(wide_text, st.integers(0, 30))
def test_fit_width_fits_and_cuts_only_between_glyphs(text: str, width: int) -> None:
    fitted = fit_width(text, width)
    assert display_width(fitted) <= width
    if display_width(text) <= width:
        assert fitted == text
        return
    if width == 0:
        assert fitted == ""
        return
    assert fitted.endswith("…")
    kept = fitted.removesuffix("…")
    assert text.startswith(kept)
    rest = text[len(kept) :]
    # Never a combining mark or the tail of a sequence left over at the cut.
    assert not rest or display_width(rest[0]) > 0
    assert not kept.endswith("\u200d")
    # And nothing more would have fitted.
    assert display_width(kept) + display_width("…") + display_width(rest[:1]) > width or not rest


# --- Mentions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mentioned"),
    [
        ("hey Mina", True),
        ("mina: look", True),
        ("@MINA", True),
        ("(mina)", True),
        ("Minaret", False),
        ("xmina", False),
        ("mina_2 is here", False),
        ("", False),
    ],
)
def test_is_mention(text: str, mentioned: bool) -> None:
    assert is_mention(text, "Mina") is mentioned
