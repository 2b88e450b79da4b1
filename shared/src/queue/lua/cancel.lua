-- Cancel a job that has not started (waiting, delayed or retrying). A running job cannot be
-- cancelled here: its worker owns it until the attempt ends. Loaded after job.lua and open.lua:
-- a cancelled job is no longer open.
-- KEYS = the queue's keys (`K`). ARGV[1] = job id. Returns the job's state before the call
-- ('' = none).
local id = ARGV[1]
local j = job_get(id)
if not j or not j[F_STATE] then return '' end
local state = j[F_STATE]
local from = { waiting = 'ready', delayed = 'delayed', retrying = 'retry' }
if from[state] then
  local now = now_ms()
  if state == 'waiting' then remove_ready(id, j) else rcall('ZREM', K[from[state]], id) end
  j[F_STATE], j[F_FINISHED], j[F_TOK] = 'cancelled', now, (tonumber(j[F_TOK]) or 0) + 1
  job_put(id, j)
  rcall('ZADD', K.cancelled, now, id)
  rcall('ZADD', K.archive, now, id)
  count_open(j[F_PROJECT], -1)
  local moves, unindexed = {}, {}
  move(moves, j[F_PROJECT], state, 'cancelled')
  index_job(unindexed, j[F_PROJECT], j[F_CREATED], id)
  apply_moves(moves)
  apply_index(unindexed, false)
end
return state
