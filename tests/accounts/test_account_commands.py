"""Parsing the account and moderation commands: a table, the usage errors, properties.

Pure and synchronous: no trio, no sockets.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from machat.protocol.commands import (
    MAX_MINUTES,
    MIN_PASSWORD,
    Ban,
    Bans,
    Kick,
    Mute,
    Nick,
    Password,
    Register,
    Topic,
    Unban,
    Unmute,
    Unregister,
    format_command,
    help_lines,
    parse_line,
)
from machat.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/nick Mina", Nick("Mina")),
        ("/nick Mina s3cret-pw", Nick("Mina", "s3cret-pw")),
        ("/NCK  Mina  pw ", Nick("Mina", "pw")),  # a login needs no minimum length
        ("/register 12345678", Register("12345678")),
        ("/REGISTER   correct-horse  ", Register("correct-horse")),
        ("/password old 12345678", Password("old", "12345678")),
        ("/unregister x", Unregister("x")),
        ("/kick Bob", Kick("Bob")),
        ("/kick Bob  spamming  links ", Kick("Bob", "spamming  links")),
        ("/ban Bob", Ban("Bob")),
        ("/ban Bob 10", Ban("Bob", 10)),
        ("/ban Bob 0 forever", Ban("Bob", 0, "forever")),
        ("/ban Bob 10 spam, again", Ban("Bob", 10, "spam, again")),
        ("/ban Bob spam 10", Ban("Bob", 0, "spam 10")),
        (f"/ban Bob {MAX_MINUTES}", Ban("Bob", MAX_MINUTES)),
        ("/unban Bob", Unban("Bob")),
        ("/bans", Bans()),
        ("/mute Bob", Mute("Bob")),
        ("/mute Bob 5", Mute("Bob", 5)),
        ("/unmute Bob", Unmute("Bob")),
        ("/topic", Topic(None)),
        ("/topic   ", Topic(None)),
        ("/topic -", Topic("")),
        ("/topic  Release day: be nice ", Topic("Release day: be nice")),
        ("/topic - x", Topic("- x")),
    ],
)
def test_parse(line: str, expected: object) -> None:
    assert parse_line(line) == expected


def usage_error(line: str) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        parse_line(line)
    assert info.value.code == ErrorCode.BAD_COMMAND
    return info.value.message


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("/register", "usage: /register PASSWORD"),
        ("/register a b", "usage: /register PASSWORD"),
        ("/register 1234567", "a password has at least 8 characters; usage: /register PASSWORD"),
        ("/password 12345678", "usage: /password OLD NEW"),
        ("/password old short", "a password has at least 8 characters; usage: /password OLD NEW"),
        ("/unregister", "usage: /unregister PASSWORD"),
        ("/kick", "usage: /kick NAME [REASON]"),
        ("/kick   ", "usage: /kick NAME [REASON]"),
        ("/ban", "usage: /ban NAME [MINUTES] [REASON]"),
        (
            f"/ban Bob {MAX_MINUTES + 1}",
            f"MINUTES must be a whole number from 0 to {MAX_MINUTES}; "
            "usage: /ban NAME [MINUTES] [REASON]",
        ),
        (
            "/ban Bob 99999999999999999999",
            "MINUTES must be a whole number from 0 to 525600; usage: /ban NAME [MINUTES] [REASON]",
        ),  # fmt: skip
        ("/unban", "usage: /unban NAME"),
        ("/unban a b", "usage: /unban NAME"),
        ("/bans x", "usage: /bans"),
        ("/mute", "usage: /mute NAME [MINUTES]"),
        (
            "/mute Bob soon",
            f"MINUTES must be a whole number from 0 to {MAX_MINUTES}; usage: /mute NAME [MINUTES]",
        ),  # fmt: skip
        ("/mute Bob 1 2", "usage: /mute NAME [MINUTES]"),
        ("/unmute", "usage: /unmute NAME"),
    ],
)
def test_usage_errors(line: str, message: str) -> None:
    assert usage_error(line) == message


def test_passwords_stay_out_of_repr() -> None:
    for command in [
        Nick("Mina", "hunter22"),
        Register("hunter22"),
        Password("hunter22", "hunter22"),
        Unregister("hunter22"),
    ]:
        assert "hunter22" not in repr(command)


def test_help_for_every_new_command() -> None:
    for word in ["register", "password", "unregister", "kick", "ban", "unban", "bans", "mute",
                 "unmute", "topic"]:  # fmt: skip
        (line,) = help_lines(word)
        assert line.startswith(f"/{word}")
    assert f"at least {MIN_PASSWORD} characters" in help_lines("register")[0]
    assert help_lines("kick")[0].startswith("/kick NAME [REASON]: operators: ")


@pytest.mark.parametrize(
    "command",
    [Topic("-"), Kick("Bob", " padded"), Ban("Bob", 0, "  x"), Register("short"), Nick("a b")],
)
def test_format_refuses_what_cannot_round_trip(command: object) -> None:
    with pytest.raises(LocalProtocolError):
        format_command(command)  # type: ignore[arg-type]


# --- properties ---------------------------------------------------------------------

token = st.text(min_size=1, max_size=12).filter(lambda s: not any(c.isspace() for c in s))
password = token.filter(lambda s: len(s) >= MIN_PASSWORD) | st.text(
    alphabet="abcdefgh0123!?", min_size=MIN_PASSWORD, max_size=30
)
reason = st.text(max_size=30).map(str.strip)
minutes = st.integers(0, MAX_MINUTES)

account_commands = st.one_of(
    st.builds(Nick, token, st.none() | token),
    st.builds(Register, password),
    st.builds(Password, token, password),
    st.builds(Unregister, token),
    st.builds(Kick, token, reason),
    st.builds(Ban, token, minutes, reason),
    st.builds(Unban, token),
    st.builds(Bans),
    st.builds(Mute, token, minutes),
    st.builds(Unmute, token),
    st.builds(Topic, st.none() | st.just("") | reason.filter(lambda s: s and s != "-")),
)


@given(account_commands)
def test_round_trip(command) -> None:
    assert parse_line(format_command(command)) == command


words = st.sampled_from(
    [
        "register",
        "password",
        "unregister",
        "kick",
        "ban",
        "unban",
        "bans",
        "mute",
        "unmute",
        "topic",
        "nick",
    ]  # fmt: skip
)


@given(words, st.text(max_size=40))
def test_any_arguments_parse_or_are_a_bad_command(word: str, rest: str) -> None:
    try:
        command = parse_line(f"/{word} {rest}")
    except RemoteProtocolError as exc:
        assert exc.code == ErrorCode.BAD_COMMAND
        assert "usage: /" in exc.message
        return
    # Whatever parsed is what the line said, and writes back to the same command.
    try:
        again = parse_line(format_command(command))
    except LocalProtocolError:
        return  # e.g. a topic of "-": parsed, but no line writes it
    assert again == command


@given(st.integers(0, 10**8), reason)
def test_ban_minutes_are_bounded(count: int, why: str) -> None:
    line = f"/ban Bob {count} {why}".rstrip()
    if count <= MAX_MINUTES:
        assert parse_line(line) == Ban("Bob", count, why)
    else:
        assert "MINUTES must be" in usage_error(line)
