"""What a room publishes in one fan-out pass, made once for all who keep it.

A pass is consecutive messages of one room.  The room makes, once, the two forms
that the rest of the server reads: the text-format bytes it sends (which the
``--db`` store keeps as they are) and a plain tuple per message (which the history
ring keeps).  `ev.Message` events are built only if someone asks for them (a JSON
member, a transcript): a frozen event costs three times a tuple, and on the burst
path it was a third of the pass's own work.

Pure bookkeeping: no trio, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..protocol import events as ev
from ..protocol.formatting import encode_rows_text

__all__ = ["Row", "RoomPass"]

#: A message as the history keeps it: (room, sender, text, id, ts).
Row = tuple[str, str, str, int, float]


class RoomPass:
    """``rows``: consecutive messages of ``room``, ids ascending by one from
    ``first_id``; ``text``: their text format; ``ts``: the time they share, or None
    when they do not all have one (a pass from the cluster)."""

    __slots__ = ("_messages", "first_id", "room", "rows", "text", "ts")

    def __init__(self, room: str, rows: list[Row], text: bytes, ts: float | None) -> None:
        self.room = room
        self.rows = rows
        self.first_id = rows[0][3]
        self.text = text
        self.ts = ts
        self._messages: list[ev.Message] | None = None

    @classmethod
    def of_rows(cls, rows: list[Row], text: bytes | None = None) -> RoomPass:
        """A pass of rows (one room, consecutive ids), such as the cluster delivers;
        ``text`` if their text format is at hand."""
        first_ts = rows[0][4]
        same = all(row[4] == first_ts for row in rows)
        if text is None:
            text = encode_rows_text(rows)
        return cls(rows[0][0], rows, text, first_ts if same else None)

    @classmethod
    def of_messages(cls, messages: Sequence[ev.Message], text: bytes | None = None) -> RoomPass:
        """`of_rows` of events (the store's `put_nowait`, tests)."""
        made = cls.of_rows([(m.room, m.sender, m.text, m.id, m.ts) for m in messages], text)
        made._messages = list(messages)
        return made

    def __repr__(self) -> str:
        return f"<RoomPass {self.room} {self.first_id}..{self.last_id}>"

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def last_id(self) -> int:
        return self.first_id + len(self.rows) - 1

    def messages(self) -> list[ev.Message]:
        """The pass as events (made on the first call)."""
        if self._messages is None:
            self._messages = [ev.Message(*row) for row in self.rows]
        return self._messages
