"""The terminal client: a chat session over a stream, and its terminal ends."""

from .app import ConnectError, connect, make_ssl_context, run, run_with_login
from .config import DEFAULT_HOST, DEFAULT_PORT, ClientConfig, format_address, parse_address
from .session import CLOSE_GRACE, CLOSED_NOTICE, is_quit, run_client, sanitize

__all__ = [
    "CLOSED_NOTICE",
    "CLOSE_GRACE",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ClientConfig",
    "ConnectError",
    "connect",
    "format_address",
    "is_quit",
    "make_ssl_context",
    "parse_address",
    "run",
    "run_client",
    "run_with_login",
    "sanitize",
]
