-- Extend the leases a worker holds (bounded: at most 500 per call).
-- KEYS[1] = queue base. ARGV[1] = lease ms, then pairs of id, token.
-- Returns the ids whose lease is no longer this worker's (reaped or finished elsewhere).
local base = KEYS[1]
local lease = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lost = {}
for i = 2, #ARGV, 2 do
  local id, tok = ARGV[i], ARGV[i + 1]
  local cur = redis.call('HMGET', base .. 'job:' .. id, 'tok', 'state')
  if cur[1] == tok and cur[2] == 'active' then
    redis.call('ZADD', base .. 'active', 'XX', now + lease, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
