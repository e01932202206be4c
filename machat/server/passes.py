"""What a room publishes in one fan-out pass, made once for all who keep it.

A pass is consecutive messages of one room, in the two forms that the rest of the
server reads: the text-format bytes it sends (which the ``--db`` store keeps as they
are) and a plain tuple per message (which the history ring keeps).  A room's own
pass makes both at once.  A pass from the cluster arrives in the text format
(`RoomPass.of_text`) and makes its rows only if someone asks for them (a JSON member,
the ``--db`` store): on a cluster node, whose history is Redis's, nobody does.
`ev.Message` events are built only on demand too (a JSON member, a transcript): a
frozen event costs three times a tuple, and on the burst path it was a third of the
pass's own work.

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
    """``count`` consecutive messages of ``room``, ids ascending by one from
    ``first_id``: ``text``, their text format; ``ts``, the time they share, or None
    when they do not all have one (passes from the cluster joined); `rows`, the
    messages as rows (made on demand for a pass from the cluster)."""

    __slots__ = ("_messages", "_parts", "_rows", "count", "first_id", "room", "text", "ts")

    def __init__(
        self,
        room: str,
        first_id: int,
        count: int,
        text: bytes,
        ts: float | None,
        *,
        rows: list[Row] | None = None,
        parts: Sequence[RoomPass] = (),
    ) -> None:
        """``rows`` if they are made already; ``parts``, the passes this one joins
        (`joined`), whose rows are its own."""
        self.room = room
        self.first_id = first_id
        self.count = count
        self.text = text
        self.ts = ts
        self._rows = rows
        self._parts = parts
        self._messages: list[ev.Message] | None = None

    @classmethod
    def of_rows(cls, rows: list[Row], text: bytes | None = None) -> RoomPass:
        """A pass of rows (one room, consecutive ids), such as a fill from the
        cluster's stream; ``text`` if their text format is at hand."""
        first_ts = rows[0][4]
        same = all(row[4] == first_ts for row in rows)
        if text is None:
            text = encode_rows_text(rows)
        return cls(rows[0][0], rows[0][3], len(rows), text, first_ts if same else None, rows=rows)

    @classmethod
    def of_messages(cls, messages: Sequence[ev.Message], text: bytes | None = None) -> RoomPass:
        """`of_rows` of events (the store's `put_nowait`, tests)."""
        made = cls.of_rows([(m.room, m.sender, m.text, m.id, m.ts) for m in messages], text)
        made._messages = list(messages)
        return made

    @classmethod
    def of_text(cls, room: str, first_id: int, count: int, text: bytes, ts: float) -> RoomPass:
        """``count`` messages in their text format, ``sender:text`` lines (a name holds
        no colon, a text no newline), stamped ``ts``: the rows are made on demand."""
        return cls(room, first_id, count, text, ts)

    @classmethod
    def joined(cls, passes: Sequence[RoomPass]) -> RoomPass:
        """Consecutive passes of one room as one: their text joined once, their rows
        (if asked for) theirs."""
        if len(passes) == 1:
            return passes[0]
        first = passes[0]
        ts = first.ts if all(p.ts == first.ts for p in passes) else None
        count = sum([p.count for p in passes])
        text = b"".join([p.text for p in passes])
        return cls(first.room, first.first_id, count, text, ts, parts=passes)

    def __repr__(self) -> str:
        return f"<RoomPass {self.room} {self.first_id}..{self.last_id}>"

    def __len__(self) -> int:
        return self.count

    @property
    def last_id(self) -> int:
        return self.first_id + self.count - 1

    @property
    def rows(self) -> list[Row]:
        """The messages as (room, sender, text, id, ts) rows (made on the first call
        for a pass from the cluster)."""
        rows = self._rows
        if rows is None:
            if self._parts:
                rows = [row for part in self._parts for row in part.rows]
            else:
                assert self.ts is not None  # (`of_text` stamps every message alike)
                rows = _decode_text(self.room, self.first_id, self.text, self.ts)
            self._rows = rows
        return rows

    def first_ts(self) -> float:
        """The first message's time."""
        if self.ts is not None:
            return self.ts
        return self._parts[0].first_ts() if self._parts else self.rows[0][4]

    def messages(self) -> list[ev.Message]:
        """The pass as events (made on the first call)."""
        if self._messages is None:
            self._messages = [ev.Message(*row) for row in self.rows]
        return self._messages


def _decode_text(room: str, first_id: int, text: bytes, ts: float) -> list[Row]:
    lines = text.decode("utf-8").split("\n")
    lines.pop()  # (after the last newline)
    rows: list[Row] = []
    for i, line in enumerate(lines, first_id):
        sender, _, said = line.partition(":")
        rows.append((room, sender, said, i, ts))
    return rows
