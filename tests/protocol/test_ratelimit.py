from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from machat.protocol.ratelimit import TokenBucket


def test_burst_is_free_then_lines_are_spaced_at_the_rate() -> None:
    bucket = TokenBucket(rate=5, burst=20)
    assert [bucket.take(0.0) for _ in range(20)] == [0.0] * 20
    assert bucket.take(0.0) == pytest.approx(0.2)
    assert bucket.take(0.0) == pytest.approx(0.4)


def test_refills_over_time_up_to_the_burst() -> None:
    bucket = TokenBucket(rate=5, burst=20)
    for _ in range(20):
        bucket.take(0.0)
    assert bucket.take(1.0) == 0.0  # 5 tokens came back
    for _ in range(4):
        assert bucket.take(1.0) == 0.0
    assert bucket.take(1.0) > 0
    # A long pause refills only up to the burst.
    assert [bucket.take(1000.0) for _ in range(20)] == [0.0] * 20
    assert bucket.take(1000.0) > 0


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=5)
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0)


@given(
    rate=st.floats(0.5, 100),
    burst=st.integers(1, 50),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=200),
)
def test_obeying_the_delays_never_exceeds_rate_plus_burst(rate, burst, gaps) -> None:
    """A client that waits as told sends at most burst + rate * elapsed lines."""
    bucket = TokenBucket(rate, burst)
    now = 0.0
    for gap in gaps:
        now += gap
        now += bucket.take(now)  # wait as told, then the line is acted on at `now`
    assert len(gaps) <= burst + rate * now + 1e-6
