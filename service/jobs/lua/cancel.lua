-- Cancel a job: mark it cancelling, take back what no worker holds, finish it if nothing runs.
-- KEYS[1] task stream, KEYS[2] delayed set, KEYS[3] delayed tasks hash, KEYS[4] counters hash
-- ARGV[1] worker group, ARGV[2] job context (JSON, see job_state), ARGV[3] job id
-- Returns {'missing'}, {'finished', state} for a job that is done or failed, or {'ok', state}.
--
-- A chunk waiting for its retry leaves the delayed set; a queued task no worker was given
-- (after the group's last-delivered id) is deleted from the stream. Both count as cancelled
-- here. A task already delivered is acked as cancelled by its worker (begin.lua), and a
-- running one when its handler stops (ack_cancelled.lua).
jobs_open(ARGV[2])
local job = ARGV[3]
if redis.call('EXISTS', job_key(job)) == 0 then return {'missing'} end
local state = redis.call('HGET', job_key(job), 'state')
if state == 'done' or state == 'failed' then return {'finished', state} end
if state == 'cancelled' then return {'ok', state} end
redis.call('HSET', job_key(job), 'state', 'cancelling')
redis.call('SADD', JOBS.cancelling, job)
local delivered = '0-0'
if redis.call('EXISTS', KEYS[1]) == 1 then
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local row = {}
    for i = 1, #info, 2 do row[info[i]] = info[i + 1] end
    if row['name'] == ARGV[1] then delivered = row['last-delivered-id'] end
  end
end
local chunks = redis.call('HGETALL', chunks_key(job))
local taken = 0
for i = 1, #chunks, 2 do
  local rec = cjson.decode(chunks[i + 1])
  local take = false
  if rec.state == 'retrying' then
    redis.call('ZREM', KEYS[2], rec.entry_id)
    redis.call('HDEL', KEYS[3], rec.entry_id)
    take = true
  elseif rec.state == 'queued' and id_after(rec.entry_id, delivered) then
    redis.call('XDEL', KEYS[1], rec.entry_id)
    take = true
  end
  if take then
    chunk_set(job, chunks[i], rec, 'cancelled')
    taken = taken + 1
  end
end
if taken > 0 then redis.call('HINCRBY', KEYS[4], 'cancelled', taken) end
job_changed(job)
return {'ok', redis.call('HGET', job_key(job), 'state')}
