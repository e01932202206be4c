"""Transcript: the line format, batching, final flush, and reopening for logrotate.

trio tests run on the autojump clock; as with the store, they synchronise with the
writer through `Transcript.flush` (which waits for a batch being written), never by
sleeping until a write "must" be done.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from machat.protocol import events as ev
from machat.server.transcript import Transcript

T = 1_795_269_787.9  # 2026-11-21 14:03:07 UTC


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "chat.log"


def read(path: Path) -> list[str]:
    return path.read_text("utf-8").splitlines()


@asynccontextmanager
async def running(path: Path) -> AsyncIterator[Transcript]:
    """An open transcript with its writer running; closed afterwards."""
    transcript = Transcript(path)
    transcript.open()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(transcript.run)
            yield transcript
            nursery.cancel_scope.cancel()
    finally:
        transcript.close()


def rotate(path: Path) -> Path:
    """What logrotate does first: rename the file (the server still has it open)."""
    rotated = path.with_name(path.name + ".1")
    path.rename(rotated)
    return rotated


async def test_each_event_is_one_line_in_utc(path: Path) -> None:
    transcript = Transcript(path)
    transcript.open()
    transcript.message(ev.Message("dev", "Mina", "hello", 1, T))
    transcript.join("dev", "Bob", ts=T + 1)
    transcript.leave("dev", "Bob", "quit", ts=T + 2)
    transcript.leave("dev", "Eve", ts=T + 3)
    transcript.nick("dev", "Mina", "Mia", ts=T + 4)
    transcript.nick(None, "Zed", "Zoe", ts=T + 5)
    assert transcript.lines == 6
    assert await transcript.flush()
    transcript.close()
    assert read(path) == [
        "2026-11-21 14:03:07 [dev] <Mina> hello",
        "2026-11-21 14:03:08 [dev] * Bob joined",
        "2026-11-21 14:03:09 [dev] * Bob left (quit)",
        "2026-11-21 14:03:10 [dev] * Eve left",
        "2026-11-21 14:03:11 [dev] * Mina is now known as Mia",
        "2026-11-21 14:03:12 * Zed is now known as Zoe",
    ]


async def test_events_without_a_time_use_now(path: Path) -> None:
    transcript = Transcript(path)
    transcript.open()
    transcript.join("dev", "Bob")
    await transcript.flush()
    transcript.close()
    (line,) = read(path)
    assert line.endswith(" [dev] * Bob joined")


async def test_line_breaks_and_control_characters_are_escaped(path: Path) -> None:
    transcript = Transcript(path)
    transcript.open()
    transcript.message(ev.Message("dev", "Mina", "one\ntwo\r\nthree\x1b[31m\x7f\ttab é", 1, T))
    transcript.leave("dev", "Mina", "bye\nnow", ts=T)
    await transcript.flush()
    transcript.close()
    assert read(path) == [
        "2026-11-21 14:03:07 [dev] <Mina> one\\ntwo\\r\\nthree\\x1b[31m\\x7f\ttab é",
        "2026-11-21 14:03:07 [dev] * Mina left (bye\\nnow)",
    ]


async def test_the_file_is_appended_to_not_truncated(path: Path) -> None:
    transcript = Transcript(path)
    transcript.open()
    transcript._file.write(b"earlier\n")  # type: ignore[union-attr]
    transcript.close()
    transcript.open()
    transcript.join("dev", "Bob", ts=T)
    await transcript.flush()
    transcript.close()
    assert read(path) == ["earlier", "2026-11-21 14:03:07 [dev] * Bob joined"]


async def test_the_writer_batches_and_flushes_everything_on_cancellation(
    path: Path, autojump_clock: object
) -> None:
    transcript = Transcript(path)
    transcript.open()
    async with trio.open_nursery() as nursery:
        await nursery.start(transcript.run)
        transcript.join("dev", "Mina", ts=T)
        await trio.sleep(transcript.batch_interval / 2)
        assert transcript.pending > 0  # not yet: the batch is still collecting
        transcript.join("dev", "Bob", ts=T)
        await trio.sleep(1)
        await transcript.flush()
        assert transcript.pending == 0
        assert len(read(path)) == 2
        for i in range(100):
            transcript.message(ev.Message("dev", "Mina", f"m{i}", i + 1, T))
        nursery.cancel_scope.cancel()
    assert transcript.pending == 0
    transcript.close()
    lines = read(path)
    assert len(lines) == 102
    assert lines[-1] == "2026-11-21 14:03:07 [dev] <Mina> m99"


async def test_reopen_after_logrotate_renamed_the_file(path: Path, autojump_clock: object) -> None:
    async with running(path) as transcript:
        transcript.join("dev", "Mina", ts=T)
        await trio.sleep(1)
        await transcript.flush()
        rotated = rotate(path)
        transcript.join("dev", "Bob", ts=T)  # still pending when the signal comes
        transcript.reopen()
        transcript.join("dev", "Eve", ts=T)
        await trio.sleep(1)
        await transcript.flush()
    assert read(rotated) == ["2026-11-21 14:03:07 [dev] * Mina joined"]
    assert read(path) == [
        "2026-11-21 14:03:07 [dev] * Bob joined",
        "2026-11-21 14:03:07 [dev] * Eve joined",
    ]


async def test_reopen_with_nothing_pending_recreates_the_file_promptly(
    path: Path, autojump_clock: object
) -> None:
    async with running(path) as transcript:
        rotate(path)
        transcript.reopen()
        await trio.sleep(1)
        await transcript.flush()
    assert read(path) == []


@pytest.mark.allow_server_errors  # a storage failure is logged on purpose
async def test_a_failed_write_keeps_the_lines_until_the_file_can_be_opened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    path = directory / "chat.log"
    transcript = Transcript(path)
    transcript.open()
    transcript.join("dev", "Mina", ts=T)
    await transcript.flush()
    (directory / "chat.log").unlink()
    directory.rmdir()
    transcript.join("dev", "Bob", ts=T)
    transcript.reopen()
    assert not await transcript.flush()  # the directory is gone
    assert transcript.failures == 1
    assert "cannot write the transcript" in caplog.records[-1].getMessage()
    transcript.join("dev", "Eve", ts=T)
    directory.mkdir()
    assert await transcript.flush()
    transcript.close()
    assert read(path) == [
        "2026-11-21 14:03:07 [dev] * Bob joined",
        "2026-11-21 14:03:07 [dev] * Eve joined",
    ]


def test_close_writes_what_is_pending(path: Path) -> None:
    transcript = Transcript(path)
    transcript.open()
    transcript.join("dev", "Mina", ts=T)
    transcript.close()
    transcript.close()
    assert read(path) == ["2026-11-21 14:03:07 [dev] * Mina joined"]


@pytest.mark.allow_server_errors  # a storage failure is logged on purpose
def test_pending_is_bounded_by_dropping_the_oldest_whole_lines(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    line = len("2026-11-21 14:03:07 [dev] * Mina joined\n")
    transcript = Transcript(path, max_pending=3 * line + 5)
    for name in ["Mina", "Bobb", "Evee", "Zedd", "Yves"]:
        transcript.join("dev", name, ts=T)
    assert transcript.pending == 3 * line
    assert transcript.dropped == 2 * line
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    transcript.close()
    assert [x.split()[-2] for x in read(path)] == ["Evee", "Zedd", "Yves"]
