-- Prelude: a job's state, kept by the queue's own scripts, so that every move of a task and
-- the move of its job's counters are one atomic call.
-- A job is a hash at <prefix>job:<id>: total, known_total ('1' for POST /jobs), the counts
-- queued, running, retrying, done, failed and cancelled, state ('', 'cancelling', or final:
-- 'done', 'failed', 'cancelled'), created_at, created_ms, finished_at, meta. Its chunks are a
-- hash at <prefix>chunks:<id>, chunk id -> JSON {state, attempts, entry_id, seq, error}.
-- A chunk changes state only here, so each count is the number of chunks in that state, and
-- a settled chunk (done, failed, cancelled) never moves again, except a requeued dead letter.
-- jobs_open(context JSON) first: prefix, index, cancelling, events, maxlen, ttl_s, now_ms,
-- now_iso, event_id.
local JOBS = nil
local JOB_FINAL = {done = true, failed = true, cancelled = true}
local CHUNK_SETTLED = {done = true, failed = true, cancelled = true}
local jobs_emitted = 0

local function jobs_open(encoded) JOBS = cjson.decode(encoded) end
local function job_key(job) return JOBS.prefix .. 'job:' .. job end
local function chunks_key(job) return JOBS.prefix .. 'chunks:' .. job end

local function job_counts(job)
  local v = redis.call('HMGET', job_key(job), 'total', 'queued', 'running', 'retrying', 'done',
    'failed', 'cancelled', 'state', 'known_total')
  return {
    total = tonumber(v[1]) or 0, queued = tonumber(v[2]) or 0, running = tonumber(v[3]) or 0,
    retrying = tonumber(v[4]) or 0, done = tonumber(v[5]) or 0, failed = tonumber(v[6]) or 0,
    cancelled = tonumber(v[7]) or 0, state = v[8] or '', known = v[9] == '1'
  }
end

-- The job and chunk ids in a task entry's fields, as XREADGROUP or XRANGE gives them.
local function fields_job(f)
  local job, chunk
  for i = 1, #f, 2 do
    if f[i] == 'job_id' then job = f[i + 1] elseif f[i] == 'chunk_id' then chunk = f[i + 1] end
  end
  return job, chunk
end

-- The job and chunk ids of a task entry still in the stream.
local function entry_job(stream, id)
  local found = redis.call('XRANGE', stream, id, id)
  if #found == 0 then return nil, nil end
  return fields_job(found[1][2])
end

-- The job and chunk ids a worker names for an entry it holds ('' for unknown: then read from
-- the stream). Naming them spares an XRANGE per task, whose reply, turned into Lua, cost
-- more than the rest of a begin or an ack; a wrong name cannot move another chunk, since
-- job_move checks that the chunk's current entry is this one.
local function named_job(stream, id, job, chunk)
  if job == '' then return entry_job(stream, id) end
  return job, chunk
end

local function job_emit(job, event_type, c)
  jobs_emitted = jobs_emitted + 1
  local data = cjson.encode({total = c.total, done = c.done, failed = c.failed,
    cancelled = c.cancelled})
  -- The job's trace (the traceparent it was submitted with), so job.completed ends it.
  local traceparent = redis.call('HGET', job_key(job), 'traceparent')
  local metadata = traceparent and cjson.encode({traceparent = traceparent}) or '{}'
  redis.call('XADD', JOBS.events, 'MAXLEN', '~', JOBS.maxlen, '*',
    'event_id', JOBS.event_id .. '-' .. jobs_emitted, 'type', event_type,
    'timestamp', JOBS.now_iso, 'job_id', job, 'data', data, 'metadata', metadata)
end

local function job_finish(job, c, state, event_type)
  redis.call('HSET', job_key(job), 'state', state, 'finished_at', JOBS.now_iso)
  redis.call('SREM', JOBS.cancelling, job)
  redis.call('EXPIRE', job_key(job), JOBS.ttl_s)
  redis.call('EXPIRE', chunks_key(job), JOBS.ttl_s)
  job_emit(job, event_type, c)
end

-- After any change: finish the job once it has settled. A job of unknown total (POST /tasks)
-- never finishes by itself; it is kept ttl_s after its last change instead.
local function job_changed(job)
  local c = job_counts(job)
  if JOB_FINAL[c.state] then return end
  local open = c.queued + c.running + c.retrying
  if c.state == 'cancelling' then
    if open == 0 then job_finish(job, c, 'cancelled', 'job.cancelled') end
  elseif c.known then
    if open == 0 and c.done + c.failed + c.cancelled >= c.total then
      job_finish(job, c, c.failed > 0 and 'failed' or 'done', 'job.completed')
    end
  else
    redis.call('EXPIRE', job_key(job), JOBS.ttl_s)
    redis.call('EXPIRE', chunks_key(job), JOBS.ttl_s)
  end
end

local function chunk_record(job, chunk)
  if not job or not chunk then return nil end
  local raw = redis.call('HGET', chunks_key(job), chunk)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function chunk_set(job, chunk, rec, to)
  if rec.state ~= to then
    redis.call('HINCRBY', job_key(job), rec.state, -1)
    redis.call('HINCRBY', job_key(job), to, 1)
    rec.state = to
  end
  redis.call('HSET', chunks_key(job), chunk, cjson.encode(rec))
end

-- Move a chunk, held by task entry `entry`, to state `to`; false (and nothing changes) when
-- the job or chunk is unknown, the entry is not the chunk's current one, or it has settled.
-- `started` counts an attempt; `err` is kept as the chunk's last error.
local function job_move(job, chunk, entry, to, err, started)
  local rec = chunk_record(job, chunk)
  if not rec or rec.entry_id ~= entry or CHUNK_SETTLED[rec.state] then return false end
  if started then rec.attempts = (rec.attempts or 0) + 1 end
  if err then rec.error = err end
  chunk_set(job, chunk, rec, to)
  job_changed(job)
  return true
end

-- A job made by the first chunk enqueued for it (known = 0) or by POST /jobs (known = 1).
local function job_create(job, known, meta)
  redis.call('HSET', job_key(job), 'total', 0, 'known_total', known, 'queued', 0, 'running', 0,
    'retrying', 0, 'done', 0, 'failed', 0, 'cancelled', 0, 'state', '',
    'created_at', JOBS.now_iso, 'created_ms', JOBS.now_ms, 'meta', meta)
  redis.call('ZADD', JOBS.index, JOBS.now_ms, job)
end

-- A chunk enqueued as task entry `entry`: a new chunk, or one enqueued again (POST /tasks).
local function job_admit_chunk(job, chunk, entry)
  local rec = chunk_record(job, chunk)
  if not rec then
    local seq = redis.call('HINCRBY', job_key(job), 'total', 1)
    rec = {state = 'queued', attempts = 0, seq = seq}
    redis.call('HINCRBY', job_key(job), 'queued', 1)
  end
  rec.entry_id = entry
  chunk_set(job, chunk, rec, 'queued')
end

-- A finished job that gets work again (a requeued dead letter) is open again.
local function job_reopen(job)
  local state = redis.call('HGET', job_key(job), 'state')
  if state == 'done' or state == 'failed' then
    redis.call('HSET', job_key(job), 'state', '')
    redis.call('HDEL', job_key(job), 'finished_at')
    redis.call('PERSIST', job_key(job))
    redis.call('PERSIST', chunks_key(job))
  end
end

-- A chunk's task added to the stream again as `new_entry`, from the state `from` (a due
-- retry, or a requeued dead letter); false when `old_entry` is not the chunk's current one.
local function job_requeued(job, chunk, old_entry, new_entry, from)
  local rec = chunk_record(job, chunk)
  if not rec or rec.entry_id ~= old_entry or rec.state ~= from then return false end
  rec.entry_id = new_entry
  if from == 'failed' then job_reopen(job) end
  chunk_set(job, chunk, rec, 'queued')
  job_changed(job)
  return true
end

-- Begin a task just delivered to `consumer`, of chunk `chunk` of `job` (nil for none): one of a
-- cancelled job is acked as cancelled (true: no handler may be given it); any other counts
-- running, one attempt more (false).
local function job_begin(stream, group, consumer, counters, id, job, chunk)
  local state = job and redis.call('HGET', job_key(job), 'state')
  if state == 'cancelling' or state == 'cancelled' then
    if #redis.call('XPENDING', stream, group, id, id, 1, consumer) == 1 then
      redis.call('XACK', stream, group, id)
      redis.call('HINCRBY', counters, 'cancelled', 1)
      job_move(job, chunk, id, 'cancelled', nil, false)
      return true
    end
  elseif job then
    job_move(job, chunk, id, 'running', nil, true)
  end
  return false
end

-- Whether stream id a is after b.
local function id_after(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  a_ms, b_ms = tonumber(a_ms), tonumber(b_ms)
  if a_ms ~= b_ms then return a_ms > b_ms end
  return tonumber(a_seq) > tonumber(b_seq)
end
