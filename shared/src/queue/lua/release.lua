-- Give leased jobs back without using up their attempt (graceful shutdown, fetched-but-unstarted).
-- Loaded after job.lua and open.lua: each moves from active to waiting in its project's state
-- counts.
-- KEYS = the queue's keys (`K`). ARGV = pairs of id, token. Returns the number released.
local released = 0
local moves, front = {}, {}
for i = 1, #ARGV, 2 do
  local id, tok = ARGV[i], tonumber(ARGV[i + 1])
  local j = job_get(id)
  if j and j[F_TOK] == tok and j[F_STATE] == 'active' and lineable(j) then
    rcall('ZREM', K.active, id)
    j[F_ATT], j[F_TOK], j[F_STATE], j[F_WORKER] = (tonumber(j[F_ATT]) or 1) - 1, tok + 1, 'waiting', false
    job_put(id, j)
    put_ready(id, j, front)
    move(moves, j[F_PROJECT], 'active', 'waiting')
    released = released + 1
  end
end
put_front(front)
apply_moves(moves)
if released > 0 then rcall(WAKE, BASE .. 'wake', released) end
return released
