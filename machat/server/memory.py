"""Hand memory back to the operating system after a crowd of clients leaves.

Connections leave reference cycles (tasks, frames, tracebacks) that only a full
garbage collection frees, and glibc keeps freed heap pages for reuse, so without
help the server's RSS stays at its peak after thousands of clients disconnect.
`MemoryReleaser` decides when a release is worth it (the number of connections
fell to half its peak, or to zero after a crowd); `release` collects garbage and
asks glibc (``malloc_trim``) to return free pages.  CPython's own small-object
allocator keeps partly used arenas; run the server with ``PYTHONMALLOC=malloc`` to
let everything go back (bench/README.md has the figures).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

__all__ = ["MemoryReleaser"]

logger = logging.getLogger("machat.server")


def _find_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


class MemoryReleaser:
    """Says when to release memory; nothing happens below a peak of ``min_peak``."""

    def __init__(self, min_peak: int = 500) -> None:
        self._trim = _find_malloc_trim()
        self._min_peak = min_peak
        self._peak = 0  # connections, since the last release
        self._crowd = False  # a peak of min_peak or more since connections were last 0
        self.releases = 0

    def connections_changed(self, active: int) -> bool:
        """Note the number of connections; True when a release is due."""
        if active > self._peak:
            self._peak = active
            if active >= self._min_peak:
                self._crowd = True
            return False
        halved = self._peak >= self._min_peak and active <= self._peak // 2
        if not (halved or (active == 0 and self._crowd)):
            return False
        self._peak = active
        if active == 0:
            self._crowd = False
        return True

    def release(self) -> None:
        gc.collect()
        if self._trim is not None:
            self._trim(0)
        self.releases += 1
        logger.debug("returned free memory to the system")
