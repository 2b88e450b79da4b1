-- Record the outcome of a batch of attempts (bounded: at most 500 per call).
-- KEYS[1] = queue base. ARGV[1] = max kept errors per job, ARGV[2] = count, ARGV[3] = 1 when
--   the job kind has an on-dead hook (a job that goes dead is then queued in `dead_hooks`), then
--   6 fields each: id, token, outcome ('ok' | 'retry' | 'dead'), retry delay ms, error text,
--   result json
-- An outcome whose token is not the job's current token, or whose job is no longer active, is
-- from a stale attempt (its lease expired and the job moved on): it changes nothing.
-- Returns { applied, stale }.
-- Every unpack below is bounded: the acker sends at most 500 outcomes per call.
local base = KEYS[1]
local keep, n, hooked = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local applied, stale, retried = 0, 0, 0
local done, finished = {}, {}
for i = 0, n - 1 do
  local o = 4 + i * 6
  local id, tok, outcome = ARGV[o], ARGV[o + 1], ARGV[o + 2]
  local delay, err, result = tonumber(ARGV[o + 3]), ARGV[o + 4], ARGV[o + 5]
  local jk = base .. 'job:' .. id
  local cur = redis.call('HMGET', jk, 'tok', 'state')
  if cur[1] ~= tok or cur[2] ~= 'active' then
    stale = stale + 1
  else
    applied = applied + 1
    finished[#finished + 1] = id
    if outcome == 'ok' then
      redis.call('HSET', jk, 'state', 'completed', 'finished', now, 'result', result)
      done[#done + 1] = now
      done[#done + 1] = id
    else
      local more = redis.call('HMGET', jk, 'att', 'errors', 'worker')
      cur[3], cur[4], cur[5] = more[1], more[2], more[3]
      local errs = {}
      if cur[4] then errs = cjson.decode(cur[4]) end
      errs[#errs + 1] = { attempt = tonumber(cur[3]), error = err, at = now, worker = cur[5] or '' }
      while #errs > keep do table.remove(errs, 1) end
      local encoded = cjson.encode(errs)
      if outcome == 'retry' then
        redis.call('HSET', jk, 'state', 'retrying', 'run_at', now + delay, 'errors', encoded,
          'last_error', err)
        redis.call('ZADD', base .. 'retry', now + delay, id)
        redis.call('HINCRBY', base .. 'stats', 'retried', 1)
        retried = retried + 1
      else
        redis.call('HSET', jk, 'state', 'dead', 'finished', now, 'errors', encoded, 'last_error', err)
        redis.call('ZADD', base .. 'dead', now, id)
        redis.call('HINCRBY', base .. 'stats', 'dead', 1)
        if hooked then redis.call('ZADD', base .. 'dead_hooks', now, id) end
      end
    end
  end
end
if #finished > 0 then redis.call('ZREM', base .. 'active', unpack(finished)) end
if #done > 0 then
  redis.call('ZADD', base .. 'completed', unpack(done))
  redis.call('HINCRBY', base .. 'stats', 'completed', #done / 2)
end
-- idle workers re-fetch, learn the retry's due time and sleep exactly until then
if retried > 0 then redis.call('PUBLISH', base .. 'wake', 0) end
return { applied, stale }
