-- Ack a task this consumer owns whose handler was stopped by its job's cancellation.
-- KEYS[1] task stream, KEYS[2] counters hash
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] job context (JSON, see job_state), ARGV[4] entry
-- id, ARGV[5] why
-- Returns 0, and does nothing, when the task is no longer this consumer's.
local stream, group, consumer, id = KEYS[1], ARGV[1], ARGV[2], ARGV[4]
if #redis.call('XPENDING', stream, group, id, id, 1, consumer) == 0 then return 0 end
jobs_open(ARGV[3])
local job, chunk = entry_job(stream, id)
redis.call('XACK', stream, group, id)
redis.call('HINCRBY', KEYS[2], 'cancelled', 1)
job_move(job, chunk, id, 'cancelled', ARGV[5], false)
return 1
