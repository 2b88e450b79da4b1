-- Enqueue a batch of jobs into one queue (bounded: the caller sends at most 1000 per call).
-- Loaded after job.lua, open.lua and series.lua: every job created is counted as open for its
-- project, in its state's count and in the project's open index.
-- KEYS = the queue's keys (`K`), then the key `<base>idem:<key>` of every idempotency key the
--   batch carries (declared, so the script touches no key it was not given).
-- ARGV[1] = idempotency-key ttl ms, ARGV[2] = number of jobs, then 10 fields per job:
--   id, payload, run_at_ms (0 = now), priority, max_attempts, idempotency key ("" = none),
--   project id, request id, then the project's and the job's ids as 16 bytes each (the open
--   index's member, `open.lua`)
-- Returns a flat array: id, created (1) or duplicate (0) per job; the id of a duplicate is the
-- first job's id (same idempotency key) or the same id (a relay pushing a job twice).
-- Every unpack below is bounded: the client sends at most 1000 jobs per call.
local idem_ttl = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local now = now_ms()
local out = {}
local woke = 0
local seq0 = rcall('INCRBY', K.seq, n) - n
local readies, listed = {}, {}
local opened = {}
local moves, indexed = {}, {}
local created = 0
-- the records written, in one HSET at the end (`made`: the ids among them)
local put_ids, put, made = {}, {}, {}
for i = 0, n - 1 do
  local o = 3 + i * 10
  local id, payload = ARGV[o], ARGV[o + 1]
  local run_at, pri, max = tonumber(ARGV[o + 2]), tonumber(ARGV[o + 3]), tonumber(ARGV[o + 4])
  local idem, project, rid = ARGV[o + 5], ARGV[o + 6], ARGV[o + 7]
  local pbin, ibin = ARGV[o + 8], ARGV[o + 9]
  local existing = false
  if idem ~= '' then
    existing = rcall('GET', BASE .. 'idem:' .. idem)
  end
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
  elseif made[id] or rcall('HEXISTS', K.jobs, id) == 1 then
    out[#out + 1] = id
    out[#out + 1] = 0
  else
    local seq = seq0 + i + 1
    -- higher priority first, FIFO within a priority; exact in a double (< 2^53)
    local rs = (1000 - pri) * 1099511627776 + seq
    local state = 'waiting'
    if run_at > now then state = 'delayed' end
    local j = job_new()
    j[F_PAYLOAD], j[F_STATE], j[F_ATT], j[F_MAX], j[F_PRI] = payload, state, 0, max, pri
    -- the score only for a priority other than 0 (priority 0 waits in the list), the due time
    -- only when it is not the creation time (`record.rs` reads one as the other)
    j[F_RS], j[F_TOK], j[F_CREATED] = pri ~= 0 and rs, 0, now
    j[F_RUN_AT] = run_at > now and run_at
    -- ('' is no project, request id or key: stored as absent)
    j[F_PROJECT], j[F_RID], j[F_IDEM] = project ~= '' and project, rid ~= '' and rid, idem ~= '' and idem
    made[id] = true
    put_ids[#put_ids + 1] = id
    put[#put + 1] = j
    if state == 'delayed' then
      rcall('ZADD', K.delayed, run_at, id)
    elseif pri == 0 then
      listed[#listed + 1] = line_entry(id, ibin)
      woke = woke + 1
    else
      readies[#readies + 1] = rs
      readies[#readies + 1] = id
      woke = woke + 1
    end
    if idem ~= '' then
      rcall('SET', BASE .. 'idem:' .. idem, id, 'PX', idem_ttl)
    end
    opened[project] = (opened[project] or 0) + 1
    move(moves, project, nil, state)
    index_job(indexed, project, now, id, pbin, ibin)
    created = created + 1
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
jobs_put(put_ids, put)
count_open_all(opened)
apply_moves(moves)
apply_index(indexed, true)
count_minute(now, 'enqueued', created)
if #readies > 0 then rcall('ZADD', K.ready, unpack(readies)) end
if #listed > 0 then rcall('RPUSH', K.wait, unpack(listed)) end
if woke > 0 then rcall(WAKE, BASE .. 'wake', woke) end
return out
