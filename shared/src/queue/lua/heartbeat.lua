-- Extend the leases a worker holds (bounded: at most 500 per call). Loaded after job.lua.
-- KEYS = the queue's keys (`K`). ARGV[1] = lease ms, then pairs of id, token (the worker's copy
--   of the jobs it holds, taken while its acker may be writing some of their outcomes).
-- A job still active under the token is extended. A job whose token is unchanged but which is
-- no longer active was finished by this very attempt (its outcome landed after the copy was
-- taken): it is neither extended nor lost. Only a job whose token moved on (its lease was
-- reaped, or it was released, or it failed and was fetched again) or whose record is gone is
-- lost to this attempt.
-- Returns the ids whose lease this attempt lost.
local lease = tonumber(ARGV[1])
local now = now_ms()
local lost = {}
for i = 2, #ARGV, 2 do
  local id, tok = ARGV[i], tonumber(ARGV[i + 1])
  local j = job_get(id)
  if not j or j[F_TOK] ~= tok then
    lost[#lost + 1] = id
  elseif j[F_STATE] == 'active' then
    rcall('ZADD', K.active, 'XX', now + lease, id)
  end
end
return lost
