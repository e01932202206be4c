"""One room's messages in id order, from a subscription that may drop and repeat.

Pure bookkeeping, no I/O (tested with hypothesis).  Batches arrive from the room's
pub/sub channel, and stored entries from the room's stream when a gap is filled;
both go through `RoomFeed.offer` (a batch through `RoomFeed.offer_pass`), which
returns what may be delivered now: every id once, in order.  Messages are rows
(room, sender, text, id, ts), as a room's pass keeps them (`machat.server.passes`).
What is ahead of a gap waits until the gap is filled from the stream, or given up
(`skip`) when the stream no longer holds it.  A batch known to be a copy of one
delivered already goes through `RoomFeed.discard`: its ids are taken in their turn,
and nothing of it is delivered.

The epoch is the id a room's stream started after (see `scripts.PUBLISH`): a larger
epoch means Redis lost the stream and a new one began above every id used before,
so nothing more of the old one can come and delivery continues in the new one.
"""

from __future__ import annotations

from ..server.passes import RoomPass, Row

__all__ = ["RoomFeed"]

#: Replaced streams whose end `RoomFeed.delivered` still knows.
ENDED_KEPT = 4


class RoomFeed:
    """Where one room's delivery stands: the epoch and the last id delivered."""

    __slots__ = ("_ahead", "_ended", "epoch", "head", "last", "lost", "restarts")

    def __init__(self, epoch: int = 0, last: int = 0) -> None:
        self.epoch = epoch
        #: The last id delivered (or known to be before this node's time).
        self.last = max(last, epoch)
        #: The highest id known to exist (from publishing, or the stream's meta).
        self.head = self.last
        #: Messages that arrived ahead of a gap, by id (None: discarded, `discard`).
        self._ahead: dict[int, Row | None] = {}
        #: Ids given up as no longer stored.
        self.lost = 0
        #: How often the stream was found restarted (Redis lost it).
        self.restarts = 0
        #: epoch -> the last id delivered of it, for the latest streams replaced.
        self._ended: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"<RoomFeed epoch={self.epoch} last={self.last} head={self.head}>"

    def _new_epoch(self, epoch: int) -> None:
        if self.epoch:
            self.restarts += 1
            ended = self._ended
            ended[self.epoch] = self.last
            if len(ended) > ENDED_KEPT:
                del ended[min(ended)]
        self.epoch = epoch
        self._ahead = {i: m for i, m in self._ahead.items() if i > epoch}
        if self.last < epoch:
            self.last = epoch
        self.head = max(self.head, self.last)

    def offer(self, epoch: int, rows: list[Row]) -> list[Row]:
        """Take rows (ascending ids) of stream ``epoch``; returns those now deliverable
        (``rows`` itself when they are exactly what comes next: the common case)."""
        if epoch != self.epoch:
            if epoch < self.epoch:
                return []  # from a stream that has since been replaced
            self._new_epoch(epoch)
        if not rows:
            return []
        last = self.last
        top = rows[-1][3]
        if top > self.head:
            self.head = top
        if not self._ahead and rows[0][3] == last + 1 and top == last + len(rows):
            self.last = top  # the common case: exactly what comes next
            return rows
        ahead = self._ahead
        for row in rows:
            if row[3] > last:
                ahead.setdefault(row[3], row)  # (an id discarded stays discarded)
        return self._drain()

    def discard(self, epoch: int, first: int, count: int) -> list[Row]:
        """Take ids ``first`` to ``first + count - 1`` of stream ``epoch`` in their turn
        without delivering them (a copy of messages delivered already); returns what
        that makes deliverable behind them."""
        if epoch != self.epoch:
            if epoch < self.epoch:
                return []
            self._new_epoch(epoch)
        if count <= 0:
            return []
        top = first + count - 1
        if top > self.head:
            self.head = top
        if not self._ahead and first == self.last + 1:
            self.last = top
            return []
        for i in range(max(first, self.last + 1), top + 1):
            self._ahead[i] = None
        return self._drain()

    def offer_pass(self, epoch: int, batch: RoomPass) -> RoomPass | None:
        """`offer` of a pass (a batch from the subscription): the pass itself when it
        is exactly what comes next, without a look at its rows; else what its rows
        make deliverable, as one pass (None if nothing)."""
        if epoch == self.epoch and not self._ahead and batch.first_id == self.last + 1:
            self.last = batch.last_id
            if self.last > self.head:
                self.head = self.last
            return batch
        rows = self.offer(epoch, batch.rows)
        return RoomPass.of_rows(rows) if rows else None

    def _drain(self) -> list[Row]:
        out = []
        ahead = self._ahead
        while (next_id := self.last + 1) in ahead:
            row = ahead.pop(next_id)
            if row is not None:
                out.append(row)
            self.last = next_id
        return out

    def note_head(self, epoch: int, head: int) -> None:
        """Redis says the stream's last id is ``head`` (from a publish or its meta)."""
        if epoch > self.epoch:
            self._new_epoch(epoch)
        if epoch == self.epoch and head > self.head:
            self.head = head

    def gap(self) -> int | None:
        """The first missing id, if something known to exist has not been delivered."""
        if self._ahead or self.head > self.last:
            return self.last + 1
        return None

    def skip(self, upto: int) -> list[Row]:
        """The stream no longer holds ids up to ``upto``: give them up, deliver what follows."""
        if upto > self.last:
            held = sum(1 for i in self._ahead if i <= upto)
            self.lost += upto - self.last - held
            self._ahead = {i: m for i, m in self._ahead.items() if i > upto}
            self.last = upto
        return self._drain()

    def delivered(self, epoch: int, upto: int) -> bool:
        """Whether everything of stream ``epoch`` up to id ``upto`` was delivered here
        (or taken: given up, discarded, or before this node's time)."""
        if epoch == self.epoch:
            return upto <= self.last
        return upto <= self._ended.get(epoch, 0)

    def first_ahead(self) -> int | None:
        return min(self._ahead) if self._ahead else None
