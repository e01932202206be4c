"""Nodes as real subprocesses sharing one real redis-server: the issue's failure cases.

Rules: nodes are ``python -m machat.cmd.chatserver --redis ...`` on 127.0.0.1 port 0;
Redis is a real process on a Unix socket (or a loopback port); every wait is bounded
by ``trio.fail_after``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import trio

from tests.cluster.support import (
    ROOT,
    PublishCutter,
    RedisProcess,
    TlsRedis,
    free_port,
    node_command,
)
from tests.helpers import LineClient
from tests.web.conftest import WsClient

pytestmark = pytest.mark.cluster


async def messages(client: LineClient, count: int) -> list[dict]:
    """The next ``count`` room messages (JSON), skipping everything else."""
    out = []
    while len(out) < count:
        obj = await client.json()
        if obj["type"] == "message":
            out.append(obj)
    return out


async def json_member(node, name: str, room: str = "dev", **extra: object) -> LineClient:
    client = await node.connect(name, room, format="json", **extra)
    while await client.json() != {"type": "join", "room": room, "name": name}:
        pass
    return client


async def test_three_nodes_give_concurrent_senders_one_order(start_process) -> None:
    nodes = [await start_process(n) for n in ("a", "b", "c")]
    with trio.fail_after(20):
        clients = [await json_member(node, f"U{i}") for i, node in enumerate(nodes)]
        async with trio.open_nursery() as nursery:
            for i, client in enumerate(clients):
                nursery.start_soon(client.send, *(f"{i}:{k}" for k in range(30)))
        seen = [await messages(client, 90) for client in clients]
    orders = [[(m["id"], m["from"], m["text"]) for m in s] for s in seen]
    assert orders[0] == orders[1] == orders[2]
    ids = [m[0] for m in orders[0]]
    assert ids == list(range(ids[0], ids[0] + 90))
    for i in range(3):  # each sender's own lines in the order sent
        assert [t for _, f, t in orders[0] if f == f"U{i}"] == [f"{i}:{k}" for k in range(30)]


async def test_two_nodes_racing_for_a_name_one_wins(start_process) -> None:
    a, b = await start_process("a"), await start_process("b")
    with trio.fail_after(20):
        for attempt in range(8):
            replies: list[str] = []
            both = trio.Event()

            # The winner stays until both have their answer: a winner that left at
            # once would free the name, and the other could then take it fairly.
            async def hello(node, name: str, replies: list[str] = replies, both=both) -> None:
                client = await node.connect(name)
                replies.append(await client.line())
                if len(replies) == 2:
                    both.set()
                await both.wait()
                await client.aclose()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(hello, a, f"Racer{attempt}")
                nursery.start_soon(hello, b, f"racer{attempt}")
            welcomes = [r for r in replies if r.startswith("* Welcome")]
            refusals = [r for r in replies if r.startswith("! ERROR 101 ")]
            assert len(welcomes) == 1 and len(refusals) == 1, replies
        # /nick races too.
        mina, bob = await a.join("Mina"), await b.join("Bob")
        await mina.send("/nick Winner")
        await bob.send("/nick WINNER")
        outcomes = []
        for client, name in ((mina, "Mina"), (bob, "Bob")):
            while not (line := await client.line()).startswith(
                (f"* {name} is now known as", "! ERROR 101")
            ):
                pass
            outcomes.append(line.startswith("*"))
        assert sorted(outcomes) == [False, True]


async def test_private_group_and_all_across_nodes(start_process) -> None:
    a, b = await start_process("a"), await start_process("b")
    with trio.fail_after(20):
        mina = await a.join("Mina")
        bob, eve = await b.join("Bob"), await b.join("Eve", "ops")
        await mina.send("/msg bob,Ghost psst")
        assert await bob.expect_prefix("[private]") == "[private] Mina:psst"
        assert await mina.expect_prefix("* sent") == "* sent to Bob"
        assert await mina.expect_prefix("! ERROR") == (
            "! ERROR 102 unable to send: no such user or group: Ghost"
        )
        await mina.send("@Eve: hi there")
        assert await eve.expect_prefix("[private]") == "[private] Mina:hi there"
        await mina.send("/group #team Bob,Eve", "/msg #team standup")
        for client in (bob, eve, mina):
            assert await client.expect_prefix("[#team]") == "[#team] Mina:standup"
        await bob.send("@ALL: lunch")
        for client in (mina, bob, eve):
            assert await client.expect_prefix("[all]") == "[all] Bob:lunch"


async def test_notices_and_listings_cover_the_cluster(start_process) -> None:
    a, b = await start_process("a"), await start_process("b")
    with trio.fail_after(20):
        mina = await a.join("Mina")
        bob = await b.join("Bob")
        assert await mina.expect_prefix("* Bob") == "* Bob joined dev"
        await bob.send("/nick Bobby")
        assert await mina.expect_prefix("* Bob") == "* Bob is now known as Bobby"
        eve = await b.join("Eve", "ops")
        await mina.send("/list", "/who", "/who ops", "/rooms", "/stats")
        assert await mina.expect_prefix("* users") == "* users: Bobby, Eve, Mina"
        assert await mina.expect_prefix("* dev") == "* dev: Bobby, Mina"
        assert await mina.expect_prefix("* ops") == "* ops: Eve"
        assert await mina.expect_prefix("* rooms") == "* rooms: dev (2), ops (1)"
        stats = await mina.expect_prefix("* stats")
        assert "node a; cluster: 2 nodes alive, 3 online, 2 rooms" in stats
        await eve.send("/join dev")
        assert await mina.expect_prefix("* Eve") == "* Eve joined dev"
        await bob.send("/quit gone fishing")
        assert await mina.expect_prefix("* Bobby") == "* Bobby left dev (gone fishing)"


async def test_a_killed_node_vanishes_within_the_ttl(start_process) -> None:
    ttl = 2.0
    a = await start_process("a", "--presence-ttl", str(ttl))
    b = await start_process("b", "--presence-ttl", str(ttl))
    with trio.fail_after(20):
        mina = await a.join("Mina")
        await b.join("Bob")
        await mina.expect("* Bob joined dev")
        killed = trio.current_time()
        b.process.kill()  # SIGKILL
        assert await mina.expect_prefix("* Bob") == "* Bob left dev (connection lost)"
        assert trio.current_time() - killed <= ttl
        await mina.send("/list", "/who")
        assert await mina.expect_prefix("* users") == "* users: Mina"
        assert await mina.expect_prefix("* dev") == "* dev: Mina"
        await a.join("Bob")  # the name is free again


async def probe(sender: LineClient, text: str) -> bool:
    """Say ``text``; True if the room echoed it, False if it was refused with 113."""
    await sender.send(text)
    while True:
        obj = await sender.json()
        if obj["type"] == "message" and obj["text"] == text:
            return True
        if obj["type"] == "error":
            assert obj["code"] == 113 and obj["message"].startswith("cluster unavailable: ")
            return False


@pytest.mark.parametrize("keep_data", [True, False], ids=["with-data", "empty"])
async def test_a_redis_restart_loses_nothing_accepted(
    start_process, redis: RedisProcess, keep_data: bool
) -> None:
    a, b = await start_process("a"), await start_process("b")
    with trio.fail_after(30):
        mina = await json_member(a, "Mina")
        bob = await json_member(b, "Bob")
        assert await probe(mina, "before")
        redis.stop(save=keep_data)
        refused_at = trio.current_time()
        assert not await probe(mina, "during")  # refused at once
        assert trio.current_time() - refused_at < 1.0
        newcomer = await a.connect("Newcomer")  # no name can be claimed: refused
        assert (await newcomer.line()).startswith("! ERROR 113 cluster unavailable: ")
        await mina.send("/list")
        while (obj := await mina.json())["type"] != "error":
            pass
        assert obj["code"] == 113
        await trio.sleep(0.5)  # an outage, not a blip
        redis.start()
        back = trio.current_time()
        accepted, k = [], 0
        while not accepted or trio.current_time() - back < 1.0:
            k += 1
            if await probe(mina, f"after{k}"):
                accepted.append(f"after{k}")
            else:
                await trio.sleep(0.1)
        assert trio.current_time() - back < 5.0 + 1.0
        seen = await messages(bob, 1 + len(accepted))
        assert [m["text"] for m in seen] == ["before", *accepted]  # no gap, no duplicate
        ids = [m["id"] for m in seen]
        assert ids == sorted(set(ids))
        if keep_data:
            assert ids[1] == ids[0] + 1
        # Presence came back: b lists Mina, and her name is still hers.
        await bob.send("/list")
        while (obj := await bob.json())["type"] != "users":
            pass
        assert obj["names"] == ["Bob", "Mina"]
        refused = await b.connect("mina")
        assert (await refused.line()).startswith("! ERROR 101")


async def _mina_behind_a_cutter(start_process, redis: RedisProcess, nursery: trio.Nursery):
    """Mina on node a, behind a `PublishCutter`, and Bob on node b, in dev; Mina's
    first line, "before", has gone round."""
    cutter = PublishCutter(redis)
    port = await nursery.start(cutter.serve)
    a = await start_process("a", "--presence-ttl", "2", url=f"redis://127.0.0.1:{port}/0")
    b = await start_process("b")
    mina = await json_member(a, "Mina")
    bob = await json_member(b, "Bob")
    assert await probe(mina, "before")
    return cutter, a, mina, bob


def _logged(nursery: trio.Nursery, node, text: str) -> trio.Event:
    """An event set once ``node`` logs a line holding ``text``."""
    seen = trio.Event()

    async def watch() -> None:
        await node.logs(text)
        seen.set()

    nursery.start_soon(watch)
    return seen


async def _next(client: LineClient, kind: str, never: tuple[str, ...]) -> dict:
    """The next JSON object of type ``kind``; none of the types ``never`` before it."""
    while (obj := await client.json())["type"] != kind:
        assert obj["type"] not in never, obj
    return obj


async def _each_once(mina: LineClient, bob: LineClient, middle: str, said: bool = False) -> None:
    """Mina's "after" goes round (``said``: it has), and Bob saw her three lines once
    each, in order."""
    if not said:
        assert await probe(mina, "after")
    seen = await messages(bob, 3)
    assert [m["text"] for m in seen] == ["before", middle, "after"]
    assert [m["id"] for m in seen] == [seen[0]["id"] + i for i in range(3)]


async def test_a_line_lost_on_the_way_is_not_refused_and_shows_once(
    start_process, redis: RedisProcess, nursery: trio.Nursery
) -> None:
    with trio.fail_after(30):
        cutter, a, mina, bob = await _mina_behind_a_cutter(start_process, redis, nursery)
        cutter.cut_request()
        resolved = _logged(nursery, a, "cluster: a publish in doubt to dev ")
        await mina.send("in doubt")
        obj = await _next(mina, "info", never=("error",))  # never refused
        assert obj["text"] == (
            "cluster unavailable: your line was not confirmed; it reaches the room once "
            "the cluster answers, and only once"
        )
        cutter.release()
        await resolved.wait()  # sent again, so node a reaches Redis: "after" is taken
        await _each_once(mina, bob, "in doubt")


async def test_a_line_whose_answer_is_lost_shows_once_with_no_note(
    start_process, redis: RedisProcess, nursery: trio.Nursery
) -> None:
    """Redis ran it and the answer was lost: node a's own subscription brought the
    batch back, so the line is published, and its sender hears nothing of doubt."""
    with trio.fail_after(30):
        cutter, a, mina, bob = await _mina_behind_a_cutter(start_process, redis, nursery)
        cutter.cut_answer(hold=True)
        settled = _logged(nursery, a, "cluster: the answer to a publish to dev was lost")
        await mina.send("ran")
        await cutter.cut_done.wait()  # (the answer was cut, the connection held)
        obj = await _next(mina, "message", never=("error", "info"))  # a's subscription
        assert obj["text"] == "ran"
        cutter.let_go()  # now the publish fails, after its batch came back
        await settled.wait()
        cutter.release()
        await mina.send("after")
        obj = await mina.json()  # no note of doubt came in between
        assert (obj["type"], obj["text"]) == ("message", "after")
        await _each_once(mina, bob, "ran", said=True)


async def test_a_dropped_subscription_catches_up(start_process, redis: RedisProcess) -> None:
    a, b = await start_process("a"), await start_process("b")
    with trio.fail_after(30):
        mina = await json_member(a, "Mina")
        bob = await json_member(b, "Bob")
        count = 300

        async def send() -> None:
            for k in range(0, count, 10):
                await mina.send(*(f"m{i}" for i in range(k, k + 10)))
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            for _ in range(4):
                await trio.sleep(0.07)
                redis.cli("CLIENT", "KILL", "TYPE", "pubsub")
        seen = await messages(bob, count)
        assert [m["text"] for m in seen] == [f"m{i}" for i in range(count)]
        ids = [m["id"] for m in seen]
        assert ids == list(range(ids[0], ids[0] + count))


async def test_since_resumes_on_another_node(start_process) -> None:
    a, b = await start_process("a"), await start_process("b")
    with trio.fail_after(20):
        mina = await json_member(a, "Mina")
        bob = await json_member(b, "Bob")
        await bob.send("one", "two")
        last = (await messages(mina, 2))[-1]["id"]
        await mina.aclose()
        # The leave notice and the name's release go to Redis in one script call: once
        # Bob (on the other node) hears Mina left, her name is free there.
        while (obj := await bob.json()).get("type") != "leave" or obj.get("name") != "Mina":
            pass
        await bob.send("three", "four")
        assert [m["text"] for m in await messages(bob, 2)] == ["three", "four"]
        again = await b.connect("Mina", "dev", format="json", since=last)
        while (obj := await again.json())["type"] != "history":
            pass
        assert [m["text"] for m in obj["messages"]] == ["three", "four"]
        assert obj.get("complete", True) is True
        await again.send("/history 3")
        while (obj := await again.json())["type"] != "history":
            pass
        assert [m["text"] for m in obj["messages"]] == ["two", "three", "four"]


@pytest.mark.parametrize("scheme", ["unix", "tcp"])
async def test_a_dead_redis_at_start_is_one_clear_line(tmp_path, scheme: str) -> None:
    url = (
        f"unix://{tmp_path}/none.sock" if scheme == "unix" else f"redis://127.0.0.1:{free_port()}/0"
    )
    started = trio.current_time()
    result = await trio.run_process(
        node_command(url, "a"), capture_stdout=True, capture_stderr=True, check=False, cwd=ROOT
    )
    assert trio.current_time() - started < 5.0
    assert result.returncode != 0
    errors = [line for line in result.stderr.decode().splitlines() if " ERROR " in line]
    assert len(errors) == 1 and url in errors[0], result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


async def test_a_node_of_another_version_is_refused_with_one_clear_line(redis) -> None:
    """A live node older than cluster protocols (it wrote none): this one exits at
    once, with one line that says which node and what to do."""
    redis.cli("ZADD", "machat:nodes", str(10**14), "old-1")  # (alive till the year 5138)
    with trio.fail_after(10):
        result = await trio.run_process(
            node_command(redis.url, "a"), capture_stderr=True, check=False, cwd=ROOT
        )
    log = result.stderr.decode()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert result.returncode != 0 and len(errors) == 1, log
    assert "node old-1 of this cluster speaks an older cluster protocol" in errors[0]
    assert "upgrade every node together" in errors[0] and "Traceback" not in log


@pytest.mark.parametrize(
    "args", [["--redis", "http://x"], ["--node", "a"], ["--redis", "unix:///x", "--node", "-a"]]
)
def test_bad_cluster_flags_are_refused(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "machat.cmd.chatserver", *args],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=ROOT,
    )
    assert result.returncode == 2 and "error:" in result.stderr


class Proxy:
    """A TCP relay to Redis that the test can cut, as a network partition would."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.scope = trio.CancelScope()

    async def run(self, task_status: trio.TaskStatus[None]) -> None:
        with self.scope:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            await trio.serve_listeners(self._relay, listeners, task_status=task_status)

    async def _relay(self, client: trio.SocketStream) -> None:
        async with client, await trio.open_tcp_stream("127.0.0.1", self.target_port) as server:

            async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
                try:
                    while data := await source.receive_some(65536):
                        await sink.send_all(data)
                except trio.BrokenResourceError:
                    pass

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, client, server)
                nursery.start_soon(pump, server, client)

    def cut(self) -> None:
        self.scope.cancel()


async def test_a_node_cut_off_longer_than_the_ttl_gives_up_its_users(
    start_process, nursery: trio.Nursery, tmp_path
) -> None:
    redis = RedisProcess(tmp_path / "tcp-redis", tcp=True)
    redis.start()
    try:
        proxy = Proxy(redis.port)
        await nursery.start(proxy.run)
        ttl = 3.0
        a = await start_process("a", "--presence-ttl", str(ttl), url=redis.url)
        b = await start_process(
            "b", "--presence-ttl", str(ttl), url=f"redis://127.0.0.1:{proxy.port}/0"
        )
        with trio.fail_after(20):
            mina = await a.join("Mina")
            bob = await b.join("Bob")
            await mina.expect("* Bob joined dev")
            cut = trio.current_time()
            proxy.cut()
            lines = await bob.until_closed()
            assert trio.current_time() - cut <= ttl
            assert (
                [line for line in lines if line.startswith("! ERROR")]
                == [line for line in lines if line.startswith("! ERROR 113 cluster unavailable: ")]
                != []
            )
            assert await mina.expect_prefix("* Bob") == "* Bob left dev (connection lost)"
            assert trio.current_time() - cut <= ttl + 0.5
            await a.join("Bob")  # nobody holds the name twice
            assert b.process.returncode is None  # the node itself carries on
    finally:
        redis.kill()


async def test_a_group_defined_on_one_node_serves_every_node(start_process, redis) -> None:
    """As on one server: anyone may look at a group and write to it, only its owner may
    change it, and it lasts as long as its owner is connected (under any new name)."""
    a, b = await start_process("a"), await start_process("b")
    with trio.fail_after(20):
        mina = await a.join("Mina")
        bob, eve = await b.join("Bob"), await b.join("Eve")
        await mina.send("/group #Team Bob,Eve")
        await mina.expect("* #Team: Bob, Eve")
        await bob.send("/group #team")
        await bob.expect("* #Team: Bob, Eve")
        await bob.send("@#TEAM: reply")
        for client in (bob, eve):
            await client.expect("[#Team] Bob:reply")
        await eve.send("/group #team Eve")
        await eve.expect("! ERROR 103 group #Team belongs to Mina")
        await mina.send("/nick Mia")
        await mina.expect("* Mina is now known as Mia")
        await eve.send("/msg #team still there?")
        for client in (bob, eve):
            await client.expect("[#Team] Eve:still there?")
        await eve.send("/group #team Eve")
        await eve.expect("! ERROR 103 group #Team belongs to Mia")
        await mina.send("/quit")
        await mina.until_closed()
        # Her node frees the name, drops the group and tells the room in one call to
        # Redis: once Bob hears she left, the group is gone.
        await bob.expect_prefix("* Mia left dev")
        assert redis.cli("HEXISTS", "machat:groups", "#team") == "0"
        await bob.send("/msg #team anyone?")
        await bob.expect("! ERROR 102 unable to send: no such user or group: #team")
        await eve.send("/group #team Eve")
        await eve.expect("* #team: Eve")


async def test_nodes_reach_a_redis_that_speaks_only_tls(start_process, tmp_path) -> None:
    """``rediss://``: coredis and the lean connections (publishes, the subscription)
    both verify Redis's certificate against ``ssl_ca_certs`` and carry the room."""
    redis = TlsRedis(tmp_path / "tls")
    port = redis.tls_port
    redis.start()
    try:
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={redis.ca_file}&ssl_cert_reqs=required"
        a, b = await start_process("a", url=url), await start_process("b", url=url)
        with trio.fail_after(20):
            mina, bob = await a.join("Mina"), await b.join("Bob")
            await mina.send("over tls")
            await bob.expect("Mina:over tls")
            await bob.send("and back")
            await mina.expect("Bob:and back")
        clients = redis.cli("CLIENT", "LIST")
        for node in ("a", "b"):  # each node's three kinds of connection, all over TLS
            for kind in (f"machat-{node}", f"machat-{node}-publish", f"machat-{node}-subscribe"):
                assert f"name={kind} " in clients, clients
        # Without the CA, the certificate is refused: the node does not start.
        untrusted = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required"
        with trio.fail_after(10):
            result = await trio.run_process(
                node_command(untrusted, "c"), capture_stderr=True, check=False, cwd=ROOT
            )
        errors = [line for line in result.stderr.decode().splitlines() if " ERROR " in line]
        assert result.returncode != 0 and len(errors) == 1, result.stderr.decode()
        assert "cannot reach Redis at rediss://" in errors[0] and "certificate" in errors[0]
    finally:
        redis.kill()


async def test_nodes_log_in_to_a_redis_with_a_password(start_process, tmp_path) -> None:
    redis = RedisProcess(tmp_path / "auth", tcp=True)
    redis.start()
    try:
        redis.cli("CONFIG", "SET", "requirepass", "s3cret")
        url = f"redis://:s3cret@127.0.0.1:{redis.port}/2"
        a, b = await start_process("a", url=url), await start_process("b", url=url)
        with trio.fail_after(20):
            mina, bob = await a.join("Mina"), await b.join("Bob")
            await mina.send("with a password")
            await bob.expect("Mina:with a password")
        keys = redis.cli("-a", "s3cret", "--no-auth-warning", "-n", "2", "KEYS", "machat:*")
        assert "machat:room:{dev}:log" in keys.split()  # in database 2, as the URL says
    finally:
        redis.kill()


async def test_a_websocket_member_on_one_node_and_a_tcp_one_on_another(start_process) -> None:
    """The browser's transport on a cluster node: the same room, both ways, each
    message once and in one order."""
    a, b = await start_process("a"), await start_process("b")
    with trio.fail_after(20):
        ws = await WsClient.open(f"ws://127.0.0.1:{a.port}/mychat")
        try:
            await ws.send('{"name": "Wes", "room": "dev"}')
            await ws.expect("* Wes joined dev")
            tcp = await b.join("Tess")
            await ws.expect("* Tess joined dev")
            await ws.send("from the browser")
            await tcp.expect("Wes:from the browser")
            await tcp.send("one", "two")
            assert [await ws.line() for _ in range(3)] == [
                "Wes:from the browser",  # its own line comes back through the cluster too
                "Tess:one",
                "Tess:two",
            ]
            await ws.send("/list")
            assert await ws.line() == "* users: Tess, Wes"
        finally:
            await ws.close()
