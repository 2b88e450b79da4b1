-- Record the outcome of a batch of attempts (bounded: at most 500 per call). Loaded after
-- job.lua, history.lua, open.lua and series.lua: a job that completes or goes dead is no longer open.
-- KEYS = the queue's keys (`K`). ARGV[1] = max kept errors per job, ARGV[2] = count, ARGV[3] = 1 when
--   the job kind has an on-dead hook (a job that goes dead is then queued in `dead_hooks`), then
--   8 fields each: id, token, outcome ('ok' | 'retry' | 'dead'), retry delay ms, error text (for
--   'ok': why there is no result, '' = none), result json ('' = none), the job's project and
--   its id as 16 bytes each ('' when unknown: the open index's member, `open.lua`)
-- An outcome whose token is not the job's current token, or whose job is no longer active (or
-- already had an outcome earlier in the batch), is from a stale attempt (its lease expired and
-- the job moved on): it changes nothing.
-- A failure whose job cannot record it (its `errors` field is unreadable) poisons that job alone:
-- it goes dead with the reason, and the rest of the batch lands.
-- Everything is read and checked before anything is written, so an error writes nothing.
-- Returns { codes, then the reason of each poisoned outcome }: codes has one letter per outcome,
-- in order: 'a' applied, 's' stale, 'p' poisoned (dead).
-- Every unpack below is bounded: the acker sends at most 500 outcomes per call.
local keep, n, hooked = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local now = now_ms()
local codes, reply, seen = {}, { '' }, {}
-- what phase 2 writes: the changed records, in order
local written_ids, written = {}, {}
local finished, done, retried, dead = {}, {}, {}, {}
local closed = {} -- project id -> jobs of it that completed or went dead
local moves, unindexed = {}, {}
-- 1. Read and decide.
local ids = {}
for i = 0, n - 1 do ids[i + 1] = ARGV[4 + i * 8] end
local records = jobs_get(ids)
for i = 0, n - 1 do
  local o = 4 + i * 8
  local id, tok, outcome = ARGV[o], tonumber(ARGV[o + 1]), ARGV[o + 2]
  local delay, err, result = tonumber(ARGV[o + 3]), ARGV[o + 4], ARGV[o + 5]
  local pbin, ibin = ARGV[o + 6], ARGV[o + 7]
  local j = records[i + 1]
  if not j or j[F_TOK] ~= tok or j[F_STATE] ~= 'active' or seen[id] then
    codes[i + 1] = 's'
  else
    seen[id] = true
    finished[#finished + 1] = id
    codes[i + 1] = 'a'
    local project = j[F_PROJECT]
    if outcome == 'ok' then
      j[F_STATE], j[F_FINISHED] = 'completed', now
      if result ~= '' then j[F_RESULT] = result end
      if err ~= '' then j[F_LAST_ERROR] = err end
      done[#done + 1] = now
      done[#done + 1] = id
      if project then closed[project] = (closed[project] or 0) - 1 end
      move(moves, project, 'active', 'completed')
      index_job(unindexed, project, j[F_CREATED], id, pbin, ibin)
    else
      local entry = { attempt = tonumber(j[F_ATT]) or 0, error = err, at = now, worker = j[F_WORKER] or '' }
      local encoded, poison = record_failure(j[F_ERRORS], entry, keep)
      if poison then
        outcome, err = 'dead', poison
        codes[i + 1] = 'p'
        reply[#reply + 1] = poison
      end
      j[F_ERRORS], j[F_LAST_ERROR] = encoded, err
      if outcome == 'retry' then
        local due = now + delay
        j[F_STATE], j[F_RUN_AT] = 'retrying', due
        retried[#retried + 1] = due
        retried[#retried + 1] = id
        move(moves, project, 'active', 'retrying')
      else
        j[F_STATE], j[F_FINISHED] = 'dead', now
        dead[#dead + 1] = now
        dead[#dead + 1] = id
        if project then closed[project] = (closed[project] or 0) - 1 end
        move(moves, project, 'active', 'dead')
        index_job(unindexed, project, j[F_CREATED], id, pbin, ibin)
      end
    end
    written_ids[#written_ids + 1] = id
    written[#written + 1] = j
  end
end
-- 2. Write.
jobs_put(written_ids, written)
if #finished > 0 then rcall('ZREM', K.active, unpack(finished)) end
for set, scored in pairs({ completed = done, retry = retried, dead = dead }) do
  if #scored > 0 then
    rcall('ZADD', K[set], unpack(scored))
    rcall('HINCRBY', K.stats, set == 'retry' and 'retried' or set, #scored / 2)
    count_minute(now, set == 'retry' and 'retried' or set, #scored / 2)
  end
end
-- the archiver copies finished jobs to Postgres (`archive.rs`)
if #done > 0 then rcall('ZADD', K.archive, unpack(done)) end
if #dead > 0 then rcall('ZADD', K.archive, unpack(dead)) end
count_open_all(closed)
apply_moves(moves)
apply_index(unindexed, false)
if hooked and #dead > 0 then rcall('ZADD', K.dead_hooks, unpack(dead)) end
-- idle workers re-fetch, learn the retry's due time and sleep exactly until then
if #retried > 0 then rcall(WAKE, BASE .. 'wake', 0) end
reply[1] = table.concat(codes)
return reply
