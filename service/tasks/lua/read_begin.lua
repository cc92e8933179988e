-- Read new tasks without blocking and begin them (job_begin in job_state.lua) in one call, so
-- a busy worker keeps to one round trip per batch.
-- KEYS[1] task stream, KEYS[2] counters hash
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] count, ARGV[4] job context (JSON, see job_state)
-- Returns {entries as XREADGROUP gives them for the stream (or an empty list), ids acked as
-- cancelled}.
jobs_open(ARGV[4])
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
  'STREAMS', KEYS[1], '>')
local entries = {}
if reply and reply[1] then entries = reply[1][2] end
local cancelled = {}
for _, entry in ipairs(entries) do
  local job, chunk = fields_job(entry[2])
  if job_begin(KEYS[1], ARGV[1], ARGV[2], KEYS[2], entry[1], job, chunk) then
    table.insert(cancelled, entry[1])
  end
end
return {entries, cancelled}
