-- Moves a queue from the layout before `p:{q}:jobs` (one hash per job, `<base>job:<id>`, every
-- value text; waiting jobs of every priority in the sorted set `ready`; the open index's members
-- as text) to records. Loaded after job.lua and open.lua. Two modes (ARGV[1]):
-- * 'records': ARGV[2..] = job ids; KEYS = the queue's keys (`K`), then `<base>job:<id>` of each
--   id, in the same order. A job with an old hash and no record gets its record, and its open
--   index member (text) is indexed anew (`open.lua`); its old hash is deleted. A job that has both
--   (a relay pushed it again, as a new job, before the move) keeps its record, and the old
--   layout's sets lose it wherever the record does not say it is (it would otherwise run twice,
--   or be trimmed while it waits). Returns the jobs given records.
-- * 'line': moves up to 500 waiting jobs of priority 0 from `ready` (scores from 1000 * 2^40 up
--   to 1001 * 2^40, which only the old layout gave: priority 0 now waits in the list) to the
--   front of `wait`,
--   highest score first, so that repeated calls leave them at the front in their old order.
--   Returns the entries taken from `ready` (0: none left).
local mode = ARGV[1]
if mode == 'line' then
  local ids = rcall('ZREVRANGEBYSCORE', K.ready, '(1100611139403776', PRI0, 'LIMIT', 0, 500)
  for _, id in ipairs(ids) do
    rcall('ZREM', K.ready, id)
    local j = job_get(id)
    if j and j[F_STATE] == 'waiting' then rcall('LPUSH', K.wait, line_entry(id)) end
  end
  return #ids
end
local NUMERIC = { att = true, max = true, pri = true, rs = true, tok = true, created = true,
  run_at = true, started = true, finished = true }
-- the sorted set a record's state puts its job in (waiting of priority 0: none, the list)
local function set_of(j)
  local s = j[F_STATE]
  if s == 'waiting' then return (tonumber(j[F_PRI]) or 0) ~= 0 and 'ready' or nil end
  local sets = { delayed = 'delayed', active = 'active', retrying = 'retry', completed = 'completed',
    dead = 'dead', cancelled = 'cancelled' }
  return sets[s]
end
local moved, indexed = 0, {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local old = KEYS[NQK + i - 1]
  if rcall('EXISTS', old) == 1 then
    local current = job_get(id)
    if not current then
      local flat = rcall('HGETALL', old)
      local j = job_new()
      for k = 1, #flat, 2 do
        local name, v = flat[k], flat[k + 1]
        if NUMERIC[name] then v = tonumber(v) or v end
        if FIELD_INDEX[name] and v ~= '' then j[FIELD_INDEX[name]] = v end
      end
      job_put(id, j)
      moved = moved + 1
      local created = tonumber(j[F_CREATED])
      if j[F_PROJECT] and created then
        local text = j[F_PROJECT] .. '|' .. string.format('%013d', created) .. '|' .. id
        if rcall('ZREM', K.open_index, text) == 1 then index_job(indexed, j[F_PROJECT], created, id) end
      end
    else
      local keep = set_of(current)
      for _, set in ipairs({ 'ready', 'delayed', 'retry', 'active', 'completed', 'dead', 'cancelled' }) do
        if set ~= keep then rcall('ZREM', K[set], id) end
      end
    end
    rcall('DEL', old)
  end
end
apply_index(indexed, true)
return moved
