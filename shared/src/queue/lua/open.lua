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

-- Per project, per state, and a per-project index of open jobs: what a project's own view of
-- the queue reads (`projects.rs`: a tenant's admin sees their project's counts and jobs, never
-- another's). Both are one key each, shared by every project of the queue:
-- * `p:{q}:project_states`, a hash: `<project>|<state>` -> jobs of the project in that open
--   state (waiting, delayed, active, retrying), and `<project>|completed`, `|dead`,
--   `|cancelled` -> jobs of it that ever finished so (totals, never decremented). Scripts add up
--   their moves per batch first (`move`), then write each changed field once (`apply_moves`),
--   so a batch of one project's jobs costs one HINCRBY per state it touched.
-- * `p:{q}:open_index`, a sorted set of members `<project>|<created ms, 13 digits>|<job id>`,
--   all of score 0: a project's open jobs, newest first, are one ZREVRANGEBYLEX over its
--   prefix. Added when a job opens, removed when it closes (it needs the job's `created`).
-- Jobs without a project are in neither.

-- Records in `acc` one job of `project` moving from state `from` to state `to` (nil: none).
local function move(acc, project, from, to)
  if not project or project == '' then return end
  if from then
    local f = project .. '|' .. from
    acc[f] = (acc[f] or 0) - 1
  end
  if to then
    local f = project .. '|' .. to
    acc[f] = (acc[f] or 0) + 1
  end
end

-- Writes the moves `acc` holds; a gauge that reaches 0 is removed (and one a job open before
-- the index existed would take below 0 is removed too: it counts from 0 again).
local function apply_moves(base, acc)
  local key = base .. 'project_states'
  for field, delta in pairs(acc) do
    if delta ~= 0 then
      local n = redis.call('HINCRBY', key, field, delta)
      if n <= 0 then redis.call('HDEL', key, field) end
    end
  end
end

-- The index member of a job.
local function index_member(project, created, id)
  return project .. '|' .. string.format('%013d', tonumber(created) or 0) .. '|' .. id
end

-- Adds (`add`) or removes the members collected in `members` to or from the open index, in
-- calls of at most 500 members.
local function apply_index(base, members, add)
  local key = base .. 'open_index'
  local i = 1
  while i <= #members do
    local j = math.min(i + 499, #members)
    if add then
      local args = {}
      for k = i, j do
        args[#args + 1] = 0
        args[#args + 1] = members[k]
      end
      redis.call('ZADD', key, unpack(args))
    else
      redis.call('ZREM', key, unpack(members, i, j))
    end
    i = j + 1
  end
end

-- One job opening (`add`) or closing: queued into `members` when it has a project.
local function index_job(members, project, created, id)
  if project and project ~= '' then members[#members + 1] = index_member(project, created, id) end
end
