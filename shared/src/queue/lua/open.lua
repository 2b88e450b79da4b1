-- Open jobs per project: prepended to every script that opens or closes a job (enqueue, fetch,
-- ack, maintain, cancel, retry_dead) when it is loaded (a Redis script cannot include another).
-- `p:{q}:open_by_project` is a sorted set: project id -> how many of the queue's jobs of that
-- project are open (waiting, delayed, active or retrying: not completed, dead or cancelled).
-- A sorted set rather than a hash, so the projects with the most open jobs are read in
-- O(log n) (the ops view and the metric). A job is counted when it is created (not an
-- idempotent duplicate, not a job id the queue already holds) and when a dead job is retried;
-- uncounted when it completes, goes dead (however: last attempt, permanent failure, lease
-- reaped, corrupt state) or is cancelled. Moves between open states (promote, fetch, retry
-- backoff, lease reaped with attempts left, release) change nothing. A project whose count
-- reaches 0 is removed, so the set only holds projects with open jobs. Jobs without a project
-- are not counted.

-- Adds `delta` to `project`'s open jobs in the queue at `base`.
local function count_open(base, project, delta)
  if not project or project == '' or delta == 0 then return end
  local key = base .. 'open_by_project'
  local n = tonumber(redis.call('ZINCRBY', key, delta, project))
  if n <= 0 then redis.call('ZREM', key, project) end
end

-- Applies a table of project id -> delta (the batch scripts add up their changes first).
local function count_open_all(base, deltas)
  for project, delta in pairs(deltas) do count_open(base, project, delta) end
end
