"""Tests of the terminal client: the session, the connection, the command line.

Rules: sessions run over in-memory streams with the autojump clock; anything with
real sockets listens on 127.0.0.1, port 0, with the real clock. Every wait is bounded
by `trio.fail_after`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme

from machat.client import (
    CLOSE_GRACE,
    CLOSED_NOTICE,
    ClientConfig,
    is_quit,
    parse_address,
    run,
    run_client,
    sanitize,
)
from machat.cmd import client as cmd_client
from machat.protocol.formatting import Format
from machat.protocol.framing import LineBuffer
from machat.protocol.handshake import Handshake

REPO = Path(__file__).resolve().parents[2]
MINA = Handshake(name="Mina", room="dev")


class Peer:
    """One end of a stream, read line by line; `line` returns None at end of stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._lines = LineBuffer()
        self._eof = False

    async def line(self) -> bytes | None:
        while (line := self._lines.next_line()) is None:
            if self._eof:
                return None
            data = await self.stream.receive_some()
            if data:
                self._lines.feed(data)
            else:
                self._eof = True
                self._lines.feed_eof()
        return line

    async def send(self, *lines: bytes) -> None:
        await self.stream.send_all(b"".join(line + b"\n" for line in lines))


class Harness:
    """A session over memory streams: we play the server and the keyboard."""

    def __init__(self, handshake: Handshake = MINA) -> None:
        client, server = trio.testing.memory_stream_pair()
        self._client = client
        self.server = Peer(server)
        self.keyboard, self._stdin = trio.testing.memory_stream_one_way_pair()
        self.output: list[str] = []
        self._handshake = handshake
        self._done = trio.Event()
        self._exit_code: int | None = None

    async def run(self) -> None:
        self._exit_code = await run_client(
            self._client, self._handshake, self._stdin, self.output.append
        )
        self._done.set()

    async def start(self, nursery: trio.Nursery) -> bytes | None:
        """Start the session; returns the handshake line the server got."""
        nursery.start_soon(self.run)
        return await self.server.line()

    async def type(self, text: bytes) -> None:
        await self.keyboard.send_all(text)

    async def exit_code(self) -> int:
        await self._done.wait()
        assert self._exit_code is not None
        return self._exit_code


# --- sanitize and is_quit ----------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        (b"Bob:hello", "Bob:hello"),
        (b"Bob:tab\tstays", "Bob:tab\tstays"),
        (b"Bob:\x1b[31mred\x1b[0m", "Bob:red"),
        (b"Bob:\x1b[2J\x1b[Hwiped?", "Bob:wiped?"),
        (b"\x1b]0;owned title\x07Bob:hi", "Bob:hi"),
        (b"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
        (b"Bob:bell\x07 nul\x00 bs\x08 cr\r del\x7f", "Bob:bell nul bs cr del"),
        (b"Bob:\xc2\x9b31mC1", "Bob:31mC1"),  # U+009B, the one-byte CSI, is dropped
        (b"Bob:\x1bc reset", "Bob: reset"),
        (b"Bob:trailing escape \x1b", "Bob:trailing escape "),
        (b"Bob:bad \xff\xfe utf8", "Bob:bad \ufffd\ufffd utf8"),
        ("Zoë:¡hola! 你好 🙂".encode(), "Zoë:¡hola! 你好 🙂"),
    ],
)
def test_sanitize(line: bytes, shown: str) -> None:
    assert sanitize(line) == shown


@pytest.mark.parametrize(
    ("line", "quits"),
    [
        (b"/quit", True),
        (b"/QUIT bye all", True),
        (b":quit", True),
        (b"  exit ", True),
        (b"EXIT", True),
        (b"exit now", False),
        (b"//quit", False),
        (b"quit", False),
        (b"/nosuchcommand", False),
        (b"\xff/quit", False),
    ],
)
def test_is_quit(line: bytes, quits: bool) -> None:
    assert is_quit(line) is quits


# --- the session over memory streams -------------------------------------------------


async def test_handshake_is_one_json_line(nursery: trio.Nursery, autojump_clock) -> None:
    with trio.fail_after(5):
        h = Harness(Handshake(name="Mina", room="dev"))
        assert await h.start(nursery) == b'{"name":"Mina","room":"dev"}'


async def test_handshake_carries_the_options(nursery: trio.Nursery, autojump_clock) -> None:
    handshake = Handshake(name="Mina", room="dev", password="s3cret", format=Format.JSON, history=5)
    with trio.fail_after(5):
        line = await Harness(handshake).start(nursery)
    assert line is not None
    assert json.loads(line) == {
        "name": "Mina",
        "room": "dev",
        "password": "s3cret",
        "format": "json",
        "history": 5,
    }


async def test_typed_lines_are_sent(nursery: trio.Nursery, autojump_clock) -> None:
    with trio.fail_after(5):
        h = Harness()
        await h.start(nursery)
        await h.type(b"hello\n")
        assert await h.server.line() == b"hello"
        await h.type(b"in ")  # a line typed in pieces goes out whole
        await h.type(b"pieces\r\n/who\n\n@Bob: psst\n")
        for expected in [b"in pieces", b"/who", b"", b"@Bob: psst"]:
            assert await h.server.line() == expected
        await h.server.stream.aclose()
        assert await h.exit_code() == 0


async def test_incoming_lines_are_printed_safely(nursery: trio.Nursery, autojump_clock) -> None:
    with trio.fail_after(5):
        h = Harness()
        await h.start(nursery)
        await h.server.send(b"* Welcome Mina!", b"Bob:\x1b[31mhi\x1b[0m\x07\tthere\xff")
        await h.server.stream.send_all(b"Bob:split ")
        await h.server.stream.send_all(b"line\r\nBob:no newline at the end")
        await h.server.stream.aclose()
        assert await h.exit_code() == 0
    assert h.output == [
        "* Welcome Mina!",
        "Bob:hi\tthere\ufffd",
        "Bob:split line",
        "Bob:no newline at the end",
        CLOSED_NOTICE,
    ]


async def test_json_lines_are_printed_unchanged(nursery: trio.Nursery, autojump_clock) -> None:
    line = '{"type":"message","room":"dev","from":"Bob","text":"x\\u001b[31m y"}'
    with trio.fail_after(5):
        h = Harness()
        await h.start(nursery)
        await h.server.send(line.encode())
        await h.server.stream.aclose()
        assert await h.exit_code() == 0
    assert h.output == [line, CLOSED_NOTICE]


async def test_server_closing_ends_the_session(nursery: trio.Nursery, autojump_clock) -> None:
    with trio.fail_after(5):
        h = Harness()
        await h.start(nursery)
        await h.type(b"hi\n")
        assert await h.server.line() == b"hi"
        await h.server.send(b"Mina:hi", b"* server shutting down")
        await h.server.stream.aclose()
        assert await h.exit_code() == 0
    assert h.output == ["Mina:hi", "* server shutting down", CLOSED_NOTICE]


async def test_refused_handshake_exits_1(nursery: trio.Nursery, autojump_clock) -> None:
    with trio.fail_after(5):
        h = Harness()
        await h.start(nursery)
        await h.server.send(b"! ERROR 101 name Mina is in use")
        await h.server.stream.aclose()
        assert await h.exit_code() == 1
    assert h.output == ["! ERROR 101 name Mina is in use", CLOSED_NOTICE]


async def test_refused_handshake_in_json_exits_1(nursery: trio.Nursery, autojump_clock) -> None:
    with trio.fail_after(5):
        h = Harness()
        await h.start(nursery)
        await h.server.send(b'{"type":"error","code":104,"message":"wrong password"}')
        await h.server.stream.aclose()
        assert await h.exit_code() == 1


async def test_later_errors_do_not_change_the_exit_code(
    nursery: trio.Nursery, autojump_clock
) -> None:
    with trio.fail_after(5):
        h = Harness()
        await h.start(nursery)
        await h.server.send(b"* Welcome Mina!", b"! ERROR 103 unknown command /x")
        await h.server.stream.aclose()
        assert await h.exit_code() == 0


async def test_quit_is_sent_then_waits_for_the_server(
    nursery: trio.Nursery, autojump_clock
) -> None:
    with trio.fail_after(5):
        h = Harness()
        await h.start(nursery)
        await h.type(b"bye all\n/quit see you\nnot sent\n")
        assert await h.server.line() == b"bye all"
        assert await h.server.line() == b"/quit see you"
        start = trio.current_time()
        await h.server.send(b"* Bye, Mina!")
        await h.server.stream.aclose()
        assert await h.exit_code() == 0
        assert trio.current_time() - start < CLOSE_GRACE
    assert h.output == ["* Bye, Mina!"]  # we left: no "closed by server" notice


@pytest.mark.parametrize("command", [b":quit", b"exit", b"/quit"])
async def test_quit_gives_up_waiting_after_the_grace(
    nursery: trio.Nursery, autojump_clock, command: bytes
) -> None:
    with trio.fail_after(5):
        h = Harness()
        await h.start(nursery)
        await h.type(command + b"\n")
        assert await h.server.line() == command
        start = trio.current_time()
        assert await h.exit_code() == 0  # the server never closes
        assert trio.current_time() - start == pytest.approx(CLOSE_GRACE)
    assert h.output == []


async def test_end_of_input_sends_everything_and_waits_for_answers(
    nursery: trio.Nursery, autojump_clock
) -> None:
    with trio.fail_after(5):
        h = Harness()
        await h.start(nursery)
        await h.type(b"hi\nno newline")
        await h.keyboard.aclose()
        assert await h.server.line() == b"hi"
        assert await h.server.line() == b"no newline"
        assert await h.server.line() is None  # half-closed: the server sees EOF
        await h.server.send(b"Mina:hi", b"Mina:no newline")  # the server drains, then closes
        await h.server.stream.aclose()
        assert await h.exit_code() == 0
    assert h.output == ["Mina:hi", "Mina:no newline"]


async def test_end_of_input_gives_up_after_the_grace(nursery: trio.Nursery, autojump_clock) -> None:
    with trio.fail_after(5):
        h = Harness()
        await h.start(nursery)
        await h.keyboard.aclose()
        assert await h.server.line() is None
        start = trio.current_time()
        assert await h.exit_code() == 0
        assert trio.current_time() - start == pytest.approx(CLOSE_GRACE)


async def test_typing_after_the_server_went_away(nursery: trio.Nursery, autojump_clock) -> None:
    client, server = trio.testing.memory_stream_pair()
    keyboard, stdin = trio.testing.memory_stream_one_way_pair()
    output: list[str] = []
    await server.send_stream.aclose()  # the server closes its side before we even start
    await server.receive_stream.aclose()  # and reads nothing: our sends fail
    with trio.fail_after(5):
        await keyboard.send_all(b"anyone?\n")
        assert await run_client(client, MINA, stdin, output.append) == 0
    assert output == [CLOSED_NOTICE]


async def test_overlong_lines(nursery: trio.Nursery, autojump_clock) -> None:
    with trio.fail_after(5):
        h = Harness()
        await h.start(nursery)
        await h.type(b"x" * 70_000 + b"\nshort\n")
        assert await h.server.line() == b"short"
        await h.server.stream.send_all(b"y" * 70_000 + b"\nBob:after\n")
        await h.server.stream.aclose()
        assert await h.exit_code() == 0
    assert h.output[0].startswith("* line too long")
    assert h.output[1].startswith("* skipped a line from the server")
    assert h.output[2:] == ["Bob:after", CLOSED_NOTICE]


class BrokenInput(trio.abc.ReceiveStream):
    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        raise trio.BrokenResourceError("the terminal hung up")

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_broken_input_counts_as_its_end(autojump_clock) -> None:
    client, server = trio.testing.memory_stream_pair()
    output: list[str] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_client, client, MINA, BrokenInput(), output.append)
            peer = Peer(server)
            assert await peer.line() is not None
            assert await peer.line() is None  # half-closed, as at the end of input
            await server.aclose()
    assert output == []


# --- connecting over TCP and TLS ----------------------------------------------------

Handler = Callable[[trio.abc.Stream], Awaitable[None]]


async def echo_server(
    stream: trio.abc.Stream, handshakes: list[dict] | None = None, max_lines: int | None = None
) -> None:
    """Reads the handshake, echoes ``name:line`` for each line, closes at EOF.

    With ``max_lines``, closes after echoing that many (TLS has no half-close).
    """
    peer = Peer(stream)
    try:
        first = await peer.line()
        if first is None:
            return
        handshake = json.loads(first)
        if handshakes is not None:
            handshakes.append(handshake)
        prefix = handshake["name"].encode() + b":"
        while (line := await peer.line()) is not None:
            await peer.send(prefix + line)
            if max_lines is not None:
                max_lines -= 1
                if max_lines == 0:
                    return
    except trio.BrokenResourceError:
        pass  # e.g. a client that refused our certificate


async def serve(nursery: trio.Nursery, handler: Handler) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def keyboard_with(text: bytes) -> trio.abc.ReceiveStream:
    keyboard, stdin = trio.testing.memory_stream_one_way_pair()
    await keyboard.send_all(text)
    await keyboard.aclose()
    return stdin


async def test_run_over_tcp(nursery: trio.Nursery) -> None:
    handshakes: list[dict] = []
    port = await serve(nursery, partial(echo_server, handshakes=handshakes))
    output: list[str] = []
    errors: list[str] = []
    config = ClientConfig(name="Mina", room="dev", host="127.0.0.1", port=port)
    with trio.fail_after(10):
        stdin = await keyboard_with(b"hi\nthere\n")
        assert await run(config, stdin=stdin, out=output.append, err=errors.append) == 0
    assert handshakes == [{"name": "Mina", "room": "dev"}]
    assert output == ["Mina:hi", "Mina:there"]
    assert errors == []


async def test_closed_output_ends_quietly(nursery: trio.Nursery) -> None:
    port = await serve(nursery, echo_server)

    def closed_output(line: str) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    config = ClientConfig(name="Mina", host="127.0.0.1", port=port)
    with trio.fail_after(10):
        stdin = await keyboard_with(b"hi\n")
        assert await run(config, stdin=stdin, out=closed_output, err=closed_output) == 1


async def test_connection_refused_is_one_line_and_exit_1() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()  # nobody listens there any more
    errors: list[str] = []
    config = ClientConfig(name="Mina", host="127.0.0.1", port=port)
    with trio.fail_after(10):
        stdin = await keyboard_with(b"")
        assert await run(config, stdin=stdin, out=errors.append, err=errors.append) == 1
    assert errors == [f"machat: cannot connect to 127.0.0.1:{port}: Connection refused"]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def serve_tls(nursery: trio.Nursery, ca: trustme.CA, handler: Handler) -> int:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    listeners = await nursery.start(
        partial(trio.serve_ssl_over_tcp, handler, 0, context, host="127.0.0.1")
    )
    return listeners[0].transport_listener.socket.getsockname()[1]


async def test_tls_with_cafile(nursery: trio.Nursery, ca: trustme.CA, tmp_path: Path) -> None:
    port = await serve_tls(nursery, ca, partial(echo_server, max_lines=1))
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    config = ClientConfig(name="Mina", host="127.0.0.1", port=port, tls=True, cafile=str(cafile))
    output: list[str] = []
    with trio.fail_after(10):
        stdin = await keyboard_with(b"secure hi\n")
        assert await run(config, stdin=stdin, out=output.append, err=output.append) == 0
    assert output == ["Mina:secure hi"]


async def test_tls_unknown_ca_is_refused(nursery: trio.Nursery, ca: trustme.CA) -> None:
    port = await serve_tls(nursery, ca, echo_server)
    config = ClientConfig(name="Mina", host="127.0.0.1", port=port, tls=True)
    errors: list[str] = []
    with trio.fail_after(10):
        stdin = await keyboard_with(b"hi\n")
        assert await run(config, stdin=stdin, out=errors.append, err=errors.append) == 1
    [error] = errors
    assert error.startswith(f"machat: TLS handshake with 127.0.0.1:{port} failed:")
    assert "certificate verify failed" in error


async def test_tls_insecure_skips_verification(nursery: trio.Nursery, ca: trustme.CA) -> None:
    port = await serve_tls(nursery, ca, partial(echo_server, max_lines=1))
    config = ClientConfig(name="Mina", host="127.0.0.1", port=port, tls=True, insecure=True)
    output: list[str] = []
    with trio.fail_after(10):
        stdin = await keyboard_with(b"hi\n")
        assert await run(config, stdin=stdin, out=output.append, err=output.append) == 0
    assert output == ["Mina:hi"]


# --- the command line ---------------------------------------------------------------


def parse(*argv: str, environ: dict[str, str] | None = None) -> ClientConfig:
    config, _ = cmd_client.parse_args(list(argv), environ={} if environ is None else environ)
    return config


def test_defaults() -> None:
    config, log_level = cmd_client.parse_args([], environ={})
    name = re.fullmatch(r"User(\d+)", config.name)
    assert name is not None and 0 <= int(name[1]) < 400
    assert (config.room, config.host, config.port) == ("lounge", "localhost", 8989)
    assert config.password is None
    assert config.format is Format.TEXT
    assert config.history == 0
    assert (config.tls, config.cafile, config.insecure) == (False, None, False)
    assert log_level == "WARNING"


@pytest.mark.parametrize("dashes", ["-", "--"])
def test_both_spellings(dashes: str, tmp_path: Path) -> None:
    config, log_level = cmd_client.parse_args(
        [
            f"{dashes}client",
            "Mina",
            f"{dashes}room",
            "dev",
            f"{dashes}address",
            "[::1]:9000",
            f"{dashes}password",
            "pw",
            f"{dashes}tls",
            f"{dashes}cafile",
            "ca.pem",
            f"{dashes}history=7",
            f"{dashes}json",
            f"{dashes}log-level",
            "debug",
        ],
        environ={},
    )
    assert config == ClientConfig(
        name="Mina",
        room="dev",
        host="::1",
        port=9000,
        password="pw",
        format=Format.JSON,
        history=7,
        tls=True,
        cafile="ca.pem",
    )
    assert log_level == "DEBUG"
    assert parse(f"{dashes}insecure").insecure


def test_insecure_and_cafile_imply_tls() -> None:
    assert parse("--insecure").tls
    assert parse("-cafile", "ca.pem").tls
    assert not parse().tls


def test_password_sources(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from file\n")
    env = {"MACHAT_PASSWORD": "from env"}
    assert parse(environ=env).password == "from env"
    assert parse(environ={"MACHAT_PASSWORD": ""}).password is None
    assert parse("--password-file", str(secret_file), environ=env).password == "from file"
    assert parse("-password-file", str(secret_file)).password == "from file"
    assert parse("-password", "from flag", environ=env).password == "from flag"


def test_password_is_never_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = parse("--password", "hunter2")
    assert "hunter2" not in repr(config)
    with pytest.raises(SystemExit):
        parse("--password", "hunter2", "--password-file", str(tmp_path / "x"))
    assert "hunter2" not in capsys.readouterr().err


def test_missing_password_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc_info:
        parse("--password-file", str(tmp_path / "missing"))
    assert exc_info.value.code == 2
    assert "cannot read password file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("localhost:8989", ("localhost", 8989)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("[::1]:8989", ("::1", 8989)),
        ("[fe80::1%eth0]:65535", ("fe80::1%eth0", 65535)),
        ("chat.example.org", ("chat.example.org", 8989)),
        ("[::1]", ("::1", 8989)),
        (":9000", ("localhost", 9000)),
        (" host:42 ", ("host", 42)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "host:",
        "host:0",
        "host:65536",
        "host:http",
        "::1",
        "::1:8989",
        "[::1",
        "[]:80",
        "[::1]8989",
        "host:١٢",
    ],
)
def test_parse_address_rejects(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError):
        parse_address(text)
    with pytest.raises(SystemExit) as exc_info:
        parse("-address", text)
    assert exc_info.value.code == 2
    assert "-address/--address" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["-1", "x", "1.5"])
def test_history_must_be_a_count(bad: str) -> None:
    with pytest.raises(SystemExit):
        parse(f"--history={bad}")


@pytest.mark.parametrize(
    "raised",
    [KeyboardInterrupt(), BaseExceptionGroup("", [KeyboardInterrupt()])],
)
def test_ctrl_c_exits_130(monkeypatch: pytest.MonkeyPatch, raised: BaseException) -> None:
    def interrupted(*args: object) -> int:
        raise raised

    monkeypatch.setattr(cmd_client.trio, "run", interrupted)
    assert cmd_client.main(["-address", "127.0.0.1:1"]) == 130


def test_unexpected_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def crash(*args: object) -> int:
        raise ExceptionGroup("", [RuntimeError("boom")])

    monkeypatch.setattr(cmd_client.trio, "run", crash)
    assert cmd_client.main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "boom" in err and "Traceback" not in err


# --- the real program ----------------------------------------------------------------


def client_command(port: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "machat.cmd.client", "-address", f"127.0.0.1:{port}", *args]


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MACHAT_PASSWORD"}
    env["PYTHONPATH"] = str(REPO)
    return env


async def test_program_with_piped_stdin(nursery: trio.Nursery) -> None:
    handshakes: list[dict] = []
    port = await serve(nursery, partial(echo_server, handshakes=handshakes))
    with trio.fail_after(20):
        result = await trio.run_process(
            client_command(port, "-client", "Mina", "-room", "dev"),
            stdin=b"hi\nhow are you?\n",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=REPO,
            env=subprocess_env(),
        )
    assert result.stderr == b""
    assert result.returncode == 0
    assert result.stdout.decode().splitlines() == ["Mina:hi", "Mina:how are you?"]
    assert handshakes == [{"name": "Mina", "room": "dev"}]


async def test_launcher_and_connection_refused() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    with trio.fail_after(20):
        result = await trio.run_process(
            [sys.executable, str(REPO / "cmd" / "client.py"), "--address", f"127.0.0.1:{port}"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd="/",
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode().splitlines() == [
        f"machat: cannot connect to 127.0.0.1:{port}: Connection refused"
    ]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_program_ctrl_c_exits_130_quietly(nursery: trio.Nursery) -> None:
    joined = trio.Event()

    async def wait_for_ctrl_c(stream: trio.abc.Stream) -> None:
        await Peer(stream).line()
        joined.set()
        await trio.sleep_forever()

    port = await serve(nursery, wait_for_ctrl_c)
    with trio.fail_after(20):
        process = await trio.lowlevel.open_process(
            client_command(port, "-client", "Mina"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
            env=subprocess_env(),
        )
        try:
            await joined.wait()
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 130
            assert process.stderr is not None
            assert await process.stderr.receive_some() == b""
        finally:
            process.kill()
            await process.wait()
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    await pipe.aclose()
