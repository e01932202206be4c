"""https:// and wss:// on the chat port with --tls-cert (certificates from trustme)."""

from __future__ import annotations

import socket
import ssl

import pytest
import trio
import trustme

from machat.server import ServerConfig
from tests.web.conftest import in_thread, start


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_config(ca: trustme.CA) -> ServerConfig:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return ServerConfig(host="127.0.0.1", port=0, stats_interval=0, ssl_context=context)


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_https_page_wss_chat_and_tls_chat_on_one_port(
    nursery: trio.Nursery, tls_config: ServerConfig, client_context: ssl.SSLContext
):
    running = await start(nursery, tls_config)
    port = running.port

    def get(request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with client_context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                sock.sendall(request)
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
                return data

    def get_page() -> bytes:
        return get(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())

    page = await in_thread(get_page)
    assert page.startswith(b"HTTP/1.1 200 OK") and b'role="log"' in page

    url = f"wss://127.0.0.1:{port}/mychat"
    from tests.web.conftest import WsClient

    ws = await WsClient.open(url, ssl=client_context, origin=f"https://127.0.0.1:{port}")
    try:
        await _chat(ws, get, port, client_context)
    finally:
        ws.conn.socket.close()


async def _chat(ws, get, port: int, client_context: ssl.SSLContext) -> None:
    await ws.send('{"name": "Secure", "room": "dev"}')
    await ws.expect("* Secure joined dev")

    # Under TLS the page's own origin is https://: http:// is another origin.
    upgrade = (
        f"GET /mychat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:{port}\r\n\r\n"
    ).replace("{port}", str(port))
    answer = await in_thread(get, upgrade.encode())
    assert answer.startswith(b"HTTP/1.1 403 "), answer[:100]

    with trio.fail_after(10):
        stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=client_context)
        try:
            await stream.send_all(b'{"name": "Plain", "room": "dev"}\n')
            await ws.expect("* Plain joined dev")
        finally:
            await trio.aclose_forcefully(stream)
