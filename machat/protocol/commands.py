"""Parse what a user typed into a command: the sans-IO command parser.

`parse_line` takes one decoded line (no newline) and returns a small frozen
`Command`; `format_command` is its inverse. Nothing here does I/O or imports trio.

Grammar, tried in this order:

- ``:quit`` or ``exit`` as the whole line (any case, surrounding whitespace
  ignored) -> `Quit`.
- ``//text`` -> `Say` of the line minus its first slash (so a line can start with ``/``).
- ``/word args`` -> a command. The word is the text up to the first whitespace
  character, matched case-insensitively against `USAGE` and the aliases (``/NCK``,
  ``/LST``, ``/GRP``); ``args`` is everything after that one whitespace character.
  Most commands split ``args`` on whitespace into tokens and need an exact number
  of them; ``/msg TARGETS TEXT`` keeps TEXT exactly as typed after the single
  whitespace character that follows the targets.
- ``@A,B: text`` (the targets contain no whitespace and no colon) -> `Msg`, or
  `Broadcast` if the only target is ``ALL`` (any case). One space after the colon
  is optional and dropped.
- anything else, including the empty line -> `Say` with the line exactly.

Target lists (``/msg``, ``@``, ``/group``) are comma separated with no spaces; an
empty entry is an error and repeated names (compared case-insensitively, with
`str.casefold`) are dropped, keeping the first. Names and rooms are only checked to
be non-empty tokens: the server applies its own rules.

Every malformed line raises ``RemoteProtocolError(ErrorCode.BAD_COMMAND, ...)``
whose message includes the right usage; no other exception escapes `parse_line`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs

from .errors import ErrorCode, LocalProtocolError, RemoteProtocolError

__all__ = [
    "LONGEST_QUIT_LINE",
    "MAX_MINUTES",
    "MIN_PASSWORD",
    "QUIT_LINES",
    "USAGE",
    "Ban",
    "Bans",
    "Broadcast",
    "Command",
    "Group",
    "Help",
    "History",
    "Join",
    "Kick",
    "ListUsers",
    "Msg",
    "Mute",
    "Nick",
    "Password",
    "Quit",
    "Register",
    "Rooms",
    "Say",
    "Stats",
    "Topic",
    "Unban",
    "Unmute",
    "Unregister",
    "Who",
    "check_new_password",
    "format_command",
    "help_lines",
    "is_plain_line",
    "parse_line",
    "plain_lines",
]

DEFAULT_HISTORY = 20
MAX_HISTORY = 500
#: The shortest password ``/register`` and ``/password`` accept.
MIN_PASSWORD = 8
#: The longest ban or mute in minutes (a year); 0 means until lifted.
MAX_MINUTES = 525_600
#: ``/topic -`` clears the topic.
CLEAR_TOPIC = "-"


# --- Commands ----------------------------------------------------------------


def _names(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(names)


@attrs.frozen
class Say:
    """Text for the current room (possibly empty: the server decides)."""

    text: str


@attrs.frozen
class Nick:
    """``/nick NAME [PASSWORD]``: the password of NAME if it is registered."""

    name: str
    password: str | None = attrs.field(default=None, repr=False)


@attrs.frozen
class ListUsers:
    """``/list``: everyone online."""


@attrs.frozen
class Who:
    """``/who [ROOM]``: members of a room; ``None`` means the current one."""

    room: str | None = None


@attrs.frozen
class Rooms:
    pass


@attrs.frozen
class Join:
    room: str


@attrs.frozen
class Msg:
    """A private message; a target starting with ``#`` is a group."""

    targets: tuple[str, ...] = attrs.field(converter=_names)
    text: str


@attrs.frozen
class Broadcast:
    """``@ALL: text``: to everyone online."""

    text: str


@attrs.frozen
class Group:
    """``/group #NAME [A,B,...]``: define a group, or list it if ``members`` is None."""

    name: str
    members: tuple[str, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(_names)
    )


@attrs.frozen
class Help:
    """``/help [COMMAND]``; ``command`` is a canonical name (a key of `USAGE`)."""

    command: str | None = None


@attrs.frozen
class Quit:
    reason: str = ""


@attrs.frozen
class History:
    count: int = DEFAULT_HISTORY


@attrs.frozen
class Stats:
    pass


@attrs.frozen
class Register:
    """``/register PASSWORD``: register the name in use to its user."""

    password: str = attrs.field(repr=False)


@attrs.frozen
class Password:
    """``/password OLD NEW``: change the password of the name in use."""

    old: str = attrs.field(repr=False)
    new: str = attrs.field(repr=False)


@attrs.frozen
class Unregister:
    password: str = attrs.field(repr=False)


@attrs.frozen
class Kick:
    name: str
    reason: str = ""


@attrs.frozen
class Ban:
    """``/ban NAME [MINUTES] [REASON]``; ``minutes`` 0: until ``/unban``."""

    name: str
    minutes: int = 0
    reason: str = ""


@attrs.frozen
class Unban:
    name: str


@attrs.frozen
class Bans:
    pass


@attrs.frozen
class Mute:
    """``/mute NAME [MINUTES]``; ``minutes`` 0: until ``/unmute``."""

    name: str
    minutes: int = 0


@attrs.frozen
class Unmute:
    name: str


@attrs.frozen
class Topic:
    """``/topic [TEXT]``: ``None`` reads the topic, ``""`` (``/topic -``) clears it."""

    text: str | None = None


Command = (
    Say
    | Nick
    | ListUsers
    | Who
    | Rooms
    | Join
    | Msg
    | Broadcast
    | Group
    | Help
    | Quit
    | History
    | Stats
    | Register
    | Password
    | Unregister
    | Kick
    | Ban
    | Unban
    | Bans
    | Mute
    | Unmute
    | Topic
)


# --- The command table -------------------------------------------------------


class _UsageError(Exception):
    """Raised by an argument parser; `parse_line` adds the command's usage."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail


def _bad_command(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.BAD_COMMAND, message)


def _unknown(word: str) -> RemoteProtocolError:
    return _bad_command(f"unknown command /{word}; try /help")


def _tokens(args: str, minimum: int, maximum: int) -> list[str]:
    tokens = args.split()
    if not minimum <= len(tokens) <= maximum:
        raise _UsageError()
    return tokens


def _name_list(token: str) -> tuple[str, ...]:
    """``a,b,A`` -> ``("a", "b")``; an empty entry is an error."""
    names = token.split(",")
    if not all(names):
        raise _UsageError("empty name in list")
    seen: set[str] = set()
    unique = []
    for name in names:
        key = name.casefold()
        if key not in seen:
            seen.add(key)
            unique.append(name)
    return tuple(unique)


def _required_text(text: str) -> str:
    if not text.strip():
        raise _UsageError("text required")
    return text


def _split_first(args: str) -> tuple[str, str]:
    """Split at the first whitespace character, which is dropped."""
    for i, char in enumerate(args):
        if char.isspace():
            return args[:i], args[i + 1 :]
    return args, ""


def check_new_password(password: str) -> str:
    """The rule for a new password; raises ``ValueError`` saying it."""
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password has at least {MIN_PASSWORD} characters")
    return password


def _new_password(password: str) -> str:
    try:
        return check_new_password(password)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None


def _minutes(token: str) -> int:
    # The length check keeps int() away from huge digit strings.
    if not (token.isascii() and token.isdigit() and len(token) <= 6) or int(token) > MAX_MINUTES:
        raise _UsageError(f"MINUTES must be a whole number from 0 to {MAX_MINUTES}")
    return int(token)


def _is_number(token: str) -> bool:
    return token.isascii() and token.isdigit()


def _parse_nick(args: str) -> Nick:
    tokens = _tokens(args, 1, 2)
    return Nick(tokens[0], tokens[1] if len(tokens) > 1 else None)


def _parse_register(args: str) -> Register:
    (password,) = _tokens(args, 1, 1)
    return Register(_new_password(password))


def _parse_password(args: str) -> Password:
    old, new = _tokens(args, 2, 2)
    return Password(old, _new_password(new))


def _parse_unregister(args: str) -> Unregister:
    (password,) = _tokens(args, 1, 1)
    return Unregister(password)


def _name_and_rest(args: str) -> tuple[str, str]:
    name, rest = _split_first(args.lstrip())
    if not name:
        raise _UsageError()
    return name, rest


def _parse_kick(args: str) -> Kick:
    name, reason = _name_and_rest(args)
    return Kick(name, reason.strip())


def _parse_ban(args: str) -> Ban:
    name, rest = _name_and_rest(args)
    first, after = _split_first(rest.lstrip())
    if _is_number(first):
        return Ban(name, _minutes(first), after.strip())
    return Ban(name, 0, rest.strip())


def _parse_unban(args: str) -> Unban:
    (name,) = _tokens(args, 1, 1)
    return Unban(name)


def _parse_bans(args: str) -> Bans:
    _tokens(args, 0, 0)
    return Bans()


def _parse_mute(args: str) -> Mute:
    tokens = _tokens(args, 1, 2)
    return Mute(tokens[0], _minutes(tokens[1]) if len(tokens) > 1 else 0)


def _parse_unmute(args: str) -> Unmute:
    (name,) = _tokens(args, 1, 1)
    return Unmute(name)


def _parse_topic(args: str) -> Topic:
    text = args.strip()
    if not text:
        return Topic(None)
    return Topic("" if text == CLEAR_TOPIC else text)


def _parse_list(args: str) -> ListUsers:
    _tokens(args, 0, 0)
    return ListUsers()


def _parse_who(args: str) -> Who:
    tokens = _tokens(args, 0, 1)
    return Who(tokens[0] if tokens else None)


def _parse_rooms(args: str) -> Rooms:
    _tokens(args, 0, 0)
    return Rooms()


def _parse_join(args: str) -> Join:
    (room,) = _tokens(args, 1, 1)
    return Join(room)


def _parse_msg(args: str) -> Msg:
    targets, text = _split_first(args.lstrip())
    if not targets:
        raise _UsageError()
    return Msg(_name_list(targets), _required_text(text))


def _parse_group(args: str) -> Group:
    tokens = _tokens(args, 1, 2)
    name = tokens[0]
    if not name.startswith("#") or name == "#":
        raise _UsageError("a group name starts with #")
    return Group(name, _name_list(tokens[1]) if len(tokens) > 1 else None)


def _parse_help(args: str) -> Help:
    tokens = _tokens(args, 0, 1)
    return Help(_canonical(tokens[0]) if tokens else None)


def _parse_quit(args: str) -> Quit:
    return Quit(args.strip())


def _parse_history(args: str) -> History:
    tokens = _tokens(args, 0, 1)
    if not tokens:
        return History()
    count = tokens[0]
    # The length check keeps int() away from huge (slow, or refused) digit strings.
    valid = count.isascii() and count.isdigit() and len(count) <= 6
    if not (valid and 1 <= int(count) <= MAX_HISTORY):
        raise _UsageError(f"N must be a whole number from 1 to {MAX_HISTORY}")
    return History(int(count))


def _parse_stats(args: str) -> Stats:
    _tokens(args, 0, 0)
    return Stats()


@attrs.frozen
class _Spec:
    syntax: str
    summary: str
    parse: Callable[[str], Command]
    aliases: tuple[str, ...] = ()

    def usage(self) -> str:
        aliases = ", ".join("/" + alias.upper() for alias in self.aliases)
        alias_note = f" (alias {aliases})" if aliases else ""
        return f"{self.syntax}{alias_note}: {self.summary}"


_SPECS: dict[str, _Spec] = {
    "nick": _Spec(
        "/nick NAME [PASSWORD]",
        "change your name; a registered name needs its password",
        _parse_nick,
        ("nck",),
    ),
    "list": _Spec("/list", "list everyone online", _parse_list, ("lst",)),
    "who": _Spec("/who [ROOM]", "list the members of a room (default: yours)", _parse_who),
    "rooms": _Spec("/rooms", "list the rooms", _parse_rooms),
    "join": _Spec("/join ROOM", "move to a room", _parse_join),
    "msg": _Spec(
        "/msg NAME[,NAME...] TEXT",
        "private message to people or #groups; also @NAME[,NAME...]: TEXT, "
        "and @ALL: TEXT to everyone",
        _parse_msg,
    ),
    "group": _Spec(
        "/group #NAME [NAME,NAME...]",
        "define a group of people, or show it",
        _parse_group,
        ("grp",),
    ),
    "help": _Spec("/help [COMMAND]", "show this help, or one command's", _parse_help),
    "quit": _Spec("/quit [REASON]", "leave the chat (also :quit or exit)", _parse_quit),
    "history": _Spec(
        "/history [N]",
        f"show your room's last N messages (default {DEFAULT_HISTORY}, max {MAX_HISTORY})",
        _parse_history,
    ),
    "stats": _Spec("/stats", "show server statistics", _parse_stats),
    "register": _Spec(
        "/register PASSWORD",
        f"register your name; from then on it needs PASSWORD (at least {MIN_PASSWORD} "
        'characters, no spaces) to join, as the handshake\'s "auth"',
        _parse_register,
    ),
    "password": _Spec(
        "/password OLD NEW", "change the password of your registered name", _parse_password
    ),
    "unregister": _Spec(
        "/unregister PASSWORD", "free your registered name for anyone", _parse_unregister
    ),
    "kick": _Spec(
        "/kick NAME [REASON]", "operators: disconnect someone, telling them why", _parse_kick
    ),
    "ban": _Spec(
        "/ban NAME [MINUTES] [REASON]",
        "operators: disconnect someone and refuse their name (and their address, if the "
        "name is not registered) for MINUTES (0 or none: until /unban)",
        _parse_ban,
    ),
    "unban": _Spec("/unban NAME", "operators: lift a ban", _parse_unban),
    "bans": _Spec("/bans", "operators: list the bans", _parse_bans),
    "mute": _Spec(
        "/mute NAME [MINUTES]",
        "operators: relay nothing someone says in rooms for MINUTES (0 or none: until /unmute)",
        _parse_mute,
    ),
    "unmute": _Spec("/unmute NAME", "operators: lift a mute", _parse_unmute),
    "topic": _Spec(
        "/topic [TEXT]",
        f"show your room's topic; operators set it to TEXT ('{CLEAR_TOPIC}' clears it)",
        _parse_topic,
    ),
}

#: Canonical command name -> its usage line, for ``/help``.
USAGE: dict[str, str] = {name: spec.usage() for name, spec in _SPECS.items()}

#: Every command word, aliases included (lowercase) -> canonical name.
_WORDS: dict[str, str] = {
    word: name for name, spec in _SPECS.items() for word in (name, *spec.aliases)
}


def _canonical(word: str) -> str:
    """``/NCK`` -> ``nick``; an unknown command is an error."""
    bare = word.removeprefix("/")
    try:
        return _WORDS[bare.lower()]
    except KeyError:
        raise _unknown(bare) from None


def help_lines(command: str | None = None) -> list[str]:
    """The usage lines of every command (sorted by name), or of one."""
    if command is None:
        return [USAGE[name] for name in sorted(USAGE)]
    return [USAGE[_canonical(command)]]


# --- Parsing -----------------------------------------------------------------

#: Lines that quit, whatever their case and surrounding spaces (MaChat's words).
QUIT_LINES = frozenset({":quit", "exit"})
LONGEST_QUIT_LINE = max(map(len, QUIT_LINES))
_EVERYONE = "all"


def _parse_slash(body: str) -> Command:
    """A line that starts with one ``/``, which has been removed."""
    word, args = _split_first(body)
    if not word:
        raise _bad_command("usage: /COMMAND [ARGUMENTS]; try /help")
    name = _canonical(word)
    spec = _SPECS[name]
    try:
        return spec.parse(args)
    except _UsageError as exc:
        prefix = f"{exc.detail}; " if exc.detail else ""
        raise _bad_command(f"{prefix}usage: {spec.syntax}") from None


def _parse_at(line: str) -> Command | None:
    """``@A,B: text`` -> a `Msg` or `Broadcast`; ``None`` if the line is not one."""
    targets, colon, text = line[1:].partition(":")
    if not colon or not targets or any(char.isspace() for char in targets):
        return None
    text = text.removeprefix(" ")
    try:
        if targets.lower() == _EVERYONE:
            return Broadcast(_required_text(text))
        return Msg(_name_list(targets), _required_text(text))
    except _UsageError as exc:
        raise _bad_command(f"{exc.detail}; usage: @NAME[,NAME...]: TEXT") from None


def is_plain_line(line: str) -> bool:
    """Whether `parse_line` would make ``line`` a `Say` of itself: text for the room.

    The reader's hot path asks this first, and parses only the other lines.
    """
    if not line or line[0] in "/@":
        return False
    bare = line.strip()
    return len(bare) > LONGEST_QUIT_LINE or bare.lower() not in QUIT_LINES


#: What printable ASCII text is made of (tab included), and the newline joining lines.
_ASCII_TEXT = bytes([0x09, 0x0A, *range(0x20, 0x7F)])
_COMMAND_START = b"/@"


def plain_lines(lines: list[bytes]) -> list[str] | None:
    """Undecoded lines, many at once: ``[decode_text(l) for l in lines]`` when every
    one is valid text and `is_plain_line`, else None (then take them one at a time).

    The reader's hot path for a chunk of many lines: a few scans of the joined bytes
    instead of two calls per line.  It may say None for lines that are plain after
    all (a non-ASCII line with a tab, or with a character `str.isprintable` refuses,
    such as a no-break space), never the reverse.  ``lines`` hold no newline (they
    come from the framer).
    """
    if not all(lines):  # an empty line is not plain
        return None
    block = b"\n".join(lines)
    if block.isascii():
        if block.translate(None, _ASCII_TEXT):
            return None  # a control character: `decode_text` says which error
        texts = block.decode("ascii").split("\n")
    else:
        try:
            texts = block.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            return None
        if not all(map(str.isprintable, texts)):
            return None
    if len(texts) != len(lines) or block[0] in _COMMAND_START:
        return None
    if b"\n/" in block or b"\n@" in block:
        return None
    if min(map(len, map(str.strip, texts))) <= LONGEST_QUIT_LINE and not QUIT_LINES.isdisjoint(
        map(str.lower, map(str.strip, texts))
    ):
        return None
    return texts


def parse_line(line: str) -> Command:
    """Parse one line a user typed (decoded, without its newline).

    Raises `RemoteProtocolError` with code ``BAD_COMMAND`` if the line is malformed.
    """
    if line.strip().lower() in QUIT_LINES:
        return Quit()
    if line.startswith("//"):
        return Say(line[1:])
    if line.startswith("/"):
        return _parse_slash(line[1:])
    if line.startswith("@"):
        command = _parse_at(line)
        if command is not None:
            return command
    return Say(line)


# --- Formatting --------------------------------------------------------------


def _format_say(cmd: Say) -> str:
    return "/" + cmd.text if cmd.text.startswith("/") else cmd.text


def _format_msg(cmd: Msg) -> str:
    return f"/msg {','.join(cmd.targets)} {cmd.text}"


def _format_group(cmd: Group) -> str:
    if cmd.members is None:
        return f"/group {cmd.name}"
    return f"/group {cmd.name} {','.join(cmd.members)}"


def _with_argument(word: str, argument: str | None) -> str:
    return f"/{word} {argument}" if argument else f"/{word}"


def _format_ban(cmd: Ban) -> str:
    return f"/ban {cmd.name} {cmd.minutes} {cmd.reason}".rstrip(" ")


def _format_mute(cmd: Mute) -> str:
    return f"/mute {cmd.name} {cmd.minutes}"


def _format_topic(cmd: Topic) -> str:
    if cmd.text is None:
        return "/topic"
    return f"/topic {cmd.text or CLEAR_TOPIC}"


_FORMATTERS: dict[type, Callable[[Any], str]] = {
    Say: _format_say,
    Nick: lambda cmd: _with_argument(f"nick {cmd.name}", cmd.password),
    ListUsers: lambda cmd: "/list",
    Who: lambda cmd: _with_argument("who", cmd.room),
    Rooms: lambda cmd: "/rooms",
    Join: lambda cmd: f"/join {cmd.room}",
    Msg: _format_msg,
    Broadcast: lambda cmd: f"@ALL: {cmd.text}",
    Group: _format_group,
    Help: lambda cmd: _with_argument("help", cmd.command),
    Quit: lambda cmd: _with_argument("quit", cmd.reason),
    History: lambda cmd: f"/history {cmd.count}",
    Stats: lambda cmd: "/stats",
    Register: lambda cmd: f"/register {cmd.password}",
    Password: lambda cmd: f"/password {cmd.old} {cmd.new}",
    Unregister: lambda cmd: f"/unregister {cmd.password}",
    Kick: lambda cmd: _with_argument(f"kick {cmd.name}", cmd.reason),
    Ban: _format_ban,
    Unban: lambda cmd: f"/unban {cmd.name}",
    Bans: lambda cmd: "/bans",
    Mute: _format_mute,
    Unmute: lambda cmd: f"/unmute {cmd.name}",
    Topic: _format_topic,
}


def format_command(cmd: Command) -> str:
    """A line that `parse_line` turns back into ``cmd``.

    Raises `LocalProtocolError` if there is none: a name with a space or comma in
    it, an empty private message, a `Say` whose text would read as a command
    (``exit``, ``@bob: hi``), a count out of range, ...
    """
    formatter = _FORMATTERS.get(type(cmd))
    if formatter is None:
        raise TypeError(f"not a command: {cmd!r}")
    line = formatter(cmd)
    try:
        parsed = parse_line(line)
    except RemoteProtocolError:
        parsed = None
    if parsed != cmd:
        raise LocalProtocolError(f"{cmd!r} cannot be written as a command line")
    return line
