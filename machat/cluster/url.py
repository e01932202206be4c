"""Checking ``--redis URL`` (without importing the Redis client)."""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["check_url"]


def check_url(url: str) -> str:
    """``url`` if it is a Redis URL the cluster can use, else ValueError."""
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise ValueError(f"--redis {url}: no host (redis://HOST:PORT/DB)")
        try:
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError:
            raise ValueError(f"--redis {url}: bad port") from None
        return url
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"--redis {url}: no socket path (unix:///path/to/socket)")
        return url
    raise ValueError(f"--redis {url}: use redis://HOST:PORT/DB or unix:///PATH")
