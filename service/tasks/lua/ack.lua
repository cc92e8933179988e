-- Ack the tasks still pending for this consumer, count their chunks done, and trim what the
-- group has acked.
-- KEYS[1] task stream, KEYS[2] counters hash
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] maxlen, ARGV[4] job context (JSON, see job_state),
-- ARGV[5..] triples in stream order: entry id, its job id and chunk id ('' and '': read from
-- the entry)
-- Returns the ids that were not pending for this consumer (another owns them now).
--
-- One XPENDING over the ids' range, not one per id. Past maxlen, the stream is trimmed below
-- the oldest pending entry, or, with nothing pending, below the last id acked here: it was
-- pending on this server, so every entry before it was delivered here and none is pending.
-- Not below an id that was not pending here: after a failover the promoted replica may never
-- have seen that delivery, and the entries before it are still to be delivered.
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local first, last, count = ARGV[5], ARGV[#ARGV - 2], (#ARGV - 4) / 3
jobs_open(ARGV[4])
local pending = {}
for _, row in ipairs(redis.call('XPENDING', stream, group, first, last, count + 100, consumer)) do
  pending[row[1]] = true
end
local acked, lost = {}, {}
for i = 5, #ARGV, 3 do
  local id = ARGV[i]
  if pending[id] then
    local job, chunk = named_job(stream, id, ARGV[i + 1], ARGV[i + 2])
    job_move(job, chunk, id, 'done', nil, false)
    table.insert(acked, id)
  else
    table.insert(lost, id)
  end
end
if #acked > 0 then
  redis.call('XACK', stream, group, unpack(acked))
  redis.call('HINCRBY', KEYS[2], 'acked', #acked)
end
if redis.call('XLEN', stream) > tonumber(ARGV[3]) then
  local safe = redis.call('XPENDING', stream, group)[2] or acked[#acked]
  if safe then redis.call('XTRIM', stream, 'MINID', '~', safe) end
end
return lost
