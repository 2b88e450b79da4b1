-- Claim dead jobs whose on-dead hook is due (bounded: at most ARGV[1] per call).
-- KEYS[1] = queue base. ARGV[1] = limit, ARGV[2] = claim ms: a claimed entry is due again after
--   it, so a hook whose process died runs again elsewhere (at least once).
-- An entry whose job is gone (trimmed) or no longer dead (retried by an operator) is dropped.
-- Returns a flat array: id, payload, attempts, last error, request id, per claimed job.
local base = KEYS[1]
local limit, claim = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local hooks = base .. 'dead_hooks'
local due = redis.call('ZRANGEBYSCORE', hooks, '-inf', now, 'LIMIT', 0, limit)
local out = {}
for _, id in ipairs(due) do
  local cur = redis.call('HMGET', base .. 'job:' .. id, 'state', 'payload', 'att', 'last_error', 'rid')
  if cur[1] ~= 'dead' then
    redis.call('ZREM', hooks, id)
  else
    redis.call('ZADD', hooks, now + claim, id)
    out[#out + 1] = id
    out[#out + 1] = cur[2] or ''
    out[#out + 1] = cur[3] or '0'
    out[#out + 1] = cur[4] or ''
    out[#out + 1] = cur[5] or ''
  end
end
return out
