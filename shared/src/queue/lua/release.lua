-- Give leased jobs back without using up their attempt (graceful shutdown, fetched-but-unstarted).
-- Loaded after open.lua: each moves from active to waiting in its project's state counts.
-- KEYS[1] = queue base. ARGV = pairs of id, token. Returns the number released.
local base = KEYS[1]
local released = 0
local moves = {}
for i = 1, #ARGV, 2 do
  local id, tok = ARGV[i], ARGV[i + 1]
  local jk = base .. 'job:' .. id
  local cur = redis.call('HMGET', jk, 'tok', 'state', 'rs', 'project')
  if cur[1] == tok and cur[2] == 'active' then
    redis.call('ZREM', base .. 'active', id)
    redis.call('HINCRBY', jk, 'att', -1)
    redis.call('HINCRBY', jk, 'tok', 1)
    redis.call('HSET', jk, 'state', 'waiting')
    redis.call('HDEL', jk, 'worker')
    redis.call('ZADD', base .. 'ready', cur[3], id)
    move(moves, cur[4], 'active', 'waiting')
    released = released + 1
  end
end
apply_moves(base, moves)
if released > 0 then redis.call(WAKE, base .. 'wake', released) end
return released
