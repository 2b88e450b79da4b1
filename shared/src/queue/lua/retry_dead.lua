-- Put a dead job back to waiting with a fresh set of attempts (its error history is kept).
-- Loaded after job.lua and open.lua: the job is open again. The archiver drops its archived row
-- (it is no longer finished) until it finishes again.
-- KEYS = the queue's keys (`K`). ARGV[1] = job id. Returns 1 if retried, 0 if the job is not dead.
local id = ARGV[1]
local j = job_get(id)
if not j or j[F_STATE] ~= 'dead' or not lineable(j) then return 0 end
rcall('ZREM', K.dead, id)
rcall('ZREM', K.dead_hooks, id)
j[F_STATE], j[F_ATT], j[F_TOK], j[F_FINISHED], j[F_WORKER] = 'waiting', 0, (tonumber(j[F_TOK]) or 0) + 1, false, false
job_put(id, j)
put_ready(id, j, false)
rcall('ZADD', K.archive, now_ms(), id)
count_open(j[F_PROJECT], 1)
local moves, indexed = {}, {}
move(moves, j[F_PROJECT], nil, 'waiting')
index_job(indexed, j[F_PROJECT], j[F_CREATED], id)
apply_moves(moves)
apply_index(indexed, true)
rcall(WAKE, BASE .. 'wake', 1)
return 1
