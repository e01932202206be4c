"""RoomFeed: whatever order, repetition or loss batches arrive in, each id is
delivered once and in order (pure, no Redis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from machat.cluster import RoomFeed
from machat.protocol.formatting import encode_rows_text
from machat.server.passes import RoomPass, Row

EPOCH = 1_000_000


def msgs(first: int, count: int) -> list[Row]:
    return [("dev", "Mina", f"m{i}", i, 0.0) for i in range(first, first + count)]


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]]]:
    """A stream cut into batches, then offered in any order, some twice, some never."""
    sizes = draw(st.lists(st.integers(1, 5), min_size=1, max_size=15))
    batches, first = [], EPOCH + 1
    for size in sizes:
        batches.append((first, size))
        first += size
    offered = draw(st.lists(st.sampled_from(batches), max_size=40))
    return first - EPOCH - 1, offered


@settings(deadline=None)  # pure; time only measures how busy the machine is
@given(deliveries())
def test_each_id_once_in_order_and_a_fill_completes_it(case: tuple[int, list]) -> None:
    total, offered = case
    feed = RoomFeed()
    out: list[int] = []
    for first, size in offered:
        out += [m[3] for m in feed.offer(EPOCH, msgs(first, size))]
        assert out == list(range(EPOCH + 1, EPOCH + 1 + len(out)))
    # The stream still holds everything: a fill from the first gap completes it.
    if (gap := feed.gap()) is not None:
        out += [m[3] for m in feed.offer(EPOCH, msgs(gap, EPOCH + total - gap + 1))]
    elif out:
        out += [m[3] for m in feed.offer(EPOCH, msgs(out[-1] + 1, EPOCH + total - out[-1]))]
    else:
        out += [m[3] for m in feed.offer(EPOCH, msgs(EPOCH + 1, total))]
    assert out == list(range(EPOCH + 1, EPOCH + total + 1))
    assert feed.gap() is None


@settings(deadline=None)
@given(deliveries())
def test_batches_offered_as_passes_come_out_as_their_rows_would(case: tuple[int, list]) -> None:
    """`offer_pass` (a batch from the subscription, its rows not made) delivers
    what `offer` of its rows does; the pass itself when it is exactly what is next."""
    _, offered = case
    by_rows, by_passes = RoomFeed(), RoomFeed()
    for first, size in offered:
        rows = msgs(first, size)
        batch = RoomPass.of_text("dev", first, size, encode_rows_text(rows), 0.0)
        expected = by_rows.offer(EPOCH, rows)
        next_in_line = (
            by_passes.epoch == EPOCH
            and by_passes.first_ahead() is None
            and first == by_passes.last + 1
        )
        got = by_passes.offer_pass(EPOCH, batch)
        assert (got.rows if got is not None else []) == expected
        assert (got is batch) == next_in_line
        assert (by_passes.last, by_passes.head) == (by_rows.last, by_rows.head)


def test_starting_point_is_respected() -> None:
    feed = RoomFeed(EPOCH, EPOCH + 10)
    assert feed.offer(EPOCH, msgs(EPOCH + 5, 10)) == msgs(EPOCH + 11, 4)


def test_a_gap_waits_until_filled() -> None:
    feed = RoomFeed(EPOCH, EPOCH)
    assert feed.offer(EPOCH, msgs(EPOCH + 3, 2)) == []
    assert feed.gap() == EPOCH + 1 and feed.first_ahead() == EPOCH + 3
    delivered = feed.offer(EPOCH, msgs(EPOCH + 1, 2))
    assert [m[3] for m in delivered] == [EPOCH + i for i in (1, 2, 3, 4)]
    assert feed.gap() is None


def test_what_the_stream_no_longer_holds_is_given_up() -> None:
    feed = RoomFeed(EPOCH, EPOCH)
    feed.offer(EPOCH, msgs(EPOCH + 6, 2))
    assert [m[3] for m in feed.skip(EPOCH + 5)] == [EPOCH + 6, EPOCH + 7]
    assert feed.lost == 5 and feed.gap() is None


def test_a_known_head_is_a_gap_until_delivered() -> None:
    feed = RoomFeed(EPOCH, EPOCH)
    feed.note_head(EPOCH, EPOCH + 2)
    assert feed.gap() == EPOCH + 1
    feed.offer(EPOCH, msgs(EPOCH + 1, 2))
    assert feed.gap() is None


def test_a_new_epoch_replaces_the_old_stream() -> None:
    feed = RoomFeed(EPOCH, EPOCH)
    feed.offer(EPOCH, msgs(EPOCH + 1, 3))
    feed.offer(EPOCH, msgs(EPOCH + 6, 1))  # ahead of a gap that will never be filled
    new = 5 * EPOCH
    assert [m[3] for m in feed.offer(new, msgs(new + 1, 2))] == [new + 1, new + 2]
    assert feed.restarts == 1 and feed.gap() is None
    assert feed.offer(EPOCH, msgs(EPOCH + 4, 2)) == []  # late news from the old stream


def test_a_first_stream_is_not_a_restart() -> None:
    feed = RoomFeed()
    assert [m[3] for m in feed.offer(EPOCH, msgs(EPOCH + 1, 1))] == [EPOCH + 1]
    assert feed.restarts == 0


@settings(deadline=None)
@given(deliveries(), st.data())
def test_discarded_batches_take_their_turn_and_deliver_nothing(
    case: tuple[int, list], data: st.DataObject
) -> None:
    """Some batches are copies (discarded however they come: live or from the
    stream); the others are delivered each once, in order, and the ids of both are
    taken, so nothing waits on a copy's ids."""
    total, offered = case
    batches = sorted(set(offered))
    copies = {b for b in batches if data.draw(st.booleans())}
    feed = RoomFeed()
    out: list[int] = []

    def offer(first: int, size: int) -> None:
        if (first, size) in copies:
            rows = feed.discard(EPOCH, first, size)
        else:
            rows = feed.offer(EPOCH, msgs(first, size))
        out.extend(m[3] for m in rows)

    for first, size in offered:
        offer(first, size)
    # A fill brings the stream from the first gap, each copy known for what it is
    # (the batches never offered are no copies).
    starts = {first: size for first, size in batches}
    i = max(feed.last, EPOCH) + 1  # (a feed offered nothing yet knows no epoch)
    while i <= EPOCH + total:
        size = starts.get(i, 1)
        offer(i, size)
        i += size
    discarded = {i for first, size in copies for i in range(first, first + size)}
    assert out == [i for i in range(EPOCH + 1, EPOCH + total + 1) if i not in discarded]
    assert feed.last == EPOCH + total and feed.gap() is None


def test_a_copy_next_in_line_moves_the_feed_on() -> None:
    feed = RoomFeed(EPOCH, EPOCH)
    assert feed.discard(EPOCH, EPOCH + 1, 3) == []
    assert feed.last == EPOCH + 3 and feed.gap() is None
    assert feed.offer(EPOCH, msgs(EPOCH + 4, 1)) == msgs(EPOCH + 4, 1)


def test_a_copy_filling_a_gap_lets_what_waited_behind_it_go() -> None:
    feed = RoomFeed(EPOCH, EPOCH)
    assert feed.offer(EPOCH, msgs(EPOCH + 3, 2)) == []
    assert feed.discard(EPOCH, EPOCH + 1, 2) == msgs(EPOCH + 3, 2)
    # The copy's rows from the stream, later, are not delivered either.
    assert feed.offer(EPOCH, msgs(EPOCH + 1, 4)) == []
    assert feed.last == EPOCH + 4


def test_a_copy_ahead_of_a_gap_stays_discarded_when_its_rows_come() -> None:
    feed = RoomFeed(EPOCH, EPOCH)
    assert feed.discard(EPOCH, EPOCH + 2, 2) == []
    assert feed.gap() == EPOCH + 1 and feed.first_ahead() == EPOCH + 2
    assert feed.offer(EPOCH, msgs(EPOCH + 1, 4)) == msgs(EPOCH + 1, 1) + msgs(EPOCH + 4, 1)


def test_what_was_delivered_of_a_replaced_stream_is_remembered() -> None:
    feed = RoomFeed(EPOCH, EPOCH)
    feed.offer(EPOCH, msgs(EPOCH + 1, 3))
    feed.offer(EPOCH, msgs(EPOCH + 6, 1))  # ahead of a gap: never delivered
    assert feed.delivered(EPOCH, EPOCH + 3) and not feed.delivered(EPOCH, EPOCH + 4)
    new = 5 * EPOCH
    feed.offer(new, msgs(new + 1, 1))
    assert feed.delivered(EPOCH, EPOCH + 3)
    assert not feed.delivered(EPOCH, EPOCH + 6)  # dropped with the old stream
    assert feed.delivered(new, new + 1) and not feed.delivered(new, new + 2)
    assert not feed.delivered(3 * EPOCH, 3 * EPOCH + 1)  # a stream never seen here
