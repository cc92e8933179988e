-- Admit one task, and announce it, if the worker group's backlog is under the cap.
-- KEYS[1] task stream, KEYS[2] events stream
-- ARGV[1] worker group, ARGV[2] cap, ARGV[3] events maxlen,
-- ARGV[4] n, ARGV[5..4+n] the ingestion.queued event's field-value items (its data field
-- without message_id, which is added here once the id exists), then the task's items.
-- Returns {1, entry id} or {0, backlog}.
--
-- XLEN bounds the backlog from above, so the group is looked at only near the cap. There,
-- what the group has acked is trimmed first (below its oldest pending entry, or below the
-- last one delivered when none is pending): the ack script trims only past maxlen, so a
-- stream held at exactly the cap would otherwise never shrink. The backlog is then pending
-- plus unread. A group that has been delivered the newest entry has read everything, whatever
-- Redis's lag says: after a failover the promoted replica's lag can be off by the stream's
-- whole history (redis/redis#12898, fixed in 7.2.4). A lag Redis cannot tell (nil) counts as
-- the whole stream: refuse rather than guess low.
local stream, group, cap = KEYS[1], ARGV[1], tonumber(ARGV[2])
local n = tonumber(ARGV[4])

local function group_row(name)
  if redis.call('EXISTS', stream) == 0 then return nil end
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local row = {}
    for i = 1, #info, 2 do row[info[i]] = info[i + 1] end
    if row['name'] == name then return row end
  end
  return nil
end

local length = redis.call('XLEN', stream)
if length >= cap then
  local backlog = length
  local row = group_row(group)
  if row then
    local pending = redis.call('XPENDING', stream, group)
    local safe = pending[2] or row['last-delivered-id']
    redis.call('XTRIM', stream, 'MINID', safe)
    length = redis.call('XLEN', stream)
    local newest = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
    local unread = length
    if newest == nil or newest[1] == row['last-delivered-id'] then
      unread = 0
    elseif row['lag'] then
      unread = math.min(row['lag'], length)
    end
    backlog = math.min(pending[1] + unread, length)
  end
  if backlog >= cap then return {0, backlog} end
end

local id = redis.call('XADD', stream, '*', unpack(ARGV, 5 + n))
local event = {unpack(ARGV, 5, 4 + n)}
for i = 1, #event, 2 do
  if event[i] == 'data' then
    local data = event[i + 1]
    local rest = string.sub(data, 2)
    if rest ~= '}' then rest = ',' .. rest end
    event[i + 1] = '{"message_id":"' .. id .. '"' .. rest
  end
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(event))
return {1, id}
