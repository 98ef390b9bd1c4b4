"""Lua scripts that keep shared state exact: each runs atomically inside Redis.

Budget keys (``P`` is the ledger's key prefix, hash-tagged so one Redis Cluster slot holds them all):

* ``P c|<budget>|<scope>|<period>`` — a counter hash: ``uusd``/``utok`` used (nano-dollars, tokens),
  ``rusd``/``rtok`` reserved by calls in flight, ``a:<threshold>`` alerts already sent, and ``born``
  (ms) while it is not seeded: a counter that ``reserve`` or ``settle`` creates counts live from
  then on, and ``SEED`` adds the spend recorded before ``born`` once (then deletes ``born``); a
  counter ``SEED`` creates is seeded from the start.  Expires when its period (plus a grace day)
  is over; ``total`` counters never expire.
* ``P t|<budget>|<period>`` — the set of scope labels seen in a period (for untargeted budgets).
* ``P r|<id>`` — one open reservation: ``usd``/``tok``, their negations ``nusd``/``ntok``, and a
  ``k:<counter key>`` field per counter it holds.
* ``P rexp`` — open reservation ids scored by their deadline (wall clock, ms); a reservation whose
  holder died is given back by the next ``reserve``.

Amounts to add travel as decimal strings (``HINCRBY`` takes them as they are) so no number ever
goes through Lua's ``%.14g`` formatting; limits are compared as doubles (exact below 2^53).
"""

from __future__ import annotations

__all__ = ["ADMIT_LUA", "RESERVE_LUA", "SEED_LUA", "SETTLE_LUA"]

#: KEYS: rexp, reservation, counters[n], target sets[n].  ARGV[1]: JSON spec.
#: Returns {0} when reserved, else {i, "usd"|"tokens", used, reserved} for the first budget refusing.
RESERVE_LUA = """
local spec = cjson.decode(ARGV[1])
local n = #spec.c
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', spec.now, 'LIMIT', 0, 64)
for _, rid in ipairs(stale) do
  local rkey = spec.rp .. rid
  local nusd = redis.call('HGET', rkey, 'nusd')
  local ntok = redis.call('HGET', rkey, 'ntok')
  if nusd then
    local fields = redis.call('HKEYS', rkey)
    for _, f in ipairs(fields) do
      if string.sub(f, 1, 2) == 'k:' then
        local ck = string.sub(f, 3)
        if redis.call('EXISTS', ck) == 1 then
          redis.call('HINCRBY', ck, 'rusd', nusd)
          redis.call('HINCRBY', ck, 'rtok', ntok)
        end
      end
    end
  end
  redis.call('DEL', rkey)
  redis.call('ZREM', KEYS[1], rid)
end
for i = 1, n do
  local c = spec.c[i]
  local v = redis.call('HMGET', KEYS[2 + i], 'uusd', 'utok', 'rusd', 'rtok')
  local uusd, utok = tonumber(v[1]) or 0, tonumber(v[2]) or 0
  local rusd, rtok = tonumber(v[3]) or 0, tonumber(v[4]) or 0
  if c.cu >= 0 and uusd + rusd + spec.usd > c.cu then return {i, 'usd', uusd, rusd} end
  if c.ct >= 0 and utok + rtok + spec.tok > c.ct then return {i, 'tokens', utok, rtok} end
end
local rfields = {'usd', spec.usds, 'tok', spec.toks, 'nusd', spec.nusds, 'ntok', spec.ntoks}
for i = 1, n do
  local c = spec.c[i]
  local k = KEYS[2 + i]
  local tk = KEYS[2 + n + i]
  if redis.call('EXISTS', k) == 0 then redis.call('HSET', k, 'born', spec.born) end
  redis.call('HINCRBY', k, 'rusd', spec.usds)
  redis.call('HINCRBY', k, 'rtok', spec.toks)
  redis.call('SADD', tk, c.t)
  if c.ttl > 0 then
    redis.call('PEXPIRE', k, c.ttl)
    redis.call('PEXPIRE', tk, c.ttl)
  end
  table.insert(rfields, 'k:' .. k)
  table.insert(rfields, '1')
end
redis.call('HSET', KEYS[2], unpack(rfields))
redis.call('PEXPIRE', KEYS[2], spec.rttl)
redis.call('ZADD', KEYS[1], spec.deadline, spec.id)
return {0}
"""

#: KEYS: rexp, reservation, counters[n].  ARGV[1]: JSON spec.
#: Gives back the reservation (if still open), adds the actual amount (``settle == 1``) and returns
#: the thresholds crossed for the first time in the period: {{i, label, fraction}, ...}.
SETTLE_LUA = """
local spec = cjson.decode(ARGV[1])
local open = redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], spec.id)
local events = {}
for i = 1, #spec.c do
  local c = spec.c[i]
  local k = KEYS[2 + i]
  if open == 1 and redis.call('EXISTS', k) == 1 then
    redis.call('HINCRBY', k, 'rusd', spec.nusds)
    redis.call('HINCRBY', k, 'rtok', spec.ntoks)
  end
  if spec.settle == 1 then
    if redis.call('EXISTS', k) == 0 then redis.call('HSET', k, 'born', spec.born) end
    local uusd = redis.call('HINCRBY', k, 'uusd', spec.usds)
    local utok = redis.call('HINCRBY', k, 'utok', spec.toks)
    if c.ttl > 0 and redis.call('PTTL', k) < 0 then redis.call('PEXPIRE', k, c.ttl) end
    local frac = 0
    if c.lu > 0 then frac = math.max(frac, uusd / c.lu) end
    if c.lt > 0 then frac = math.max(frac, utok / c.lt) end
    for _, th in ipairs(c.th) do
      if frac >= th[2] and redis.call('HSETNX', k, 'a:' .. th[1], '1') == 1 then
        table.insert(events, {i, th[1], string.format('%.17g', frac)})
      end
    end
  end
end
return events
"""

#: Seed a budget counter with recorded spend, once.  ``born`` says which counter the spend was
#: computed for: 0, none (the whole period's spend: the counter is created at it); else the
#: unseeded counter a request created at that time (the spend of the requests that ended before:
#: it is added).  The counter is then seeded (no ``born``); a seeded counter, or one made before
#: counters had ``born``, is never added to.  KEYS: counter hash, targets set.
#: ARGV[1]: JSON {usd, tok, born, target, ttl} (amounts as decimal strings).
#: Returns {1, 0} when seeded now, {0, 0} when it was seeded already, {2, born} when the counter is
#: not the one expected (seed again with the spend for that ``born``; 0: there is none).
SEED_LUA = """
local spec = cjson.decode(ARGV[1])
local exists = redis.call('EXISTS', KEYS[1]) == 1
local born = redis.call('HGET', KEYS[1], 'born')
if exists and not born then
  return {0, 0}
end
if not exists then born = '0' end
if born ~= spec.born then
  return {2, born}
end
if exists then
  redis.call('HINCRBY', KEYS[1], 'uusd', spec.usd)
  redis.call('HINCRBY', KEYS[1], 'utok', spec.tok)
  redis.call('HDEL', KEYS[1], 'born')
else
  redis.call('HSET', KEYS[1], 'uusd', spec.usd, 'utok', spec.tok, 'rusd', 0, 'rtok', 0)
  if spec.ttl > 0 then redis.call('PEXPIRE', KEYS[1], spec.ttl) end
end
redis.call('SADD', KEYS[2], spec.target)
if spec.ttl > 0 then redis.call('PEXPIRE', KEYS[2], spec.ttl) end
return {1, 0}
"""

#: Shared admission for one scope (a model or a key; storage/coordinator.py), after ending the
#: admissions given back since the last call (their releases ride along: one round trip in all).
#: Time is the Redis server's (TIME), so replicas' clocks do not matter.
#: KEYS: the scope's leases zset (lease id -> expiry ms), window zset (admission id -> ms), window
#: tokens hash (admission id -> tokens) and window token sum; then those four of each release.
#: ARGV: window ms, rpm, tpm, max concurrency (-1: none, or 0 when only releasing), admission id,
#: estimated tokens, lease ttl ms, number of releases, then per release: its id and actual tokens
#: (-1: keep the estimate).
#: Returns {1} when admitted, else {0, reason, retry after ms (-1: never)}.
ADMIT_LUA = """
local n = tonumber(ARGV[8])
for r = 1, n do
  local k = 4 + (r - 1) * 4
  local id = ARGV[8 + r * 2 - 1]
  local actual = tonumber(ARGV[8 + r * 2])
  redis.call('ZREM', KEYS[k + 1], id)
  if actual >= 0 then
    local est = redis.call('HGET', KEYS[k + 3], id)
    if est then
      redis.call('HSET', KEYS[k + 3], id, actual)
      redis.call('INCRBY', KEYS[k + 4], actual - tonumber(est))
    end
  end
end
if ARGV[5] == '' then
  return {1}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local win = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local maxc = tonumber(ARGV[4])
local id = ARGV[5]
local est = tonumber(ARGV[6])
local ttl = tonumber(ARGV[7])
if maxc >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= maxc then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {0, 'concurrency', tonumber(first[2]) - now}
  end
end
if rpm >= 0 or tpm >= 0 then
  local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - win, 'LIMIT', 0, 5000)
  if #old > 0 then
    if tpm >= 0 then
      local gone = 0
      for i = 1, #old, 500 do
        local part = {unpack(old, i, math.min(i + 499, #old))}
        for _, v in ipairs(redis.call('HMGET', KEYS[3], unpack(part))) do
          if v then gone = gone + tonumber(v) end
        end
        redis.call('HDEL', KEYS[3], unpack(part))
      end
      redis.call('DECRBY', KEYS[4], gone)
    end
    redis.call('ZREM', KEYS[2], unpack(old))
  end
  local count = redis.call('ZCARD', KEYS[2])
  if rpm >= 0 and count >= rpm then
    local e = redis.call('ZRANGE', KEYS[2], count - rpm, count - rpm, 'WITHSCORES')
    return {0, 'rpm', tonumber(e[2]) + win - now}
  end
  if tpm >= 0 then
    if est > tpm then
      return {0, 'tpm_never', -1}
    end
    local used = tonumber(redis.call('GET', KEYS[4]) or '0')
    if used + est > tpm then
      local e = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
      local wait = win
      if e[2] then wait = tonumber(e[2]) + win - now end
      return {0, 'tpm', wait}
    end
    redis.call('HSET', KEYS[3], id, est)
    redis.call('INCRBY', KEYS[4], est)
    redis.call('PEXPIRE', KEYS[3], win * 2)
    redis.call('PEXPIRE', KEYS[4], win * 2)
  end
  redis.call('ZADD', KEYS[2], now, id)
  redis.call('PEXPIRE', KEYS[2], win * 2)
end
if maxc >= 0 then
  redis.call('ZADD', KEYS[1], now + ttl, id)
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
end
return {1}
"""
