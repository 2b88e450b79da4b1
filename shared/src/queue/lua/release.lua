-- Give leased jobs back without using up their attempt (graceful shutdown, fetched-but-unstarted).
-- Loaded after job.lua and open.lua: each moves from active to waiting in its project's state
-- counts.
-- KEYS = the queue's keys (`K`). ARGV = pairs of id, token. Returns the number released.
local released = 0
local moves = {}
for i = 1, #ARGV, 2 do
  local id, tok = ARGV[i], tonumber(ARGV[i + 1])
  local j = job_get(id)
  if j and j.tok == tok and j.state == 'active' and j.rs then
    rcall('ZREM', K.active, id)
    j.att, j.tok, j.state, j.worker = (tonumber(j.att) or 1) - 1, tok + 1, 'waiting', nil
    job_put(id, j)
    put_ready(id, j, true)
    move(moves, j.project, 'active', 'waiting')
    released = released + 1
  end
end
apply_moves(moves)
if released > 0 then rcall(WAKE, BASE .. 'wake', released) end
return released
