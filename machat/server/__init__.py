"""The trio side of machat: rooms, connections and the server."""

from .config import ServerConfig
from .server import ChatServer

__all__ = ["ChatServer", "ServerConfig"]
