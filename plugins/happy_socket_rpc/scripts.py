"""The Lua scripts of the Redis registry (see registry.py for the keys).

Every script touches a bounded number of keys: one registration, one socket's slice of
method keys, or one slice of a process's method keys (``SPOP n``). None walks a whole
process's registrations, so a process with many of them never blocks Redis for long.
"""

from __future__ import annotations

# True when zset ``z`` still holds a member of the process whose members start with ``mine``
_HAS_MINE = """
local function has_mine(z, mine)
  for _, m in ipairs(redis.call('ZRANGE', z, 0, -1)) do
    if string.sub(m, 1, #mine) == mine then return true end
  end
  return false
end
"""

# the number of registrations of user ``user`` on live processes other than ``own``
_OTHERS = """
local function others(procs, own, user, proc_prefix, count_prefix)
  local total = 0
  for _, pid in ipairs(redis.call('SMEMBERS', procs)) do
    if pid ~= own and redis.call('EXISTS', proc_prefix .. pid) == 1 then
      total = total + (tonumber(redis.call('HGET', count_prefix .. pid, user)) or 0)
    end
  end
  return total
end
"""

# KEYS: proc, regs, procs, zkey, count
# ARGV: member, score, pid, user, own count (after this registration), limit (0: none),
#       proc key prefix, count key prefix
# -> -1 refused (user limit, nothing stored), else 1/0: this process's liveness key exists
ADD = (
    _OTHERS
    + """
local fresh = redis.call('ZSCORE', KEYS[4], ARGV[1]) == false
local limit = tonumber(ARGV[6])
if fresh and limit > 0 then
  local total = others(KEYS[3], ARGV[3], ARGV[4], ARGV[7], ARGV[8]) + tonumber(ARGV[5])
  if total > limit then return -1 end
end
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[2], KEYS[4])
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('HSET', KEYS[5], ARGV[4], ARGV[5])
return redis.call('EXISTS', KEYS[1])
"""
)

# KEYS: regs, count  ARGV: pid, member, user, own count of user (after), zkey*
# (one socket's registrations of one user; callers pass at most one slice of zkeys)
REMOVE = (
    _HAS_MINE
    + """
local mine = ARGV[1] .. '|'
for i = 5, #ARGV do
  redis.call('ZREM', ARGV[i], ARGV[2])
  if not has_mine(ARGV[i], mine) then redis.call('SREM', KEYS[1], ARGV[i]) end
end
if tonumber(ARGV[4]) > 0 then
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
else
  redis.call('HDEL', KEYS[2], ARGV[3])
end
return 1
"""
)

# KEYS: zkey  ARGV: proc key prefix  -> flat list member, score (live processes only)
LOOKUP = """
local all = redis.call('ZREVRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out, alive = {}, {}
for i = 1, #all, 2 do
  local m = all[i]
  local bar = string.find(m, '|', 1, true)
  if bar then
    local pid = string.sub(m, 1, bar - 1)
    local ok = alive[pid]
    if ok == nil then
      ok = redis.call('EXISTS', ARGV[1] .. pid) == 1
      alive[pid] = ok
    end
    if ok then
      out[#out + 1] = m
      out[#out + 1] = all[i + 1]
    end
  end
end
return out
"""

# One slice of a re-publish: mark live, add registrations, set the user counts.
# KEYS: proc, regs, procs, count
# ARGV: pid, ttl_ms, n, then (zkey, member, score) * n, then (user, count) *
PUBLISH = """
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
local last = 3 + 3 * tonumber(ARGV[3])
for i = 4, last, 3 do
  redis.call('ZADD', ARGV[i], ARGV[i + 2], ARGV[i + 1])
  redis.call('SADD', KEYS[2], ARGV[i])
end
for i = last + 1, #ARGV, 2 do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
end
return 1
"""

# One slice of a re-publish: drop this process's members that it no longer holds (and keep
# the liveness key alive while a long re-publish runs; a missing key is not re-created).
# KEYS: regs, proc  ARGV: pid, ttl_ms, then (zkey, k, kept member * k) *  -> members removed
PRUNE = """
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local mine = ARGV[1] .. '|'
local removed, i = 0, 3
while i <= #ARGV do
  local z, k = ARGV[i], tonumber(ARGV[i + 1])
  local keep = {}
  for j = i + 2, i + 1 + k do keep[ARGV[j]] = true end
  local left = false
  for _, m in ipairs(redis.call('ZRANGE', z, 0, -1)) do
    if string.sub(m, 1, #mine) == mine then
      if keep[m] then left = true else
        redis.call('ZREM', z, m)
        removed = removed + 1
      end
    end
  end
  if not left then redis.call('SREM', KEYS[1], z) end
  i = i + 2 + k
end
return removed
"""

# One slice of the cleanup of a process that is gone (dead, or withdrawing).
# KEYS: procs  ARGV: proc key, regs key, count key, pid, slice size
# -> {method keys handled, state}: state 0 more to do, 1 done, 2 the process is live (untouched)
PURGE_SLICE = """
if redis.call('EXISTS', ARGV[1]) == 1 then return {0, 2} end
local mine = ARGV[4] .. '|'
local zs = redis.call('SPOP', ARGV[2], ARGV[5])
for _, z in ipairs(zs) do
  for _, m in ipairs(redis.call('ZRANGE', z, 0, -1)) do
    if string.sub(m, 1, #mine) == mine then redis.call('ZREM', z, m) end
  end
end
if redis.call('EXISTS', ARGV[2]) == 1 then return {#zs, 0} end
redis.call('UNLINK', ARGV[3])
redis.call('SREM', KEYS[1], ARGV[4])
return {#zs, 1}
"""
