"""The full-screen client end to end: the real command in a pseudo-terminal.

The server is a real ``python -m machat.cmd.chatserver`` subprocess on 127.0.0.1,
port 0; the client is the real ``python -m machat.cmd.client`` on the slave side of
a pty; pyte (a terminal emulator in Python) plays the terminal on the master side.
Every wait polls the emulated screen under `trio.fail_after`; no fixed sleeps.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pyte
import pytest
import trio

from tests.helpers import LineClient

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 20

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")


@pytest.fixture
def server_port() -> Iterator[int]:
    with subprocess.Popen(
        [sys.executable, "-m", "machat.cmd.chatserver", "-a", "127.0.0.1:0"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    ) as proc:
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            assert "listening on 127.0.0.1 port" in line, line
            yield int(line.rsplit(" ", 1)[1])
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Terminal:
    """A pty whose master side is read into a pyte screen."""

    def __init__(self, cols: int, rows: int) -> None:
        self.master, self.slave = pty.openpty()
        _set_size(self.master, cols, rows)
        self.screen = pyte.Screen(cols, rows)
        self._parser = pyte.ByteStream(self.screen)
        self._changed = trio.Event()
        self.raw = bytearray()
        self.process: trio.Process | None = None

    @property
    def lines(self) -> list[str]:
        return list(self.screen.display)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def cursor_line(self) -> str:
        return self.screen.display[self.screen.cursor.y]

    async def pump(self) -> None:
        stream = trio.lowlevel.FdStream(self.master)
        async with stream:
            while True:
                try:
                    data = await stream.receive_some(65536)
                except (OSError, trio.BrokenResourceError):  # EIO: the slave side closed
                    data = b""
                if not data:
                    self._changed.set()
                    return
                self.raw += data
                self._parser.feed(data)
                self._changed.set()
                self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], object]) -> None:
        while not predicate():
            await self._changed.wait()

    async def wait_text(self, pattern: str) -> None:
        await self.wait_for(lambda: re.search(pattern, self.text))

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def resize(self, cols: int, rows: int) -> None:
        _set_size(self.master, cols, rows)
        self.screen.resize(rows, cols)
        assert self.process is not None
        self.process.send_signal(signal.SIGWINCH)


@pytest.fixture
async def terminal(nursery: trio.Nursery) -> AsyncIterator[Terminal]:
    term = Terminal(100, 24)
    nursery.start_soon(term.pump)
    yield term
    print("the screen at the end:", term.text, sep="\n")  # shown when a test fails
    if term.process is not None and term.process.returncode is None:
        term.process.kill()
        await term.process.wait()


async def start_client(terminal: Terminal, port: int, *args: str) -> trio.Process:
    env = {**os.environ, "TERM": "xterm-256color", "TZ": "UTC", "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-W",
        "error",  # a warning from urwid or trio, in the real program, fails the test
        "-m",
        "machat.cmd.client",
        "-client",
        "Mina",
        "-room",
        "dev",
        "-address",
        f"127.0.0.1:{port}",
        *args,
    ]
    slave = terminal.slave
    process = await trio.lowlevel.open_process(
        command, stdin=slave, stdout=slave, stderr=slave, cwd=REPO, env=env, start_new_session=True
    )
    os.close(slave)
    terminal.process = process
    return process


async def join(port: int, name: str) -> LineClient:
    client = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
    await client.handshake(name, "dev")
    await client.expect(f"* {name} joined dev")
    return client


async def test_typing_survives_arriving_lines_resize_and_quit(
    server_port: int, terminal: Terminal
) -> None:
    with trio.fail_after(TIMEOUT):
        bob = await join(server_port, "Bob")
        process = await start_client(terminal, server_port)
        await terminal.wait_text(r"\[connected\] dev │ Mina")
        await bob.expect("* Mina joined dev")
        # The member list is there at 100 columns.
        await terminal.wait_text(r"dev \(2\)")

        # Wide and combining characters take their true widths.
        await bob.send("漢字 👍 e\u0301 end")
        await terminal.wait_text(r"<Bob> 漢字 👍 (e\u0301|é) end")  # pyte composes the é

        terminal.type("half typed li")
        await terminal.wait_for(lambda: "> half typed li" in terminal.text)
        for i in range(5):
            await bob.send(f"interrupting you {i}")
        await terminal.wait_text(r"\d\d:\d\d <Bob> interrupting you 4")
        # What was typed is intact, alone on the input line, with the cursor after it.
        assert terminal.lines[-1].rstrip() == "> half typed li"
        assert terminal.screen.cursor.y == 23
        assert terminal.screen.cursor.x == len("> half typed li")
        assert not any("liBob" in line for line in terminal.lines)

        terminal.type("ne\r")
        await bob.expect("Mina:half typed line")
        await terminal.wait_text(r"<Mina> half typed line")

        # A narrower terminal re-lays the screen: the member list goes, the input stays last.
        terminal.resize(60, 16)
        await terminal.wait_for(lambda: "dev (2)" not in terminal.text)
        await terminal.wait_for(
            lambda: (
                terminal.lines[-1].startswith("> ")
                and "<Bob> interrupting you 4" in terminal.text
                and "[connected] dev │ Mina" in terminal.lines[-2]
            )
        )

        terminal.type("/quit\r")
        await bob.expect("* Mina left dev (quit)")
        assert await process.wait() == 0
        await bob.aclose()
    # The terminal is restored: the alternate screen is left and the cursor shown.
    tail = bytes(terminal.raw[-400:])
    assert b"\x1b[?1049l" in tail
    assert b"\x1b[?25h" in tail


def assert_restored(terminal: Terminal) -> None:
    tail = bytes(terminal.raw[-400:])
    assert b"\x1b[?1049l" in tail  # the alternate screen is left
    assert b"\x1b[?25h" in tail  # the cursor is shown


async def test_ctrl_c_leaves_cleanly(server_port: int, terminal: Terminal) -> None:
    with trio.fail_after(TIMEOUT):
        bob = await join(server_port, "Bob")
        process = await start_client(terminal, server_port)
        await terminal.wait_text(r"\[connected\] dev │ Mina")
        terminal.type("\x03")  # Ctrl+C is a key in the UI, not a signal
        await bob.expect("* Mina left dev (quit)")
        assert await process.wait() == 0
        await bob.aclose()
    assert_restored(terminal)


async def test_sigint_still_restores_the_terminal(server_port: int, terminal: Terminal) -> None:
    with trio.fail_after(TIMEOUT):
        process = await start_client(terminal, server_port)
        await terminal.wait_text(r"\[connected\] dev │ Mina")
        process.send_signal(signal.SIGINT)
        assert await process.wait() == 130
    assert_restored(terminal)


async def test_plain_keeps_the_line_mode(server_port: int, terminal: Terminal) -> None:
    with trio.fail_after(TIMEOUT):
        process = await start_client(terminal, server_port, "--plain")
        await terminal.wait_text(r"\* Mina joined dev")
        assert "* Welcome Mina! You are in room dev." in terminal.text
        assert b"\x1b[?1049h" not in terminal.raw  # no full screen
        terminal.type("/quit\r")
        assert await process.wait() == 0
