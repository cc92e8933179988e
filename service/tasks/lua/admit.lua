-- Admit tasks of one job, and announce each, if the worker group's backlog has room for all
-- of them: all are added, or none. Their job's state is created or counted in the same call.
-- KEYS[1] task stream, KEYS[2] events stream, KEYS[3] idempotency record (unused without a key)
-- ARGV[1] worker group, ARGV[2] cap, ARGV[3] events maxlen, ARGV[4] job context (JSON, see
-- job_state), ARGV[5] mode: 'task' (POST /tasks: a job of unknown total, made by its first
-- task) or 'job' (POST /jobs: a new job, all its chunks at once), ARGV[6] job id, ARGV[7] job
-- metadata (JSON), ARGV[8] idempotency request hash ('' for none), ARGV[9] its ttl in s,
-- ARGV[10] k tasks, then per task: chunk id, n and the ingestion.queued event's field-value
-- items (its data field without message_id, which is added here once the id exists), m and
-- the task's items.
-- Returns {1, events cursor, job id, entry ids...}, {0, backlog}, {2, why refused: 'exists' | 'whole'
-- | 'cancelled'}, or an idempotent {3, record} / {4}.
--
-- The cursor is the events stream's last id before this job's events: a reader from it misses
-- none of them. XLEN bounds the backlog from above, so the group is looked at only near the
-- cap. There, what the group has acked is trimmed first (below its oldest pending entry, or
-- below the last one delivered when none is pending): the ack script trims only past maxlen,
-- so a stream held at exactly the cap would otherwise never shrink. The backlog is then
-- pending plus unread. A group that has been delivered the newest entry has read everything,
-- whatever Redis's lag says: after a failover the promoted replica's lag can be off by the
-- stream's whole history (redis/redis#12898, fixed in 7.2.4). A lag Redis cannot tell (nil)
-- counts as the whole stream: refuse rather than guess low.
local stream, group, cap = KEYS[1], ARGV[1], tonumber(ARGV[2])
local mode, job, hash = ARGV[5], ARGV[6], ARGV[8]
local k = tonumber(ARGV[10])
jobs_open(ARGV[4])

local replay = idem_check(KEYS[3], hash)
if replay then return replay end

local existing = redis.call('HMGET', job_key(job), 'known_total', 'state')
if mode == 'job' and existing[1] then return {2, 'exists'} end
if mode == 'task' and existing[1] == '1' then return {2, 'whole'} end
if existing[2] == 'cancelling' or existing[2] == 'cancelled' then return {2, 'cancelled'} end

local function group_row(name)
  if redis.call('EXISTS', stream) == 0 then return nil end
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local row = {}
    for i = 1, #info, 2 do row[info[i]] = info[i + 1] end
    if row['name'] == name then return row end
  end
  return nil
end

local length = redis.call('XLEN', stream)
if length + k > cap then
  local backlog = length
  local row = group_row(group)
  if row then
    local pending = redis.call('XPENDING', stream, group)
    local safe = pending[2] or row['last-delivered-id']
    redis.call('XTRIM', stream, 'MINID', safe)
    length = redis.call('XLEN', stream)
    local newest = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
    local unread = length
    if newest == nil or newest[1] == row['last-delivered-id'] then
      unread = 0
    elseif row['lag'] then
      unread = math.min(row['lag'], length)
    end
    backlog = math.min(pending[1] + unread, length)
  end
  if backlog + k > cap then return {0, backlog} end
end

local last_event = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
local reply = {1, last_event and last_event[1] or '0-0', job}
local created = not existing[1]
if created then job_create(job, mode == 'job' and 1 or 0, ARGV[7]) end
local i = 11
for t = 1, k do
  local chunk, n = ARGV[i], tonumber(ARGV[i + 1])
  local m = tonumber(ARGV[i + 2 + n])
  local id = redis.call('XADD', stream, '*', unpack(ARGV, i + 3 + n, i + 2 + n + m))
  if created and t == 1 then
    -- A new job keeps its first task's traceparent: its job.completed belongs to that trace.
    for f = i + 3 + n, i + 2 + n + m, 2 do
      if ARGV[f] == 'traceparent' then redis.call('HSET', job_key(job), 'traceparent', ARGV[f + 1]) end
    end
  end
  local event = {unpack(ARGV, i + 2, i + 1 + n)}
  for e = 1, #event, 2 do
    if event[e] == 'data' then
      local rest = string.sub(event[e + 1], 2)
      if rest ~= '}' then rest = ',' .. rest end
      event[e + 1] = '{"message_id":"' .. id .. '"' .. rest
    end
  end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(event))
  job_admit_chunk(job, chunk, id)
  table.insert(reply, id)
  i = i + 3 + n + m
end
job_changed(job)
idem_record(KEYS[3], hash, ARGV[9], reply)
return reply
