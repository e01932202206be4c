"""TLS end to end, with certificates from trustme.

Rules: 127.0.0.1 only, port 0, every wait bounded by trio.fail_after, every stream closed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trustme

from machat.server import ChatServer, ServerConfig
from tests.helpers import LineClient

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_server_errors(caplog: pytest.LogCaptureFixture):
    """The server logs a bug in a connection instead of crashing: make it fail the test."""
    yield
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert not errors, [r.getMessage() for r in errors]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def _port(listener: trio.abc.Listener) -> int:
    listener = getattr(listener, "transport_listener", listener)
    return listener.socket.getsockname()[1]


async def _start(nursery: trio.Nursery, **config: object) -> tuple[ChatServer, int]:
    server = ChatServer(ServerConfig(host="127.0.0.1", port=0, max_per_ip=0, **config))
    listeners = await nursery.start(server.serve)
    return server, _port(listeners[0])


@pytest.fixture
async def tls_server(
    nursery: trio.Nursery, server_context: ssl.SSLContext
) -> AsyncIterator[tuple[ChatServer, int]]:
    server, port = await _start(nursery, ssl_context=server_context)
    yield server, port
    server.shutdown()


async def _join_tls(port: int, context: ssl.SSLContext, name: str) -> LineClient:
    stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=context)
    client = LineClient(stream)
    await client.handshake(name, "dev")
    await client.expect(f"* {name} joined dev")
    return client


async def test_tls_clients_chat(
    tls_server: tuple[ChatServer, int], client_context: ssl.SSLContext
) -> None:
    _, port = tls_server
    with trio.fail_after(10):
        mina = await _join_tls(port, client_context, "Mina")
        bob = await _join_tls(port, client_context, "Bob")
        await mina.send("over tls")
        assert await mina.expect("Mina:over tls") == ["* Bob joined dev"]
        assert await bob.line() == "Mina:over tls"
        await mina.aclose()
        await bob.expect("* Mina left dev (disconnected)")
        await bob.aclose()


async def test_plaintext_client_on_the_tls_port_is_closed_and_the_server_goes_on(
    tls_server: tuple[ChatServer, int], client_context: ssl.SSLContext
) -> None:
    server, port = tls_server
    with trio.fail_after(10):
        for payload in (b'{"name": "Plain", "room": "dev"}\nhello\n', b"GET / HTTP/1.0\r\n\r\n"):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(payload)
            received = b""
            try:
                while data := await stream.receive_some(65536):
                    received += data
            except trio.BrokenResourceError:  # a reset is a clean refusal too
                pass
            await stream.aclose()
            # At most a TLS alert record: never chat, never a plaintext line.
            assert b"joined" not in received and b"hello" not in received, received
        client = await _join_tls(port, client_context, "After")
        await client.send("still serving")
        assert await client.line() == "After:still serving"
        await client.aclose()
    assert [m.name for m in server.state.users.values()] in ([], ["After"])


async def test_silent_tcp_connection_on_the_tls_port_times_out(
    nursery: trio.Nursery, server_context: ssl.SSLContext
) -> None:
    """A client that never starts TLS is held to the handshake timeout like any other."""
    server, port = await _start(nursery, ssl_context=server_context, handshake_timeout=0.5)
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        start = trio.current_time()
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
        took = trio.current_time() - start
        await stream.aclose()
    assert 0.4 <= took <= 3, took
    server.shutdown()


async def test_tls_client_on_a_plaintext_port_fails_cleanly(
    nursery: trio.Nursery, client_context: ssl.SSLContext
) -> None:
    server, port = await _start(nursery)
    with trio.fail_after(10):
        stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=client_context)
        with pytest.raises(trio.BrokenResourceError):
            await stream.do_handshake()
        await trio.aclose_forcefully(stream)
        # The plaintext server is still fine.
        plain = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
        await plain.handshake("Plain", "dev")
        await plain.expect("* Plain joined dev")
        await plain.aclose()
    server.shutdown()


async def test_per_ip_cap_sees_through_tls(
    nursery: trio.Nursery, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    server = ChatServer(
        ServerConfig(host="127.0.0.1", port=0, max_per_ip=2, ssl_context=server_context)
    )
    port = _port((await nursery.start(server.serve))[0])
    async with contextlib.AsyncExitStack() as stack:
        with trio.fail_after(10):
            for name in ("A", "B"):
                client = await _join_tls(port, client_context, name)
                stack.push_async_callback(trio.aclose_forcefully, client.stream)
            stream = await trio.open_ssl_over_tcp_stream(
                "127.0.0.1", port, ssl_context=client_context
            )
            stack.push_async_callback(trio.aclose_forcefully, stream)
            line = await LineClient(stream).line()
    assert line.startswith("! ERROR 109 "), line
    server.shutdown()


async def test_the_server_closes_tls_with_close_notify(
    tls_server: tuple[ChatServer, int], client_context: ssl.SSLContext
) -> None:
    """A TLS peer must be able to tell the server's close from a truncation attack."""
    _, port = tls_server
    with trio.fail_after(10):
        client = await _join_tls(port, client_context, "Bye")
        try:
            await client.send(":quit")
            # A close without close_notify raises BrokenResourceError (SSLEOFError) here.
            lines = await client.until_closed()
        finally:
            await trio.aclose_forcefully(client.stream)
    assert lines[-1] == "* bye", lines


class _RecordingListener(trio.abc.Listener[trio.SocketStream]):
    """Passes accepted streams on, keeping a reference to check their sockets."""

    def __init__(self, inner: trio.SocketListener) -> None:
        self.inner = inner
        self.socket = inner.socket
        self.accepted: list[trio.SocketStream] = []

    async def accept(self) -> trio.SocketStream:
        stream = await self.inner.accept()
        self.accepted.append(stream)
        return stream

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_accepted_sockets_have_tcp_keepalive(
    nursery: trio.Nursery,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    tls: bool,
) -> None:
    [inner] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = _RecordingListener(inner)
    server = ChatServer(
        ServerConfig(host="127.0.0.1", port=0, ssl_context=server_context if tls else None)
    )
    await nursery.start(server.serve, [listener])
    port = inner.socket.getsockname()[1]
    with trio.fail_after(10):
        if tls:
            client = await _join_tls(port, client_context, "Kept")
        else:
            client = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
            await client.handshake("Kept", "dev")
            await client.expect("* Kept joined dev")
        [accepted] = listener.accepted
        assert accepted.socket.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        await client.aclose()
    server.shutdown()


async def test_machat_client_program_over_tls(
    tls_server: tuple[ChatServer, int], ca: trustme.CA, tmp_path: Path
) -> None:
    _, port = tls_server
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    env = {k: v for k, v in os.environ.items() if k != "MACHAT_PASSWORD"}
    env["PYTHONPATH"] = str(REPO)
    with trio.fail_after(20):
        result = await trio.run_process(
            [
                sys.executable,
                "-m",
                "machat.cmd.client",
                "--tls",
                "--cafile",
                str(cafile),
                "-client",
                "Mina",
                "-room",
                "dev",
                "-address",
                f"127.0.0.1:{port}",
            ],
            stdin=b"hello over tls\n",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=REPO,
            env=env,
        )
    assert result.stderr == b""
    assert result.returncode == 0
    assert "Mina:hello over tls" in result.stdout.decode().splitlines()
