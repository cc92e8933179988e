-- Copy a dead letter back onto the task stream and delete it; its chunk counts as queued
-- again, and a finished job is open again.
-- KEYS[1] dead-letter stream, KEYS[2] task stream
-- ARGV[1] dead letter's entry id, ARGV[2] the dead-letter field prefix (left out),
-- ARGV[3] the retry-count field name (set to 0), ARGV[4] job context (JSON, see job_state)
-- Returns the new entry id, or false when there is no such dead letter.
jobs_open(ARGV[4])
local entry = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #entry == 0 then return false end
local fields = entry[1][2]
local prefix = ARGV[2]
local out = {}
local job, chunk, original
for i = 1, #fields, 2 do
  local name = fields[i]
  if name == prefix .. 'original_id' then original = fields[i + 1] end
  if string.sub(name, 1, #prefix) ~= prefix then
    local value = fields[i + 1]
    if name == ARGV[3] then value = '0' end
    if name == 'job_id' then job = value elseif name == 'chunk_id' then chunk = value end
    table.insert(out, name)
    table.insert(out, value)
  end
end
if #out == 0 then return false end
local id = redis.call('XADD', KEYS[2], '*', unpack(out))
redis.call('XDEL', KEYS[1], ARGV[1])
if original then job_requeued(job, chunk, original, id, 'failed') end
return id
