-- Begin a batch just read: a chunk of a cancelled job is acked as cancelled, never run; any
-- other is counted running, one attempt more.
-- KEYS[1] task stream, KEYS[2] counters hash
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] job context (JSON, see job_state), ARGV[4..] ids
-- Returns the ids acked as cancelled.
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
jobs_open(ARGV[3])
local cancelled = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local job, chunk = entry_job(stream, id)
  local state = job and redis.call('HGET', job_key(job), 'state')
  if state == 'cancelling' or state == 'cancelled' then
    if #redis.call('XPENDING', stream, group, id, id, 1, consumer) == 1 then
      redis.call('XACK', stream, group, id)
      redis.call('HINCRBY', KEYS[2], 'cancelled', 1)
      job_move(job, chunk, id, 'cancelled', nil, false)
      table.insert(cancelled, id)
    end
  elseif job then
    job_move(job, chunk, id, 'running', nil, true)
  end
end
return cancelled
