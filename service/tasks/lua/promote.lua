-- Add the tasks whose retry is due back to the task stream; their chunks count as queued.
-- KEYS[1] delayed set, KEYS[2] delayed tasks hash, KEYS[3] task stream
-- ARGV[1] how many at most, ARGV[2] job context (JSON, see job_state)
-- Returns {moved, ms until the next one is due, or -1 when none waits}.
--
-- Due is judged by the Redis server's clock, one clock for every worker. A task already
-- accepted is never refused here: no backlog check, no MAXLEN.
jobs_open(ARGV[2])
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local encoded = redis.call('HGET', KEYS[2], member)
  if encoded then
    local items = cjson.decode(encoded)
    local new_id = redis.call('XADD', KEYS[3], '*', unpack(items))
    local job, chunk
    for i = 1, #items, 2 do
      if items[i] == 'job_id' then job = items[i + 1] end
      if items[i] == 'chunk_id' then chunk = items[i + 1] end
    end
    job_requeued(job, chunk, member, new_id, 'retrying')
  end
  redis.call('ZREM', KEYS[1], member)
  redis.call('HDEL', KEYS[2], member)
end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait_ms = -1
if next_due[2] then wait_ms = math.max(0, tonumber(next_due[2]) - now) end
return {#due, wait_ms}
