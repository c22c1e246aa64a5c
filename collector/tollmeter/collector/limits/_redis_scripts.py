"""The server-side Lua scripts of the Redis limit engine.

Each script runs atomically in Redis, so a check either charges every matching counter
or none, whichever replica runs it. Scripts get every key they touch in ``KEYS`` and
the window parameters of each counter in ``ARGV`` (the rules live in the replicas'
config, not in Redis). Numbers travel as ``%.17g`` strings both ways: Redis turns a
Lua number into an integer reply.

A counter is a hash: ``l`` level, ``s`` stamp (the meaning of :class:`Counter`), ``fp``
the fingerprint of the rule that last wrote it, ``k`` its kind (``r`` token bucket,
``c`` calendar, ``f`` calls in flight), ``cap`` its capacity. A counter written under
another fingerprint is carried over as the in-process engine does on reload: a bucket
keeps its level capped at the new capacity, a calendar counter keeps the current period,
another kind starts afresh. A reservation is a hash: ``d`` its row
(``Reservation.to_row``), ``k`` the keys of its counters (in the order of its charges),
``x`` ``0`` while open, ``1`` once expired and kept aside for a late span.
"""

from __future__ import annotations

__all__ = ["CHECK", "DROP", "GROUP", "SETTLE"]

GROUP = 9
"""ARGV entries per counter: kind, capacity, rate, period start, fingerprint, amount,
second amount or flag, key lifetime (ms), member of the tenant's counter set or ''."""

_COMMON = """
local function num(x) return string.format('%.17g', x) end
local function fresh(kind, cap, start, now)
  if kind == 'r' then return cap, now end
  return 0, start
end
local function advance(kind, cap, rate, start, level, stamp, now)
  if kind == 'r' then
    if now > stamp then
      level = math.min(cap, level + (now - stamp) * rate)
      stamp = now
    end
  elseif start > stamp then
    level, stamp = 0, start
  end
  return level, stamp
end
local function load(key, kind, cap, rate, start, fp, now)
  local h = redis.call('HMGET', key, 'l', 's', 'fp', 'k')
  if not h[1] then return fresh(kind, cap, start, now) end
  local level, stamp = tonumber(h[1]), tonumber(h[2])
  if h[3] ~= fp and h[4] ~= kind then return fresh(kind, cap, start, now) end
  level, stamp = advance(kind, cap, rate, start, level, stamp, now)
  if h[3] ~= fp and kind == 'r' then level = math.min(level, cap) end
  return level, stamp
end
local function charge(kind, cap, level, amount)
  if kind == 'r' then return math.min(cap, level - amount) end
  return math.max(0, level + amount)
end
local function save(key, kind, cap, rate, fp, level, stamp, life, set_key, member)
  redis.call('HSET', key, 'l', num(level), 's', num(stamp), 'fp', fp, 'k', kind, 'cap', num(cap))
  if kind == 'r' then life = life + math.max(0, cap - level) / rate * 1000 end
  redis.call('PEXPIRE', key, math.ceil(life))
  if member ~= '' then
    redis.call('SADD', set_key, member)
    redis.call('PEXPIRE', set_key, 3456000000)
  end
end
local function group(i, base)
  local o = base + (i - 1) * 9
  return ARGV[o + 1], tonumber(ARGV[o + 2]), tonumber(ARGV[o + 3]), tonumber(ARGV[o + 4]),
    ARGV[o + 5], ARGV[o + 6], ARGV[o + 7], tonumber(ARGV[o + 8]), ARGV[o + 9]
end
"""

CHECK = (
    _COMMON
    + """
-- KEYS: decision, reservation, tenant's open reservations, expiry index, reservation
--       id index, tenant's counter set, counters...
-- ARGV: now, dry run, use decision, reservation row, expires at, reservation life (ms),
--       decision life (ms), tenant, pending decision, n, groups...
local now = tonumber(ARGV[1])
local dry = ARGV[2] == '1'
if ARGV[3] == '1' and not dry then
  local d = redis.call('GET', KEYS[1])
  if d and tonumber(cjson.decode(d)['until']) > now then return {'dup', d} end
end
local n = tonumber(ARGV[10])
local out = {'ok'}
local levels, stamps = {}, {}
for i = 1, n do
  local kind, cap, rate, start, fp, amount, hard = group(i, 10)
  local level, stamp = load(KEYS[6 + i], kind, cap, rate, start, fp, now)
  levels[i], stamps[i] = level, stamp
  out[2 * i], out[2 * i + 1] = num(level), num(stamp)
  local available = level
  if kind ~= 'r' then available = cap - level end
  if hard == '1' and tonumber(amount) > available + 1e-9 then out[1] = 'deny' end
end
if out[1] == 'deny' or dry then return out end
for i = 1, n do
  local kind, cap, rate, start, fp, amount, _, life, member = group(i, 10)
  local level = charge(kind, cap, levels[i], tonumber(amount))
  save(KEYS[6 + i], kind, cap, rate, fp, level, stamps[i], life, KEYS[6], member)
end
local rlife = tonumber(ARGV[6])
redis.call('HSET', KEYS[2], 'd', ARGV[4], 'x', '0', 'k', cjson.encode({unpack(KEYS, 7)}))
redis.call('PEXPIRE', KEYS[2], rlife)
redis.call('ZADD', KEYS[4], ARGV[5], KEYS[2])
redis.call('ZADD', KEYS[3], ARGV[5], KEYS[2])
redis.call('PEXPIRE', KEYS[3], rlife)
redis.call('SET', KEYS[5], ARGV[8], 'PX', rlife)
if ARGV[3] == '1' then redis.call('SET', KEYS[1], ARGV[9], 'PX', ARGV[7]) end
return out
"""
)

SETTLE = (
    _COMMON
    + """
-- KEYS: reservation, tenant's open reservations, expiry index, reservation id index,
--       tenant's counter set, counters...
-- ARGV: now, n, groups (amount if the reservation is settled here, amount otherwise;
--       '' leaves the counter alone)...
local now = tonumber(ARGV[1])
-- An expired reservation gave its in-flight slots back when it expired.
local was_open = redis.call('HGET', KEYS[1], 'x') == '0'
local settled = redis.call('DEL', KEYS[1]) == 1
if settled then
  redis.call('ZREM', KEYS[2], KEYS[1])
  redis.call('ZREM', KEYS[3], KEYS[1])
  redis.call('DEL', KEYS[4])
end
local out = {settled and '1' or '0'}
for i = 1, tonumber(ARGV[2]) do
  local kind, cap, rate, start, fp, if_settled, if_not, life, member = group(i, 2)
  local amount = if_not
  if settled then amount = if_settled end
  if kind == 'f' and not (settled and was_open) then amount = '' end
  out[2 * i], out[2 * i + 1] = '', ''
  if amount ~= '' and tonumber(amount) ~= 0 then
    local level, stamp = load(KEYS[5 + i], kind, cap, rate, start, fp, now)
    level = charge(kind, cap, level, tonumber(amount))
    save(KEYS[5 + i], kind, cap, rate, fp, level, stamp, life, KEYS[5], member)
    out[2 * i], out[2 * i + 1] = num(level), num(stamp)
  end
end
return out
"""
)

DROP = """
-- Release (the call never happened) or expire one reservation, once.
-- KEYS: reservation, expiry index, tenant's open reservations, reservation id index,
--       counters (in the order of the reservation's charges)...
-- ARGV: mode (release, charge or refund), life of an expired reservation kept aside
--       (ms), then per counter: calendar period of the charge ('' for a bucket), amount.
local mode = ARGV[1]
if mode == 'release' then
  if redis.call('HGET', KEYS[1], 'x') ~= '0' then return 0 end
  redis.call('ZREM', KEYS[2], KEYS[1])
elseif redis.call('ZREM', KEYS[2], KEYS[1]) == 0 then
  return 0
end
redis.call('ZREM', KEYS[3], KEYS[1])
if mode == 'charge' then
  redis.call('HSET', KEYS[1], 'x', '1')
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[4], ARGV[2])
else
  redis.call('DEL', KEYS[1], KEYS[4])
end
-- In-flight slots are given back in every mode; charged usage stays on the others.
for i = 5, #KEYS do
  local period, amount = ARGV[2 * (i - 4) + 1], tonumber(ARGV[2 * (i - 4) + 2])
  local h = redis.call('HMGET', KEYS[i], 'l', 's', 'cap', 'k')
  if h[1] and (mode ~= 'charge' or h[4] == 'f') then
    local level = tonumber(h[1])
    if h[4] == 'f' then
      level = math.max(0, level - amount)
    elseif period == '' then
      level = math.min(tonumber(h[3]), level + amount)
    elseif tonumber(period) == tonumber(h[2]) then
      level = math.max(0, level - amount)
    end
    redis.call('HSET', KEYS[i], 'l', string.format('%.17g', level))
  end
end
return 1
"""
