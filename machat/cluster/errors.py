"""The cluster's exceptions (importable without the Redis client)."""

from __future__ import annotations

__all__ = ["ClusterUnavailable", "PublishInDoubt"]


class ClusterUnavailable(Exception):
    """Redis could not be reached in time: the operation did not take effect."""


class PublishInDoubt(ClusterUnavailable):
    """A publish reached Redis, or may have, and its answer was lost: its lines may
    have been published.  They are neither accepted nor refused yet: the backplane
    sends them again (the script knows a batch it has taken) once Redis answers."""
