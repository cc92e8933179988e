-- Move a group's cursor forward to an id a client of its application has been sent.
-- KEYS[1] the events stream
-- ARGV[1] group, ARGV[2] id, ARGV[3] the most entries to count in one call (per range)
-- Returns 1 when moved with its lag known, 2 when moved with its lag unknown, 0 when the group
-- is already there or past it (or does not exist).
--
-- The group is read by no XREADGROUP: its cursor says how far the application's clients have
-- got, so its lag is the events none of them has been sent. ENTRIESREAD keeps that lag known.
-- Redis cannot count the entries in a range without reading them, so the work is bounded by
-- counting at most ARGV[3] entries in each of two ranges:
--   1. after the id: entries-read = entries-added - those after it (exact whatever came before);
--   2. else from the group's current cursor to the id: entries-read = the group's own
--      entries-read + those between (exact while nothing after the current cursor was trimmed).
-- When both are longer (the application's newest client is far behind the head and jumped far
-- since the last move, a replay say), the cursor moves without ENTRIESREAD and Redis reports
-- the lag as unknown, until a later move is within ARGV[3] entries of either end.
local stream, group, id = KEYS[1], ARGV[1], ARGV[2]
local limit = tonumber(ARGV[3])
local function parts(entry_id)
  local ms, seq = string.match(entry_id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function before(a_ms, a_seq, b_ms, b_seq)
  return a_ms < b_ms or (a_ms == b_ms and a_seq < b_seq)
end
if redis.call('EXISTS', stream) == 0 then return 0 end
local current, current_read = nil, nil
for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local row = {}
  for i = 1, #info, 2 do row[info[i]] = info[i + 1] end
  if row['name'] == group then
    current, current_read = row['last-delivered-id'], row['entries-read']
  end
end
if current == nil then return 0 end
local new_ms, new_seq = parts(id)
local old_ms, old_seq = parts(current)
if new_ms == nil or old_ms == nil then return 0 end
if not before(old_ms, old_seq, new_ms, new_seq) then return 0 end

local after = #redis.call('XRANGE', stream, '(' .. id, '+', 'COUNT', limit)
if after < limit then
  local added = 0
  local info = redis.call('XINFO', 'STREAM', stream)
  for i = 1, #info, 2 do if info[i] == 'entries-added' then added = info[i + 1] end end
  redis.call('XGROUP', 'SETID', stream, group, id, 'ENTRIESREAD', math.max(0, added - after))
  return 1
end
-- entries-read is nil when Redis itself cannot tell (a move of ours without ENTRIESREAD).
if type(current_read) == 'number' then
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
  local first_ms, first_seq = parts(first[1])
  -- Trimming removes the oldest entries: if the first is at or before the cursor, every
  -- entry after the cursor is still there to be counted.
  if not before(old_ms, old_seq, first_ms, first_seq) then
    local between = #redis.call('XRANGE', stream, '(' .. current, id, 'COUNT', limit)
    if between < limit then
      redis.call('XGROUP', 'SETID', stream, group, id, 'ENTRIESREAD', current_read + between)
      return 1
    end
  end
end
redis.call('XGROUP', 'SETID', stream, group, id)
return 2
