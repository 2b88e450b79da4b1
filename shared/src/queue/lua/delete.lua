-- Delete a finished job (completed, dead or cancelled) from Redis: its record and every index
-- entry (its state's set, `archive`, `dead_hooks`). An open job is left alone (cancel it first).
-- Finished jobs are not open, so no open count changes. Loaded after job.lua.
-- KEYS = the queue's keys (`K`). ARGV[1] = job id. Returns the job's state ('' = no such job).
local id = ARGV[1]
local j = job_get(id)
if not j or not j[F_STATE] then return '' end
local state = j[F_STATE]
if state == 'completed' or state == 'dead' or state == 'cancelled' then
  rcall('HDEL', K.jobs, id)
  rcall('ZREM', K[state], id)
  rcall('ZREM', K.archive, id)
  rcall('ZREM', K.dead_hooks, id)
end
return state
