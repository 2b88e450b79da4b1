-- Job records: prepended to every queue script when it is loaded (a Redis script cannot include
-- another). A job is one field of `p:{q}:jobs` (the job id -> its record), not a key of its
-- own, so every script declares every key it touches in KEYS (the queue's fixed keys, `K`
-- below; enqueue adds its idempotency keys) and a queue costs one key however many jobs it
-- holds. A record is a MessagePack array of the fields of `FIELDS` (generated from
-- `record::JOB_FIELDS` in Rust, which decodes the same array), by position: no field names
-- repeated per job, `false` for an absent field, trailing absent fields left out. Numbers are
-- numbers (MessagePack integers), text is text.
-- `job_get` gives a record as a table of named fields; a record that does not decode reads as a
-- table without fields, and a field that is neither text nor a number as absent (written by hand:
-- the scripts then see a corrupt job, never a value that would make them fail).

-- The record of job `id` as a table of named fields, or nil when there is no such job.
local function job_get(id)
  local raw = rcall('HGET', K.jobs, id)
  if not raw then return nil end
  local j = {}
  local ok, arr = pcall(cmsgpack.unpack, raw)
  if ok and type(arr) == 'table' then
    for i, name in ipairs(FIELDS) do
      local v = arr[i]
      local t = type(v)
      if t == 'string' or t == 'number' then j[name] = v end
    end
  end
  return j
end

-- Writes record `j` (a table of named fields; nil or '' fields are left out) for job `id`.
local function job_put(id, j)
  local arr, last = {}, 0
  for i, name in ipairs(FIELDS) do
    local v = j[name]
    if v == nil or v == '' then
      arr[i] = false
    else
      arr[i] = v
      last = i
    end
  end
  for i = last + 1, #FIELDS do arr[i] = nil end
  rcall('HSET', K.jobs, id, cmsgpack.pack(arr))
end

-- Redis's clock in milliseconds.
local function now_ms()
  local t = rcall('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The line of waiting jobs: jobs of priority 0 (nearly all) wait in the list `K.wait`, FIFO, an
-- entry of a few dozen bytes; the others in the sorted set `K.ready`, scored
-- (1000 - priority) * 2^40 + seq, so higher priorities first and FIFO within one. A fetch takes
-- the jobs of priority above 0 first, then the list, then those below 0 (`take_ready`).
local PRI0 = '1099511627776000' -- 1000 * 2^40: the score of priority 0, sequence 0

-- Puts job `id` (record `j`) in line: at the back of its priority's line, or, for priority 0
-- with `front`, at the front of the list (a job that was already in line and goes back).
local function put_ready(id, j, front)
  if (tonumber(j.pri) or 0) == 0 then
    rcall(front and 'LPUSH' or 'RPUSH', K.wait, id)
  else
    rcall('ZADD', K.ready, j.rs, id)
  end
end

-- Takes job `id` (record `j`, waiting) out of line; 1 if it was in it.
local function remove_ready(id, j)
  if (tonumber(j.pri) or 0) == 0 then return rcall('LREM', K.wait, 1, id) end
  return rcall('ZREM', K.ready, id)
end

-- Takes up to `n` jobs from the front of the line; returns their ids in order.
local function take_ready(n)
  local ids = rcall('ZRANGEBYSCORE', K.ready, '-inf', '(' .. PRI0, 'LIMIT', 0, n)
  if #ids > 0 then rcall('ZREM', K.ready, unpack(ids)) end
  if #ids < n then
    local listed = rcall('LPOP', K.wait, n - #ids)
    if listed then
      for _, id in ipairs(listed) do ids[#ids + 1] = id end
    end
  end
  if #ids < n then
    local low = rcall('ZPOPMIN', K.ready, n - #ids)
    for i = 1, #low, 2 do ids[#ids + 1] = low[i] end
  end
  return ids
end
