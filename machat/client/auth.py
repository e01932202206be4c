"""Logging in to a registered name: where the password comes from, and asking for it.

The password of a registered name travels as the handshake's ``"auth"``.  The
client takes it from ``--auth-file PATH`` (its first line) or ``$MACHAT_AUTH``; with
neither, and the server answering ``114 name registered``, it asks on the terminal
without echo (`prompt_password`) and connects again, at most `MAX_PROMPTS` times.
"""

from __future__ import annotations

import getpass
import json
import sys

import trio

from machat.protocol.errors import ErrorCode

__all__ = [
    "AUTH_ENV",
    "MAX_PROMPTS",
    "needs_password",
    "prompt_password",
    "read_auth_file",
    "refusal_of",
]

AUTH_ENV = "MACHAT_AUTH"
MAX_PROMPTS = 3

_PREFIX = f"! ERROR {int(ErrorCode.NAME_REGISTERED)} "


def read_auth_file(path: str) -> str:
    """The first line of ``path``; raises OSError or UnicodeDecodeError."""
    with open(path, encoding="utf-8") as file:
        return file.readline().rstrip("\r\n")


def refusal_of(line: str) -> str | None:
    """The message of a ``114`` error line (text or JSON); None for any other line."""
    if line.startswith(_PREFIX):
        return line[len(_PREFIX) :]
    if line.startswith("{"):
        try:
            obj = json.loads(line)
        except ValueError:
            return None
        if (
            isinstance(obj, dict)
            and obj.get("type") == "error"
            and obj.get("code") == int(ErrorCode.NAME_REGISTERED)
            and isinstance(obj.get("message"), str)
        ):
            return obj["message"]
    return None


def needs_password(refusal: str) -> bool:
    """Whether asking for a password could help (not when the name is locked)."""
    return refusal.startswith("name registered:") and " is locked " not in refusal


async def prompt_password(name: str) -> str | None:
    """Ask on the terminal, without echo; None when there is no terminal or no answer."""
    if sys.stdin is None or not sys.stdin.isatty():
        return None
    try:
        password = await trio.to_thread.run_sync(getpass.getpass, f"password for {name}: ")
    except (EOFError, KeyboardInterrupt):
        return None
    return password or None
