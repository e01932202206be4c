"""The server's settings, one frozen object built by the command line."""

from __future__ import annotations

import attrs

__all__ = ["ServerConfig"]


@attrs.frozen
class ServerConfig:
    host: str = "localhost"
    port: int = 8989
    max_line: int = 4096
    max_handshake: int = 4096
    handshake_timeout: float = 10.0
    outbox_limit: int = 1 << 20
    #: How long pending output may take to flush on quit or shutdown.
    flush_timeout: float = 5.0
    motd: str = ""
    #: The server password every handshake must carry; None for an open server.
    password: str | None = attrs.field(default=None, repr=False)
