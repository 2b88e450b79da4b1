-- One bounded maintenance pass over a queue: promote due delayed/retry jobs, take back expired
-- leases (the attempt stays counted; out of attempts means dead), trim finished jobs past their
-- retention. Safe to run from every worker process at once. Loaded after job.lua, series.lua and history.lua: a reaped
-- job whose record is corrupt (unreadable `errors`, non-numeric attempts) goes dead with the reason
-- instead of failing every pass; and after open.lua: a reaped job that goes dead is no longer
-- open (trimming deletes only finished jobs, which are not counted).
-- KEYS = the queue's keys (`K`). ARGV: limit per step, completed retention ms, dead retention ms,
--   max kept completed jobs, max kept errors per job, 1 when the job kind has an on-dead hook
--   (a job that goes dead is then queued in `dead_hooks`), completed jobs kept in Redis once
--   archived.
-- Returns { promoted, reaped, dead_by_reap, trimmed, indexed } (indexed: members of the open
--   index's sorted set moved into its pages, `open.lua`).
local limit, keep_done, keep_dead = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local max_done, keep_errs, hooked = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6] == '1'
local keep_hot = tonumber(ARGV[7])
local now = now_ms()
-- jobs of the earlier layout not yet moved into records (`migrate.rs`) would read as missing
-- and be dropped from their sets: nothing is touched until the next fetch has moved them
if rcall('GET', K.layout) ~= 'records' then return { 0, 0, 0, 0, 0 } end
local promoted, reaped, died, trimmed = 0, 0, 0, 0
local moves, unindexed = {}, {}
promoted = promote_due(now, limit, moves)
local expired = rcall('ZRANGEBYSCORE', K.active, '-inf', now, 'LIMIT', 0, limit)
local front = {}
for _, id in ipairs(expired) do
  rcall('ZREM', K.active, id)
  local j = job_get(id)
  if j then
    reaped = reaped + 1
    j[F_TOK] = (tonumber(j[F_TOK]) or 0) + 1
    local err = 'lease expired: worker ' .. (j[F_WORKER] or '?') .. ' stopped heartbeating (killed, crashed or stalled)'
    local att, max = tonumber(j[F_ATT]), tonumber(j[F_MAX])
    local entry = { attempt = att or 0, error = err, at = now, worker = j[F_WORKER] or '' }
    local encoded, poison = record_failure(j[F_ERRORS], entry, keep_errs)
    if not (att and max and lineable(j)) then
      poison = 'corrupt job: its att, max or rs field is missing or not a number, so it goes dead ('
        .. err .. ')'
      encoded = cjson.encode({ { attempt = att or 0, error = poison, at = now, worker = j[F_WORKER] or '' } })
    end
    j[F_ERRORS] = encoded
    if poison or att >= max then
      j[F_STATE], j[F_FINISHED], j[F_LAST_ERROR] = 'dead', now, poison or err
      job_put(id, j)
      rcall('ZADD', K.dead, now, id)
      rcall('ZADD', K.archive, now, id)
      rcall('HINCRBY', K.stats, 'dead', 1)
      count_minute(now, 'dead', 1)
      if hooked then rcall('ZADD', K.dead_hooks, now, id) end
      count_open(j[F_PROJECT], -1)
      move(moves, j[F_PROJECT], 'active', 'dead')
      index_job(unindexed, j[F_PROJECT], j[F_CREATED], id)
      died = died + 1
    else
      j[F_STATE], j[F_LAST_ERROR], j[F_WORKER] = 'waiting', err, false
      job_put(id, j)
      move(moves, j[F_PROJECT], 'active', 'waiting')
      put_ready(id, j, front)
    end
  end
end
put_front(front)
if promoted + reaped - died > 0 then rcall(WAKE, BASE .. 'wake', promoted + reaped - died) end
local function forget(set, id)
  rcall('HDEL', K.jobs, id)
  rcall('ZREM', K[set], id)
  rcall('ZREM', K.archive, id)
  trimmed = trimmed + 1
end
local function trim(set, older_than)
  local old = rcall('ZRANGEBYSCORE', K[set], '-inf', older_than, 'LIMIT', 0, limit)
  for _, id in ipairs(old) do forget(set, id) end
end
trim('completed', now - keep_done)
trim('dead', now - keep_dead)
trim('cancelled', now - keep_dead)
-- Past max_done, the oldest completed jobs leave Redis whether archived or not (an archiver that
-- is down must not let Redis grow); past keep_hot, only those already archived (no longer in
-- `archive`): their record lives on in Postgres.
local extra = rcall('ZCARD', K.completed) - max_done
if extra > 0 then
  local old = rcall('ZRANGE', K.completed, 0, math.min(extra, limit) - 1)
  for _, id in ipairs(old) do forget('completed', id) end
end
extra = rcall('ZCARD', K.completed) - keep_hot
if extra > 0 then
  local old = rcall('ZRANGE', K.completed, 0, math.min(extra, limit) - 1)
  for _, id in ipairs(old) do
    if not rcall('ZSCORE', K.archive, id) then forget('completed', id) end
  end
end
apply_moves(moves)
apply_index(unindexed, false)
local indexed = compact_index(limit)
prune_minutes(now)
return { promoted, reaped, died, trimmed, indexed }
