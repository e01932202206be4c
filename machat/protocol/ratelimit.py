"""Flood control: a token bucket, sans-IO (the caller passes the time).

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second.
`take` spends one token and says how long the caller must wait before acting on
it; the bucket may go into debt, so waiting that long and then acting keeps the
long-run rate at ``rate`` without ever dropping anything.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float = 0.0) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = now

    def _refill(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._last = now

    def take_all(self, count: int, now: float) -> bool:
        """Spend ``count`` tokens if the bucket holds them now (no debt); else spend none."""
        self._refill(now)
        if self._tokens < count:
            return False
        self._tokens -= count
        return True

    def take(self, now: float) -> float:
        """Spend one token; return the seconds to wait before using it (0.0 if none)."""
        self._refill(now)
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate
