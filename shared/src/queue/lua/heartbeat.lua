-- Extend the leases a worker holds (bounded: at most 500 per call).
-- KEYS[1] = queue base. ARGV[1] = lease ms, then pairs of id, token (the worker's copy of the
--   jobs it holds, taken while its acker may be writing some of their outcomes).
-- A job still active under the token is extended. A job whose token is unchanged but which is
-- no longer active was finished by this very attempt (its outcome landed after the copy was
-- taken): it is neither extended nor lost. Only a job whose token moved on (its lease was
-- reaped, or it was released, or it failed and was fetched again) or whose hash is gone is lost
-- to this attempt.
-- Returns the ids whose lease this attempt lost.
local base = KEYS[1]
local lease = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lost = {}
for i = 2, #ARGV, 2 do
  local id, tok = ARGV[i], ARGV[i + 1]
  local cur = redis.call('HMGET', base .. 'job:' .. id, 'tok', 'state')
  if cur[1] ~= tok then
    lost[#lost + 1] = id
  elseif cur[2] == 'active' then
    redis.call('ZADD', base .. 'active', 'XX', now + lease, id)
  end
end
return lost
