"""The terminal client: connect (TCP or TLS), then run a session on the terminal.

With standard input and output both terminals (and no ``--plain``), the session
runs in the full-screen UI (`machat.client.ui`); otherwise in line mode, which
prints what arrives and sends what is read, line by line.

Failures to connect are reported as one line and exit code 1, never a traceback.
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from .auth import MAX_PROMPTS, needs_password, prompt_password, refusal_of
from .config import ClientConfig
from .session import run_client
from .terminal import open_stdin, terminal_writer
from .ui.runner import CannotConnect, UIOptions, run_ui

__all__ = ["ConnectError", "connect", "make_ssl_context", "run", "run_with_login", "wants_ui"]

logger = logging.getLogger(__name__)


class ConnectError(Exception):
    """Connecting failed; the message says why, in one line."""


def make_ssl_context(config: ClientConfig) -> ssl.SSLContext:
    """The default client context, trusting ``cafile`` if given; ``insecure`` verifies nothing."""
    context = ssl.create_default_context(cafile=config.cafile)
    if config.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _reason(exc: OSError) -> str:
    """The first underlying error, as ``strerror`` says it (trio groups its attempts)."""
    cause = exc.__cause__
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    if isinstance(cause, OSError):
        exc = cause
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc)


async def connect(config: ClientConfig) -> trio.abc.Stream:
    """Open the stream to the server; with TLS, complete the TLS handshake too.

    Raises `ConnectError`.
    """
    address = config.address
    try:
        if not config.tls:
            return await trio.open_tcp_stream(config.host, config.port)
        try:
            context = make_ssl_context(config)
        except OSError as exc:  # ssl.SSLError included
            raise ConnectError(f"cannot load CA file {config.cafile!r}: {exc}") from None
        stream = await trio.open_ssl_over_tcp_stream(config.host, config.port, ssl_context=context)
    except OSError as exc:
        raise ConnectError(f"cannot connect to {address}: {_reason(exc)}") from None
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(stream)
        reason = exc.__cause__ or "connection closed"
        raise ConnectError(f"TLS handshake with {address} failed: {reason}") from None
    return stream


def wants_ui(config: ClientConfig) -> bool:
    """The full-screen UI runs when both ends are terminals and ``--plain`` was not given."""
    if config.plain or sys.stdin is None or sys.stdout is None:
        return False
    try:
        return os.isatty(sys.stdin.fileno()) and os.isatty(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        return False


async def _run_ui(
    config: ClientConfig,
    stream: trio.abc.Stream,
    err: Callable[[str], None],
    refusals: list[str] | None = None,
) -> int:
    async def reconnect() -> trio.abc.Stream:
        try:
            return await connect(config)
        except ConnectError as exc:
            raise CannotConnect(str(exc)) from None

    options = UIOptions(bell=config.bell, mouse=config.mouse)
    code, why = await run_ui(config.handshake(), reconnect, first=stream, options=options)
    if why is not None:
        err(f"machat: {why}")
        if refusals is not None and why.startswith("name registered:"):
            refusals.append(why)
    return code


async def run(
    config: ClientConfig,
    *,
    stdin: trio.abc.ReceiveStream | None = None,
    out: Callable[[str], None] | None = None,
    err: Callable[[str], None] | None = None,
    refusals: list[str] | None = None,
) -> int:
    """Run the client; returns the exit code.

    A ``114 name registered`` refusal of the handshake is added to ``refusals``.

    By default reads standard input and writes to standard output and error; tests
    pass their own ``stdin``, ``out`` and ``err``. If the output goes away (``machat |
    head -1``), the session ends quietly with exit code 1.
    """
    ui = stdin is None and out is None and wants_ui(config)
    out = out or terminal_writer(sys.stdout)
    if refusals is not None:
        out = _noting_refusal(out, refusals)
    err = err or terminal_writer(sys.stderr)
    try:
        stream = await connect(config)
    except ConnectError as exc:
        err(f"machat: {exc}")
        return 1
    logger.info("connected to %s as %s, room %s", config.address, config.name, config.room)
    code = 1
    try:
        if ui:
            code = await _run_ui(config, stream, err, refusals)
        elif stdin is not None:
            code = await run_client(stream, config.handshake(), stdin, out)
        else:
            async with open_stdin() as terminal_stdin:
                code = await run_client(stream, config.handshake(), terminal_stdin, out)
    except* BrokenPipeError:
        logger.debug("standard output was closed (e.g. `machat | head`): exiting")
    finally:
        await trio.aclose_forcefully(stream)
    return code


def _noting_refusal(out: Callable[[str], None], refusals: list[str]) -> Callable[[str], None]:
    """``out``, noting a 114 refusal if it is the first line the server sends."""
    first = True

    def write(line: str) -> None:
        nonlocal first
        if first:
            first = False
            refusal = refusal_of(line)
            if refusal is not None:
                refusals.append(refusal)
        out(line)

    return write


async def run_with_login(
    config: ClientConfig,
    *,
    prompt: Callable[[str], Awaitable[str | None]] = prompt_password,
    **options: Any,
) -> int:
    """`run`, asking for the password (``prompt``) when the name turns out registered.

    Without a password given, a ``114`` refusal makes it ask (on a terminal, without
    echo) and connect again with the answer, at most `MAX_PROMPTS` times.
    """
    for _ in range(MAX_PROMPTS):
        refusals: list[str] = []
        code = await run(config, refusals=refusals, **options)
        if not refusals or not needs_password(refusals[0]):
            return code
        password = await prompt(config.name)
        if password is None:
            return code
        config = attrs.evolve(config, auth=password)
    return await run(config, **options)
