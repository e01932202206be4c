"""Accounts, bans, mutes and topics in Redis, so that every node of a cluster shares them.

The same interfaces as the SQLite stores (`machat.server.accounts.AccountStore`,
`machat.server.moderation.ModerationStore`), on the backplane's Redis client:

=========================  ======  =================================================
key                        type    what
=========================  ======  =================================================
``account:<folded name>``  string  JSON ``{"name", "hash", "created"}``
``bans``                   hash    folded name -> JSON of the ban
``topics``                 hash    room key -> JSON of the topic
``mutes``                  hash    folded name -> JSON of the mute
=========================  ======  =================================================

Accounts are read from Redis at every check; a new one is written with ``SET NX``,
so two nodes registering one name at once cannot both succeed.  Bans, mutes and
topics are written through; `Moderation` keeps them in memory and, with a store that
says it is ``shared``, re-reads them before every admission and ``/bans``, and
whenever another node says it changed them (`ClusterServer.moderated_elsewhere`),
so a ban made on one node refuses the name on all of them.  A Redis failure is a ``113 cluster
unavailable`` refusal, never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any, TypeVar

import attrs
import coredis
import trio
from coredis.exceptions import RedisError
from coredis.tokens import PureToken

from ..protocol.errors import ChatError, ErrorCode
from ..server.accounts import Account
from ..server.moderation import Ban, Mute, Topic

__all__ = ["RedisAccountStore", "RedisModerationStore"]

T = TypeVar("T")


class _Redis:
    def __init__(self, client: coredis.Redis[str], prefix: str, timeout: float) -> None:
        self.client = client
        self.prefix = prefix
        self.timeout = timeout

    async def call(self, request: Awaitable[T]) -> T:
        try:
            with trio.fail_after(self.timeout):
                return await request
        except (RedisError, OSError, trio.TooSlowError) as exc:
            reason = "timed out" if isinstance(exc, trio.TooSlowError) else str(exc)
            raise ChatError(
                ErrorCode.CLUSTER_UNAVAILABLE, f"cluster unavailable: Redis: {reason}"
            ) from None


class RedisAccountStore(_Redis):
    def _key(self, key: str) -> str:
        return f"{self.prefix}account:{key}"

    @staticmethod
    def _encode(account: Account) -> str:
        return json.dumps({"name": account.name, "hash": account.hash, "created": account.created})

    async def get(self, key: str) -> Account | None:
        raw = await self.call(self.client.get(self._key(key)))
        if raw is None:
            return None
        obj = json.loads(raw)
        return Account(key, obj["name"], obj["hash"], obj["created"])

    async def add(self, account: Account) -> bool:
        request = self.client.set(
            self._key(account.key), self._encode(account), condition=PureToken.NX
        )
        return bool(await self.call(request))

    async def replace(self, account: Account) -> None:
        request = self.client.set(
            self._key(account.key), self._encode(account), condition=PureToken.XX
        )
        await self.call(request)

    async def remove(self, key: str) -> bool:
        return bool(await self.call(self.client.delete([self._key(key)])))


def _record(obj: Any) -> str:
    return json.dumps(attrs.asdict(obj))


class RedisModerationStore(_Redis):
    #: Other nodes change it too: `Moderation` re-reads it before it decides.
    shared = True

    @property
    def _bans(self) -> str:
        return f"{self.prefix}bans"

    @property
    def _topics(self) -> str:
        return f"{self.prefix}topics"

    @property
    def _mutes(self) -> str:
        return f"{self.prefix}mutes"

    async def load(self) -> tuple[list[Ban], list[Topic], list[Mute]]:
        bans = await self.call(self.client.hgetall(self._bans))
        topics = await self.call(self.client.hgetall(self._topics))
        mutes = await self.call(self.client.hgetall(self._mutes))
        return (
            [Ban(**json.loads(value)) for value in bans.values()],
            [Topic(**json.loads(value)) for value in topics.values()],
            [Mute(**json.loads(value)) for value in mutes.values()],
        )

    async def put_mute(self, mute: Mute) -> None:
        await self.call(self.client.hset(self._mutes, {mute.key: _record(mute)}))

    async def delete_mute(self, key: str) -> None:
        await self.call(self.client.hdel(self._mutes, [key]))

    async def put_ban(self, ban: Ban) -> None:
        await self.call(self.client.hset(self._bans, {ban.key: _record(ban)}))

    async def delete_ban(self, key: str) -> None:
        await self.call(self.client.hdel(self._bans, [key]))

    async def put_topic(self, topic: Topic) -> None:
        await self.call(self.client.hset(self._topics, {topic.room_key: _record(topic)}))

    async def delete_topic(self, room_key: str) -> None:
        await self.call(self.client.hdel(self._topics, [room_key]))
