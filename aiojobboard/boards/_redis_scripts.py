"""The Lua scripts behind the Redis adapter, one per state change.

Every key of a board lives under one prefix, ``ajb:{NAMESPACE}:``, whose hash
tag puts them all in one Redis Cluster slot, so a script may touch any of them.
The first argument of every script is that prefix; the first key names the
board's index of all jobs, so that a cluster client routes the call.

Keys under the prefix:

``job:UUID``
    a hash: ``p`` the posting's JSON, ``s`` its sequence, ``sc`` its score,
    ``a`` its attempt count, ``t`` the token of its latest claim, and while it
    is claimed ``o`` the owner, ``d`` the lease deadline (ms, server clock)
    and ``l`` the lease length (ms).
``all`` and ``ready``
    sorted sets of every job and of the unclaimed ones, scored
    ``(2 - priority) * 2**50 + sequence`` so that ascending order is board
    order; a double holds such a score exactly.
``leases``
    a sorted set of claimed jobs by lease deadline, swept by the scripts that
    need it and by each connection's reconcile task.
``garbage``
    jobs set aside because their data is not a posting, by score.
``seq`` and ``token``
    counters for sequence numbers and fencing tokens.
``drawn``
    the replication id of the server that last drew from the counters. A
    server that finds another id there took over from a primary that may have
    drawn numbers it never replicated: it first moves both counters on by
    :data:`FAILOVER_JUMP` (see ``fence`` below).
``epoch``
    a random name for this life of the board's data, to tell after a
    reconnect whether the server lost it meanwhile.
``req:ID``
    the answer a script gave to request ID, kept for a minute, so that a
    client that lost the reply and sent the call again gets the same answer
    instead of a second change.
``cancelled:UUID``
    the reason a job was cancelled, kept for a minute, so that a holder that
    missed the event still learns why its claim is over.
``workers`` and ``workers:due``
    presence: a hash of records, one per connection and owner name (field
    ``CONNECTION/NAME``, value the record's JSON), and a sorted set of the
    same fields by deadline (ms, server clock). Readers drop records past
    their deadline; each connection refreshes its own well before.
``events``
    the pub/sub channel. A message is a JSON array of the events of one
    script call, up to 256, each ``[KIND, UUID, NUMBER, REST]``: NUMBER is the
    sequence for POSTED and the token otherwise, REST the posting for POSTED
    and the owner otherwise ('' for none). The TRASHED event of a cancel has
    a fifth element, the reason. One message per call, not per job, keeps the
    subscribers' work small when scripts change jobs in batches.

Scripts that answer a list answer it as one JSON text, which the client
decodes in one step instead of parsing hundreds of reply elements. Sequences
and tokens travel in it as strings: Lua's JSON encoder rounds numbers to 14
digits.
"""

from __future__ import annotations

__all__ = [
    "CANCEL",
    "CATCH_UP",
    "CLAIM",
    "CLAIM_NEXT",
    "FINISH",
    "HAS_UNCLAIMED",
    "PAGE",
    "POST",
    "PRESENCE",
    "QUARANTINE",
    "RENEW",
    "STATUS",
    "SWEEP",
    "WORKERS",
]

#: How long a request's answer is kept for a retried call, in milliseconds.
ANSWER_TTL_MS = 60_000
#: How far the counters move on when a new server starts drawing from them:
#: more numbers than a primary can hand out and lose in one failover, and few
#: enough that sequences stay below a priority band's 2**50 for 2**18 takeovers.
FAILOVER_JUMP = 2**32

_PRELUDE = """
local P = ARGV[1]
local ALL, READY, LEASES = P .. 'all', P .. 'ready', P .. 'leases'
local CHANNEL = P .. 'events'
local ANSWER_TTL = %(ttl)d

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Events are gathered and published together, a few hundred to a message,
-- so that a script that changes many jobs costs subscribers one message.
local EVENTS = {}

local function flush()
  if #EVENTS > 0 then
    redis.call('PUBLISH', CHANNEL, cjson.encode(EVENTS))
    EVENTS = {}
  end
end

local function publish(kind, uuid, number, rest)
  EVENTS[#EVENTS + 1] = {kind, uuid, number, rest}
  if #EVENTS >= 256 then
    flush()
  end
end

-- HMGET that answers nil instead of failing on a key of another type, so that
-- garbage where a job should be never aborts a script.
local function fields(key, ...)
  local got = redis.pcall('HMGET', key, ...)
  if type(got) == 'table' and got.err then
    return nil
  end
  return got
end

-- A job's score, from the index when its hash lacks it (garbage written there).
local function score_of(uuid, stored)
  return stored or redis.call('ZSCORE', ALL, uuid) or '0'
end

-- Give a job whose lease ran out back to the board; its token and attempt
-- count stay.
local function expire(uuid, key)
  local f = fields(key, 'o', 't', 'sc')
  redis.call('ZREM', LEASES, uuid)
  if not f or not f[1] then
    return
  end
  redis.call('HDEL', key, 'o', 'd', 'l')
  redis.call('ZADD', READY, score_of(uuid, f[3]), uuid)
  publish('EXPIRED', uuid, f[2], f[1])
end

-- Expire up to LIMIT due leases.
local function sweep(now, limit)
  local due = redis.call('ZRANGEBYSCORE', LEASES, '-inf', now, 'LIMIT', 0, limit)
  for _, uuid in ipairs(due) do
    expire(uuid, P .. 'job:' .. uuid)
  end
end

-- Replication is asynchronous: a replica promoted after its primary died may
-- lack the last numbers the primary drew, and would draw them again. Each
-- promotion gives the server a new replication id, so a script that is about
-- to draw and finds another id than the one that drew last moves the counters
-- past anything the lost writes can have drawn.
local function fence()
  local info = redis.call('INFO', 'replication')
  local id = string.match(info, 'master_replid:(%%w+)')
  local drawn = redis.call('GET', P .. 'drawn')
  if drawn == id then
    return
  end
  if drawn then
    redis.call('INCRBY', P .. 'seq', %(jump)d)
    redis.call('INCRBY', P .. 'token', %(jump)d)
  end
  redis.call('SET', P .. 'drawn', id)
end

-- A sequence or token as text: cjson and '..' keep only 14 digits of a number.
local function num(n)
  return string.format('%%.0f', n)
end

-- Claim a job already taken out of READY; ATTEMPTS is its count so far.
local function grant(uuid, key, attempts, owner, lease, now)
  local token = num(redis.call('INCR', P .. 'token'))
  local attempt = (tonumber(attempts) or 0) + 1
  local deadline = now + lease
  redis.call('HSET', key, 'o', owner, 't', token, 'd', deadline, 'l', lease,
    'a', attempt)
  redis.call('ZADD', LEASES, deadline, uuid)
  publish('CLAIMED', uuid, token, owner)
  return token, attempt
end

local function remember(req, answer)
  redis.call('SET', P .. 'req:' .. req, answer, 'PX', ANSWER_TTL)
end
"""


def _script(body: str) -> str:
    prelude = _PRELUDE % {"ttl": ANSWER_TTL_MS, "jump": FAILOVER_JUMP}
    return f"{prelude}\nlocal function main()\n{body}\nend\n{_EPILOGUE}"


_EPILOGUE = """
local answer = main()
flush()
return answer
"""


#: ARGV: prefix, request id, count, then (uuid, score base, posting) per job.
#: Answers the sequence of each job. A retried call gets its first answer, even
#: when its jobs were consumed meanwhile; one retried later than answers are
#: kept finds its first job stored, if it still is, and answers the stored
#: sequences.
POST = _script("""
local req, n = ARGV[2], tonumber(ARGV[3])
local answered = redis.call('GET', P .. 'req:' .. req)
if answered then
  return answered
end
local out = {}
if redis.call('EXISTS', P .. 'job:' .. ARGV[4]) == 1 then
  for i = 0, n - 1 do
    out[i + 1] = redis.call('HGET', P .. 'job:' .. ARGV[4 + 3 * i], 's')
  end
  return cjson.encode(out)
end
fence()
local seq = redis.call('INCRBY', P .. 'seq', n) - n
for i = 0, n - 1 do
  local uuid, posting = ARGV[4 + 3 * i], ARGV[6 + 3 * i]
  seq = seq + 1
  local score = num(tonumber(ARGV[5 + 3 * i]) + seq)
  redis.call('HSET', P .. 'job:' .. uuid, 'p', posting, 's', num(seq), 'sc', score)
  redis.call('ZADD', ALL, score, uuid)
  redis.call('ZADD', READY, score, uuid)
  publish('POSTED', uuid, num(seq), posting)
  out[i + 1] = num(seq)
end
out = cjson.encode(out)
remember(req, out)
return out
""")

#: ARGV: prefix, request id, uuid, owner, lease ms.
#: Answers {'ok', token, attempt}, {'gone'} or {'held', owner}.
CLAIM = _script("""
local req, uuid, owner, lease = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local answered = redis.call('GET', P .. 'req:' .. req)
if answered then
  return answered
end
local key = P .. 'job:' .. uuid
local now = now_ms()
local f = fields(key, 's', 'o', 'd', 'a')
local answer
if not f or not f[1] then
  answer = {'gone'}
elseif f[2] and (tonumber(f[3]) or 0) > now then
  answer = {'held', f[2]}
else
  if f[2] then
    expire(uuid, key)
  end
  fence()
  redis.call('ZREM', READY, uuid)
  local token, attempt = grant(uuid, key, f[4], owner, lease, now)
  answer = {'ok', token, attempt}
end
answer = cjson.encode(answer)
remember(req, answer)
return answer
""")

#: ARGV: prefix, request id, count, then (owner, lease ms) per request.
#: Answers (uuid, token, attempt, sequence, posting) per granted request, in
#: order, fewer when the board runs out of unclaimed jobs. Jobs whose data is
#: not a hash holding a posting are set aside in ``garbage`` on the way.
CLAIM_NEXT = _script("""
local req, n = ARGV[2], tonumber(ARGV[3])
local answered = redis.call('GET', P .. 'req:' .. req)
local out = {}
if answered then
  for uuid, token in string.gmatch(answered, '([^,]+):(%d+)') do
    local f = fields(P .. 'job:' .. uuid, 't', 'a', 's', 'p')
    if f and f[1] == token then
      table.insert(out, uuid)
      table.insert(out, token)
      table.insert(out, tonumber(f[2]))
      table.insert(out, f[3])
      table.insert(out, f[4])
    end
  end
  return cjson.encode(out)
end
local now = now_ms()
sweep(now, 100)
fence()
local granted = {}
local i = 0
while i < n do
  -- Everything popped is granted or set aside, so one pop serves many.
  local popped = redis.call('ZPOPMIN', READY, n - i)
  if not popped[1] then
    break
  end
  for j = 1, #popped, 2 do
    local uuid = popped[j]
    local key = P .. 'job:' .. uuid
    local f = fields(key, 'p', 's', 'a')
    if not f or not f[1] or not tonumber(f[2]) or string.sub(f[1], 1, 1) ~= '{' then
      redis.call('ZADD', P .. 'garbage', popped[j + 1], uuid)
    else
      local owner, lease = ARGV[4 + 2 * i], tonumber(ARGV[5 + 2 * i])
      local token, attempt = grant(uuid, key, f[3], owner, lease, now)
      table.insert(out, uuid)
      table.insert(out, token)
      table.insert(out, attempt)
      table.insert(out, f[2])
      table.insert(out, f[1])
      table.insert(granted, uuid .. ':' .. token)
      i = i + 1
    end
  end
end
remember(req, table.concat(granted, ','))
return cjson.encode(out)
""")

#: ARGV: prefix, count, then (uuid, owner, token, lease ms) per claim.
#: Answers 1 for each lease extended, 0 for each that is no longer current.
RENEW = _script("""
local n = tonumber(ARGV[2])
local now = now_ms()
sweep(now, 100)
local out = {}
for i = 0, n - 1 do
  local uuid, owner, token = ARGV[3 + 4 * i], ARGV[4 + 4 * i], ARGV[5 + 4 * i]
  local lease = tonumber(ARGV[6 + 4 * i])
  local key = P .. 'job:' .. uuid
  local f = fields(key, 'o', 't', 'd')
  if f and f[1] == owner and f[2] == token and (tonumber(f[3]) or 0) > now then
    redis.call('HSET', key, 'd', now + lease)
    redis.call('ZADD', LEASES, now + lease, uuid)
    out[i + 1] = 1
  else
    out[i + 1] = 0
  end
end
return cjson.encode(out)
""")

#: ARGV: prefix, request id, count, then (uuid, owner, token or '', how) per
#: request, how being CONSUME, ABANDON or TRASH. Answers per request 'ok',
#: 'gone', 'free', 'owner:NAME' or 'token:N'.
FINISH = _script("""
local req, n = ARGV[2], tonumber(ARGV[3])
local answered = redis.call('GET', P .. 'req:' .. req)
if answered then
  return answered
end
local now = now_ms()
local out = {}
local kinds = {CONSUME = 'CONSUMED', ABANDON = 'ABANDONED', TRASH = 'TRASHED'}
-- Removals are made together at the end, one command each for the batch.
local removed, keys, uuids = {}, {}, {}
for i = 0, n - 1 do
  local uuid, owner, token = ARGV[4 + 4 * i], ARGV[5 + 4 * i], ARGV[6 + 4 * i]
  local how = ARGV[7 + 4 * i]
  local key = P .. 'job:' .. uuid
  local f = fields(key, 's', 'o', 't', 'd', 'sc')
  local answer = 'ok'
  if removed[uuid] or not f or not f[1] then
    answer = 'gone'
  elseif not f[2] then
    answer = 'free'
  elseif (tonumber(f[4]) or 0) <= now then
    expire(uuid, key)
    answer = 'free'
  elseif f[2] ~= owner then
    answer = 'owner:' .. f[2]
  elseif token ~= '' and f[3] ~= token then
    answer = 'token:' .. f[3]
  elseif how == 'ABANDON' then
    redis.call('HDEL', key, 'o', 'd', 'l')
    redis.call('ZREM', LEASES, uuid)
    redis.call('ZADD', READY, score_of(uuid, f[5]), uuid)
    publish('ABANDONED', uuid, f[3], owner)
  else
    removed[uuid] = true
    table.insert(keys, key)
    table.insert(uuids, uuid)
    publish(kinds[how], uuid, f[3], owner)
  end
  out[i + 1] = answer
end
if #keys > 0 then
  redis.call('DEL', unpack(keys))
  redis.call('ZREM', LEASES, unpack(uuids))
  redis.call('ZREM', ALL, unpack(uuids))
end
out = cjson.encode(out)
remember(req, out)
return out
""")

#: ARGV: prefix, uuid. Answers {} when the job is gone, else {owner or '',
#: attempt count, token of the latest claim}; both numbers are 0 for a job
#: never claimed.
STATUS = _script("""
local uuid = ARGV[2]
local key = P .. 'job:' .. uuid
local f = fields(key, 's', 'o', 'd', 'a', 't')
if not f or not f[1] then
  return {}
end
local attempt, token = tonumber(f[4]) or 0, tonumber(f[5]) or 0
if f[2] and (tonumber(f[3]) or 0) <= now_ms() then
  expire(uuid, key)
  return {'', attempt, token}
end
return {f[2] or '', attempt, token}
""")

#: ARGV: prefix, request id, uuid, reason. Removes the job whoever holds it,
#: keeps the reason under ``cancelled:UUID``, and answers ["ok"], or ["gone"].
CANCEL = _script("""
local req, uuid, reason = ARGV[2], ARGV[3], ARGV[4]
local answered = redis.call('GET', P .. 'req:' .. req)
if answered then
  return answered
end
local key = P .. 'job:' .. uuid
local f = fields(key, 's', 'o', 't', 'd')
local answer = '["gone"]'
if f and f[1] then
  local owner = f[2] or ''
  if f[2] and (tonumber(f[4]) or 0) <= now_ms() then
    expire(uuid, key)
    owner = ''
  end
  redis.call('DEL', key)
  redis.call('ZREM', LEASES, uuid)
  redis.call('ZREM', READY, uuid)
  redis.call('ZREM', ALL, uuid)
  redis.call('SET', P .. 'cancelled:' .. uuid, reason, 'PX', ANSWER_TTL)
  EVENTS[#EVENTS + 1] = {'TRASHED', uuid, f[3] or '0', owner, reason}
  answer = '["ok"]'
end
remember(req, answer)
return answer
""")

#: ARGV: prefix. Answers 1 when some job is unclaimed.
HAS_UNCLAIMED = _script("""
sweep(now_ms(), 100)
return redis.call('ZCARD', READY) > 0 and 1 or 0
""")

#: ARGV: prefix, limit, then the uuids of the jobs the caller holds. Expires
#: due leases; answers ms to the next deadline, or -1 when no job is claimed,
#: then per uuid the reason it was cancelled, or '' if it was not.
SWEEP = _script("""
local now = now_ms()
sweep(now, tonumber(ARGV[2]))
local out = {-1}
local nxt = redis.call('ZRANGE', LEASES, 0, 0, 'WITHSCORES')
if nxt[2] then
  out[1] = math.max(0, tonumber(nxt[2]) - now)
end
for i = 3, #ARGV do
  out[i - 1] = redis.call('GET', P .. 'cancelled:' .. ARGV[i]) or ''
end
return cjson.encode(out)
""")

#: ARGV: prefix, lifetime ms, count, then (field, record) per record to keep,
#: then the fields to remove. Writes one connection's presence records with
#: a deadline of now plus the lifetime.
PRESENCE = _script("""
local lifetime, n = tonumber(ARGV[2]), tonumber(ARGV[3])
local deadline = now_ms() + lifetime
for i = 0, n - 1 do
  local name, record = ARGV[4 + 2 * i], ARGV[5 + 2 * i]
  redis.call('HSET', P .. 'workers', name, record)
  redis.call('ZADD', P .. 'workers:due', deadline, name)
end
for i = 4 + 2 * n, #ARGV do
  redis.call('HDEL', P .. 'workers', ARGV[i])
  redis.call('ZREM', P .. 'workers:due', ARGV[i])
end
return 1
""")

#: ARGV: prefix. Drops presence records past their deadline and answers the
#: others.
WORKERS = _script("""
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', P .. 'workers:due', '-inf', now)
for _, name in ipairs(due) do
  redis.call('HDEL', P .. 'workers', name)
  redis.call('ZREM', P .. 'workers:due', name)
end
-- A record whose deadline entry is missing was half-written: skip it.
local out = {}
local all = redis.call('HGETALL', P .. 'workers')
for i = 1, #all, 2 do
  if redis.call('ZSCORE', P .. 'workers:due', all[i]) then
    table.insert(out, all[i + 1])
  end
end
return cjson.encode(out)
""")

#: ARGV: prefix, index ('all' or 'ready'), exclusive lower score, count.
#: Answers (uuid, score, posting or '', sequence or '') per job in order.
PAGE = _script("""
local index = ARGV[2]
if index == 'ready' then
  sweep(now_ms(), 100)
end
local found = redis.call('ZRANGEBYSCORE', P .. index, '(' .. ARGV[3], '+inf',
  'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for i = 1, #found, 2 do
  local f = fields(P .. 'job:' .. found[i], 'p', 's') or {}
  table.insert(out, found[i])
  table.insert(out, found[i + 1])
  table.insert(out, f[1] or '')
  table.insert(out, f[2] or '')
end
return cjson.encode(out)
""")

#: ARGV: prefix, uuid, token. Sets aside a job this connection claimed whose
#: posting does not decode, so that no one claims it again.
QUARANTINE = _script("""
local uuid = ARGV[2]
local key = P .. 'job:' .. uuid
local f = fields(key, 't', 'sc')
if f and f[1] == ARGV[3] then
  redis.call('HDEL', key, 'o', 'd', 'l')
  redis.call('ZREM', LEASES, uuid)
  redis.call('ZREM', READY, uuid)
  redis.call('ZADD', P .. 'garbage', score_of(uuid, f[2]), uuid)
end
return 1
""")

#: ARGV: prefix, sequence, limit, known epoch, fresh epoch. Answers the
#: board's epoch and last sequence, then (uuid, sequence, posting) for up to
#: LIMIT jobs per priority still on the board that were posted after SEQUENCE:
#: what a subscriber that lost its connection may have missed. The epoch is a
#: random name the board keeps; when it is not the known one, the server lost
#: its data since, sequences count again from zero, and every job is new.
CATCH_UP = _script("""
local after, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('SET', P .. 'epoch', ARGV[5], 'NX')
local epoch = redis.call('GET', P .. 'epoch')
if epoch ~= ARGV[4] then
  after = 0
end
local out = {epoch, redis.call('GET', P .. 'seq') or '0'}
local span = 1125899906842624
for band = 0, 4 do
  local low = string.format('(%.0f', band * span + after)
  local high = string.format('%.0f', (band + 1) * span - 1)
  local found = redis.call('ZRANGEBYSCORE', ALL, low, high, 'LIMIT', 0, limit)
  for _, uuid in ipairs(found) do
    local f = fields(P .. 'job:' .. uuid, 's', 'p')
    if f and tonumber(f[1]) and f[2] then
      table.insert(out, uuid)
      table.insert(out, f[1])
      table.insert(out, f[2])
    end
  end
end
return cjson.encode(out)
""")
