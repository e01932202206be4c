"""The lean Redis connection (`machat.cluster.resp`): against a real redis-server, and
against memory streams for what a real one will not do (garbage, silence).

Rules: Redis on a Unix socket in the test's directory; memory streams for the rest;
every wait bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import math
import ssl

import pytest
import trio
import trio.testing

from machat.cluster import ClusterConfig, resp
from machat.cluster.backplane import Backplane, _endpoint
from tests.cluster.conftest import Recorder
from tests.cluster.support import RedisProcess, TlsRedis, free_port

pytestmark = pytest.mark.cluster


def unix(redis: RedisProcess) -> resp.Endpoint:
    return resp.Endpoint(path=str(redis.socket))


async def test_a_pipeline_answers_each_command_in_order(redis) -> None:
    with trio.fail_after(5):
        conn = await resp.open_connection(unix(redis), client_name="t-pipe")
        replies = await conn.call_many(
            [("SET", "k", "v"), ("INCR", "k"), ("GET", "k"), ("RPUSH", "l", 1, 2.5, b"\xff")]
        )
        assert replies[0] == "OK"
        assert isinstance(replies[1], resp.ReplyError)  # an error reply is a value...
        assert replies[1].code == "ERR"
        assert replies[2:] == ["v", 3]
        with pytest.raises(resp.ReplyError, match="WRONGTYPE"):  # ...and `call` raises it
            await conn.call("GET", "l")
        assert await conn.call("LRANGE", "l", 0, -1) == ["1", "2.5", "\ufffd"]
        assert await conn.call("CLIENT", "GETNAME") == "t-pipe"
        await conn.aclose()
    assert conn.closed


async def test_pub_sub_messages_arrive_with_their_confirmations(redis) -> None:
    with trio.fail_after(5):
        sub = await resp.open_connection(unix(redis))
        pub = await resp.open_connection(unix(redis))
        await sub.send([("SUBSCRIBE", "a", "b")])
        got: list[list[object]] = []
        while len(got) < 2:
            got += await sub.receive()
        assert got == [["subscribe", "a", 1], ["subscribe", "b", 2]]
        assert await pub.call("PUBLISH", "b", "x" * 100_000) == 1  # over several reads
        assert await pub.call("PUBLISH", "a", "caf\xe9") == 1
        got = []
        while len(got) < 2:
            got += await sub.receive()
        assert got == [["message", "b", "x" * 100_000], ["message", "a", "caf\xe9"]]
        await sub.aclose()
        await pub.aclose()


async def test_the_database_and_the_password_are_used(redis) -> None:
    redis.cli("CONFIG", "SET", "requirepass", "s3cret")
    with trio.fail_after(5):
        good = resp.Endpoint(path=str(redis.socket), db=3, password="s3cret")
        conn = await resp.open_connection(good)
        await conn.call("SET", "where", "db3")
        await conn.aclose()
        with pytest.raises(resp.ConnectionLost, match="refused the connection: WRONGPASS"):
            await resp.open_connection(resp.Endpoint(path=str(redis.socket), password="no"))
    assert redis.cli("-a", "s3cret", "--no-auth-warning", "-n", "3", "GET", "where") == "db3"


async def test_a_dead_redis_is_connection_lost(redis) -> None:
    with trio.fail_after(5):
        conn = await resp.open_connection(unix(redis))
        redis.kill()
        with pytest.raises(resp.ConnectionLost):
            await conn.call("PING")
        assert conn.closed
        with pytest.raises(resp.ConnectionLost, match="connecting to Redis at 127.0.0.1"):
            await resp.open_connection(resp.Endpoint(host="127.0.0.1", port=free_port()))
        assert issubclass(resp.ConnectionLost, OSError)  # what the backplane catches


async def test_a_call_on_a_connection_redis_closed_was_not_sent(redis, tmp_path) -> None:
    tcp = RedisProcess(tmp_path / "tcp", tcp=True)
    tls = TlsRedis(tmp_path / "tls")
    context = ssl.create_default_context()
    tls.ca.configure_trust(context)
    tls_endpoint = resp.Endpoint(host="127.0.0.1", port=tls.tls_port, ssl_context=context)
    for server in (tcp, tls):
        server.start()
    try:
        for server, endpoint in (
            (redis, unix(redis)),
            (tcp, resp.Endpoint(host="127.0.0.1", port=tcp.port)),
            (tls, tls_endpoint),
        ):
            with trio.fail_after(5):
                conn = await resp.open_connection(endpoint, client_name="t-idle")
                assert await conn.call("PING") == "PONG"
                server.cli("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
                await trio.lowlevel.wait_readable(conn._fd)  # its end of file is here
                with pytest.raises(resp.ConnectionLost, match="Redis closed") as info:
                    await conn.call("PING")
                assert info.value.sent is False  # (the backplane refuses what it carried)
                assert conn.closed
                again = await resp.open_connection(endpoint)
                assert await again.call("PING") == "PONG"  # a healthy one is not disturbed
                assert await again.call("PING") == "PONG"
                await again.aclose()
    finally:
        tcp.kill()
        tls.kill()


async def test_a_closed_connection_touches_its_socket_no_more(redis) -> None:
    """Over a plain socket the connection reads and writes the descriptor itself; once
    closed, that number may be another socket's, so nothing is sent or read."""
    with trio.fail_after(5):
        conn = await resp.open_connection(unix(redis))
        assert await conn.call("PING") == "PONG"
        await conn.aclose()
        other = await resp.open_connection(unix(redis))  # (likely given the same number)
        with pytest.raises(resp.ConnectionLost, match="closed") as info:
            await conn.send([("PING",)])
        assert info.value.sent is False
        with pytest.raises(resp.ConnectionLost, match="closed"):
            await conn.receive()
        assert await other.call("PING") == "PONG"  # nothing of the closed one's reached it
        await other.aclose()


async def test_a_reader_waiting_on_a_connection_that_closes_is_told(redis) -> None:
    with trio.fail_after(5):
        conn = await resp.open_connection(unix(redis))
        await conn.send([("SUBSCRIBE", "quiet")])
        assert await conn.receive() == [["subscribe", "quiet", 1]]
        async with trio.open_nursery() as nursery:

            async def close_it() -> None:
                await trio.testing.wait_all_tasks_blocked()
                await conn.aclose()

            nursery.start_soon(close_it)
            with pytest.raises(resp.ConnectionLost):
                await conn.receive()  # (waiting for readability when the socket closes)


async def test_a_call_that_fails_after_writing_may_have_been_sent(redis) -> None:
    with trio.fail_after(5):
        conn = await resp.open_connection(unix(redis))
        redis.cli("CLIENT", "PAUSE", "2000", "ALL")  # the PING waits in Redis...
        try:
            async with trio.open_nursery() as nursery:

                async def kill_it() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    redis.kill()  # ...which dies before it answers

                nursery.start_soon(kill_it)
                with pytest.raises(resp.ConnectionLost) as info:
                    await conn.call("PING")
        finally:
            redis.start()
        assert info.value.sent is True


async def test_replies_split_anywhere_parse_the_same() -> None:
    client, server = trio.testing.memory_stream_pair()
    conn = resp.RedisConnection(client)
    wire = b"+OK\r\n*2\r\n$5\r\nhello\r\n:42\r\n-NOSCRIPT No matching script\r\n"

    async def trickle() -> None:
        assert await server.receive_some() == b"*1\r\n$4\r\nPING\r\n" * 3
        for i in range(len(wire)):
            await server.send_all(wire[i : i + 1])

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            replies = await conn.call_many([("PING",)] * 3)
    assert replies[:2] == ["OK", ["hello", 42]]
    assert isinstance(replies[2], resp.ReplyError) and replies[2].code == "NOSCRIPT"


async def test_garbage_from_the_server_is_connection_lost() -> None:
    client, server = trio.testing.memory_stream_pair()
    conn = resp.RedisConnection(client)
    await server.send_all(b"HTTP/1.1 400 Bad Request\r\n")
    with trio.fail_after(5), pytest.raises(resp.ConnectionLost, match="not RESP"):
        await conn.receive()
    assert conn.closed


async def test_a_call_given_up_half_way_closes_the_connection(autojump_clock) -> None:
    """Its reply may still come, and would be taken for the next call's."""
    client, server = trio.testing.memory_stream_pair()
    conn = resp.RedisConnection(client)
    with trio.move_on_after(1):
        await conn.call("PING")
    assert conn.closed
    with pytest.raises(resp.ConnectionLost):
        await conn.call("PING")


async def test_a_silent_subscription_is_pinged_then_closed(autojump_clock) -> None:
    """A half-open connection to Redis says nothing, ever: the keeper's check PINGs it
    after two heartbeats of silence and closes it when no answer comes in time (the
    subscriber then makes a new session)."""
    config = ClusterConfig(url="redis://127.0.0.1:1/0", node="a", presence_ttl=10)
    backplane = Backplane(config, Recorder())
    client, server = trio.testing.memory_stream_pair()
    conn = backplane._pubsub = resp.RedisConnection(client)
    backplane._sub_heard = trio.current_time()
    await backplane._check_subscription()
    assert not conn.closed  # not quiet for long yet
    await trio.sleep(2 * config.heartbeat + 0.1)
    await backplane._check_subscription()
    assert await server.receive_some() == b"*1\r\n$4\r\nPING\r\n"
    await trio.sleep(config.command_timeout / 2)
    await backplane._check_subscription()
    assert not conn.closed  # still within the command timeout
    await trio.sleep(config.command_timeout)
    await backplane._check_subscription()
    assert conn.closed


async def test_an_answered_ping_keeps_the_subscription(autojump_clock) -> None:
    config = ClusterConfig(url="redis://127.0.0.1:1/0", node="a", presence_ttl=10)
    backplane = Backplane(config, Recorder())
    client, server = trio.testing.memory_stream_pair()
    conn = backplane._pubsub = resp.RedisConnection(client)
    backplane._sub_heard = -math.inf
    await backplane._check_subscription()
    assert await server.receive_some() == b"*1\r\n$4\r\nPING\r\n"
    await server.send_all(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")
    backplane._on_replies(await conn.receive())
    await trio.sleep(config.command_timeout * 2)
    await backplane._check_subscription()
    assert not conn.closed


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("unix:///run/redis.sock?db=2", resp.Endpoint(path="/run/redis.sock", db=2)),
        ("redis://127.0.0.1:7000/1", resp.Endpoint(host="127.0.0.1", port=7000, db=1)),
        (
            "redis://me:pw@[::1]:7001",
            resp.Endpoint(host="::1", port=7001, username="me", password="pw"),
        ),
    ],
)
def test_the_lean_connections_go_where_coredis_goes(url: str, expected: resp.Endpoint) -> None:
    backplane = Backplane(ClusterConfig(url=url, node="a"), Recorder())
    assert _endpoint(backplane.client) == expected


def test_rediss_gives_the_lean_connections_coredis_tls_settings() -> None:
    backplane = Backplane(
        ClusterConfig(url="rediss://127.0.0.1:7002/0?ssl_cert_reqs=required", node="a"), Recorder()
    )
    endpoint = _endpoint(backplane.client)
    assert endpoint.ssl_context is not None
    assert endpoint.ssl_context is backplane.client.connection_pool.connection_kwargs["ssl_context"]


async def test_a_ping_that_cannot_be_sent_is_left_to_the_subscriber(autojump_clock) -> None:
    """The subscriber hears of a broken connection itself; the keeper's check neither
    raises nor marks the cluster down."""
    config = ClusterConfig(url="redis://127.0.0.1:1/0", node="a", presence_ttl=10)
    backplane = Backplane(config, Recorder())
    client, server = trio.testing.memory_stream_pair()
    backplane._pubsub = resp.RedisConnection(client)
    await server.aclose()
    await backplane._check_subscription()
    assert backplane._pubsub.closed
    assert backplane._down_reason == "not connected yet"  # untouched by the check
