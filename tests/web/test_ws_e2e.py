"""End to end over loopback: WebSocket and TCP clients of one real server.

Rules: 127.0.0.1, port 0; the WebSocket client is the `websockets` library's sync
client in a worker thread (tests/web/conftest.py), raw sockets where a client must
misbehave; every wait is bounded.
"""

from __future__ import annotations

import json
import socket

import pytest
import trio
from websockets.exceptions import InvalidStatus

from machat.server import ServerConfig
from tests.web.conftest import Running, in_thread


def with_config(**changes):
    def fixture() -> ServerConfig:
        return ServerConfig(host="127.0.0.1", port=0, stats_interval=0, **changes)

    return pytest.mark.parametrize("config", [fixture()], ids=[""])


async def test_tcp_and_websocket_share_a_room(running: Running):
    tcp = await running.tcp("Tess")
    ws = await running.ws("Wes")
    await tcp.expect("* Wes joined dev")
    await ws.send("hello from the browser")
    assert await ws.expect("Wes:hello from the browser") == ["* Wes joined dev"]
    await tcp.expect("Wes:hello from the browser")
    await tcp.send("hello from the terminal")
    await ws.expect("Tess:hello from the terminal")
    await ws.send("@Tess: psst")
    await tcp.expect("[private] Wes:psst")
    await ws.expect("* sent to Tess")
    await ws.send("/quit")
    lines, code = await ws.closed()
    assert lines == ["* bye"]
    assert code == 1000
    await tcp.expect("* Wes left dev (quit)")


async def test_json_format_over_websocket(running: Running):
    ws = await running.ws()
    await ws.send(json.dumps({"name": "Jay", "room": "dev", "format": "json"}))
    assert json.loads(await ws.line())["type"] == "welcome"
    await ws.expect('{"type":"join","room":"dev","name":"Jay"}')
    await ws.send("hi")
    message = json.loads(await ws.line())
    assert (message["type"], message["from"], message["text"]) == ("message", "Jay", "hi")


async def test_one_message_per_line_both_ways(running: Running):
    tcp = await running.tcp("Tess")
    ws = await running.ws("Wes")
    await ws.expect("* Wes joined dev")
    await ws.send("one\ntwo\r\nthree\n")
    for text in ("one", "two", "three"):
        assert await ws.recv() == f"Wes:{text}\n"  # one message each, ending in \n
        await tcp.expect(f"Wes:{text}")
    await ws.send("bad\x1bline\ngood")
    assert (await ws.line()).startswith("! ERROR 112 ")
    assert await ws.line() == "Wes:good"


@with_config(max_line=20)
async def test_line_length_per_websocket_line(running: Running):
    ws = await running.ws("Wes")
    await ws.expect("* Wes joined dev")
    await ws.send("x" * 21)
    assert (await ws.line()).startswith("! ERROR 105 ")
    await ws.send("x" * 20)
    assert await ws.line() == "Wes:" + "x" * 20


async def test_handshake_refusals_over_websocket(running: Running):
    await running.ws("Taken")
    cases = [
        ("not json", "! ERROR 106 "),
        ('{"name": "Taken", "room": "dev"}', "! ERROR 101 "),
        ('{"name": "9lives"}', "! ERROR 100 "),
        ('{"name": "Ok", "room": "_bad"}', "! ERROR 107 "),
        ('{"name": "Ok", "colour": "red"}', "! ERROR 106 "),
        ('{"name": "Ok", "since": -1}', "! ERROR 106 "),
    ]
    for handshake, prefix in cases:
        ws = await running.ws()
        await ws.send(handshake)
        lines, code = await ws.closed()
        assert len(lines) == 1 and lines[0].startswith(prefix), (handshake, lines)
        assert code == 1000


@with_config(password="sesame")
async def test_bad_password_over_websocket(running: Running):
    ws = await running.ws()
    await ws.send('{"name": "Wes", "password": "guess"}')
    lines, _ = await ws.closed()
    assert lines[0].startswith("! ERROR 104 ")
    ws = await running.ws()
    await ws.send('{"name": "Wes", "password": "sesame"}')
    assert (await ws.line()).startswith("* Welcome Wes!")


@with_config(max_per_ip=2)
async def test_per_ip_cap_counts_websockets(running: Running):
    await running.ws("A")
    await running.tcp("B")
    # Over a cap, a connection gets ! ERROR 109 at once, before its first byte is read,
    # so a WebSocket client sees no HTTP answer.  Read it before sending anything: a
    # request sent into a socket the server has already closed unread is answered with
    # a reset, which can discard the error line (and the websockets client trips over
    # that close in several ways, one of them an internal assertion).
    def raw() -> bytes:
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
            return _read_all(sock)

    assert (await in_thread(raw)).startswith(b"! ERROR 109 ")


@with_config(max_clients=1, max_per_ip=0)
async def test_total_cap_holds_for_websockets(running: Running):
    await running.ws("A")
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", running.port)
        running.clients_streams.append(stream)
        data = await stream.receive_some(1000)
    assert data.startswith(b"! ERROR 109 ")


async def test_binary_message_closes_with_1003(running: Running):
    tcp = await running.tcp("Tess")
    ws = await running.ws("Wes")
    await tcp.expect("* Wes joined dev")
    await ws.send(b"\x00binary")
    lines, code = await ws.closed()
    assert code == 1003
    await tcp.expect("* Wes left dev (disconnected)")


def _raw_upgrade(port: int, extra: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        b"GET /mychat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n" + extra
    )
    return sock


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    sock.close()
    return data


def _masked(opcode: int, payload: bytes) -> bytes:
    key = b"\x11\x22\x33\x44"
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + key + masked


async def test_invalid_utf8_closes_with_1007(running: Running):
    def run() -> bytes:
        sock = _raw_upgrade(running.port, _masked(1, b'{"name": "Wes"}') + _masked(1, b"\xff"))
        return _read_all(sock)

    data = await in_thread(run)
    assert data.startswith(b"HTTP/1.1 101 ")
    assert b"Welcome Wes" in data
    close = data[data.rindex(b"\x88") :]  # the last frame
    assert close[2:4] == (1007).to_bytes(2, "big"), data


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", b"400"),
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", b"413"),
        (b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
        (b"GET /mychat HTTP/1.1\r\nHost: x\r\n\r\n", b"426"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 10000 + b"\r\n\r\n", b"431"),
        (b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
    ],
)
async def test_bad_http_gets_an_error_status_and_a_close(running: Running, request_bytes, status):
    def run() -> bytes:
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
            sock.sendall(request_bytes)
            return _read_all(sock)

    data = await in_thread(run)
    assert data.startswith(b"HTTP/1.1 " + status + b" "), data[:200]
    assert b"Traceback" not in data
    await running.tcp("StillFine")


async def test_the_page_and_its_files(running: Running):
    def get(path: str) -> bytes:
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{running.port}\r\n\r\n".encode())
            return _read_all(sock)

    page = await in_thread(get, "/")
    assert page.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-security-policy: default-src 'self'" in page.lower()
    assert b'role="log"' in page and b'aria-live="polite"' in page
    script = await in_thread(get, "/app.js")
    assert b"text/javascript" in script and b"/mychat" in script


@pytest.mark.parametrize(
    ("origin", "allowed", "ok"),
    [
        (None, (), True),
        ("http://127.0.0.1:{port}", (), True),
        ("http://127.0.0.1:{port}/", (), True),
        ("http://localhost:{port}", (), False),  # another host: another origin
        ("https://127.0.0.1:{port}", (), False),
        ("http://127.0.0.1:1", (), False),
        ("http://evil.example", (), False),
        ("http://app.example", ("http://app.example",), True),
        ("http://evil.example", ("http://app.example",), False),
        ("http://evil.example", ("*",), True),
    ],
)
async def test_origins(nursery, origin, allowed, ok):
    from tests.web.conftest import start

    running = await start(
        nursery, ServerConfig(host="127.0.0.1", port=0, stats_interval=0, ws_origins=allowed)
    )
    origin = origin.format(port=running.port) if origin else None
    if ok:
        ws = await running.ws("Wes", origin=origin)
        await ws.expect("* Wes joined dev")
    else:
        with pytest.raises(InvalidStatus) as info:
            await running.ws(origin=origin)
        assert info.value.response.status_code == 403


@with_config(outbox_limit=64 * 1024, rate=0)
async def test_a_slow_websocket_reader_is_evicted(running: Running):
    tcp = await running.tcp("Tess")

    def slow_reader() -> socket.socket:
        sock = _raw_upgrade(running.port, _masked(1, b'{"name": "Slow", "room": "dev"}'))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        return sock  # and never read

    sock = await in_thread(slow_reader)
    try:
        await tcp.expect("* Slow joined dev")
        line = "x" * 4000
        with trio.fail_after(30):
            while True:  # until the kernel's buffers and the 64 KiB outbox are full
                await tcp.send(line)
                if (await tcp.line()) == "* Slow left dev (evicted)":
                    break
        assert running.server.counters.evictions == 1
    finally:
        sock.close()


async def test_since_resumes_without_a_gap_or_a_duplicate(running: Running):
    tcp = await running.tcp("Tess")
    ws = await running.ws()
    await ws.send(json.dumps({"name": "Wes", "room": "dev", "format": "json"}))
    await tcp.expect("* Wes joined dev")
    await tcp.send("one", "two")
    ids = []
    while len(ids) < 2:
        event = json.loads(await ws.line())
        if event["type"] == "message":
            ids.append(event["id"])
    await ws.close()
    await tcp.expect("* Wes left dev (disconnected)")
    await tcp.send("three", "four")
    await tcp.expect("Tess:four")
    ws = await running.ws()
    await ws.send(json.dumps({"name": "Wes", "room": "dev", "format": "json", "since": ids[0]}))
    assert json.loads(await ws.line())["type"] == "welcome"
    history = json.loads(await ws.line())
    assert history["type"] == "history"
    assert [m["text"] for m in history["messages"]] == ["two", "three", "four"]
    assert history.get("complete", True) is True


async def test_shutdown_closes_websockets_with_1001(running: Running):
    ws = await running.ws("Wes")
    await ws.expect("* Wes joined dev")
    running.server.shutdown()
    lines, code = await ws.closed()
    assert lines == ["* server shutting down"]
    assert code == 1001


async def test_the_extra_ws_listener_from_the_command_line():
    import subprocess
    import sys

    from tests.web.conftest import REPO

    def run() -> tuple[str, str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "machat.cmd.chatserver", "-a", "127.0.0.1:0", "-ws",
             "127.0.0.1:0", "--stats-interval", "0"],
            cwd=REPO, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            ports = []
            while len(ports) < 2:
                line = proc.stderr.readline()
                assert line, "the server exited"
                if "listening on" in line:
                    ports.append(int(line.rsplit(" ", 1)[1]))
            from websockets.sync.client import connect

            answers = []
            for port in ports:
                with connect(f"ws://127.0.0.1:{port}/mychat", proxy=None, open_timeout=5) as ws:
                    ws.send(f'{{"name": "P{port}"}}')
                    answers.append(ws.recv(timeout=5))
            return answers[0], answers[1]
        finally:
            proc.terminate()
            proc.communicate(timeout=10)

    first, second = await in_thread(run)
    assert first.startswith("* Welcome P") and second.startswith("* Welcome P")
