-- Hold a task this consumer owns until its retry is due, ack its delivery, count its chunk
-- retrying, add events.
-- KEYS[1] task stream, KEYS[2] delayed set, KEYS[3] delayed tasks hash, KEYS[4] counters,
-- KEYS[5] events stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] entry id, ARGV[4] counter name,
-- ARGV[5] events maxlen, ARGV[6] due time (ms since the epoch), ARGV[7] job context (JSON,
-- see job_state), ARGV[8] the error, ARGV[9] n, ARGV[10..9+n] the task's field-value items to
-- add again, then per event: m and its items.
-- Returns 0, and does nothing, when the task is no longer this consumer's.
--
-- The task waits in the sorted set, not pending under this consumer, so no reclaim takes it
-- early; promote.lua adds it back to the stream once it is due.
local stream, group, consumer, id = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
if #redis.call('XPENDING', stream, group, id, id, 1, consumer) == 0 then return 0 end
jobs_open(ARGV[7])
local job, chunk = entry_job(stream, id)
local n = tonumber(ARGV[9])
redis.call('HSET', KEYS[3], id, cjson.encode({unpack(ARGV, 10, 9 + n)}))
redis.call('ZADD', KEYS[2], ARGV[6], id)
redis.call('XACK', stream, group, id)
redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
job_move(job, chunk, id, 'retrying', ARGV[8], false)
local i = 10 + n
while i <= #ARGV do
  local m = tonumber(ARGV[i])
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], '*', unpack(ARGV, i + 1, i + m))
  i = i + 1 + m
end
return 1
