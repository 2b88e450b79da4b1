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
-- another's). Both are fixed keys of the queue (one for the counts, three for the index),
-- shared by every project:
-- * `p:{q}:project_states`, a hash: `<project>|<state>` -> jobs of the project in that open
--   state (waiting, delayed, active, retrying), and `<project>|completed`, `|dead`,
--   `|cancelled` -> jobs of it that ever finished so (totals, never decremented). Scripts add up
--   their moves per batch first (`move`), then write each changed field once (`apply_moves`),
--   so a batch of one project's jobs costs one HINCRBY per state it touched.
-- * the open index: a project's open jobs in the order of their keys, `<created ms, 6 bytes
--   big-endian><job id, 16 bytes>` (22 bytes), mostly in pages of about PAGE_CAP keys each.
--   `p:{q}:open_pages` is a hash: a page's name `<project, 16 bytes><lower bound, a key>` ->
--   its keys, concatenated in ascending order (one string: no per-key overhead in Redis);
--   `p:{q}:open_dir` is a sorted set of the page names, all score 0, so the page holding a key
--   is the last name at or below `<project><key>` (one ZREVRANGEBYLEX), and a project's open
--   jobs newest first are its pages read from the last (`tenant.rs`). A page holds exactly the
--   keys from its lower bound up to the next page's: a key goes into the page whose range holds
--   it, a key after every other key of the project (a new job) at the end of the last page, or
--   of a new page once the last holds PAGE_CAP; a page grown past twice that (keys arriving out
--   of order) is split; an emptied page is deleted. About 26 bytes a job, where a sorted-set
--   member per job costs 136 (Redis's skiplist and dict entries around a 38-byte member).
--   Reading and rewriting a page costs a few microseconds, too much for a call of one job: a
--   call opening fewer than BUFFER_BELOW jobs (a single enqueue, a dead job retried) adds them
--   to `p:{q}:open_index`, a sorted set of members `<project><key>` (38 bytes), all score 0,
--   which every maintenance pass empties into pages (`compact_index`), as it does the members
--   an earlier Comet left there (that set was the whole index before pages). A closing job is
--   removed from whichever holds it.
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

local PAGE_CAP = 64
local BUFFER_BELOW = 8
local KEY_LEN = 22

-- One job opening (`add`) or closing, queued into `members` (the project's 16 bytes, then the
-- job's key) when it has a project and UUID ids. `pbin` and `ibin`: the project's and the job's
-- 16 bytes when the caller sent them ('' else).
local function index_job(members, project, created, id, pbin, ibin)
  if not (pbin and #pbin == 16) then pbin = uuid_bytes(project) end
  if not (ibin and #ibin == 16) then ibin = uuid_bytes(id) end
  if not (pbin and ibin) then return end
  members[#members + 1] = pbin
  members[#members + 1] = struct.pack('>I6', tonumber(created) or 0) .. ibin
end

-- The page functions, made on a script call's first use of them (`pages()`): closures cost
-- Lua time at every call that creates them, and most calls (a single enqueue, a heartbeat) need
-- none.
local PAGES
local function pages()
  if PAGES then return PAGES end
  -- Whether key `a` sorts before key `b`, byte by byte as Redis compares (Lua's `<` follows the
  -- server's locale): as five big-endian numbers, the creation time's 6 bytes then the id's 16 in
  -- fours (one C call each, where a loop over the bytes cost microseconds).
  local function before(a, b)
    if a == b then return false end
    -- (not a key: a corrupt page must not fail the call)
    if #a ~= KEY_LEN or #b ~= KEY_LEN then return #a < #b end
    local a1, a2, a3, a4, a5 = struct.unpack('>I6I4I4I4I4', a)
    local b1, b2, b3, b4, b5 = struct.unpack('>I6I4I4I4I4', b)
    if a1 ~= b1 then return a1 < b1 end
    if a2 ~= b2 then return a2 < b2 end
    if a3 ~= b3 then return a3 < b3 end
    if a4 ~= b4 then return a4 < b4 end
    return a5 < b5
  end

  -- The keys of a page's string, one by one: the `i`-th (from 0).
  local function key_at(s, i)
    return string.sub(s, i * KEY_LEN + 1, (i + 1) * KEY_LEN)
  end

  -- Where `key` goes in page string `s` (sorted): the number of keys before it.
  local function rank(s, key)
    local lo, hi = 0, #s / KEY_LEN
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if before(key, key_at(s, mid)) then hi = mid else lo = mid + 1 end
    end
    return lo
  end

  -- The position (from 1) of `key` in page string `s`, or nil: one plain `string.find` (no
  -- string made), a match across two keys skipped.
  local function find_key(s, key)
    local at = string.find(s, key, 1, true)
    while at and (at - 1) % KEY_LEN ~= 0 do at = string.find(s, key, at + 1, true) end
    return at
  end

  -- The pages one call touches: name -> { name, s = its keys, o = as read }, read once and written
  -- back by `flush_pages` (the directory, `open_dir`, is written at once, so that the lookups of
  -- the same call see a page it made).
  local function page_of(pages, name)
    local p = pages[name]
    if not p then
      local s = rcall('HGET', K.open_pages, name) or ''
      p = { name = name, s = s, o = s }
      pages[name] = p
    end
    return p
  end

  -- A new page of project `pbin` holding `key`, its lower bound.
  local function new_page(pages, pbin, key)
    local p = { name = pbin .. key, s = key, o = '' }
    pages[p.name] = p
    rcall('ZADD', K.open_dir, 0, p.name)
    return p
  end

  -- Page `p` renamed to `name` (its range extended down to a lower bound).
  local function rename_page(pages, p, name)
    pages[p.name] = nil
    rcall('ZREM', K.open_dir, p.name)
    rcall('HDEL', K.open_pages, p.name)
    rcall('ZADD', K.open_dir, 0, name)
    p.name, p.o = name, ''
    pages[name] = p
  end

  -- The name of the page of project `pbin` whose range holds `key`, or nil (before every page).
  local function floor_page(pbin, key)
    local found = rcall('ZREVRANGEBYLEX', K.open_dir, '[' .. pbin .. key, '[' .. pbin, 'LIMIT', 0, 1)
    return found[1]
  end

  -- `key` into page `p` in its place (unless it is there).
  local function insert_key(p, key)
    if find_key(p.s, key) then return end
    local r = rank(p.s, key)
    p.s = string.sub(p.s, 1, r * KEY_LEN) .. key .. string.sub(p.s, r * KEY_LEN + 1)
  end

  -- Writes back the changed pages of `pages`: an empty one is deleted, one past twice PAGE_CAP
  -- split into pages of PAGE_CAP (each named by its first key).
  local function flush_pages(pages)
    for name, p in pairs(pages) do
      local n = #p.s / KEY_LEN
      if n == 0 then
        rcall('HDEL', K.open_pages, name)
        rcall('ZREM', K.open_dir, name)
      elseif n > 2 * PAGE_CAP then
        local pbin = string.sub(name, 1, 16)
        for first = 0, n - 1, PAGE_CAP do
          local piece = first == 0 and name or pbin .. key_at(p.s, first)
          rcall('HSET', K.open_pages, piece, string.sub(p.s, first * KEY_LEN + 1, (first + PAGE_CAP) * KEY_LEN))
          if first > 0 then rcall('ZADD', K.open_dir, 0, piece) end
        end
      elseif p.s ~= p.o then
        rcall('HSET', K.open_pages, name, p.s)
      end
    end
  end

  -- Adds the jobs queued in `members` (by `index_job`) to the index.
  local function index_add(members)
    local pages, tails = {}, {}
    for i = 1, #members, 2 do
      local pbin, key = members[i], members[i + 1]
      -- the project's last page, looked up once per call
      local tail = tails[pbin]
      if tail == nil then
        local name = floor_page(pbin, '\255')
        tail = name and page_of(pages, name) or false
        tails[pbin] = tail
      end
      if not tail then
        tails[pbin] = new_page(pages, pbin, key)
      elseif not before(key, string.sub(tail.name, 17)) then
        local n = #tail.s / KEY_LEN
        if n == 0 or before(key_at(tail.s, n - 1), key) then
          -- after every key of the project: a new job (the usual case)
          if n < PAGE_CAP then
            tail.s = tail.s .. key
          else
            tails[pbin] = new_page(pages, pbin, key)
          end
        else
          insert_key(tail, key)
        end
      else
        -- before the last page (keys out of order within a batch; a dead job retried keeps its
        -- creation time)
        local name = floor_page(pbin, key)
        if name then
          insert_key(page_of(pages, name), key)
        else
          -- before every page of the project: the first one's range is extended down to it
          local first = rcall('ZRANGEBYLEX', K.open_dir, '[' .. pbin, '[' .. pbin .. '\255', 'LIMIT', 0, 1)[1]
          local p = page_of(pages, first)
          rename_page(pages, p, pbin .. key)
          p.s = key .. p.s
        end
      end
    end
    flush_pages(pages)
  end

  -- Removes the jobs queued in `members` (by `index_job`) from the index: those still in
  -- `open_index` from it, the others from their pages. Each is looked for in the pages already
  -- read (a batch's jobs are mostly of a few pages), else in the page whose range holds it; a page
  -- is rewritten once, without the keys found in it.
  local function index_remove(members)
    local full = {}
    -- (nearly always empty where jobs are enqueued in batches)
    if rcall('EXISTS', K.open_index) == 1 then
      for i = 1, #members, 2 do full[#full + 1] = members[i] .. members[i + 1] end
    end
    local buffered, gone = {}, {}
    for i = 1, #full, 500 do
      local scores = rcall('ZMSCORE', K.open_index, unpack(full, i, math.min(i + 499, #full)))
      for k, score in ipairs(scores) do
        if score then
          buffered[#buffered + 1] = full[i + k - 1]
          gone[i + k - 1] = true
        end
      end
    end
    call_chunked('ZREM', K.open_index, buffered)
    -- the pages read, and those of each project
    local pages, found, read = {}, {}, {}
    for i = 1, #members, 2 do
      local pbin, key = members[i], members[i + 1]
      local at, page
      if not gone[(i + 1) / 2] then
        local mine = read[pbin]
        if mine then
          for m = 1, #mine do
            at = find_key(mine[m].s, key)
            if at then
              page = mine[m]
              break
            end
          end
        end
        if not at then
          local name = floor_page(pbin, key)
          if name and not pages[name] then
            read[pbin] = read[pbin] or {}
            table.insert(read[pbin], page_of(pages, name))
          end
          page = name and pages[name]
          at = page and find_key(page.s, key)
        end
      end
      if at then
        local f = found[page]
        if not f then
          f = {}
          found[page] = f
        end
        f[#f + 1] = at
      end
    end
    for p, at in pairs(found) do
      -- the kept runs between the keys found, in order
      table.sort(at)
      local kept, from = {}, 1
      for _, a in ipairs(at) do
        if a >= from then
          kept[#kept + 1] = string.sub(p.s, from, a - 1)
          from = a + KEY_LEN
        end
      end
      kept[#kept + 1] = string.sub(p.s, from)
      p.s = table.concat(kept)
    end
    flush_pages(pages)
  end
  PAGES = { add = index_add, remove = index_remove }
  return PAGES
end

-- Adds (`add`) or removes the jobs queued in `members` to or from the index: a call of fewer
-- than BUFFER_BELOW jobs adds them to `open_index`, a larger one into pages.
local function apply_index(members, add)
  if #members == 0 then return end
  if not add then return pages().remove(members) end
  if #members / 2 >= BUFFER_BELOW then return pages().add(members) end
  local args = {}
  for i = 1, #members, 2 do
    args[#args + 1] = 0
    args[#args + 1] = members[i] .. members[i + 1]
  end
  rcall('ZADD', K.open_index, unpack(args))
end

-- Moves up to `limit` members of `open_index` into pages (in their order: by project, then
-- key); returns how many it took. A member that is not `<project><key>` is dropped.
local function compact_index(limit)
  local taken = rcall('ZRANGE', K.open_index, 0, limit - 1)
  if #taken == 0 then return 0 end
  local members = {}
  for _, m in ipairs(taken) do
    if #m == 16 + KEY_LEN then
      members[#members + 1] = string.sub(m, 1, 16)
      members[#members + 1] = string.sub(m, 17)
    end
  end
  call_chunked('ZREM', K.open_index, taken)
  if #members > 0 then pages().add(members) end
  return #taken
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
