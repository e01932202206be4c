"""The Lua scripts the cluster runs inside Redis, each one atomic and one round trip.

Numbers: Lua's numbers are doubles, exact up to 2^53, and Redis turns a Lua number
it is given into text with 14 significant digits.  Ids reach 10^15 (they start at
the microsecond a room's stream began), so every id handed to ``redis.call`` or
returned is formatted with ``%d`` first.

Keys are built inside some scripts from the prefix (``ARGV[1]``): they walk sets of
nodes and names that the caller cannot list in advance.  That is fine on one Redis;
see README ("Beyond one Redis") for what Redis Cluster would change.
"""

from __future__ import annotations

__all__ = [
    "CLAIM",
    "GROUP",
    "HEARTBEAT",
    "PRESENCE",
    "PUBLISH",
    "READ",
    "RECORD_COPY",
    "ROSTER",
    "ROUTE",
]

#: Append a batch of lines to a room: number them, store them, publish them.
#:
#: KEYS: meta, log.  ARGV: channel, maxlen, node, incarnation, batch seq, floor,
#: count, the lines as one string (the text wire format, ``sender:text`` and a
#: newline each: a name holds no colon, a text no newline; one argument, not two
#: per line, keeps the client's cost per call down, and the batch published carries
#: it as it is, for the nodes to hand to their members), then the keys' expiry in
#: ms.  Returns {first id, epoch, ts, duplicate}.
#:
#: The batch's first entry in the stream also says which publish made it (field
#: ``b``: node, incarnation, batch seq and count, tab-separated), as the published
#: batch's header does: a publish sent again after Redis lost everything starts a
#: new stream, and the nodes that delivered the first copy know it by that.
#:
#: ``epoch`` is the id the room's current stream began after.  When the meta is
#: missing (a new room, or Redis lost it) a new stream starts after the larger of
#: Redis's clock in microseconds and ``floor`` (the last id the publishing node
#: knows), so ids never repeat for anyone holding an old one.  A batch the same
#: node incarnation already published (a retry after a lost reply) is not added
#: again: the first call's result is returned.
PUBLISH = r"""
local meta, log = KEYS[1], KEYS[2]
local node, inc, seq = ARGV[3], ARGV[4], tonumber(ARGV[5])
local n = tonumber(ARGV[7])
local done = redis.call('HGET', meta, 'n:' .. node)
if done then
  local dinc, dseq, dfirst, depoch, dts = string.match(done, '^(.-)\t(%d+)\t(%d+)\t(%d+)\t(.*)$')
  if dinc == inc and tonumber(dseq) >= seq then
    return {dfirst, depoch, dts, 1}
  end
end
local t = redis.call('TIME')
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  local base = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local floor = tonumber(ARGV[6])
  if floor > base then base = floor end
  epoch = string.format('%d', base)
  redis.call('DEL', log)
  redis.call('HSET', meta, 'epoch', epoch, 'seq', epoch)
end
local last = redis.call('HINCRBY', meta, 'seq', n)
local first = last - n + 1
local ts = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
local maxlen = ARGV[2]
local body = ARGV[8]
local pos = 1
local made = node .. '\t' .. inc .. '\t' .. ARGV[5] .. '\t' .. n
for i = 0, n - 1 do
  local a = string.find(body, ':', pos, true)
  local b = string.find(body, '\n', a + 1, true)
  local id = string.format('%d', first + i) .. '-0'
  local from, text = string.sub(body, pos, a - 1), string.sub(body, a + 1, b - 1)
  if i == 0 then
    redis.call('XADD', log, 'MAXLEN', '~', maxlen, id, 'f', from, 't', text, 's', ts, 'b', made)
  else
    redis.call('XADD', log, 'MAXLEN', '~', maxlen, id, 'f', from, 't', text, 's', ts)
  end
  pos = b + 1
end
local sfirst = string.format('%d', first)
redis.call('HSET', meta, 'n:' .. node,
           inc .. '\t' .. seq .. '\t' .. sfirst .. '\t' .. epoch .. '\t' .. ts)
redis.call('PEXPIRE', meta, ARGV[9])
redis.call('PEXPIRE', log, ARGV[9])
local head = 'R\t' .. epoch .. '\t' .. sfirst .. '\t' .. ts .. '\t' .. n .. '\t' .. node
             .. '\t' .. ARGV[5] .. '\t' .. inc
if n > 0 then
  redis.call('PUBLISH', ARGV[1], head .. '\n' .. body)
end
return {sfirst, epoch, ts, 0}
"""

#: Read a room: its epoch and last id, and stored messages.
#:
#: KEYS: meta, log.  ARGV: mode (``after``: ids > ARGV[2], oldest first; ``last``:
#: the newest ARGV[3], newest first), id, count, and ``1`` to be told the copies
#: (optional).  Returns {epoch, seq, copies, id, sender, text, ts, made, ...};
#: epoch and seq are ``""`` when the room has no stream, and ``made`` is the publish
#: a batch's first entry names (`PUBLISH`), else ``""``.  ``copies`` (``""`` unless
#: asked) has a line ``first<TAB>original<TAB>count`` for each batch a node found
#: to be a copy of one published before Redis lost the stream (`RECORD_COPY`).
READ = r"""
local epoch = redis.call('HGET', KEYS[1], 'epoch') or ''
local seq = redis.call('HGET', KEYS[1], 'seq') or ''
local copies = ''
if ARGV[4] == '1' then
  local fields = redis.call('HGETALL', KEYS[1])
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 2) == 'c:' then
      copies = copies .. string.sub(fields[i], 3) .. '\t' .. fields[i + 1] .. '\n'
    end
  end
end
local entries
if ARGV[3] == '0' then
  entries = {}
elseif ARGV[1] == 'after' then
  entries = redis.call('XRANGE', KEYS[2], '(' .. ARGV[2] .. '-0', '+', 'COUNT', ARGV[3])
else
  entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[3])
end
local out = {epoch, seq, copies}
for _, e in ipairs(entries) do
  local f = e[2]
  local m = {}
  for i = 1, #f, 2 do m[f[i]] = f[i + 1] end
  table.insert(out, string.sub(e[1], 1, -3))
  table.insert(out, m['f'] or '')
  table.insert(out, m['t'] or '')
  table.insert(out, m['s'] or '0')
  table.insert(out, m['b'] or '')
end
return out
"""

#: Note that a batch is a copy (`Backplane._copy_of`): KEYS: meta.  ARGV: the
#: stream's epoch, the copy's first id, the first copy's first id, count.  Only in
#: that stream (if Redis lost it again, the note would be of ids nobody holds).
#: `READ` gives the notes to `Backplane.since` on every node.
RECORD_COPY = r"""
if redis.call('HGET', KEYS[1], 'epoch') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'c:' .. ARGV[2], ARGV[3] .. '\t' .. ARGV[4])
end
return 0
"""

#: Claim a name's lease: KEYS: lease.  ARGV: value, lease ms.  Returns 1 if ours.
#: Calling it again with the same value (a retry) still says 1.
CLAIM = r"""
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if v then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

#: Apply a node's presence changes, release names (and the groups defined under
#: them, see `GROUP`), publish room notices.
#:
#: ARGV: prefix, node, users ttl ms, then five counted sections:
#: n, (folded name, "Name<TAB>room") * n to set; n, folded name * n to delete;
#: n, (folded name, lease value) * n leases to release if still this value;
#: n, (folded group, lease value) * n groups to delete if defined under that lease;
#: n, (channel, payload) * n to publish.
PRESENCE = r"""
local P, node = ARGV[1], ARGV[2]
local users = P .. 'node:{' .. node .. '}:users'
local i = 4
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('HSET', users, ARGV[i], ARGV[i + 1]); i = i + 2
end
if n > 0 then redis.call('PEXPIRE', users, ARGV[3]) end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('HDEL', users, ARGV[i]); i = i + 1
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local key = P .. 'name:' .. ARGV[i]
  if redis.call('GET', key) == ARGV[i + 1] then redis.call('DEL', key) end
  i = i + 2
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local old = redis.call('HGET', P .. 'groups', ARGV[i])
  if old and string.match(old, '^[^\n]*\n([^\n]*)\n') == ARGV[i + 1] then
    redis.call('HDEL', P .. 'groups', ARGV[i])
  end
  i = i + 2
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('PUBLISH', ARGV[i], ARGV[i + 1]); i = i + 2
end
return 1
"""

#: A node's heartbeat, which also reaps nodes that stopped beating.
#:
#: ARGV: prefix, node, incarnation, alive ms, lease ms, users ttl ms, mode
#: (``start``, ``beat``, or ``retire`` to leave now), the cluster protocol this node
#: speaks (`wire.PROTOCOL`), then (folded name, Name, room, lease value) per user.
#:
#: At ``start``, a node alive that speaks another protocol (or none: a node older
#: than protocols) keeps this one out: {``protocol``, now ms, that node, its
#: protocol or ""}, and nothing is written.
#: Refreshes this node's liveness, its incarnation lease and its users' name leases.
#: If the incarnation lease was gone (Redis lost its data, or this node was reaped),
#: presence is written afresh and free names are claimed again.  Then every node
#: whose liveness ran out is removed: its users' entries, name leases and groups are
#: deleted and ``X`` (with the users) is published on the all channel, so the rooms
#: hear that they left.  (No incarnation of a node reaped is alive: a live one would
#: have kept its liveness; so every lease naming it is dead.)  Returns {status,
#: now ms, lost name, ...}; status is ``ok``, ``fresh``, ``taken`` (another
#: incarnation holds this node name) or ``protocol`` (above).
HEARTBEAT = r"""
local P, node, inc = ARGV[1], ARGV[2], ARGV[3]
local alive, lease, uttl, mode = tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7]
local proto = ARGV[8]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nodes = P .. 'nodes'
local protocols = P .. 'protocols'
local inckey = P .. 'node:{' .. node .. '}:inc'
local users = P .. 'node:{' .. node .. '}:users'
local held = redis.call('GET', inckey)
local status = 'ok'
local out = {status, string.format('%d', now)}
if mode == 'retire' then
  if held == inc then redis.call('ZADD', nodes, 0, node) end
else
  if held ~= inc then
    if held then return {'taken', string.format('%d', now)} end
    status = 'fresh'
  end
  if mode == 'start' then
    local others = redis.call('ZRANGEBYSCORE', nodes, string.format('%d', now), '+inf')
    for _, d in ipairs(others) do
      local spoken = redis.call('HGET', protocols, d)
      if d ~= node and spoken ~= proto then
        return {'protocol', string.format('%d', now), d, spoken or ''}
      end
    end
  end
  redis.call('HSET', protocols, node, proto)
  if status == 'fresh' then
    out[1] = status
    redis.call('DEL', users)
  end
  redis.call('SET', inckey, inc, 'PX', lease)
  redis.call('ZADD', nodes, string.format('%d', now + alive), node)
end
for i = 9, #ARGV, 4 do
  local key = P .. 'name:' .. ARGV[i]
  local v = redis.call('GET', key)
  local ours = v == ARGV[i + 3]
  if ours then
    redis.call('PEXPIRE', key, lease)
  elseif not v and status == 'fresh' then
    redis.call('SET', key, ARGV[i + 3], 'PX', lease)
    ours = true
  end
  if ours then
    if status == 'fresh' then
      redis.call('HSET', users, ARGV[i], ARGV[i + 1] .. '\t' .. ARGV[i + 2])
    end
  else
    table.insert(out, ARGV[i + 1])
  end
end
if redis.call('EXISTS', users) == 1 then redis.call('PEXPIRE', users, uttl) end
local dead = redis.call('ZRANGEBYSCORE', nodes, '-inf', '(' .. string.format('%d', now))
for _, d in ipairs(dead) do
  if d ~= node or mode == 'retire' then
    redis.call('ZREM', nodes, d)
    redis.call('HDEL', protocols, d)
    local ukey = P .. 'node:{' .. d .. '}:users'
    local entries = redis.call('HGETALL', ukey)
    local parts = {'X\t' .. d}
    local mark = d .. '\t'
    for j = 1, #entries, 2 do
      local lkey = P .. 'name:' .. entries[j]
      local lv = redis.call('GET', lkey)
      if lv and string.sub(lv, 1, #mark) == mark then redis.call('DEL', lkey) end
      table.insert(parts, entries[j + 1])
    end
    redis.call('DEL', ukey, P .. 'node:{' .. d .. '}:inc')
    local groups = redis.call('HGETALL', P .. 'groups')
    for j = 1, #groups, 2 do
      local owner = string.match(groups[j + 1], '^[^\n]*\n([^\n]*)\n')
      if owner and string.sub(owner, 1, #mark) == mark then
        redis.call('HDEL', P .. 'groups', groups[j])
      end
    end
    redis.call('PUBLISH', P .. 'all', table.concat(parts, '\n'))
  end
end
return out
"""

#: Everyone in the cluster: ARGV: prefix.  Returns {node, count, "Name<TAB>room" * count,
#: node, ...} for every node alive.
ROSTER = r"""
local P = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
local alive = redis.call('ZRANGEBYSCORE', P .. 'nodes', string.format('%d', now), '+inf')
for _, node in ipairs(alive) do
  local vals = redis.call('HVALS', P .. 'node:{' .. node .. '}:users')
  table.insert(out, node)
  table.insert(out, #vals)
  for _, v in ipairs(vals) do table.insert(out, v) end
end
return out
"""

#: Send a private or group message to names wherever they are online.
#:
#: ARGV: prefix, header (``P<TAB>ts<TAB>from`` or ``G<TAB>#g<TAB>ts<TAB>from``), text,
#: then the folded names.  Publishes one payload per node holding some of them.
#: Returns, per name, its spelling if online, else ``""``.
ROUTE = r"""
local P = ARGV[1]
local bynode, order, found = {}, {}, {}
for i = 4, #ARGV do
  local v = redis.call('GET', P .. 'name:' .. ARGV[i])
  local name = ''
  if v then
    local n, _, spelled = string.match(v, '^([^\t]*)\t([^\t]*)\t([^\t]*)')
    if n then
      name = spelled
      if not bynode[n] then bynode[n] = {}; table.insert(order, n) end
      table.insert(bynode[n], spelled)
    end
  end
  table.insert(found, name)
end
for _, n in ipairs(order) do
  redis.call('PUBLISH', P .. 'node:' .. n,
             ARGV[2] .. '\t' .. table.concat(bynode[n], ',') .. '\n' .. ARGV[3])
end
return found
"""

#: A group (``/group #NAME ...``): defined on its owner's node, used from any node.
#:
#: ARGV: prefix, mode (``get`` or ``define``), folded group name, then for
#: ``define``: the record, the owner's folded name (and the name it had before a
#: rename, which may replace the group it owned then).  A record is ``owner's
#: folded name``, ``owner's lease``, ``#Name``, then the members, one per line.  A
#: record whose owner no longer holds that lease (left, or its node died) does not
#: count and is deleted when met, so a group lasts as long as its owner's
#: connection, as on one server; an owner who leaves deletes its groups (`PRESENCE`),
#: and so does the reaping of a node that died (`HEARTBEAT`).
#: Returns the group's (valid) record, or false; ``define`` sets it unless someone
#: else owns it (then returns theirs).
GROUP = r"""
local P, mode, g = ARGV[1], ARGV[2], ARGV[3]
local groups = P .. 'groups'
local old = redis.call('HGET', groups, g)
if old then
  local okey, olease = string.match(old, '^([^\n]*)\n([^\n]*)\n')
  if not okey or redis.call('GET', P .. 'name:' .. okey) ~= olease then
    redis.call('HDEL', groups, g)
    old = false
  end
end
if mode == 'get' then
  return old
end
if old then
  local okey = string.match(old, '^([^\n]*)\n')
  if okey ~= ARGV[5] and okey ~= ARGV[6] then
    return old
  end
end
redis.call('HSET', groups, g, ARGV[4])
return false
"""
