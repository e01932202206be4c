"""ClusterRoom's passes, against a stand-in backplane (no Redis): each pass is one
publish, so after a thin pass the next waits out ``fanout_interval``, or longer in a
room big enough to wait longer on a single node."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing

from machat.cluster.errors import ClusterUnavailable, PublishInDoubt
from machat.cluster.node import OWN_PASS_WAIT, ClusterRoom
from machat.protocol.formatting import Format
from machat.server.member import Member
from machat.server.passes import RoomPass
from tests.helpers import QueueSender


class _Backplane:
    """Records each publish (one script call in the real one) and gives ids; each
    publish comes back to ``room`` at once, as if through the subscription, unless
    ``returns`` is False (then `come_back` brings what was published)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.times: list[float] = []
        self.next_id = 1
        self.room: ClusterRoom | None = None
        self.returns = True
        self.published: list[RoomPass] = []

    def come_back(self) -> None:
        assert self.room is not None
        for messages in self.published:
            self.room.deliver_cluster(messages)
        self.published = []

    async def open_room(self, name: str) -> int:
        return 0

    def close_room(self, name: str) -> None:
        pass

    async def publish(
        self, room: str, runs: Sequence[tuple[str, Sequence[str]]], floor: int = 0
    ) -> int:
        await trio.lowlevel.checkpoint()
        texts = [text for _, run in runs for text in run]
        self.calls.append(texts)
        self.times.append(trio.current_time())
        first, self.next_id = self.next_id, self.next_id + len(texts)
        lines = [(sender, text) for sender, run in runs for text in run]
        rows = [(room, sender, text, first + i, 0.0) for i, (sender, text) in enumerate(lines)]
        self.published.append(RoomPass.of_rows(rows))
        if self.returns and self.room is not None:
            self.come_back()
        return first


async def _trickle(
    clock: trio.testing.MockClock, interval: float, lines: int, every: float, members: int = 0
) -> _Backplane:
    """``lines`` lines into a room, one each ``every`` seconds of ``clock``, which is
    moved by hand once every task is blocked; the room's calls are recorded."""
    backplane = _Backplane()
    room = ClusterRoom("dev", backplane=backplane, fanout_interval=interval)  # type: ignore[arg-type]
    backplane.room = room
    for i in range(members):
        room.add(Member(f"M{i}", Format.TEXT, QueueSender(1 << 20)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        for i in range(lines):
            room.send_nowait("Mina", f"l{i}")
            await trio.testing.wait_all_tasks_blocked()
            clock.jump(every)
        room.close()  # the room publishes what is queued, then its task ends
        clock.autojump_threshold = 0  # (through a spacing it may be waiting out)
    return backplane


async def test_a_trickle_into_a_cluster_room_shares_script_calls(
    mock_clock: trio.testing.MockClock,
) -> None:
    calls = (await _trickle(mock_clock, 0.005, lines=20, every=0.001)).calls
    assert [text for call in calls for text in call] == [f"l{i}" for i in range(20)]
    assert calls[0] == ["l0"]  # the first line goes at once
    assert len(calls) <= 6, calls  # then a call per 5 ms, not one per line


async def test_without_an_interval_every_line_is_a_call_of_its_own(
    mock_clock: trio.testing.MockClock,
) -> None:
    calls = (await _trickle(mock_clock, 0.0, lines=20, every=0.001)).calls
    assert calls == [[f"l{i}"] for i in range(20)]


async def test_a_big_cluster_room_spaces_a_trickle_as_a_single_node_does(
    mock_clock: trio.testing.MockClock,
) -> None:
    """A room of 200 members here waits twice the interval after a thin pass, as a
    `Room` of that size does: each pass is a write per member as well as a call."""
    # a line every 2 ms, for 80 ms: passes stay thin
    backplane = await _trickle(mock_clock, 0.005, lines=40, every=0.002, members=200)
    assert [text for call in backplane.calls for text in call] == [f"l{i}" for i in range(40)]
    times = backplane.times
    gaps = [round(b - a, 6) for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps[:-1]) >= 0.01, gaps  # (the last call is the close's flush)
    assert len(times) <= 2 + 0.080 / 0.01, gaps


async def test_a_pass_waits_until_the_last_has_come_back(
    mock_clock: trio.testing.MockClock,
) -> None:
    """The next pass is made once the last has come back through the cluster and
    been fanned out here (its senders go on once they see their lines), or after
    `OWN_PASS_WAIT` if it never comes."""
    backplane = _Backplane()
    backplane.returns = False
    room = ClusterRoom("dev", backplane=backplane)  # type: ignore[arg-type]
    backplane.room = room
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        room.send_nowait("Mina", "a")
        await trio.testing.wait_all_tasks_blocked()
        room.send_many_nowait("Mina", ["b", "c"])
        await trio.testing.wait_all_tasks_blocked()
        assert backplane.calls == [["a"]]  # "a" is on its way back
        backplane.come_back()
        await trio.testing.wait_all_tasks_blocked()
        assert backplane.calls == [["a"], ["b", "c"]]
        # "b" and "c" never come back: "d" goes once the wait is over.
        start = trio.current_time()
        room.send_nowait("Mina", "d")
        mock_clock.jump(OWN_PASS_WAIT - 0.001)
        await trio.testing.wait_all_tasks_blocked()
        assert len(backplane.calls) == 2
        mock_clock.jump(0.001)
        await trio.testing.wait_all_tasks_blocked()
        assert backplane.calls[-1] == ["d"]
        assert backplane.times[-1] == pytest.approx(start + OWN_PASS_WAIT)
        assert [target for target, _ in room._waiters] == [4]  # only the wait for "d"
        room.close()
        mock_clock.autojump_threshold = 0


class _FailingBackplane(_Backplane):
    """Every publish fails with ``error``."""

    def __init__(self, error: ClusterUnavailable) -> None:
        super().__init__()
        self.error = error

    async def publish(
        self, room: str, runs: Sequence[tuple[str, Sequence[str]]], floor: int = 0
    ) -> int:
        await super().publish(room, runs, floor)
        raise self.error


async def _what_mina_hears(error: ClusterUnavailable) -> bytes:
    room = ClusterRoom("dev", backplane=_FailingBackplane(error))  # type: ignore[arg-type]
    mina = Member("Mina", Format.TEXT, QueueSender(1 << 20))
    room.add(mina)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        room.send_many_nowait("Mina", ["one", "two"])
        room.close()
    assert isinstance(mina.sender, QueueSender)
    return mina.sender.take_nowait()


async def test_lines_refused_by_the_cluster_are_refused_each() -> None:
    heard = await _what_mina_hears(ClusterUnavailable("cluster unavailable: Redis is down"))
    refusal = b"! ERROR 113 cluster unavailable: Redis is down; line not sent\n"
    assert heard == refusal * 2


async def test_lines_in_doubt_are_not_refused() -> None:
    """They may have been published (and then come back from the subscription): the
    sender hears once that they are not confirmed."""
    heard = await _what_mina_hears(PublishInDoubt("cluster unavailable: the answer was lost"))
    assert heard == (
        b"* cluster unavailable: your 2 lines were not confirmed; they reach the room once "
        b"the cluster answers, and only once\n"
    )


def test_stats_show_publishes_in_doubt_only_when_there_are_some() -> None:
    from machat.cluster.backplane import BackplaneStatistics
    from machat.cluster.node import ClusterStatistics
    from machat.server.server import ServerStatistics

    node = ServerStatistics(2, 2, 1, 2, 0, 5, 10, 0, 0)
    figures = dict.fromkeys(
        [
            "rooms_open", "users_here", "batches_published", "publish_round_trips",
            "lines_published", "batches_received", "messages_delivered", "gaps_filled",
            "messages_lost", "stream_restarts", "sessions", "outages",
        ],
        0,
    )  # fmt: skip
    for doubt, tail in ((0, "2 rooms"), (3, "2 rooms; 3 publishes in doubt")):
        backplane = BackplaneStatistics(
            node="a", available=True, publishes_in_doubt=doubt, **figures
        )
        line = ClusterStatistics(node, backplane, 2, 4, 2).format()
        assert line.endswith(f"node a; cluster: 2 nodes alive, 4 online, {tail}")


class _Untouchable(RoomPass):
    """A pass from the cluster whose rows must not be needed."""

    @property
    def rows(self) -> list:
        raise AssertionError("the pass's rows were made")


def test_a_batch_reaches_text_members_as_it_came_without_rows() -> None:
    """What the cluster delivers is handed on as its bytes: no row is made for a
    member of the text format (nor for history: Redis keeps it)."""
    from machat.server.state import ChatState

    state = ChatState(lambda fn: None)
    state.keeps_history = False
    state.room_factory = lambda name, **options: ClusterRoom(
        name, backplane=_Backplane(), **options  # type: ignore[arg-type]
    )
    sender = QueueSender(1 << 20)
    mina = Member("Mina", Format.TEXT, sender)
    state.register(mina)
    room = state.join(mina, "dev")
    assert isinstance(room, ClusterRoom)
    sender.take_nowait()  # (her join)
    text = b"Bob:hi\nWes:yo\n"
    room.deliver_cluster(_Untouchable.of_text("dev", 41, 2, text, 1.5))
    assert sender.take_nowait() == text
    assert room.last_id == 42
