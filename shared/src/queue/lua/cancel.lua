-- Cancel a job that has not started (waiting, delayed or retrying). A running job cannot be
-- cancelled here: its worker owns it until the attempt ends. Loaded after open.lua: a
-- cancelled job is no longer open.
-- KEYS[1] = queue base. ARGV[1] = job id. Returns the job's state before the call ('' = none).
local base = KEYS[1]
local id = ARGV[1]
local jk = base .. 'job:' .. id
local cur = redis.call('HMGET', jk, 'state', 'project', 'created')
local state = cur[1]
if not state then return '' end
local from = { waiting = 'ready', delayed = 'delayed', retrying = 'retry' }
if from[state] then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREM', base .. from[state], id)
  redis.call('HSET', jk, 'state', 'cancelled', 'finished', now)
  redis.call('HINCRBY', jk, 'tok', 1)
  redis.call('ZADD', base .. 'cancelled', now, id)
  redis.call('ZADD', base .. 'archive', now, id)
  count_open(base, cur[2], -1)
  local moves, unindexed = {}, {}
  move(moves, cur[2], state, 'cancelled')
  index_job(unindexed, cur[2], cur[3], id)
  apply_moves(base, moves)
  apply_index(base, unindexed, false)
end
return state
