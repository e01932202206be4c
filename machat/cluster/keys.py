"""Where the cluster keeps things in Redis: every key and channel name in one place.

Everything starts with a prefix (``machat:``), so one Redis can hold other data too.
A room's two keys share the hash tag ``{room}`` and a node's keys share ``{node}``,
so that in a Redis Cluster each room, and each node, lives in one slot.

=============================  ======  ===============================================
key                            type    what
=============================  ======  ===============================================
``nodes``                      zset    node -> alive until (ms, Redis's clock)
``protocols``                  hash    node -> the cluster protocol it speaks
``node:{N}:inc``               string  the incarnation running as node N (a lease)
``node:{N}:users``             hash    folded name -> ``Name<TAB>room`` of N's users
``name:<folded name>``         string  the name's lease: ``node<TAB>inc<TAB>Name<TAB>n``
``room:{R}:meta``              hash    ``epoch``, ``seq`` (last id), ``n:<node>`` (dedup),
                                       ``c:<id>`` (a copy's first id: the first
                                       copy's first id and count, `scripts.RECORD_COPY`)
``room:{R}:log``               stream  the room's messages, entry id ``<msg id>-0``:
                                       ``f`` sender, ``t`` text, ``s`` ts, and on a
                                       batch's first, ``b`` (the publish that made it)
``groups``                     hash    folded #name -> owner's folded name, its lease,
                                       ``#Name``, members (one per line): valid while
                                       that lease is the owner's (`scripts.GROUP`)
=============================  ======  ===============================================

Channels: ``room:R`` (a room's batches and notices), ``node:N`` (private and group
messages for N's users), ``all`` (``@ALL:`` and nodes that went away).
"""

from __future__ import annotations

__all__ = ["Keys"]


class Keys:
    """Key and channel names under one prefix."""

    def __init__(self, prefix: str = "machat:") -> None:
        self.prefix = prefix
        self.nodes = prefix + "nodes"
        self.all_channel = prefix + "all"
        self.groups = prefix + "groups"

    def room_meta(self, room_key: str) -> str:
        return f"{self.prefix}room:{{{room_key}}}:meta"

    def room_log(self, room_key: str) -> str:
        return f"{self.prefix}room:{{{room_key}}}:log"

    def room_channel(self, room_key: str) -> str:
        return f"{self.prefix}room:{room_key}"

    def node_channel(self, node: str) -> str:
        return f"{self.prefix}node:{node}"

    def name(self, folded: str) -> str:
        return f"{self.prefix}name:{folded}"
