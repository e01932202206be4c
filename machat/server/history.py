"""The recent messages of every room, in memory, and the last id each room used.

Pure bookkeeping (no trio, no I/O): the room task records each message as it is
published, ``/history`` and the handshake's ``history`` read from here, and the
durable store (`machat.server.store`) seeds it at startup.

Memory is bounded twice: each room keeps at most ``per_room`` messages, and at most
``max_rooms`` rooms keep a ring at all; the least recently used ring is dropped
first.  A room's last id outlives its ring (one int per room), so ids keep
increasing when a room is freed and created again.

A ring holds plain tuples, not `Message` objects: the garbage collector stops
tracking a tuple of strings and numbers after its first look at it, so a server
keeping a million messages does not make every full collection walk them.  The
events are rebuilt on the rare read.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence

from ..protocol import events as ev
from ..protocol.handshake import fold_name
from .passes import Row as _Row

__all__ = ["History"]


def _event(row: _Row) -> ev.Message:
    return ev.Message(*row)


class History:
    """Per room: a ring of the last ``per_room`` messages, and the last id used."""

    def __init__(self, per_room: int = 1000, *, max_rooms: int = 10000) -> None:
        if per_room < 0:
            raise ValueError("per_room must be >= 0")
        if max_rooms < 1:
            raise ValueError("max_rooms must be >= 1")
        self.per_room = per_room
        self.max_rooms = max_rooms
        # Least recently used first.
        self._rings: OrderedDict[str, deque[_Row]] = OrderedDict()
        self._last_ids: dict[str, int] = {}
        self.rings_dropped = 0

    def __repr__(self) -> str:
        return f"<History rooms={len(self._rings)} per_room={self.per_room}>"

    def __len__(self) -> int:
        """How many rooms hold a ring now."""
        return len(self._rings)

    def __contains__(self, room: str) -> bool:
        """Whether ``room`` holds a ring now (False after its ring was dropped)."""
        return fold_name(room) in self._rings

    def record(self, message: ev.Message) -> None:
        """Append a just-published message to its room's ring."""
        self.record_pass((message,))

    def record_pass(self, messages: Sequence[ev.Message]) -> None:
        """Append a room's pass (messages of one room, ids ascending) to its ring."""
        self.record_rows([(m.room, m.sender, m.text, m.id, m.ts) for m in messages])

    def record_rows(self, rows: list[_Row]) -> None:
        """`record_pass` of messages given as rows: (room, sender, text, id, ts)."""
        if not rows:
            return
        key = fold_name(rows[0][0])
        ring = self._rings.get(key)
        if ring is None:
            ring = self._rings[key] = deque(maxlen=self.per_room)
            if len(self._rings) > self.max_rooms:
                self._rings.popitem(last=False)
                self.rings_dropped += 1
        else:
            self._rings.move_to_end(key)
        ring.extend(rows)
        last = rows[-1][3]
        if last > self._last_ids.get(key, 0):
            self._last_ids[key] = last

    def recent(self, room: str, count: int) -> tuple[ev.Message, ...]:
        """The last ``count`` messages of ``room``, oldest first."""
        key = fold_name(room)
        ring = self._rings.get(key)
        if ring is None:
            return ()
        self._rings.move_to_end(key)
        if count <= 0:
            return ()
        newest_first = list(itertools.islice(reversed(ring), count))
        newest_first.reverse()
        return tuple(map(_event, newest_first))

    def since(self, room: str, id: int) -> tuple[tuple[ev.Message, ...], bool]:
        """The kept messages of ``room`` with an id above ``id``, oldest first, and
        whether they are all of them (False if some were dropped, or if ``id`` is
        from beyond what this history knows, as after a restart without a store)."""
        key = fold_name(room)
        last = self._last_ids.get(key, 0)
        ring = self._rings.get(key)
        if id > last:
            return (), False
        if ring is None:
            return (), id == last
        self._rings.move_to_end(key)
        newer: list[_Row] = []
        for row in reversed(ring):
            if row[3] <= id:
                break
            newer.append(row)
        newer.reverse()
        complete = id == last or (bool(ring) and ring[0][3] <= id + 1)
        return tuple(map(_event, newer)), complete

    def last_id(self, room: str) -> int:
        """The highest id ``room`` ever used (0 for a room never seen)."""
        return self._last_ids.get(fold_name(room), 0)

    def set_last_id(self, room: str, id: int) -> None:
        """Note that ``room`` has used ``id``; never lowers the last id."""
        key = fold_name(room)
        if id > self._last_ids.get(key, 0):
            self._last_ids[key] = id

    def load(self, messages: Iterable[ev.Message]) -> None:
        """Seed from the store at startup (any order; recorded by room, then id)."""
        for message in sorted(messages, key=lambda m: (fold_name(m.room), m.id)):
            self.record(message)
