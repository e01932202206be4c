"""``python -m machat.cmd.chatserver -a localhost:8989``: run the chat server."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import re
import signal
import socket
import sqlite3
import ssl
import sys
from typing import TYPE_CHECKING

import attrs
import trio

from ..address import parse_address
from ..cluster.errors import ClusterUnavailable
from ..cluster.url import check_url
from ..config_file import ConfigError, given_on_command_line, keys_of, merge, read_config
from ..server import ChatServer, ServerConfig

if TYPE_CHECKING:
    from ..cluster.backplane import ClusterConfig

logger = logging.getLogger("machat.server")

_DEFAULTS = ServerConfig()

#: Allocations between two collections of the garbage collector's youngest generation
#: (CPython's default is 700).  See `settle_garbage_collector`.
YOUNG_COLLECTION_THRESHOLD = 50_000


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="machat-server",
        description="Run the machat chat server. Every limit has a flag; 0 lifts the "
        "ones that say so.",
    )
    p.add_argument(
        "-a", "--address", "-tcp", dest="address", default="localhost:8989",
        help="host:port to listen on (default localhost:8989; -tcp is MaChat's spelling)",
    )  # fmt: skip
    web = p.add_argument_group("web client and WebSocket (also served on the chat port)")
    web.add_argument(
        "-ws", "--ws", dest="ws", metavar="HOST:PORT",
        help="one more listener for the web page and ws://HOST:PORT/mychat "
        "(MaChat's -ws, e.g. localhost:8099)",
    )  # fmt: skip
    web.add_argument(
        "--ws-origin", dest="ws_origin", action="append", default=[], metavar="ORIGIN",
        help="let pages from ORIGIN (e.g. https://chat.example.org) open the chat; "
        "repeatable; '*' allows any (default: only the page's own origin, or no Origin)",
    )  # fmt: skip
    limits = p.add_argument_group("limits")

    def limit(flag: str, kind: type, metavar: str, text: str) -> None:
        default = getattr(_DEFAULTS, flag.lstrip("-").replace("-", "_"))
        limits.add_argument(
            flag, type=kind, default=default, metavar=metavar, help=f"{text} (default {default})"
        )

    limit("--max-line", int, "BYTES", "longest accepted line")
    limit("--handshake-timeout", float, "SECONDS", "time allowed to complete the handshake")
    limit("--outbox-limit", int, "BYTES", "pending output per client before it is evicted")
    limit("--rate", float, "LINES_PER_S", "flood control: lines per second per client, 0: off")
    limit("--burst", int, "N", "flood control: lines a client may send at once")
    limit("--max-clients", int, "N", "connections in all, 0: unlimited")
    limit("--max-per-ip", int, "N", "connections from one address, 0: unlimited")
    limit("--idle-timeout", float, "SECONDS", "disconnect clients silent this long, 0: never")
    limit("--history-limit", int, "N", "messages kept in memory per room for /history")
    limit(
        "--fanout-interval",
        float,
        "SECONDS",
        "a room of 100+ members whose last fan-out carried 8 lines or fewer waits this long "
        "after it (longer with its size, up to twice at 200+), so paced lines share one "
        "write per member (with --redis, every room waits this long; a busy room of "
        "16+ members here also holds what other nodes send up to 1 ms, or this if less); "
        "0: never waits",
    )
    limit("--stats-interval", float, "SECONDS", "log statistics this often, 0: never")
    p.add_argument(
        "--db",
        metavar="PATH",
        help="keep history, accounts, bans and topics in this SQLite file",
    )
    p.add_argument(
        "--transcript", metavar="PATH", help="append a human-readable log here (SIGHUP reopens)"
    )
    p.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate chain")
    p.add_argument("--tls-key", metavar="PEM", help="the private key for --tls-cert")
    p.add_argument(
        "--password-file",
        metavar="PATH",
        help="require the password in this file (first line) from every client; "
        "MACHAT_PASSWORD in the environment does the same",
    )
    p.add_argument("--motd", default="", help="a message of the day shown after the welcome")
    cluster = p.add_argument_group("cluster (several nodes as one server, through Redis)")
    cluster.add_argument(
        "--redis",
        metavar="URL",
        help="join the cluster this Redis holds: redis://HOST:PORT/DB or unix:///PATH",
    )
    cluster.add_argument(
        "--node",
        metavar="NAME",
        help="this node's name, unique in the cluster (default: HOST-PORT)",
    )
    cluster.add_argument(
        "--presence-ttl",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="a node that dies is noticed, and its users' names freed, within this (default 10)",
    )
    p.add_argument(
        "--operator",
        dest="operators",
        action="append",
        default=[],
        metavar="NAME",
        help="a registered name that may /kick, /ban, /mute and set /topic while logged in "
        "(repeatable; config key: operators)",
    )
    p.add_argument(
        "--exit-when-empty",
        action="store_true",
        help="shut down (exit 0) once the last client leaves, after at least one joined",
    )
    p.add_argument(
        "--config",
        metavar="PATH",
        help="read settings from this TOML file: a key per flag (max-per-ip = 100); "
        "flags given here win; SIGHUP re-reads it",
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default INFO; message bodies are only logged at DEBUG",
    )
    return p


def read_password(path: str | None) -> str | None:
    """The server password: from ``--password-file`` (first line), else the environment."""
    if path is not None:
        with open(path, encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
        if not password:
            raise ValueError(f"password file {path} is empty")
        return password
    return os.environ.get("MACHAT_PASSWORD") or None


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None:
        raise ValueError("--tls-key needs --tls-cert")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        files = cert if key is None else f"{cert} and {key}"
        raise ValueError(f"cannot load the TLS certificate from {files}: {exc}") from None
    return context


class StartupError(Exception):
    """The server could not start; the text says why, in one line."""


_NODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)


@attrs.frozen
class ClusterOptions:
    """``--redis``, ``--node``, ``--presence-ttl``; the node's default name needs the port."""

    url: str
    node: str | None
    presence_ttl: float

    def config(self, server: ServerConfig) -> ClusterConfig:
        """The backplane's settings, with those it takes from the server's: the
        stream keeps ``history_limit`` messages, and a room's deliveries wait for
        the other nodes' batches no longer than ``fanout_interval`` lets its passes."""
        from ..cluster.backplane import GATHER, ClusterConfig  # loads the Redis client

        node = self.node
        if node is None:  # HOST-PORT, or HOST-pPID for a port the system picks
            host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()).lstrip("_.-")
            node = f"{host or 'node'}-{server.port or f'p{os.getpid()}'}"
        return ClusterConfig(
            url=self.url,
            node=node,
            presence_ttl=self.presence_ttl,
            stream_length=server.history_limit,
            gather=min(GATHER, server.fanout_interval),
        )


def cluster_from_args(args: argparse.Namespace) -> ClusterOptions | None:
    if args.redis is None:
        if args.node is not None:
            raise ValueError("--node needs --redis")
        return None
    check_url(args.redis)
    if args.node is not None and not _NODE_RE.fullmatch(args.node):
        raise ValueError(
            f"--node {args.node!r}: 1-64 letters, digits, '_', '.' or '-', not starting "
            "with '_', '.' or '-'"
        )
    if not 1 <= args.presence_ttl <= 3600:
        raise ValueError("--presence-ttl must be between 1 and 3600 seconds")
    return ClusterOptions(args.redis, args.node, args.presence_ttl)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    host, port = parse_address(args.address, allow_zero=True)
    ws = parse_address(args.ws, 8099, allow_zero=True) if args.ws else None
    for name in ("max_line", "handshake_timeout", "outbox_limit", "history_limit"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive")
    for name in (
        "rate",
        "burst",
        "max_clients",
        "max_per_ip",
        "idle_timeout",
        "stats_interval",
        "fanout_interval",
    ):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must not be negative")
    return ServerConfig(
        host=host,
        port=port,
        max_line=args.max_line,
        handshake_timeout=args.handshake_timeout,
        outbox_limit=args.outbox_limit,
        fanout_interval=args.fanout_interval,
        rate=args.rate,
        burst=max(args.burst, 1),
        max_clients=args.max_clients,
        max_per_ip=args.max_per_ip,
        idle_timeout=args.idle_timeout,
        history_limit=args.history_limit,
        stats_interval=args.stats_interval,
        db_path=args.db,
        transcript_path=args.transcript,
        ssl_context=tls_context(args.tls_cert, args.tls_key),
        motd=args.motd,
        password=read_password(args.password_file),
        operators=tuple(args.operators),
        exit_when_empty=args.exit_when_empty,
        ws_address=ws,
        ws_origins=tuple(args.ws_origin),
    )


#: Settings that SIGHUP applies to the running server (to new connections, for the
#: per-connection limits); a change to any other needs a restart.
RELOADABLE = (
    "motd",
    "operators",
    "max_clients",
    "max_per_ip",
    "rate",
    "burst",
    "idle_timeout",
    "handshake_timeout",
    "outbox_limit",
    "max_line",
)
#: Settings not compared on reload (built afresh each time, or not settings at all).
_NOT_COMPARED = frozenset({"ssl_context", "password", "flush_timeout", "max_handshake"})


_KEYS = {"db_path": "db", "transcript_path": "transcript", "host": "address", "port": "address"}


def _key(field: str) -> str:
    """The config key (and flag) of a `ServerConfig` field."""
    return _KEYS.get(field, field.replace("_", "-"))


def reconfigure(server: ChatServer, new: ServerConfig) -> list[str]:
    """Apply the reloadable settings of ``new`` to ``server``; returns what to log."""
    old = server.config
    changes = {f: getattr(new, f) for f in RELOADABLE if getattr(new, f) != getattr(old, f)}
    server.config = attrs.evolve(old, **changes)
    if "operators" in changes:
        server.moderation.set_operators(new.operators)
    report = [f"{_key(f)}: {getattr(old, f)!r} -> {value!r}" for f, value in changes.items()]
    for field in attrs.fields(ServerConfig):
        name = field.name
        if name in RELOADABLE or name in _NOT_COMPARED:
            continue
        if getattr(new, name) != getattr(old, name):
            report.append(f"{_key(name)}: changed, but only a restart applies it")
    return report


@attrs.frozen
class Reloader:
    """Re-reads the config file on SIGHUP, under the same command line."""

    path: str
    parser: argparse.ArgumentParser
    args: argparse.Namespace  # the command line alone
    pinned: frozenset[str]  # the dests it gave: the file does not override them

    def reload(self, server: ChatServer) -> None:
        try:
            values = read_config(self.path, keys_of(self.parser))
            config = config_from_args(merge(self.args, values, set(self.pinned)))
        except (ConfigError, ValueError, OSError, ssl.SSLError) as exc:
            logger.warning("SIGHUP: %s; the settings stay as they were", exc)
            return
        report = reconfigure(server, config)
        if not report:
            logger.info("SIGHUP: re-read %s: nothing changed", self.path)
        for line in report:
            logger.info("SIGHUP: re-read %s: %s", self.path, line)


def settle_garbage_collector() -> None:
    """Tune the garbage collector for a server, once its long-lived state is loaded.

    Everything alive now (modules, the loaded history) lives as long as the
    process: frozen, it stays out of the collector's full passes, which would
    otherwise walk it again and again while people chat.

    And the youngest generation is collected after 50,000 allocations, not 700.
    Every read a connection waits for leaves a dozen new objects alive (its
    coroutines, trio's wait records), so with a thousand people chatting the young
    generation always holds some 17,000 of them, and CPython walks them all at
    every 700 allocations: in `bench/run.py`'s rooms10 (1,000 clients, 10 lines/s
    each) that was 470 collections, 0.7-1.2 s of the server's 6-8 s of CPU, and
    the run's p99 latency rose from about 40 ms to 55-60.  At 50,000 that run makes
    3 collections, 40 ms in all.  Each is a longer pause (about 14 ms, walking some
    67,000 objects, against 2 ms), but few; and cyclic garbage waits longer to be
    freed, at most 50,000 allocations' worth (`MemoryReleaser` collects everything
    after a crowd leaves).
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


async def run_server(
    config: ServerConfig,
    reloader: Reloader | None = None,
    cluster: ClusterOptions | None = None,
) -> None:
    server: ChatServer
    if cluster is None:
        server = ChatServer(config)
    else:
        from ..cluster.node import ClusterServer  # loads the Redis client

        server = ClusterServer(config, cluster.config(config))
    server.open_archives()
    settle_garbage_collector()
    signals_wanted = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    # Signals are caught before the port is announced: whoever waits for that line
    # may signal at once.
    with trio.open_signal_receiver(*signals_wanted) as signals:
        listeners = await trio.open_tcp_listeners(config.port, host=config.host)
        if config.ws_address is not None:
            # The same service on one more port: the page, /mychat, and chat too.
            ws_host, ws_port = config.ws_address
            listeners += await trio.open_tcp_listeners(ws_port, host=ws_host)
        for listener in listeners:
            host, port, *_ = listener.socket.getsockname()
            logger.info("listening on %s port %d", host, port)
        if config.ssl_context is not None:
            logger.info("serving TLS")
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                async for signum in signals:
                    logger.info("received %s", signal.Signals(signum).name)
                    if signum == signal.SIGHUP:
                        server.reopen_logs()
                        if reloader is not None:
                            reloader.reload(server)
                        continue
                    if server.shutting_down:
                        logger.warning("second signal: stopping now")
                        nursery.cancel_scope.cancel()
                    server.shutdown()

            nursery.start_soon(watch_signals)
            await server.serve(listeners)
            nursery.cancel_scope.cancel()


def serve_forever(
    config: ServerConfig, reloader: Reloader | None, cluster: ClusterOptions | None
) -> None:
    """`run_server` under trio; a node that cannot join its cluster: `StartupError`."""
    try:
        trio.run(run_server, config, reloader, cluster)
    except* ClusterUnavailable as group:
        failure: BaseException = group
        while isinstance(failure, BaseExceptionGroup):
            failure = failure.exceptions[0]
        raise StartupError(str(failure)) from None


def raise_open_file_limit() -> None:
    """Allow as many sockets as the system lets this process have (one per client)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = command_line = parser.parse_args(argv)
    reloader = None
    if args.config is not None:
        pinned = given_on_command_line(parser, argv)
        try:
            args = merge(args, read_config(args.config, keys_of(parser)), pinned)
        except ConfigError as exc:
            sys.stderr.write(f"{parser.prog}: error: {exc}\n")
            return 2
        reloader = Reloader(args.config, parser, command_line, frozenset(pinned))
    try:
        config = config_from_args(args)
        cluster = cluster_from_args(args)
    except (ValueError, OSError, ssl.SSLError) as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # coredis logs every retry and dropped connection at INFO (with tracebacks); the
    # cluster says what matters itself, on the machat.cluster logger.
    logging.getLogger("coredis").setLevel(max(logging.WARNING, logging.root.level))
    raise_open_file_limit()
    try:
        serve_forever(config, reloader, cluster)
    except StartupError as exc:
        logger.error("cannot start: %s", exc)
        return 1
    except OSError as exc:
        where = exc.filename or args.address
        logger.error("cannot start: %s: %s", where, exc.strerror or exc)
        return 1
    except sqlite3.Error as exc:
        logger.error("cannot open the database %s: %s", args.db, exc)
        return 1
    logger.info("bye")
    return 0


if __name__ == "__main__":
    sys.exit(main())
