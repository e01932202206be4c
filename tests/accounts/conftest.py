"""Shared pieces for the account and moderation tests: a fast hasher and a fake clock."""

from __future__ import annotations

import argon2
import pytest


class FakeClock:
    """A clock the test moves by hand: no test sleeps through a lockout minute."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingHasher(argon2.PasswordHasher):
    """A real argon2id hasher with the cheapest parameters, counting its verifications."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verified: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verified.append(hash if isinstance(hash, str) else hash.decode())
        return super().verify(hash, password)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()
