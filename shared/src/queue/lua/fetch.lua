-- Lease up to N ready jobs to one worker (after promoting a bounded number of due jobs).
-- Loaded after job.lua, open.lua and series.lua: a corrupt job sent dead here is no longer open.
-- KEYS = the queue's keys (`K`). ARGV: worker name, max jobs, lease ms, promote limit.
-- Each fetch counts an attempt and bumps the job's fencing token. A popped job whose attempt
-- count or token is not a number goes dead with the reason instead.
-- Returns { next_due_ms, or -1 for none, or -2 when the queue's layout marker is missing;
--   now_ms, then 7 fields per job:
--   id, payload, attempts, max_attempts, token, project, request id }
-- Every unpack below is bounded: a fetch leases at most JOB_FETCH_BATCH (≤ 1000) jobs.
local worker, n, lease, plimit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
-- a queue whose jobs of the earlier layout may not be moved into records yet leases nothing
-- (`migrate.rs`; also a Redis that lost its data, or a new one): the caller moves them, then
-- fetches again (paused or not: the move is done at once)
if rcall('GET', K.layout) ~= 'records' then
  return { -2, now }
end
-- a paused queue leases nothing (and promotes nothing: its due jobs stay where they are)
if rcall('EXISTS', K.paused) == 1 then
  return { -1, now }
end
local moves, closed = {}, {}
promote_due(now, plimit, moves)
local out = { -1, now }
local popped = take_ready(n)
local active = {}
local records, seen = jobs_get(popped), {}
local put_ids, put = {}, {}
for k, id in ipairs(popped) do
  local j = records[k]
  -- (an id in line twice is leased once)
  if j and not seen[id] then
    seen[id] = true
    put_ids[#put_ids + 1] = id
    put[#put + 1] = j
    local att, tok = tonumber(j[F_ATT]), tonumber(j[F_TOK])
    if not (att and tok) then
      -- a corrupt job must not fail the call: the jobs popped with it would be lost to every index
      local why = 'corrupt job: its att or tok field is missing or not a number, so it goes dead'
      j[F_STATE], j[F_FINISHED], j[F_LAST_ERROR] = 'dead', now, why
      rcall('ZADD', K.dead, now, id)
      rcall('HINCRBY', K.stats, 'dead', 1)
      count_minute(now, 'dead', 1)
      count_open(j[F_PROJECT], -1)
      move(moves, j[F_PROJECT], 'waiting', 'dead')
      index_job(closed, j[F_PROJECT], j[F_CREATED], id)
    else
      att, tok = att + 1, tok + 1
      j[F_ATT], j[F_TOK], j[F_STATE], j[F_STARTED], j[F_WORKER] = att, tok, 'active', now, worker
      move(moves, j[F_PROJECT], 'waiting', 'active')
      active[#active + 1] = now + lease
      active[#active + 1] = id
      out[#out + 1] = id
      out[#out + 1] = j[F_PAYLOAD] or ''
      out[#out + 1] = att
      out[#out + 1] = j[F_MAX] or ''
      out[#out + 1] = tok
      out[#out + 1] = j[F_PROJECT] or ''
      out[#out + 1] = j[F_RID] or ''
    end
  end
end
jobs_put(put_ids, put)
if #active > 0 then rcall('ZADD', K.active, unpack(active)) end
apply_moves(moves)
apply_index(closed, false)
if #popped == 0 then
  local nd = -1
  for _, set in ipairs({ 'delayed', 'retry' }) do
    local first = rcall('ZRANGE', K[set], 0, 0, 'WITHSCORES')
    if first[2] then
      local s = tonumber(first[2])
      if nd < 0 or s < nd then nd = s end
    end
  end
  out[1] = nd
end
return out
