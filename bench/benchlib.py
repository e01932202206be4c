"""What the benchmark scripts share: the server subprocess, /proc readings, the handshake.

Imported by ``loadgen.py`` and ``idle.py`` (run as ``python bench/<script>.py``, so this
directory is on ``sys.path``). Standard library and trio only: the scripts talk to the
server over the wire, they never import machat.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

__all__ = [
    "REPO_ROOT",
    "JoinRefused",
    "ServerProcess",
    "cpu_seconds",
    "join",
    "machine_busy_seconds",
    "machine_info",
    "parse_address",
    "raise_nofile_limit",
    "rss_kib",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------
# The process side: limits, /proc, the server subprocess


def raise_nofile_limit() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; return (soft, hard) after.

    A server started by these scripts inherits the raised limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, from /proc/<pid>/stat (clock-tick resolution)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLK_TCK


def machine_busy_seconds() -> tuple[float, float]:
    """CPU time the whole machine spent busy (all cores), and the part of it spent in
    interrupts and softirqs (loopback TCP is partly processed there), from /proc/stat."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = (
            int(x) for x in f.readline().split()[1:9]
        )
    busy = user + nice + system + irq + softirq + steal
    return busy / CLK_TCK, (irq + softirq) / CLK_TCK


def _status_field(pid: int, name: str) -> int | None:
    """A number of /proc/<pid>/status (its first word after ``name:``)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kib(pid: int) -> int | None:
    """Resident set size (VmRSS) of a process in KiB, from /proc/<pid>/status."""
    return _status_field(pid, "VmRSS")


def sleeps(pid: int) -> int | None:
    """How many times a process's main thread has gone to sleep (its voluntary context
    switches: each is a wake-up later, into cold caches when other processes ran
    meanwhile), from /proc/<pid>/status."""
    return _status_field(pid, "voluntary_ctxt_switches")


def machine_info() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
    }


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected host:port, got {text!r}")
    return host.strip("[]"), int(port)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m <module> -a host:port <flags>`` on a free loopback port.

    Output goes to a temporary log file (a pipe nobody reads would fill and stall it).
    Use as a context manager; the server is stopped with SIGINT, then killed if it lingers.
    """

    def __init__(
        self,
        flags: list[str],
        module: str = "machat.cmd.chatserver",
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.killed = False
        self.port = _free_port(host)
        self.argv = [sys.executable, "-m", module, "-a", f"{host}:{self.port}", *flags]
        self._log = tempfile.NamedTemporaryFile(prefix="machat-bench-", suffix=".log")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        self.proc = subprocess.Popen(
            self.argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def command(self) -> str:
        return shlex.join(self.argv[1:])

    def log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Block until the server accepts a TCP connection; raise if it exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"server exited with code {code} before accepting connections:\n"
                    f"  {self.command}\n{self.log_tail()}"
                )
            try:
                socket.create_connection(self.address, timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"server did not accept within {timeout} s:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.05)

    def stop(self, grace: float = 2.0) -> int | None:
        """SIGINT, then SIGKILL after ``grace`` seconds; sets `killed` if it came to that."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._log.close()


# ---------------------------------------------------------------------------------------
# The wire side: the handshake


class JoinRefused(Exception):
    """The server answered the handshake with an ``! ...`` error line (or closed)."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line

    @property
    def code(self) -> int | None:
        parts = self.line.split()
        if len(parts) >= 3 and parts[0] == "!" and parts[1] == "ERROR" and parts[2].isdigit():
            return int(parts[2])
        return None


async def join(stream: trio.abc.Stream, name: str, room: str) -> bytes:
    """Send the handshake and read up to the welcome notice (the first line).

    Returns whatever arrived after the welcome line. Raises `JoinRefused` if the server
    answers with an error line or closes the connection first.
    """
    hello = json.dumps({"name": name, "room": room}, separators=(",", ":")) + "\n"
    await stream.send_all(hello.encode())
    buf = b""
    while True:
        i = buf.find(b"\n")
        if i >= 0:
            first, rest = buf[:i], buf[i + 1 :]
            if first.startswith(b"* "):
                return rest
            raise JoinRefused(first.decode("utf-8", "replace"))
        data = await stream.receive_some(65536)
        if not data:
            raise JoinRefused(f"connection closed during handshake ({buf[:200]!r})")
        buf += data
