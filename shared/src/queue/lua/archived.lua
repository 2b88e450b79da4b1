-- Forget archive marks the archiver has copied to Postgres: each id leaves `archive` only if its
-- mark still has the score the archiver read (a job that changed state again since, e.g. a dead
-- job retried and dead again, keeps its newer mark and is copied again).
-- KEYS = the queue's keys (`K`). ARGV = id, score pairs (at most 1000 pairs). Returns the marks
-- removed.
local removed = 0
for i = 1, #ARGV, 2 do
  local score = rcall('ZSCORE', K.archive, ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    removed = removed + rcall('ZREM', K.archive, ARGV[i])
  end
end
return removed
