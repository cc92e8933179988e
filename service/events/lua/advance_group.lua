-- Move a group's cursor forward to an id a client of its application has been sent.
-- KEYS[1] the events stream
-- ARGV[1] group, ARGV[2] id, ARGV[3] the most entries to count after the id
-- Returns 1 when moved, 0 when the group is already there or past it (or does not exist).
--
-- The group is read by no XREADGROUP: its cursor says how far the application's clients have
-- got, so its lag is the events none of them has been sent. ENTRIESREAD keeps that lag
-- known: the entries added so far, less those after the id (counted up to ARGV[3]; past
-- that, Redis is left to say it cannot tell).
local stream, group, id = KEYS[1], ARGV[1], ARGV[2]
local function parts(entry_id)
  local ms, seq = string.match(entry_id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
if redis.call('EXISTS', stream) == 0 then return 0 end
local current = nil
for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local row = {}
  for i = 1, #info, 2 do row[info[i]] = info[i + 1] end
  if row['name'] == group then current = row['last-delivered-id'] end
end
if current == nil then return 0 end
local new_ms, new_seq = parts(id)
local old_ms, old_seq = parts(current)
if new_ms == nil or old_ms == nil then return 0 end
if new_ms < old_ms or (new_ms == old_ms and new_seq <= old_seq) then return 0 end
local limit = tonumber(ARGV[3])
local after = #redis.call('XRANGE', stream, '(' .. id, '+', 'COUNT', limit)
if after < limit then
  local info = redis.call('XINFO', 'STREAM', stream)
  local added = 0
  for i = 1, #info, 2 do if info[i] == 'entries-added' then added = info[i + 1] end end
  redis.call('XGROUP', 'SETID', stream, group, id, 'ENTRIESREAD', math.max(0, added - after))
else
  redis.call('XGROUP', 'SETID', stream, group, id)
end
return 1
