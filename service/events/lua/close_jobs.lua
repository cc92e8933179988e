-- Close the jobs whose every queued task has settled, and record how long each took.
-- KEYS[1] open jobs' queued counts, KEYS[2] their settled counts, KEYS[3] when each was first
-- queued (ms), KEYS[4] the job-duration histogram hash
-- ARGV[1] now (ms), ARGV[2] n, ARGV[3..2+n] bucket upper bounds in seconds (as the hash's
-- field names), then the job ids to look at
-- Returns how many jobs closed. A job is closed once: its fields go in the same script.
local now, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local closed = 0
for i = 3 + n, #ARGV do
  local job = ARGV[i]
  local queued = tonumber(redis.call('HGET', KEYS[1], job) or '0')
  local settled = tonumber(redis.call('HGET', KEYS[2], job) or '0')
  local first = tonumber(redis.call('HGET', KEYS[3], job) or '')
  if queued > 0 and settled >= queued and first then
    local seconds = math.max(0, now - first) / 1000
    local bucket = '+Inf'
    for b = 3, 2 + n do
      if seconds <= tonumber(ARGV[b]) then bucket = ARGV[b]; break end
    end
    redis.call('HINCRBY', KEYS[4], bucket, 1)
    redis.call('HINCRBY', KEYS[4], 'count', 1)
    redis.call('HINCRBYFLOAT', KEYS[4], 'sum', seconds)
    redis.call('HDEL', KEYS[1], job)
    redis.call('HDEL', KEYS[2], job)
    redis.call('HDEL', KEYS[3], job)
    closed = closed + 1
  end
end
return closed
