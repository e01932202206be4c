"""machat: a MaChat-compatible real-time TCP chat server and client built on trio."""

__version__ = "0.1.0"
