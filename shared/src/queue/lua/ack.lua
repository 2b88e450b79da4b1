-- Record the outcome of a batch of attempts (bounded: at most 500 per call). Loaded after
-- history.lua and open.lua: a job that completes or goes dead is no longer open.
-- KEYS[1] = queue base. ARGV[1] = max kept errors per job, ARGV[2] = count, ARGV[3] = 1 when
--   the job kind has an on-dead hook (a job that goes dead is then queued in `dead_hooks`), then
--   6 fields each: id, token, outcome ('ok' | 'retry' | 'dead'), retry delay ms, error text (for
--   'ok': why there is no result, '' = none), result json ('' = none)
-- An outcome whose token is not the job's current token, or whose job is no longer active (or
-- already had an outcome earlier in the batch), is from a stale attempt (its lease expired and
-- the job moved on): it changes nothing.
-- A failure whose job cannot record it (its `errors` field is unreadable) poisons that job alone:
-- it goes dead with the reason, and the rest of the batch lands.
-- Everything is read and checked before anything is written, so an error writes nothing.
-- Returns { codes, then the reason of each poisoned outcome }: codes has one letter per outcome,
-- in order: 'a' applied, 's' stale, 'p' poisoned (dead).
-- Every unpack below is bounded: the acker sends at most 500 outcomes per call.
local base = KEYS[1]
local keep, n, hooked = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local codes, reply, seen = {}, { '' }, {}
-- what phase 2 writes, in flat lists (no table per outcome: this runs for every job)
local ok_jk, ok_result, ok_err = {}, {}, {}
local failed = {}
local finished, done, retried, dead = {}, {}, {}, {}
local closed = {} -- project id -> jobs of it that completed or went dead
local moves, unindexed = {}, {}
-- 1. Read and decide.
for i = 0, n - 1 do
  local o = 4 + i * 6
  local id, tok, outcome = ARGV[o], ARGV[o + 1], ARGV[o + 2]
  local delay, err, result = tonumber(ARGV[o + 3]), ARGV[o + 4], ARGV[o + 5]
  local jk = base .. 'job:' .. id
  local cur = redis.call('HMGET', jk, 'tok', 'state', 'project', 'created')
  if cur[1] ~= tok or cur[2] ~= 'active' or seen[id] then
    codes[i + 1] = 's'
  else
    seen[id] = true
    finished[#finished + 1] = id
    codes[i + 1] = 'a'
    local project = cur[3]
    if outcome == 'ok' then
      local k = #ok_jk + 1
      ok_jk[k], ok_result[k], ok_err[k] = jk, result, err
      done[#done + 1] = now
      done[#done + 1] = id
      if project then closed[project] = (closed[project] or 0) - 1 end
      move(moves, project, 'active', 'completed')
      index_job(unindexed, project, cur[4], id)
    else
      local more = redis.call('HMGET', jk, 'att', 'errors', 'worker')
      local entry = { attempt = tonumber(more[1]) or 0, error = err, at = now, worker = more[3] or '' }
      local encoded, poison = record_failure(more[2], entry, keep)
      if poison then
        outcome, err = 'dead', poison
        codes[i + 1] = 'p'
        reply[#reply + 1] = poison
      end
      if outcome == 'retry' then
        local due = now + delay
        failed[#failed + 1] = { jk, 'state', 'retrying', 'run_at', due, 'errors', encoded, 'last_error', err }
        retried[#retried + 1] = due
        retried[#retried + 1] = id
        move(moves, project, 'active', 'retrying')
      else
        failed[#failed + 1] = { jk, 'state', 'dead', 'finished', now, 'errors', encoded, 'last_error', err }
        dead[#dead + 1] = now
        dead[#dead + 1] = id
        if project then closed[project] = (closed[project] or 0) - 1 end
        move(moves, project, 'active', 'dead')
        index_job(unindexed, project, cur[4], id)
      end
    end
  end
end
-- 2. Write.
for k = 1, #ok_jk do
  local jk, r, e = ok_jk[k], ok_result[k], ok_err[k]
  if e == '' and r ~= '' then
    redis.call('HSET', jk, 'state', 'completed', 'finished', now, 'result', r)
  elseif r ~= '' then
    redis.call('HSET', jk, 'state', 'completed', 'finished', now, 'result', r, 'last_error', e)
  elseif e ~= '' then
    redis.call('HSET', jk, 'state', 'completed', 'finished', now, 'last_error', e)
  else
    redis.call('HSET', jk, 'state', 'completed', 'finished', now)
  end
end
for _, f in ipairs(failed) do redis.call('HSET', unpack(f)) end
if #finished > 0 then redis.call('ZREM', base .. 'active', unpack(finished)) end
for set, scored in pairs({ completed = done, retry = retried, dead = dead }) do
  if #scored > 0 then
    redis.call('ZADD', base .. set, unpack(scored))
    redis.call('HINCRBY', base .. 'stats', set == 'retry' and 'retried' or set, #scored / 2)
    count_minute(base, now, set == 'retry' and 'retried' or set, #scored / 2)
  end
end
-- the archiver copies finished jobs to Postgres (`archive.rs`)
if #done > 0 then redis.call('ZADD', base .. 'archive', unpack(done)) end
if #dead > 0 then redis.call('ZADD', base .. 'archive', unpack(dead)) end
count_open_all(base, closed)
apply_moves(base, moves)
apply_index(base, unindexed, false)
if hooked and #dead > 0 then redis.call('ZADD', base .. 'dead_hooks', unpack(dead)) end
-- idle workers re-fetch, learn the retry's due time and sleep exactly until then
if #retried > 0 then redis.call(WAKE, base .. 'wake', 0) end
reply[1] = table.concat(codes)
return reply
