-- Per-minute counters of a queue: prepended to the scripts that create or finish jobs (enqueue,
-- fetch, ack, maintain) when they are loaded. `p:{q}:minute:<m>` (m: the minute since the Unix
-- epoch, by Redis's clock) is a hash of `enqueued`, `completed`, `retried` and `dead`; it
-- expires two hours after its last write, so the last hour is always whole (`series.rs`).

-- Adds `n` to `field` of the minute of `now_ms` in the queue at `base`.
local function count_minute(base, now_ms, field, n)
  if n <= 0 then return end
  local key = base .. 'minute:' .. math.floor(now_ms / 60000)
  redis.call('HINCRBY', key, field, n)
  redis.call('EXPIRE', key, 7200)
end
