"""``machat-server`` as users run it: the config file, a flag over it, SIGHUP, exit-when-empty.

Rules: 127.0.0.1 only, port 0 (the server logs the port it got), every wait bounded
(subprocess timeouts, ``trio.fail_after``, and a deadline on every read of the
server's log).
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from machat.cmd.chatserver import build_parser
from machat.config_file import keys_of, read_config
from tests.helpers import LineClient

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "machat.example.toml"


class ServerProcess:
    """``python -m machat.cmd.chatserver ARGS``, with its log read line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "machat.cmd.chatserver", *args],
            stderr=subprocess.PIPE,
            cwd=REPO,
        )
        self._buffer = b""
        self.log: list[str] = []

    def wait_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Read the log until a line matches ``pattern``; fail after ``timeout`` seconds."""
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\n", 1)
                line = raw.decode()
                self.log.append(line)
                match = re.search(pattern, line)
                if match:
                    return match
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no log line matching {pattern!r} in:\n" + "\n".join(self.log)
                )
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError("the server exited:\n" + "\n".join(self.log))
                self._buffer += chunk

    def port(self) -> int:
        return int(self.wait_log(r"listening on 127\.0\.0\.1 port (\d+)").group(1))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            assert self.proc.stderr is not None
            self.proc.stderr.close()


async def connect(port: int, name: str, **extra: object) -> tuple[LineClient, list[str]]:
    """Handshake as ``name``: the client, and the lines up to its join (or the refusal)."""
    client = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
    await client.handshake(name, "dev", **extra)
    lines = [await client.line()]
    if lines[0].startswith("* Welcome"):
        lines += await client.expect(f"* {name} joined dev")
    else:
        lines += await client.until_closed()
    return client, lines


def test_config_file_a_flag_over_it_and_sighup(tmp_path: Path) -> None:
    config = tmp_path / "machat.toml"
    db = tmp_path / "chat.db"
    config.write_text(
        'address = "127.0.0.1:0"\n'
        'motd = "from the file"\n'
        "max-per-ip = 2\n"
        f"db = {str(db)!r}\n"
        'operators = ["Mina"]\n'
        "stats-interval = 0\n"
    )
    server = ServerProcess("--config", str(config), "--motd", "from the flag")
    try:
        port = server.port()

        async def before_reload() -> None:
            with trio.fail_after(20):
                mina, lines = await connect(port, "Mina")
                assert lines[1] == "* from the flag"  # the flag wins over the file
                await mina.send("/register mina-password")
                await mina.expect_prefix("* Mina is registered to you")
                oskar, _ = await connect(port, "Oskar")
                await oskar.send("/register oskar-password")
                await oskar.expect_prefix("* Oskar is registered to you")
                # max-per-ip = 2, from the file: a third is refused before its handshake.
                third = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
                assert await third.until_closed() == [
                    "! ERROR 109 server full: too many connections from your address (limit 2)"
                ]
                for client in (mina, oskar, third):
                    await client.aclose()

        trio.run(before_reload)
        config.write_text(
            'address = "127.0.0.1:0"\n'
            'motd = "changed in the file"\n'
            "max-per-ip = 3\n"
            f"db = {str(tmp_path / 'other.db')!r}\n"
            'operators = ["Mina", "Oskar"]\n'
            "stats-interval = 0\n"
        )
        server.proc.send_signal(signal.SIGHUP)
        server.wait_log(r"SIGHUP: re-read .*: db: changed, but only a restart applies it")
        reload = [line.split(": ", 3)[-1] for line in server.log if "SIGHUP: re-read" in line]
        assert reload == [
            "operators: ('Mina',) -> ('Mina', 'Oskar')",
            "max-per-ip: 2 -> 3",
            "db: changed, but only a restart applies it",
        ]  # and not the motd: the flag pinned it

        async def after_reload() -> None:
            with trio.fail_after(20):
                clients = []
                for name in ["A", "B"]:
                    client, lines = await connect(port, name)
                    assert lines[1] == "* from the flag"
                    clients.append(client)
                # The third from one address is welcome now, and an operator.
                oskar, lines = await connect(port, "Oskar", auth="oskar-password")
                assert lines[1] == "* from the flag"
                await oskar.send("/topic Oskar is an operator now")
                await oskar.expect("* topic of dev: Oskar is an operator now (set by Oskar)")
                for client in [*clients, oskar]:
                    await client.aclose()

        trio.run(after_reload)
    finally:
        assert server.stop() == 0
    # The database named first is the one in use: the reload did not switch it.
    assert db.exists() and not (tmp_path / "other.db").exists()


def test_a_broken_config_after_start_keeps_the_settings(tmp_path: Path) -> None:
    config = tmp_path / "machat.toml"
    config.write_text('address = "127.0.0.1:0"\nstats-interval = 0\n')
    server = ServerProcess("--config", str(config))
    try:
        server.port()
        config.write_text('address = "127.0.0.1:0"\nmax-per-ip = "lots"\n')
        server.proc.send_signal(signal.SIGHUP)
        server.wait_log(
            r"SIGHUP: .*: key max-per-ip: expected an integer, not a string; "
            r"the settings stay as they were"
        )
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('max-per-ip = "many"', "key max-per-ip: expected an integer, not a string"),
        ("colour = 1", "unknown key colour"),
        ("operators = [1]", "key operators[0]: expected a string, not an integer"),
        ('log-level = "LOUD"', "key log-level: expected one of 'DEBUG', 'INFO', 'WARNING', "),
        ("exit-when-empty = 1", "key exit-when-empty: expected true or false, not an integer"),
    ],
)
def test_a_bad_config_exits_2_with_one_line_naming_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "machat.cmd.chatserver", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"machat-server: error: {config}: {message}")


def test_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "machat.cmd.chatserver", "--config", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("machat-server: error: cannot read the config file ")
    assert len(result.stderr.splitlines()) == 1


def test_exit_when_empty(tmp_path: Path) -> None:
    server = ServerProcess("-a", "127.0.0.1:0", "--exit-when-empty", "--stats-interval", "0")
    try:
        port = server.port()

        async def visit() -> None:
            with trio.fail_after(10):
                mina, _ = await connect(port, "Mina")
                bob, _ = await connect(port, "Bob")
                await mina.send("/quit")
                await mina.until_closed()
                await bob.send("/quit")
                await bob.until_closed()
                await mina.aclose()
                await bob.aclose()

        trio.run(visit)
        assert server.proc.wait(timeout=10) == 0  # by itself, no signal
        server.wait_log(r"the last client left: shutting down")
    finally:
        server.stop()


def test_the_example_config_documents_every_key_with_its_default() -> None:
    parser = build_parser()
    keys = keys_of(parser)
    text = EXAMPLE.read_text()
    for name in keys:
        assert re.search(rf"^(# )?{re.escape(name)} = ", text, re.MULTILINE), name
    defaults = parser.parse_args([])
    for dest, value in read_config(str(EXAMPLE), keys).items():
        assert getattr(defaults, dest) == value, dest
