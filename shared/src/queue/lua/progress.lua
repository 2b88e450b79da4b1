-- Record a running job's progress. Loaded after job.lua.
-- KEYS = the queue's keys (`K`). ARGV[1] = job id, ARGV[2] = the attempt's token, ARGV[3] =
-- progress JSON. Only the attempt holding the job's current token writes it. Returns 1 when
-- written, 0 otherwise.
local j = job_get(ARGV[1])
if j and j[F_TOK] == tonumber(ARGV[2]) then
  j[F_PROGRESS] = ARGV[3]
  job_put(ARGV[1], j)
  return 1
end
return 0
