-- Move a task this consumer owns to the dead-letter stream, ack it, count it and its chunk
-- failed, add events.
-- KEYS[1] task stream, KEYS[2] dead-letter stream, KEYS[3] counters hash, KEYS[4] events
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] entry id, ARGV[4] counter name,
-- ARGV[5] events maxlen, ARGV[6] job context (JSON, see job_state), ARGV[7] the reason,
-- ARGV[8] n, ARGV[9..8+n] the dead letter's field-value items, then per event: m and its
-- m items.
-- Returns 0, and does nothing, when the task is no longer this consumer's.
local stream, group, consumer, id = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
if #redis.call('XPENDING', stream, group, id, id, 1, consumer) == 0 then return 0 end
jobs_open(ARGV[6])
local job, chunk = entry_job(stream, id)
local n = tonumber(ARGV[8])
local letter = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 9, 8 + n))
redis.call('XACK', stream, group, id)
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
local i = 9 + n
while i <= #ARGV do
  local m = tonumber(ARGV[i])
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', unpack(ARGV, i + 1, i + m))
  i = i + 1 + m
end
-- After the task's own events, so that job.completed is the job's last word.
-- The chunk keeps its dead letter's id: an AG-UI run offers it as the interrupt to answer.
if job_move(job, chunk, id, 'failed', ARGV[7], false) then
  local rec = chunk_record(job, chunk)
  rec.dead_letter_id = letter
  redis.call('HSET', chunks_key(job), chunk, cjson.encode(rec))
end
return 1
