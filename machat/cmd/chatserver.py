"""``python -m machat.cmd.chatserver -a localhost:8989``: run the chat server."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import trio

from ..address import parse_address
from ..server import ChatServer, ServerConfig

logger = logging.getLogger("machat.server")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="machat-server", description="Run the machat chat server.")
    p.add_argument(
        "-a",
        "--address",
        "-tcp",
        dest="address",
        default="localhost:8989",
        help="host:port to listen on (default localhost:8989; -tcp is MaChat's spelling)",
    )
    p.add_argument(
        "--max-line",
        type=int,
        default=4096,
        metavar="BYTES",
        help="longest accepted line (default 4096)",
    )
    p.add_argument(
        "--handshake-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="time allowed for the handshake (default 10)",
    )
    p.add_argument(
        "--outbox-limit",
        type=int,
        default=1 << 20,
        metavar="BYTES",
        help="pending output per client before it is evicted as too slow (default 1 MiB)",
    )
    p.add_argument(
        "--password-file",
        metavar="PATH",
        help="require the password in this file (first line) from every client; "
        "MACHAT_PASSWORD in the environment does the same",
    )
    p.add_argument("--motd", default="", help="a message of the day shown after the welcome")
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default INFO",
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


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    host, port = parse_address(args.address, allow_zero=True)
    return ServerConfig(
        host=host,
        port=port,
        max_line=args.max_line,
        handshake_timeout=args.handshake_timeout,
        outbox_limit=args.outbox_limit,
        motd=args.motd,
        password=read_password(args.password_file),
    )


async def run_server(config: ServerConfig) -> None:
    server = ChatServer(config)
    listeners = await trio.open_tcp_listeners(config.port, host=config.host)
    for listener in listeners:
        host, port, *_ = listener.socket.getsockname()
        logger.info("listening on %s port %d", host, port)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                async for signum in signals:
                    logger.info("received %s", signal.Signals(signum).name)
                    if server.shutting_down:
                        logger.warning("second signal: stopping now")
                        nursery.cancel_scope.cancel()
                    server.shutdown()

            nursery.start_soon(watch_signals)
            await server.serve(listeners)
            nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        trio.run(run_server, config)
    except OSError as exc:
        logger.error("cannot listen on %s: %s", args.address, exc.strerror or exc)
        return 1
    logger.info("bye")
    return 0


if __name__ == "__main__":
    sys.exit(main())
