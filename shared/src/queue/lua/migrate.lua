-- Moves jobs kept in the layout before `p:{q}:jobs` (one hash per job, `<base>job:<id>`, every
-- value text) into records, and their entries of the open index from text members
-- (`<project>|<created ms, 13 digits>|<id>`) to binary ones, and waiting jobs of priority 0
-- from the sorted set `ready` to the list `wait`. Loaded after job.lua and open.lua.
-- KEYS = the queue's keys (`K`), then `<base>job:<id>` of each id of ARGV, in the same order.
-- A job that already has a record, or no old hash, is left alone. Returns the jobs moved.
local NUMERIC = { att = true, max = true, pri = true, rs = true, tok = true, created = true,
  run_at = true, started = true, finished = true }
local moved = 0
for i, id in ipairs(ARGV) do
  local old = KEYS[NQK + i]
  if rcall('HEXISTS', K.jobs, id) == 0 and rcall('EXISTS', old) == 1 then
    local flat = rcall('HGETALL', old)
    local j = job_new()
    for k = 1, #flat, 2 do
      local name, v = flat[k], flat[k + 1]
      if NUMERIC[name] then v = tonumber(v) or v end
      if FIELD_INDEX[name] and v ~= '' then j[FIELD_INDEX[name]] = v end
    end
    job_put(id, j)
    moved = moved + 1
    -- a waiting job of priority 0 joins the list, in the order the walk finds them (its
    -- sequence's)
    if j[F_STATE] == 'waiting' and (tonumber(j[F_PRI]) or 0) == 0 and rcall('ZREM', K.ready, id) == 1 then
      rcall('RPUSH', K.wait, id)
    end
    if j[F_PROJECT] and j[F_CREATED] then
      local text = j[F_PROJECT] .. '|' .. string.format('%013d', j[F_CREATED]) .. '|' .. id
      if rcall('ZREM', K.open_index, text) == 1 then
        local m = index_member(j[F_PROJECT], j[F_CREATED], id)
        if m then rcall('ZADD', K.open_index, 0, m) end
      end
    end
  end
  rcall('DEL', old)
end
return moved
