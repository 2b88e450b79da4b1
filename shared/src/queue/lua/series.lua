-- Per-minute counters of a queue: prepended to the scripts that create or finish jobs (enqueue,
-- fetch, ack, maintain) when they are loaded. `p:{q}:minutes` is a hash of `<m>:enqueued`,
-- `<m>:completed`, `<m>:retried` and `<m>:dead` (m: the minute since the Unix epoch, by Redis's
-- clock): one key per queue, so the scripts can declare it. Maintenance drops minutes older
-- than two hours (`prune_minutes`), and the hash expires two hours after its last write, so the
-- last hour is always whole (`series.rs`).

-- Adds `n` to `field` of the minute of `now_ms`.
local function count_minute(now_ms, field, n)
  if n <= 0 then return end
  rcall('HINCRBY', K.minutes, math.floor(now_ms / 60000) .. ':' .. field, n)
  rcall('EXPIRE', K.minutes, 7200)
end

-- Drops the counters of minutes more than two hours old, once the hash holds more than two
-- hours and a bit of them (a read of every field then, about every fifth minute of a busy queue).
local function prune_minutes(now_ms)
  if rcall('HLEN', K.minutes) <= 500 then return end
  local oldest = math.floor(now_ms / 60000) - 120
  local old = {}
  for _, f in ipairs(rcall('HKEYS', K.minutes)) do
    local m = tonumber(string.match(f, '^(%d+):'))
    if not m or m < oldest then old[#old + 1] = f end
  end
  call_chunked('HDEL', K.minutes, old)
end
