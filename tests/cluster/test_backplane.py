"""The backplane against a real redis-server: two or three nodes in one trio run.

Each node is a `Backplane` with a recording listener; Redis is a real process on a
Unix socket.  Every wait is bounded.
"""

from __future__ import annotations

import time

import pytest
import trio
import trio.testing

from machat.cluster import ClusterUnavailable, wire
from machat.cluster import backplane as backplane_module
from machat.cluster.backplane import Group
from machat.cluster.errors import PublishInDoubt
from machat.protocol import events as ev
from tests.cluster.support import PublishCutter, eventually


async def users_online(node, count: int) -> bool:
    return len((await node.bp.roster()).users) >= count


async def held_by(redis, name: str, node: str) -> bool:
    return redis.cli("GET", f"machat:name:{name}").startswith(node + "\t")


pytestmark = pytest.mark.cluster


async def test_one_order_for_concurrent_senders_on_three_nodes(start_node) -> None:
    nodes = [await start_node(n) for n in ("a", "b", "c")]
    for node in nodes:
        await node.bp.open_room("Dev")

    async def send(node, tag: str) -> None:
        for i in range(20):
            await node.bp.publish("dev", [(tag, [f"{tag}{i}.{j}" for j in range(i % 3 + 1)])])

    async with trio.open_nursery() as nursery:
        for node, tag in zip(nodes, ("A", "B", "C"), strict=True):
            nursery.start_soon(send, node, tag)
    total = 3 * sum(i % 3 + 1 for i in range(20))
    for node in nodes:
        await node.rec.wait_for(lambda node=node: len(node.rec.ids("dev")) >= total)
    sequences = [node.rec.texts("dev") for node in nodes]
    assert sequences[0] == sequences[1] == sequences[2]
    ids = nodes[0].rec.ids("dev")
    assert ids == list(range(ids[0], ids[0] + total))
    for tag in "ABC":  # each sender's lines in the order sent
        mine = [t for t in sequences[0] if t.startswith(tag)]
        assert mine == sorted(mine, key=lambda t: tuple(map(int, t[1:].split("."))))
    assert nodes[0].rec.messages["dev"][0].room == "Dev"


async def test_a_busy_room_holds_a_hand_over_for_the_other_nodes_batches(start_node) -> None:
    gather = 1.5
    a, b = await start_node("a"), await start_node("b")
    c = await start_node("c", gather=gather)
    c.rec.members = backplane_module.GATHER_MEMBERS  # a write each: worth gathering for
    for node in (a, b, c):
        await node.bp.open_room("dev")
    first = await a.bp.publish("dev", [("Mina", ["quiet"])])
    # A quiet room's message is not held: it comes well within the gather time.
    await c.rec.wait_for(lambda: c.rec.ids("dev") == [first], within=gather * 2 / 3)
    # Now the room is busy: what two nodes publish next reaches c in one hand-over.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.bp.publish, "dev", [("Mina", ["a1", "a2"])])
        nursery.start_soon(b.bp.publish, "dev", [("Ansel", ["b1"])])
    await c.rec.wait_for(lambda: len(c.rec.ids("dev")) == 4)
    assert c.rec.hand_overs == [("dev", [first]), ("dev", [first + 1, first + 2, first + 3])]
    assert sorted(c.rec.texts("dev")[1:]) == ["a1", "a2", "b1"]
    # A room with few members here is never held: a and b got every id, in order.
    for node in (a, b):
        await node.rec.wait_for(lambda node=node: len(node.rec.ids("dev")) == 4)
        assert node.rec.texts("dev") == c.rec.texts("dev")


async def test_a_room_only_this_node_publishes_to_is_not_held(start_node) -> None:
    """Its batches come one at a time whatever the wait: holding would merge nothing."""
    gather = 1.5
    c = await start_node("c", gather=gather)
    c.rec.members = backplane_module.GATHER_MEMBERS
    await c.bp.open_room("dev")
    first = await c.bp.publish("dev", [("Mina", ["one"])])
    await c.rec.wait_for(lambda: c.rec.ids("dev") == [first])
    await c.bp.publish("dev", [("Mina", ["two"])])  # busy, but only this node's
    await c.rec.wait_for(lambda: len(c.rec.ids("dev")) == 2, within=gather * 2 / 3)
    assert c.rec.hand_overs == [("dev", [first]), ("dev", [first + 1])]


async def test_a_notice_lets_held_messages_go_first(start_node) -> None:
    """Held messages of a busy room go out before a notice that came after them."""
    a, b = await start_node("a"), await start_node("b")
    c = await start_node("c", gather=30.0)  # held for as long as the test could last
    c.rec.members = backplane_module.GATHER_MEMBERS
    for node in (a, b, c):
        await node.bp.open_room("dev")
    first = await a.bp.publish("dev", [("Mina", ["quiet"])])
    await c.rec.wait_for(lambda: c.rec.ids("dev") == [first])
    await a.bp.publish("dev", [("Mina", ["held"])])  # busy now: c holds it
    b.bp.notice("dev", ev.Join("dev", "Ansel"))
    await c.rec.wait_for(lambda: len(c.rec.notices) == 1)
    assert c.rec.timeline == [[first], [first + 1], ev.Join("dev", "Ansel")]


def test_the_gather_time_follows_the_fanout_interval() -> None:
    from machat.cmd.chatserver import build_parser, cluster_from_args
    from machat.server import ServerConfig

    options = cluster_from_args(build_parser().parse_args(["--redis", "redis://127.0.0.1:1"]))
    assert options is not None
    assert options.config(ServerConfig()).gather == backplane_module.GATHER
    assert options.config(ServerConfig(fanout_interval=0.0004)).gather == 0.0004
    assert options.config(ServerConfig(fanout_interval=0)).gather == 0


async def _publish_to_rooms_at_once(node, rooms: list[str], tag: str) -> dict[str, int]:
    """Every room publishes in the same tick; returns each room's first id."""
    firsts: dict[str, int] = {}

    async def one(room: str) -> None:
        firsts[room] = await node.bp.publish(
            room, [("Mina", [f"{tag}.{room}.{j}" for j in range(3)])]
        )

    async with trio.open_nursery() as nursery:
        for room in rooms:
            nursery.start_soon(one, room)
    return firsts


async def test_rooms_publishing_at_once_share_a_round_trip(start_node) -> None:
    a, b = await start_node("a"), await start_node("b")
    rooms = [f"r{i}" for i in range(12)]
    for room in rooms:
        await a.bp.open_room(room)
        await b.bp.open_room(room)
    before = a.bp.statistics()
    firsts = await _publish_to_rooms_at_once(a, rooms, "x")
    second = await _publish_to_rooms_at_once(a, rooms, "y")
    after = a.bp.statistics()
    assert after.batches_published - before.batches_published == 24
    # The first publish goes alone; the eleven that came meanwhile share a pipeline.
    assert after.publish_round_trips - before.publish_round_trips <= 4
    for room in rooms:
        assert second[room] == firsts[room] + 3
        for node in (a, b):
            await node.rec.wait_for(lambda node=node, room=room: len(node.rec.ids(room)) == 6)
            assert node.rec.ids(room) == list(range(firsts[room], firsts[room] + 6))
            assert node.rec.texts(room) == [f"{t}.{room}.{j}" for t in "xy" for j in range(3)]


async def test_a_pipeline_loads_a_script_redis_forgot(start_node, redis) -> None:
    a = await start_node("a")
    rooms = [f"r{i}" for i in range(6)]
    for room in rooms:
        await a.bp.open_room(room)
    firsts = await _publish_to_rooms_at_once(a, rooms, "x")
    redis.cli("SCRIPT", "FLUSH")
    # Straight to the pipeline (a lone publish would load the script first).
    requests = []
    for room in rooms:
        request = backplane_module._Publish(
            [a.bp.keys.room_meta(room), a.bp.keys.room_log(room)],
            [a.bp.keys.room_channel(room), 1000, "a", a.bp.incarnation, 10_000 + len(requests),
             0, 1, wire.encode_lines([("Mina", ["after"])]), 60_000],
            room, 1, 10_000 + len(requests),
        )  # fmt: skip
        requests.append(request)
    before = a.bp.statistics().publish_round_trips
    await a.bp._send_publishes(requests)
    # Every one came back NOSCRIPT, and all were sent again as EVAL: two round trips.
    assert a.bp.statistics().publish_round_trips - before == 2
    assert redis.cli("SCRIPT", "EXISTS", a.bp._publish.sha) == "1"
    assert [r.error for r in requests] == [None] * 6
    assert [int(r.result[0]) for r in requests] == [firsts[room] + 3 for room in rooms]
    for room in rooms:
        await a.rec.wait_for(lambda room=room: len(a.rec.ids(room)) == 4)
        assert a.rec.ids(room) == list(range(firsts[room], firsts[room] + 4))  # each once
        assert a.rec.texts(room)[-1] == "after"


async def _two_nodes_a_behind(cutter: PublishCutter, start_node, nursery) -> tuple:
    """Nodes a (behind ``cutter``) and b in room dev, and the id of a's first line."""
    port = await nursery.start(cutter.serve)
    a = await start_node("a", url=f"redis://127.0.0.1:{port}/0", presence_ttl=2)
    b = await start_node("b")
    for node in (a, b):
        await node.bp.open_room("dev")
    return cutter, a, b, await a.bp.publish("dev", [("Mina", ["before"])])


async def _each_once(nodes: list, first: int, texts: list[str], redis) -> None:
    """Every node delivered ``texts`` in dev, each once, with ids from ``first`` on."""
    for node in nodes:
        await node.rec.wait_for(lambda node=node: len(node.rec.ids("dev")) >= len(texts))
        assert node.rec.texts("dev") == texts
        assert node.rec.ids("dev") == list(range(first, first + len(texts)))
    assert redis.cli("XLEN", "machat:room:{dev}:log") == str(len(texts))


async def test_a_publish_lost_on_the_way_is_neither_refused_nor_repeated(
    start_node, redis, nursery
) -> None:
    """Lost once the node wrote it (Redis may have run it, for all the node knows):
    the room is told it is in doubt, not refused, and once Redis answers it is sent
    again and delivered exactly once."""
    cutter, a, b, first = await _two_nodes_a_behind(PublishCutter(redis), start_node, nursery)
    cutter.cut_request()
    with trio.fail_after(5), pytest.raises(PublishInDoubt, match="may have been published"):
        await a.bp.publish("dev", [("Mina", ["in doubt"])])
    await cutter.cut_done.wait()
    assert a.bp.statistics().publishes_in_doubt == 1
    cutter.release()
    with trio.fail_after(5):
        await a.bp.wait_available()
    # (the publish in doubt goes first, in the same pipeline if not before)
    await a.bp.publish("dev", [("Mina", ["after"])])
    assert a.bp.statistics().publishes_in_doubt == 0
    await _each_once([a, b], first, ["before", "in doubt", "after"], redis)


async def test_a_publish_in_doubt_outlives_the_node_giving_up_its_users(
    start_node, redis, nursery
) -> None:
    """Cut off long enough to give up its users, the node still sends its publish in
    doubt once Redis answers: its sender was told the line reaches the room then."""
    cutter, a, b, first = await _two_nodes_a_behind(PublishCutter(redis), start_node, nursery)
    assert await a.bp.claim_name("Mina")
    cutter.cut_request()
    with trio.fail_after(5), pytest.raises(PublishInDoubt):
        await a.bp.publish("dev", [("Mina", ["in doubt"])])
    cutter.cut_everything()
    await a.rec.wait_for(lambda: [names for names, _ in a.rec.lost] == [("Mina",)])  # (0.7 x 2 s)
    assert a.bp.statistics().publishes_in_doubt == 1
    cutter.release()
    await a.rec.wait_for(lambda: a.bp.statistics().publishes_in_doubt == 0)
    await _each_once([a, b], first, ["before", "in doubt"], redis)


async def test_a_publish_whose_answer_is_lost_is_settled_by_its_batch(
    start_node, redis, nursery
) -> None:
    """Redis ran it and its answer was lost: the node's own subscription brought the
    batch back, so the publish is settled as published (no note of doubt, no retry)
    while the publish connection is still cut."""
    cutter, a, b, first = await _two_nodes_a_behind(PublishCutter(redis), start_node, nursery)
    cutter.cut_answer(hold=True)
    published: list[int] = []

    async def publish() -> None:
        published.append(await a.bp.publish("dev", [("Mina", ["ran"])]))

    with trio.fail_after(5):
        async with trio.open_nursery() as waiting:
            waiting.start_soon(publish)
            await cutter.cut_done.wait()  # (the answer was cut, the connection held)
            await a.rec.wait_for(lambda: a.rec.texts("dev") == ["before", "ran"])
            cutter.let_go()  # now the connection closes, and the retry fails too
    assert published == [first + 1]
    assert a.bp.statistics().publishes_in_doubt == 0
    cutter.release()
    with trio.fail_after(5):
        await a.bp.publish("dev", [("Mina", ["after"])])
    await _each_once([a, b], first, ["before", "ran", "after"], redis)


async def test_a_publish_in_doubt_is_settled_when_its_batch_comes_back(start_node) -> None:
    """The batch may come back after the node has put the publish in doubt (its
    subscription is a connection of its own): it is settled then, not sent again."""
    a = await start_node("a")
    await a.bp.open_room("dev")
    seq = 10_000
    request = backplane_module._Publish(
        [a.bp.keys.room_meta("dev"), a.bp.keys.room_log("dev")], [], "dev", 1, seq, resent=True
    )
    a.bp._in_doubt.append(request)
    assert a.bp.statistics().publishes_in_doubt == 1
    last = a.bp.last_id("dev")
    epoch = a.bp._rooms["dev"].feed.epoch
    payload = f"R\t{epoch}\t{last + 1}\t1.5\t1\ta\t{seq}\t{a.bp.incarnation}\nMina:hi\n"
    a.bp._on_message(a.bp.keys.room_channel("dev"), payload)
    assert a.bp.statistics().publishes_in_doubt == 0
    await a.rec.wait_for(lambda: a.rec.texts("dev") == ["hi"])  # (delivered, once)
    # Another node's batch of that number settles nothing.
    a.bp._in_doubt.append(request)
    a.bp._on_message(
        a.bp.keys.room_channel("dev"), f"R\t{epoch}\t{last + 2}\t1.5\t1\tb\t{seq}\tb1\nBob:yo\n"
    )
    assert a.bp.statistics().publishes_in_doubt == 1
    # Nor does one of that number from an earlier life of this node (a restart).
    a.bp._on_message(
        a.bp.keys.room_channel("dev"), f"R\t{epoch}\t{last + 3}\t1.5\t1\ta\t{seq}\told\nMina:yo\n"
    )
    assert a.bp.statistics().publishes_in_doubt == 1


def _request(
    node, room: str, seq: int, text: str, *, floor: int = 0, resent: bool = False
) -> backplane_module._Publish:
    """A publish of one line by Mina, as the publisher sends it (``resent``: again)."""
    bp = node.bp
    args = [bp.keys.room_channel(room), 1000, bp.node, bp.incarnation, seq, floor, 1,
            wire.encode_lines([("Mina", [text])]), 60_000]  # fmt: skip
    keys = [bp.keys.room_meta(room), bp.keys.room_log(room)]
    return backplane_module._Publish(keys, args, room, 1, seq, resent=resent)


async def _published_then_redis_emptied(start_node, redis) -> tuple:
    """Nodes a and b deliver a's line "said once", then Redis loses everything; node c
    opens the room only then.  Returns a, b, c, the line's id and its batch number."""
    a, b = await start_node("a"), await start_node("b")
    for node in (a, b):
        await node.bp.open_room("dev")
    seq = next(a.bp._batch_seq)
    original = _request(a, "dev", seq, "said once")
    await a.bp._send_publishes([original])
    first = int(original.result[0])
    for node in (a, b):
        await node.rec.wait_for(lambda node=node: node.rec.texts("dev") == ["said once"])
    redis.cli("FLUSHALL")
    c = await start_node("c")
    await c.bp.open_room("dev")
    return a, b, c, first, seq


async def _sent_again_then_after(a, first: int, seq: int, redis) -> tuple[int, int]:
    """a sends batch ``seq`` again (its answer was lost, for all a knows), then "after";
    returns the copy's id and the id of "after"."""
    await a.bp._send_publishes([_request(a, "dev", seq, "said once", floor=first, resent=True)])
    # Redis knew nothing of it: a new batch, whose entry names the publish that made it.
    entry = redis.cli("XRANGE", a.bp.keys.room_log("dev"), "-", "+").split("\n")
    assert entry[-2:] == ["b", f"a\t{a.bp.incarnation}\t{seq}\t1"]
    copy = int(entry[0].removesuffix("-0"))
    return copy, await a.bp.publish("dev", [("Mina", ["after"])])


async def _delivered_once_each(a, b, c, first: int, copy: int, after: int) -> None:
    assert copy > first and after == copy + 1
    for node in (a, b):  # they delivered the first copy: not the second
        await node.rec.wait_for(lambda node=node: node.rec.texts("dev") == ["said once", "after"])
        assert node.rec.ids("dev") == [first, after]
        assert node.bp.statistics().copies_discarded == 1
        assert node.bp.last_id("dev") == after
    # c's members never had it: for them the copy is the line.
    await c.rec.wait_for(lambda: c.rec.texts("dev") == ["said once", "after"])
    assert c.rec.ids("dev") == [copy, after]
    assert c.bp.statistics().copies_discarded == 0


async def _since_leaves_the_copy_out_everywhere(
    start_node, redis, c, first: int, copy: int
) -> None:
    """A client that had the first copy may resume on a node that never did: c, whose
    members had only the copy, or d, with no member in the room.  Both hear it from
    Redis, where the nodes that discarded the copy recorded it."""

    async def recorded() -> bool:
        return f"c:{copy}" in redis.cli("HKEYS", c.bp.keys.room_meta("dev")).split()

    await eventually(recorded)
    d = await start_node("d")
    for node in (c, d):
        messages, complete = await node.bp.since("dev", first, 10)
        assert [m.text for m in messages] == ["after"] and not complete
        # One who had not got it yet is given it, and one who had the copy is not.
        messages, _ = await node.bp.since("dev", first - 1, 10)
        assert [m.text for m in messages] == ["said once", "after"]
        messages, complete = await node.bp.since("dev", copy, 10)
        assert [m.text for m in messages] == ["after"] and complete


async def test_a_publish_sent_again_after_redis_came_back_empty_is_delivered_once(
    start_node, redis
) -> None:
    """Redis ran a publish whose answer was lost, then lost everything: sent again,
    it is a new batch of a new stream, made by the same publish.  The nodes that
    delivered the first copy take the second's id without delivering it; a client
    resuming from the first copy's id is not given it again."""
    a, b, c, first, seq = await _published_then_redis_emptied(start_node, redis)
    copy, after = await _sent_again_then_after(a, first, seq, redis)
    await _delivered_once_each(a, b, c, first, copy, after)
    messages, complete = await b.bp.since("dev", first, 10)
    assert [m.text for m in messages] == ["after"] and not complete
    # One who had not got it yet is given it; the stored history holds the copy.
    messages, _ = await b.bp.since("dev", first - 1, 10)
    assert [m.text for m in messages] == ["said once", "after"]
    assert [m.text for m in await b.bp.recent("dev", 10)] == ["said once", "after"]
    await _since_leaves_the_copy_out_everywhere(start_node, redis, c, first, copy)
    # A record for another stream (one Redis lost since) is not kept.
    room = a.bp._rooms["dev"]
    await a.bp._record_copy(room, room.feed.epoch + 1, after + 1, first, 1)
    assert f"c:{after + 1}" not in redis.cli("HKEYS", a.bp.keys.room_meta("dev")).split()


async def test_a_room_remembers_each_nodes_last_publish_only(start_node) -> None:
    """A copy is of a node's last publish to the room (the one in doubt when Redis
    went), so that is all a room keeps per node: however many batches, one entry;
    and an older batch, as a fill brings it after a newer one came live, does not
    take its place."""
    a, b = await start_node("a"), await start_node("b")
    for node in (a, b):
        await node.bp.open_room("dev")
    for i in range(5):
        await a.bp.publish("dev", [("Mina", [f"a{i}"])])
        await b.bp.publish("dev", [("Bob", [f"b{i}"])])
    await a.rec.wait_for(lambda: len(a.rec.ids("dev")) == 10)
    room = a.bp._rooms["dev"]
    assert sorted(room.made) == ["a", "b"]
    made, epoch, first = room.made["b"]
    assert (made[0], made[1]) == ("b", b.bp.incarnation) and first == a.rec.ids("dev")[-1]
    older = (made[0], made[1], made[2] - 1)
    assert not a.bp._copy_of(room, older, epoch, first - 2, 1)
    assert room.made["b"] == (made, epoch, first)


async def test_a_copy_read_from_the_stream_is_not_delivered_again(start_node, redis) -> None:
    """The copy arrives while no node is subscribed: each catches up from the stream,
    where the copy's first entry names the publish that made it."""
    a, b, c, first, seq = await _published_then_redis_emptied(start_node, redis)
    sessions = [node.bp.statistics().sessions for node in (a, b, c)]
    redis.cli("CLIENT", "KILL", "TYPE", "pubsub")
    copy, after = await _sent_again_then_after(a, first, seq, redis)
    await _delivered_once_each(a, b, c, first, copy, after)
    for node, before in zip((a, b, c), sessions, strict=True):
        assert node.bp.statistics().sessions > before
        assert node.bp.statistics().gaps_filled >= 1
    await _since_leaves_the_copy_out_everywhere(start_node, redis, c, first, copy)


async def test_a_moderation_action_waits_for_redis_then_reaches_the_others(
    start_node, redis, nursery
) -> None:
    cutter = PublishCutter(redis)
    port = await nursery.start(cutter.serve)
    a = await start_node("a", url=f"redis://127.0.0.1:{port}/0", presence_ttl=4)
    b = await start_node("b")
    cutter.cut_everything()  # a alone loses Redis
    with trio.fail_after(5):
        await a.bp.wait_available(False)
    topic = ev.Topic("dev", "news at noon", "Mina", 1.5)
    a.bp.announce_moderation(topic)
    await trio.testing.wait_all_tasks_blocked()
    # Redis is away: it is held (the code before published it at once, and lost it).
    assert [p for _, p in a.bp._pending_notices if p.startswith("T\ta\tdev")]
    cutter.release()
    await b.rec.wait_for(lambda: b.rec.moderated == [topic])
    assert a.rec.moderated == []  # (its own are not echoed back)


async def test_publishes_pipelined_while_redis_is_down_are_all_refused(start_node, redis) -> None:
    a = await start_node("a")
    rooms = [f"r{i}" for i in range(6)]
    for room in rooms:
        await a.bp.open_room(room)
    redis.stop(save=False)
    refused: list[str] = []

    async def one(room: str) -> None:
        with pytest.raises(ClusterUnavailable, match="cluster unavailable"):
            await a.bp.publish(room, [("Mina", ["during"])])
        refused.append(room)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for room in rooms:
                nursery.start_soon(one, room)
    assert sorted(refused) == rooms
    assert all(a.rec.texts(room) == [] for room in rooms)


async def test_a_publish_in_flight_when_the_node_stops_is_refused(start_node, redis) -> None:
    """Its room is told at once, and so is any later publish: nothing waits forever."""
    a = await start_node("a")
    await a.bp.open_room("dev")
    refused: list[str] = []

    async def publish() -> None:
        with pytest.raises(ClusterUnavailable) as info:
            await a.bp.publish("dev", [("Mina", ["late"])])
        refused.append(str(info.value))

    redis.cli("CLIENT", "PAUSE", "3000", "WRITE")  # the script call stays in flight
    try:
        with trio.fail_after(2):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish)
                await trio.testing.wait_all_tasks_blocked()  # the publisher waits for Redis
                nursery.start_soon(publish)  # queued behind it
                await trio.testing.wait_all_tasks_blocked()
                a.scope.cancel()
            with pytest.raises(ClusterUnavailable, match="leaving the cluster"):
                await a.bp.publish("dev", [("Mina", ["after"])])
    finally:
        redis.cli("CLIENT", "UNPAUSE")
    leaving = f"cluster unavailable: Redis at {a.bp.config.url}: the node is leaving the cluster"
    assert refused == [leaving, leaving]
    assert a.rec.texts("dev") == []


async def test_ids_start_above_the_clock_and_only_increase(start_node) -> None:
    a = await start_node("a")
    before = int(time.time() * 1_000_000)
    await a.bp.open_room("dev")
    first = await a.bp.publish("dev", [("Mina", ["one"])])
    second = await a.bp.publish("dev", [("Mina", ["two", "three"])])
    assert first > before
    assert second == first + 1
    await a.rec.wait_for(lambda: len(a.rec.ids("dev")) == 3)
    assert a.rec.ids("dev") == [first, first + 1, first + 2]


async def test_a_node_joining_late_gets_only_what_follows(start_node) -> None:
    a, b = await start_node("a"), await start_node("b")
    await a.bp.open_room("dev")
    await a.bp.publish("dev", [("Mina", ["before"])])
    last = await b.bp.open_room("dev")
    first = await a.bp.publish("dev", [("Mina", ["after"])])
    assert first == last + 1
    await b.rec.wait_for(lambda: b.rec.texts("dev") == ["after"])


async def test_the_name_race_has_one_winner(start_node) -> None:
    a, b = await start_node("a"), await start_node("b")

    async def claim(results: dict[str, bool], node, spelling: str) -> None:
        results[node.bp.node] = await node.bp.claim_name(spelling)

    for attempt in range(20):
        results: dict[str, bool] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(claim, results, a, f"Mina{attempt}")
            nursery.start_soon(claim, results, b, f"MINA{attempt}")
        assert sorted(results.values()) == [False, True]
    assert await a.bp.claim_name("Bob")
    a.bp.release_name("Bob")
    await eventually(lambda: b.bp.claim_name("bob"))  # released by its owner: free again


async def test_only_the_owner_releases_a_name(start_node, redis) -> None:
    a, b = await start_node("a"), await start_node("b")
    assert await a.bp.claim_name("Mina")
    b.bp.release_name("Mina")  # not b's: nothing happens (b holds no lease to release)
    assert redis.cli("GET", "machat:name:mina").startswith("a\t")
    assert not await b.bp.claim_name("mina")


async def test_roster_private_group_and_all_across_nodes(start_node) -> None:
    a, b = await start_node("a"), await start_node("b")
    assert await a.bp.claim_name("Mina")
    assert await b.bp.claim_name("Bob")
    assert await b.bp.claim_name("Eve")
    a.bp.set_room("Mina", "dev")
    b.bp.set_room("Bob", "dev")
    b.bp.set_room("Eve", "ops")
    with trio.fail_after(5):
        for node in (a, b):
            await node.bp.flush_presence()
        roster = await a.bp.roster()
    assert roster.nodes == ("a", "b")
    assert sorted(roster.users) == [("Bob", "dev", "b"), ("Eve", "ops", "b"), ("Mina", "dev", "a")]
    assert roster.rooms() == {"dev": ("dev", 2), "ops": ("ops", 1)}

    found = await a.bp.route("Mina", ["bob", "Ghost", "EVE"], "hi")
    assert found == ["Bob", None, "Eve"]
    await b.rec.wait_for(lambda: len(b.rec.direct_events) == 1)
    event, names = b.rec.direct_events[0]
    assert isinstance(event, ev.Private) and (event.sender, event.text) == ("Mina", "hi")
    assert sorted(names) == ["Bob", "Eve"]

    await a.bp.route("Mina", ["Bob"], "team\ttab", group="#team")
    await b.rec.wait_for(lambda: len(b.rec.direct_events) == 2)
    event, names = b.rec.direct_events[1]
    assert isinstance(event, ev.GroupMessage)
    assert (event.group, event.sender, event.text, names) == ("#team", "Mina", "team\ttab", ["Bob"])

    await a.bp.broadcast(ev.Broadcast("Mina", "to all", 1.0))
    await b.rec.wait_for(lambda: len(b.rec.broadcasts) == 1)
    assert b.rec.broadcasts[0].text == "to all"
    assert a.rec.broadcasts == []  # a delivers its own


async def test_room_notices_reach_other_nodes_only(start_node) -> None:
    a, b = await start_node("a"), await start_node("b")
    await a.bp.open_room("dev")
    await b.bp.open_room("dev")
    a.bp.notice("dev", ev.Join("dev", "Mina"))
    a.bp.notice("dev", ev.Nick("Mina", "Mia"))
    a.bp.notice("dev", ev.Leave("dev", "Mia", "quit"))
    await b.rec.wait_for(lambda: len(b.rec.notices) == 3)
    assert b.rec.notices == [
        ("dev", ev.Join("dev", "Mina")),
        ("dev", ev.Nick("Mina", "Mia")),
        ("dev", ev.Leave("dev", "Mia", "quit")),
    ]
    assert a.rec.notices == []


async def test_a_node_that_leaves_takes_its_users_along(start_node) -> None:
    a, b = await start_node("a"), await start_node("b")
    assert await b.bp.claim_name("Bob")
    b.bp.set_room("Bob", "dev")
    await eventually(lambda: users_online(a, 1))
    b.bp.stop()  # an orderly exit retires the node at once
    await a.rec.wait_for(lambda: a.rec.gone != [], within=2.0)
    assert a.rec.gone == [("b", (("Bob", "dev"),))]
    assert (await a.bp.roster()).nodes == ("a",)
    assert await a.bp.claim_name("bob")


async def test_a_node_that_stops_beating_is_reaped_within_the_ttl(start_node, redis) -> None:
    ttl = 2.0
    a, b = await start_node("a", presence_ttl=ttl), await start_node("b", presence_ttl=ttl)
    assert await b.bp.claim_name("Bob")
    b.bp.set_room("Bob", "dev")
    assert await b.bp.define_group("Bob", "#Crew", ["Bob", "Eve"]) is None
    assert await a.bp.claim_name("Mina")
    assert await a.bp.define_group("Mina", "#Team", ["Bob"]) is None
    await eventually(lambda: users_online(a, 2))
    died = trio.current_time()
    b.scope.cancel()  # no goodbye: as good as dead
    await a.rec.wait_for(lambda: a.rec.gone != [], within=ttl)
    assert trio.current_time() - died <= ttl
    assert a.rec.gone == [("b", (("Bob", "dev"),))]
    # Its groups went with it, with no one asking for them; the others' stay.
    assert redis.cli("HKEYS", "machat:groups") == "#team"
    assert await a.bp.claim_name("bob")


async def test_a_silent_node_is_reaped_within_the_ttl(start_node, redis) -> None:
    a = await start_node("a", presence_ttl=2.0)
    # A node that stopped beating: its liveness is in the past, its names held.
    redis.cli("ZADD", "machat:nodes", "1", "ghost")
    redis.cli("HSET", "machat:node:{ghost}:users", "bob", "Bob\tdev")
    redis.cli("SET", "machat:name:bob", "ghost\tx\tBob\t1", "PX", "60000")
    await a.rec.wait_for(lambda: a.rec.gone != [], within=2.0)
    assert a.rec.gone == [("ghost", (("Bob", "dev"),))]
    assert redis.cli("EXISTS", "machat:name:bob") == "0"


async def test_a_node_name_in_use_is_refused(start_node) -> None:
    await start_node("a")
    with pytest.raises(ClusterUnavailable, match="node name a is in use"):
        await start_node("a")


async def test_a_node_of_another_protocol_is_kept_out(start_node, redis, monkeypatch) -> None:
    """Nodes that read each other's payloads differently would lose messages without
    a word: a node whose cluster protocol differs from a live node's does not join,
    and writes nothing."""
    await start_node("a")
    assert redis.cli("HGET", "machat:protocols", "a") == str(wire.PROTOCOL)
    monkeypatch.setattr(wire, "PROTOCOL", wire.PROTOCOL + 1)
    speaks = f"node a of this cluster speaks cluster protocol {wire.PROTOCOL - 1}, this node"
    with pytest.raises(ClusterUnavailable, match=f"{speaks} {wire.PROTOCOL}: .* upgrade every"):
        await start_node("b")
    assert redis.cli("ZSCORE", "machat:nodes", "b") == ""
    assert redis.cli("HGET", "machat:protocols", "b") == ""


async def test_a_node_older_than_protocols_keeps_a_new_one_out_until_it_is_gone(
    start_node, redis
) -> None:
    """A live node with no protocol written is older than protocols; once it is gone
    (reaped, its record with it), a new node joins."""
    far = str(int(time.time() * 1000) + 600_000)
    redis.cli("ZADD", "machat:nodes", far, "ghost")
    with pytest.raises(ClusterUnavailable, match="node ghost .* speaks an older cluster protocol"):
        await start_node("a")
    redis.cli("ZADD", "machat:nodes", "1", "ghost")  # (it stopped beating long ago)
    redis.cli("HSET", "machat:protocols", "ghost", "1")
    await start_node("a")  # (its first beat reaps the ghost)
    assert redis.cli("ZSCORE", "machat:nodes", "ghost") == ""
    assert redis.cli("HGET", "machat:protocols", "ghost") == ""
    assert redis.cli("HGET", "machat:protocols", "a") == str(wire.PROTOCOL)


async def test_unreachable_redis_at_start_fails_fast(start_node, tmp_path) -> None:
    url = f"unix://{tmp_path}/nothing.sock"
    started = trio.current_time()
    with pytest.raises(ClusterUnavailable, match=f"cannot reach Redis at {url}"):
        await start_node("a", url=url)
    assert trio.current_time() - started < 5


async def test_history_recent_and_since(start_node) -> None:
    a = await start_node("a", stream_length=50)
    await a.bp.open_room("dev")
    first = await a.bp.publish("dev", [("Mina", [f"m{i}" for i in range(10)])])
    recent = await a.bp.recent("Dev", 3)
    assert [m.text for m in recent] == ["m7", "m8", "m9"]
    assert all(m.room == "Dev" for m in recent)
    messages, complete = await a.bp.since("dev", first + 6, 100)
    assert [m.id for m in messages] == [first + 7, first + 8, first + 9] and complete
    messages, complete = await a.bp.since("dev", first + 9, 100)
    assert messages == () and complete
    messages, complete = await a.bp.since("dev", 5, 100)  # an id from before this stream
    assert len(messages) == 10 and not complete
    # Trimmed beyond the stream's length: older ones are no longer kept.
    for _ in range(10):
        await a.bp.publish("dev", [("Mina", ["x"] * 20)])
    messages, complete = await a.bp.since("dev", first, 1000)
    assert not complete and messages[-1].id == first + 209


async def test_a_dropped_subscription_catches_up_from_the_stream(start_node, redis) -> None:
    a, b = await start_node("a"), await start_node("b")
    await a.bp.open_room("dev")
    await b.bp.open_room("dev")
    sent = 0

    async def keep_sending() -> None:
        nonlocal sent
        for i in range(60):
            await a.bp.publish("dev", [("Mina", [f"{i}.{j}" for j in range(5)])])
            sent += 5
            await trio.sleep(0.005)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep_sending)
        for _ in range(3):
            await trio.sleep(0.05)
            redis.cli("CLIENT", "KILL", "TYPE", "pubsub")
    await b.rec.wait_for(lambda: len(b.rec.ids("dev")) >= sent)
    await a.rec.wait_for(lambda: len(a.rec.ids("dev")) >= sent)
    for node in (a, b):
        ids = node.rec.ids("dev")
        assert ids == list(range(ids[0], ids[0] + sent))  # no gap, no duplicate
    assert b.bp.statistics().sessions >= 2


async def test_redis_restart_without_data_starts_a_new_epoch(start_node, redis) -> None:
    a, b = await start_node("a"), await start_node("b")
    for node in (a, b):
        await node.bp.open_room("dev")
    assert await a.bp.claim_name("Mina")
    a.bp.set_room("Mina", "dev")
    old = await a.bp.publish("dev", [("Mina", ["before"])])
    await b.rec.wait_for(lambda: b.rec.ids("dev") == [old])
    redis.stop(save=False)
    with pytest.raises(ClusterUnavailable, match="cluster unavailable"):
        await a.bp.publish("dev", [("Mina", ["during"])])
    redis.start()
    with trio.fail_after(5):
        while True:
            try:
                new = await a.bp.publish("dev", [("Mina", ["after"])], floor=old)
                break
            except ClusterUnavailable:
                await trio.sleep(0.05)
    assert new > old
    await b.rec.wait_for(lambda: b.rec.texts("dev") == ["before", "after"])
    assert b.bp.statistics().stream_restarts == 1
    # Presence came back too: the name is held again, by a.
    await eventually(lambda: held_by(redis, "mina", "a"))
    assert not await b.bp.claim_name("mina")


async def test_redis_restart_with_data_continues_the_stream(start_node, redis) -> None:
    a, b = await start_node("a"), await start_node("b")
    for node in (a, b):
        await node.bp.open_room("dev")
    old = await a.bp.publish("dev", [("Mina", ["before"])])
    redis.stop(save=True)
    redis.start()
    with trio.fail_after(5):
        while True:
            try:
                new = await b.bp.publish("dev", [("Bob", ["after"])])
                break
            except ClusterUnavailable:
                await trio.sleep(0.05)
    assert new == old + 1
    for node in (a, b):
        await node.rec.wait_for(lambda node=node: node.rec.texts("dev") == ["before", "after"])
    assert a.bp.statistics().stream_restarts == 0


async def test_a_group_is_known_to_every_node_while_its_owner_holds_its_name(
    start_node, redis
) -> None:
    a, b = await start_node("a"), await start_node("b")
    assert await a.bp.claim_name("Mina") and await b.bp.claim_name("Bob")
    assert await a.bp.define_group("Mina", "#Team", ["Bob", "Eve"]) is None
    assert await b.bp.find_group("#TEAM") == Group("#Team", "Mina", ("Bob", "Eve"))
    # Someone else cannot take it; its owner can change it.
    assert await b.bp.define_group("Bob", "#team", ["Bob"]) == Group(
        "#Team", "Mina", ("Bob", "Eve")
    )
    assert await a.bp.define_group("mina", "#team", ["Eve"]) is None
    assert await b.bp.find_group("#team") == Group("#team", "Mina", ("Eve",))
    assert await b.bp.find_group("#nobody") is None
    # Once the owner's name is released the group is gone, and may be someone else's.
    a.bp.release_name("Mina")
    await a.bp.flush_presence()  # the lease and the group go in one call
    assert redis.cli("HEXISTS", "machat:groups", "#team") == "0"
    assert await b.bp.find_group("#team") is None
    assert await b.bp.define_group("Bob", "#team", ["Bob"]) is None
    assert await a.bp.find_group("#team") == Group("#team", "Bob", ("Bob",))
