-- One bounded maintenance pass over a queue: promote due delayed/retry jobs, take back expired
-- leases (the attempt stays counted; out of attempts means dead), trim finished jobs past their
-- retention. Safe to run from every worker process at once. Loaded after history.lua: a reaped
-- job whose hash is corrupt (unreadable `errors`, non-numeric attempts) goes dead with the reason
-- instead of failing every pass; and after open.lua: a reaped job that goes dead is no longer
-- open (trimming deletes only finished jobs, which are not counted).
-- KEYS[1] = queue base. ARGV: limit per step, completed retention ms, dead retention ms,
--   max kept completed jobs, max kept errors per job, 1 when the job kind has an on-dead hook
--   (a job that goes dead is then queued in `dead_hooks`), completed jobs kept in Redis once
--   archived.
-- Returns { promoted, reaped, dead_by_reap, trimmed }.
local base = KEYS[1]
local limit, keep_done, keep_dead = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local max_done, keep_errs, hooked = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6] == '1'
local keep_hot = tonumber(ARGV[7])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ready = base .. 'ready'
local promoted, reaped, died, trimmed = 0, 0, 0, 0
local moves, unindexed = {}, {}
for _, set in ipairs({ 'delayed', 'retry' }) do
  local due = redis.call('ZRANGEBYSCORE', base .. set, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    local jk = base .. 'job:' .. id
    local f = redis.call('HMGET', jk, 'rs', 'project')
    redis.call('ZREM', base .. set, id)
    if f[1] then
      redis.call('ZADD', ready, f[1], id)
      redis.call('HSET', jk, 'state', 'waiting')
      move(moves, f[2], set == 'retry' and 'retrying' or set, 'waiting')
      promoted = promoted + 1
    end
  end
end
local expired = redis.call('ZRANGEBYSCORE', base .. 'active', '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  local jk = base .. 'job:' .. id
  redis.call('ZREM', base .. 'active', id)
  local cur = redis.call('HMGET', jk, 'att', 'max', 'rs', 'worker', 'errors', 'project', 'created')
  if cur[1] then
    reaped = reaped + 1
    redis.call('HINCRBY', jk, 'tok', 1)
    local err = 'lease expired: worker ' .. (cur[4] or '?') .. ' stopped heartbeating (killed, crashed or stalled)'
    local att, max = tonumber(cur[1]), tonumber(cur[2])
    local entry = { attempt = att or 0, error = err, at = now, worker = cur[4] or '' }
    local encoded, poison = record_failure(cur[5], entry, keep_errs)
    if not (att and max and cur[3]) then
      poison = 'corrupt job: its att, max or rs field is missing or not a number, so it goes dead ('
        .. err .. ')'
      encoded = cjson.encode({ { attempt = att or 0, error = poison, at = now, worker = cur[4] or '' } })
    end
    if poison or att >= max then
      redis.call('HSET', jk, 'state', 'dead', 'finished', now, 'errors', encoded, 'last_error', poison or err)
      redis.call('ZADD', base .. 'dead', now, id)
      redis.call('ZADD', base .. 'archive', now, id)
      redis.call('HINCRBY', base .. 'stats', 'dead', 1)
      count_minute(base, now, 'dead', 1)
      if hooked then redis.call('ZADD', base .. 'dead_hooks', now, id) end
      count_open(base, cur[6], -1)
      move(moves, cur[6], 'active', 'dead')
      index_job(unindexed, cur[6], cur[7], id)
      died = died + 1
    else
      redis.call('HSET', jk, 'state', 'waiting', 'errors', encoded, 'last_error', err)
      move(moves, cur[6], 'active', 'waiting')
      redis.call('HDEL', jk, 'worker')
      redis.call('ZADD', ready, cur[3], id)
    end
  end
end
if promoted + reaped - died > 0 then redis.call(WAKE, base .. 'wake', promoted + reaped - died) end
local function forget(set, id)
  redis.call('DEL', base .. 'job:' .. id)
  redis.call('ZREM', base .. set, id)
  redis.call('ZREM', base .. 'archive', id)
  trimmed = trimmed + 1
end
local function trim(set, older_than)
  local old = redis.call('ZRANGEBYSCORE', base .. set, '-inf', older_than, 'LIMIT', 0, limit)
  for _, id in ipairs(old) do forget(set, id) end
end
trim('completed', now - keep_done)
trim('dead', now - keep_dead)
trim('cancelled', now - keep_dead)
-- Past max_done, the oldest completed jobs leave Redis whether archived or not (an archiver that
-- is down must not let Redis grow); past keep_hot, only those already archived (no longer in
-- `archive`): their record lives on in Postgres.
local extra = redis.call('ZCARD', base .. 'completed') - max_done
if extra > 0 then
  local old = redis.call('ZRANGE', base .. 'completed', 0, math.min(extra, limit) - 1)
  for _, id in ipairs(old) do forget('completed', id) end
end
extra = redis.call('ZCARD', base .. 'completed') - keep_hot
if extra > 0 then
  local old = redis.call('ZRANGE', base .. 'completed', 0, math.min(extra, limit) - 1)
  for _, id in ipairs(old) do
    if not redis.call('ZSCORE', base .. 'archive', id) then forget('completed', id) end
  end
end
apply_moves(base, moves)
apply_index(base, unindexed, false)
return { promoted, reaped, died, trimmed }
