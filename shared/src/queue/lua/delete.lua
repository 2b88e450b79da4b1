-- Delete a finished job (completed, dead or cancelled) from Redis: its hash and every index
-- entry (its state's set, `archive`, `dead_hooks`). An open job is left alone (cancel it first).
-- Finished jobs are not open, so no open count changes.
-- KEYS[1] = queue base. ARGV[1] = job id. Returns the job's state ('' = no such job).
local base = KEYS[1]
local id = ARGV[1]
local jk = base .. 'job:' .. id
local state = redis.call('HGET', jk, 'state')
if not state then return '' end
if state == 'completed' or state == 'dead' or state == 'cancelled' then
  redis.call('DEL', jk)
  redis.call('ZREM', base .. state, id)
  redis.call('ZREM', base .. 'archive', id)
  redis.call('ZREM', base .. 'dead_hooks', id)
end
return state
