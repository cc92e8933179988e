-- Copy a dead letter back onto the task stream and delete it; its chunk counts as queued
-- again, and a finished job is open again.
-- KEYS[1] dead-letter stream, KEYS[2] task stream
-- ARGV[1] dead letter's entry id, ARGV[2] the dead-letter field prefix (left out),
-- ARGV[3] the retry-count field name (set to 0), ARGV[4] job context (JSON, see job_state)
-- Returns the new entry id, or false when there is no such dead letter.
--
-- The requeued task starts afresh: no failed attempts, no busy deferrals (busy_count is left
-- out), and `timestamp` is now, by the Redis server's clock, since the cap on busy retries
-- (lease_max_ms) is measured from it. Kept, a dead letter requeued an hour after it was
-- first queued would go straight back to the dead letters on its first 429.

-- ISO 8601 UTC, as Python's datetime.isoformat() writes it with microseconds.
local function iso_now()
  local time = redis.call('TIME')
  local seconds, micros = tonumber(time[1]), tonumber(time[2])
  -- Days since 1970-01-01 to a civil date (Howard Hinnant's civil_from_days).
  local z = math.floor(seconds / 86400) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  local of_day = seconds % 86400
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%06d+00:00', year, month, day,
    math.floor(of_day / 3600), math.floor(of_day % 3600 / 60), of_day % 60, micros)
end

jobs_open(ARGV[4])
local entry = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #entry == 0 then return false end
local fields = entry[1][2]
local prefix = ARGV[2]
local out = {}
local job, chunk, original, stamped
local now = iso_now()
for i = 1, #fields, 2 do
  local name = fields[i]
  if name == prefix .. 'original_id' then original = fields[i + 1] end
  if string.sub(name, 1, #prefix) ~= prefix and name ~= 'busy_count' then
    local value = fields[i + 1]
    if name == ARGV[3] then value = '0' end
    if name == 'timestamp' then value, stamped = now, true end
    if name == 'job_id' then job = value elseif name == 'chunk_id' then chunk = value end
    table.insert(out, name)
    table.insert(out, value)
  end
end
if #out == 0 then return false end
if not stamped then
  table.insert(out, 'timestamp')
  table.insert(out, now)
end
local id = redis.call('XADD', KEYS[2], '*', unpack(out))
redis.call('XDEL', KEYS[1], ARGV[1])
if original then job_requeued(job, chunk, original, id, 'failed') end
return id
