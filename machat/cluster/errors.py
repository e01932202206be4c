"""The cluster's one exception (importable without the Redis client)."""

from __future__ import annotations

__all__ = ["ClusterUnavailable"]


class ClusterUnavailable(Exception):
    """Redis could not be reached in time: the operation did not take effect."""
