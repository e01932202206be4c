"""What nodes say to each other over Redis pub/sub: payloads in, events out.

Pure functions, no I/O.  A payload is UTF-8 text; fields are separated by tabs and
records by newlines.  That is safe because names and rooms are ASCII without either,
and chat text never holds a newline (it is one line) -- it may hold tabs, so text is
always the last field of its record.

A batch's lines are the text wire format itself (``sender:text``, a line each, as
members receive them; a name holds no colon): a node hands them to its members as
they came, without a look at each.  The tag ``R`` replaced ``M`` (a sender and a
text a line each) when that changed, so a node of either kind ignores the other's
batches rather than misread them (the gaps they leave are filled from the room's
stream once noticed): upgrade a cluster's nodes together.

Room channel (``room:R``)::

    R<TAB>epoch<TAB>first id<TAB>ts<TAB>count<TAB>origin node<TAB>batch number<TAB>incarnation
    sender 1:text 1                       a batch (the Lua script writes it): ``count``
    sender 2:text 2                       messages with ids first, first+1, ...; the
    ...                                   publish that made it (`Made`)
    J<TAB>origin<TAB>name                                      joined
    L<TAB>origin<TAB>name<TAB>reason                           left
    N<TAB>origin<TAB>old<TAB>new                               renamed

Node channel (``node:N``)::

    P<TAB>ts<TAB>from<TAB>name,name...<NEWLINE>text            private, to those names
    G<TAB>#group<TAB>ts<TAB>from<TAB>name,name...<NEWLINE>text group message

All channel (``all``)::

    B<TAB>origin<TAB>ts<TAB>from<NEWLINE>text                   ``@ALL:``
    X<TAB>node<NEWLINE>Name<TAB>room<NEWLINE>...                node gone, with its users
    A<TAB>origin<TAB>action<TAB>name<TAB>by<TAB>minutes<NEWLINE>reason
                                                               a moderation action
    T<TAB>origin<TAB>room<TAB>by<TAB>ts<NEWLINE>text             a room's new topic
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from ..protocol import events as ev
from ..protocol.formatting import text_run
from ..server.passes import RoomPass

__all__ = [
    "PROTOCOL",
    "Batch",
    "Made",
    "Moderated",
    "NodeGone",
    "Run",
    "decode_all",
    "decode_batch",
    "decode_direct",
    "decode_made",
    "decode_room_notice",
    "encode_broadcast",
    "encode_lines",
    "encode_moderated",
    "encode_notice",
]


#: The cluster protocol this node speaks: these payloads, the scripts and what they
#: keep in Redis.  A node joins only a cluster whose live nodes all speak it
#: (`scripts.HEARTBEAT`), since nodes that read each other differently would lose
#: messages without a word.  Raise it with any change to one of them.  (1 was the
#: ``M`` batches, before any node said which protocol it spoke; 2, batches that did
#: not name the origin's incarnation.)
PROTOCOL = 3


class WireError(ValueError):
    """A payload that does not parse (a bug or a foreign publisher)."""


@attrs.frozen
class Batch:
    """Consecutive messages of one room, as the publish script numbered them."""

    epoch: int
    first: int
    ts: float
    count: int
    origin: str
    #: The origin's incarnation (its batch numbers start again in each).
    incarnation: str
    #: The origin's number for the publish (`scripts.PUBLISH`'s batch seq).
    seq: int
    #: The messages in the text wire format: ``sender:text\n`` each.
    lines: str

    @property
    def made(self) -> Made:
        """The publish that made it: the same for a copy published again."""
        return (self.origin, self.incarnation, self.seq)

    def room_pass(self, room: str) -> RoomPass:
        """The messages as a pass of ``room`` (its rows made only if asked for)."""
        return RoomPass.of_text(room, self.first, self.count, self.lines.encode(), self.ts)


@attrs.frozen
class NodeGone:
    node: str
    #: (name, room) of every user the node had
    users: tuple[tuple[str, str], ...]


#: The publish that made a batch: (origin node, its incarnation, its batch number).
#: A publish sent again after Redis lost everything is a new batch of a new stream,
#: made by the same publish.
Made = tuple[str, str, int]


def decode_made(field: str) -> tuple[Made, int] | None:
    """A stored batch's first entry's ``b`` field (`scripts.PUBLISH`): the publish that
    made it and the batch's count; None for the other entries (``""``)."""
    parts = field.split("\t")
    if len(parts) != 4:
        return None
    try:
        return (parts[0], parts[1], int(parts[2])), int(parts[3])
    except ValueError:
        return None


#: One sender's consecutive texts, as a room's pass holds them (a list or a tuple:
#: a lone str would read as its characters).
Run = tuple[str, list[str] | tuple[str, ...]]


def encode_lines(runs: Iterable[Run]) -> str:
    """The body of a publish (`scripts.PUBLISH`): the text wire format of the lines,
    given as runs of one sender's texts, with one join per run."""
    return "".join([text_run(sender, texts) for sender, texts in runs])


def decode_batch(payload: str) -> Batch:
    head, _, lines = payload.partition("\n")
    parts = head.split("\t")
    if len(parts) != 8 or parts[0] != "R":
        raise WireError(f"bad batch header {head[:80]!r}")
    try:
        epoch, first, ts, count = int(parts[1]), int(parts[2]), float(parts[3]), int(parts[4])
        seq = int(parts[6])
    except ValueError:
        raise WireError(f"bad batch header {head[:80]!r}") from None
    newlines = lines.count("\n")
    if newlines != count or (count and not lines.endswith("\n")):
        raise WireError(f"batch of {count} with {newlines} newlines")
    return Batch(epoch, first, ts, count, parts[5], parts[7], seq, lines)


def encode_notice(origin: str, event: ev.Join | ev.Leave | ev.Nick) -> str:
    if isinstance(event, ev.Join):
        return f"J\t{origin}\t{event.name}"
    if isinstance(event, ev.Leave):
        return f"L\t{origin}\t{event.name}\t{event.reason}"
    return f"N\t{origin}\t{event.old}\t{event.new}"


def decode_room_notice(payload: str, room: str) -> tuple[str, ev.Join | ev.Leave | ev.Nick]:
    """A room notice: (origin node, event)."""
    parts = payload.split("\t")
    kind = parts[0]
    if kind == "J" and len(parts) == 3:
        return parts[1], ev.Join(room, parts[2])
    if kind == "L" and len(parts) == 4:
        return parts[1], ev.Leave(room, parts[2], parts[3])
    if kind == "N" and len(parts) == 4:
        return parts[1], ev.Nick(parts[2], parts[3])
    raise WireError(f"bad room notice {payload[:80]!r}")


def encode_broadcast(origin: str, sender: str, text: str, ts: float) -> str:
    return f"B\t{origin}\t{ts!r}\t{sender}\n{text}"


def direct_header(kind: str, ts: float, sender: str) -> str:
    """The head of a private (``P``) or group (``G\\t#name``) payload, before the names."""
    return f"{kind}\t{ts!r}\t{sender}"


def decode_direct(payload: str) -> tuple[ev.Private | ev.GroupMessage, list[str]]:
    """A private or group message for some of this node's users: (event, their names)."""
    head, _, text = payload.partition("\n")
    parts = head.split("\t")
    try:
        if parts[0] == "P" and len(parts) == 4:
            return ev.Private(parts[2], text, float(parts[1])), parts[3].split(",")
        if parts[0] == "G" and len(parts) == 5:
            event = ev.GroupMessage(parts[1], parts[3], text, float(parts[2]))
            return event, parts[4].split(",")
    except ValueError:
        pass
    raise WireError(f"bad direct message {head[:80]!r}")


@attrs.frozen
class Moderated:
    """A moderation action (or a new topic) done on node ``origin``."""

    origin: str
    event: ev.Moderation | ev.Topic


def encode_moderated(origin: str, event: ev.Moderation | ev.Topic) -> str:
    if isinstance(event, ev.Topic):
        return f"T\t{origin}\t{event.room}\t{event.by}\t{event.ts!r}\n{event.text}"
    e = event
    return f"A\t{origin}\t{e.action}\t{e.name}\t{e.by}\t{e.minutes}\n{e.reason}"


def decode_all(payload: str) -> tuple[str, ev.Broadcast] | NodeGone | Moderated:
    """A broadcast (origin, event), a node that went away, or a moderation action."""
    head, _, rest = payload.partition("\n")
    parts = head.split("\t")
    if parts[0] == "B" and len(parts) == 4:
        try:
            return parts[1], ev.Broadcast(parts[3], rest, float(parts[2]))
        except ValueError:
            pass
    elif parts[0] == "A" and len(parts) == 6:
        try:
            event = ev.Moderation(parts[2], parts[3], parts[4], rest, int(parts[5]))
        except ValueError:  # (an unknown action too)
            pass
        else:
            return Moderated(parts[1], event)
    elif parts[0] == "T" and len(parts) == 5:
        try:
            return Moderated(parts[1], ev.Topic(parts[2], rest, parts[3], float(parts[4])))
        except ValueError:
            pass
    elif parts[0] == "X" and len(parts) == 2:
        users = []
        for line in rest.split("\n") if rest else []:
            name, _, room = line.partition("\t")
            users.append((name, room))
        return NodeGone(parts[1], tuple(users))
    raise WireError(f"bad cluster payload {head[:80]!r}")
