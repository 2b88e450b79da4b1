-- Enqueue a batch of jobs into one queue (bounded: the caller sends at most 1000 per call).
-- Loaded after open.lua: every job created is counted as open for its project, in its state's
-- count and in the project's open index.
-- KEYS[1] = queue base "<prefix>:{<queue>}:" (every key below shares its hash tag)
-- ARGV[1] = idempotency-key ttl ms, ARGV[2] = number of jobs, then 9 fields per job:
--   id, kind, payload, run_at_ms (0 = now), priority, max_attempts, idempotency key ("" = none),
--   project id, request id
-- Returns a flat array: id, created (1) or duplicate (0) per job; the id of a duplicate is the
-- first job's id (same idempotency key) or the same id (a relay pushing a job twice).
-- Every unpack below is bounded: the client sends at most 1000 jobs per call.
local base = KEYS[1]
local idem_ttl = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
local woke = 0
local seq0 = redis.call('INCRBY', base .. 'seq', n) - n
local readies = {}
local opened = {}
local moves, indexed = {}, {}
local created = 0
for i = 0, n - 1 do
  local o = 3 + i * 9
  local id, kind, payload = ARGV[o], ARGV[o + 1], ARGV[o + 2]
  local run_at, pri, max = tonumber(ARGV[o + 3]), tonumber(ARGV[o + 4]), ARGV[o + 5]
  local idem, project, rid = ARGV[o + 6], ARGV[o + 7], ARGV[o + 8]
  local existing = false
  if idem ~= '' then
    existing = redis.call('GET', base .. 'idem:' .. idem)
  end
  local jk = base .. 'job:' .. id
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
  elseif redis.call('EXISTS', jk) == 1 then
    out[#out + 1] = id
    out[#out + 1] = 0
  else
    local seq = seq0 + i + 1
    -- higher priority first, FIFO within a priority; exact in a double (< 2^53)
    local rs = (1000 - pri) * 1099511627776 + seq
    local state = 'waiting'
    if run_at > now then state = 'delayed' end
    redis.call('HSET', jk, 'id', id, 'kind', kind, 'payload', payload, 'state', state,
      'att', 0, 'max', max, 'pri', pri, 'rs', rs, 'tok', 0, 'created', now,
      'run_at', math.max(run_at, now), 'project', project, 'rid', rid, 'idem', idem)
    if state == 'delayed' then
      redis.call('ZADD', base .. 'delayed', run_at, id)
    else
      readies[#readies + 1] = rs
      readies[#readies + 1] = id
      woke = woke + 1
    end
    if idem ~= '' then
      redis.call('SET', base .. 'idem:' .. idem, id, 'PX', idem_ttl)
    end
    opened[project] = (opened[project] or 0) + 1
    move(moves, project, nil, state)
    index_job(indexed, project, now, id)
    created = created + 1
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
count_open_all(base, opened)
apply_moves(base, moves)
apply_index(base, indexed, true)
count_minute(base, now, 'enqueued', created)
if woke > 0 then
  redis.call('ZADD', base .. 'ready', unpack(readies))
  redis.call(WAKE, base .. 'wake', woke)
end
return out
