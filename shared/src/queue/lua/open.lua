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

-- Adds `delta` to `project`'s open jobs in the queue.
local function count_open(project, delta)
  if not project or project == '' or delta == 0 then return end
  local n = tonumber(rcall('ZINCRBY', K.open_by_project, delta, project))
  if n <= 0 then rcall('ZREM', K.open_by_project, project) end
end

-- Applies a table of project id -> delta (the batch scripts add up their changes first).
local function count_open_all(deltas)
  for project, delta in pairs(deltas) do count_open(project, delta) end
end

-- Per project, per state, and a per-project index of open jobs: what a project's own view of
-- the queue reads (`projects.rs`: a tenant's admin sees their project's counts and jobs, never
-- another's). Both are one key each, shared by every project of the queue:
-- * `p:{q}:project_states`, a hash: `<project>|<state>` -> jobs of the project in that open
--   state (waiting, delayed, active, retrying), and `<project>|completed`, `|dead`,
--   `|cancelled` -> jobs of it that ever finished so (totals, never decremented). Scripts add up
--   their moves per batch first (`move`), then write each changed field once (`apply_moves`),
--   so a batch of one project's jobs costs one HINCRBY per state it touched.
-- * `p:{q}:open_index`, a sorted set of members `<project><created ms><job id>` (binary, see
--   `index_member`), all of score 0: a project's open jobs, newest first, are one
--   ZREVRANGEBYLEX over its prefix. Added when a job opens, removed when it closes (it needs the job's `created`).
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
local function apply_moves(acc)
  for field, delta in pairs(acc) do
    if delta ~= 0 then
      local n = rcall('HINCRBY', K.project_states, field, delta)
      if n <= 0 then rcall('HDEL', K.project_states, field) end
    end
  end
end

-- The index member of a job: its project's 16 bytes, its creation time in milliseconds as 6
-- bytes (big-endian, so members sort by time within a project) and its own 16 bytes: 38 bytes,
-- where the ids as text took 87 (`tenant.rs` reads them back). The callers that know the two
-- ids' bytes pass them (enqueue and ack: Rust has them, and turning text into bytes costs Lua
-- about 3 µs a job); the others have them made here (`uuid_bytes`). nil for a project or job id
-- that is not a UUID (never indexed, so never removed either).
local HEX_BYTE
local function uuid_bytes(s)
  if type(s) ~= 'string' or #s ~= 36 then return nil end
  local hex = string.gsub(s, '-', '')
  if #hex ~= 32 or string.find(hex, '[^0-9a-f]') then return nil end
  if not HEX_BYTE then
    HEX_BYTE = {}
    for b = 0, 255 do HEX_BYTE[string.format('%02x', b)] = string.char(b) end
  end
  return (string.gsub(hex, '..', HEX_BYTE))
end
-- `pbin` and `ibin`: the project's and the job's 16 bytes when the caller sent them ('' else).
local function index_member(project, created, id, pbin, ibin)
  if not (pbin and #pbin == 16) then pbin = uuid_bytes(project) end
  if not (ibin and #ibin == 16) then ibin = uuid_bytes(id) end
  if not (pbin and ibin) then return nil end
  return pbin .. struct.pack('>I6', tonumber(created) or 0) .. ibin
end

-- Adds (`add`) or removes the members collected in `members` to or from the open index, in
-- calls of at most 500 members.
local function apply_index(members, add)
  local key = K.open_index
  local i = 1
  while i <= #members do
    local j = math.min(i + 499, #members)
    if add then
      local args = {}
      for k = i, j do
        args[#args + 1] = 0
        args[#args + 1] = members[k]
      end
      rcall('ZADD', key, unpack(args))
    else
      rcall('ZREM', key, unpack(members, i, j))
    end
    i = j + 1
  end
end

-- One job opening (`add`) or closing: queued into `members` when it has a project.
local function index_job(members, project, created, id, pbin, ibin)
  local m = index_member(project, created, id, pbin, ibin)
  if m then members[#members + 1] = m end
end

-- Moves up to `limit` due jobs of each of `delayed` and `retry` into line (priority 0 at the
-- back of the list; another priority in its place by its score), recording the state moves in
-- `moves`; returns how many moved.
local function promote_due(now, limit, moves)
  local promoted = 0
  for _, set in ipairs({ 'delayed', 'retry' }) do
    local due = rcall('ZRANGEBYSCORE', K[set], '-inf', now, 'LIMIT', 0, limit)
    for _, id in ipairs(due) do
      local j = job_get(id)
      rcall('ZREM', K[set], id)
      if j and lineable(j) then
        put_ready(id, j, false)
        j[F_STATE] = 'waiting'
        job_put(id, j)
        move(moves, j[F_PROJECT], set == 'retry' and 'retrying' or set, 'waiting')
        promoted = promoted + 1
      end
    end
  end
  return promoted
end
