-- Ack the tasks still pending for this consumer, count their chunks done, and trim what the
-- group has acked.
-- KEYS[1] task stream, KEYS[2] counters hash
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] maxlen, ARGV[4] job context (JSON, see job_state),
-- ARGV[5..] entry ids in stream order
-- Returns the ids that were not pending for this consumer (another owns them now).
--
-- One XPENDING over the ids' range, not one per id. Past maxlen, the stream is trimmed below
-- the oldest pending entry, or, with nothing pending, below the last id acked here: it was
-- pending on this server, so every entry before it was delivered here and none is pending.
-- Not below an id that was not pending here: after a failover the promoted replica may never
-- have seen that delivery, and the entries before it are still to be delivered.
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local first, last, count = ARGV[5], ARGV[#ARGV], #ARGV - 4
jobs_open(ARGV[4])
local pending = {}
for _, row in ipairs(redis.call('XPENDING', stream, group, first, last, count + 100, consumer)) do
  pending[row[1]] = true
end
local mine, lost = {}, {}
for i = 5, #ARGV do
  if pending[ARGV[i]] then table.insert(mine, ARGV[i]) else table.insert(lost, ARGV[i]) end
end
if #mine > 0 then
  for _, id in ipairs(mine) do
    local job, chunk = entry_job(stream, id)
    job_move(job, chunk, id, 'done', nil, false)
  end
  redis.call('XACK', stream, group, unpack(mine))
  redis.call('HINCRBY', KEYS[2], 'acked', #mine)
end
if redis.call('XLEN', stream) > tonumber(ARGV[3]) then
  local safe = redis.call('XPENDING', stream, group)[2] or mine[#mine]
  if safe then redis.call('XTRIM', stream, 'MINID', '~', safe) end
end
return lost
