"""Several machat nodes as one server, through Redis (see `backplane`).

The names below are imported on first use, so that a server without ``--redis``
never loads the Redis client.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Backplane",
    "BackplaneStatistics",
    "ClusterConfig",
    "ClusterUnavailable",
    "Listener",
    "PublishInDoubt",
    "RoomFeed",
    "Roster",
    "check_url",
]

_WHERE = {
    "Backplane": "backplane",
    "BackplaneStatistics": "backplane",
    "ClusterConfig": "backplane",
    "ClusterUnavailable": "errors",
    "Listener": "backplane",
    "PublishInDoubt": "errors",
    "Roster": "backplane",
    "RoomFeed": "feed",
    "check_url": "url",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
