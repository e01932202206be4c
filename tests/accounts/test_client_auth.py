"""The client's side of accounts: --auth-file, $MACHAT_AUTH, and asking after a 114.

In-process runs use a real server on a loopback port and the client's line mode
with a memory stream for standard input; the prompt is a test function (a real one
needs a terminal).  The command itself runs as a subprocess with piped input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from machat.client import ClientConfig, run_with_login
from machat.client.auth import needs_password, prompt_password, refusal_of
from machat.cmd.client import parse_args
from machat.protocol.handshake import decode_handshake, encode_handshake

from .conftest import Chat, register

REPO = Path(__file__).resolve().parents[2]


def test_auth_from_a_file_or_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "auth"
    path.write_text("correct-horse\nignored\n")
    config, _ = parse_args(["-client", "Mina", "--auth-file", str(path)], environ={})
    assert config.auth == "correct-horse"
    config, _ = parse_args(["-client", "Mina"], environ={"MACHAT_AUTH": "from-env"})
    assert config.auth == "from-env"
    config, _ = parse_args(
        ["-client", "Mina", "-auth-file", str(path)], environ={"MACHAT_AUTH": "from-env"}
    )
    assert config.auth == "correct-horse"  # the flag wins
    config, _ = parse_args(["-client", "Mina"], environ={})
    assert config.auth is None
    assert "correct-horse" not in repr(config)


def test_an_unreadable_auth_file_is_a_usage_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(["--auth-file", str(tmp_path / "missing")], environ={})
    assert info.value.code == 2
    assert "cannot read auth file" in capsys.readouterr().err


def test_the_handshake_carries_auth() -> None:
    handshake = ClientConfig(name="Mina", auth="correct-horse").handshake()
    data = encode_handshake(handshake)
    assert json.loads(data)["auth"] == "correct-horse"
    assert decode_handshake(data).auth == "correct-horse"
    assert "correct-horse" not in repr(handshake)


def test_which_refusals_ask_for_a_password() -> None:
    text = '! ERROR 114 name registered: Mina is registered; send its password as "auth"'
    assert refusal_of(text) == 'name registered: Mina is registered; send its password as "auth"'
    assert refusal_of('{"type":"error","code":114,"message":"name registered: x"}') == (
        "name registered: x"
    )
    assert refusal_of("! ERROR 101 name Mina is already in use; pick another") is None
    assert refusal_of('{"type":"error","code":101,"message":"x"}') is None
    assert refusal_of("* Welcome Mina!") is None
    assert needs_password("name registered: wrong password for Mina")
    assert not needs_password(
        "name registered: Mina is locked after too many wrong passwords; try again in 60 s"
    )


async def test_no_terminal_no_prompt(monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdin", None)
    assert await prompt_password("Mina") is None


class Screen:
    """The client's output, and its input: it types /quit once welcomed."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.stdin = trio.testing.MemoryReceiveStream()

    def out(self, line: str) -> None:
        self.lines.append(line)
        if line.startswith("* Welcome"):
            self.stdin.put_data(b"/quit\n")


async def test_asks_for_the_password_after_a_114_and_connects_again(chat: Chat) -> None:
    asked: list[str] = []
    answers = iter(["wrong-horse", "correct-horse"])

    async def prompt(name: str) -> str | None:
        asked.append(name)
        return next(answers)

    with trio.fail_after(20):
        await register(chat, "Mina", "correct-horse")
        screen = Screen()
        config = ClientConfig(name="Mina", room="dev", host="127.0.0.1", port=chat.port)
        code = await run_with_login(
            config, prompt=prompt, stdin=screen.stdin, out=screen.out, err=screen.out
        )
    assert code == 0
    assert asked == ["Mina", "Mina"]
    assert screen.lines[0].startswith("! ERROR 114 name registered: Mina is registered")
    assert "! ERROR 114 name registered: wrong password for Mina" in screen.lines
    assert any(line.startswith("* Welcome Mina!") for line in screen.lines)


async def test_no_answer_ends_with_the_refusal(chat: Chat) -> None:
    async def prompt(name: str) -> str | None:
        return None

    with trio.fail_after(20):
        await register(chat, "Mina", "correct-horse")
        screen = Screen()
        config = ClientConfig(name="Mina", room="dev", host="127.0.0.1", port=chat.port)
        code = await run_with_login(
            config, prompt=prompt, stdin=screen.stdin, out=screen.out, err=screen.out
        )
    assert code == 1
    assert screen.lines[0].startswith("! ERROR 114 ")


async def test_the_client_command_logs_in_with_an_auth_file(chat: Chat, tmp_path: Path) -> None:
    auth = tmp_path / "auth"
    auth.write_text("correct-horse\n")
    command = [
        sys.executable,
        "-m",
        "machat.cmd.client",
        "-client",
        "Mina",
        "-room",
        "dev",
        "-address",
        f"127.0.0.1:{chat.port}",
    ]
    with trio.fail_after(30):
        await register(chat, "Mina", "correct-horse")
        result = await trio.run_process(
            [*command, "--auth-file", str(auth)],
            stdin=b"hello\n/quit\n",
            capture_stdout=True,
            capture_stderr=True,
            cwd=REPO,
        )
        assert result.returncode == 0, result.stderr
        assert "* Welcome Mina!" in result.stdout.decode()
        # From the environment too; and without a password, on a pipe, no prompt: exit 1.
        result = await trio.run_process(
            command,
            stdin=b"/quit\n",
            capture_stdout=True,
            capture_stderr=True,
            cwd=REPO,
            env={"MACHAT_AUTH": "correct-horse", "PATH": "/usr/bin:/bin"},
        )
        assert result.returncode == 0, result.stderr
        result = await trio.run_process(
            command,
            stdin=b"/quit\n",
            capture_stdout=True,
            capture_stderr=True,
            cwd=REPO,
            check=False,
        )
        assert result.returncode == 1
        assert result.stdout.decode().startswith("! ERROR 114 name registered: Mina is registered")
