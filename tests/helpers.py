"""A tiny line-oriented test client, usable over memory streams and sockets."""

from __future__ import annotations

import json

import trio

from machat.protocol.framing import LineBuffer
from machat.server.outbox import Outbox


class LineClient:
    """Speaks machat from the client side; every wait is bounded by the caller."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._buffer = LineBuffer(1 << 20)
        self.seen: list[str] = []
        self.closed = False

    async def handshake(self, name: str, room: str | None = "dev", **extra: object) -> None:
        obj: dict[str, object] = {"name": name, **extra}
        if room is not None:
            obj["room"] = room
        await self.stream.send_all(json.dumps(obj).encode() + b"\n")

    async def send(self, *lines: str) -> None:
        await self.stream.send_all("".join(line + "\n" for line in lines).encode())

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def line(self) -> str:
        """The next line; raises EOFError once the server has closed."""
        while (data := self._buffer.next_line()) is None:
            if self.closed:
                raise EOFError
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                self.closed = True
                self._buffer.feed_eof()
                continue
            self._buffer.feed(chunk)
        text = data.decode()
        self.seen.append(text)
        return text

    async def expect(self, wanted: str) -> list[str]:
        """Read until a line equal to ``wanted``; returns the lines before it."""
        skipped = []
        while (text := await self.line()) != wanted:
            skipped.append(text)
        return skipped

    async def expect_prefix(self, prefix: str) -> str:
        while not (text := await self.line()).startswith(prefix):
            pass
        return text

    async def json(self) -> dict:
        return json.loads(await self.line())

    async def until_closed(self) -> list[str]:
        """Every line until the server closes."""
        lines = []
        try:
            while True:
                lines.append(await self.line())
        except EOFError:
            return lines

    async def aclose(self) -> None:
        await self.stream.aclose()


class QueueSender(Outbox):
    """A `Sender` with nothing behind it: what it was given stays queued to be read
    back with `take_nowait` (the state machine's view of a member's screen)."""

    def send_nowait(self, data: bytes) -> bool:
        return self.put_nowait(data)

    def evict(self, last: bytes) -> None:
        self.replace_and_close(last)

    async def wait_flushed(self) -> None:
        await trio.lowlevel.checkpoint()
