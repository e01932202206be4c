"""The client asks for a registered name's password on its terminal, without echo.

The real ``python -m machat.cmd.client --plain`` runs on the slave side of a
pseudo-terminal (its controlling terminal, as getpass needs); the server runs in
this process on 127.0.0.1, port 0.  Every wait is bounded by trio.fail_after.
"""

from __future__ import annotations

import fcntl
import os
import pty
import sys
import termios
from pathlib import Path

import pytest
import trio

from .conftest import Chat, register

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")


def _controlling_terminal() -> None:
    """In the child: a new session, with the pty (its stdin) as controlling terminal."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def test_the_client_prompts_without_echo_after_a_114(chat: Chat) -> None:
    master, slave = pty.openpty()
    output = bytearray()
    with trio.fail_after(30):
        await register(chat, "Mina", "correct-horse")
        terminal = trio.lowlevel.FdStream(os.dup(master))
        os.close(master)
        process = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "machat.cmd.client",
                "--plain",
                "-client",
                "Mina",
                "-room",
                "dev",
                "-address",
                f"127.0.0.1:{chat.port}",
            ],  # fmt: skip
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=REPO,
            env={**os.environ, "MACHAT_AUTH": ""},
            preexec_fn=_controlling_terminal,
        )
        os.close(slave)

        async def until(wanted: bytes) -> None:
            while wanted not in output:
                try:
                    chunk = await terminal.receive_some(4096)
                except OSError:  # EIO: the child closed the pty
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"{wanted!r} never came: {bytes(output)!r}")
                output.extend(chunk)

        try:
            await until(b"password for Mina: ")
            assert b"! ERROR 114 name registered: Mina is registered" in output
            await terminal.send_all(b"correct-horse\n")
            await until(b"* Welcome Mina!")
            await until(b"* Mina joined dev")
            await terminal.send_all(b"/quit\n")
            assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await terminal.aclose()
    assert b"correct-horse" not in output  # not echoed
