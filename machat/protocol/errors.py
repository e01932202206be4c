"""Error codes and the exceptions of the sans-IO core.

Two kinds of error, each with one meaning:

- `RemoteProtocolError`, as in h11: the peer broke the protocol (a malformed
  handshake, a line too long, bytes that are not text).
- `ChatError`: an ordinary refusal or reply to a well-formed request (the name is
  in use, there is no such recipient, the password is wrong).

Both carry the numbered code and the text of the ``! ERROR`` line to send back, so
the wire output is the same whichever was raised.
"""

from __future__ import annotations

import enum

__all__ = [
    "ChatError",
    "ErrorCode",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
]


class ErrorCode(enum.IntEnum):
    """The numbered errors of the machat protocol (docs/PROTOCOL.md)."""

    INVALID_NAME = 100
    NAME_IN_USE = 101
    NO_SUCH_RECIPIENT = 102
    BAD_COMMAND = 103
    BAD_PASSWORD = 104
    LINE_TOO_LONG = 105
    INVALID_HANDSHAKE = 106
    INVALID_ROOM = 107
    RATE_LIMITED = 108
    SERVER_FULL = 109
    TIMED_OUT = 110
    TOO_SLOW = 111
    INVALID_TEXT = 112
    CLUSTER_UNAVAILABLE = 113
    NAME_REGISTERED = 114
    MUTED = 115
    NOT_PERMITTED = 116
    BANNED = 117


class _ErrorLine(Exception):
    """An error that carries the ``! ERROR <code> <message>`` line to send back."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}, {self.message!r})"


class ProtocolError(Exception):
    """Base class of the protocol's errors."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol forbids (a bug on our side)."""


class RemoteProtocolError(_ErrorLine, ProtocolError):
    """The peer broke the protocol.

    ``code`` and ``message`` are what to send back as ``! ERROR <code> <message>``.
    """


class ChatError(_ErrorLine):
    """A well-formed request that the server refuses: not a protocol violation.

    ``code`` and ``message`` are what to send back as ``! ERROR <code> <message>``.
    """
