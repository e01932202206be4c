"""Several machat nodes as one server, through Redis (see `backplane`)."""

from .backplane import (
    Backplane,
    BackplaneStatistics,
    ClusterConfig,
    ClusterUnavailable,
    Listener,
    Roster,
    check_url,
)
from .feed import RoomFeed

__all__ = [
    "Backplane",
    "BackplaneStatistics",
    "ClusterConfig",
    "ClusterUnavailable",
    "Listener",
    "RoomFeed",
    "Roster",
    "check_url",
]
