"""Tests of the command parser: a table of lines, every usage error, and properties.

Pure and synchronous: no trio, no sockets.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from machat.protocol.commands import (
    QUIT_LINES,
    USAGE,
    Broadcast,
    Group,
    Help,
    History,
    Join,
    ListUsers,
    Msg,
    Nick,
    Quit,
    Rooms,
    Say,
    Stats,
    Who,
    format_command,
    help_lines,
    is_plain_line,
    parse_line,
    plain_lines,
)
from machat.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from machat.protocol.framing import decode_text

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # Say
        ("hello", Say("hello")),
        ("", Say("")),
        ("  spaced  out  ", Say("  spaced  out  ")),
        (" /nick bob", Say(" /nick bob")),
        ("//text", Say("/text")),
        ("//", Say("/")),
        ("///x", Say("//x")),
        ("@ bob: hi", Say("@ bob: hi")),
        ("@bob hi", Say("@bob hi")),
        ("@: hi", Say("@: hi")),
        ("email me @ home", Say("email me @ home")),
        ("exit now", Say("exit now")),
        # Nick
        ("/nick bob", Nick("bob")),
        ("/NICK Bob", Nick("Bob")),
        ("/NCK Bob", Nick("Bob")),
        ("/nck  bob  ", Nick("bob")),
        ("/nick\tbob", Nick("bob")),
        # list
        ("/list", ListUsers()),
        ("/LIST", ListUsers()),
        ("/LST", ListUsers()),
        ("/lst   ", ListUsers()),
        # who
        ("/who", Who(None)),
        ("/who Lobby", Who("Lobby")),
        ("/WHO  lobby ", Who("lobby")),
        # rooms, join, stats
        ("/rooms", Rooms()),
        ("/Rooms", Rooms()),
        ("/join Dev", Join("Dev")),
        ("/JOIN  dev ", Join("dev")),
        ("/stats", Stats()),
        ("/STATS", Stats()),
        # msg
        ("/msg bob hi there", Msg(("bob",), "hi there")),
        ("/MSG bob hi", Msg(("bob",), "hi")),
        ("/msg bob,Ann,#team hi", Msg(("bob", "Ann", "#team"), "hi")),
        ("/msg bob,BOB,ann,Bob hi", Msg(("bob", "ann"), "hi")),
        ("/msg bob  two  spaces ", Msg(("bob",), " two  spaces ")),
        ("/msg   bob hi", Msg(("bob",), "hi")),
        # @ form
        ("@bob: hi", Msg(("bob",), "hi")),
        ("@bob:hi", Msg(("bob",), "hi")),
        ("@bob:  hi", Msg(("bob",), " hi")),
        ("@bob,ann: hi: there", Msg(("bob", "ann"), "hi: there")),
        ("@bob,Bob: hi", Msg(("bob",), "hi")),
        ("@#team: hi", Msg(("#team",), "hi")),
        ("@ALL: hello all", Broadcast("hello all")),
        ("@all:hello", Broadcast("hello")),
        ("@All:  x", Broadcast(" x")),
        ("@all,bob: hi", Msg(("all", "bob"), "hi")),
        # group
        ("/group #team bob,ann", Group("#team", ("bob", "ann"))),
        ("/GRP #team bob", Group("#team", ("bob",))),
        ("/group #team", Group("#team", None)),
        ("/grp  #Team  ", Group("#Team", None)),
        ("/group #team bob,BOB", Group("#team", ("bob",))),
        # help
        ("/help", Help(None)),
        ("/help nick", Help("nick")),
        ("/HELP /NCK", Help("nick")),
        ("/help LST", Help("list")),
        ("/help grp", Help("group")),
        ("/help msg", Help("msg")),
        # quit
        ("/quit", Quit("")),
        ("/QUIT  gone  fishing ", Quit("gone  fishing")),
        (":quit", Quit("")),
        (":QUIT", Quit("")),
        ("  exit  ", Quit("")),
        ("EXIT", Quit("")),
        ("\t:Quit\t", Quit("")),
        # history
        ("/history", History(20)),
        ("/history 5", History(5)),
        ("/HISTORY 1", History(1)),
        ("/history 500", History(500)),
        ("/history 007", History(7)),
    ],
)
def test_parse_line(line: str, expected: object) -> None:
    assert parse_line(line) == expected


def bad_command(line: str) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        parse_line(line)
    assert info.value.code == ErrorCode.BAD_COMMAND
    return info.value.message


@pytest.mark.parametrize(
    ("line", "usage"),
    [
        ("/nick", "usage: /nick NAME [PASSWORD]"),
        ("/nick a b c", "usage: /nick NAME [PASSWORD]"),
        ("/NCK", "usage: /nick NAME [PASSWORD]"),
        ("/list x", "usage: /list"),
        ("/lst x", "usage: /list"),
        ("/who a b", "usage: /who [ROOM]"),
        ("/rooms x", "usage: /rooms"),
        ("/join", "usage: /join ROOM"),
        ("/join a b", "usage: /join ROOM"),
        ("/msg", "usage: /msg NAME[,NAME...] TEXT"),
        ("/msg bob", "usage: /msg NAME[,NAME...] TEXT"),
        ("/msg bob ", "usage: /msg NAME[,NAME...] TEXT"),
        ("/msg bob    ", "usage: /msg NAME[,NAME...] TEXT"),
        ("/msg a,,b hi", "usage: /msg NAME[,NAME...] TEXT"),
        ("/msg ,a hi", "usage: /msg NAME[,NAME...] TEXT"),
        ("/msg a, hi", "usage: /msg NAME[,NAME...] TEXT"),
        ("/MSG", "usage: /msg NAME[,NAME...] TEXT"),
        ("@bob:", "usage: @NAME[,NAME...]: TEXT"),
        ("@bob: ", "usage: @NAME[,NAME...]: TEXT"),
        ("@a,,b: hi", "usage: @NAME[,NAME...]: TEXT"),
        ("@ALL:", "usage: @NAME[,NAME...]: TEXT"),
        ("@all:  ", "usage: @NAME[,NAME...]: TEXT"),
        ("/group", "usage: /group #NAME [NAME,NAME...]"),
        ("/group team a", "usage: /group #NAME [NAME,NAME...]"),
        ("/group #", "usage: /group #NAME [NAME,NAME...]"),
        ("/group #t a b", "usage: /group #NAME [NAME,NAME...]"),
        ("/group #t a,,b", "usage: /group #NAME [NAME,NAME...]"),
        ("/GRP", "usage: /group #NAME [NAME,NAME...]"),
        ("/help a b", "usage: /help [COMMAND]"),
        ("/history 0", "usage: /history [N]"),
        ("/history 501", "usage: /history [N]"),
        ("/history -1", "usage: /history [N]"),
        ("/history +5", "usage: /history [N]"),
        ("/history 5.0", "usage: /history [N]"),
        ("/history x", "usage: /history [N]"),
        ("/history \u0665", "usage: /history [N]"),  # ARABIC-INDIC DIGIT FIVE
        ("/history " + "9" * 5000, "usage: /history [N]"),
        ("/history 1 2", "usage: /history [N]"),
        ("/stats x", "usage: /stats"),
        ("/", "usage: /COMMAND"),
        ("/ nick bob", "usage: /COMMAND"),
    ],
)
def test_usage_errors(line: str, usage: str) -> None:
    assert usage in bad_command(line)


@pytest.mark.parametrize(
    ("line", "word"),
    [("/foo", "/foo"), ("/Foo bar", "/Foo"), ("/me waves", "/me"), ("/help foo", "/foo")],
)
def test_unknown_command(line: str, word: str) -> None:
    assert bad_command(line) == f"unknown command {word}; try /help"


def test_usage_table() -> None:
    assert set(USAGE) == {
        "nick", "list", "who", "rooms", "join", "msg",
        "group", "help", "quit", "history", "stats",
        "register", "password", "unregister", "kick", "ban", "unban", "bans",
        "mute", "unmute", "topic",
    }  # fmt: skip
    assert USAGE["nick"] == (
        "/nick NAME [PASSWORD] (alias /NCK): change your name; a registered name needs its password"
    )
    assert USAGE["list"].startswith("/list (alias /LST): ")
    assert USAGE["group"].startswith("/group #NAME [NAME,NAME...] (alias /GRP): ")
    for name, line in USAGE.items():
        assert line.startswith(f"/{name}")


def test_help_lines() -> None:
    lines = help_lines(None)
    assert lines == [USAGE[name] for name in sorted(USAGE)]
    assert lines == help_lines()
    assert help_lines("nick") == [USAGE["nick"]]
    assert help_lines("/NCK") == [USAGE["nick"]]
    with pytest.raises(RemoteProtocolError) as info:
        help_lines("foo")
    assert info.value.code == ErrorCode.BAD_COMMAND
    assert info.value.message == "unknown command /foo; try /help"


@pytest.mark.parametrize(
    ("cmd", "line"),
    [
        (Say("hi"), "hi"),
        (Say("/x"), "//x"),
        (Say(""), ""),
        (Nick("bob"), "/nick bob"),
        (Who(None), "/who"),
        (Msg(("a", "#b"), " x "), "/msg a,#b  x "),
        (Broadcast("x"), "@ALL: x"),
        (Group("#t", None), "/group #t"),
        (Group("#t", ("a", "b")), "/group #t a,b"),
        (Quit(""), "/quit"),
        (History(20), "/history 20"),
    ],
)
def test_format_command(cmd: object, line: str) -> None:
    assert format_command(cmd) == line


@pytest.mark.parametrize(
    "cmd",
    [
        Say("exit"),
        Say(" :QUIT "),
        Say("@bob: hi"),
        Nick("two words"),
        Nick(""),
        Join("a b"),
        Msg(("a,b",), "x"),
        Msg(("a", "A"), "x"),
        Msg((), "x"),
        Msg(("a",), ""),
        Broadcast(" "),
        Group("team", None),
        Help("NICK"),
        Help("nope"),
        Quit(" padded "),
        History(0),
        History(501),
    ],
)
def test_format_command_refuses_what_cannot_round_trip(cmd: object) -> None:
    with pytest.raises(LocalProtocolError):
        format_command(cmd)


def test_format_command_rejects_non_commands() -> None:
    with pytest.raises(TypeError):
        format_command("/nick bob")  # type: ignore[arg-type]


def parses_or_is_a_bad_command(line: str) -> None:
    try:
        parse_line(line)
    except RemoteProtocolError as exc:
        assert exc.code == ErrorCode.BAD_COMMAND


@given(st.text())
def test_any_line_parses_or_is_a_bad_command(line: str) -> None:
    parses_or_is_a_bad_command(line)


# Plain st.text() rarely starts with a command; these prefixes reach every parser.
prefixes = st.sampled_from(["/", "//", "@", "@all:", ":quit", "exit", *(f"/{w} " for w in USAGE)])


@given(prefixes, st.text())
def test_any_line_with_a_command_prefix(prefix: str, rest: str) -> None:
    parses_or_is_a_bad_command(prefix + rest)


# Tokens: non-empty, no whitespace (as str.split sees it), no commas.
token = st.text(min_size=1, max_size=12).filter(
    lambda s: "," not in s and not any(c.isspace() for c in s)
)
names = st.lists(token, min_size=1, max_size=4, unique_by=str.casefold).map(tuple)
# Message text: anything that is not blank.
message = st.text(min_size=1).filter(lambda s: s.strip())
say_text = st.text().filter(
    lambda s: not s.startswith("@") and s.strip().lower() not in (":quit", "exit")
)

commands = st.one_of(
    st.builds(Say, say_text),
    st.builds(Nick, token),
    st.builds(ListUsers),
    st.builds(Who, st.none() | token),
    st.builds(Rooms),
    st.builds(Join, token),
    st.builds(Msg, names, message),
    st.builds(Broadcast, message),
    st.builds(Group, token.map(lambda s: "#" + s), st.none() | names),
    st.builds(Help, st.none() | st.sampled_from(sorted(USAGE))),
    st.builds(Quit, st.just("") | message.map(str.strip)),
    st.builds(History, st.integers(1, 500)),
    st.builds(Stats),
)


@given(commands)
def test_round_trip(cmd: object) -> None:
    assert parse_line(format_command(cmd)) == cmd


def test_imports_no_trio() -> None:
    code = (
        "import sys\n"
        "import machat.protocol.commands\n"
        "assert 'trio' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


@given(
    st.one_of(
        st.text(max_size=12),
        st.sampled_from(["exit", " EXIT ", ":quit", ":Quit\t", "exits", "/me hi", "@bob: hi", "@"]),
    )
)
def test_is_plain_line_is_exactly_a_say_of_the_line_itself(line: str) -> None:
    if is_plain_line(line):
        assert parse_line(line) == Say(line)
    else:  # the hot path only passes over lines it cannot tell apart cheaply
        assert not line or line[0] in "/@" or line.strip().lower() in QUIT_LINES


def test_plain_lines_and_the_others() -> None:
    assert is_plain_line("hello") and is_plain_line("exit now") and is_plain_line(" exits")
    assert not is_plain_line("") and not is_plain_line("/nick Bob")
    assert not is_plain_line("@Bob: hi") and not is_plain_line("  EXIT ")


def _decoded_plain(line: bytes) -> str | None:
    """What the reader makes of one line, alone: its text if it is valid and plain."""
    try:
        text = decode_text(line)
    except RemoteProtocolError:
        return None
    return text if is_plain_line(text) else None


_framed_line = st.one_of(
    st.binary(max_size=10).map(lambda b: b.replace(b"\n", b"")),
    st.text(max_size=10).map(lambda t: t.replace("\n", "").encode("utf-8")),
    st.sampled_from(
        [
            b"hello there",
            b"exit",
            b" EXIT ",
            b":quit",
            b"\t:QUIT",
            b"exits",
            b"/me hi",
            b"@bob: hi",
            b"",
            b"a\tb",
            b"a\x00b",
            b"caf\xc3\xa9 ok",
            b"\xc2\xa0exit",
            b"\xff\xfe",
            b"//slash",
            b"x\r",
            b"\xe2\x80\x8bzero width",
        ]
    ),
)


@given(st.lists(_framed_line, min_size=1, max_size=6))
def test_plain_lines_is_the_line_by_line_answer_when_it_answers(lines: list[bytes]) -> None:
    one_by_one = [_decoded_plain(line) for line in lines]
    texts = plain_lines(lines)
    if texts is not None:
        assert texts == one_by_one
        return
    # None: some line is not plain text, or the chunk is one of the unusual ones it
    # leaves to the line-by-line path: non-ASCII somewhere, and a character
    # str.isprintable refuses (a tab, a no-break space) in some line.
    assert None in one_by_one or (
        not all(line.isascii() for line in lines)
        and not all(line.decode("utf-8").isprintable() for line in lines)
    )


def test_plain_lines_examples() -> None:
    assert plain_lines([b"hello", b"caf\xc3\xa9 au lait"]) == ["hello", "caf\u00e9 au lait"]
    assert plain_lines([b"hello", b"a\tb"]) == ["hello", "a\tb"]
    assert plain_lines([b"caf\xc3\xa9", b"a\tb"]) is None  # left to the line-by-line path
    assert plain_lines([b"hello", b"  Exit "]) is None
    assert plain_lines([b"hello", b"/nick Bob"]) is None
    assert plain_lines([b"@Bob: hi", b"hello"]) is None
    assert plain_lines([b"hello", b""]) is None
    assert plain_lines([b"hello", b"bad\x1b[2J"]) is None
    assert plain_lines([b"hello", b"\xff"]) is None
    assert plain_lines([b"exits", b"exit now", b"ok"]) == ["exits", "exit now", "ok"]
