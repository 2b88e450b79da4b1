-- Claim dead jobs whose on-dead hook is due (bounded: at most ARGV[1] per call).
-- KEYS = the queue's keys (`K`). ARGV[1] = limit, ARGV[2] = claim ms: a claimed entry is due
--   again after it, so a hook whose process died runs again elsewhere (at least once).
-- An entry whose job is gone (trimmed) or no longer dead (retried by an operator) is dropped.
-- Returns a flat array: id, payload, attempts, last error, request id, per claimed job.
local limit, claim = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
-- (as maintain.lua: nothing until the queue's jobs are records)
if rcall('GET', K.layout) ~= 'records' then return {} end
local due = rcall('ZRANGEBYSCORE', K.dead_hooks, '-inf', now, 'LIMIT', 0, limit)
local out = {}
for _, id in ipairs(due) do
  local j = job_get(id)
  if not j or j[F_STATE] ~= 'dead' then
    rcall('ZREM', K.dead_hooks, id)
  else
    rcall('ZADD', K.dead_hooks, now + claim, id)
    out[#out + 1] = id
    out[#out + 1] = j[F_PAYLOAD] or ''
    out[#out + 1] = tostring(j[F_ATT] or 0)
    out[#out + 1] = j[F_LAST_ERROR] or ''
    out[#out + 1] = j[F_RID] or ''
  end
end
return out
