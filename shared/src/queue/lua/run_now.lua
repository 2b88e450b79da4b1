-- Run a delayed or retrying job now: it moves to `ready` in its place (its priority and FIFO
-- score), as if its due time had come. Both states are open, so no open count changes (its
-- project's state counts do; loaded after open.lua).
-- KEYS[1] = queue base. ARGV[1] = job id. Returns the job's state before ('' = no such job).
local base = KEYS[1]
local id = ARGV[1]
local jk = base .. 'job:' .. id
local cur = redis.call('HMGET', jk, 'state', 'rs', 'project')
local state = cur[1]
if not state then return '' end
local from = { delayed = 'delayed', retrying = 'retry' }
if from[state] and cur[2] then
  redis.call('ZREM', base .. from[state], id)
  redis.call('HSET', jk, 'state', 'waiting')
  redis.call('ZADD', base .. 'ready', cur[2], id)
  local moves = {}
  move(moves, cur[3], state, 'waiting')
  apply_moves(base, moves)
  redis.call(WAKE, base .. 'wake', 1)
end
return state
