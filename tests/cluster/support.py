"""Test support: a real ``redis-server`` (on a Unix socket or a free loopback port, in a
temporary directory; stopped with or without saving its data, or killed), a bounded
wait for state that lives in another process, and a proxy that loses a publish."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisProcess:
    """One redis-server; ``url`` stays the same across restarts."""

    def __init__(self, directory: Path, *, tcp: bool = False, extra: tuple[str, ...] = ()) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port() if tcp else 0
        self.socket = self.dir / "redis.sock"
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        if tcp:
            self.url = f"redis://127.0.0.1:{self.port}/0"
        else:
            self.url = f"unix://{self.socket}"

    def start(self) -> None:
        assert self.proc is None
        args = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--unixsocket", str(self.socket),
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(self.dir / "redis.log"),
            *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.dir / 'redis.log').read_text()}")
            if self.cli("PING", check=False) == "PONG":
                return
            time.sleep(0.02)
        self.kill()  # (not left running behind a failed test)
        raise RuntimeError("redis-server did not start within 10 s")

    def cli(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            ["redis-cli", "-s", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(proc.stderr)
        return proc.stdout.strip()

    def stop(self, *, save: bool) -> None:
        """Shut down; with ``save`` the data is written and comes back on `start`."""
        assert self.proc is not None
        self.cli("SHUTDOWN", "SAVE" if save else "NOSAVE", check=False)
        self.proc.wait(timeout=10)
        self.proc = None
        if not save:
            (self.dir / "dump.rdb").unlink(missing_ok=True)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        import os

        return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Until ``check()`` holds, asking again every 20 ms: for state that lives in another
    process (Redis), which cannot wake us."""
    with trio.fail_after(within):
        while not await check():  # noqa: ASYNC110 (nothing here to wait on)
            await trio.sleep(0.02)


ROOT = Path(__file__).resolve().parents[2]


class NodeProcess:
    """``python -m machat.cmd.chatserver --redis ...`` on 127.0.0.1 port 0, and its log."""

    def __init__(self, process: trio.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.log: list[str] = []
        self.port = 0
        self.joined = trio.Event()
        self.ended = trio.Event()
        self._logged = trio.Event()  # set (and replaced) at every line
        self.clients: list = []

    async def read_log(self) -> None:
        import re

        assert self.process.stderr is not None
        buffer = b""
        try:
            async for chunk in self.process.stderr:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    text = line.decode(errors="replace")
                    self.log.append(text)
                    self._logged.set()
                    self._logged = trio.Event()
                    found = re.search(r"listening on 127\.0\.0\.1 port (\d+)", text)
                    if found:
                        self.port = int(found[1])
                    if "cluster: node" in text and "joined through Redis" in text:
                        self.joined.set()
        finally:
            self.ended.set()

    async def logs(self, text: str) -> str:
        """Until the node logs a line holding ``text`` (from now on); returns it."""
        seen = len(self.log)
        while True:
            for line in self.log[seen:]:
                if text in line:
                    return line
            seen = len(self.log)
            await self._logged.wait()

    async def connect(self, name: str, room: str = "dev", **handshake: object):
        from tests.helpers import LineClient

        client = LineClient(await trio.open_tcp_stream("127.0.0.1", self.port))
        self.clients.append(client)
        await client.handshake(name, room, **handshake)
        return client

    async def close_clients(self) -> None:
        for client in self.clients:
            await client.aclose()

    async def join(self, name: str, room: str = "dev", **handshake: object):
        """Connect, and read up to this client's own join notice."""
        client = await self.connect(name, room, **handshake)
        await client.expect(f"* {name} joined {room}")
        return client


def node_command(url: str, name: str, *args: str) -> list[str]:
    import sys

    return [
        sys.executable, "-m", "machat.cmd.chatserver", "-a", "127.0.0.1:0", "--rate", "0",
        "--redis", url, "--node", name, *args,
    ]  # fmt: skip


class TlsRedis(RedisProcess):
    """A redis-server that speaks TLS on a free loopback port (and plain only on its
    Unix socket, for the test's own checks), with a certificate for 127.0.0.1 from a
    trustme CA whose PEM is ``ca_file``."""

    def __init__(self, directory: Path) -> None:
        import trustme

        directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1")
        self.ca_file = directory / "ca.pem"
        cert_file, key_file = directory / "cert.pem", directory / "key.pem"
        self.ca.cert_pem.write_to_path(self.ca_file)
        cert.cert_chain_pems[0].write_to_path(cert_file)
        cert.private_key_pem.write_to_path(key_file)
        self.tls_port = free_port()
        super().__init__(
            directory / "redis",
            extra=(
                "--tls-port", str(self.tls_port), "--tls-cert-file", str(cert_file),
                "--tls-key-file", str(key_file), "--tls-ca-cert-file", str(self.ca_file),
                "--tls-auth-clients", "no",
            ),
        )  # fmt: skip


class PublishCutter:
    """A loopback TCP proxy in front of a Redis's Unix socket that can cut a node's
    publish connection (the one it names ``machat-NODE-publish``) at the worst moment.

    After `cut_answer`, the next script call on it reaches Redis and its answer is
    lost (Redis ran it; the node cannot know); after `cut_request`, the call is lost
    on the way, once the node has written it.  Either way the connection is closed
    (with ``cut_answer(hold=True)``, only once `let_go` is called: the test decides
    what happens first, not the node's retry delay),
    and until `release` a new publish connection is closed as it logs in, so the
    node's retry fails too.  Every other connection passes untouched, unless
    `cut_everything` closes them all and, until `release`, every new one.
    """

    def __init__(self, redis: RedisProcess) -> None:
        self.redis = redis
        self._cut: str | None = None
        self._blocked = False
        self._all_blocked = False
        self._scopes: set[trio.CancelScope] = set()
        self.cut_done = trio.Event()
        self._held = trio.Event()
        self._held.set()

    def cut_everything(self) -> None:
        self._all_blocked = True
        for scope in self._scopes:
            scope.cancel()

    def cut_answer(self, *, hold: bool = False) -> None:
        self._cut, self.cut_done = "answer", trio.Event()
        self._held = trio.Event()
        if not hold:
            self._held.set()

    def let_go(self) -> None:
        """Close the connection whose answer was cut with ``hold=True``."""
        self._held.set()

    def cut_request(self) -> None:
        self._cut, self.cut_done = "request", trio.Event()

    def release(self) -> None:
        self._blocked = self._all_blocked = False

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            if self._all_blocked:
                return
            try:
                server = await trio.open_unix_socket(str(self.redis.socket))
            except OSError:
                return
            async with server, trio.open_nursery() as nursery:
                self._scopes.add(nursery.cancel_scope)
                cut = trio.Event()  # set: drop what Redis answers, and close
                nursery.start_soon(self._to_redis, client, server, cut, nursery.cancel_scope)
                nursery.start_soon(self._to_node, server, client, cut, nursery.cancel_scope)
            self._scopes.discard(nursery.cancel_scope)

    async def _to_redis(
        self,
        client: trio.SocketStream,
        server: trio.SocketStream,
        cut: trio.Event,
        scope: trio.CancelScope,
    ) -> None:
        publish = False
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            async for chunk in client:
                if b"-publish" in chunk:
                    publish = True
                    if self._blocked:
                        break
                if publish and self._cut is not None and b"EVAL" in chunk:
                    mode, self._cut = self._cut, None
                    self._blocked = True
                    if mode == "request":
                        self.cut_done.set()
                        break
                    cut.set()
                await server.send_all(chunk)
        scope.cancel()

    async def _to_node(
        self,
        server: trio.SocketStream,
        client: trio.SocketStream,
        cut: trio.Event,
        scope: trio.CancelScope,
    ) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            async for chunk in server:
                if cut.is_set():
                    self.cut_done.set()
                    await self._held.wait()
                    break
                await client.send_all(chunk)
        scope.cancel()
