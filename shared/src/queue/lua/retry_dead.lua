-- Put a dead job back to waiting with a fresh set of attempts (its error history is kept).
-- Loaded after open.lua: the job is open again. The archiver drops its archived row (it is no
-- longer finished) until it finishes again.
-- KEYS[1] = queue base. ARGV[1] = job id. Returns 1 if retried, 0 if the job is not dead.
local base = KEYS[1]
local id = ARGV[1]
local jk = base .. 'job:' .. id
local cur = redis.call('HMGET', jk, 'state', 'rs', 'project', 'created')
if cur[1] ~= 'dead' then return 0 end
redis.call('ZREM', base .. 'dead', id)
redis.call('ZREM', base .. 'dead_hooks', id)
redis.call('HSET', jk, 'state', 'waiting', 'att', 0)
redis.call('HINCRBY', jk, 'tok', 1)
redis.call('HDEL', jk, 'finished', 'worker')
redis.call('ZADD', base .. 'ready', cur[2], id)
local t = redis.call('TIME')
redis.call('ZADD', base .. 'archive', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), id)
count_open(base, cur[3], 1)
local moves, indexed = {}, {}
move(moves, cur[3], nil, 'waiting')
index_job(indexed, cur[3], cur[4], id)
apply_moves(base, moves)
apply_index(base, indexed, true)
redis.call(WAKE, base .. 'wake', 1)
return 1
