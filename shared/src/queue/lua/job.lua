-- Job records: prepended to every queue script when it is loaded (a Redis script cannot include
-- another). A job is one field of `p:{q}:jobs` (the job id -> its record), not a key of its
-- own, so every script declares every key it touches in KEYS (the queue's fixed keys, `K`
-- below; enqueue adds its idempotency keys) and a queue costs one key however many jobs it
-- holds. A record is a MessagePack array of the job's fields by position, in the order of
-- `record::JOB_FIELDS` in Rust (which decodes the same array): the prelude gives each position
-- a name, `F_<FIELD>` (`F_STATE`, `F_ATT`, ...), and their number `NF`. No field names are
-- stored per job; an absent field is `false` (false, like nil, fails a test), trailing absent
-- fields are left out; numbers are MessagePack integers, text is text. The scripts read and
-- write the array itself (`j[F_STATE]`): a table of named fields cost a microsecond per job
-- more, in Lua, on Redis's one core.
-- A record that does not decode reads as a record without fields (the scripts treat it as
-- corrupt). Records are written only by these scripts (and `migrate.lua`), so a field always
-- holds text, a number or false.

-- Record `raw` as read from `jobs` (an array, see above). Every position up to NF holds a
-- value (false for an absent field), so the scripts set fields without leaving holes (a table
-- with holes would be packed as a map): they clear one with false, never nil.
local function job_decode(raw)
  local ok, j = pcall(cmsgpack.unpack, raw)
  -- (not MessagePack, or not an array: a record without fields)
  if not (ok and type(j) == 'table') or (j[1] == nil and next(j) ~= nil) then j = {} end
  for i = #j + 1, NF do j[i] = false end
  return j
end

-- The record of job `id`, or nil when there is no such job.
local function job_get(id)
  local raw = rcall('HGET', K.jobs, id)
  if not raw then return nil end
  return job_decode(raw)
end

-- The records of jobs `ids` (at most 1000) in one HMGET: by position, false for a job that
-- does not exist. The batch scripts read this way (a call per job cost Redis about half a
-- microsecond a job more).
local function jobs_get(ids)
  local out = {}
  if #ids == 0 then return out end
  local raws = rcall('HMGET', K.jobs, unpack(ids))
  for i = 1, #ids do out[i] = raws[i] and job_decode(raws[i]) or false end
  return out
end

-- A new record: every field absent.
local function job_new()
  local j = {}
  for i = 1, NF do j[i] = false end
  return j
end

-- Record `j` (every position up to NF set) packed; trailing absent fields are left out.
local function job_pack(j)
  local n = NF
  while n > 0 and not j[n] do
    j[n] = nil
    n = n - 1
  end
  return cmsgpack.pack(j)
end

-- Writes record `j` for job `id`.
local function job_put(id, j)
  rcall('HSET', K.jobs, id, job_pack(j))
end

-- Writes the records `js` of jobs `ids` (by position, at most 1000) in one HSET.
local function jobs_put(ids, js)
  if #ids == 0 then return end
  local args = {}
  for i = 1, #ids do
    args[#args + 1] = ids[i]
    args[#args + 1] = job_pack(js[i])
  end
  rcall('HSET', K.jobs, unpack(args))
end

-- Runs `cmd` on `key` with the arguments `items`, in calls of at most 500 (an `unpack` of more
-- could pass Lua's stack limit).
local function call_chunked(cmd, key, items)
  for i = 1, #items, 500 do rcall(cmd, key, unpack(items, i, math.min(i + 499, #items))) end
end

-- Redis's clock in milliseconds.
local function now_ms()
  local t = rcall('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The 16 bytes of UUID text `s`; nil for anything else. The callers that know a job's (or its
-- project's) bytes pass them (enqueue and ack: Rust has them). Four numbers packed, under a
-- microsecond (a table from hex pairs to bytes, built per call, cost 48).
local function uuid_bytes(s)
  if type(s) ~= 'string' or #s ~= 36 then return nil end
  local hex = string.gsub(s, '-', '')
  if #hex ~= 32 or string.find(hex, '[^0-9a-f]') then return nil end
  return struct.pack('>I4I4I4I4', tonumber(string.sub(hex, 1, 8), 16), tonumber(string.sub(hex, 9, 16), 16),
    tonumber(string.sub(hex, 17, 24), 16), tonumber(string.sub(hex, 25, 32), 16))
end

-- A job's entry in the list `K.wait`: its id as 16 bytes (`bin` when the caller has them), or
-- as text when it is not a UUID.
local function line_entry(id, bin)
  if bin and #bin == 16 then return bin end
  return uuid_bytes(id) or id
end

-- The job id of list entry `e`: 16 bytes as UUID text; an entry of text (written before the
-- list held bytes, or not a UUID) as it is.
local function line_id(e)
  if #e ~= 16 then return e end
  return string.format('%08x-%04x-%04x-%04x-%04x%08x', struct.unpack('>I4I2I2I2I2I4', e))
end

-- The line of waiting jobs: jobs of priority 0 (nearly all) wait in the list `K.wait`, FIFO, an
-- entry of 18 bytes (the id's 16, `line_entry`); the others in the sorted set `K.ready`, scored
-- (1000 - priority) * 2^40 + seq, so higher priorities first and FIFO within one. A fetch takes
-- the jobs of priority above 0 first, then the list, then those below 0 (`take_ready`).
local PRI0 = '1099511627776000' -- 1000 * 2^40: the score of priority 0, sequence 0

-- Whether job `j` can go into line: priority 0 (the list), or another priority with its score
-- (`rs`, stored only for those).
local function lineable(j)
  return (tonumber(j[F_PRI]) or 0) == 0 or tonumber(j[F_RS]) ~= nil
end

-- Puts job `id` (record `j`, `lineable`) in line: another priority than 0 in its place by its
-- score; priority 0 at the back of the list, or with `front` (a job that was already in line and
-- goes back) into `front`, a list of ids the caller puts at the front with `put_front`.
local function put_ready(id, j, front)
  if (tonumber(j[F_PRI]) or 0) ~= 0 then
    rcall('ZADD', K.ready, j[F_RS], id)
  elseif front then
    front[#front + 1] = id
  else
    rcall('RPUSH', K.wait, line_entry(id))
  end
end

-- Puts the ids of `front` at the front of the list, in their order.
local function put_front(front)
  for i = #front, 1, -1 do rcall('LPUSH', K.wait, line_entry(front[i])) end
end

-- Takes job `id` (record `j`, waiting) out of line; 1 if it was in it.
local function remove_ready(id, j)
  if (tonumber(j[F_PRI]) or 0) == 0 then
    local e = line_entry(id)
    local n = rcall('LREM', K.wait, 1, e)
    -- (an entry of text, from before the list held bytes)
    if n == 0 and e ~= id then n = rcall('LREM', K.wait, 1, id) end
    return n
  end
  return rcall('ZREM', K.ready, id)
end

-- Takes up to `n` jobs from the front of the line; returns their ids in order.
local function take_ready(n)
  local ids = rcall('ZRANGEBYSCORE', K.ready, '-inf', '(' .. PRI0, 'LIMIT', 0, n)
  if #ids > 0 then rcall('ZREM', K.ready, unpack(ids)) end
  if #ids < n then
    local listed = rcall('LPOP', K.wait, n - #ids)
    if listed then
      for _, e in ipairs(listed) do ids[#ids + 1] = line_id(e) end
    end
  end
  if #ids < n then
    local low = rcall('ZPOPMIN', K.ready, n - #ids)
    for i = 1, #low, 2 do ids[#ids + 1] = low[i] end
  end
  return ids
end
