-- Run a delayed or retrying job now: it goes into line as if its due time had come (priority 0
-- at the back of the list; another priority in its place by its score). Both states are open, so no open count changes (its
-- project's state counts do; loaded after job.lua and open.lua).
-- KEYS = the queue's keys (`K`). ARGV[1] = job id. Returns the job's state before ('' = no such
-- job).
local id = ARGV[1]
local j = job_get(id)
if not j or not j[F_STATE] then return '' end
local state = j[F_STATE]
local from = { delayed = 'delayed', retrying = 'retry' }
if from[state] and lineable(j) then
  rcall('ZREM', K[from[state]], id)
  j[F_STATE] = 'waiting'
  job_put(id, j)
  put_ready(id, j, false)
  local moves = {}
  move(moves, j[F_PROJECT], state, 'waiting')
  apply_moves(moves)
  rcall(WAKE, BASE .. 'wake', 1)
end
return state
