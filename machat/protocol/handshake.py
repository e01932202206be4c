"""The handshake: the client's first JSON object, decoded into a `Handshake`.

One cattrs converter (``converter``) owns the conversion at the edge: strings must
be strings, integers integers, unknown keys are refused, and every error becomes
one readable line through `cattrs.transform_error`.  Name and room rules live here
too, since ``/nick`` and ``/join`` apply the same ones.
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs
import cattrs
from cattrs.v import format_exception

from .errors import ErrorCode, RemoteProtocolError
from .formatting import Format

__all__ = [
    "DEFAULT_ROOM",
    "Handshake",
    "converter",
    "decode_handshake",
    "encode_handshake",
    "fold_name",
    "validate_name",
    "validate_room",
]

DEFAULT_ROOM = "lounge"
RESERVED_NAMES = frozenset({"all"})
MAX_HISTORY = 500

_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}", re.ASCII)
_ROOM_RE = re.compile(r"[A-Za-z0-9#][A-Za-z0-9_.#-]{0,63}", re.ASCII)


def fold_name(name: str) -> str:
    """The key under which a name is unique: case-insensitive."""
    return name.casefold()


def validate_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise RemoteProtocolError(
            ErrorCode.INVALID_NAME,
            f"invalid name {name[:40]!r}: 1-32 characters, a letter first, "
            "then letters, digits, '_' or '-'",
        )
    if fold_name(name) in RESERVED_NAMES:
        raise RemoteProtocolError(ErrorCode.INVALID_NAME, f"invalid name {name!r}: reserved")
    return name


def validate_room(room: str) -> str:
    if not _ROOM_RE.fullmatch(room):
        raise RemoteProtocolError(
            ErrorCode.INVALID_ROOM,
            f"invalid room name {room[:70]!r}: 1-64 characters of letters, digits, "
            "'#', '_', '.' or '-', not starting with '_', '.' or '-'",
        )
    return room


def _non_negative(instance: Any, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0")


@attrs.frozen
class Handshake:
    """What a client says first: who it is and where it goes."""

    name: str
    room: str = DEFAULT_ROOM
    password: str | None = attrs.field(default=None, repr=False)
    format: Format = Format.TEXT
    history: int = attrs.field(default=0, validator=_non_negative)
    #: Resume: replay the room's messages with an id above this one (`History.since`).
    since: int | None = attrs.field(default=None, validator=_non_negative)
    #: The password of ``name``, if it is a registered name.
    auth: str | None = attrs.field(default=None, repr=False)


def _strict_str(value: Any, _type: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, not {type(value).__name__}")
    return value


def _strict_int(value: Any, _type: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, not {type(value).__name__}")
    return value


def _make_converter() -> cattrs.Converter:
    c = cattrs.Converter(forbid_extra_keys=True, omit_if_default=True)
    c.register_structure_hook(str, _strict_str)
    c.register_structure_hook(int, _strict_int)
    return c


converter = _make_converter()


def _format_exception(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        names = (k if k.isprintable() else repr(k) for k in sorted(exc.extra_fields))
        return f"unexpected field(s): {', '.join(names)}"
    if isinstance(exc, ValueError) and not isinstance(exc, cattrs.BaseValidationError):
        return str(exc)
    return format_exception(exc, type_)


def _explain(exc: Exception) -> str:
    if not isinstance(exc, cattrs.BaseValidationError):
        return str(exc)
    lines = cattrs.transform_error(exc, format_exception=_format_exception)
    return "; ".join(line.removesuffix(" @ $") for line in lines)


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.INVALID_HANDSHAKE, f"invalid handshake: {message}")


def decode_handshake(raw: bytes) -> Handshake:
    """Decode and validate the handshake's bytes.

    Raises `RemoteProtocolError`: INVALID_HANDSHAKE for anything malformed, and
    INVALID_NAME / INVALID_ROOM when the fields are well formed but break the rules.
    """
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _bad("not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise _bad(f"broken JSON: {exc.msg} at byte {exc.pos}") from None
    except RecursionError:
        raise _bad("nested too deeply") from None
    except ValueError:  # e.g. an integer of more than 4300 digits
        raise _bad("unreadable JSON") from None
    if not isinstance(obj, dict):
        raise _bad(f"expected a JSON object, not {type(obj).__name__}")
    try:
        handshake = converter.structure(obj, Handshake)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        raise _bad(_explain(exc)) from None
    validate_name(handshake.name)
    validate_room(handshake.room)
    if handshake.history > MAX_HISTORY:
        handshake = attrs.evolve(handshake, history=MAX_HISTORY)
    return handshake


def encode_handshake(handshake: Handshake) -> bytes:
    """The handshake as a client sends it: compact JSON followed by a newline."""
    obj = converter.unstructure(handshake)
    obj["room"] = handshake.room  # always sent: MaChat's server expects it
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
