"""End to end over real loopback sockets.

Rules: 127.0.0.1 only, port 0, every wait bounded by trio.fail_after.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import trio

from machat.server import ChatServer, ServerConfig
from tests.helpers import LineClient


@pytest.fixture
async def port(nursery: trio.Nursery) -> AsyncIterator[int]:
    server = ChatServer(ServerConfig(host="127.0.0.1", port=0))
    listeners = await nursery.start(server.serve)
    yield listeners[0].socket.getsockname()[1]
    server.shutdown()


async def join(port: int, name: str, room: str) -> LineClient:
    client = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
    await client.handshake(name, room)
    await client.expect(f"* {name} joined {room}")
    return client


async def test_two_clients_talk_and_a_third_room_hears_nothing(port: int) -> None:
    with trio.fail_after(10):
        mina = await join(port, "Mina", "dev")
        bob = await join(port, "Bob", "dev")
        eve = await join(port, "Eve", "ops")
        await mina.expect("* Bob joined dev")
        await mina.send("hello bob")
        await bob.send("hello mina")
        for client in (mina, bob):
            assert await client.line() == "Mina:hello bob"
            assert await client.line() == "Bob:hello mina"
        await eve.send("ping")
        assert await eve.line() == "Eve:ping"
        for client in (mina, bob, eve):
            await client.aclose()
    assert all("Mina" not in line and "Bob" not in line for line in eve.seen)


async def test_machat_style_client_without_newline_after_handshake(port: int) -> None:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        client = LineClient(stream)
        await client.send_raw(b'{"name":"Go","room":"dev"}')
        await client.expect("* Go joined dev")
        await client.send_raw(b"hi\r\n")
        assert await client.line() == "Go:hi"
        await client.aclose()


async def test_half_closed_client_gets_its_echo_before_the_server_closes(port: int) -> None:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b'{"name":"Pipe","room":"dev"}\nlast words\n')
        await stream.send_eof()
        lines = await LineClient(stream).until_closed()
        await stream.aclose()
    assert lines[-1] == "Pipe:last words"


def test_server_command_runs_and_exits_cleanly_on_sigterm() -> None:
    """``python -m machat.cmd.chatserver`` as users run it, stopped by SIGTERM."""
    with subprocess.Popen(
        [sys.executable, "-m", "machat.cmd.chatserver", "-a", "127.0.0.1:0"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    ) as proc:
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            assert "listening on 127.0.0.1 port" in line, line
            port = int(line.rsplit(" ", 1)[1])

            async def talk() -> list[str]:
                with trio.fail_after(10):
                    mina = await join(port, "Mina", "dev")
                    await mina.send("hello")
                    assert await mina.line() == "Mina:hello"
                    proc.send_signal(signal.SIGTERM)
                    lines = await mina.until_closed()
                    await mina.aclose()
                    return lines

            assert trio.run(talk) == ["* server shutting down"]
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


async def test_client_command_with_piped_stdin_against_the_real_server(port: int) -> None:
    """``python -m machat.cmd.client`` as users run it, fed by a pipe."""
    with trio.fail_after(20):
        watcher = await join(port, "Watcher", "dev")
        result = await trio.run_process(
            [
                sys.executable,
                "-m",
                "machat.cmd.client",
                "-client",
                "Mina",
                "-room",
                "dev",
                "-address",
                f"127.0.0.1:{port}",
            ],
            stdin=b"hello from a pipe\n/quit\n",
            capture_stdout=True,
            capture_stderr=True,
        )
        await watcher.expect("Mina:hello from a pipe")
        await watcher.expect("* Mina left dev (quit)")
        await watcher.aclose()
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert "* Mina joined dev" in out
    assert "Mina:hello from a pipe" in out
    assert "* bye" in out
