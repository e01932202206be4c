"""What the client was asked to do: a frozen `ClientConfig`, and address parsing."""

from __future__ import annotations

import attrs

from machat.address import DEFAULT_HOST, DEFAULT_PORT, format_address, parse_address
from machat.protocol.formatting import Format
from machat.protocol.handshake import DEFAULT_ROOM, Handshake

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ClientConfig",
    "format_address",
    "parse_address",
]


@attrs.frozen
class ClientConfig:
    """Everything the client needs to connect and to introduce itself, and how to show it.

    ``plain`` keeps the line mode even on a terminal; ``bell`` and ``mouse`` are for the
    full-screen UI.

    The password is kept out of ``repr`` so that it cannot end up in a log.
    """

    name: str
    room: str = DEFAULT_ROOM
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    password: str | None = attrs.field(default=None, repr=False)
    #: The password of a registered name (the handshake's ``auth``).
    auth: str | None = attrs.field(default=None, repr=False)
    format: Format = Format.TEXT
    history: int = 0
    tls: bool = False
    cafile: str | None = None
    insecure: bool = False
    plain: bool = False
    bell: bool = True
    mouse: bool = True

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    def handshake(self) -> Handshake:
        return Handshake(
            name=self.name,
            room=self.room,
            password=self.password,
            auth=self.auth,
            format=self.format,
            history=self.history,
        )
