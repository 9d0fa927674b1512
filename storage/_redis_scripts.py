"""The Lua scripts of RedisStore: each one write, atomic on one Redis (or one Cluster slot).

Record scripts share a layout: KEYS[1] the collection's spec key, KEYS[2] its log stream;
ARGV[1] the key base, ARGV[2] the ids JSON for the log entry, then their own arguments
(PUT_MANY, which logs only the ids that landed, makes its ids JSON itself).
"""

from __future__ import annotations

MISSING = -1  # what a script returns when the collection is not in the registry
OWNED_BY_ANOTHER = -2  # {-2, id}: the owner condition failed on that record
CHANGED_MEANWHILE = -3  # {-3, id}: that record is not as the conditional write expected

# Every other record script: KEYS[1] spec, KEYS[2] log; ARGV[1] key base, ARGV[2] ids JSON for the
# log entry, then its own arguments. It returns -1 for a missing collection, else
# {count, log position} ("" when nothing changed, and then nothing is logged).

# A group of writes (DocumentStore.put_many): ARGV[1] the key base, then per write: its owner
# ("" for none), its record count n, and n records of 7 fields (id v o t p m n). Each write's
# owner condition is checked before it is written, after the earlier writes of the group, and
# refuses that write alone. Returns -1 for a missing collection, else {outcomes, position}:
# per write 0 (landed, or empty) or the id of a record owned by someone else; the position of
# the one log entry, which lists every id that landed ("" when none did: nothing is logged).
PUT_MANY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local base = ARGV[1]
local ids = base .. 'ids'
local delta = 0
local outcomes, logged, seen = {}, {}, {}
local i = 2
while i <= #ARGV do
  local owner, last = ARGV[i], i + 1 + 7 * tonumber(ARGV[i+1])
  local refused = 0
  if owner ~= '' then
    for j = i + 2, last, 7 do
      local o = redis.call('HGET', base .. 'r:' .. ARGV[j], 'o')
      if o and o ~= owner then refused = ARGV[j] break end
    end
  end
  outcomes[#outcomes + 1] = refused
  if refused == 0 then
    for j = i + 2, last, 7 do
      local key = base .. 'r:' .. ARGV[j]
      local old = redis.call('HGET', key, 'n')
      if old then delta = delta - tonumber(old) end
      redis.call('HSET', key, 'v', ARGV[j+1], 'o', ARGV[j+2], 't', ARGV[j+3],
                 'p', ARGV[j+4], 'm', ARGV[j+5], 'n', ARGV[j+6])
      redis.call('ZADD', ids, 0, ARGV[j])
      delta = delta + tonumber(ARGV[j+6])
      if not seen[ARGV[j]] then
        seen[ARGV[j]] = true
        logged[#logged + 1] = ARGV[j]
      end
    end
  end
  i = last + 1
end
if delta ~= 0 then redis.call('INCRBY', base .. 'bytes', delta) end
if #logged == 0 then return {outcomes, ''} end
return {outcomes, redis.call('XADD', KEYS[2], '*', 'op', 'put', 'ids', cjson.encode(logged))}
"""

# then the owner condition (ARGV[3]: "" for none; {-2, id} names a record owned by someone
# else, and nothing is deleted), then ids
DELETE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if ARGV[3] ~= '' then
  for i = 4, #ARGV do
    local o = redis.call('HGET', ARGV[1] .. 'r:' .. ARGV[i], 'o')
    if o and o ~= ARGV[3] then return {-2, ARGV[i]} end
  end
end
local base = ARGV[1]
local ids = base .. 'ids'
local freed, n = 0, 0
for i = 4, #ARGV do
  local key = base .. 'r:' .. ARGV[i]
  local old = redis.call('HGET', key, 'n')
  if old then
    redis.call('DEL', key)
    redis.call('ZREM', ids, ARGV[i])
    freed = freed + tonumber(old)
    n = n + 1
  end
end
if freed ~= 0 then redis.call('DECRBY', base .. 'bytes', freed) end
if n == 0 then return {0, ''} end
return {n, redis.call('XADD', KEYS[2], '*', 'op', 'delete', 'ids', ARGV[2])}
"""

# then "1" when conditional, then per id: id, tenants JSON, expected owner, expected tenants
# JSON ({-3, id}: that record is not as expected any more)
SET_TENANTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local base = ARGV[1]
if ARGV[3] == '1' then
  for i = 4, #ARGV, 4 do
    local now = redis.call('HMGET', base .. 'r:' .. ARGV[i], 'o', 't')
    if now[1] ~= ARGV[i+2] or now[2] ~= ARGV[i+3] then return {-3, ARGV[i]} end
  end
end
local changed = 0
local delta = 0
for i = 4, #ARGV, 4 do
  local key = base .. 'r:' .. ARGV[i]
  local old = redis.call('HGET', key, 't')
  if old then
    local d = #ARGV[i+1] - #old
    local n = tonumber(redis.call('HGET', key, 'n')) + d
    redis.call('HSET', key, 't', ARGV[i+1], 'n', string.format('%d', n))
    delta = delta + d
    changed = changed + 1
  end
end
if delta ~= 0 then redis.call('INCRBY', base .. 'bytes', delta) end
if changed == 0 then return {0, ''} end
return {changed, redis.call('XADD', KEYS[2], '*', 'op', 'access', 'ids', ARGV[2])}
"""

# A lease is freed only by its holder (a late release after expiry must not free another's).
RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# then the blob key, its data and "1" to announce it in the log
PUT_BLOB = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('SET', ARGV[1] .. 'b:' .. ARGV[3], ARGV[4])
redis.call('SADD', ARGV[1] .. 'blobs', ARGV[3])
if ARGV[5] ~= '1' then return {0, ''} end
return {0, redis.call('XADD', KEYS[2], '*', 'op', 'blob', 'ids', ARGV[2])}
"""

# then the note
ANNOUNCE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return {0, redis.call('XADD', KEYS[2], '*', 'op', 'note', 'ids', ARGV[2], 'note', ARGV[3])}
"""

# KEYS[1] spec, KEYS[2] log; ARGV[1] key base. Pages through ids to bound memory.
DROP = """
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
local base = ARGV[1]
local ids = base .. 'ids'
while true do
  local page = redis.call('ZRANGE', ids, 0, 999)
  if #page == 0 then break end
  local keys = {}
  for j, id in ipairs(page) do keys[j] = base .. 'r:' .. id end
  redis.call('UNLINK', unpack(keys))
  redis.call('ZREMRANGEBYRANK', ids, 0, #page - 1)
end
local blobs = base .. 'blobs'
local names = redis.call('SMEMBERS', blobs)
for j = 1, #names, 1000 do
  local keys = {}
  for k = j, math.min(j + 999, #names) do keys[#keys + 1] = base .. 'b:' .. names[k] end
  redis.call('UNLINK', unpack(keys))
end
redis.call('UNLINK', ids, blobs, base .. 'bytes', base .. 'trimmed', KEYS[2])
return 1
"""

# KEYS[1] a log stream, KEYS[2] its "trimmed" mark; ARGV[1] the cutoff id. The mark keeps
# the newest id trimmed away, so a replica whose cursor is older knows it missed changes.
TRIM = """
local last = redis.call('XREVRANGE', KEYS[1], '(' .. ARGV[1], '-', 'COUNT', 1)
if #last == 0 then return 0 end
local n = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
redis.call('SET', KEYS[2], last[1][1])
return n
"""

# KEYS[1] registry, KEYS[2] registry log; ARGV[1] name, ARGV[2] spec JSON
REGISTER = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return -1 end
return redis.call('XADD', KEYS[2], '*', 'op', 'create', 'collection', ARGV[1])
"""

# KEYS[1] registry, KEYS[2] registry log; ARGV[1] name
UNREGISTER = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', 'op', 'drop', 'collection', ARGV[1])
return 1
"""
