-- Forget archive marks the archiver has copied to Postgres: each id leaves `archive` only if its
-- mark still has the score the archiver read (a job that changed state again since, e.g. a dead
-- job retried and dead again, keeps its newer mark and is copied again).
-- KEYS[1] = queue base. ARGV = id, score pairs (at most 1000 pairs). Returns the marks removed.
local set = KEYS[1] .. 'archive'
local removed = 0
for i = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', set, ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    removed = removed + redis.call('ZREM', set, ARGV[i])
  end
end
return removed
