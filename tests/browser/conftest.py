"""Browser tests: Debian's Chromium driven by Playwright for Python.

They need ``/usr/bin/chromium`` (apt package ``chromium``) and the ``playwright``
package; ``playwright install`` is never run, since we launch the system browser.
A missing browser FAILS these tests (it does not skip them).

The server runs as users run it, ``python -m machat.cmd.chatserver`` on 127.0.0.1
port 0, in a subprocess; the tests are plain sync tests (Playwright's sync API does
not mix with trio), and every wait is bounded by Playwright's timeouts or a
subprocess timeout.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT = 10  # seconds, for every wait on the server or the page

pytestmark = pytest.mark.browser


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)


class ServerProcess:
    """``machat.cmd.chatserver`` in a subprocess; its log is kept for assertions."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "machat.cmd.chatserver", "-a", "127.0.0.1:0",
             "--stats-interval", "0", *args],
            cwd=REPO, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.log: list[str] = []
        self._port = threading.Event()
        self.port = 0
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        if not self._port.wait(TIMEOUT):
            self.stop()
            raise RuntimeError("the server did not start:\n" + "".join(self.log))

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            found = re.search(r"listening on \S+ port (\d+)", line)
            if found and not self.port:
                self.port = int(found.group(1))
                self._port.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=TIMEOUT)
        self._reader.join(TIMEOUT)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        assert not any("Traceback" in line for line in self.log), "".join(self.log)


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess("--rate", "0")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
            "(apt-get install chromium); they do not skip without it",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture
def browser(chromium_path: str, tmp_path: Path):
    """A persistent Chromium context with a fresh user-data-dir."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=chromium_path,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1100, "height": 700},
        )
        context.set_default_timeout(TIMEOUT * 1000)
        errors: list[str] = []
        context.on("weberror", lambda error: errors.append(str(error.error)))
        context.errors = errors  # type: ignore[attr-defined]
        yield context
        context.close()
        assert not errors, errors


class TcpClient:
    """A line client over a plain socket (the terminal client's view)."""

    def __init__(self, port: int, name: str, room: str = "dev") -> None:
        self.name = name
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.file = self.sock.makefile("rb")
        self.sock.sendall(f'{{"name": "{name}", "room": "{room}"}}\n'.encode())
        self.expect_prefix("* Welcome")

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def line(self) -> str:
        data = self.file.readline()
        if not data:
            raise EOFError
        return data.decode().rstrip("\n")

    def expect(self, wanted: str) -> None:
        while self.line() != wanted:
            pass

    def expect_prefix(self, prefix: str) -> str:
        while not (line := self.line()).startswith(prefix):
            pass
        return line

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def tcp(server: ServerProcess):
    clients: list[TcpClient] = []

    def connect(name: str, room: str = "dev") -> TcpClient:
        client = TcpClient(server.port, name, room)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


def join(page, url: str, name: str, room: str = "dev") -> None:
    """Open the page and join through the form, as a person would."""
    page.goto(url)
    page.fill("#join-name", name)
    page.fill("#join-room", room)
    page.click("#join-button")
    page.wait_for_selector("#input:enabled")


class Proxy:
    """A TCP proxy in front of the server, to cut the page's connection at will.

    `hold` makes new connections wait (accepted, not yet forwarded) until `release`;
    `cut` closes every connection going through, as a network failure would.
    """

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._done: list[socket.socket] = []  # closed once the proxy closes
        self.accepted = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if not self._open.wait(TIMEOUT * 3) or self._closed:
            client.close()
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream), timeout=TIMEOUT)
        except OSError:  # the server is gone (the test is ending)
            client.close()
            return
        with self._lock:
            self._pairs.append((client, upstream))
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(None)
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._lock:
            if self._closed:  # `close` has run: nobody else will close it
                src.close()
            else:
                self._done.append(src)

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def cut(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.release()
        self.cut()
        self.listener.close()
        with self._lock:
            for sock in self._done:
                sock.close()
            self._done.clear()


@pytest.fixture
def proxy(server: ServerProcess):
    p = Proxy(server.port)
    yield p
    p.close()
