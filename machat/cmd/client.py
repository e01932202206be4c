"""``python -m machat.cmd.client -client Mina -room dev``: the terminal chat client.

Every flag takes the Go spelling (``-room dev``) and the GNU one (``--room dev``).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
from collections.abc import Mapping, Sequence

import trio

from machat import client
from machat.client import ClientConfig, parse_address
from machat.client.auth import AUTH_ENV, read_auth_file
from machat.protocol.formatting import Format
from machat.protocol.handshake import DEFAULT_ROOM

__all__ = ["build_parser", "main", "parse_args"]

logger = logging.getLogger("machat.cmd.client")

PASSWORD_ENV = "MACHAT_PASSWORD"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _history(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, not {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="machat",
        description="Chat in a machat room from the terminal. Type /help once connected.",
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("-client", "--client", metavar="NAME", help="your name (default: User<0-399>)")
    add("-room", "--room", default=DEFAULT_ROOM, help="room to join (default: %(default)s)")
    add(
        "-address",
        "--address",
        type=_address,
        default="localhost:8989",
        metavar="HOST:PORT",
        help="server address, IPv6 as [::1]:8989 (default: %(default)s)",
    )
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument("-password", "--password", help=f"server password (also: ${PASSWORD_ENV})")
    secret.add_argument(
        "-password-file", "--password-file", metavar="PATH", help="read the password from PATH"
    )
    add(
        "-auth-file",
        "--auth-file",
        metavar="PATH",
        help=f"the password of your registered name, from PATH (also: ${AUTH_ENV}; "
        "otherwise asked for on a terminal when the server wants it)",
    )
    add("-tls", "--tls", action="store_true", help="connect with TLS")
    add("-cafile", "--cafile", metavar="PEM", help="trust these CA certificates (implies --tls)")
    add(
        "-insecure",
        "--insecure",
        action="store_true",
        help="TLS without verifying the server's certificate (implies --tls)",
    )
    add(
        "-history",
        "--history",
        type=_history,
        default=0,
        metavar="N",
        help="show the last N messages of the room on joining",
    )
    add("-json", "--json", action="store_true", help="JSON format: one object a line")
    add(
        "-plain",
        "--plain",
        action="store_true",
        help="line mode even on a terminal (the default when stdin or stdout is not one)",
    )
    add("-no-bell", "--no-bell", action="store_true", help="full-screen UI: no bell on mentions")
    add(
        "-no-mouse",
        "--no-mouse",
        action="store_true",
        help="full-screen UI: no mouse wheel, so the terminal can select text",
    )
    add(
        "-log-level",
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="WARNING",
        help="logging level, to stderr (default: %(default)s)",
    )
    return parser


def _read_password_file(parser: argparse.ArgumentParser, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        parser.error(f"cannot read password file {path!r}: {reason}")


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[ClientConfig, str]:
    """The configuration and the log level; exits with status 2 on bad arguments."""
    environ = os.environ if environ is None else environ
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.password is not None:
        password = args.password
    elif args.password_file is not None:
        password = _read_password_file(parser, args.password_file)
    else:
        password = environ.get(PASSWORD_ENV) or None
    if args.auth_file is not None:
        try:
            auth: str | None = read_auth_file(args.auth_file)
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            parser.error(f"cannot read auth file {args.auth_file!r}: {reason}")
    else:
        auth = environ.get(AUTH_ENV) or None
    host, port = args.address
    config = ClientConfig(
        name=args.client if args.client is not None else f"User{random.randrange(400)}",
        room=args.room,
        host=host,
        port=port,
        password=password,
        auth=auth,
        format=Format.JSON if args.json else Format.TEXT,
        history=args.history,
        tls=args.tls or args.insecure or args.cafile is not None,
        cafile=args.cafile,
        insecure=args.insecure,
        plain=args.plain,
        bell=not args.no_bell,
        mouse=not args.no_mouse,
    )
    return config, args.log_level


def _unexpected(exc: BaseException) -> int:
    logger.debug("unexpected error", exc_info=exc)
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    sys.stderr.write(f"machat: unexpected error: {exc!r} (--log-level debug for details)\n")
    return 1


#: The exit status after Ctrl-C (128 + SIGINT, as a shell reports it).
INTERRUPTED = 130


async def run_until_interrupted(config: ClientConfig) -> int:
    """`client.run_with_login` until it returns, or until SIGINT (Ctrl-C), which
    cancels it: the session unwinds as from any cancellation, instead of taking a
    KeyboardInterrupt wherever it happens to be (which could leave a coroutine made
    and never awaited, and Python's warning about it on the way out)."""
    code = INTERRUPTED
    with trio.open_signal_receiver(signal.SIGINT) as interrupts:
        async with trio.open_nursery() as nursery:

            async def session() -> None:
                nonlocal code
                code = await client.run_with_login(config)
                nursery.cancel_scope.cancel()

            nursery.start_soon(session)
            async for _ in interrupts:
                nursery.cancel_scope.cancel()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    config, log_level = parse_args(argv)
    logging.basicConfig(
        level=log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return trio.run(run_until_interrupted, config)
    except KeyboardInterrupt:  # (before the signal receiver is in place)
        return INTERRUPTED
    except BaseExceptionGroup as group:
        if group.subgroup(KeyboardInterrupt) is not None:
            return INTERRUPTED
        return _unexpected(group)
    except Exception as exc:
        return _unexpected(exc)


if __name__ == "__main__":
    sys.exit(main())
