-- Take one call from the handler's token bucket, shared by every worker on every host.
-- KEYS[1] the bucket hash
-- ARGV[1] calls per second
-- Returns 0 when the call may go now, or the ms to wait before asking again.
--
-- The bucket holds at most one second's worth of calls (at least one), so a pause does not
-- save up a burst. The Redis server's clock is the one clock every worker shares.
local rate = tonumber(ARGV[1])
local capacity = math.max(rate, 1)
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + tonumber(now_parts[2]) / 1000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at_ms')
local tokens = tonumber(bucket[1]) or capacity
local at = tonumber(bucket[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate / 1000)
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait_ms = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at_ms', string.format('%.3f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * 1000 / rate) + 1000)
return wait_ms
