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


def test_take_all_spends_a_whole_run_or_nothing() -> None:
    bucket = TokenBucket(rate=5, burst=20)
    assert bucket.take_all(15, 0.0)
    assert not bucket.take_all(6, 0.0)  # 5 left: nothing spent
    assert [bucket.take(0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(0.0) == pytest.approx(0.2)  # now in debt, as before
    assert not bucket.take_all(1, 0.1)  # still in debt: -1 + 0.5
    assert bucket.take_all(4, 1.2)  # -1 + 6 = 5 tokens


@given(st.lists(st.tuples(st.integers(1, 30), st.floats(0, 2)), max_size=20))
def test_take_all_is_count_takes_when_none_waits(steps: list[tuple[int, float]]) -> None:
    """Where take_all says yes, taking one at a time would not have waited either."""
    bulk, single = TokenBucket(rate=10, burst=25), TokenBucket(rate=10, burst=25)
    now = 0.0
    for count, dt in steps:
        now += dt
        if bulk.take_all(count, now):
            assert [single.take(now) for _ in range(count)] == [0.0] * count
        else:
            assert any(single.take(now) > 0 for _ in range(count))
            single = TokenBucket(rate=10, burst=25, now=now)  # resynchronise
            bulk = TokenBucket(rate=10, burst=25, now=now)
