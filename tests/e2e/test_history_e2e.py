"""History across restarts and crashes, and the transcript, with the real server command.

Rules: the server is ``python -m machat.cmd.chatserver`` on 127.0.0.1 port 0 (the port
is read from its ``listening on`` log line); every wait is bounded by trio.fail_after;
the process is always killed on the way out.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests.helpers import LineClient

ROOT = Path(__file__).resolve().parents[2]
TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


class ServerProcess:
    """A running chat server process and what it has logged so far."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.log: list[str] = []
        self.port = 0
        self.listening = trio.Event()

    async def read_log(self) -> None:
        assert self.process.stderr is not None
        buffer = b""
        async for chunk in self.process.stderr:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace")
                self.log.append(text)
                found = re.search(r"listening on 127\.0\.0\.1 port (\d+)", text)
                if found and not self.listening.is_set():
                    self.port = int(found[1])
                    self.listening.set()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def stop(self) -> int:
        """SIGTERM, then wait for the exit status."""
        self.signal(signal.SIGTERM)
        with trio.fail_after(15):
            return await self.process.wait()

    async def connect(self, name: str, room: str = "dev", **handshake: object) -> LineClient:
        client = LineClient(await trio.open_tcp_stream("127.0.0.1", self.port))
        await client.handshake(name, room, **handshake)
        return client


@asynccontextmanager
async def chatserver(*args: str | os.PathLike[str]) -> AsyncIterator[ServerProcess]:
    command = [sys.executable, "-m", "machat.cmd.chatserver", "-a", "127.0.0.1:0", "--rate", "0"]
    command += args
    process = await trio.lowlevel.open_process(
        [os.fspath(a) for a in command], stderr=subprocess.PIPE, cwd=ROOT
    )
    server = ServerProcess(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.read_log)
            try:
                with trio.fail_after(10):
                    await server.listening.wait()
            except trio.TooSlowError:
                raise AssertionError("server did not start:\n" + "\n".join(server.log)) from None
            try:
                yield server
            finally:
                if process.returncode is None:
                    process.kill()  # the reader ends when the process does
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await process.wait()
            assert process.stderr is not None
            await process.stderr.aclose()


async def join_json(
    server: ServerProcess, name: str, room: str = "dev", **extra: object
) -> tuple[LineClient, list[dict]]:
    """Join in JSON mode; returns the client and what came before its own join."""
    client = await server.connect(name, room, format="json", **extra)
    before = []
    while True:
        obj = await client.json()
        if obj == {"type": "join", "room": room, "name": name}:
            return client, before
        before.append(obj)


async def say(client: LineClient, name: str, *texts: str) -> list[dict]:
    """Send lines in JSON mode; returns the room messages echoed back for them."""
    await client.send(*texts)
    echoed = []
    while len(echoed) < len(texts):
        obj = await client.json()
        if obj["type"] == "message" and obj["from"] == name:
            echoed.append(obj)
    assert [m["text"] for m in echoed] == list(texts)
    return echoed


async def history(client: LineClient, count: int) -> dict:
    await client.send(f"/history {count}")
    while (obj := await client.json())["type"] != "history":
        pass
    return obj


async def test_history_survives_a_restart_with_original_ids_and_times(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    with trio.fail_after(30):
        async with chatserver("--db", db) as server:
            mina, _ = await join_json(server, "Mina", "dev")
            bob, _ = await join_json(server, "Bob", "ops")
            dev = await say(mina, "Mina", "one", "two", "three", "é ✓ four", "five")
            ops = await say(bob, "Bob", "hello ops")
            assert [m["id"] for m in dev] == [1, 2, 3, 4, 5]
            await mina.aclose()
            await bob.aclose()
            # Stopped right away: the last messages are still in the writer's batch.
            assert await server.stop() == 0
        assert any("history:" in line for line in server.log)

        async with chatserver("--db", db) as server:
            # The handshake's history comes right after the welcome.
            mina, before = await join_json(server, "Mina", "DEV", history=3)
            kinds = [obj["type"] for obj in before]
            assert kinds == ["welcome", "history"]
            replay = before[1]
            assert replay["messages"] == dev[-3:]
            assert (await history(mina, 500))["messages"] == dev
            assert (await history(mina, 2))["messages"] == dev[-2:]

            # Text mode: one line per message, with its UTC time.
            eve = await server.connect("Eve", "dev")
            await eve.expect("* Eve joined DEV")  # the room keeps Mina's spelling
            await eve.send("/history 2")
            lines = [await eve.line(), await eve.line()]
            assert re.fullmatch(rf"\* \[{TIME}\] Mina:é ✓ four", lines[0]), lines
            assert re.fullmatch(rf"\* \[{TIME}\] Mina:five", lines[1]), lines

            # New messages continue the ids of each room.
            (six,) = await say(mina, "Mina", "six")
            assert six["id"] == 6
            assert six["ts"] >= dev[-1]["ts"]
            bob, _ = await join_json(server, "Bob", "ops")
            assert (await history(bob, 10))["messages"] == ops
            (second,) = await say(bob, "Bob", "again")
            assert second["id"] == 2
            for client in (mina, eve, bob):
                await client.aclose()
            assert await server.stop() == 0

    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT room_key, id, text FROM messages ORDER BY 1, 2").fetchall()
    conn.close()
    texts = ["one", "two", "three", "é ✓ four", "five", "six"]
    assert rows == [("dev", i, t) for i, t in enumerate(texts, 1)] + [
        ("ops", 1, "hello ops"),
        ("ops", 2, "again"),
    ]


async def test_a_killed_server_keeps_every_message_older_than_the_batch_interval(
    tmp_path: Path,
) -> None:
    db = tmp_path / "history.db"
    margin = 0.5  # seconds; the writer commits every 0.1 s
    echoed: list[tuple[int, float]] = []  # (id, when the sender saw its echo)
    with trio.fail_after(30):
        async with chatserver("--db", db) as server:
            mina, _ = await join_json(server, "Mina", "dev")

            async def send_paced() -> None:
                try:
                    for i in range(100_000):
                        await mina.send(f"message {i}")
                        await trio.sleep(0.003)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

            async def read_echoes() -> None:
                try:
                    while True:
                        obj = await mina.json()
                        if obj["type"] == "message":
                            echoed.append((obj["id"], trio.current_time()))
                except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_paced)
                nursery.start_soon(read_echoes)
                await trio.sleep(1.5)
                killed_at = trio.current_time()
                server.signal(signal.SIGKILL)
                with trio.fail_after(10):
                    assert await server.process.wait() == -signal.SIGKILL
                await trio.sleep(0.2)
                nursery.cancel_scope.cancel()
            await mina.aclose()

        must_have = {i for i, seen in echoed if seen <= killed_at - margin}
        assert len(must_have) > 50, echoed[:5]
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            stored = {row[0] for row in conn.execute("SELECT id FROM messages")}
        conn.close()
        assert must_have <= stored, sorted(must_have - stored)[:10]
        assert stored <= {i for i, _ in echoed}
        assert sorted(stored) == list(range(1, len(stored) + 1))

        async with chatserver("--db", db) as server:
            mina, _ = await join_json(server, "Mina", "dev")
            replay = (await history(mina, 500))["messages"]
            assert [m["id"] for m in replay] == sorted(stored)[-500:]
            (after,) = await say(mina, "Mina", "after the crash")
            assert after["id"] == max(stored) + 1
            await mina.aclose()
            assert await server.stop() == 0


def read_lines(path: Path) -> list[str] | None:
    """The file's lines, or None if it does not exist."""
    try:
        return path.read_text("utf-8").splitlines()
    except FileNotFoundError:
        return None


async def wait_for_line(path: Path, pattern: str) -> None:
    """Poll the file another process writes until a line matches ``pattern``.

    ``""`` only waits for the file to exist.
    """
    while True:
        lines = read_lines(path)
        if lines is not None and (
            not pattern or any(re.fullmatch(pattern, line) for line in lines)
        ):
            return
        await trio.sleep(0.02)


def rotate(path: Path) -> Path:
    """What logrotate does before it sends SIGHUP: rename the file."""
    rotated = path.with_name(path.name + ".1")
    path.rename(rotated)
    return rotated


async def test_transcript_is_written_and_reopened_on_sighup(tmp_path: Path) -> None:
    log = tmp_path / "chat.log"
    with trio.fail_after(30):
        async with chatserver("--transcript", log) as server:
            mina = await server.connect("Mina", "dev")
            await mina.expect("* Mina joined dev")
            await mina.send("one")
            await mina.expect("Mina:one")
            await wait_for_line(log, rf"{TIME} \[dev\] <Mina> one")

            rotated = rotate(log)
            server.signal(signal.SIGHUP)
            await wait_for_line(log, "")  # reopened promptly, even with nothing to write
            await mina.send("two")
            await mina.expect("Mina:two")
            await mina.send("/nick Mia")
            await wait_for_line(log, rf"{TIME} \[dev\] \* Mina is now known as Mia")
            assert await server.stop() == 0
            await mina.aclose()
        assert any("received SIGHUP" in line for line in server.log)

    old, new = read_lines(rotated), read_lines(log)
    assert all(re.match(TIME + " ", line) for line in old + new)
    assert [line[20:] for line in old] == ["[dev] * Mina joined", "[dev] <Mina> one"]
    assert [line[20:] for line in new[:2]] == [
        "[dev] <Mina> two",
        "[dev] * Mina is now known as Mia",
    ]
    assert new[-1][20:].startswith("[dev] * Mia left")
