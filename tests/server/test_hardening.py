"""Hardening over memory streams, on trio's autojump clock: flood control, slowloris,
connection caps, idle timeouts, slow readers and the /stats counters.

All memory clients share one peer address ("memory"), so every test that opens
more than a few connections lifts ``max_per_ip``.
"""

from __future__ import annotations

import re

import pytest
import trio
import trio.testing

from machat.server import ChatServer
from tests.helpers import LineClient

from .conftest import Connect, with_config

RATE_LIMITED = "! ERROR 108 "
SERVER_FULL = "! ERROR 109 "
TIMED_OUT = "! ERROR 110 "
TOO_SLOW = "! ERROR 111 "


@pytest.fixture(autouse=True)
def _no_server_errors(caplog: pytest.LogCaptureFixture):
    """The server logs a bug in a connection instead of crashing: make it fail the test."""
    yield
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert not errors, [r.getMessage() for r in errors]


def _stats(line: str) -> dict[str, int]:
    """``* stats: 2 online, 1 rooms, 5 messages in`` -> {"online": 2, "rooms": 1, ...}."""
    assert line.startswith("* stats: "), line
    return {
        label: int(number)
        for number, label in re.findall(
            r"(\d+) ([a-z][a-z ]*?)\s*(?:,|$)", line[len("* stats: ") :]
        )
    }


def _counter(stats: dict[str, int], prefix: str) -> int:
    matches = [value for label, value in stats.items() if label.startswith(prefix)]
    assert len(matches) == 1, (prefix, stats)
    return matches[0]


async def _flood(client: LineClient, tag: str, count: int) -> tuple[list[str], float]:
    """Send ``count`` lines in one write; read up to the last echo. Returns (lines, seconds).

    The client is the one named "Flood".
    """
    start = trio.current_time()
    await client.send(*(f"{tag}{i}" for i in range(count)))
    lines = await client.expect(f"Flood:{tag}{count - 1}")
    lines.append(f"Flood:{tag}{count - 1}")
    return lines, trio.current_time() - start


# -- flood control ----------------------------------------------------------------------


@with_config(rate=5.0, burst=20)
async def test_a_flood_is_delayed_not_dropped_with_one_error_per_episode(
    connect: Connect, server: ChatServer, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(120):
        flood = await connect("Flood")
        lines, took = await _flood(flood, "a", 100)
        errors = [line for line in lines if line.startswith(RATE_LIMITED)]
        assert len(errors) == 1, errors
        assert [line for line in lines if not line.startswith("!")] == [
            f"Flood:a{i}" for i in range(100)
        ]
        # The burst goes through at once, the other 80 lines at 5 per second.
        assert (100 - 20) / 5 - 1 <= took <= (100 - 20) / 5 + 1, took

        # A quiet period refills the bucket; the next flood is a new episode.
        await trio.sleep(30)
        lines, took = await _flood(flood, "b", 100)
        assert len([line for line in lines if line.startswith(RATE_LIMITED)]) == 1
        assert [line for line in lines if not line.startswith("!")] == [
            f"Flood:b{i}" for i in range(100)
        ]
        assert 15 <= took <= 17, took
        assert server.state.counters.throttles == 2
        assert server.state.lookup("Flood") is not None  # throttled, never kicked


@with_config(rate=5.0, burst=20)
async def test_a_chunk_within_the_budget_spends_it_and_the_next_one_waits(
    connect: Connect, server: ChatServer, autojump_clock: trio.testing.MockClock
) -> None:
    """A chunk of plain lines goes to the room as one run, but still costs a token a line:
    15 of the 20 at once leave 5, so of the next 10 in one chunk the last 5 wait 1 s."""
    with trio.fail_after(60):
        flood = await connect("Flood")
        lines, took = await _flood(flood, "a", 15)
        assert took < 0.01 and lines == [f"Flood:a{i}" for i in range(15)]
        lines, took = await _flood(flood, "b", 10)
        assert [line for line in lines if not line.startswith("!")] == [
            f"Flood:b{i}" for i in range(10)
        ]
        assert len([line for line in lines if line.startswith(RATE_LIMITED)]) == 1
        assert 0.9 <= took <= 1.1, took


@with_config(rate=5.0, burst=20)
async def test_a_throttled_client_is_not_read_from(
    connect: Connect, server: ChatServer, autojump_clock: trio.testing.MockClock
) -> None:
    # A lockstep pair has no buffer: a write completes only when the server reads it,
    # so the flooder's next write waits for as long as the server holds back (as TCP).
    with trio.fail_after(120):
        flood = await connect("Flood", lockstep=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood.expect, "Flood:more")
            start = trio.current_time()
            await flood.send(*(f"{i}" for i in range(100)))
            assert trio.current_time() - start < 0.01
            await flood.send("more")
            waited = trio.current_time() - start
        assert 15 <= waited <= 17, waited
    assert [line for line in flood.seen if line.startswith("Flood:")][-101:] == [
        *(f"Flood:{i}" for i in range(100)),
        "Flood:more",
    ]


@with_config(rate=5.0, burst=20)
async def test_lines_within_the_rate_are_never_throttled(
    connect: Connect, server: ChatServer, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(120):
        client = await connect("Flood")
        for i in range(60):
            await client.send(f"{i}")
            assert await client.line() == f"Flood:{i}"
            await trio.sleep(0.25)  # 4 lines per second
    assert server.state.counters.throttles == 0


@with_config(rate=0)
async def test_rate_zero_turns_flood_control_off(
    connect: Connect, server: ChatServer, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        flood = await connect("Flood")
        lines, took = await _flood(flood, "", 500)
    assert lines == [f"Flood:{i}" for i in range(500)]
    assert took < 0.01
    assert server.state.counters.throttles == 0


# -- slowloris ------------------------------------------------------------------------


@with_config(max_per_ip=0, handshake_timeout=10.0)
async def test_a_thousand_half_handshakes_time_out_while_others_chat(
    connect: Connect, server: ChatServer, autojump_clock: trio.testing.MockClock
) -> None:
    n = 1000
    start = trio.current_time()
    loris = [await connect() for _ in range(n)]
    for client in loris:
        await client.send_raw(b'{"name": "Slow')
    closed_at: list[float] = []
    outcomes: list[list[str]] = []

    async def wait_closed(client: LineClient) -> None:
        outcomes.append(await client.until_closed())
        closed_at.append(trio.current_time() - start)
        await client.aclose()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for client in loris:
                nursery.start_soon(wait_closed, client)
            await trio.sleep(5)
            assert server.active_connections == n
            norm = await connect("Norm")
            await norm.send("still here")
            assert await norm.line() == "Norm:still here"
            assert not closed_at
        await norm.send("and now")
        assert await norm.line() == "Norm:and now"

    assert len(outcomes) == n
    assert all(len(lines) == 1 and lines[0].startswith(TIMED_OUT) for lines in outcomes), {
        tuple(lines) for lines in outcomes
    }
    assert 10 <= min(closed_at) and max(closed_at) <= 11, (min(closed_at), max(closed_at))
    await trio.testing.wait_all_tasks_blocked()
    assert [m.name for m in server.state.users.values()] == ["Norm"]
    assert list(server.state.rooms) == ["dev"]
    assert server.active_connections == 1
    assert server.state.counters.refused == n
    await norm.aclose()


# -- connection caps --------------------------------------------------------------------


@with_config(max_clients=3, max_per_ip=0)
async def test_beyond_max_clients_a_connection_is_refused_at_once(
    connect: Connect, server: ChatServer, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        a = await connect("A")
        b = await connect("B")
        pending = await connect()  # a connection counts before its handshake
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        extra = await connect()
        lines = await extra.until_closed()
        assert trio.current_time() - start < 0.01
        assert len(lines) == 1 and lines[0].startswith(SERVER_FULL), lines
        await extra.aclose()
        assert server.active_connections == 3

        # One leaves: there is room again.
        await a.aclose()
        await b.expect("* A left dev (disconnected)")
        await trio.testing.wait_all_tasks_blocked()
        assert server.active_connections == 2
        await pending.handshake("C")
        await pending.expect("* C joined dev")
        d = await connect("D")
        full = await connect()
        lines = await full.until_closed()
        assert len(lines) == 1 and lines[0].startswith(SERVER_FULL), lines
        await d.aclose()
        await trio.testing.wait_all_tasks_blocked()
        e = await connect("E")
        await e.send("in")
        assert await e.line() == "E:in"
    assert server.state.counters.refused == 2
    assert sorted(m.name for m in server.state.users.values()) == ["B", "C", "E"]


@with_config(max_clients=0, max_per_ip=2)
async def test_beyond_max_per_ip_a_connection_is_refused(
    connect: Connect, server: ChatServer, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        a = await connect("A")
        await connect("B")
        extra = await connect()
        lines = await extra.until_closed()
        assert len(lines) == 1 and lines[0].startswith(SERVER_FULL), lines
        await a.aclose()
        await trio.testing.wait_all_tasks_blocked()
        await connect("C")
    assert server.active_connections == 2


@with_config(max_clients=0, max_per_ip=0)
async def test_zero_means_no_cap(connect: Connect, server: ChatServer) -> None:
    with trio.fail_after(10):
        clients = [await connect(f"U{i}") for i in range(150)]
    assert server.active_connections == 150
    assert len(server.state.users) == len(clients)


# -- idle timeout -----------------------------------------------------------------------


@with_config(idle_timeout=30.0, max_per_ip=0)
async def test_a_silent_member_times_out_and_an_active_one_does_not(
    connect: Connect, server: ChatServer, autojump_clock: trio.testing.MockClock
) -> None:
    silent_result: list[tuple[float, list[str]]] = []

    async def watch(client: LineClient) -> None:
        lines = await client.until_closed()
        silent_result.append((trio.current_time() - start, lines))

    with trio.fail_after(120):
        start = trio.current_time()
        silent = await connect("Silent")
        active = await connect("Active")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, silent)
            for i in range(8):  # 70 s, a line every 10 s
                await active.send(f"{i}")
                await active.expect(f"Active:{i}")
                await trio.sleep(10)
        await active.send("still here")
        await active.expect("Active:still here")
    assert "* Silent left dev (idle timeout)" in active.seen
    [(took, lines)] = silent_result
    # Silent heard Active talk, but hearing is not being active.
    assert "Active:0" in lines
    assert lines[-1].startswith(TIMED_OUT), lines
    assert 30 <= took <= 31, took
    assert [m.name for m in server.state.users.values()] == ["Active"]
    await silent.aclose()
    await active.aclose()


@with_config(max_per_ip=0)
async def test_no_idle_timeout_by_default(
    connect: Connect, server: ChatServer, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(5000):
        quiet = await connect("Quiet")
        await trio.sleep(3600)
        await quiet.send("awake")
        assert await quiet.line() == "Quiet:awake"


# -- slow readers -----------------------------------------------------------------------


@with_config(outbox_limit=64 * 1024, rate=0, max_per_ip=0)
async def test_a_reader_that_never_reads_is_evicted_with_an_error_while_the_room_goes_on(
    connect: Connect, server: ChatServer, autojump_clock: trio.testing.MockClock
) -> None:
    limit = server.config.outbox_limit
    with trio.fail_after(60):
        talker = await connect("Talker")
        listener = await connect("Listener")
        sloth = await connect("Sloth", lockstep=True)  # reads its welcome, then never again
        await talker.expect("* Sloth joined dev")
        payload = "x" * 1000
        peak = 0
        evicted_lines: list[str] | None = None
        for i in range(300):
            await talker.send(f"{i} {payload}")
            await talker.expect(f"Talker:{i} {payload}")
            member = server.state.lookup("Sloth")
            if member is None:
                continue
            peak = max(peak, member.sender.pending_bytes)
            if member.evicted and evicted_lines is None:
                # Read now, within the eviction grace: what was in flight, then the error.
                with trio.fail_after(1):
                    evicted_lines = await sloth.until_closed()
        await talker.send("/stats")
        stats = _stats(await talker.expect_prefix("* stats: "))
        messages = [line for line in await listener.expect("Talker:299 " + payload)]
        messages.append("Talker:299 " + payload)
    assert "* Sloth left dev (evicted)" in talker.seen
    assert evicted_lines is not None, "Sloth was never evicted"
    assert evicted_lines[-1].startswith(TOO_SLOW), evicted_lines[-1][:100]
    assert peak <= limit
    chat = [line for line in messages if line.startswith("Talker:")]
    assert chat == [f"Talker:{i} {payload}" for i in range(300)]
    assert server.state.lookup("Sloth") is None
    assert server.state.counters.evictions == 1
    assert _counter(stats, "eviction") == 1
    await sloth.aclose()


# -- statistics -----------------------------------------------------------------------


@with_config(rate=5.0, burst=20, max_per_ip=0)
async def test_stats_reports_the_counters(
    connect: Connect, server: ChatServer, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        flood = await connect("Flood")
        await connect("Other", room="ops")
        refused = await connect()
        await refused.send_raw(b"not json\n")
        await refused.until_closed()
        await _flood(flood, "", 30)
        await trio.sleep(10)
        await flood.send("/stats")
        line = await flood.expect_prefix("* stats: ")
    stats = _stats(line)
    assert _counter(stats, "rooms") == 2
    assert _counter(stats, "messages in") == 30
    assert _counter(stats, "throttles") == 1
    assert _counter(stats, "evictions") == 0
    assert stats["connections accepted"] == 3
    assert stats["connections"] == 2  # open now
    assert stats["messages out"] == 30  # Flood is alone in dev: one delivery each
    assert _counter(stats, "online") == 2
