-- Lease up to N ready jobs to one worker (after promoting a bounded number of due jobs).
-- Loaded after open.lua: a corrupt job sent dead here is no longer open.
-- KEYS[1] = queue base. ARGV: worker name, max jobs, lease ms, promote limit.
-- Each fetch counts an attempt and bumps the job's fencing token. A popped job whose attempt
-- count or token is not a number goes dead with the reason instead.
-- Returns { next_due_ms or -1, now_ms, then 8 fields per job:
--   id, kind, payload, attempts, max_attempts, token, project, request id }
-- Every unpack below is bounded: a fetch leases at most JOB_FETCH_BATCH (≤ 1000) jobs.
local base = KEYS[1]
local worker, n, lease, plimit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- a paused queue leases nothing (and promotes nothing: its due jobs stay where they are)
if redis.call('EXISTS', base .. 'paused') == 1 then
  return { -1, now }
end
local ready = base .. 'ready'
local moves, closed = {}, {}
for _, set in ipairs({ 'delayed', 'retry' }) do
  local due = redis.call('ZRANGEBYSCORE', base .. set, '-inf', now, 'LIMIT', 0, plimit)
  for _, id in ipairs(due) do
    local jk = base .. 'job:' .. id
    local f = redis.call('HMGET', jk, 'rs', 'project')
    redis.call('ZREM', base .. set, id)
    if f[1] then
      redis.call('ZADD', ready, f[1], id)
      redis.call('HSET', jk, 'state', 'waiting')
      move(moves, f[2], set == 'retry' and 'retrying' or set, 'waiting')
    end
  end
end
local out = { -1, now }
local popped = redis.call('ZPOPMIN', ready, n)
local active = {}
for i = 1, #popped, 2 do
  local id = popped[i]
  local jk = base .. 'job:' .. id
  local f = redis.call('HMGET', jk, 'kind', 'payload', 'max', 'project', 'rid', 'att', 'tok', 'created')
  local att, tok = tonumber(f[6]), tonumber(f[7])
  if f[2] and not (att and tok) then
    -- a corrupt job must not fail the call: the jobs popped with it would be lost to every index
    local why = 'corrupt job: its att or tok field is missing or not a number, so it goes dead'
    redis.call('HSET', jk, 'state', 'dead', 'finished', now, 'last_error', why)
    redis.call('ZADD', base .. 'dead', now, id)
    redis.call('HINCRBY', base .. 'stats', 'dead', 1)
    count_minute(base, now, 'dead', 1)
    count_open(base, f[4], -1)
    move(moves, f[4], 'waiting', 'dead')
    index_job(closed, f[4], f[8], id)
  elseif f[2] then
    att, tok = att + 1, tok + 1
    redis.call('HSET', jk, 'att', att, 'tok', tok, 'state', 'active', 'started', now, 'worker', worker)
    move(moves, f[4], 'waiting', 'active')
    active[#active + 1] = now + lease
    active[#active + 1] = id
    out[#out + 1] = id
    out[#out + 1] = f[1]
    out[#out + 1] = f[2]
    out[#out + 1] = att
    out[#out + 1] = f[3]
    out[#out + 1] = tok
    out[#out + 1] = f[4] or ''
    out[#out + 1] = f[5] or ''
  end
end
if #active > 0 then redis.call('ZADD', base .. 'active', unpack(active)) end
apply_moves(base, moves)
apply_index(base, closed, false)
if #popped == 0 then
  local nd = -1
  for _, set in ipairs({ 'delayed', 'retry' }) do
    local first = redis.call('ZRANGE', base .. set, 0, 0, 'WITHSCORES')
    if first[2] then
      local s = tonumber(first[2])
      if nd < 0 or s < nd then nd = s end
    end
  end
  out[1] = nd
end
return out
