"""Error codes and the exceptions of the sans-IO core.

Errors say who broke the protocol, as h11 does: a `RemoteProtocolError` means
the peer sent something we refuse, and carries the numbered code and the text
of the ``! ERROR`` line to send back.
"""

from __future__ import annotations

import enum

__all__ = ["ErrorCode", "LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


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


class ProtocolError(Exception):
    """Base class of the protocol's errors."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol forbids (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol.

    ``code`` and ``message`` are what to send back as ``! ERROR <code> <message>``.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message

    def __repr__(self) -> str:
        return f"RemoteProtocolError({self.code.name}, {self.message!r})"
