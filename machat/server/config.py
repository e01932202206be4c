"""The server's settings, one frozen object built by the command line."""

from __future__ import annotations

import ssl

import attrs

__all__ = ["ServerConfig"]


@attrs.frozen
class ServerConfig:
    """Every limit protects people by default; 0 lifts the ones marked so."""

    host: str = "localhost"
    port: int = 8989
    max_line: int = 4096
    max_handshake: int = 4096
    handshake_timeout: float = 10.0
    outbox_limit: int = 1 << 20
    #: A room of 100 members or more whose last fan-out pass carried 8 messages or
    #: fewer waits this long after it before the next, so that paced lines share a
    #: pass (a write per member); 0: never waits.  See `machat.server.room`.  In a
    #: cluster every room does so: a pass is a script call, whatever the room's size.
    fanout_interval: float = 0.005
    #: How long pending output may take to flush on quit or shutdown.
    flush_timeout: float = 5.0
    motd: str = ""
    #: The server password every handshake must carry; None for an open server.
    password: str | None = attrs.field(default=None, repr=False)
    #: Flood control: lines per second per connection (0: off), and the burst allowed.
    rate: float = 5.0
    burst: int = 20
    #: Connection caps (0: unlimited).
    max_clients: int = 10000
    max_per_ip: int = 100
    #: Seconds without a byte from a client before it is disconnected (0: off).
    idle_timeout: float = 0.0
    #: Serve TLS with this context (None: plaintext).
    ssl_context: ssl.SSLContext | None = None
    #: Seconds between statistics lines in the log at INFO (0: never).
    stats_interval: float = 60.0
    #: Messages kept in memory per room for /history.
    history_limit: int = 1000
    #: SQLite file for durable history (None: memory only).
    db_path: str | None = None
    #: Human-readable transcript file (None: none).
    transcript_path: str | None = None
    #: Registered names that are operators while logged in (any case).
    operators: tuple[str, ...] = ()
    #: Shut down once the last member leaves, if any member has joined.
    exit_when_empty: bool = False
    #: One more listener (host, port) for the web client and WebSocket (MaChat's -ws).
    ws_address: tuple[str, int] | None = None
    #: Origins besides the page's own allowed to open a WebSocket ("*": any).
    ws_origins: tuple[str, ...] = ()
    #: Ping a WebSocket client quiet this long (0: never), and drop it when no byte
    #: comes back within ws_ping_timeout.
    ws_ping_interval: float = 30.0
    ws_ping_timeout: float = 20.0
