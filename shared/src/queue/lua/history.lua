-- Reading and extending a job's `errors` field: prepended to ack.lua and maintain.lua when they
-- are loaded (a Redis script cannot include another).
-- A job whose history is unreadable cannot record another failure. Rather than raise an error
-- (a Lua error does not undo the writes before it, and the same call would fail again on every
-- retry), the caller sends that job dead with a reason saying why, and the rest of its batch
-- lands.

-- The decoded list of {attempt, error, at, worker} ({} when the field is absent), or nil and
-- what is wrong with it.
local function history(raw)
  if not raw then return {} end
  local ok, v = pcall(cjson.decode, raw)
  if not ok then return nil, 'not JSON (' .. tostring(v) .. ')' end
  if type(v) ~= 'table' then return nil, 'not a JSON list' end
  local count = 0
  for _ in pairs(v) do count = count + 1 end
  if count ~= #v then return nil, 'not a JSON list' end
  for i, e in ipairs(v) do
    if type(e) ~= 'table' or type(e.attempt) ~= 'number' or type(e.at) ~= 'number'
        or type(e.error) ~= 'string' or type(e.worker) ~= 'string' then
      return nil, 'a list whose entry ' .. i .. ' is not {attempt, error, at, worker}'
    end
  end
  return v
end

-- The history `raw` with `entry` appended (the oldest dropped beyond `keep`), encoded; when
-- `raw` is unreadable, a new history holding only the reason, and that reason (the job must
-- then go dead).
local function record_failure(raw, entry, keep)
  local errs, why = history(raw)
  local poison
  if not errs then
    poison = 'corrupt job: its error history is ' .. why .. ', so it goes dead (the attempt ended with: '
      .. entry.error .. ')'
    errs = {}
    entry.error = poison
  end
  errs[#errs + 1] = entry
  while #errs > keep do table.remove(errs, 1) end
  return cjson.encode(errs), poison
end
