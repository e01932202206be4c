"""The servers a benchmark runs against: machat (with and without --db) and the anchors.

A `Target` knows how to start one instance of a server on free loopback ports and what a
load generator needs to reach it: the protocol, the ports, the pids whose CPU and memory
are the server's cost (`Running`). A server that spans several processes (a machat cluster
over N nodes) returns several ports and pids; loadgen-c takes them as
``--ports P1,P2 --server-pid PID1,PID2``. A WebSocket target would add its own protocol.

Every server is a subprocess with its output in a log file under the run's work
directory, stopped with SIGTERM (SIGKILL if it lingers).
"""

from __future__ import annotations

import abc
import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import attrs

REPO_ROOT = Path(__file__).resolve().parent.parent
ANCHORS = REPO_ROOT.parent / "shared" / "loadgen-c" / "anchors"

#: The server flags of every machat run: one machine plays every client, so the flood
#: control and the per-address and global connection caps are lifted.
MACHAT_FLAGS = ("--rate", "0", "--max-per-ip", "0", "--max-clients", "0")


@attrs.frozen
class Placement:
    """Which CPUs the servers and the load generator may run on (None: any).

    On a 2-core machine the scheduler otherwise sometimes puts the server and the
    generator on one core, and a server's batching then changes with where it ran:
    machat's burst rows were bimodal (0.053 or 0.065 us per delivery, a pass of 122 or
    94 lines on average) from one run to the next.  Every target is placed alike.
    """

    server: frozenset[int] | None = None
    generator: frozenset[int] | None = None

    @classmethod
    def parse(cls, text: str) -> Placement:
        """``auto`` (servers on the first CPU, the generator on the others, if there are
        two or more), ``off``, or ``S:G`` with comma-separated CPU numbers (``0:1``)."""
        if text == "off" or not hasattr(os, "sched_setaffinity"):
            return cls()
        if text == "auto":
            cpus = sorted(os.sched_getaffinity(0))
            if len(cpus) < 2:
                return cls()
            return cls(frozenset(cpus[:1]), frozenset(cpus[1:]))
        server, colon, generator = text.partition(":")
        try:
            placement = cls(_cpus(server), _cpus(generator))
        except ValueError:
            placement = None
        if not colon or placement is None:
            raise ValueError(f"--pin {text!r}: expected auto, off or S:G (e.g. 0:1)")
        return placement

    def describe(self) -> str:
        if self.server is None and self.generator is None:
            return "not pinned"
        return f"servers on CPU {_show(self.server)}, generator on CPU {_show(self.generator)}"

    def preexec(self, cpus: frozenset[int] | None) -> Callable[[], None] | None:
        """A ``preexec_fn`` that pins a child (and every thread it will start) to ``cpus``."""
        if cpus is None:
            return None
        return lambda: os.sched_setaffinity(0, cpus)


def _cpus(text: str) -> frozenset[int] | None:
    return frozenset(int(c) for c in text.split(",")) if text else None


def _show(cpus: frozenset[int] | None) -> str:
    return "any" if cpus is None else ",".join(map(str, sorted(cpus)))


#: Where the benchmark's processes run; `run.py` sets it from ``--pin``.
PLACEMENT = Placement()


class TargetUnavailable(Exception):
    """The server cannot be started here (not installed, no config)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@attrs.frozen
class Running:
    """A started server: where to connect and which processes are its cost."""

    host: str
    ports: tuple[int, ...]
    pids: tuple[int, ...]
    commands: tuple[str, ...]
    logs: tuple[Path, ...]
    #: Filled when the servers have stopped: (command, exit status, killed after the grace).
    exits: list[tuple[str, int, bool]] = attrs.field(factory=list, eq=False)

    def loadgen_c_args(self) -> list[str]:
        """The global loadgen-c options that aim it at this server."""
        ports = ",".join(map(str, self.ports))
        pids = ",".join(map(str, self.pids))
        where = ["--port", ports] if len(self.ports) == 1 else ["--ports", ports]
        return ["--host", self.host, *where, "--server-pid", pids]

    def log_tail(self, lines: int = 15) -> str:
        out = []
        for log in self.logs:
            with contextlib.suppress(OSError):
                text = log.read_text(errors="replace").splitlines()
                out += [f"[{log.name}] {line}" for line in text[-lines:]]
        return "\n".join(out)


class ServerProcess:
    """One server subprocess; ready once it accepts on its port, stopped with SIGTERM."""

    def __init__(
        self, argv: Sequence[str], log: Path, cwd: Path | None = None, env: dict | None = None
    ) -> None:
        self.argv = list(argv)
        self.log = log
        self.command = shlex.join(self.argv)
        self.killed = False
        self._log_file = open(log, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C at the terminal reaches run.py only
            preexec_fn=PLACEMENT.preexec(PLACEMENT.server),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_accepting(self, host: str, port: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"{self.command}\nexited with code {code} before accepting connections;"
                    f" its log:\n{self.log.read_text(errors='replace')[-2000:]}"
                )
            try:
                socket.create_connection((host, port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.command}\ndid not accept within {timeout} s"
                    ) from None
                time.sleep(0.05)

    def stop(self, grace: float = 5.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode


class Target(abc.ABC):
    """A kind of server, started afresh for every run (`start`)."""

    #: Name in tables, JSON and ``--targets``.
    name: str
    #: loadgen-c's ``--protocol``.
    protocol: ClassVar[str]
    #: The loadgen-c scenarios it can run ("fanout", "rooms", "connections").
    kinds: ClassVar[frozenset[str]] = frozenset({"fanout", "rooms", "connections"})
    #: An anchor is a reference server, not the code under test.
    anchor: ClassVar[bool] = True
    #: Lowest ``--connect-concurrency`` it copes with (ngircd listens with a backlog of 10).
    connect_concurrency: ClassVar[int | None] = None

    def check(self) -> None:
        """Raise `TargetUnavailable` if the server cannot be started on this machine."""
        return None  # machat can always be started from its checkout

    def version(self) -> str:
        return ""

    @abc.abstractmethod
    @contextlib.contextmanager
    def start(self, workdir: Path, tag: str) -> Iterator[Running]:
        """Start the server (its files under ``workdir``, named after ``tag``) and yield
        once it accepts connections; stop it on exit."""


def _version_of(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


@attrs.frozen
class ProcessSpec:
    """One process of a target, listening on ``port`` once it is ready."""

    argv: list[str]
    port: int
    #: Clients connect to it (a cluster node); False for a helper such as a backplane,
    #: whose CPU and memory still count as the target's.
    clients: bool = True
    cwd: Path | None = None
    env: dict[str, str] | None = None


@contextlib.contextmanager
def serve(specs: Sequence[ProcessSpec], workdir: Path, tag: str) -> Iterator[Running]:
    """Start the processes in order, each accepting on its port before the next starts;
    yield them as one `Running`; stop them in reverse order (SIGTERM, then SIGKILL)."""
    exits: list[tuple[str, int, bool]] = []
    with contextlib.ExitStack() as stack:
        started = []
        for i, spec in enumerate(specs):
            log = workdir / (f"{tag}.log" if len(specs) == 1 else f"{tag}.{i}.log")
            server = ServerProcess(spec.argv, log, cwd=spec.cwd, env=spec.env)
            stack.callback(lambda s=server: exits.append((s.command, s.stop(), s.killed)))
            server.wait_accepting("127.0.0.1", spec.port)
            started.append((spec, server))
        yield Running(
            "127.0.0.1",
            ports=tuple(spec.port for spec, _ in started if spec.clients),
            pids=tuple(server.pid for _, server in started),
            commands=tuple(server.command for _, server in started),
            logs=tuple(server.log for _, server in started),
            exits=exits,
        )


def machat_process(port: int, *flags: str) -> ProcessSpec:
    """``python -m machat.cmd.chatserver`` from this checkout on ``port`` with
    `MACHAT_FLAGS` and ``flags``: one node of any machat target."""
    argv = [sys.executable, "-m", "machat.cmd.chatserver", "-a", f"127.0.0.1:{port}"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return ProcessSpec([*argv, *MACHAT_FLAGS, *flags], port, cwd=REPO_ROOT, env=env)


class Machat(Target):
    """This checkout's server, one process (``--db`` on a fresh file with db=True).

    A cluster target would start a backplane (``ProcessSpec(..., clients=False)``) and N
    `machat_process` nodes with its flags, all in one `serve` call: loadgen-c then gets
    ``--ports`` with the nodes and ``--server-pid`` with every process.
    """

    protocol = "machat"
    anchor = False

    def __init__(self, db: bool = False) -> None:
        self.db = db
        self.name = "machat+db" if db else "machat"

    def version(self) -> str:
        return f"this checkout, python {sys.version.split()[0]}"

    @contextlib.contextmanager
    def start(self, workdir: Path, tag: str) -> Iterator[Running]:
        port = free_port()
        flags = ["--db", str(workdir / f"{tag}.db")] if self.db else []
        with serve([machat_process(port, *flags)], workdir, tag) as running:
            yield running


class Redis(Target):
    """Redis pub/sub, the fan-out anchor: no persistence, loopback only."""

    name = "redis"
    protocol = "redis"
    kinds = frozenset({"fanout", "connections"})  # a RESP2 subscriber cannot publish

    def check(self) -> None:
        if not shutil.which("redis-server"):
            raise TargetUnavailable("redis-server is not installed")

    def version(self) -> str:
        return _version_of(["redis-server", "--version"])

    @contextlib.contextmanager
    def start(self, workdir: Path, tag: str) -> Iterator[Running]:
        port = free_port()
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(workdir)]
        with serve([ProcessSpec(argv, port)], workdir, tag) as running:
            yield running


def _rewrite_config(src: Path, dst: Path, replacements: Sequence[tuple[str, str]]) -> None:
    text = src.read_text()
    for old, new in replacements:
        if old not in text:
            raise TargetUnavailable(f"{src}: expected {old!r} in it")
        text = text.replace(old, new)
    dst.write_text(text)


class Inspircd(Target):
    """InspIRCd 3 with ``anchors/inspircd.conf`` (its port, pid and log file rewritten)."""

    name = "inspircd"
    protocol = "irc"

    def __init__(self, config: Path = ANCHORS / "inspircd.conf") -> None:
        self.config = config

    def check(self) -> None:
        if not shutil.which("inspircd"):
            raise TargetUnavailable("inspircd is not installed")
        if not self.config.is_file():
            raise TargetUnavailable(f"no {self.config}")

    def version(self) -> str:
        return _version_of(["inspircd", "--version"])

    @contextlib.contextmanager
    def start(self, workdir: Path, tag: str) -> Iterator[Running]:
        port = free_port()
        conf = workdir / f"{tag}.conf"
        _rewrite_config(
            self.config,
            conf,
            [
                ('port="16668"', f'port="{port}"'),
                ("/tmp/inspircd.pid", str(workdir / f"{tag}.pid")),
                ("/tmp/inspircd.log", str(workdir / f"{tag}.ircd.log")),
            ],
        )
        argv = ["inspircd", "--config", str(conf), "--nofork", "--runasroot"]
        with serve([ProcessSpec(argv, port)], workdir, tag) as running:
            yield running


class Ngircd(Target):
    """ngircd with ``anchors/ngircd.conf`` (its port rewritten)."""

    name = "ngircd"
    protocol = "irc"
    connect_concurrency = 8

    def __init__(self, config: Path = ANCHORS / "ngircd.conf") -> None:
        self.config = config

    def check(self) -> None:
        if not shutil.which("ngircd"):
            raise TargetUnavailable("ngircd is not installed")
        if not self.config.is_file():
            raise TargetUnavailable(f"no {self.config}")

    def version(self) -> str:
        return _version_of(["ngircd", "--version"])

    @contextlib.contextmanager
    def start(self, workdir: Path, tag: str) -> Iterator[Running]:
        port = free_port()
        conf = workdir / f"{tag}.conf"
        _rewrite_config(self.config, conf, [("Ports = 16667", f"Ports = {port}")])
        with serve([ProcessSpec(["ngircd", "-n", "-f", str(conf)], port)], workdir, tag) as running:
            yield running


def all_targets() -> list[Target]:
    """Every known target, machat first. Add new kinds (a cluster, WebSocket) here."""
    return [Machat(), Machat(db=True), Redis(), Inspircd(), Ngircd()]
